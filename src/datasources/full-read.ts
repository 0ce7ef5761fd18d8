import type { Provider } from './provider.js';
import { type RequestScope, createRequestScope } from './request-scope.js';
import type { InventoryState, VmState } from './watch.js';

/**
 * Reads everything a platform serves through its batch methods: the
 * listings, then details and snapshots of every VM and volumes of every
 * pool in one batch each. A VM that vanished between the listing and its
 * details is left out (the next change or resync brings it back if it
 * returns); any other failure fails the read.
 */
export async function readInventory(provider: Provider): Promise<InventoryState> {
  const scope = createRequestScope();
  const [datacenters, clusters, hosts, vms, networks, { storage, volumes }] = await Promise.all([
    provider.listDatacenters(scope),
    provider.listClusters(scope),
    provider.listHosts(scope),
    provider.listVms(scope),
    provider.listNetworks(scope),
    readStorage(provider, scope),
  ]);
  const ids = vms.map((v) => v.nativeId);
  const [details, snapshots] = await Promise.all([
    ids.length ? provider.getVmDetails(ids, scope) : [],
    ids.length ? provider.getSnapshots(ids, scope) : [],
  ]);
  const states: VmState[] = [];
  vms.forEach((vm, i) => {
    const d = details[i];
    const s = snapshots[i];
    if (d === undefined || s === undefined || d instanceof Error || s instanceof Error) return;
    states.push({ vm, details: d, snapshots: s });
  });
  return { datacenters, clusters, hosts, vms: states, networks, storage, volumes, upstreamTasks: [] };
}

/** Every storage of a platform, and the volumes of its pools (a pool that cannot list them is left out). */
export async function readStorage(
  provider: Provider,
  scope: RequestScope = createRequestScope(),
): Promise<Pick<InventoryState, 'storage' | 'volumes'>> {
  const storage = await provider.listStorage(scope);
  const pools = storage.filter((s) => s.storageKind === 'StoragePool').map((s) => s.nativeId);
  const volumes = pools.length ? await provider.getVolumes(pools, scope) : [];
  const byPool = new Map(
    pools.flatMap((pool, i) => {
      const v = volumes[i];
      return v === undefined || v instanceof Error ? [] : [[pool, v] as const];
    }),
  );
  return { storage, volumes: byPool };
}

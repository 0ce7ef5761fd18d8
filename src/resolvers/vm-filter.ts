import type { VirtualMachineFilter } from '../generated/graphql.js';
import { decodeIdOf } from '../model/ids.js';
import type { VmRecord } from '../model/vm.js';
import type { GatewayContext } from './context.js';
import { findNetwork, findStorage, vmsOnNetwork, vmsOnStorage } from './lookups.js';

const key = (platformId: string, nativeId: string) => `${platformId}\u0000${nativeId}`;

/**
 * The VMs that meet every condition of a filter (its platforms were chosen
 * before). Relations are resolved as the objects' own VM connections
 * resolve them, from the live inventory's indexes where it serves.
 */
export async function filterVms(
  ctx: GatewayContext,
  vms: readonly VmRecord[],
  filter: VirtualMachineFilter,
): Promise<VmRecord[]> {
  const checks: ((vm: VmRecord) => boolean)[] = [];
  if (filter.nameContains) {
    const needle = filter.nameContains.toLowerCase();
    checks.push((v) => v.name.toLowerCase().includes(needle));
  }
  if (filter.names) {
    const names = new Set(filter.names);
    checks.push((v) => names.has(v.name));
  }
  if (filter.uuids) {
    const uuids = new Set(filter.uuids.map((u) => u.toLowerCase()));
    checks.push((v) => uuids.has(v.uuid.toLowerCase()));
  }
  if (filter.powerStates) {
    const wanted = new Set(filter.powerStates);
    checks.push((v) => wanted.has(v.powerState));
  }
  if (filter.hostIds) {
    const hosts = new Set(filter.hostIds.map((id) => decodeIdOf(id, 'Host')).map((h) => key(h.platformId, h.nativeId)));
    checks.push((v) => v.hostNativeId !== null && hosts.has(key(v.platformId, v.hostNativeId)));
  }
  for (const [ids, kind, field] of [
    [filter.clusterIds, 'Cluster', 'clusterNativeId'],
    [filter.datacenterIds, 'Datacenter', 'datacenterNativeId'],
  ] as const) {
    if (!ids) continue;
    const hosts = await hostsIn(ctx, ids, kind, field);
    checks.push((v) => v.hostNativeId !== null && hosts.has(key(v.platformId, v.hostNativeId)));
  }
  if (filter.networkIds) {
    const related = await relatedVms(ctx, filter.networkIds, async (id) => {
      const ref = decodeIdOf(id, 'Network');
      const network = await findNetwork(ctx, ref.platformId, ref.nativeId);
      return network ? vmsOnNetwork(ctx, network) : [];
    });
    checks.push((v) => related.has(key(v.platformId, v.nativeId)));
  }
  if (filter.storageIds) {
    const related = await relatedVms(ctx, filter.storageIds, async (id) => {
      const ref = decodeIdOf(id, 'Datastore', 'StoragePool');
      const storage = await findStorage(ctx, ref.platformId, ref.nativeId);
      return storage?.storageKind === ref.kind ? vmsOnStorage(ctx, storage) : [];
    });
    checks.push((v) => related.has(key(v.platformId, v.nativeId)));
  }
  return checks.length === 0 ? [...vms] : vms.filter((v) => checks.every((check) => check(v)));
}

/** The hosts (by platform and native ID) in some clusters or datacenters. */
async function hostsIn(
  ctx: GatewayContext,
  ids: readonly string[],
  kind: 'Cluster' | 'Datacenter',
  field: 'clusterNativeId' | 'datacenterNativeId',
): Promise<Set<string>> {
  const refs = ids.map((id) => decodeIdOf(id, kind));
  const out = new Set<string>();
  for (const platformId of new Set(refs.map((r) => r.platformId))) {
    if (!ctx.registry.get(platformId)) continue;
    const wanted = new Set(refs.filter((r) => r.platformId === platformId).map((r) => r.nativeId));
    for (const h of await ctx.loaders.hosts.load(platformId)) {
      const owner = h[field];
      if (owner !== null && wanted.has(owner)) out.add(key(platformId, h.nativeId));
    }
  }
  return out;
}

/** The VMs related to any of some objects, by platform and native ID. */
async function relatedVms(
  ctx: GatewayContext,
  ids: readonly string[],
  vmsOf: (id: string) => Promise<readonly VmRecord[]>,
): Promise<Set<string>> {
  const lists = await Promise.all(ids.map(vmsOf));
  return new Set(lists.flat().map((v) => key(v.platformId, v.nativeId)));
}

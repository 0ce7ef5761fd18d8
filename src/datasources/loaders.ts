import DataLoader from 'dataloader';

import type { HostRecord } from '../model/host.js';
import type { ClusterRecord, DatacenterRecord } from '../model/inventory.js';
import type { NetworkRecord } from '../model/network.js';
import type { SnapshotRecord } from '../model/snapshot.js';
import type { StorageRecord, StorageVolumeRecord } from '../model/storage.js';
import type { VmDetails, VmRecord } from '../model/vm.js';
import type { Provider } from './provider.js';
import type { PlatformRegistry } from './registry.js';
import { createRequestScope } from './request-scope.js';
import { type VolumeIndex, indexVolumes } from './volume-index.js';

/** An object of one platform, by its native ID. */
export interface ObjectKey {
  platformId: string;
  nativeId: string;
}

const objectKey = (k: ObjectKey): string => `${k.platformId}\u0000${k.nativeId}`;

/**
 * A loader whose keys are objects of many platforms: keys are grouped by
 * platform and each group goes to the provider in one batch call. A platform
 * that fails fails only its own keys.
 */
function perObjectLoader<V>(
  registry: PlatformRegistry,
  batch: (provider: Provider, nativeIds: readonly string[]) => Promise<(V | Error)[]>,
): DataLoader<ObjectKey, V, string> {
  return new DataLoader<ObjectKey, V, string>(
    async (keys) => {
      const groups = new Map<string, number[]>();
      keys.forEach((k, i) => {
        const group = groups.get(k.platformId) ?? [];
        group.push(i);
        groups.set(k.platformId, group);
      });
      const results: (V | Error)[] = new Array<V | Error>(keys.length);
      await Promise.all(
        [...groups].map(async ([platformId, indexes]) => {
          const provider = registry.get(platformId);
          if (!provider) {
            for (const i of indexes) results[i] = new Error(`unknown platform "${platformId}"`);
            return;
          }
          try {
            const values = await batch(provider, indexes.map((i) => (keys[i] as ObjectKey).nativeId));
            indexes.forEach((keyIndex, j) => {
              results[keyIndex] = values[j] ?? new Error('provider returned too few results');
            });
          } catch (e) {
            const error = e instanceof Error ? e : new Error(String(e));
            for (const i of indexes) results[i] = error;
          }
        }),
      );
      return results;
    },
    { cacheKeyFn: objectKey },
  );
}

/** A loader of one whole-platform listing per platform ID, read once per request. */
function perPlatformLoader<V>(
  registry: PlatformRegistry,
  list: (provider: Provider) => Promise<V>,
): DataLoader<string, V> {
  return new DataLoader<string, V>(async (platformIds) =>
    Promise.all(
      platformIds.map(async (id) => {
        const provider = registry.get(id);
        if (!provider) return new Error(`unknown platform "${id}"`);
        try {
          return await list(provider);
        } catch (e) {
          return e instanceof Error ? e : new Error(String(e));
        }
      }),
    ),
  );
}

/**
 * The DataLoaders of one request. Created per request so that nothing is
 * cached across requests (or across callers).
 */
export function createLoaders(registry: PlatformRegistry) {
  const scope = createRequestScope();
  const storage = perPlatformLoader<StorageRecord[]>(registry, (p) => p.listStorage(scope));
  const volumes = perObjectLoader<StorageVolumeRecord[]>(registry, (p, ids) => p.getVolumes(ids, scope));
  return {
    datacenters: perPlatformLoader<DatacenterRecord[]>(registry, (p) => p.listDatacenters(scope)),
    clusters: perPlatformLoader<ClusterRecord[]>(registry, (p) => p.listClusters(scope)),
    hosts: perPlatformLoader<HostRecord[]>(registry, (p) => p.listHosts(scope)),
    vms: perPlatformLoader<VmRecord[]>(registry, (p) => p.listVms(scope)),
    vmDetails: perObjectLoader<VmDetails>(registry, (p, ids) => p.getVmDetails(ids, scope)),
    snapshots: perObjectLoader<SnapshotRecord[]>(registry, (p, ids) => p.getSnapshots(ids, scope)),
    networks: perPlatformLoader<NetworkRecord[]>(registry, (p) => p.listNetworks(scope)),
    storage,
    volumes,
    /** Every volume of a platform, indexed once per request (disks look their volume up in it). */
    volumeIndex: perPlatformLoader<VolumeIndex>(registry, async (p) => {
      const pools = await storage.load(p.id);
      const perPool = await volumes.loadMany(pools.map((pool) => ({ platformId: p.id, nativeId: pool.nativeId })));
      return indexVolumes(pools, perPool);
    }),
  };
}

export type Loaders = ReturnType<typeof createLoaders>;

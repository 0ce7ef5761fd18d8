import DataLoader from 'dataloader';

import { DeadlineExceededError } from '../model/errors.js';
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

/** The read, or DeadlineExceededError once the request's deadline passes. */
function beforeDeadline<T>(read: Promise<T>, platformId: string, deadline: Deadline): Promise<T> {
  const left = deadline.at - Date.now();
  if (left <= 0) return Promise.reject(new DeadlineExceededError(platformId, deadline.ms));
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineExceededError(platformId, deadline.ms)), left);
    timer.unref();
  });
  return Promise.race([read, expired]).finally(() => clearTimeout(timer));
}

export interface Deadline {
  /** Epoch ms after which upstream reads are abandoned. */
  at: number;
  /** The configured length, for messages. */
  ms: number;
}

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
  deadline: Deadline,
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
            const values = await beforeDeadline(
              batch(
                provider,
                indexes.map((i) => (keys[i] as ObjectKey).nativeId),
              ),
              platformId,
              deadline,
            );
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
  deadline: Deadline,
  list: (provider: Provider) => Promise<V>,
): DataLoader<string, V> {
  return new DataLoader<string, V>(async (platformIds) =>
    Promise.all(
      platformIds.map(async (id) => {
        const provider = registry.get(id);
        if (!provider) return new Error(`unknown platform "${id}"`);
        try {
          return await beforeDeadline(list(provider), id, deadline);
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
export function createLoaders(registry: PlatformRegistry, deadline: Deadline) {
  const scope = createRequestScope();
  const platformLoader = <V>(list: (p: Provider) => Promise<V>) => perPlatformLoader(registry, deadline, list);
  const objectLoader = <V>(batch: (p: Provider, ids: readonly string[]) => Promise<(V | Error)[]>) =>
    perObjectLoader(registry, deadline, batch);
  const storage = platformLoader<StorageRecord[]>((p) => p.listStorage(scope));
  const volumes = objectLoader<StorageVolumeRecord[]>((p, ids) => p.getVolumes(ids, scope));
  return {
    datacenters: platformLoader<DatacenterRecord[]>((p) => p.listDatacenters(scope)),
    clusters: platformLoader<ClusterRecord[]>((p) => p.listClusters(scope)),
    hosts: platformLoader<HostRecord[]>((p) => p.listHosts(scope)),
    vms: platformLoader<VmRecord[]>((p) => p.listVms(scope)),
    vmDetails: objectLoader<VmDetails>((p, ids) => p.getVmDetails(ids, scope)),
    snapshots: objectLoader<SnapshotRecord[]>((p, ids) => p.getSnapshots(ids, scope)),
    networks: platformLoader<NetworkRecord[]>((p) => p.listNetworks(scope)),
    storage,
    volumes,
    /** Every volume of a platform, indexed once per request (disks look their volume up in it). */
    volumeIndex: platformLoader<VolumeIndex>(async (p) => {
      const pools = await storage.load(p.id);
      const perPool = await volumes.loadMany(pools.map((pool) => ({ platformId: p.id, nativeId: pool.nativeId })));
      return indexVolumes(pools, perPool);
    }),
  };
}

export type Loaders = ReturnType<typeof createLoaders>;

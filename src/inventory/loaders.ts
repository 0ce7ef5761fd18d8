import DataLoader from 'dataloader';

import { DeadlineExceededError } from '../model/errors.js';
import type { HostRecord } from '../model/host.js';
import type { ClusterRecord, DatacenterRecord } from '../model/inventory.js';
import type { NetworkRecord } from '../model/network.js';
import type { SnapshotRecord } from '../model/snapshot.js';
import type { StorageRecord, StorageVolumeRecord } from '../model/storage.js';
import type { VmDetails, VmRecord } from '../model/vm.js';
import type { Provider } from '../datasources/provider.js';
import { traceBatch } from '../observability/tracing.js';
import type { PlatformRegistry } from '../datasources/registry.js';
import { createRequestScope } from '../datasources/request-scope.js';
import { type VolumeIndex, indexVolumes } from '../datasources/volume-index.js';
import { type CallerAccess, type VmFiling, type VmPlacement, filingOf, filingPart } from '../access/policy.js';
import type { Inventory } from './inventory.js';
import type { PlatformMirror } from './platform-mirror.js';

/** Told when a platform's reads go to the platform itself because its mirror cannot answer. */
export type DirectReadObserver = (platformId: string, reason: string) => void;

/** Where one platform's reads go: its mirror while SYNCED, otherwise the platform (and the observer is told). */
function source(inventory: Inventory, platformId: string, direct: DirectReadObserver): PlatformMirror | null {
  const mirror = inventory.mirror(platformId);
  if (mirror?.serving) return mirror;
  const state = mirror?.state;
  direct(
    platformId,
    !inventory.enabled
      ? 'live inventory disabled'
      : state?.state === 'STALE'
        ? `live inventory STALE since ${state.staleSince?.toISOString()}: ${state.reason ?? 'change stream down'}`
        : 'live inventory not yet filled',
  );
  return null;
}

/**
 * How long one request may wait on each platform: `ms` for every platform,
 * each its own. A platform's clock runs only while the request waits on it
 * (once however many of its reads are in flight), so a platform that stalls
 * spends its own budget and no other's: the reads of a healthy platform that
 * start only after the stalled one was given up on (a VM's host, asked once
 * every platform's listing is in) still have theirs. While the request waits
 * on platforms, the clock of one of them runs; so it waits on them for at
 * most `ms` times the number of platforms it reads, and for `ms` when they
 * are read side by side.
 */
export interface PlatformDeadlines {
  /** The budget of each platform in ms, for messages. */
  readonly ms: number;
  /** Starts the read unless the platform has spent its budget; DeadlineExceededError once it does. */
  within<T>(platformId: string, read: () => Promise<T>): Promise<T>;
}

/** The budgets of one request (or of one subscription event), `ms` per platform. */
export function platformDeadlines(ms: number): PlatformDeadlines {
  const clocks = new Map<string, { spent: number; waiting: number; since: number; out: boolean }>();
  return {
    ms,
    within<T>(platformId: string, read: () => Promise<T>): Promise<T> {
      let clock = clocks.get(platformId);
      if (!clock) clocks.set(platformId, (clock = { spent: 0, waiting: 0, since: 0, out: false }));
      const started = Date.now();
      const left = ms - clock.spent - (clock.waiting > 0 ? started - clock.since : 0);
      // A platform out of time is asked nothing more: its stalled calls already hold its connections.
      if (clock.out || left <= 0) return Promise.reject(new DeadlineExceededError(platformId, ms));
      if (clock.waiting++ === 0) clock.since = started;
      const running = clock;
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<never>((_, reject) => {
        // The clock runs without a pause while this read waits, so it ends when the budget does.
        timer = setTimeout(() => {
          // Out of time, by definition, even if the timer fired a millisecond before the clock says so.
          running.out = true;
          reject(new DeadlineExceededError(platformId, ms));
        }, left);
        timer.unref();
      });
      // Through the executor, so that a read that throws at once still stops the clock.
      return Promise.race([new Promise<T>((resolve) => resolve(read())), expired]).finally(() => {
        clearTimeout(timer);
        if (--running.waiting === 0) running.spent += Date.now() - running.since;
      });
    },
  };
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
  deadlines: PlatformDeadlines,
  batch: (provider: Provider, nativeIds: readonly string[]) => Promise<(V | Error)[]>,
  fromMirror: (mirror: PlatformMirror, nativeId: string) => V | undefined,
  mirrorOf: (platformId: string) => PlatformMirror | null,
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
          const mirror = mirrorOf(platformId);
          if (mirror) {
            for (const i of indexes) {
              const nativeId = (keys[i] as ObjectKey).nativeId;
              results[i] = fromMirror(mirror, nativeId) ?? new Error(`no ${nativeId} on platform "${platformId}"`);
            }
            return;
          }
          try {
            const values = await deadlines.within(platformId, () =>
              traceBatch(platformId, indexes.length, () =>
                batch(
                  provider,
                  indexes.map((i) => (keys[i] as ObjectKey).nativeId),
                ),
              ),
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

/**
 * A loader of one whole-platform listing per platform ID, read once per
 * request; `keep` cuts it down to what the caller may see.
 */
function perPlatformLoader<V>(
  registry: PlatformRegistry,
  deadlines: PlatformDeadlines,
  list: (provider: Provider) => Promise<V>,
  fromMirror: (mirror: PlatformMirror) => V,
  mirrorOf: (platformId: string) => PlatformMirror | null,
  keep: (platformId: string, value: V) => V | Promise<V> = (_p, v) => v,
): DataLoader<string, V> {
  return new DataLoader<string, V>(async (platformIds) =>
    Promise.all(
      platformIds.map(async (id) => {
        const provider = registry.get(id);
        if (!provider) return new Error(`unknown platform "${id}"`);
        const mirror = mirrorOf(id);
        try {
          return await keep(
            id,
            mirror ? fromMirror(mirror) : await deadlines.within(id, () => traceBatch(id, 1, () => list(provider))),
          );
        } catch (e) {
          return e instanceof Error ? e : new Error(String(e));
        }
      }),
    ),
  );
}

/** Places a VM (by its native ID when it has one) or one to be made (filed as `filing` says). */
type Placer = (vm: Pick<VmRecord, 'name' | 'hostNativeId'> & { nativeId?: string }, filing?: VmFiling) => VmPlacement;

/** Per caller, the part of a mirror's VM listing it may see, with the host and cluster listings it was placed by. */
const visibleListings = new WeakMap<
  CallerAccess,
  WeakMap<
    readonly VmRecord[],
    { hosts: readonly HostRecord[]; clusters: readonly ClusterRecord[]; visible: readonly VmRecord[] }
  >
>();

// A listing read from a platform is indexed by VM on first lookup, once per request.
const vmIndexes = new WeakMap<readonly VmRecord[], Map<string, VmRecord>>();

/**
 * The DataLoaders of one request: reads answered from the live inventory
 * while a platform's mirror is SYNCED, from the platform itself (batched)
 * otherwise. Created per request so that nothing is cached across requests
 * (or across callers), and a platform's source is chosen once per request.
 */
export function createLoaders(
  registry: PlatformRegistry,
  inventory: Inventory,
  deadlines: PlatformDeadlines,
  direct: DirectReadObserver = () => {},
  /** What the caller may see; null (or one who sees everything): no filtering. */
  access: CallerAccess | null = null,
) {
  const limited = access && !access.seesEverything ? access : null;
  const scope = createRequestScope();
  const chosen = new Map<string, PlatformMirror | null>();
  const mirrorOf = (platformId: string) => {
    // An unknown platform has no mirror and is no direct read either: its loads fail with their own error.
    if (!registry.get(platformId)) return null;
    if (!chosen.has(platformId)) chosen.set(platformId, source(inventory, platformId, direct));
    return chosen.get(platformId) ?? null;
  };
  // Infrastructure is shown to whoever holds a role on a tenant of its platform.
  const platformLoader = <V>(
    list: (p: Provider) => Promise<readonly V[]>,
    fromMirror: (m: PlatformMirror) => readonly V[],
  ) =>
    perPlatformLoader(registry, deadlines, list, fromMirror, mirrorOf, (platformId, records) =>
      !limited || limited.seesPlatform(platformId) ? records : [],
    );
  const objectLoader = <V>(
    batch: (p: Provider, ids: readonly string[]) => Promise<(V | Error)[]>,
    fromMirror: (m: PlatformMirror, id: string) => V | undefined,
  ) => perObjectLoader(registry, deadlines, batch, fromMirror, mirrorOf);
  const hostsOf = perPlatformLoader<readonly HostRecord[]>(
    registry,
    deadlines,
    (p) => p.listHosts(scope),
    (m) => m.listHosts(),
    mirrorOf,
  );
  const clustersOf = perPlatformLoader<readonly ClusterRecord[]>(
    registry,
    deadlines,
    (p) => p.listClusters(scope),
    (m) => m.listClusters(),
    mirrorOf,
  );
  const vmDetails = objectLoader<VmDetails>(
    (p, ids) => p.getVmDetails(ids, scope),
    (m, id) => m.details(id),
  );
  /**
   * Where a platform's VMs are, by what tenants select on: from the mirror,
   * else from the listings, and the details of `filedIds` (where those VMs
   * are filed: read only for them, and only when the mirror cannot say).
   */
  const placements = async (platformId: string, filedIds: readonly string[] = []): Promise<Placer> => {
    const mirror = mirrorOf(platformId);
    if (mirror) return (vm, filing) => mirror.placementOf(vm, filing);
    const [hosts, clusters, details] = await Promise.all([
      hostsOf.load(platformId),
      clustersOf.load(platformId),
      vmDetails.loadMany(filedIds.map((nativeId) => ({ platformId, nativeId }))),
    ]);
    const hostById = new Map(hosts.map((h) => [h.nativeId, h]));
    const clusterById = new Map(clusters.map((c) => [c.nativeId, c]));
    const detailsById = new Map(filedIds.map((id, i) => [id, details[i]]));
    return (vm, filing) => {
      const host = vm.hostNativeId ? hostById.get(vm.hostNativeId) : undefined;
      const cluster = host?.clusterNativeId ? clusterById.get(host.clusterNativeId) : undefined;
      const known = vm.nativeId === undefined ? undefined : detailsById.get(vm.nativeId);
      return {
        platformId,
        name: vm.name,
        hostName: host?.name ?? null,
        clusterName: cluster?.name ?? null,
        ...filingPart(filing ?? filingOf(known instanceof Error ? undefined : known)),
      };
    };
  };
  /** The VMs of one platform the caller may see. */
  const visibleOf = async (platformId: string, list: readonly VmRecord[]): Promise<readonly VmRecord[]> => {
    if (!limited) return list;
    if (!limited.seesPlatform(platformId)) return [];
    // The mirror's own listing (the same array until a VM changes): filtered once per caller and
    // listing, so the page cache (sortedOnce) keeps its order across requests too.
    const mirror = mirrorOf(platformId);
    const kept = mirror !== null && list === mirror.listVms();
    if (kept) {
      const memo = visibleListings.get(limited)?.get(list);
      if (memo && memo.hosts === mirror.listHosts() && memo.clusters === mirror.listClusters()) return memo.visible;
    }
    const place = await placements(platformId, limited.selectsByFiling ? list.map((v) => v.nativeId) : []);
    const visible = list.filter((v) => limited.seesVm(place(v)));
    if (kept) {
      let byList = visibleListings.get(limited);
      if (!byList) visibleListings.set(limited, (byList = new WeakMap()));
      byList.set(list, { hosts: mirror.listHosts(), clusters: mirror.listClusters(), visible });
    }
    return visible;
  };
  const rawVms = perPlatformLoader<readonly VmRecord[]>(
    registry,
    deadlines,
    (p) => p.listVms(scope),
    (m) => m.listVms(),
    mirrorOf,
  );
  const vms = limited
    ? new DataLoader<string, readonly VmRecord[]>((ids) =>
        Promise.all(
          ids.map((id) =>
            rawVms.load(id).then(
              (list) => visibleOf(id, list),
              (e: unknown) => e as Error,
            ),
          ),
        ),
      )
    : rawVms;
  const storage = platformLoader<StorageRecord>(
    (p) => p.listStorage(scope),
    (m) => m.listStorage(),
  );
  const volumes = objectLoader<readonly StorageVolumeRecord[]>(
    (p, ids) => p.getVolumes(ids, scope),
    (m, id) => m.volumes(id) ?? [],
  );
  return {
    datacenters: platformLoader<DatacenterRecord>(
      (p) => p.listDatacenters(scope),
      (m) => m.listDatacenters(),
    ),
    clusters: platformLoader<ClusterRecord>(
      (p) => p.listClusters(scope),
      (m) => m.listClusters(),
    ),
    hosts: platformLoader<HostRecord>(
      (p) => p.listHosts(scope),
      (m) => m.listHosts(),
    ),
    vms,
    vmDetails,
    snapshots: objectLoader<readonly SnapshotRecord[]>(
      (p, ids) => p.getSnapshots(ids, scope),
      (m, id) => m.snapshots(id),
    ),
    networks: platformLoader<NetworkRecord>(
      (p) => p.listNetworks(scope),
      (m) => m.listNetworks(),
    ),
    storage,
    volumes,
    /** The mirror this request reads a platform from, or null when it reads the platform directly. */
    mirrorOf,
    /** Of some VMs of one platform (a relation's, read from the mirror's indexes), those the caller may see. */
    visible: visibleOf,
    /** Every VM of a platform, whoever asks: for checks that must see them all (a new VM's name is free). */
    allVms: rawVms,
    /**
     * Where a VM is, by what tenants select on: one of the platform's by its
     * native ID, one to be made (or that is gone) by where it would be and how
     * it would be filed.
     */
    async placementOf(
      vm: {
        platformId: string;
        name: string;
        hostNativeId: string | null;
        nativeId?: string;
        clusterNativeId?: string | null;
      },
      filing?: VmFiling,
    ): Promise<VmPlacement> {
      const filedIds = vm.nativeId !== undefined && !filing ? [vm.nativeId] : [];
      const placed = (await placements(vm.platformId, filedIds))(vm, filing);
      if (placed.clusterName !== null || !vm.clusterNativeId) return placed;
      const mirror = mirrorOf(vm.platformId);
      const cluster = mirror
        ? mirror.cluster(vm.clusterNativeId)
        : (await clustersOf.load(vm.platformId)).find((c) => c.nativeId === vm.clusterNativeId);
      return { ...placed, clusterName: cluster?.name ?? null };
    },
    /** What the caller may see and do; null when it sees everything. */
    access: limited,
    /** A VM by native ID: at once from the mirror, else from the platform's listing (indexed once per request). */
    vm(platformId: string, nativeId: string): VmRecord | null | Promise<VmRecord | null> {
      const mirror = mirrorOf(platformId);
      if (mirror && !limited) return mirror.vm(nativeId)?.vm ?? null;
      if (mirror) {
        const vm = mirror.vm(nativeId)?.vm;
        return vm ? visibleOf(platformId, [vm]).then((seen) => seen[0] ?? null) : null;
      }
      return vms.load(platformId).then((listing) => {
        let index = vmIndexes.get(listing);
        if (!index) vmIndexes.set(listing, (index = new Map(listing.map((v) => [v.nativeId, v]))));
        return index.get(nativeId) ?? null;
      });
    },
    /** Every volume of a platform, indexed once per request (disks look their volume up in it). */
    volumeIndex: perPlatformLoader<VolumeIndex>(
      registry,
      deadlines,
      async (p) => volumeIndexOf(p.id),
      (m) => m.volumeIndex(),
      mirrorOf,
    ),
  };

  async function volumeIndexOf(platformId: string): Promise<VolumeIndex> {
    const pools = await storage.load(platformId);
    const perPool = await volumes.loadMany(pools.map((pool) => ({ platformId, nativeId: pool.nativeId })));
    return indexVolumes(pools, perPool);
  }
}

export type Loaders = ReturnType<typeof createLoaders>;

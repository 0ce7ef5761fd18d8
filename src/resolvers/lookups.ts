import type DataLoader from 'dataloader';

import type { HostRecord } from '../model/host.js';
import type { ClusterRecord, DatacenterRecord } from '../model/inventory.js';
import type { NetworkRecord } from '../model/network.js';
import type { SnapshotRecord } from '../model/snapshot.js';
import type { StorageRecord, StorageVolumeRecord } from '../model/storage.js';
import type { VmDetails, VmRecord } from '../model/vm.js';
import type { PlatformMirror } from '../inventory/platform-mirror.js';
import type { Awaitable } from './awaitable.js';
import type { GatewayContext } from './context.js';
import { type DiskSource, volumeOfDisk } from '../datasources/volume-index.js';

// Lookups of one object among a platform's listings. While the request reads
// a platform from its live inventory they are answered at once from the
// mirror's tables; otherwise they read through the request's loaders, so any
// number of them costs the same upstream calls.

/** From the mirror this request reads the platform from, else from the platform's loaded listing. */
function lookUp<T>(
  ctx: GatewayContext,
  platformId: string,
  mirrored: (mirror: PlatformMirror) => T,
  loaded: () => Promise<T>,
): Awaitable<T> {
  const mirror = ctx.loaders.mirrorOf(platformId);
  return mirror ? mirrored(mirror) : loaded();
}

export function findVm(ctx: GatewayContext, platformId: string, nativeId: string): Awaitable<VmRecord | null> {
  return ctx.loaders.vm(platformId, nativeId);
}

export function findNetworkByName(
  ctx: GatewayContext,
  platformId: string,
  name: string,
): Awaitable<NetworkRecord | null> {
  return lookUp(
    ctx,
    platformId,
    (m) => m.networkNamed(name) ?? null,
    async () => (await ctx.loaders.networks.load(platformId)).find((n) => n.name === name) ?? null,
  );
}

/** An object of a per-platform listing by native ID: from the mirror's table, else a scan of the loaded listing. */
function findById<R extends { nativeId: string }>(
  ctx: GatewayContext,
  platformId: string,
  nativeId: string | null,
  fromMirror: (mirror: PlatformMirror, nativeId: string) => R | undefined,
  listing: (loaders: GatewayContext['loaders']) => DataLoader<string, readonly R[]>,
): Awaitable<R | null> {
  if (!nativeId) return null;
  return lookUp(
    ctx,
    platformId,
    (m) => fromMirror(m, nativeId) ?? null,
    async () => (await listing(ctx.loaders).load(platformId)).find((r) => r.nativeId === nativeId) ?? null,
  );
}

export const findDatacenter = (
  ctx: GatewayContext,
  platformId: string,
  nativeId: string | null,
): Awaitable<DatacenterRecord | null> =>
  findById(
    ctx,
    platformId,
    nativeId,
    (m, id) => m.datacenter(id),
    (l) => l.datacenters,
  );

export const findCluster = (
  ctx: GatewayContext,
  platformId: string,
  nativeId: string | null,
): Awaitable<ClusterRecord | null> =>
  findById(
    ctx,
    platformId,
    nativeId,
    (m, id) => m.cluster(id),
    (l) => l.clusters,
  );

export const findHost = (
  ctx: GatewayContext,
  platformId: string,
  nativeId: string | null,
): Awaitable<HostRecord | null> =>
  findById(
    ctx,
    platformId,
    nativeId,
    (m, id) => m.host(id),
    (l) => l.hosts,
  );

export const findNetwork = (
  ctx: GatewayContext,
  platformId: string,
  nativeId: string,
): Awaitable<NetworkRecord | null> =>
  findById(
    ctx,
    platformId,
    nativeId,
    (m, id) => m.network(id),
    (l) => l.networks,
  );

export const findStorage = (
  ctx: GatewayContext,
  platformId: string,
  nativeId: string,
): Awaitable<StorageRecord | null> =>
  findById(
    ctx,
    platformId,
    nativeId,
    (m, id) => m.storage(id),
    (l) => l.storage,
  );

/** A VM's details; a VM the mirror no longer has is left to the loader, which says so. */
export function detailsOf(ctx: GatewayContext, vm: { platformId: string; nativeId: string }): Awaitable<VmDetails> {
  return (
    ctx.loaders.mirrorOf(vm.platformId)?.details(vm.nativeId) ??
    ctx.loaders.vmDetails.load({ platformId: vm.platformId, nativeId: vm.nativeId })
  );
}

export function snapshotsOf(
  ctx: GatewayContext,
  vm: { platformId: string; nativeId: string },
): Awaitable<readonly SnapshotRecord[]> {
  return (
    ctx.loaders.mirrorOf(vm.platformId)?.snapshots(vm.nativeId) ??
    ctx.loaders.snapshots.load({ platformId: vm.platformId, nativeId: vm.nativeId })
  );
}

/** The volume behind a disk, if the platform knows it. */
export function findVolumeForDisk(
  ctx: GatewayContext,
  platformId: string,
  disk: DiskSource,
): Awaitable<StorageVolumeRecord | null> {
  if (!disk.source) return null;
  return lookUp(
    ctx,
    platformId,
    (m) => volumeOfDisk(m.volumeIndex(), disk),
    async () => volumeOfDisk(await ctx.loaders.volumeIndex.load(platformId), disk),
  );
}

/**
 * The VMs a relation names: a lookup in the live inventory's indexes when
 * this request reads the platform from it, otherwise a scan of every VM's
 * details (one batched read).
 */
export async function vmsRelatedTo(
  ctx: GatewayContext,
  platformId: string,
  fromMirror: (mirror: PlatformMirror) => Iterable<string>,
  scan: (details: VmDetails) => boolean,
): Promise<VmRecord[]> {
  const mirror = ctx.loaders.mirrorOf(platformId);
  if (mirror) return [...(await ctx.loaders.visible(platformId, mirror.vmRecords(fromMirror(mirror))))];
  // The listing the scan starts from is already cut down to what the caller may see.
  return (await vmsWithDetails(ctx, platformId)).filter(({ details }) => scan(details)).map(({ vm }) => vm);
}

/**
 * The VMs on some hosts of a platform that the caller may see: from the
 * live inventory's index (what they return, not the estate), else from
 * the platform's listing.
 */
export async function vmsOnHosts(
  ctx: GatewayContext,
  platformId: string,
  hostNativeIds: readonly string[],
): Promise<readonly VmRecord[]> {
  const mirror = ctx.loaders.mirrorOf(platformId);
  if (mirror) {
    const ids = hostNativeIds.flatMap((h) => [...mirror.vmsOnHost(h)]);
    return ctx.loaders.visible(platformId, mirror.vmRecords(ids));
  }
  const hosts = new Set(hostNativeIds);
  return (await ctx.loaders.vms.load(platformId)).filter((v) => v.hostNativeId !== null && hosts.has(v.hostNativeId));
}

/** The VMs with a NIC on a network that the caller may see. */
export function vmsOnNetwork(ctx: GatewayContext, n: NetworkRecord): Promise<VmRecord[]> {
  return vmsRelatedTo(
    ctx,
    n.platformId,
    (m) => m.vmsOnNetwork(n),
    (details) =>
      details.nics.some((nic) =>
        nic.networkNativeId ? nic.networkNativeId === n.nativeId : nic.networkName === n.name,
      ),
  );
}

/** The VMs with a disk on one of some volumes of a platform that the caller may see. */
export async function vmsOnVolumes(
  ctx: GatewayContext,
  platformId: string,
  volumes: readonly StorageVolumeRecord[],
): Promise<VmRecord[]> {
  const index = ctx.loaders.mirrorOf(platformId) ? null : await ctx.loaders.volumeIndex.load(platformId);
  const ids = new Set(volumes.map((v) => v.nativeId));
  return vmsRelatedTo(
    ctx,
    platformId,
    (m) => volumes.flatMap((v) => [...m.vmsOnVolume(v)]),
    (details) => !!index && details.disks.some((d) => ids.has(volumeOfDisk(index, d)?.nativeId ?? '')),
  );
}

/** The VMs with a disk on a datastore, or on a volume of a storage pool, that the caller may see. */
export async function vmsOnStorage(ctx: GatewayContext, s: StorageRecord): Promise<VmRecord[]> {
  if (s.storageKind === 'StoragePool') {
    const volumes = await ctx.loaders.volumes.load({ platformId: s.platformId, nativeId: s.nativeId });
    return vmsOnVolumes(ctx, s.platformId, volumes);
  }
  return vmsRelatedTo(
    ctx,
    s.platformId,
    (m) => m.vmsOnStorage(s.nativeId),
    (details) => details.disks.some((d) => d.storageNativeId === s.nativeId),
  );
}

/** Details of every VM of a platform, in one batched read. */
async function vmsWithDetails(ctx: GatewayContext, platformId: string) {
  const vms = await ctx.loaders.vms.load(platformId);
  const details = await ctx.loaders.vmDetails.loadMany(vms.map((v) => ({ platformId, nativeId: v.nativeId })));
  return vms.flatMap((vm, i) => {
    const d = details[i];
    return d === undefined || d instanceof Error ? [] : [{ vm, details: d }];
  });
}

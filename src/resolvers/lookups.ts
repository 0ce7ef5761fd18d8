import type { HostRecord } from '../model/host.js';
import type { ClusterRecord, DatacenterRecord } from '../model/inventory.js';
import type { NetworkRecord } from '../model/network.js';
import type { SnapshotRecord } from '../model/snapshot.js';
import type { StorageRecord, StorageVolumeRecord } from '../model/storage.js';
import type { VmDetails, VmRecord } from '../model/vm.js';
import type { PlatformMirror } from '../inventory/platform-mirror.js';
import type { GatewayContext } from './context.js';
import { type DiskSource, volumeOfDisk } from '../datasources/volume-index.js';

// Lookups of one object among a platform's listings. They read through the
// request's loaders, so any number of them costs the same upstream calls.

// Each listing is read once per request; its index is built on first lookup.
const vmIndexes = new WeakMap<readonly VmRecord[], Map<string, VmRecord>>();

export async function findVm(ctx: GatewayContext, platformId: string, nativeId: string): Promise<VmRecord | null> {
  const vms = await ctx.loaders.vms.load(platformId);
  let index = vmIndexes.get(vms);
  if (!index) {
    index = new Map(vms.map((v) => [v.nativeId, v]));
    vmIndexes.set(vms, index);
  }
  return index.get(nativeId) ?? null;
}

export async function findNetworkByName(
  ctx: GatewayContext,
  platformId: string,
  name: string,
): Promise<NetworkRecord | null> {
  const nets = await ctx.loaders.networks.load(platformId);
  return nets.find((n) => n.name === name) ?? null;
}

export async function findDatacenter(
  ctx: GatewayContext,
  platformId: string,
  nativeId: string | null,
): Promise<DatacenterRecord | null> {
  if (!nativeId) return null;
  return (await ctx.loaders.datacenters.load(platformId)).find((d) => d.nativeId === nativeId) ?? null;
}

export async function findCluster(
  ctx: GatewayContext,
  platformId: string,
  nativeId: string | null,
): Promise<ClusterRecord | null> {
  if (!nativeId) return null;
  return (await ctx.loaders.clusters.load(platformId)).find((c) => c.nativeId === nativeId) ?? null;
}

export async function findHost(
  ctx: GatewayContext,
  platformId: string,
  nativeId: string | null,
): Promise<HostRecord | null> {
  if (!nativeId) return null;
  return (await ctx.loaders.hosts.load(platformId)).find((h) => h.nativeId === nativeId) ?? null;
}

export async function findNetwork(
  ctx: GatewayContext,
  platformId: string,
  nativeId: string,
): Promise<NetworkRecord | null> {
  return (await ctx.loaders.networks.load(platformId)).find((n) => n.nativeId === nativeId) ?? null;
}

export async function findStorage(
  ctx: GatewayContext,
  platformId: string,
  nativeId: string,
): Promise<StorageRecord | null> {
  const all = await ctx.loaders.storage.load(platformId);
  return all.find((s) => s.nativeId === nativeId) ?? null;
}

export async function snapshotsOf(
  ctx: GatewayContext,
  vm: { platformId: string; nativeId: string },
): Promise<readonly SnapshotRecord[]> {
  return ctx.loaders.snapshots.load({ platformId: vm.platformId, nativeId: vm.nativeId });
}

/** The volume behind a disk, if the platform knows it. */
export async function findVolumeForDisk(
  ctx: GatewayContext,
  platformId: string,
  disk: DiskSource,
): Promise<StorageVolumeRecord | null> {
  if (!disk.source) return null;
  return volumeOfDisk(await ctx.loaders.volumeIndex.load(platformId), disk);
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
  if (mirror) return mirror.vmRecords(fromMirror(mirror));
  return (await vmsWithDetails(ctx, platformId)).filter(({ details }) => scan(details)).map(({ vm }) => vm);
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

import type { VmDiskResolvers, VmNicResolvers } from '../generated/graphql.js';
import { findNetwork, findNetworkByName, findStorage, findVolumeForDisk } from './lookups.js';

export const VmDisk: VmDiskResolvers = {
  capacityBytes: async (disk, _a, ctx) =>
    disk.capacityBytes ?? (await findVolumeForDisk(ctx, disk.platformId, disk))?.capacityBytes ?? null,
  format: async (disk, _a, ctx) => disk.format ?? (await findVolumeForDisk(ctx, disk.platformId, disk))?.format ?? null,
  volume: (disk, _a, ctx) => findVolumeForDisk(ctx, disk.platformId, disk),
  storage: async (disk, _a, ctx) => {
    if (disk.storageNativeId) return findStorage(ctx, disk.platformId, disk.storageNativeId);
    const volume = await findVolumeForDisk(ctx, disk.platformId, disk);
    return volume ? findStorage(ctx, disk.platformId, volume.poolNativeId) : null;
  },
};

export const VmNic: VmNicResolvers = {
  network: (nic, _a, ctx) => {
    if (nic.networkNativeId) return findNetwork(ctx, nic.platformId, nic.networkNativeId);
    return nic.networkName ? findNetworkByName(ctx, nic.platformId, nic.networkName) : null;
  },
};

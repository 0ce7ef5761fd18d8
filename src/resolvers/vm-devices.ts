import type { VmDiskResolvers, VmNicResolvers } from '../generated/graphql.js';
import { findNetworkByName, findStorage, findVolumeForDisk } from './lookups.js';

export const VmDisk: VmDiskResolvers = {
  capacityBytes: async (disk, _a, ctx) =>
    disk.capacityBytes ?? (await findVolumeForDisk(ctx, disk.platformId, disk))?.capacityBytes ?? null,
  format: async (disk, _a, ctx) =>
    disk.format ?? (await findVolumeForDisk(ctx, disk.platformId, disk))?.format ?? null,
  volume: (disk, _a, ctx) => findVolumeForDisk(ctx, disk.platformId, disk),
  storage: async (disk, _a, ctx) => {
    const volume = await findVolumeForDisk(ctx, disk.platformId, disk);
    return volume ? findStorage(ctx, disk.platformId, volume.poolNativeId) : null;
  },
};

export const VmNic: VmNicResolvers = {
  network: (nic, _a, ctx) => (nic.networkName ? findNetworkByName(ctx, nic.platformId, nic.networkName) : null),
};

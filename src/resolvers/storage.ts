import type {
  DatastoreResolvers,
  QueryResolvers,
  StoragePoolResolvers,
  StorageResolvers,
  StorageVolumeResolvers,
} from '../generated/graphql.js';
import { encodeId } from '../model/ids.js';
import type { StorageRecord } from '../model/storage.js';
import { volumeOfDisk } from '../datasources/volume-index.js';
import { findDatacenter, findStorage, vmsRelatedTo } from './lookups.js';
import { pageByName, platformOf } from './scope.js';

export function storageId(s: StorageRecord): string {
  return encodeId({ kind: s.storageKind, platformId: s.platformId, nativeId: s.nativeId });
}

function usagePercent(s: StorageRecord): number {
  return s.capacityBytes > 0 ? Math.round((s.allocationBytes / s.capacityBytes) * 10_000) / 100 : 0;
}

export const Storage: StorageResolvers = {
  __resolveType: (s) => s.storageKind,
};

export const StoragePool: StoragePoolResolvers = {
  id: (s) => storageId(s),
  platform: (s, _a, ctx) => platformOf(ctx, s.platformId),
  usagePercent: (s) => usagePercent(s),
  volumes: async (s, _a, ctx) => [
    ...(await ctx.loaders.volumes.load({ platformId: s.platformId, nativeId: s.nativeId })),
  ],
};

export const Datastore: DatastoreResolvers = {
  id: (s) => storageId(s),
  platform: (s, _a, ctx) => platformOf(ctx, s.platformId),
  usagePercent: (s) => usagePercent(s),
  datacenter: (s, _a, ctx) => findDatacenter(ctx, s.platformId, s.datacenterNativeId),
  virtualMachines: (s, _a, ctx) =>
    vmsRelatedTo(
      ctx,
      s.platformId,
      (m) => m.vmsOnStorage(s.nativeId),
      (details) => details.disks.some((d) => d.storageNativeId === s.nativeId),
    ),
};

export const StorageVolume: StorageVolumeResolvers = {
  id: (v) => encodeId({ kind: 'StorageVolume', platformId: v.platformId, nativeId: v.nativeId }),
  pool: async (v, _a, ctx) => {
    const pool = await findStorage(ctx, v.platformId, v.poolNativeId);
    if (pool?.storageKind !== 'StoragePool') throw new Error(`volume ${v.name} outlived its pool ${v.poolNativeId}`);
    return pool;
  },
  attachedVms: async (v, _a, ctx) => {
    const index = ctx.loaders.mirrorOf(v.platformId) ? null : await ctx.loaders.volumeIndex.load(v.platformId);
    return vmsRelatedTo(
      ctx,
      v.platformId,
      (m) => m.vmsOnVolume(v),
      (details) => !!index && details.disks.some((d) => volumeOfDisk(index, d)?.nativeId === v.nativeId),
    );
  },
};

export const storageQueries: Pick<QueryResolvers, 'storage'> = {
  storage: (_root, args, ctx) => pageByName(ctx, ctx.loaders.storage, args, { name: 'storage:NAME', id: storageId }),
};

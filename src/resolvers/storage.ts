import type {
  DatastoreResolvers,
  DatastoreType,
  QueryResolvers,
  StoragePoolResolvers,
  StorageResolvers,
  StorageVolumeResolvers,
} from '../generated/graphql.js';
import { encodeId } from '../model/ids.js';
import type { StorageRecord, StorageType, StorageVolumeRecord } from '../model/storage.js';
import { findDatacenter, findStorage, vmsOnStorage, vmsOnVolumes } from './lookups.js';
import { pageByName, pageNamed, platformOf } from './scope.js';
import { listVms } from './virtual-machine.js';

const volumeId = (v: StorageVolumeRecord) =>
  encodeId({ kind: 'StorageVolume', platformId: v.platformId, nativeId: v.nativeId });

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
  volumes: async (s, args, ctx) =>
    pageNamed(ctx, await ctx.loaders.volumes.load({ platformId: s.platformId, nativeId: s.nativeId }), args, {
      name: 'volume:NAME',
      id: volumeId,
    }),
};

/** The deprecated DatastoreType names a subset of StorageType. */
const DATASTORE_TYPES: Partial<Record<StorageType, DatastoreType>> = {
  VMFS: 'VMFS',
  NFS: 'NFS',
  VSAN: 'VSAN',
  VVOL: 'VVOL',
};

export const Datastore: DatastoreResolvers = {
  id: (s) => storageId(s),
  datastoreType: (s) => DATASTORE_TYPES[s.type] ?? 'OTHER',
  platform: (s, _a, ctx) => platformOf(ctx, s.platformId),
  usagePercent: (s) => usagePercent(s),
  datacenter: (s, _a, ctx) => findDatacenter(ctx, s.platformId, s.datacenterNativeId),
  virtualMachines: async (s, args, ctx) =>
    listVms(ctx, args, { platformId: s.platformId, vms: await vmsOnStorage(ctx, s) }),
};

export const StorageVolume: StorageVolumeResolvers = {
  id: (v) => volumeId(v),
  pool: async (v, _a, ctx) => {
    const pool = await findStorage(ctx, v.platformId, v.poolNativeId);
    if (pool?.storageKind !== 'StoragePool') throw new Error(`volume ${v.name} outlived its pool ${v.poolNativeId}`);
    return pool;
  },
  virtualMachines: async (v, args, ctx) =>
    listVms(ctx, args, { platformId: v.platformId, vms: await vmsOnVolumes(ctx, v.platformId, [v]) }),
};

/** Storage by name: the order of every storage connection, so their cursors are alike. */
export const storageByName = { name: 'storage:NAME', id: storageId };

export const storageQueries: Pick<QueryResolvers, 'storage'> = {
  storage: (_root, args, ctx) => pageByName(ctx, ctx.loaders.storage, args, storageByName),
};

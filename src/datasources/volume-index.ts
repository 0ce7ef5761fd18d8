import type { StorageRecord, StorageVolumeRecord } from '../model/storage.js';

/** Every volume of a platform, indexed the ways disks refer to them. */
export interface VolumeIndex {
  all: StorageVolumeRecord[];
  /** By path and by key. */
  byPath: Map<string, StorageVolumeRecord>;
  /** By `poolName/volumeName`, as libvirt `type='volume'` disks name them. */
  byPoolAndName: Map<string, StorageVolumeRecord>;
  poolNames: Map<string, string>;
}

export function indexVolumes(pools: readonly StorageRecord[], perPool: readonly (StorageVolumeRecord[] | Error)[]): VolumeIndex {
  const poolNames = new Map(pools.map((p) => [p.nativeId, p.name]));
  const all = perPool.flatMap((v) => (v instanceof Error ? [] : v));
  const byPath = new Map<string, StorageVolumeRecord>();
  const byPoolAndName = new Map<string, StorageVolumeRecord>();
  for (const v of all) {
    byPath.set(v.key, v);
    byPath.set(v.path, v);
    byPoolAndName.set(`${poolNames.get(v.poolNativeId) ?? ''}/${v.name}`, v);
  }
  return { all, byPath, byPoolAndName, poolNames };
}

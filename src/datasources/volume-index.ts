import type { StorageRecord, StorageVolumeRecord } from '../model/storage.js';

/** Every volume of a platform, indexed the ways disks refer to them. */
export interface VolumeIndex {
  /** By path and by key. */
  byPath: Map<string, StorageVolumeRecord>;
  /** By `poolName/volumeName`, as libvirt `type='volume'` disks name them. */
  byPoolAndName: Map<string, StorageVolumeRecord>;
}

export function indexVolumes(
  pools: readonly StorageRecord[],
  perPool: readonly (readonly StorageVolumeRecord[] | Error)[],
): VolumeIndex {
  const poolNames = new Map(pools.map((p) => [p.nativeId, p.name]));
  const byPath = new Map<string, StorageVolumeRecord>();
  const byPoolAndName = new Map<string, StorageVolumeRecord>();
  for (const v of perPool.flatMap((vols) => (vols instanceof Error ? [] : vols))) {
    byPath.set(v.key, v);
    byPath.set(v.path, v);
    byPoolAndName.set(`${poolNames.get(v.poolNativeId) ?? ''}/${v.name}`, v);
  }
  return { byPath, byPoolAndName };
}

/** What a disk names as its source: a path, or a pool and volume by name. */
export interface DiskSource {
  source: string | null;
  sourcePool: string | null;
  sourceVolume: string | null;
}

/** The volume backing a disk, if the platform has it. */
export function volumeOfDisk(index: VolumeIndex, disk: DiskSource): StorageVolumeRecord | null {
  if (!disk.source) return null;
  if (disk.sourcePool && disk.sourceVolume)
    return index.byPoolAndName.get(`${disk.sourcePool}/${disk.sourceVolume}`) ?? null;
  return index.byPath.get(disk.source) ?? null;
}

export type StoragePoolState = 'INACTIVE' | 'BUILDING' | 'RUNNING' | 'DEGRADED' | 'INACCESSIBLE';
export type StorageVolumeType = 'FILE' | 'BLOCK' | 'DIR' | 'NETWORK' | 'NETDIR' | 'PLOOP';

/**
 * The storage technology, in one vocabulary for every platform (the schema's
 * `StorageType` says which platform word maps to which); each platform maps
 * its own words, and keeps them in `rawType`.
 */
export type StorageType =
  | 'VMFS'
  | 'NFS'
  | 'CIFS'
  | 'VSAN'
  | 'VVOL'
  | 'PMEM'
  | 'DIRECTORY'
  | 'FILESYSTEM'
  | 'LVM'
  | 'DISK'
  | 'ISCSI'
  | 'SCSI'
  | 'MULTIPATH'
  | 'RBD'
  | 'GLUSTER'
  | 'ZFS'
  | 'OTHER';

/** Fields every kind of storage shares (the `Storage` interface). */
export interface StorageBase {
  platformId: string;
  nativeId: string;
  name: string;
  type: StorageType;
  /** The platform's own type name (vSphere `summary.type`, libvirt `<pool type>`). */
  rawType: string;
  capacityBytes: number;
  allocationBytes: number;
  availableBytes: number;
  accessible: boolean;
}

export interface StoragePoolRecord extends StorageBase {
  storageKind: 'StoragePool';
  uuid: string;
  state: StoragePoolState;
  active: boolean;
  persistent: boolean;
  autostart: boolean;
  targetPath: string | null;
}

export type DatastoreMaintenanceMode = 'NORMAL' | 'ENTERING_MAINTENANCE' | 'IN_MAINTENANCE' | 'OTHER';

export interface DatastoreRecord extends StorageBase {
  storageKind: 'Datastore';
  uncommittedBytes: number;
  url: string | null;
  maintenanceMode: DatastoreMaintenanceMode | null;
  /** vSphere's `summary.maintenanceMode`, as it reports it. */
  rawMaintenanceMode: string | null;
  datacenterNativeId: string | null;
}

/** Every kind of storage. */
export type StorageRecord = StoragePoolRecord | DatastoreRecord;

export interface StorageVolumeRecord {
  platformId: string;
  /** `poolNativeId/volumeName`. */
  nativeId: string;
  poolNativeId: string;
  name: string;
  key: string;
  path: string;
  type: StorageVolumeType;
  format: string | null;
  capacityBytes: number;
  allocationBytes: number;
}

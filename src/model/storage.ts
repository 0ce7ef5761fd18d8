export type StoragePoolState = 'INACTIVE' | 'BUILDING' | 'RUNNING' | 'DEGRADED' | 'INACCESSIBLE';
export type StorageVolumeType = 'FILE' | 'BLOCK' | 'DIR' | 'NETWORK' | 'NETDIR' | 'PLOOP';

/** Fields every kind of storage shares (the `Storage` interface). */
export interface StorageBase {
  platformId: string;
  nativeId: string;
  name: string;
  type: string;
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

export interface DatastoreRecord extends StorageBase {
  storageKind: 'Datastore';
  datastoreType: 'VMFS' | 'NFS' | 'VSAN' | 'VVOL' | 'OTHER';
  uncommittedBytes: number;
  url: string | null;
  maintenanceMode: string | null;
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

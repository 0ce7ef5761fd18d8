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

/** Every kind of storage; vSphere datastores join this union. */
export type StorageRecord = StoragePoolRecord;

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

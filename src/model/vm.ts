/** A tag, as libvirt domains carry it in their metadata and tenants select VMs by. */
export const VM_TAG = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$/;
export const VM_TAG_RULE = 'must be 1-63 letters, digits, ".", "_", ":" or "-", starting with a letter or digit';

/** `web-{n:3}` with index 7 is `web-007`. */
export function expandName(pattern: string, index: number): string {
  return pattern.replace(/\{n(?::(\d+))?\}/g, (_m, width: string | undefined) =>
    String(index).padStart(Number(width ?? 0), '0'),
  );
}

/** Whether a name pattern numbers its names. */
export const NUMBERED_NAME = /\{n(:\d+)?\}/;

export type PowerState = 'ON' | 'OFF' | 'SUSPENDED' | 'PAUSED';
export type VmPhase =
  | 'PENDING'
  | 'STARTING'
  | 'RUNNING'
  | 'PAUSED'
  | 'STOPPING'
  | 'STOPPED'
  | 'MIGRATING'
  | 'CRASHED'
  | 'UNKNOWN'
  /** status.phase only: a declared VM being made. */
  | 'PROVISIONING'
  /** status.phase only: crashed, or its declaration cannot be met. */
  | 'FAILED';

/**
 * What a platform can list for every VM in one bulk call. Fields that need a
 * per-VM read (devices, memory, ...) are in VmDetails, loaded only when asked.
 */
export interface VmRecord {
  platformId: string;
  nativeId: string;
  name: string;
  uuid: string;
  powerState: PowerState;
  phase: VmPhase;
  rawState: string;
  rawStateReason: string | null;
  runtimeId: number | null;
  persistent: boolean;
  /** Null when the platform does not say. */
  autostart: boolean | null;
  isTemplate: boolean;
  /** Native ID of the host the VM is placed on, when known. */
  hostNativeId: string | null;
}

export type DiskDevice = 'DISK' | 'CDROM' | 'FLOPPY' | 'LUN';

export interface VmDiskRecord {
  device: DiskDevice;
  target: string;
  bus: string | null;
  /**
   * Where the data comes from, in libvirt's words, which every platform maps
   * onto: `file`, `block`, `network`, `volume`, `dir`. An empty drive is
   * `file` with a null source, as libvirt gives it.
   */
  sourceType: string;
  /** A path, a `pool/volume` pair or a network URL. */
  source: string | null;
  /** For libvirt `type='volume'` disks: the pool and volume by name. */
  sourcePool: string | null;
  sourceVolume: string | null;
  /** The storage holding the disk by native ID, when the platform says (vSphere datastore). */
  storageNativeId: string | null;
  format: string | null;
  capacityBytes: number | null;
  readOnly: boolean;
}

export interface VmNicRecord {
  mac: string | null;
  model: string | null;
  type: string;
  source: string | null;
  /** Name of the platform network, when the NIC is attached to one. */
  networkName: string | null;
  /** Native ID of that network, when the platform gives it (vSphere port group). */
  networkNativeId: string | null;
  targetDevice: string | null;
}

export interface VmGraphicsRecord {
  type: string;
  port: number | null;
  autoport: boolean;
  listen: string | null;
}

export interface VmDetails {
  vcpus: number;
  vcpusMax: number;
  coresPerSocket: number | null;
  memoryMiB: number;
  maxMemoryMiB: number;
  guestOs: string | null;
  guestOsFullName: string | null;
  hardwareVersion: string | null;
  ipAddresses: string[];
  guestHostName: string | null;
  osType: string | null;
  guestArch: string | null;
  machineType: string | null;
  description: string | null;
  disks: VmDiskRecord[];
  nics: VmNicRecord[];
  graphics: VmGraphicsRecord[];
  /** libvirt: the tags kept in the domain's metadata; empty elsewhere. */
  tags: string[];
  /** vSphere-only facts; null elsewhere. */
  vsphere: VsphereVmFacts | null;
}

export interface VsphereVmFacts {
  managedObjectId: string;
  instanceUuid: string | null;
  toolsStatus: 'NOT_INSTALLED' | 'NOT_RUNNING' | 'OLD' | 'OK' | null;
  toolsRunningStatus: string | null;
  resourcePoolName: string | null;
  /** Inventory paths (`/DC0/host/C0/Resources/web`, `/DC0/vm/web`); null for a VM in none. */
  resourcePoolPath: string | null;
  folderPath: string | null;
  vmPathName: string | null;
}

/** A change to a VM, as every platform receives it. */
export type VmOperation =
  | { kind: 'START_VM' }
  | { kind: 'STOP_VM'; force: boolean }
  | { kind: 'REBOOT_VM' }
  | { kind: 'RESET_VM' }
  | { kind: 'SUSPEND_VM' }
  | { kind: 'RESUME_VM' }
  | { kind: 'PAUSE_VM' }
  | { kind: 'UNPAUSE_VM' }
  | {
      kind: 'DELETE_VM';
      force: boolean;
      /** libvirt: delete the volumes of its disks too (a pool's retired member; vSphere deletes them anyway). */
      deleteStorage?: boolean;
    }
  | { kind: 'CREATE_SNAPSHOT'; name: string; description: string | null; includeMemory: boolean; quiesce: boolean }
  | { kind: 'REVERT_TO_SNAPSHOT'; snapshotKey: string }
  | { kind: 'DELETE_SNAPSHOT'; snapshotKey: string; withChildren: boolean }
  | {
      kind: 'CLONE_VM';
      name: string;
      placement: Placement;
      powerOn: boolean;
      /** The copy's tags in place of the source's (libvirt); null: the source's. */
      tags: string[] | null;
      /** Share the source's disks (vSphere linked clone; libvirt qcow2 backing files) instead of copying them. */
      linked: boolean;
    }
  | ({ kind: 'RECONFIGURE_VM' } & Reconfiguration)
  | {
      kind: 'MIGRATE_VM';
      hostNativeId: string;
      storageNativeId: string | null;
      destination: MigrationDestination | null;
      /** What the caller bounds the migration by; absent or null: nothing. */
      limits?: MigrationLimits | null;
    };

/**
 * Bounds a caller puts on one migration; null: none. The gateway enforces
 * the timeouts (the migration is aborted, the VM stays on its source); the
 * platform enforces the bandwidth, where it can (libvirt; vSphere cannot).
 */
export interface MigrationLimits {
  /** At most this many MiB/s on the wire. */
  bandwidthMiBps: number | null;
  /** Aborted when not finished this long after it started. */
  completionTimeoutSeconds: number | null;
  /** Aborted when it has made no progress (data remaining at a new low, or progress up) for this long. */
  progressTimeoutSeconds: number | null;
}

/** Where a caller asks a VM to move: a host, on the VM's platform or another, and optionally a storage. */
export interface MigrationTarget {
  platformId: string;
  platformKind: string;
  /** The target platform's endpoint (libvirt migrates peer to peer to it). */
  platformUri: string;
  hostNativeId: string;
  /** Native ID on the VM's own platform. */
  storageNativeId: string | null;
}

/** Where a migration to another platform goes (libvirt: one host per connection). */
export interface MigrationDestination {
  platformId: string;
  uri: string;
}

/** A new VM, neutrally. Native IDs of the platform it is created on. */
export interface VmSpec {
  name: string;
  vcpus: number;
  coresPerSocket: number | null;
  memoryMiB: number;
  /** libosinfo ID (libvirt) or guestId (vSphere). */
  guestOs: string | null;
  disks: { capacityBytes: number; storageNativeId: string | null }[];
  nics: { networkNativeId: string }[];
  placement: Placement;
  /** libvirt: tags for the domain's metadata. */
  tags: string[];
  powerOn: boolean;
}

/** Changes to a VM's hardware; what is null or empty stays as it is. */
export interface Reconfiguration {
  vcpus: number | null;
  coresPerSocket: number | null;
  memoryMiB: number | null;
  /** New disks of this size, on this storage (null: where the VM's first disk is). */
  addDisks: { capacityBytes: number; storageNativeId: string | null }[];
  /** Disks to detach, by target (`vdb`, `scsi0:1`); their data stays on the storage. */
  removeDiskTargets: string[];
  /** New NICs on these networks. */
  addNics: { networkNativeId: string }[];
  /** NICs to remove, by MAC address. */
  removeNicMacs: string[];
}

/** Where a new VM goes; what is not given stays as the source VM has it. Native IDs of the VM's platform. */
export interface Placement {
  hostNativeId: string | null;
  clusterNativeId: string | null;
  storageNativeId: string | null;
  /** vSphere: the VM folder and resource pool, by inventory path. */
  folderPath: string | null;
  resourcePoolPath: string | null;
}

export type VmOperationKind = VmOperation['kind'];
/** What a task does: an operation on a VM, or the creation of one. */
export type TaskOperation = VmOperationKind | 'CREATE_VM';

/** How a running operation reports back to its task. */
export interface OperationReporter {
  /** 0 to 100. */
  progress(percent: number): void;
  /** The platform's own task, when it has one (vSphere `task-123`). */
  upstreamTask(id: string): void;
  /** How much data the operation has moved and has left to move, where the platform says (a libvirt migration job). */
  transfer?(bytes: TransferProgress): void;
  /**
   * Aborted when the task is asked to stop while it runs (a migration's
   * cancel or timeout), with the error it should end with as the reason.
   * An operation that can stop midway stops and throws that reason; one
   * that finished first resolves as usual. Absent: nobody will ask.
   */
  readonly signal?: AbortSignal;
}

/** A transfer as the platform counts it (memory and disks, in bytes). */
export interface TransferProgress {
  total: number;
  processed: number;
  remaining: number;
}

/** What an operation produced, when it produced something. */
export interface OperationResult {
  /** Key of a snapshot it created. */
  snapshotKey?: string;
  /** Native ID of a VM it created (or moved). */
  vmNativeId?: string;
  /** The platform that VM is on, when not the task's own (a migration between libvirt hosts). */
  vmPlatformId?: string;
}

/** Operations a platform cannot do, with the reason shown to the caller. */
export type Unsupported = Partial<Record<VmOperationKind, string>>;

/**
 * An operation stopped because someone asked it to (cancelMigration): its
 * task ends CANCELLED, not FAILED, with this as its error.
 */
export class OperationCancelledError extends Error {
  readonly code = 'CANCELLED';
  constructor(message: string) {
    super(message);
    this.name = 'OperationCancelledError';
  }
}

/** A failure the platform reported while doing the operation. */
export class OperationFailedError extends Error {
  constructor(
    message: string,
    readonly code: string = 'UPSTREAM_FAILED',
  ) {
    super(message);
    this.name = 'OperationFailedError';
  }
}

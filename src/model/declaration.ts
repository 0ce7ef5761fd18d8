import type { Caller } from './caller.js';
import type { VmSpec } from './operations.js';
import type { VmPhase } from './vm.js';

/** How a declared VM's power is kept (KubeVirt's names). */
export type RunStrategy = 'ALWAYS' | 'HALTED' | 'MANUAL' | 'RERUN_ON_FAILURE';

/** How a pool makes its VMs from its source. */
export type CloneMode = 'LINKED' | 'FULL';

/** A declared VM's place in its pool: its number, and whether it serves or waits as a warm standby. */
export interface PoolMembership {
  pool: string;
  index: number;
  role: 'REPLICA' | 'STANDBY';
}

/** What a caller declares a VM to be: what createVm makes it with, and how its power is kept. */
export interface DeclaredSpec extends Omit<VmSpec, 'name' | 'powerOn'> {
  runStrategy: RunStrategy;
}

export type ConditionStatus = 'TRUE' | 'FALSE' | 'UNKNOWN';

/** A fact about a VM's observed state, as Kubernetes writes conditions. */
export interface Condition {
  type: 'Ready' | 'Converged' | 'PlatformReachable';
  status: ConditionStatus;
  reason: string;
  message: string | null;
  /** ISO 8601. */
  lastTransitionTime: string;
}

/** Why the reconciler last could not act, kept until it succeeds. */
export interface ReconcileFailure {
  /** CamelCase, as a condition's reason: InsufficientResources, Forbidden, QuotaExceeded, ... */
  reason: string;
  message: string;
  /** Failures in a row; the next attempt waits backoff(failures). */
  count: number;
  /** ISO 8601: not tried again before. */
  retryAt: string;
  /** A spec that can never be met, as opposed to a failure that may pass. */
  permanent: boolean;
}

/**
 * A declared VM as applied: stored (on disk, or in Redis) before applyVm
 * answers, and known by its platform and name, since the VM may not exist
 * yet. Only applies write it; the reconciler writes its DeclarationState.
 */
export interface DeclaredVm {
  platformId: string;
  name: string;
  spec: DeclaredSpec;
  /** Counts up with each apply that changes the spec. */
  generation: number;
  /** Changes with every apply; applyVm compares it to refuse a stale one. */
  resourceVersion: string;
  /** Who applied it last: the reconciler acts with this caller's rights. */
  appliedBy: Caller;
  /** ISO 8601. */
  appliedAt: string;
  /** A pool's member: made by cloning `source`, not from the spec's disks and NICs. */
  member?: PoolMembership;
  source?: { nativeId: string; cloneMode: CloneMode };
}

/** What a pool's members are kept as; null: as the source. */
export interface PoolSpec {
  vcpus: number | null;
  memoryMiB: number | null;
  runStrategy: RunStrategy;
}

/** A declared pool of clones of one source VM. */
export interface DeclaredPool {
  platformId: string;
  name: string;
  replicas: number;
  warmStandbys: number;
  sourceNativeId: string;
  /** With {n} or {n:3}: a member's name is this with its number. */
  namePattern: string;
  cloneMode: CloneMode;
  spec: PoolSpec;
  generation: number;
  resourceVersion: string;
  appliedBy: Caller;
  appliedAt: string;
  /** deleteVmPool is under way. */
  deleting: { deleteVms: boolean } | null;
  /** The highest member number used so far: numbers are never given twice, so a name is never reused. */
  lastIndex?: number;
}

/** What the reconciler knows of a declared VM, kept beside its declaration. */
export interface DeclarationState {
  /** The VM made or found for it; null until then. */
  nativeId: string | null;
  /**
   * Set, and stored, before the reconciler asks the platform to make the VM:
   * the name is then reserved, so a gateway killed mid-create and started
   * again finds the VM (or its task) instead of making a second.
   */
  creating: { since: string; taskId: string | null } | null;
  /** deleteVm of the declared VM is under way: once the VM is gone, the declaration goes too. */
  deleting: { since: string } | null;
  /** Its pool scaled down past it (or was deleted with its VMs): the VM is stopped and deleted, then the declaration. */
  retiring?: boolean;
  /** The generation the reconciler last acted on. */
  observedGeneration: number | null;
  lastFailure: ReconcileFailure | null;
  /** Conditions as last reported, whose transition times carry over. */
  conditions: Condition[];
}

export const NEW_DECLARATION_STATE: DeclarationState = {
  nativeId: null,
  creating: null,
  deleting: null,
  observedGeneration: null,
  lastFailure: null,
  conditions: [],
};

/** A declaration and its reconciler's state. */
export interface DeclarationRecord {
  declared: DeclaredVm;
  state: DeclarationState;
}

/** A VM's observed state, on every VM. */
export interface VmStatusRecord {
  phase: VmPhase;
  conditions: Condition[];
  observedGeneration: number | null;
}

export const declarationKey = (platformId: string, name: string) => `${platformId}\u0000${name}`;

import type {
  Condition,
  ConditionStatus,
  DeclaredSpec,
  DeclarationRecord,
  VmStatusRecord,
} from '../model/declaration.js';
import type { VmDetails, VmPhase, VmRecord } from '../model/vm.js';

/** Whether the platform's live inventory serves, and why not. */
export interface Reachability {
  reachable: boolean;
  message: string | null;
}

/** One phase machine for every platform: the VM's own phase, and what its declaration adds. */
export function statusPhase(vm: VmRecord | null, declaration: DeclarationRecord | null): VmPhase {
  if (!vm) return declaration?.state.lastFailure?.permanent ? 'FAILED' : 'PROVISIONING';
  switch (vm.phase) {
    case 'CRASHED':
      return 'FAILED';
    case 'PENDING':
      return 'PROVISIONING';
    default:
      return vm.phase;
  }
}

/** Whether the guest stopped by failing rather than by being stopped. */
export const crashed = (vm: VmRecord) => vm.phase === 'CRASHED';

/** The power a run strategy wants of a VM as it is now; null when any will do. */
export function wantedPower(spec: DeclaredSpec, vm: VmRecord): 'ON' | 'OFF' | null {
  switch (spec.runStrategy) {
    case 'ALWAYS':
      return 'ON';
    case 'HALTED':
      return 'OFF';
    case 'RERUN_ON_FAILURE':
      return crashed(vm) ? 'ON' : null;
    case 'MANUAL':
      return null;
  }
}

/** How the VM differs from its spec, for people; empty when it matches. */
export function differences(spec: DeclaredSpec, vm: VmRecord, details: VmDetails | null): string[] {
  const found: string[] = [];
  if (details && details.vcpus !== spec.vcpus) found.push(`vcpus is ${details.vcpus}, declared ${spec.vcpus}`);
  if (details && details.memoryMiB !== spec.memoryMiB)
    found.push(`memoryMiB is ${details.memoryMiB}, declared ${spec.memoryMiB}`);
  const power = wantedPower(spec, vm);
  if (power === 'ON' && (vm.powerState !== 'ON' || crashed(vm)))
    found.push(`it is ${vm.powerState} (${vm.rawState}), declared ${spec.runStrategy}`);
  if (power === 'OFF' && vm.powerState !== 'OFF') found.push(`it is ${vm.powerState}, declared HALTED`);
  return found;
}

const PHASE_REASONS: Partial<Record<VmPhase, string>> = {
  RUNNING: 'Running',
  STOPPED: 'Stopped',
  PAUSED: 'Paused',
  STARTING: 'Starting',
  STOPPING: 'Stopping',
  MIGRATING: 'Migrating',
  FAILED: 'Crashed',
  PROVISIONING: 'Provisioning',
};

export type Fact = Omit<Condition, 'lastTransitionTime'>;

const fact = (type: Condition['type'], status: ConditionStatus, reason: string, message: string | null): Fact => ({
  type,
  status,
  reason,
  message,
});

/** The conditions of a VM as observed now, without their transition times. */
export function currentFacts(
  vm: VmRecord | null,
  details: VmDetails | null,
  declaration: DeclarationRecord | null,
  platform: Reachability,
): Fact[] {
  const phase = statusPhase(vm, declaration);
  const reachable = platform.reachable
    ? fact('PlatformReachable', 'TRUE', 'Synced', null)
    : fact('PlatformReachable', 'FALSE', 'PlatformUnavailable', platform.message);
  if (!declaration) {
    const running = phase === 'RUNNING';
    const ready = platform.reachable
      ? fact('Ready', running ? 'TRUE' : 'FALSE', PHASE_REASONS[phase] ?? phase, null)
      : fact('Ready', 'UNKNOWN', 'PlatformUnavailable', platform.message);
    return [ready, reachable];
  }
  const { spec } = declaration.declared;
  const failure = declaration.state.lastFailure;
  const found = vm ? differences(spec, vm, details) : ['the VM does not exist yet'];
  const converged: Fact = !platform.reachable
    ? fact('Converged', 'UNKNOWN', 'PlatformUnavailable', platform.message)
    : vm && found.length === 0
      ? fact('Converged', 'TRUE', 'Converged', null)
      : fact(
          'Converged',
          'FALSE',
          failure?.reason ?? (vm ? 'Reconciling' : 'Provisioning'),
          failure?.message ?? found.join('; '),
        );
  const settled =
    spec.runStrategy === 'HALTED' ? phase === 'STOPPED' : spec.runStrategy === 'MANUAL' || phase === 'RUNNING';
  const ready =
    converged.status === 'TRUE' && settled
      ? fact('Ready', 'TRUE', spec.runStrategy === 'HALTED' ? 'Halted' : (PHASE_REASONS[phase] ?? phase), null)
      : fact(
          'Ready',
          converged.status === 'UNKNOWN' ? 'UNKNOWN' : 'FALSE',
          converged.status === 'TRUE' ? (PHASE_REASONS[phase] ?? phase) : converged.reason,
          converged.message,
        );
  return [ready, converged, reachable];
}

/**
 * Gives facts their transition times: a condition keeps the time of the one
 * before it while its status stays, and takes `now` when it changes.
 */
export function withTransitions(facts: readonly Fact[], before: readonly Condition[], now: Date): Condition[] {
  return facts.map((f) => {
    const previous = before.find((c) => c.type === f.type);
    return {
      ...f,
      lastTransitionTime: previous && previous.status === f.status ? previous.lastTransitionTime : now.toISOString(),
    };
  });
}

/** Whether two sets of conditions say the same (status and reason of each). */
export function sameConditions(a: readonly Condition[], b: readonly Condition[]): boolean {
  return (
    a.length === b.length &&
    a.every((c) => b.some((d) => d.type === c.type && d.status === c.status && d.reason === c.reason))
  );
}

/**
 * The transition times of undeclared VMs' conditions, as first seen by this
 * instance: remembered only for VMs whose status someone read, and
 * forgotten wholesale past a bound (they are then counted from the next
 * read).
 */
export class ConditionClock {
  private readonly seen = new Map<string, Condition[]>();

  constructor(private readonly bound = 100_000) {}

  stamp(key: string, facts: readonly Fact[], now = new Date()): Condition[] {
    const stamped = withTransitions(facts, this.seen.get(key) ?? [], now);
    if (this.seen.size >= this.bound) this.seen.clear();
    this.seen.set(key, stamped);
    return stamped;
  }

  forget(key: string): void {
    this.seen.delete(key);
  }
}

/** A VM's status: its phase, its conditions with transition times, the generation acted on. */
export function vmStatus(
  vm: VmRecord | null,
  details: VmDetails | null,
  declaration: DeclarationRecord | null,
  platform: Reachability,
  stamp: (facts: readonly Fact[]) => Condition[],
): VmStatusRecord {
  return {
    phase: statusPhase(vm, declaration),
    conditions: stamp(currentFacts(vm, details, declaration, platform)),
    observedGeneration: declaration?.state.observedGeneration ?? null,
  };
}

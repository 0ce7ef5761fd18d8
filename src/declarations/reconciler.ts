import type { Logger } from 'pino';

import type { AccessPolicy } from '../access/policy.js';
import type { Config } from '../config/schema.js';
import type { PlatformRegistry } from '../datasources/registry.js';
import { createLoaders, platformDeadlines } from '../inventory/loaders.js';
import type { Inventory } from '../inventory/inventory.js';
import type { PlatformMirror } from '../inventory/platform-mirror.js';
import type { Caller } from '../model/caller.js';
import type { DeclarationRecord, DeclarationState, ReconcileFailure } from '../model/declaration.js';
import type { EventPublisher } from '../model/events.js';
import { encodeId } from '../model/ids.js';
import type { VmOperation, VmSpec } from '../model/operations.js';
import type { UserError, UserErrorCode } from '../model/user-errors.js';
import type { VmDetails, VmRecord } from '../model/vm.js';
import type { MutationCall, MutationPipeline, OperationPayload } from '../mutations/pipeline.js';
import type { TaskManager, TaskRecord } from '../mutations/task-manager.js';
import { crashed, currentFacts, sameConditions, wantedPower, withTransitions } from './status.js';
import { memberDeclaration, membersOf, planPool, poolEvent, promoted } from './pools.js';
import type { DeclarationStore } from './store.js';

export type ReconcilerConfig = Config['reconciler'];

/** The caller the reconciler acts as: the applier's rights, named so in the audit log. */
export function reconcilerCaller(appliedBy: Caller): Caller {
  return { ...appliedBy, id: `reconciler for ${appliedBy.id}`, expiresAt: null };
}

export const isReconciler = (caller: Caller) => caller.id.startsWith('reconciler for ');

/** How long a delete may take to become a task after its guard marked the declaration. */
const DELETE_START_MS = 10_000;

/** A refusal's code as a condition's reason; permanent ones are not retried until the spec changes. */
const REASONS: Record<UserErrorCode, { reason: string; permanent: boolean }> = {
  NOT_FOUND: { reason: 'NotFound', permanent: false },
  WRONG_STATE: { reason: 'WrongState', permanent: false },
  UNSUPPORTED: { reason: 'Unsupported', permanent: true },
  CONFLICT: { reason: 'Conflict', permanent: false },
  FORBIDDEN: { reason: 'Forbidden', permanent: false },
  QUOTA_EXCEEDED: { reason: 'QuotaExceeded', permanent: false },
  INVALID_INPUT: { reason: 'InvalidSpec', permanent: true },
  IDEMPOTENCY_KEY_REUSED: { reason: 'Conflict', permanent: false },
  PLATFORM_UNAVAILABLE: { reason: 'PlatformUnavailable', permanent: false },
  MANAGED_BY_DECLARATION: { reason: 'Conflict', permanent: false },
};

/** A failed task's error as a condition's reason: platforms say "insufficient" or "not enough" when no host fits. */
function taskFailureReason(task: TaskRecord): string {
  const text = `${task.error?.code ?? ''} ${task.error?.message ?? ''}`;
  return /insufficient|not enough|no host|out of memory|cannot allocate/i.test(text)
    ? 'InsufficientResources'
    : task.operation === 'CREATE_VM' || task.operation === 'CLONE_VM'
      ? 'CreateFailed'
      : 'ActionFailed';
}

/**
 * Keeps one platform's declared VMs as declared: compares each declaration
 * with the VM the live inventory shows and acts on the difference through
 * the mutation pipeline (tasks, audit, quotas, permissions), as the caller
 * who applied it. Woken by the inventory's changes and by applies, and
 * every `resyncSeconds` in any case; never reads the platform itself. With
 * several instances, only the platform's lease holder acts.
 */
export class PlatformReconciler {
  private timer: NodeJS.Timeout | null = null;
  private scheduled = false;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  /** Declarations with an action in flight: one at a time each. */
  private readonly acting = new Set<string>();
  private retryTimer: NodeJS.Timeout | null = null;
  /** The names and bound VMs of the platform's declarations as the last pass saw them: what wakes the next. */
  private watched = { names: new Set<string>(), ids: new Set<string>() };

  constructor(
    readonly platformId: string,
    private readonly deps: {
      store: DeclarationStore;
      inventory: Inventory;
      registry: PlatformRegistry;
      pipeline: MutationPipeline;
      tasks: TaskManager;
      policy: AccessPolicy;
      events: EventPublisher;
      config: ReconcilerConfig;
      operationTimeoutMs: number;
      logger: Logger;
    },
  ) {}

  start(): void {
    const mirror = this.deps.inventory.mirror(this.platformId);
    // A change of a declared VM (by name, or by the VM it is bound to) may be drift, or the VM made or gone;
    // changes of the rest of the estate wake nothing.
    mirror?.onChange((c) => {
      if (c.kind !== 'VirtualMachine') return;
      if (this.watched.ids.has(c.nativeId) || (c.record && this.watched.names.has(c.record.vm.name))) this.wake();
    });
    mirror?.onStatus(() => this.wake());
    this.timer = setInterval(() => this.wake(), this.deps.config.resyncSeconds * 1000);
    this.timer.unref();
    this.wake();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.running;
  }

  /** Runs a pass soon; changes that come together make one pass. */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.running = this.pass()
        .catch((e: unknown) => this.deps.logger.error({ err: e, platform: this.platformId }, 'reconcile pass failed'))
        .finally(() => {
          this.running = null;
          if (this.again) {
            this.again = false;
            this.wake();
          }
        });
    });
  }

  /** Acts only where this instance watches the platform (alone, or as the lease holder). */
  private get leads(): boolean {
    const lease = this.deps.inventory.lease(this.platformId);
    return !lease || lease.role === 'HOLDER';
  }

  private async pass(): Promise<void> {
    if (!this.leads) return;
    const mirror = this.deps.inventory.serving(this.platformId);
    let declarations = await this.deps.store.list(this.platformId);
    if (mirror && (await this.reconcilePools(mirror, declarations)))
      declarations = await this.deps.store.list(this.platformId);
    this.watched = {
      names: new Set(declarations.map((d) => d.declared.name)),
      ids: new Set(declarations.flatMap((d) => (d.state.nativeId ? [d.state.nativeId] : []))),
    };
    if (declarations.length === 0) return;
    const bound = declarations.map((d) => (mirror ? this.boundVm(mirror, d) : null));
    // VMs by name, for declarations not bound to one yet: one scan of the estate only when some are not.
    const byName = new Map<string, VmRecord>();
    const unbound = new Set(declarations.filter((_, i) => !bound[i]).map((d) => d.declared.name));
    if (mirror && unbound.size > 0) {
      for (const vm of mirror.listVms()) if (unbound.has(vm.name) && !byName.has(vm.name)) byName.set(vm.name, vm);
    }
    let soonest = Infinity;
    for (const [i, d] of declarations.entries()) {
      const key = d.declared.name;
      const vm = mirror ? (bound[i] ?? byName.get(key) ?? null) : null;
      const details = vm && mirror ? (mirror.details(vm.nativeId) ?? null) : null;
      await this.report(d, vm, details, mirror !== undefined);
      if (!mirror || this.acting.has(key)) continue;
      const retryAt = d.state.lastFailure ? Date.parse(d.state.lastFailure.retryAt) : 0;
      if (retryAt > Date.now()) {
        // A permanent failure waits for a new spec, not for a timer.
        if (!d.state.lastFailure?.permanent || d.state.observedGeneration !== d.declared.generation)
          soonest = Math.min(soonest, retryAt);
        if (d.state.observedGeneration === d.declared.generation) continue;
      }
      // The rest waits for an action to end: each one wakes a pass when it does.
      if (this.acting.size >= this.deps.config.maxConcurrentActions) break;
      const action = this.next(d, vm, details, mirror);
      if (!action) continue;
      this.acting.add(key);
      void action()
        .catch((e: unknown) => this.deps.logger.error({ err: e, vm: key }, 'reconcile action failed'))
        .finally(() => {
          this.acting.delete(key);
          this.wake();
        });
    }
    if (soonest < Infinity) this.retryAt(soonest);
  }

  private retryAt(at: number): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.wake(), Math.max(10, at - Date.now()));
    this.retryTimer.unref();
  }

  private boundVm(mirror: PlatformMirror, d: DeclarationRecord): VmRecord | null {
    const id = d.state.nativeId;
    if (!id) return null;
    const [vm] = mirror.vmRecords([id]);
    return vm && vm.name === d.declared.name ? vm : null;
  }

  /** Stores the conditions when they changed, and tells subscribers of the VM. */
  private async report(
    d: DeclarationRecord,
    vm: VmRecord | null,
    details: VmDetails | null,
    reachable: boolean,
  ): Promise<void> {
    const facts = currentFacts(vm, details, d, {
      reachable,
      message: reachable ? null : 'the live inventory of the platform is not serving',
    });
    const conditions = withTransitions(facts, d.state.conditions, new Date());
    const boundTo = vm?.nativeId ?? d.state.nativeId;
    // The VM made for it is in the inventory now: its name needs no reserving any more.
    const made = vm !== null && d.state.creating !== null;
    if (sameConditions(conditions, d.state.conditions) && boundTo === d.state.nativeId && !made) return;
    await this.patchState(d, { conditions, nativeId: boundTo, ...(made ? { creating: null } : {}) });
    // A member's readiness is its pool's.
    const member = d.declared.member;
    const pool = member ? await this.deps.store.getPool(this.platformId, member.pool) : undefined;
    if (pool) this.deps.events.publish(poolEvent(pool, 'MODIFIED', this.deps.inventory.mirror(this.platformId)));
    if (vm) {
      this.deps.events.publish({
        type: 'INVENTORY',
        platformId: this.platformId,
        kind: 'VirtualMachine',
        change: 'MODIFIED',
        nativeId: vm.nativeId,
        aspects: ['STATUS'],
        previousPowerState: vm.powerState,
        powerState: vm.powerState,
        vm: { name: vm.name, hostNativeId: vm.hostNativeId },
      });
    }
  }

  /**
   * Brings each pool's members to its counts: declares new members (their
   * names reserved so before any is made), hands out standbys, marks the
   * newest for retirement; drops a deleted pool once its members are gone.
   * True when it wrote anything.
   */
  private async reconcilePools(mirror: PlatformMirror, declarations: readonly DeclarationRecord[]): Promise<boolean> {
    let changed = false;
    const taken = new Set([...declarations.map((d) => d.declared.name), ...mirror.listVms().map((v) => v.name)]);
    for (const pool of await this.deps.store.listPools(this.platformId)) {
      const { all } = membersOf(pool, declarations);
      if (pool.deleting && (!pool.deleting.deleteVms || all.length === 0)) {
        // Without deleteVms the VMs stay, undeclared; with it, they are gone by now.
        for (const d of all) await this.deps.store.delete(this.platformId, d.declared.name);
        await this.deps.store.deletePool(this.platformId, pool.name);
        this.deps.events.publish(poolEvent(pool, 'REMOVED', mirror));
        changed = true;
        continue;
      }
      const plan = planPool(pool, declarations);
      if (plan.promote.length + plan.retire.length + plan.add.length > 0)
        this.deps.events.publish(poolEvent(pool, 'MODIFIED', mirror));
      for (const d of plan.promote) {
        changed =
          (await this.deps.store.putDeclared(promoted(pool, d.declared), d.declared.resourceVersion)) || changed;
      }
      for (const d of plan.retire) {
        await this.patchState(d, { retiring: true });
        changed = true;
      }
      const source = plan.add.length > 0 ? mirror.details(pool.sourceNativeId) : undefined;
      // A source that is gone makes no members; the pool's status says so.
      let index = Math.max(pool.lastIndex ?? 0, ...all.map((d) => d.declared.member!.index));
      for (const m of source ? plan.add : []) {
        index = Math.max(index + 1, m.index);
        let member = memberDeclaration(pool, { ...m, index }, source!);
        // A name some other VM or declaration holds is skipped: numbers only grow.
        while (taken.has(member.name)) member = memberDeclaration(pool, { ...m, index: ++index }, source!);
        taken.add(member.name);
        changed = (await this.deps.store.putDeclared(member, null)) || changed;
      }
      // Remembered with the pool (its resourceVersion kept, so an apply or delete made meanwhile is not undone),
      // so that a number never comes back.
      if (index > (pool.lastIndex ?? 0))
        await this.deps.store.putPool({ ...pool, lastIndex: index }, pool.resourceVersion);
    }
    return changed;
  }

  /** Whether a VM is being made for the declaration now, or was just made and the inventory has not shown it. */
  private creationInFlight(d: DeclarationRecord): boolean {
    const creating = d.state.creating;
    if (!creating) return false;
    if (this.deps.tasks.creating(this.platformId, d.declared.name)) return true;
    const task = creating.taskId ? this.deps.tasks.get(creating.taskId) : undefined;
    if (task && (task.state === 'QUEUED' || task.state === 'RUNNING')) return true;
    // A request a gateway sent just before it died may still make the VM: the name stays reserved a while.
    const reserved = Date.now() - Date.parse(creating.since) < this.deps.config.reservationSeconds * 1000;
    if (reserved && (!task || task.error?.code === 'INTERRUPTED')) return true;
    return task?.state === 'SUCCEEDED' && task.finishedAt !== null && Date.now() - task.finishedAt.getTime() < 30_000;
  }

  /** The one action that brings the VM closer to its declaration; null when there is none to take now. */
  private next(
    d: DeclarationRecord,
    vm: VmRecord | null,
    details: VmDetails | null,
    mirror: PlatformMirror,
  ): (() => Promise<void>) | null {
    const { declared, state } = d;
    if (state.deleting) {
      if (!vm) return () => this.deps.store.delete(this.platformId, declared.name);
      // The delete was refused or failed (its task is over, or never began): the VM stays declared.
      const settled = Date.now() - Date.parse(state.deleting.since) > DELETE_START_MS;
      if (settled && !this.deps.tasks.conflicting(this.platformId, vm.nativeId, false))
        return () => this.patchState(d, { deleting: null });
      return null;
    }
    if (state.retiring) {
      if (!vm) return this.creationInFlight(d) ? null : () => this.deps.store.delete(this.platformId, declared.name);
      if (this.deps.tasks.conflicting(this.platformId, vm.nativeId, false)) return null;
      return vm.powerState === 'OFF'
        ? () => this.act(d, 'deleteVm', vm, { kind: 'DELETE_VM', force: true, deleteStorage: true })
        : () => this.act(d, 'stopVm', vm, { kind: 'STOP_VM', force: true });
    }
    if (!vm) return this.createAction(d, mirror);
    if (this.deps.tasks.conflicting(this.platformId, vm.nativeId, false)) return null;
    const spec = declared.spec;
    const settle = () =>
      this.patchState(d, {
        nativeId: vm.nativeId,
        creating: null,
        observedGeneration: declared.generation,
        lastFailure: null,
      });
    if (details && (details.vcpus !== spec.vcpus || details.memoryMiB !== spec.memoryMiB)) {
      return () =>
        this.act(d, 'reconfigureVm', vm, {
          kind: 'RECONFIGURE_VM',
          vcpus: details.vcpus !== spec.vcpus ? spec.vcpus : null,
          coresPerSocket: details.vcpus !== spec.vcpus ? spec.coresPerSocket : null,
          memoryMiB: details.memoryMiB !== spec.memoryMiB ? spec.memoryMiB : null,
          addDisks: [],
          removeDiskTargets: [],
          addNics: [],
          removeNicMacs: [],
        });
    }
    const power = wantedPower(spec, vm);
    if (power === 'ON') {
      if (vm.powerState === 'PAUSED') return () => this.act(d, 'unpauseVm', vm, { kind: 'UNPAUSE_VM' });
      if (vm.powerState === 'SUSPENDED') return () => this.act(d, 'resumeVm', vm, { kind: 'RESUME_VM' });
      // A crashed guest left paused (QEMU's panic or watchdog) is stopped first, then started.
      if (vm.powerState === 'ON' && crashed(vm))
        return () => this.act(d, 'stopVm', vm, { kind: 'STOP_VM', force: true });
      if (vm.powerState === 'OFF') return () => this.act(d, 'startVm', vm, { kind: 'START_VM' });
    }
    if (power === 'OFF' && vm.powerState !== 'OFF') {
      // A guest that ignores a shutdown request is powered off at the second try.
      const force = (state.lastFailure?.count ?? 0) >= 1 || vm.powerState !== 'ON';
      return () => this.act(d, 'stopVm', vm, { kind: 'STOP_VM', force });
    }
    if (
      state.observedGeneration !== declared.generation ||
      state.lastFailure ||
      state.creating ||
      state.nativeId !== vm.nativeId
    )
      return () => settle();
    return null;
  }

  /** The caller's reads and rights for one action of the reconciler. */
  private callFor(d: DeclarationRecord): MutationCall {
    const caller = reconcilerCaller(d.declared.appliedBy);
    const access = this.deps.policy.for(d.declared.appliedBy);
    return {
      caller,
      access,
      loaders: createLoaders(
        this.deps.registry,
        this.deps.inventory,
        platformDeadlines(this.deps.operationTimeoutMs),
        () => {},
        access,
      ),
      remoteAddress: null,
      registry: this.deps.registry,
    };
  }

  private createAction(d: DeclarationRecord, mirror: PlatformMirror): (() => Promise<void>) | null {
    const { declared } = d;
    const spec = declared.spec;
    if (this.creationInFlight(d)) return null;
    const hosts = mirror.listHosts();
    const largest = Math.max(0, ...hosts.map((h) => h.memoryMiB ?? 0));
    if (hosts.length > 0 && largest > 0 && spec.memoryMiB > largest) {
      return () =>
        this.failed(d, {
          reason: 'InsufficientResources',
          message: `${spec.memoryMiB} MiB of memory is more than any host of platform "${this.platformId}" has (the largest has ${largest} MiB).`,
          permanent: true,
        });
    }
    return async () => {
      // The name is reserved before the platform is asked: a restart finds it and does not make a second VM.
      const since = new Date().toISOString();
      await this.patchState(d, { creating: { since, taskId: null } });
      const { runStrategy, ...shape } = spec;
      const vmSpec: VmSpec = {
        ...shape,
        name: declared.name,
        powerOn: runStrategy === 'ALWAYS' || runStrategy === 'RERUN_ON_FAILURE',
      };
      const source = declared.source;
      const payload = source
        ? await this.deps.pipeline.run(this.callFor(d), {
            mutation: 'cloneVm',
            input: {
              vmId: encodeId({ kind: 'VirtualMachine', platformId: this.platformId, nativeId: source.nativeId }),
            },
            build: () => ({
              kind: 'CLONE_VM',
              name: declared.name,
              placement: spec.placement,
              powerOn: vmSpec.powerOn,
              tags: null,
              linked: source.cloneMode === 'LINKED',
            }),
          })
        : await this.deps.pipeline.runCreate(this.callFor(d), {
            input: {
              platformId: encodeId({ kind: 'Platform', platformId: this.platformId, nativeId: this.platformId }),
              name: declared.name,
            },
            build: () => vmSpec,
          });
      await this.followed(d, { creating: { since, taskId: payload.task?.id ?? null } }, payload);
    };
  }

  /** Runs one operation on the VM through the pipeline, as the applier, and waits for its task. */
  private async act(d: DeclarationRecord, mutation: string, vm: VmRecord, op: VmOperation): Promise<void> {
    this.deps.logger.info(
      { platform: this.platformId, vm: vm.name, mutation, runStrategy: d.declared.spec.runStrategy },
      'reconciling a declared VM',
    );
    const payload = await this.deps.pipeline.run(this.callFor(d), {
      mutation,
      input: { vmId: encodeId({ kind: 'VirtualMachine', platformId: this.platformId, nativeId: vm.nativeId }) },
      build: () => op,
      anyState: op.kind === 'STOP_VM' && op.force,
    });
    await this.followed(d, { nativeId: vm.nativeId }, payload);
  }

  /** Records how an action went: a refusal or a failed task is a failure with backoff; success clears it. */
  private async followed(
    d: DeclarationRecord,
    patch: Partial<DeclarationState>,
    payload: OperationPayload,
  ): Promise<void> {
    const refusal: UserError | undefined = payload.userErrors[0];
    if (refusal) {
      const { reason, permanent } = REASONS[refusal.code];
      await this.failed(d, { reason, message: refusal.message, permanent }, { creating: null });
      return;
    }
    await this.patchState(d, patch);
    const task = payload.task ? await this.deps.tasks.whenFinished(payload.task.id) : null;
    if (task && task.state !== 'SUCCEEDED') {
      const message = task.error?.message ?? `the ${task.operation} task ${task.state}`;
      await this.failed(d, { reason: taskFailureReason(task), message, permanent: false }, { creating: null });
      return;
    }
    // A VM made stays reserved (creating) until the inventory shows it: report() clears it then.
    await this.patchState(d, { lastFailure: null, observedGeneration: d.declared.generation });
  }

  private async failed(
    d: DeclarationRecord,
    f: { reason: string; message: string; permanent: boolean },
    extra: Partial<DeclarationState> = {},
  ): Promise<void> {
    const current = await this.currentState(d);
    const count = (current.lastFailure?.count ?? 0) + 1;
    const { backoffInitialMs, backoffMaxMs } = this.deps.config;
    const delay = Math.min(backoffMaxMs, backoffInitialMs * 2 ** Math.min(count - 1, 30));
    const failure: ReconcileFailure = { ...f, count, retryAt: new Date(Date.now() + delay).toISOString() };
    this.deps.logger.warn(
      { vm: d.declared.name, reason: f.reason, retryInMs: delay, err: f.message },
      'a declared VM could not be reconciled',
    );
    await this.patchState(d, { ...extra, lastFailure: failure, observedGeneration: d.declared.generation });
  }

  private async currentState(d: DeclarationRecord): Promise<DeclarationState> {
    return (await this.deps.store.get(this.platformId, d.declared.name, true))?.state ?? d.state;
  }

  /**
   * Writes some fields of a declaration's state over what is stored now: an
   * action that ran for a while must not undo what passes wrote meanwhile
   * (the VM it was bound to, its conditions).
   */
  private async patchState(d: DeclarationRecord, patch: Partial<DeclarationState>): Promise<void> {
    await this.saveState(d, { ...(await this.currentState(d)), ...patch });
  }

  private async saveState(d: DeclarationRecord, state: DeclarationState): Promise<void> {
    d.state = state;
    await this.deps.store.putState(this.platformId, d.declared.name, state);
  }
}

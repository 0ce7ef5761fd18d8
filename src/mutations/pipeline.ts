import { randomUUID } from 'node:crypto';

import type { Logger } from 'pino';

import { type MigrationTracker, limitsOf } from './migrations.js';
import { type CallerAccess, type VmFiling, type VmPlacement, UNFILED, filingPart } from '../access/policy.js';
import { type QuotaUse, type QuotaVerdict, type Quotas, type ReservedFor, useOf } from './quotas.js';
import type { AuditLog } from './audit-log.js';
import { redact } from './audit-log.js';
import type { OperationResult, Reconfiguration, VmOperation, VmOperationKind, VmSpec } from '../model/operations.js';
import type { Loaders } from '../inventory/loaders.js';
import type { PlatformRegistry } from '../datasources/registry.js';
import type { Caller } from '../model/caller.js';
import { DeadlineExceededError, GatewayError, PlatformUnavailableError } from '../model/errors.js';
import { type NodeKind, decodeIdOf, encodeId, splitChildNativeId } from '../model/ids.js';
import type { PowerState, VmRecord } from '../model/vm.js';
import type { UserError, UserErrorCode } from '../model/user-errors.js';
import type { TaskManager, TaskRecord } from './task-manager.js';
import { type Idempotency, inputFingerprint } from './idempotency.js';

/** What the mutation path needs of the request it serves: who asks, and its reads of the platforms. */
export interface MutationCall {
  caller: Caller;
  /** What the caller may do: every mutation asks it about its target. */
  access: CallerAccess;
  /** The caller's reads: a VM it may not see is one that does not exist. */
  loaders: Loaders;
  /** Where the request came from, for the audit log. */
  remoteAddress: string | null;
  registry: PlatformRegistry;
}

/** Which VM a payload is about; what that VM is like is read when the payload is answered. */
export type VmRef = Pick<VmRecord, 'platformId' | 'nativeId'>;

/**
 * A VM mutation's payload. As answered, `vm` is the VM the mutation acts on
 * as the gateway sees it at that moment; inside the pipeline, and under an
 * idempotency key, it only names that VM (`V` = VmRef), so no copy read
 * before the operation can be answered as the VM's state.
 */
export interface OperationPayload<V extends VmRef = VmRecord> {
  clientMutationId: string | null;
  vm: V | null;
  task: TaskRecord | null;
  userErrors: UserError[];
}

export interface BatchOutcome<V extends VmRef = VmRecord> {
  clientMutationId: string | null;
  items: OperationPayload<V>[];
  tasks: TaskRecord[];
  userErrors: UserError[];
}

/** A payload before it is answered. */
type Pending = OperationPayload<VmRef>;
type PendingBatch = BatchOutcome<VmRef>;

/** A batch mutation: one request per VM, tried in order. */
export interface BatchRequest {
  mutation: string;
  input: { idempotencyKey?: string | null; clientMutationId?: string | null; [field: string]: unknown };
  /** The per-VM requests; a thrown GatewayError refuses the whole batch as INVALID_INPUT. */
  items: () => OperationRequest[];
}

/** The power states each operation may start from; the rest are WRONG_STATE. */
const ALLOWED_FROM: Record<VmOperationKind, readonly PowerState[]> = {
  START_VM: ['OFF'],
  STOP_VM: ['ON', 'PAUSED'],
  REBOOT_VM: ['ON'],
  RESET_VM: ['ON'],
  SUSPEND_VM: ['ON'],
  RESUME_VM: ['SUSPENDED'],
  PAUSE_VM: ['ON'],
  UNPAUSE_VM: ['PAUSED'],
  DELETE_VM: ['OFF', 'SUSPENDED'],
  CREATE_SNAPSHOT: ['ON', 'OFF', 'PAUSED', 'SUSPENDED'],
  REVERT_TO_SNAPSHOT: ['ON', 'OFF', 'PAUSED', 'SUSPENDED'],
  DELETE_SNAPSHOT: ['ON', 'OFF', 'PAUSED', 'SUSPENDED'],
  CLONE_VM: ['ON', 'OFF', 'PAUSED', 'SUSPENDED'],
  RECONFIGURE_VM: ['ON', 'OFF', 'PAUSED', 'SUSPENDED'],
  MIGRATE_VM: ['ON', 'OFF'],
};

/** A mutation's input: it names a VM, or a snapshot (which names its VM). */
export interface OperationInput {
  vmId?: string;
  snapshotId?: string;
  idempotencyKey?: string | null;
  clientMutationId?: string | null;
  [field: string]: unknown;
}

export interface OperationRequest {
  /** The mutation's name, as audited (`stopVm`). */
  mutation: string;
  input: OperationInput;
  /** Builds the platform operation once the target is known (snapshotKey for snapshot targets). */
  build: (snapshotKey: string | null, vm: VmRecord) => VmOperation;
  /** Skips the power-state check (deleteVm with force). */
  anyState?: boolean;
}

export interface CreateRequest {
  input: {
    platformId: string;
    idempotencyKey?: string | null;
    clientMutationId?: string | null;
    [field: string]: unknown;
  };
  /** The spec on the named platform; a thrown GatewayError is an INVALID_INPUT refusal. */
  build: (platformId: string) => VmSpec;
}

/** What the audit log records of a mutation: its name and its input. */
interface Audited {
  mutation: string;
  input: { idempotencyKey?: string | null; clientMutationId?: string | null; [field: string]: unknown };
}

const NO_QUOTA: QuotaVerdict = { fits: true, release: () => {} };

class Refusal extends Error {
  constructor(readonly userError: UserError) {
    super(userError.message);
  }
}

const refuse = (code: UserErrorCode, message: string, field: string[] | null = null): never => {
  throw new Refusal({ code, message, field });
};

/**
 * A payload as its idempotency key keeps it: the VM and the task by ID, so a
 * replay shows both as they are now. Keys kept by earlier versions hold the
 * whole VM record as it was before the operation; only its IDs are read.
 */
interface StoredPayload {
  vm: VmRef | null;
  taskId: string | null;
  userErrors: UserError[];
}

/** What an idempotency key keeps of a mutation's outcome. */
export type StoredOutcome =
  { kind: 'single'; payload: StoredPayload } | { kind: 'batch'; items: StoredPayload[]; userErrors: UserError[] };

export interface MutationPipelineDeps {
  tasks: TaskManager;
  audit: AuditLog;
  idempotencyKeys: Idempotency<StoredOutcome>;
  /** Brings the live inventory up to date with VMs an operation changed, before its task succeeds. */
  inventory: { refresh(platformId: string, what: { vms: readonly string[]; storage: boolean }): Promise<void> };
  /** Per-tenant quotas; absent: none. */
  quotas?: Quotas;
  /** Keeps each migration as an object of its own (progress, limits, cancel); absent: migrations are tasks only. */
  migrations?: MigrationTracker;
  logger: Logger;
}

/**
 * Asked before an operation on an existing VM is started, once every other
 * check passed: a user error refuses it.
 */
export type OperationGuard = (ctx: MutationCall, vm: VmRecord, op: VmOperation) => Promise<UserError | null>;

/**
 * The mutation path: validate, find the target fresh from the platform,
 * check permission, support, state and conflicts, then start a task and
 * return at once. Every outcome is audited.
 */
export class MutationPipeline {
  private readonly guards: OperationGuard[] = [];

  constructor(private readonly deps: MutationPipelineDeps) {
    // How the work ended joins the trail, whoever was waiting (or not, after a restart).
    deps.tasks.onFinished((task) => this.auditFinished(task));
  }

  private storePayload(p: Pending): StoredPayload {
    return { vm: refOf(p.vm), taskId: p.task?.id ?? null, userErrors: p.userErrors };
  }

  private restorePayload(p: StoredPayload, clientMutationId: string | null): Pending {
    const task = p.taskId === null ? null : (this.deps.tasks.get(p.taskId) ?? null);
    return { clientMutationId, vm: refOf(p.vm), task, userErrors: p.userErrors };
  }

  private readonly singleCodec: Codec<Pending> = {
    store: (p) => ({ kind: 'single', payload: this.storePayload(p) }),
    restore: (s, clientMutationId) =>
      s.kind === 'single'
        ? this.restorePayload(s.payload, clientMutationId)
        : { clientMutationId, vm: null, task: null, userErrors: s.userErrors },
  };

  private readonly batchCodec: Codec<PendingBatch> = {
    store: (b) => ({ kind: 'batch', items: b.items.map((i) => this.storePayload(i)), userErrors: b.userErrors }),
    restore: (s, clientMutationId) => {
      const items = s.kind === 'batch' ? s.items.map((i) => this.restorePayload(i, null)) : [];
      const tasks = items.flatMap((i) => (i.task ? [i.task] : []));
      return { clientMutationId, items, tasks, userErrors: s.kind === 'batch' ? s.userErrors : s.payload.userErrors };
    },
  };

  /** Adds a check that runs before each operation on an existing VM starts (declarations keep theirs). */
  guardWith(guard: OperationGuard): void {
    this.guards.push(guard);
  }

  /** Runs a batch: each item as its own operation (audited, checked, tasked); the batch as one idempotent unit. */
  async runBatch(ctx: MutationCall, req: BatchRequest): Promise<BatchOutcome> {
    const clientMutationId = req.input.clientMutationId ?? null;
    const refused = (error: UserError): PendingBatch => ({
      clientMutationId,
      items: [],
      tasks: [],
      userErrors: [error],
    });
    const outcome = await this.idempotent(
      ctx,
      this.batchCodec,
      req,
      '',
      refused,
      () => null,
      async (): Promise<PendingBatch> => {
        let requests: OperationRequest[];
        try {
          requests = req.items();
        } catch (e) {
          if (!(e instanceof GatewayError)) throw e;
          const error: UserError = {
            code: 'INVALID_INPUT',
            field: (e.extensions['field'] as string[] | undefined) ?? null,
            message: e.message,
          };
          await this.audit(ctx, req, '', 'REFUSED', [error.code], null);
          return refused(error);
        }
        const items: Pending[] = [];
        // One after another, so each sees the tasks and names of the ones before it.
        for (const r of requests) items.push(await this.attempt(ctx, r, r.input.vmId ?? r.input.snapshotId ?? ''));
        return { clientMutationId, items, tasks: items.flatMap((i) => (i.task ? [i.task] : [])), userErrors: [] };
      },
    );
    this.readAgainWhereDirect(ctx, outcome.items);
    return { ...outcome, items: await Promise.all(outcome.items.map((i) => this.answered(ctx, i))) };
  }

  async run(ctx: MutationCall, req: OperationRequest): Promise<OperationPayload> {
    const targetId = req.input.vmId ?? req.input.snapshotId ?? '';
    const payload = await this.idempotent(
      ctx,
      this.singleCodec,
      req,
      targetId,
      (e) => this.payloadRefused(req, e),
      (p) => p.task?.id ?? null,
      () => this.attempt(ctx, req, targetId),
    );
    this.readAgainWhereDirect(ctx, [payload]);
    return this.answered(ctx, payload);
  }

  /**
   * A payload as the client gets it: its VM read at this moment, as the
   * gateway sees it (its live inventory, or its platform read again), never
   * the copy read before the operation, which normalized client caches
   * (Apollo Client, urql) would keep as the VM's current state. A task that
   * finished within the request shows its effect here; one still running
   * shows it later, through its target or a vmChanged event.
   */
  private async answered(ctx: MutationCall, payload: Pending): Promise<OperationPayload> {
    return { ...payload, vm: payload.vm && (await this.currentVm(ctx, payload.vm)) };
  }

  /**
   * A platform read directly (its live inventory is not serving) has its
   * listing cached for the request, as it was before the operation: it is
   * read once more, once per platform for a whole batch.
   */
  private readAgainWhereDirect(ctx: MutationCall, payloads: readonly Pending[]): void {
    const direct = new Set(
      payloads.flatMap((p) => (p.vm && !ctx.loaders.mirrorOf(p.vm.platformId) ? [p.vm.platformId] : [])),
    );
    for (const platformId of direct) {
      ctx.loaders.allVms.clear(platformId);
      ctx.loaders.vms.clear(platformId);
    }
  }

  /** A VM as it is now; null when it is gone, hidden from the caller, or its platform cannot be read. */
  private async currentVm(ctx: MutationCall, ref: VmRef): Promise<VmRecord | null> {
    try {
      return await ctx.loaders.vm(ref.platformId, ref.nativeId);
    } catch (e) {
      // The mutation has acted (or refused) already: a read for its answer must not turn that into an error.
      this.deps.logger.warn(
        { err: e, platform: ref.platformId, vm: ref.nativeId },
        'could not read the VM a mutation answers with',
      );
      return null;
    }
  }

  /**
   * A mutation with an idempotency key runs once per (caller, key, input):
   * a retry gets the first result (audited REPLAYED), even after a restart;
   * the key reused for another mutation or other input is refused
   * (IDEMPOTENCY_KEY_REUSED). A refusal binds no key, so a retry after the
   * caller fixed its cause runs again. Without a key, attempt just runs.
   */
  private async idempotent<V extends { clientMutationId: string | null }>(
    ctx: MutationCall,
    codec: Codec<V>,
    what: Audited,
    targetId: string,
    refusedWith: (error: UserError) => V,
    taskIdOf: (value: V) => string | null,
    attempt: () => Promise<V>,
  ): Promise<V> {
    const key = what.input.idempotencyKey;
    if (!key) return attempt();
    const clientMutationId = what.input.clientMutationId ?? null;
    const result = await this.deps.idempotencyKeys.once(ctx.caller.id, key, {
      operation: what.mutation,
      fingerprint: inputFingerprint(what.input),
      run: async () => codec.store(await attempt()),
      binds: acted,
    });
    if ('reused' in result) {
      const error: UserError = {
        code: 'IDEMPOTENCY_KEY_REUSED',
        field: ['idempotencyKey'],
        message:
          result.reused === 'OPERATION'
            ? `This idempotency key was used for ${result.usedFor}; use a new key for ${what.mutation}.`
            : `This idempotency key was used for ${result.usedFor} with other input; use a new key for a different request.`,
      };
      await this.audit(ctx, what, targetId, 'REFUSED', [error.code], null);
      return refusedWith(error);
    }
    // A replay on another instance may come before the first run's task record reaches this one.
    if (result.replayed) await Promise.all(taskIdsOf(result.outcome).map((id) => this.deps.tasks.find(id, 2_000)));
    const value = codec.restore(result.outcome, clientMutationId);
    if (result.replayed) await this.audit(ctx, what, targetId, 'REPLAYED', [], taskIdOf(value));
    return value;
  }

  private async attempt(ctx: MutationCall, req: OperationRequest, targetId: string): Promise<Pending> {
    try {
      const { vm, snapshotKey } = await this.resolveTarget(ctx, req.input);
      const placed = await ctx.loaders.placementOf(vm);
      const decision = ctx.access.may(req.mutation, placed);
      if (!decision.allowed) refuse('FORBIDDEN', decision.reason);

      const op = this.buildOperation(req, snapshotKey, vm);
      const provider = ctx.registry.get(vm.platformId);
      const unsupported = provider?.unsupported[op.kind];
      if (!provider || unsupported) return refuse('UNSUPPORTED', unsupported ?? 'The platform cannot do this.');
      const limitsProblem = op.kind === 'MIGRATE_VM' && op.limits && provider.migrationLimitsProblem?.(op.limits);
      if (limitsProblem) refuse('UNSUPPORTED', limitsProblem.message, [limitsProblem.field]);
      if (op.kind === 'CLONE_VM') {
        const problem = provider.placementProblem(op.placement, op.tags, 'copy');
        if (problem) refuse('INVALID_INPUT', problem, ['placement']);
      }
      // A copy is a VM of its own, and a migrated VM lands where it goes: the caller must be allowed there.
      const copy =
        op.kind === 'CLONE_VM'
          ? await ctx.loaders.placementOf(
              {
                platformId: vm.platformId,
                name: op.name,
                // Placed in a cluster only: the copy's host is the cluster's choice, not the source's.
                hostNativeId: op.placement.hostNativeId ?? (op.placement.clusterNativeId ? null : vm.hostNativeId),
                clusterNativeId: op.placement.clusterNativeId,
              },
              copyFiling(placed, op),
            )
          : null;
      const landing =
        op.kind === 'MIGRATE_VM'
          ? await ctx.loaders.placementOf(
              { platformId: op.destination?.platformId ?? vm.platformId, name: vm.name, hostNativeId: op.hostNativeId },
              // It keeps its tags, and its folder and pool (vSphere migrates within one vCenter).
              filingPart(placed),
            )
          : null;
      for (const place of [copy, landing]) {
        if (!place) continue;
        if (!ctx.access.seesPlatform(place.platformId)) refuse('NOT_FOUND', 'No such host.', ['hostId']);
        const allowed = ctx.access.may(req.mutation, place);
        if (!allowed.allowed) refuse('FORBIDDEN', allowed.reason);
      }

      if (op.kind === 'CLONE_VM') await this.checkNewName(ctx, vm.platformId, op.name);
      if (op.kind === 'RECONFIGURE_VM') await this.checkDevicesToRemove(ctx, vm, op);
      // A VM with an operation in flight is in no settled state: conflicts first.
      const shared = op.kind === 'CLONE_VM';
      const busy = this.deps.tasks.conflicting(vm.platformId, vm.nativeId, shared);
      if (busy) {
        refuse(
          'CONFLICT',
          `${vm.name} has a ${busy.operation} task ${busy.state} (${encodeId({ kind: 'Task', platformId: busy.platformId, nativeId: busy.id })}); try again when it has finished.`,
        );
      }
      const allowed = provider.allowedStates?.[op.kind] ?? ALLOWED_FROM[op.kind];
      if (!req.anyState && !allowed.includes(vm.powerState)) {
        refuse(
          'WRONG_STATE',
          `${vm.name} is ${vm.powerState} (${vm.rawState}${vm.rawStateReason ? `, ${vm.rawStateReason}` : ''}); ` +
            `${req.mutation} needs it ${allowed.join(' or ')}${provider.allowedStates?.[op.kind] ? ' on this platform' : ''}.`,
        );
      }
      // Last, once nothing else refuses: a guard may note what is about to happen (a declared VM's delete).
      for (const guard of this.guards) {
        const refusal = await guard(ctx, vm, op);
        if (refusal) refuse(refusal.code, refusal.message, refusal.field);
      }
      const release = await this.reserveQuota(ctx, vm, op, copy);
      const migrationId = await this.prepareMigration(vm, op);
      const task = await this.deps.tasks
        .submit({
          id: migrationId ?? undefined,
          platformId: vm.platformId,
          hostNativeId: vm.hostNativeId,
          operation: op.kind,
          targetNativeId: vm.nativeId,
          targetName: vm.name,
          targetFiling: filingPart(placed),
          newVmName: op.kind === 'CLONE_VM' ? op.name : undefined,
          caller: ctx.caller.id,
          mutation: req.mutation,
          auditTargetId: targetId,
          shared,
          run: (reporter) =>
            this.withReadYourWrites(
              vm.platformId,
              [vm.nativeId],
              touchesStorage(op),
              provider.runOperation(
                vm.nativeId,
                op,
                migrationId ? (this.deps.migrations?.reporterFor(migrationId, reporter) ?? reporter) : reporter,
              ),
            ).finally(release),
        })
        .catch(async (e: unknown) => {
          release();
          if (migrationId) await this.deps.migrations?.discard(migrationId);
          throw e;
        });
      await this.audit(ctx, req, targetId, 'ACCEPTED', [], task.id);
      return { clientMutationId: req.input.clientMutationId ?? null, vm: refOf(vm), task, userErrors: [] };
    } catch (e) {
      if (e instanceof Refusal) return this.refused(ctx, req, targetId, e.userError);
      if (e instanceof PlatformUnavailableError || e instanceof DeadlineExceededError) {
        return this.refused(ctx, req, targetId, { code: 'PLATFORM_UNAVAILABLE', field: null, message: e.message });
      }
      throw e;
    }
  }

  /**
   * Reserves what a clone or a reconfiguration adds to the tenants that hold
   * the VM (or the copy), refusing QUOTA_EXCEEDED past a quota; the returned
   * function gives the reservation back.
   */
  private async reserveQuota(
    ctx: MutationCall,
    vm: VmRecord,
    op: VmOperation,
    copy: VmPlacement | null,
  ): Promise<() => void> {
    const quotas = this.deps.quotas;
    if (!quotas || (op.kind !== 'CLONE_VM' && op.kind !== 'RECONFIGURE_VM')) return () => {};
    const details = await ctx.loaders.vmDetails.load({ platformId: vm.platformId, nativeId: vm.nativeId });
    const before = useOf(details);
    let demand: QuotaUse;
    let forVm: ReservedFor;
    if (op.kind === 'CLONE_VM') {
      demand = before;
      forVm = { kind: 'new', platformId: copy?.platformId ?? vm.platformId, name: op.name };
    } else {
      forVm = { kind: 'change', platformId: vm.platformId, nativeId: vm.nativeId, before };
      const removed = details.disks.filter((d) => d.device === 'DISK' && op.removeDiskTargets.includes(d.target));
      const bytes =
        op.addDisks.reduce((sum, d) => sum + d.capacityBytes, 0) -
        removed.reduce((sum, d) => sum + (d.capacityBytes ?? 0), 0);
      demand = {
        vms: 0,
        vcpus: op.vcpus === null ? 0 : op.vcpus - details.vcpus,
        memoryMiB: op.memoryMiB === null ? 0 : op.memoryMiB - details.memoryMiB,
        diskGiB: bytes / 1024 ** 3,
      };
    }
    const verdict = await quotas.reserve(ctx.loaders, copy ?? (await ctx.loaders.placementOf(vm)), demand, forVm);
    if (!verdict.fits) return refuse('QUOTA_EXCEEDED', verdict.reason);
    return verdict.release;
  }

  /**
   * A migration's record, stored under the ID its task will have before the
   * task is submitted, so that the task never runs (or shows) without it;
   * null for other operations, or without a tracker.
   */
  private async prepareMigration(vm: VmRecord, op: VmOperation): Promise<string | null> {
    const tracker = this.deps.migrations;
    if (!tracker || op.kind !== 'MIGRATE_VM') return null;
    const id = randomUUID();
    await tracker.prepare(id, {
      platformId: vm.platformId,
      vmNativeId: vm.nativeId,
      vmName: vm.name,
      sourceHostNativeId: vm.hostNativeId,
      targetPlatformId: op.destination?.platformId ?? vm.platformId,
      targetHostNativeId: op.hostNativeId,
      limits: limitsOf(op.limits),
    });
    return id;
  }

  /** Cancels a queued task, through the same authorization check and audit as every mutation. */
  async cancel(
    ctx: MutationCall,
    input: { taskId: string; clientMutationId?: string | null },
  ): Promise<{ clientMutationId: string | null; task: TaskRecord | null; userErrors: UserError[] }> {
    const req: Audited = { mutation: 'cancelTask', input };
    const clientMutationId = input.clientMutationId ?? null;
    const refusedWith = async (error: UserError) => {
      await this.audit(ctx, req, input.taskId, 'REFUSED', [error.code], null);
      return { clientMutationId, task: null, userErrors: [error] };
    };
    let nativeId: string;
    try {
      nativeId = decodeIdOf(input.taskId, 'Task').nativeId;
    } catch (e) {
      return refusedWith({
        code: 'INVALID_INPUT',
        field: ['taskId'],
        message: e instanceof GatewayError ? e.message : 'Not a valid ID.',
      });
    }
    const task = this.deps.tasks.get(nativeId);
    if (task) {
      // A task is as visible as the VM it acts on (or, for a create, the VM it makes).
      const target = await ctx.loaders.placementOf(
        { platformId: task.platformId, name: task.targetName, hostNativeId: task.hostNativeId },
        task.targetFiling ?? UNFILED,
      );
      // Worded as TaskManager words a task it does not have: a hidden task is one that does not exist.
      if (!ctx.access.seesVm(target))
        return refusedWith({ code: 'NOT_FOUND', field: ['taskId'], message: 'No such task.' });
      const decision = ctx.access.may('cancelTask', target);
      if (!decision.allowed) return refusedWith({ code: 'FORBIDDEN', field: null, message: decision.reason });
    }
    const outcome = await this.deps.tasks.cancel(nativeId);
    if ('refused' in outcome) {
      return refusedWith({
        code: this.deps.tasks.get(nativeId) ? 'WRONG_STATE' : 'NOT_FOUND',
        field: ['taskId'],
        message: outcome.refused,
      });
    }
    await this.audit(ctx, req, input.taskId, 'ACCEPTED', [], outcome.task.id);
    return { clientMutationId, task: outcome.task, userErrors: [] };
  }

  /**
   * The operation's result, once the live inventory shows its effect on the
   * VMs it touched (and the VM it made), so a query after the task
   * succeeded sees the new state.
   */
  private async withReadYourWrites(
    platformId: string,
    touched: string[],
    storage: boolean,
    work: Promise<OperationResult>,
  ): Promise<OperationResult> {
    const result = await work;
    const made = result.vmNativeId && (result.vmPlatformId ?? platformId) === platformId ? [result.vmNativeId] : [];
    await this.deps.inventory.refresh(platformId, { vms: [...touched, ...made], storage });
    if (result.vmPlatformId && result.vmPlatformId !== platformId && result.vmNativeId) {
      await this.deps.inventory.refresh(result.vmPlatformId, { vms: [result.vmNativeId], storage });
    }
    return result;
  }

  /** A new VM (clone, create) needs a valid name that no VM, and no task creating one, has on its platform. */
  private async checkNewName(ctx: MutationCall, platformId: string, name: string): Promise<void> {
    if (!/^[A-Za-z0-9][A-Za-z0-9._ -]{0,79}$/.test(name)) {
      refuse(
        'INVALID_INPUT',
        'A VM name is 1 to 80 letters, digits, spaces, ".", "_" or "-", starting with a letter or digit.',
        ['name'],
      );
    }
    const taken =
      (await ctx.loaders.allVms.load(platformId)).some((v) => v.name === name) ||
      this.deps.tasks.creating(platformId, name);
    if (taken) refuse('INVALID_INPUT', `A VM named "${name}" already exists on this platform.`, ['name']);
  }

  /**
   * Disks and NICs to remove must be the VM's own, compared exactly (MACs
   * without regard to case), so a typo is refused before a task starts
   * instead of failing it, or matching another device.
   */
  private async checkDevicesToRemove(ctx: MutationCall, vm: VmRecord, change: Reconfiguration): Promise<void> {
    if (change.removeDiskTargets.length === 0 && change.removeNicMacs.length === 0) return;
    const details = await ctx.loaders.vmDetails.load({ platformId: vm.platformId, nativeId: vm.nativeId });
    const targets = new Set(details.disks.map((d) => d.target));
    const missingDisk = change.removeDiskTargets.find((t) => !targets.has(t));
    if (missingDisk !== undefined) {
      refuse(
        'INVALID_INPUT',
        `${vm.name} has no disk "${missingDisk}"; its disks are ${[...targets].join(', ') || 'none'}.`,
        ['removeDiskTargets'],
      );
    }
    const macs = new Set(details.nics.flatMap((n) => (n.mac ? [n.mac.toLowerCase()] : [])));
    const missingNic = change.removeNicMacs.find((m) => !macs.has(m.toLowerCase()));
    if (missingNic !== undefined) {
      refuse('INVALID_INPUT', `${vm.name} has no NIC with MAC address "${missingNic}".`, ['removeNicMacs']);
    }
  }

  /** createVm: like an operation, but its target is a platform and a name. */
  async runCreate(ctx: MutationCall, req: CreateRequest): Promise<OperationPayload> {
    const { input } = req;
    const caller = ctx.caller.id;
    const audited: Audited = { mutation: 'createVm', input };
    const refused = (e: UserError) => this.payloadRefused(audited, e);
    const payload = await this.idempotent(
      ctx,
      this.singleCodec,
      audited,
      input.platformId,
      refused,
      (p) => p.task?.id ?? null,
      async (): Promise<Pending> => {
        try {
          let platformId: string;
          try {
            platformId = decodeIdOf(input.platformId, 'Platform').platformId;
          } catch (e) {
            return refuse('INVALID_INPUT', e instanceof GatewayError ? e.message : 'Not a valid ID.', ['platformId']);
          }
          const provider = ctx.registry.get(platformId);
          if (!provider || !ctx.access.seesPlatform(platformId))
            return refuse('NOT_FOUND', `No platform "${platformId}" is configured.`, ['platformId']);
          let spec: VmSpec;
          try {
            spec = req.build(platformId);
          } catch (e) {
            if (e instanceof GatewayError)
              return refuse('INVALID_INPUT', e.message, (e.extensions['field'] as string[] | undefined) ?? null);
            throw e;
          }
          // The VM it would be, where it would be, must be one the caller may create.
          const filing: VmFiling = {
            folderPath: spec.placement.folderPath,
            resourcePoolPath: spec.placement.resourcePoolPath,
            tags: spec.tags,
          };
          const target = await ctx.loaders.placementOf(
            {
              platformId,
              name: spec.name,
              hostNativeId: spec.placement.hostNativeId,
              clusterNativeId: spec.placement.clusterNativeId,
            },
            filing,
          );
          const decision = ctx.access.may('createVm', target);
          if (!decision.allowed) refuse('FORBIDDEN', decision.reason);
          const problem = provider.placementProblem(spec.placement, spec.tags, 'new');
          if (problem) refuse('INVALID_INPUT', problem, ['placement']);
          try {
            await this.checkNewName(ctx, platformId, spec.name);
          } catch (e) {
            if (e instanceof PlatformUnavailableError || e instanceof DeadlineExceededError)
              return refuse('PLATFORM_UNAVAILABLE', e.message);
            throw e;
          }
          const disks = spec.disks.reduce((sum, d) => sum + d.capacityBytes, 0);
          const demand = { vms: 1, vcpus: spec.vcpus, memoryMiB: spec.memoryMiB, diskGiB: disks / 1024 ** 3 };
          const verdict =
            (await this.deps.quotas?.reserve(ctx.loaders, target, demand, {
              kind: 'new',
              platformId,
              name: spec.name,
            })) ?? NO_QUOTA;
          if (!verdict.fits) refuse('QUOTA_EXCEEDED', verdict.reason);
          const release = verdict.fits ? verdict.release : () => {};
          const task = await this.deps.tasks
            .submit({
              platformId,
              hostNativeId: spec.placement.hostNativeId,
              operation: 'CREATE_VM',
              targetNativeId: `new/${spec.name}`,
              targetName: spec.name,
              targetFiling: filing,
              caller,
              mutation: 'createVm',
              auditTargetId: input.platformId,
              newVmName: spec.name,
              run: (reporter) =>
                this.withReadYourWrites(platformId, [], true, provider.createVm(spec, reporter)).finally(release),
            })
            .catch((e: unknown) => {
              release();
              throw e;
            });
          await this.audit(ctx, audited, input.platformId, 'ACCEPTED', [], task.id);
          return { clientMutationId: input.clientMutationId ?? null, vm: null, task, userErrors: [] };
        } catch (e) {
          if (e instanceof Refusal) return this.refused(ctx, audited, input.platformId, e.userError);
          throw e;
        }
      },
    );
    // Acts on a platform, not a VM: the VM it makes is the task's resultVm.
    return { ...payload, vm: null };
  }

  /** The VM (and snapshot key) a request names, read fresh from its platform. */
  /** Builds the operation; input it cannot use becomes an INVALID_INPUT refusal. */
  private buildOperation(req: OperationRequest, snapshotKey: string | null, vm: VmRecord): VmOperation {
    try {
      return req.build(snapshotKey, vm);
    } catch (e) {
      if (e instanceof GatewayError)
        return refuse('INVALID_INPUT', e.message, (e.extensions['field'] as string[] | null) ?? null);
      throw e;
    }
  }

  private async resolveTarget(
    ctx: MutationCall,
    input: OperationInput,
  ): Promise<{ vm: VmRecord; snapshotKey: string | null }> {
    const field = input.vmId !== undefined ? 'vmId' : 'snapshotId';
    const kind: NodeKind = input.vmId !== undefined ? 'VirtualMachine' : 'Snapshot';
    let ref;
    try {
      ref = decodeIdOf(input.vmId ?? input.snapshotId ?? '', kind);
    } catch (e) {
      return refuse('INVALID_INPUT', e instanceof GatewayError ? e.message : 'Not a valid ID.', [field]);
    }
    if (!ctx.registry.get(ref.platformId))
      refuse('NOT_FOUND', `No platform "${ref.platformId}" is configured.`, [field]);
    let vmNativeId = ref.nativeId;
    let snapshotKey: string | null = null;
    if (kind === 'Snapshot') {
      const parts = splitChildNativeId(ref.nativeId);
      if (!parts) return refuse('INVALID_INPUT', 'Not a valid snapshot ID.', [field]);
      vmNativeId = parts.parent;
      snapshotKey = parts.child;
    }
    try {
      const vm = await ctx.loaders.vm(ref.platformId, vmNativeId);
      if (!vm) return refuse('NOT_FOUND', `No VM with that ID exists on platform "${ref.platformId}".`, [field]);
      if (snapshotKey !== null) {
        const snapshots = await ctx.loaders.snapshots.load({ platformId: ref.platformId, nativeId: vmNativeId });
        if (!snapshots.some((s) => s.key === snapshotKey))
          refuse('NOT_FOUND', `${vm.name} has no such snapshot.`, [field]);
      }
      return { vm, snapshotKey };
    } catch (e) {
      if (e instanceof PlatformUnavailableError || e instanceof DeadlineExceededError)
        return refuse('PLATFORM_UNAVAILABLE', e.message);
      throw e;
    }
  }

  private async refused(ctx: MutationCall, what: Audited, targetId: string, error: UserError): Promise<Pending> {
    await this.audit(ctx, what, targetId, 'REFUSED', [error.code], null);
    return this.payloadRefused(what, error);
  }

  /** The payload of a refusal (already audited). */
  private payloadRefused(what: Audited, error: UserError): Pending {
    return { clientMutationId: what.input.clientMutationId ?? null, vm: null, task: null, userErrors: [error] };
  }

  private async audit(
    ctx: MutationCall,
    what: Audited,
    targetId: string,
    outcome: 'REFUSED' | 'ACCEPTED' | 'REPLAYED',
    codes: UserErrorCode[],
    taskId: string | null,
  ): Promise<void> {
    await this.deps.audit.append({
      caller: ctx.caller.id,
      operation: what.mutation,
      targetId,
      input: redact(what.input),
      outcome,
      userErrorCodes: codes,
      taskId,
      errorCode: null,
      grants: ctx.access.grantNames,
      sourceAddress: ctx.remoteAddress,
    });
  }

  /** How a task ended, under the mutation that started it; its input is in the ACCEPTED entry. */
  private async auditFinished(task: TaskRecord): Promise<void> {
    try {
      await this.deps.audit.append({
        caller: task.caller,
        operation: task.mutation,
        targetId: task.auditTargetId,
        input: '{}',
        outcome: task.state === 'SUCCEEDED' ? 'SUCCEEDED' : task.state === 'CANCELLED' ? 'CANCELLED' : 'FAILED',
        userErrorCodes: [],
        taskId: task.id,
        errorCode: task.error?.code ?? null,
        grants: [],
        sourceAddress: null,
      });
    } catch (e) {
      this.deps.logger.error({ err: e, task: task.id }, 'could not audit how a task ended');
    }
  }
}

/** Whether an operation may create or remove storage volumes (which no platform reports changes of). */
function touchesStorage(op: VmOperation): boolean {
  switch (op.kind) {
    case 'CLONE_VM':
    case 'DELETE_VM':
    case 'MIGRATE_VM':
      return true;
    case 'RECONFIGURE_VM':
      return op.addDisks.length > 0 || op.removeDiskTargets.length > 0;
    default:
      return false;
  }
}

/**
 * Whether an outcome binds its idempotency key: it started a task, or
 * completed. A refusal (user errors, no task) changed nothing; kept, it
 * would answer a retry made after the caller fixed its cause for 24 hours.
 */
function acted(outcome: StoredOutcome): boolean {
  const started = (p: StoredPayload) => p.taskId !== null || p.userErrors.length === 0;
  return outcome.kind === 'single'
    ? started(outcome.payload)
    : outcome.userErrors.length === 0 && outcome.items.some(started);
}

/** Only which VM: a record read before the operation, kept or passed on whole, would be answered as its state. */
function taskIdsOf(outcome: StoredOutcome): string[] {
  const payloads = outcome.kind === 'single' ? [outcome.payload] : outcome.items;
  return payloads.flatMap((p) => (p.taskId === null ? [] : [p.taskId]));
}

function refOf(vm: VmRef | null): VmRef | null {
  return vm && { platformId: vm.platformId, nativeId: vm.nativeId };
}

/** How a mutation's outcome is kept under its idempotency key, and shown again. */
interface Codec<V> {
  store(value: V): StoredOutcome;
  restore(stored: StoredOutcome, clientMutationId: string | null): V;
}

/** Where a copy is filed: where the clone puts it, else where its source is. */
function copyFiling(source: VmFiling, op: Extract<VmOperation, { kind: 'CLONE_VM' }>): VmFiling {
  const placedElsewhere = op.placement.clusterNativeId !== null || op.placement.hostNativeId !== null;
  return {
    folderPath: op.placement.folderPath ?? source.folderPath,
    // Sent to a cluster or host without a pool, the copy runs in its top pool, whose path the copy is not told.
    resourcePoolPath: op.placement.resourcePoolPath ?? (placedElsewhere ? null : source.resourcePoolPath),
    tags: op.tags ?? source.tags,
  };
}

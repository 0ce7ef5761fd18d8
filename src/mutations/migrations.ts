import type { Logger } from 'pino';

import type { EventPublisher, InventoryChangeType } from '../model/events.js';

import { type CallerAccess, UNFILED } from '../access/policy.js';
import type { Loaders } from '../inventory/loaders.js';
import type { Caller } from '../model/caller.js';
import { GatewayError } from '../model/errors.js';
import { decodeIdOf } from '../model/ids.js';
import {
  FINISHED_PHASES,
  type MigrationRecord,
  MigrationStopCode,
  PHASE_OF_TASK,
  type StoredMigration,
  loadedMigration,
  storedMigration,
} from '../model/migration.js';
import {
  type MigrationLimits,
  OperationCancelledError,
  OperationFailedError,
  type OperationReporter,
  type TransferProgress,
} from '../model/operations.js';
import type { UserError, UserErrorCode } from '../model/user-errors.js';
import type { Collection } from '../state/store.js';
import { type AuditLog, redact } from './audit-log.js';
import type { TaskManager, TaskRecord } from './task-manager.js';

/** What a migration is when it is asked for, before its task runs. */
export type MigrationPlan = Pick<
  MigrationRecord,
  'platformId' | 'vmNativeId' | 'vmName' | 'sourceHostNativeId' | 'targetPlatformId' | 'targetHostNativeId' | 'limits'
>;

/** Who cancels, and what they may see and do (a mutation's call, as the pipeline has it). */
export interface CancelCall {
  caller: Caller;
  access: CallerAccess;
  loaders: Loaders;
  remoteAddress: string | null;
}

export interface CancelMigrationOutcome {
  clientMutationId: string | null;
  migration: MigrationRecord | null;
  userErrors: UserError[];
}

/** How long cancelMigration waits for the platform to stop the migration before it answers. @default 10_000 // ms */
export const CANCEL_WAIT_MS = 10_000;

/** A migration whose operation is running here: how to stop it, and the clocks of its timeouts. */
interface Running {
  controller: AbortController;
  completionTimer: NodeJS.Timeout | null;
  progressTimer: NodeJS.Timeout | null;
  /** The lowest data remaining reported so far: only a new low is progress (precopy sends pages again). */
  lowestRemaining: number;
  highestPercent: number;
}

/**
 * The migrations the gateway runs, one per MIGRATE_VM task and under its
 * ID, kept in the same store as the tasks (stored when asked for, and at
 * each change of phase) and forgotten with them. It follows each one's
 * task for its phase, takes the platform's progress and transfer reports
 * on the way to the task, and stops a running one (the operation's abort
 * signal) on cancelMigration or when a timeout of its limits passes. The
 * timeouts are enforced here rather than by each platform, so that they
 * mean the same everywhere.
 */
export class MigrationTracker {
  private readonly records = new Map<string, MigrationRecord>();
  private readonly running = new Map<string, Running>();
  /** Migrations this process asked for and has not seen end: its own task runs them, so it can stop them. */
  private readonly own = new Set<string>();

  private constructor(
    private readonly tasks: TaskManager,
    private readonly store: Collection<StoredMigration>,
    private readonly audit: AuditLog,
    private readonly logger: Logger,
    private readonly events: EventPublisher | null,
  ) {}

  /** Tells subscribers (inventoryChanged) of a migration, as visible as the VM it moves. */
  private publish(record: MigrationRecord, change: InventoryChangeType): void {
    this.events?.publish({
      type: 'INVENTORY',
      platformId: record.platformId,
      kind: 'VmMigration',
      change,
      nativeId: record.id,
      aspects: [],
      previousPowerState: null,
      powerState: null,
      vm: { name: record.vmName, hostNativeId: record.sourceHostNativeId },
    });
  }

  /** Loads the kept migrations (those whose task is still kept) and follows their tasks from now on. */
  static async open(deps: {
    tasks: TaskManager;
    store: Collection<StoredMigration>;
    audit: AuditLog;
    logger: Logger;
    /** Where phase changes go as inventoryChanged events; none in tests of the tracker alone. */
    events?: EventPublisher;
  }): Promise<MigrationTracker> {
    const tracker = new MigrationTracker(deps.tasks, deps.store, deps.audit, deps.logger, deps.events ?? null);
    const gone: string[] = [];
    for (const stored of deps.store.values()) {
      const task = deps.tasks.get(stored.id);
      if (!task) gone.push(stored.id);
      else tracker.records.set(stored.id, tracker.followed(loadedMigration(stored), task));
    }
    await Promise.all(gone.map((id) => deps.store.delete(id)));
    deps.tasks.onUpdate((task) => tracker.taskUpdated(task));
    return tracker;
  }

  get(id: string): MigrationRecord | undefined {
    return this.records.get(id);
  }

  /** Every migration kept, newest first. */
  list(): MigrationRecord[] {
    return [...this.records.values()].sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime());
  }

  /**
   * Records a migration about to be submitted as the task with this ID:
   * stored before the task is, so a task never runs without its record.
   */
  async prepare(id: string, plan: MigrationPlan): Promise<MigrationRecord> {
    const record: MigrationRecord = {
      ...plan,
      id,
      phase: 'PENDING',
      progressPercent: null,
      bytesTotal: null,
      bytesProcessed: null,
      bytesRemaining: null,
      createdAt: new Date(),
      startedAt: null,
      finishedAt: null,
      error: null,
    };
    this.records.set(id, record);
    this.own.add(id);
    await this.save(record);
    this.publish(record, 'ADDED');
    return record;
  }

  /** Drops a prepared migration whose task could not be submitted. */
  async discard(id: string): Promise<void> {
    this.records.delete(id);
    this.own.delete(id);
    await this.store.delete(id).catch((e: unknown) => this.logger.error({ err: e, migration: id }, 'could not drop'));
  }

  /**
   * The reporter a migration's operation runs with: reports reach the task
   * and the record, its signal stops the operation, and its timeouts start
   * now (the operation is starting).
   */
  reporterFor(id: string, task: OperationReporter): OperationReporter {
    const record = this.records.get(id);
    if (!record) return task;
    const run = this.start(record);
    return {
      progress: (percent) => {
        task.progress(percent);
        this.progressed(record, run, percent, null);
      },
      upstreamTask: (upstreamId) => task.upstreamTask(upstreamId),
      transfer: (bytes) => {
        task.transfer?.(bytes);
        this.progressed(record, run, null, bytes);
      },
      signal: run.controller.signal,
    };
  }

  /**
   * cancelMigration: a queued migration is cancelled before it starts; a
   * running one is aborted on its platform (the VM stays on its source
   * host) and answered once it has ended, or after {@link CANCEL_WAIT_MS}.
   * Checked and audited as every mutation is.
   */
  async cancel(
    call: CancelCall,
    input: { migrationId: string; clientMutationId?: string | null },
  ): Promise<CancelMigrationOutcome> {
    const clientMutationId = input.clientMutationId ?? null;
    const audited = (outcome: 'REFUSED' | 'ACCEPTED', codes: UserErrorCode[], taskId: string | null) =>
      this.audit.append({
        caller: call.caller.id,
        operation: 'cancelMigration',
        targetId: input.migrationId,
        input: redact(input),
        outcome,
        userErrorCodes: codes,
        taskId,
        errorCode: null,
        grants: call.access.grantNames,
        sourceAddress: call.remoteAddress,
      });
    const refused = async (code: UserErrorCode, message: string, field: string[] | null = null) => {
      await audited('REFUSED', [code], null);
      return { clientMutationId, migration: null, userErrors: [{ code, message, field }] };
    };
    let id: string;
    try {
      id = decodeIdOf(input.migrationId, 'VmMigration').nativeId;
    } catch (e) {
      return refused('INVALID_INPUT', e instanceof GatewayError ? e.message : 'Not a valid ID.', ['migrationId']);
    }
    const record = this.records.get(id);
    const task = this.tasks.get(id);
    // A migration is as visible as its VM: one the caller may not see is one that does not exist.
    const target =
      task &&
      (await call.loaders.placementOf(
        { platformId: task.platformId, name: task.targetName, hostNativeId: task.hostNativeId },
        task.targetFiling ?? UNFILED,
      ));
    if (!record || !task || !target || !call.access.seesVm(target))
      return refused('NOT_FOUND', 'No such migration.', ['migrationId']);
    const decision = call.access.may('cancelMigration', target);
    if (!decision.allowed) return refused('FORBIDDEN', decision.reason);
    if (FINISHED_PHASES.has(record.phase))
      return refused('WRONG_STATE', `The migration has ended already: ${record.phase}.`, ['migrationId']);

    // Queued: cancelled before it starts, nothing done. (Refused when it started meanwhile: then stopped below.)
    const dequeued = task.state === 'QUEUED' && !('refused' in (await this.tasks.cancel(id)));
    if (!dequeued) {
      // Its clocks may not have started yet (the task is starting): started here, the operation finds it stopped.
      const run = this.running.get(id) ?? (this.own.has(id) ? this.start(record) : undefined);
      if (!run) {
        // Running, but not by this instance's operation (resumed after a restart, or another instance's).
        return refused(
          'UNSUPPORTED',
          'This migration is followed, not run, by this gateway instance (it was started before a restart or elsewhere): it cannot be stopped from here.',
        );
      }
      this.stop(
        record,
        run,
        new OperationCancelledError(
          `cancelled by ${call.caller.id} (cancelMigration); the VM stays on its source host`,
        ),
      );
    }
    await audited('ACCEPTED', [], id);
    await Promise.race([
      this.tasks.whenFinished(id),
      new Promise((resolve) => setTimeout(resolve, CANCEL_WAIT_MS).unref()),
    ]);
    return { clientMutationId, migration: this.records.get(id) ?? record, userErrors: [] };
  }

  /** Starts a migration's clocks, once, when its operation starts. */
  private start(record: MigrationRecord): Running {
    const known = this.running.get(record.id);
    if (known) return known;
    const run: Running = {
      controller: new AbortController(),
      completionTimer: null,
      progressTimer: null,
      lowestRemaining: Number.POSITIVE_INFINITY,
      highestPercent: -1,
    };
    this.running.set(record.id, run);
    const { completionTimeoutSeconds, progressTimeoutSeconds } = record.limits;
    if (completionTimeoutSeconds !== null) {
      run.completionTimer = setTimeout(
        () =>
          this.stop(
            record,
            run,
            new OperationFailedError(
              `the migration had not finished after ${completionTimeoutSeconds} s (completionTimeoutSeconds) and was aborted; the VM stays on its source host`,
              MigrationStopCode.COMPLETION_TIMEOUT,
            ),
          ),
        completionTimeoutSeconds * 1000,
      );
    }
    if (progressTimeoutSeconds !== null) {
      // Reset by every report of progress (Timeout.refresh), so it fires only after that long without one.
      run.progressTimer = setTimeout(
        () =>
          this.stop(
            record,
            run,
            new OperationFailedError(
              `the migration made no progress for ${progressTimeoutSeconds} s (progressTimeoutSeconds: no new low of data remaining` +
                `${record.bytesRemaining === null ? '' : `, stuck at ${record.bytesRemaining} bytes`}) and was aborted; the VM stays on its source host`,
              MigrationStopCode.PROGRESS_TIMEOUT,
            ),
          ),
        progressTimeoutSeconds * 1000,
      );
    }
    return run;
  }

  /** A report from the platform: kept on the record, and progress when it is a new low (or high). */
  private progressed(
    record: MigrationRecord,
    run: Running,
    percent: number | null,
    bytes: TransferProgress | null,
  ): void {
    let progress = false;
    if (percent !== null) {
      const whole = Math.max(0, Math.min(99, Math.round(percent)));
      record.progressPercent = Math.max(record.progressPercent ?? 0, whole);
      if (whole > run.highestPercent) {
        run.highestPercent = whole;
        progress = true;
      }
    }
    if (bytes !== null) {
      record.bytesTotal = bytes.total;
      record.bytesProcessed = bytes.processed;
      record.bytesRemaining = bytes.remaining;
      if (bytes.remaining < run.lowestRemaining) {
        run.lowestRemaining = bytes.remaining;
        progress = true;
      }
    }
    if (progress) run.progressTimer?.refresh();
  }

  /** Asks the migration's operation to stop, once, with the error it should end with. */
  private stop(record: MigrationRecord, run: Running, reason: Error): void {
    if (run.controller.signal.aborted) return;
    this.logger.info({ migration: record.id, vm: record.vmName, reason: reason.message }, 'stopping a migration');
    this.clearTimers(run);
    run.controller.abort(reason);
  }

  private clearTimers(run: Running): void {
    if (run.completionTimer) clearTimeout(run.completionTimer);
    if (run.progressTimer) clearTimeout(run.progressTimer);
    run.completionTimer = null;
    run.progressTimer = null;
  }

  /** A record brought up to date with its task (phase, times, error). */
  private followed(record: MigrationRecord, task: TaskRecord): MigrationRecord {
    record.phase = PHASE_OF_TASK[task.state];
    record.startedAt = task.startedAt;
    record.finishedAt = task.finishedAt;
    record.error = task.error;
    if (record.phase === 'SUCCEEDED') record.progressPercent = 100;
    return record;
  }

  private taskUpdated(task: TaskRecord): void {
    const record = this.records.get(task.id);
    if (!record) return;
    const before = record.phase;
    this.followed(record, task);
    if (record.phase === before) return;
    if (FINISHED_PHASES.has(record.phase)) {
      const run = this.running.get(task.id);
      this.running.delete(task.id);
      this.own.delete(task.id);
      if (run) {
        this.clearTimers(run);
        if (run.controller.signal.aborted && record.phase === 'SUCCEEDED')
          this.logger.warn({ migration: record.id, vm: record.vmName }, 'a migration asked to stop finished first');
      }
    }
    this.publish(record, 'MODIFIED');
    void this.save(record).then(() => (FINISHED_PHASES.has(record.phase) ? this.forgetOld() : undefined));
  }

  /** Migrations go with their tasks: once the task manager no longer keeps the task, its migration goes too. */
  private async forgetOld(): Promise<void> {
    const gone = [...this.records.keys()].filter((id) => !this.tasks.get(id));
    for (const id of gone) {
      this.records.delete(id);
      await this.store
        .delete(id)
        .catch((e: unknown) => this.logger.error({ err: e, migration: id }, 'could not forget'));
    }
  }

  /** Stores the migration as it is now; a failed write is logged (the migration goes on). */
  private async save(record: MigrationRecord): Promise<void> {
    try {
      await this.store.set(record.id, storedMigration(record));
    } catch (e) {
      this.logger.error({ err: e, migration: record.id }, 'could not store a migration');
    }
  }
}

/** The limits of a migration as the caller gave them, with none absent. */
export function limitsOf(limits: Partial<MigrationLimits> | null | undefined): MigrationLimits {
  return {
    bandwidthMiBps: limits?.bandwidthMiBps ?? null,
    completionTimeoutSeconds: limits?.completionTimeoutSeconds ?? null,
    progressTimeoutSeconds: limits?.progressTimeoutSeconds ?? null,
  };
}

import { randomUUID } from 'node:crypto';

import type { Logger } from 'pino';

import type { VmFiling } from '../access/policy.js';
import { errorMessage } from '../model/errors.js';
import {
  OperationCancelledError,
  OperationFailedError,
  type OperationReporter,
  type OperationResult,
  type TaskOperation,
} from '../model/operations.js';
import type { Collection } from '../state/store.js';
import type { TaskState } from '../model/upstream-task.js';

export type { TaskOperation };
export type { TaskState };

export interface TaskRecord {
  id: string;
  platformId: string;
  operation: TaskOperation;
  state: TaskState;
  progress: number;
  targetNativeId: string;
  targetName: string;
  hostNativeId: string | null;
  /** Where the target was filed when the task was made (folder, pool, tags): with its name and host, who may see the task. */
  targetFiling: VmFiling | null;
  caller: string;
  /** The mutation that started it and the ID its input named, for the audit trail. */
  mutation: string;
  auditTargetId: string;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  error: { code: string; message: string } | null;
  upstreamTaskId: string | null;
  resultSnapshotKey: string | null;
  resultVmNativeId: string | null;
  /** Where resultVmNativeId lives when it left the task's platform. */
  resultVmPlatformId: string | null;
  /** Reads its target without changing it (a clone): other shared tasks may run beside it. */
  shared: boolean;
  /** The name of the VM the task creates (clone, create): taken while the task is queued or running. */
  newVmName: string | null;
}

/** A task as stored: its dates as ISO strings. */
export type StoredTask = Omit<TaskRecord, 'createdAt' | 'startedAt' | 'finishedAt'> & {
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
};

export interface TaskBudget {
  /** Tasks running at once on one platform. */
  maxPerPlatform: number;
  /** Tasks running at once on one host. */
  maxPerHost: number;
  /** Finished tasks kept for queries. */
  retain: number;
}

export interface TaskSpec {
  /** The task's ID, when the caller keeps something under it before submitting (a migration); a new UUID otherwise. */
  id?: string;
  platformId: string;
  hostNativeId: string | null;
  operation: TaskOperation;
  targetNativeId: string;
  targetName: string;
  targetFiling?: VmFiling;
  caller: string;
  mutation: string;
  auditTargetId: string;
  shared?: boolean;
  newVmName?: string;
  run: (reporter: OperationReporter) => Promise<OperationResult>;
}

/** Follows a platform's own task to its end (after a restart); null when the platform has none to follow. */
export type ResumeUpstream = (task: TaskRecord, reporter: OperationReporter) => Promise<OperationResult> | null;

interface Pending {
  task: TaskRecord;
  run: TaskSpec['run'];
}

const upstreamKey = (platformId: string, upstreamTaskId: string) => `${platformId}\u0000${upstreamTaskId}`;

const FINISHED: ReadonlySet<TaskState> = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);

/** The error of a task the gateway could not see to its end. */
const INTERRUPTED = 'INTERRUPTED';

export function storedTask(t: TaskRecord): StoredTask {
  return {
    ...t,
    createdAt: t.createdAt.toISOString(),
    startedAt: t.startedAt?.toISOString() ?? null,
    finishedAt: t.finishedAt?.toISOString() ?? null,
  };
}

function loaded(t: StoredTask): TaskRecord {
  const date = (s: string | null) => (s === null ? null : new Date(s));
  return { ...t, createdAt: new Date(t.createdAt), startedAt: date(t.startedAt), finishedAt: date(t.finishedAt) };
}

/**
 * Runs operations as tasks under a budget: at most `maxPerPlatform` at once
 * per platform and `maxPerHost` per host (vCenter stalls past tens of
 * concurrent power-ons or snapshots per host). The rest wait QUEUED, in
 * arrival order, with their position shown; none is refused. Every task is
 * stored when it is submitted and at each change of state, so a restart
 * shows what was in flight.
 */
export class TaskManager {
  private readonly tasks = new Map<string, TaskRecord>();
  /** Task IDs by their upstream task (platform, then the platform's task ID). */
  private readonly byUpstream = new Map<string, string>();
  private readonly queue: Pending[] = [];
  private readonly runningPerPlatform = new Map<string, number>();
  private readonly runningPerHost = new Map<string, number>();
  private readonly done = new Map<string, ((t: TaskRecord) => void)[]>();
  private readonly updateListeners: ((t: TaskRecord) => void)[] = [];
  private readonly finishedListeners: ((t: TaskRecord) => Promise<void>)[] = [];
  /** Tasks other instances run, shown here. */
  private sharedLookup: ((id: string) => Promise<StoredTask | null>) | null = null;
  private readonly foreign = new Set<string>();
  /** Tasks found unfinished in the store at start, until resumeInterrupted() settles them. */
  private interrupted: TaskRecord[] = [];

  constructor(
    private readonly budget: TaskBudget,
    private readonly logger: Logger,
    private readonly store: Collection<StoredTask>,
  ) {
    const restored = [...store.values()].map(loaded).sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
    for (const t of restored) {
      this.tasks.set(t.id, t);
      if (t.upstreamTaskId) this.byUpstream.set(upstreamKey(t.platformId, t.upstreamTaskId), t.id);
      if (!FINISHED.has(t.state)) this.interrupted.push(t);
    }
  }

  /** Calls `listener` whenever a task is submitted, starts, progresses or finishes (after it is visible). */
  onUpdate(listener: (t: TaskRecord) => void): void {
    this.updateListeners.push(listener);
  }

  private updated(task: TaskRecord): void {
    for (const listener of this.updateListeners) listener(task);
  }

  /** Calls `listener` with every task that finishes (succeeded, failed or cancelled), before it shows as finished. */
  onFinished(listener: (t: TaskRecord) => Promise<void>): void {
    this.finishedListeners.push(listener);
  }

  /** Stored; resolves once on disk, with the task queued (or already running). */
  async submit(spec: TaskSpec): Promise<TaskRecord> {
    const task: TaskRecord = {
      id: spec.id ?? randomUUID(),
      platformId: spec.platformId,
      operation: spec.operation,
      state: 'QUEUED',
      progress: 0,
      targetNativeId: spec.targetNativeId,
      targetName: spec.targetName,
      targetFiling: spec.targetFiling ?? null,
      hostNativeId: spec.hostNativeId,
      caller: spec.caller,
      mutation: spec.mutation,
      auditTargetId: spec.auditTargetId,
      createdAt: new Date(),
      startedAt: null,
      finishedAt: null,
      error: null,
      upstreamTaskId: null,
      resultSnapshotKey: null,
      resultVmNativeId: null,
      resultVmPlatformId: null,
      shared: spec.shared ?? false,
      newVmName: spec.newVmName ?? null,
    };
    this.tasks.set(task.id, task);
    this.queue.push({ task, run: spec.run });
    const saved = this.save(task);
    this.pump();
    await saved;
    this.updated(task);
    return task;
  }

  /**
   * Settles the tasks a previous run left unfinished: a task that had not
   * started is CANCELLED (nothing was done); a running one follows its
   * platform's task to the end where the platform has one (vSphere), and
   * is otherwise FAILED as INTERRUPTED, its outcome unknown. Resolves once
   * each is settled or being followed.
   */
  async resumeInterrupted(resume: ResumeUpstream): Promise<void> {
    const interrupted = this.interrupted;
    this.interrupted = [];
    await Promise.all(
      interrupted.map(async (task) => {
        if (task.state === 'QUEUED') {
          return this.finish(task, 'CANCELLED', {
            code: INTERRUPTED,
            message: 'the gateway restarted before the task started; nothing was done',
          });
        }
        const following = task.upstreamTaskId ? resume(task, this.reporterFor(task)) : null;
        if (!following) {
          return this.finish(task, 'FAILED', {
            code: INTERRUPTED,
            message: 'the gateway restarted while the task ran; what it did is unknown, check its target',
          });
        }
        this.logger.info({ task: task.id, upstream: task.upstreamTaskId }, 're-attached to an upstream task');
        // Followed in the background: a long upstream task must not hold up the start.
        void this.settle(task, following);
      }),
    );
  }

  get(id: string): TaskRecord | undefined {
    return this.tasks.get(id);
  }

  /**
   * A task kept here, or else one another instance shared that has not
   * reached this one yet (read from the shared records, then shown here),
   * looking again for up to `waitMs` while its instance is still sharing it.
   */
  async find(id: string, waitMs = 0): Promise<TaskRecord | undefined> {
    const until = Date.now() + waitMs;
    for (;;) {
      const known = this.tasks.get(id);
      if (known || !this.sharedLookup) return known;
      const record = await this.sharedLookup(id).catch(() => null);
      if (record && !this.tasks.has(id)) this.adopt(record);
      if (this.tasks.has(id) || Date.now() >= until) return this.tasks.get(id);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Where find() looks for tasks of other instances (the shared task records). */
  lookUpSharedTasksWith(lookup: (id: string) => Promise<StoredTask | null>): void {
    this.sharedLookup = lookup;
  }

  /**
   * Shows a task another gateway instance runs (told through the shared
   * event stream), so that queries and subscriptions here answer for it.
   * It is neither run nor stored here; its own instance does both.
   */
  adopt(record: StoredTask): void {
    const own = this.tasks.get(record.id);
    if (own && !this.foreign.has(record.id)) return;
    const task = loaded(record);
    if (own) Object.assign(own, task);
    else this.tasks.set(task.id, task);
    this.foreign.add(task.id);
    if (task.upstreamTaskId) this.byUpstream.set(upstreamKey(task.platformId, task.upstreamTaskId), task.id);
    if (FINISHED.has(task.state)) {
      for (const resolve of this.done.get(task.id) ?? []) resolve(own ?? task);
      this.done.delete(task.id);
      this.forgetOld();
    }
  }

  /** The gateway's task that started a platform's task, while it is kept. */
  byUpstreamTask(platformId: string, upstreamTaskId: string): TaskRecord | undefined {
    const id = this.byUpstream.get(upstreamKey(platformId, upstreamTaskId));
    return id === undefined ? undefined : this.tasks.get(id);
  }

  /**
   * This instance's tasks waiting for a slot and holding one, by platform
   * (the gateway's metrics, at each scrape): counted from the queue and the
   * slots, not from every task kept.
   */
  inFlight(): Map<string, { queued: number; running: number }> {
    const counts = new Map<string, { queued: number; running: number }>();
    const of = (platformId: string) => {
      let c = counts.get(platformId);
      if (!c) counts.set(platformId, (c = { queued: 0, running: 0 }));
      return c;
    };
    for (const { task } of this.queue) of(task.platformId).queued += 1;
    for (const [platformId, running] of this.runningPerPlatform) of(platformId).running += running;
    return counts;
  }

  /** Every task kept, newest first. */
  list(): TaskRecord[] {
    return [...this.tasks.values()].reverse();
  }

  /**
   * A queued or running task that a new task on the same target would
   * conflict with: any, unless both only read the target (clones).
   */
  conflicting(platformId: string, targetNativeId: string, shared: boolean): TaskRecord | undefined {
    for (const t of this.tasks.values()) {
      if (t.platformId !== platformId || t.targetNativeId !== targetNativeId || FINISHED.has(t.state)) continue;
      if (!(shared && t.shared)) return t;
    }
    return undefined;
  }

  /**
   * Cancels a task that has not started. A running task is the platform's
   * to finish; refused, with the reason, otherwise.
   */
  async cancel(id: string): Promise<{ task: TaskRecord } | { refused: string }> {
    const task = this.tasks.get(id);
    if (!task) return { refused: 'No such task.' };
    const index = this.queue.findIndex((p) => p.task === task);
    if (index < 0) return { refused: `The task is ${task.state}; only a QUEUED task can be cancelled.` };
    this.queue.splice(index, 1);
    await this.finish(task, 'CANCELLED', null);
    return { task };
  }

  /**
   * Whether a queued or running task is creating a VM of this name on the
   * platform. Once it has finished, the platform's own inventory says
   * whether the name is taken (a created VM may have been deleted since).
   */
  creating(platformId: string, name: string): boolean {
    for (const t of this.tasks.values()) {
      if (t.platformId === platformId && t.newVmName === name && !FINISHED.has(t.state)) return true;
    }
    return false;
  }

  /** 1 for the next task of its platform to start; null unless QUEUED. */
  queuePosition(task: TaskRecord): number | null {
    if (task.state !== 'QUEUED') return null;
    const ahead = this.queue.filter((p) => p.task.platformId === task.platformId);
    const index = ahead.findIndex((p) => p.task === task);
    return index < 0 ? null : index + 1;
  }

  /** Resolves when the task has finished, whatever the outcome. */
  whenFinished(id: string): Promise<TaskRecord> {
    const task = this.tasks.get(id);
    if (!task) return Promise.reject(new Error(`no task ${id}`));
    if (FINISHED.has(task.state)) return Promise.resolve(task);
    return new Promise((resolve) => this.done.set(id, [...(this.done.get(id) ?? []), resolve]));
  }

  private hostKey(t: TaskRecord): string {
    return `${t.platformId}\u0000${t.hostNativeId ?? ''}`;
  }

  private pump(): void {
    for (let i = 0; i < this.queue.length;) {
      const { task, run } = this.queue[i] as Pending;
      const onPlatform = this.runningPerPlatform.get(task.platformId) ?? 0;
      const onHost = this.runningPerHost.get(this.hostKey(task)) ?? 0;
      if (onPlatform >= this.budget.maxPerPlatform || onHost >= this.budget.maxPerHost) {
        i += 1; // a task for another host may still fit
        continue;
      }
      this.queue.splice(i, 1);
      this.runningPerPlatform.set(task.platformId, onPlatform + 1);
      this.runningPerHost.set(this.hostKey(task), onHost + 1);
      void this.execute(task, run);
    }
  }

  private reporterFor(task: TaskRecord): OperationReporter {
    return {
      progress: (p) => {
        const next = Math.max(task.progress, Math.min(99, Math.round(p)));
        if (next === task.progress) return;
        task.progress = next;
        this.updated(task);
      },
      upstreamTask: (id) => {
        task.upstreamTaskId = id;
        this.byUpstream.set(upstreamKey(task.platformId, id), task.id);
        // Kept at once: after a restart, this is what the task re-attaches to.
        void this.save(task);
      },
    };
  }

  private async execute(task: TaskRecord, run: TaskSpec['run']): Promise<void> {
    task.state = 'RUNNING';
    task.startedAt = new Date();
    // On disk before the work starts: after a crash, a task stored QUEUED really did nothing.
    await this.save(task);
    this.updated(task);
    let result: Promise<OperationResult>;
    try {
      result = run(this.reporterFor(task));
    } catch (e) {
      result = Promise.reject(e);
    }
    await this.settle(task, result).finally(() => {
      this.runningPerPlatform.set(task.platformId, (this.runningPerPlatform.get(task.platformId) ?? 1) - 1);
      this.runningPerHost.set(this.hostKey(task), (this.runningPerHost.get(this.hostKey(task)) ?? 1) - 1);
      this.pump();
    });
  }

  /** Waits for the work and records how it ended. */
  private async settle(task: TaskRecord, work: Promise<OperationResult>): Promise<void> {
    try {
      const result = await work;
      task.resultSnapshotKey = result.snapshotKey ?? null;
      task.resultVmNativeId = result.vmNativeId ?? null;
      task.resultVmPlatformId = result.vmPlatformId ?? null;
      task.progress = 100;
      await this.finish(task, 'SUCCEEDED', null);
    } catch (e) {
      // Stopped midway because someone asked (cancelMigration): cancelled, with who asked as its error.
      if (e instanceof OperationCancelledError)
        return this.finish(task, 'CANCELLED', { code: e.code, message: e.message });
      this.logger.warn({ task: task.id, operation: task.operation, target: task.targetName, err: e }, 'task failed');
      const code = e instanceof OperationFailedError ? e.code : 'UPSTREAM_FAILED';
      await this.finish(task, 'FAILED', { code, message: errorMessage(e) });
    }
  }

  /**
   * Records how a task ended: stored, and told to the finish listeners (the
   * audit trail), before anyone can see it finished.
   */
  private async finish(task: TaskRecord, state: TaskState, error: TaskRecord['error']): Promise<void> {
    const ended: TaskRecord = { ...task, state, error, finishedAt: new Date() };
    await this.save(ended);
    await Promise.all(
      this.finishedListeners.map((listener) =>
        listener(ended).catch((e: unknown) => this.logger.error({ err: e, task: task.id }, 'a task listener failed')),
      ),
    );
    Object.assign(task, ended);
    this.updated(task);
    for (const resolve of this.done.get(task.id) ?? []) resolve(task);
    this.done.delete(task.id);
    this.forgetOld();
  }

  /** Stores the task as it is now; a failed write is logged (the task goes on). */
  private async save(task: TaskRecord): Promise<void> {
    try {
      await this.store.set(task.id, storedTask(task));
    } catch (e) {
      this.logger.error({ err: e, task: task.id }, 'could not store a task');
    }
  }

  private forgetOld(): void {
    if (this.tasks.size <= this.budget.retain) return;
    for (const [id, t] of this.tasks) {
      if (this.tasks.size <= this.budget.retain) break;
      if (!FINISHED.has(t.state)) continue;
      this.tasks.delete(id);
      if (t.upstreamTaskId) this.byUpstream.delete(upstreamKey(t.platformId, t.upstreamTaskId));
      if (this.foreign.delete(id)) continue;
      this.store.delete(id).catch((e: unknown) => this.logger.error({ err: e, task: id }, 'could not forget a task'));
    }
  }
}

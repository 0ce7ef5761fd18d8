import { randomUUID } from 'node:crypto';

import type { Logger } from 'pino';

import {
  OperationFailedError,
  type OperationReporter,
  type OperationResult,
  type VmOperationKind,
} from '../model/operations.js';
import { errorMessage } from '../model/errors.js';

export type TaskState = 'QUEUED' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED';
/** What a task does: an operation on a VM, or the creation of one. */
export type TaskOperation = VmOperationKind | 'CREATE_VM';

export interface TaskRecord {
  id: string;
  platformId: string;
  operation: TaskOperation;
  state: TaskState;
  progress: number;
  targetNativeId: string;
  targetName: string;
  hostNativeId: string | null;
  caller: string;
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
  /** The name of the VM the task creates (clone, create): taken until the task fails. */
  newVmName: string | null;
}

export interface TaskBudget {
  /** Tasks running at once on one platform. */
  maxPerPlatform: number;
  /** Tasks running at once on one host. */
  maxPerHost: number;
  /** Finished tasks kept for queries. */
  retain: number;
}

export interface TaskSpec {
  platformId: string;
  hostNativeId: string | null;
  operation: TaskOperation;
  targetNativeId: string;
  targetName: string;
  caller: string;
  shared?: boolean;
  newVmName?: string;
  run: (reporter: OperationReporter) => Promise<OperationResult>;
}

interface Pending {
  task: TaskRecord;
  run: TaskSpec['run'];
}

const FINISHED: ReadonlySet<TaskState> = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);

/**
 * Runs operations as tasks under a budget: at most `maxPerPlatform` at once
 * per platform and `maxPerHost` per host (vCenter stalls past tens of
 * concurrent power-ons or snapshots per host). The rest wait QUEUED, in
 * arrival order, with their position shown; none is refused.
 */
export class TaskManager {
  private readonly tasks = new Map<string, TaskRecord>();
  private readonly queue: Pending[] = [];
  private readonly runningPerPlatform = new Map<string, number>();
  private readonly runningPerHost = new Map<string, number>();
  private readonly done = new Map<string, ((t: TaskRecord) => void)[]>();

  constructor(
    private readonly budget: TaskBudget,
    private readonly logger: Logger,
  ) {}

  submit(spec: TaskSpec): TaskRecord {
    const task: TaskRecord = {
      id: randomUUID(),
      platformId: spec.platformId,
      operation: spec.operation,
      state: 'QUEUED',
      progress: 0,
      targetNativeId: spec.targetNativeId,
      targetName: spec.targetName,
      hostNativeId: spec.hostNativeId,
      caller: spec.caller,
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
    this.pump();
    return task;
  }

  get(id: string): TaskRecord | undefined {
    return this.tasks.get(id);
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
   * to finish; null when it cannot be cancelled, with the reason.
   */
  cancel(id: string): { task: TaskRecord } | { refused: string } {
    const task = this.tasks.get(id);
    if (!task) return { refused: 'No such task.' };
    const index = this.queue.findIndex((p) => p.task === task);
    if (index < 0) return { refused: `The task is ${task.state}; only a QUEUED task can be cancelled.` };
    this.queue.splice(index, 1);
    task.state = 'CANCELLED';
    task.finishedAt = new Date();
    for (const resolve of this.done.get(task.id) ?? []) resolve(task);
    this.done.delete(task.id);
    return { task };
  }

  /** Whether a task that has not failed is creating a VM of this name on the platform. */
  creating(platformId: string, name: string): boolean {
    for (const t of this.tasks.values()) {
      if (t.platformId === platformId && t.newVmName === name && t.state !== 'FAILED' && t.state !== 'CANCELLED')
        return true;
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

  private async execute(task: TaskRecord, run: TaskSpec['run']): Promise<void> {
    task.state = 'RUNNING';
    task.startedAt = new Date();
    try {
      const result = await run({
        progress: (p) => {
          task.progress = Math.max(task.progress, Math.min(99, Math.round(p)));
        },
        upstreamTask: (id) => {
          task.upstreamTaskId = id;
        },
      });
      task.resultSnapshotKey = result.snapshotKey ?? null;
      task.resultVmNativeId = result.vmNativeId ?? null;
      task.resultVmPlatformId = result.vmPlatformId ?? null;
      task.progress = 100;
      task.state = 'SUCCEEDED';
    } catch (e) {
      task.state = 'FAILED';
      task.error = { code: e instanceof OperationFailedError ? e.code : 'UPSTREAM_FAILED', message: errorMessage(e) };
      this.logger.warn({ task: task.id, operation: task.operation, target: task.targetName, err: e }, 'task failed');
    } finally {
      task.finishedAt = new Date();
      this.runningPerPlatform.set(task.platformId, (this.runningPerPlatform.get(task.platformId) ?? 1) - 1);
      this.runningPerHost.set(this.hostKey(task), (this.runningPerHost.get(this.hostKey(task)) ?? 1) - 1);
      for (const resolve of this.done.get(task.id) ?? []) resolve(task);
      this.done.delete(task.id);
      this.forgetOld();
      this.pump();
    }
  }

  private forgetOld(): void {
    if (this.tasks.size <= this.budget.retain) return;
    for (const [id, t] of this.tasks) {
      if (this.tasks.size <= this.budget.retain) break;
      if (FINISHED.has(t.state)) this.tasks.delete(id);
    }
  }
}

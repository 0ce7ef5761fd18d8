import { OperationFailedError, type OperationReporter } from '../../model/operations.js';
import type { ObjectContent, PropertySpec } from './vim.js';
import { type MoRef, type XNode, child, intOf, moRefOf, textOf } from './xml.js';
import { taskFault } from './upstream-tasks.js';

/** What the watcher needs of a session: one read of chosen properties of many objects. */
export interface ObjectReader {
  retrieveObjects(objects: readonly MoRef[], specs: readonly PropertySpec[]): Promise<ObjectContent[]>;
}

interface Waiter {
  task: MoRef;
  reporter: OperationReporter;
  resolve: (result: XNode | undefined) => void;
  reject: (e: Error) => void;
}

/**
 * Follows vSphere tasks to completion. All tasks of a session are polled
 * together: one RetrievePropertiesEx reads the `info` of every task in
 * flight, however many there are.
 */
export class TaskWatcher {
  private readonly waiters = new Map<string, Waiter[]>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly session: ObjectReader,
    /** @default 300 // milliseconds */
    private readonly pollMs = 300,
  ) {}

  /** Resolves with the task's `info.result` when it succeeds; rejects with its error when it fails. */
  wait(task: MoRef, reporter: OperationReporter): Promise<XNode | undefined> {
    reporter.upstreamTask(task.value);
    return new Promise((resolve, reject) => {
      const list = this.waiters.get(task.value) ?? [];
      list.push({ task, reporter, resolve, reject });
      this.waiters.set(task.value, list);
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.timer || this.waiters.size === 0) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.poll().finally(() => this.schedule());
    }, this.pollMs);
  }

  private async poll(): Promise<void> {
    const refs = [...this.waiters.values()].map((w) => (w[0] as Waiter).task);
    let objects;
    try {
      objects = await this.session.retrieveObjects(refs, [{ type: 'Task', paths: ['info'] }]);
    } catch (e) {
      for (const [id, list] of this.waiters) {
        this.waiters.delete(id);
        for (const w of list) w.reject(e instanceof Error ? e : new Error(String(e)));
      }
      return;
    }
    const seen = new Set<string>();
    for (const o of objects) {
      seen.add(o.obj.value);
      const info = o.props.get('info');
      const list = this.waiters.get(o.obj.value) ?? [];
      const state = textOf(child(info, 'state'));
      if (state === 'success' || state === 'error') {
        this.waiters.delete(o.obj.value);
        for (const w of list) {
          if (state === 'success') w.resolve(child(info, 'result'));
          else w.reject(taskError(info));
        }
      } else {
        const progress = intOf(child(info, 'progress'));
        for (const w of list) if (progress !== null) w.reporter.progress(progress);
      }
    }
    for (const ref of refs) {
      if (seen.has(ref.value)) continue;
      const list = this.waiters.get(ref.value) ?? [];
      this.waiters.delete(ref.value);
      for (const w of list)
        w.reject(new OperationFailedError(`vSphere task ${ref.value} disappeared before it finished`));
    }
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const [id, list] of this.waiters) {
      this.waiters.delete(id);
      for (const w of list) w.reject(new OperationFailedError('the vSphere session closed before the task finished'));
    }
  }
}

function taskError(info: XNode | undefined): OperationFailedError {
  const { code, message } = taskFault(info);
  return new OperationFailedError(`${message} (${code})`);
}

/** The moref a task produced (a snapshot, a clone). */
export function resultRef(result: XNode | undefined): MoRef | null {
  return moRefOf(result);
}

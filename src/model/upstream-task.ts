/** Where a task stands (the gateway's own tasks and upstream ones alike). */
export type TaskState = 'QUEUED' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED';

/**
 * A task a platform runs that the gateway may not have started (vSphere's
 * recent tasks: started from vSphere's own UI, govc, a script, or the
 * gateway itself), as the platform reports it.
 */
export interface UpstreamTaskRecord {
  platformId: string;
  /** The platform's ID of the task (vSphere `task-123`). */
  nativeId: string;
  /** What it does, in the platform's words (vSphere's descriptionId, `VirtualMachine.powerOff`). */
  description: string;
  state: TaskState;
  /** 0 to 100. */
  progress: number;
  /** The VM it acts on, when it acts on a VM. */
  targetVmNativeId: string | null;
  /** The name of the object it acts on, as the platform gave it. */
  targetName: string | null;
  /** Who started it, as the platform says (a user name), when it says. */
  initiatedBy: string | null;
  queuedAt: Date | null;
  startedAt: Date | null;
  finishedAt: Date | null;
  error: { code: string; message: string } | null;
}

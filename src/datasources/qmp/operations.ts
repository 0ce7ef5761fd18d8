import { randomUUID } from 'node:crypto';

import {
  OperationFailedError,
  type OperationReporter,
  type OperationResult,
  type Unsupported,
  type VmOperation,
} from '../../model/operations.js';
import type { QmpClient } from './client.js';
import { type QmpMonitor, formatVersion } from './fleet.js';
import {
  type QmpBlockInfo,
  QmpCommandError,
  type QmpCommandMap,
  type QmpCommandName,
  type QmpEvent,
  type QmpSnapshotInfo,
  isQmpEvent,
} from './protocol.js';

// What QMP does for each VM operation. The gateway attaches to QEMUs started
// elsewhere, so what needs a new QEMU process (create, clone, migrate,
// managed save and its restore) or a definition (reconfigure, delete) is
// not offered; stopping a VM ends its QEMU, and nothing can start it again.
//
// pauseVm: `stop`. unpauseVm and startVm: `cont` (startVm of a guest that
// shut down under -no-shutdown: `system_reset` first). resetVm:
// `system_reset`. stopVm: `system_powerdown` (the ACPI power button), then
// the guest's own SHUTDOWN within gracefulStopTimeoutMs; with force, `quit`.
// Snapshots are qcow2 internal snapshots: with memory, the snapshot-save /
// snapshot-load / snapshot-delete jobs (QEMU 6.0+) followed to their end;
// without memory, one `transaction` of blockdev-snapshot-internal-sync.

/** What the QMP platform cannot do, with the reason shown to the caller. */
export const QMP_UNSUPPORTED = {
  REBOOT_VM:
    'QEMU alone cannot ask a guest to reboot (that takes a guest agent, which the gateway does not use); use resetVm, a hard reset.',
  SUSPEND_VM:
    'A managed save ends the QEMU process, and the gateway cannot start QEMU again to restore it; use pauseVm, or a snapshot with memory.',
  RESUME_VM: 'A QMP VM has no managed save to resume from (suspendVm is not offered); use unpauseVm for a paused VM.',
  DELETE_VM:
    'A QMP VM is a QEMU process with no definition to delete; stop it with force to end the process (its disk images stay where they are).',
  CLONE_VM: 'The gateway only attaches to QEMU processes started elsewhere; it cannot start a copy of one.',
  RECONFIGURE_VM:
    "A QEMU's hardware is set by its command line; the gateway does not hot-plug devices or change it through QMP.",
  MIGRATE_VM:
    'QEMU migrates to another QEMU started with -incoming, which the gateway cannot start; migrate the VM with the tool that started it.',
} as const satisfies Unsupported;

/** Why a QMP platform creates no VM (refused before any task starts). */
export const QMP_CANNOT_CREATE =
  'A QMP platform attaches to QEMU processes started elsewhere; it cannot create VMs. Start QEMU with -qmp on a socket the platform lists.';

export interface QmpOperationOptions {
  /** How long a graceful stop waits for the guest's own SHUTDOWN. */
  gracefulStopTimeoutMs: number;
  /** How long QEMU may take to exit after it shut down or was told to quit. @default 5_000 */
  exitTimeoutMs?: number;
}

/** Does one operation on one QEMU's VM. */
export async function runQmpOperation(
  m: QmpMonitor,
  op: VmOperation,
  reporter: OperationReporter,
  options: QmpOperationOptions,
): Promise<OperationResult> {
  const c = m.client;
  switch (op.kind) {
    case 'PAUSE_VM':
      await command(c, 'stop');
      return {};
    case 'UNPAUSE_VM':
      await command(c, 'cont');
      return {};
    case 'START_VM': {
      // A paused QEMU, or one started with -S (prelaunch): `cont` runs it. A guest that
      // shut down under -no-shutdown starts again from a reset.
      const status = await c.execute('query-status');
      if (status.status === 'shutdown') await command(c, 'system_reset');
      await command(c, 'cont');
      return {};
    }
    case 'RESET_VM':
      await command(c, 'system_reset');
      return {};
    case 'STOP_VM':
      if (op.force) {
        // `quit` resolves when QEMU has hung up, with or without its reply.
        await command(c, 'quit');
        await exited(c, options.exitTimeoutMs);
      } else {
        await powerdown(m, reporter, options);
      }
      return {};
    case 'CREATE_SNAPSHOT':
      return createSnapshot(m, op, reporter);
    case 'REVERT_TO_SNAPSHOT':
      await revertToSnapshot(m, op.snapshotKey, reporter);
      return {};
    case 'DELETE_SNAPSHOT':
      // qcow2 snapshots form no tree: there are no children to delete with it.
      await deleteSnapshot(m, op.snapshotKey, reporter);
      return {};
    case 'REBOOT_VM':
    case 'SUSPEND_VM':
    case 'RESUME_VM':
    case 'DELETE_VM':
    case 'CLONE_VM':
    case 'RECONFIGURE_VM':
    case 'MIGRATE_VM':
      // Refused before a task starts (Provider.unsupported); here for completeness.
      throw new OperationFailedError(QMP_UNSUPPORTED[op.kind], 'UNSUPPORTED');
  }
}

// ---------------------------------------------------------------- stopping

/**
 * Presses the ACPI power button and waits for the guest to shut itself
 * down (QEMU's SHUTDOWN event, then QEMU exits unless it runs with
 * -no-shutdown). A guest that does not within the timeout is left as it
 * is, and the task fails saying so.
 */
async function powerdown(m: QmpMonitor, reporter: OperationReporter, options: QmpOperationOptions): Promise<void> {
  const c = m.client;
  const status = await c.execute('query-status');
  if (!status.running) {
    throw new OperationFailedError(
      `${m.name} is ${status.status}: a guest whose vCPUs are stopped cannot answer the ACPI power button; ` +
        'unpause it first, or stop it with force',
      'WRONG_STATE',
    );
  }
  const timeoutMs = options.gracefulStopTimeoutMs;
  const down = waitForEvent(c, (e) => e.event === 'SHUTDOWN', timeoutMs);
  const started = Date.now();
  const ticker = setInterval(() => {
    reporter.progress(10 + Math.floor(((Date.now() - started) / timeoutMs) * 80));
  }, 1_000);
  ticker.unref();
  try {
    await command(c, 'system_powerdown');
    reporter.progress(10);
    const outcome = await down.promise;
    if (outcome === 'timeout') {
      throw new OperationFailedError(
        `the guest did not shut down within ${seconds(timeoutMs)} of the ACPI power button (system_powerdown) ` +
          `and is left as it was; stop it with force to end its QEMU`,
        'TIMEOUT',
      );
    }
  } finally {
    clearInterval(ticker);
    down.cancel();
  }
  await exited(c, options.exitTimeoutMs);
}

/** Waits (a bounded time) for QEMU to close the connection: it exits after a shutdown, unless run with -no-shutdown. */
async function exited(c: QmpClient, timeoutMs = 5_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([c.closed, new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
  clearTimeout(timer);
}

// ---------------------------------------------------------------- snapshots

async function createSnapshot(
  m: QmpMonitor,
  op: Extract<VmOperation, { kind: 'CREATE_SNAPSHOT' }>,
  reporter: OperationReporter,
): Promise<OperationResult> {
  if (op.quiesce) {
    throw new OperationFailedError(
      'QEMU quiesces guest file systems only through a guest agent, which the gateway does not use; leave quiesce out',
      'UNSUPPORTED',
    );
  }
  // qcow2 keeps no description with a snapshot: op.description is not kept.
  const blocks = await m.client.execute('query-block');
  const devices = writableNodes(blocks);
  if (devices.length === 0) {
    throw new OperationFailedError(`${m.name} has no writable disk to hold a snapshot`, 'INVALID_INPUT');
  }
  if (op.includeMemory) {
    assertSnapshotJobs(m);
    // The memory goes into the first disk's image; QEMU refuses a disk whose format has no internal snapshots.
    await runJob(m, 'snapshot-save', { tag: op.name, vmstate: devices[0] as string, devices }, reporter);
  } else {
    await command(m.client, 'transaction', {
      actions: devices.map((device) => ({
        type: 'blockdev-snapshot-internal-sync' as const,
        data: { device, name: op.name },
      })),
    });
  }
  return { snapshotKey: op.name };
}

async function revertToSnapshot(m: QmpMonitor, key: string, reporter: OperationReporter): Promise<void> {
  const blocks = await m.client.execute('query-block');
  const holders = holdersOf(blocks, key, m);
  const withMemory = holders.find((h) => h.snapshot['vm-state-size'] > 0);
  if (!withMemory) {
    // snapshot-load would stop the VM before it found out, and leave it stopped.
    throw new OperationFailedError(
      `snapshot "${key}" holds the disks only; QEMU reverts a running VM only to a snapshot with memory ` +
        `(revert this one with qemu-img snapshot -a while the VM's QEMU is not running)`,
      'UNSUPPORTED',
    );
  }
  assertSnapshotJobs(m);
  await runJob(m, 'snapshot-load', { tag: key, vmstate: withMemory.node, devices: writableNodes(blocks) }, reporter);
  // QEMU runs the VM again only when it ran before the load; a snapshot with memory reverts to a running VM.
  const status = await m.client.execute('query-status');
  if (!status.running) await command(m.client, 'cont');
}

async function deleteSnapshot(m: QmpMonitor, key: string, reporter: OperationReporter): Promise<void> {
  const blocks = await m.client.execute('query-block');
  const devices = holdersOf(blocks, key, m).map((h) => h.node);
  assertSnapshotJobs(m);
  await runJob(m, 'snapshot-delete', { tag: key, devices }, reporter);
}

/** The node names of the drives a snapshot can be taken of: inserted and writable. */
function writableNodes(blocks: readonly QmpBlockInfo[]): string[] {
  return blocks.flatMap((b) =>
    b.inserted && !b.inserted.ro && b.inserted['node-name'] ? [b.inserted['node-name']] : [],
  );
}

/** The drives whose image holds a snapshot (by name, or by ID for one without a name), with it. */
function holdersOf(
  blocks: readonly QmpBlockInfo[],
  key: string,
  m: QmpMonitor,
): { node: string; snapshot: QmpSnapshotInfo }[] {
  const holders = blocks.flatMap((b) => {
    const snapshot = b.inserted?.image.snapshots?.find((s) => (s.name || s.id) === key);
    const node = b.inserted?.['node-name'];
    return snapshot && node ? [{ node, snapshot }] : [];
  });
  if (holders.length === 0) throw new OperationFailedError(`${m.name} has no snapshot "${key}"`, 'NOT_FOUND');
  return holders;
}

function assertSnapshotJobs(m: QmpMonitor): void {
  const { major } = m.version.qemu;
  if (major < 6) {
    throw new OperationFailedError(
      `snapshots with memory need QEMU 6.0 or newer (the snapshot-save, snapshot-load and snapshot-delete jobs); ` +
        `this QEMU is ${formatVersion(m.version)}`,
      'UNSUPPORTED',
    );
  }
}

type SnapshotJob = 'snapshot-save' | 'snapshot-load' | 'snapshot-delete';
/** How often a job's progress is read while it runs (also a safety net for its events). */
const JOB_POLL_MS = 1_000;

/**
 * Starts a snapshot job and follows it to its end: JOB_STATUS_CHANGE tells
 * when it has concluded (query-jobs is polled meanwhile for progress, and
 * in case an event is missed), query-jobs then tells whether it failed and
 * why, and the job is dismissed.
 */
async function runJob<C extends SnapshotJob>(
  m: QmpMonitor,
  name: C,
  args: Omit<QmpCommandMap[C]['args'], 'job-id'>,
  reporter: OperationReporter,
): Promise<void> {
  const c = m.client;
  const jobId = `virt-graph-${randomUUID()}`;
  const concluded = waitForEvent(
    c,
    (e) => isQmpEvent(e, 'JOB_STATUS_CHANGE') && e.data.id === jobId && e.data.status === 'concluded',
    null,
  );
  let polling: NodeJS.Timeout | undefined;
  try {
    await command(c, name, { ...args, 'job-id': jobId } as QmpCommandMap[C]['args']);
    reporter.progress(10);
    polling = setInterval(() => {
      c.execute('query-jobs').then(
        (jobs) => {
          const job = jobs.find((j) => j.id === jobId);
          if (!job) return;
          if (job.status === 'concluded') concluded.settle('event');
          else if (job['total-progress'] > 0)
            reporter.progress(10 + Math.floor((job['current-progress'] / job['total-progress']) * 80));
        },
        () => undefined,
      );
    }, JOB_POLL_MS);
    polling.unref();
    if ((await concluded.promise) === 'closed') {
      throw new OperationFailedError(`QEMU closed the connection before the ${name} job ended`);
    }
  } finally {
    clearInterval(polling);
    concluded.cancel();
  }
  const job = (await c.execute('query-jobs')).find((j) => j.id === jobId);
  await c.execute('job-dismiss', { id: jobId }).catch(() => undefined);
  if (job?.error) throw new OperationFailedError(`QEMU: ${name} failed: ${job.error}`);
}

// ---------------------------------------------------------------- helpers

/** Runs a command; QEMU's refusal becomes the task's error, worded with the command. */
async function command<C extends QmpCommandName>(
  c: QmpClient,
  name: C,
  args?: QmpCommandMap[C]['args'],
): Promise<void> {
  try {
    await c.execute(name, args);
  } catch (e) {
    if (e instanceof QmpCommandError) throw new OperationFailedError(`QEMU refused ${name}: ${e.desc}`);
    throw e;
  }
}

type Outcome = 'event' | 'closed' | 'timeout';

/** The first event that matches, the connection's end, or the timeout (null: none), whichever comes first. */
function waitForEvent(
  c: QmpClient,
  match: (e: QmpEvent) => boolean,
  timeoutMs: number | null,
): { promise: Promise<Outcome>; settle(outcome: Outcome): void; cancel(): void } {
  let resolve!: (o: Outcome) => void;
  const promise = new Promise<Outcome>((r) => (resolve = r));
  let done = false;
  const timer = timeoutMs === null ? undefined : setTimeout(() => settle('timeout'), timeoutMs);
  const off = c.onEvent((e) => {
    if (match(e)) settle('event');
  });
  void c.closed.then(() => settle('closed'));
  function settle(o: Outcome): void {
    if (done) return;
    done = true;
    clearTimeout(timer);
    off();
    resolve(o);
  }
  return { promise, settle, cancel: () => settle('timeout') };
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

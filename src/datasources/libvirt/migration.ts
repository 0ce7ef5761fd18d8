import { ErrorCode, GatewayError } from '../../model/errors.js';
import {
  type MigrationTarget,
  OperationFailedError,
  type OperationReporter,
  type OperationResult,
  type TransferProgress,
  type VmOperation,
} from '../../model/operations.js';
import type { VmRecord } from '../../model/vm.js';
import { DomainStats, JobType, MigrateFlags, type NativeJobStats } from './addon.js';
import type { LibvirtClient } from './client.js';
import { VirErr, isLibvirtCode } from './errors.js';

/**
 * A libvirt connection is one host, so a libvirt VM moves to the host of
 * another libvirt platform, peer to peer, with its storage where it is.
 */
export function planLibvirtMigration(vm: VmRecord, target: MigrationTarget): VmOperation {
  const refuse = (field: string, message: string) =>
    new GatewayError(ErrorCode.BAD_USER_INPUT, message, { field: [field] });
  if (target.platformId === vm.platformId) throw refuse('hostId', `${vm.name} already runs on that host.`);
  if (target.platformKind !== 'LIBVIRT')
    throw refuse('hostId', 'A libvirt VM moves to the host of another libvirt platform.');
  if (target.storageNativeId)
    throw refuse('storageId', 'A libvirt VM keeps its storage when it moves; leave storageId out.');
  return {
    kind: 'MIGRATE_VM',
    hostNativeId: target.hostNativeId,
    storageNativeId: null,
    destination: { platformId: target.platformId, uri: target.platformUri },
  };
}

/** How often a running migration's job is read. @default 500 // milliseconds */
export const JOB_POLL_MS = 500;

/** What a migration needs of its platform. */
export interface MigrationConnections {
  /** Runs calls on the platform's shared connection: the state check, the job polls and the abort. */
  use<T>(fn: (c: LibvirtClient) => Promise<T>): Promise<T>;
  /**
   * A connection of the migration's own, closed once it has ended. libvirt's
   * remote client multiplexes one connection's calls, but while a call as
   * long as a migration holds it, the others sent on it were seen waiting
   * for the next keepalive (5 s): the job polls, the abort, and every
   * inventory read of the platform. On a connection of its own the
   * migration keeps them all waiting on nothing.
   */
  open(): Promise<LibvirtClient>;
}

/**
 * Moves a domain to another libvirt host, peer to peer: live when it runs
 * (its job read every {@link JOB_POLL_MS} for progress and bytes left, its
 * bandwidth capped as the limits say), its definition alone when it is off
 * (no job to read: progress goes from 0 to 100 at the end). When the
 * reporter's signal aborts, the job is aborted (virDomainAbortJob): QEMU
 * stops sending, the destination drops what it received, the guest runs on
 * where it was, and the signal's reason is thrown.
 */
export async function migrateDomain(
  conns: MigrationConnections,
  uuid: string,
  op: Extract<VmOperation, { kind: 'MIGRATE_VM' }>,
  reporter: OperationReporter,
): Promise<OperationResult> {
  const { destination } = op;
  if (!destination)
    throw new OperationFailedError('a libvirt VM moves to another libvirt platform (host)', 'INVALID_INPUT');
  const signal = reporter.signal;
  const running = await conns.use(async (c) =>
    (await c.call('getAllDomainStats', DomainStats.STATE, 0)).some((d) => d.uuid === uuid && d.id >= 0),
  );
  // Stopped before it started: nothing was done.
  signal?.throwIfAborted();
  const flags =
    MigrateFlags.PEER2PEER |
    MigrateFlags.PERSIST_DEST |
    MigrateFlags.UNDEFINE_SOURCE |
    (running ? MigrateFlags.LIVE : MigrateFlags.OFFLINE);
  // An offline migration sends a definition, not memory: nothing to cap.
  const bandwidth = running ? (op.limits?.bandwidthMiBps ?? null) : null;
  const params = bandwidth === null ? undefined : { bandwidthMiBps: bandwidth };
  const own = await conns.open();
  reporter.progress(0);
  const watch = running ? watchJob(conns, uuid, reporter) : null;
  try {
    try {
      await own.call('migrateToUri', uuid, destination.uri, flags, params);
    } catch (e) {
      // Disks on a host's own file system: a running VM takes them along
      // (QEMU copies them while the guest runs; the destination needs a
      // pool over the same path to create them in).
      if (!running || !isLibvirtCode(e, VirErr.MIGRATE_UNSAFE) || signal?.aborted) throw e;
      await own.call('migrateToUri', uuid, destination.uri, flags | MigrateFlags.NON_SHARED_DISK, params);
    }
  } catch (e) {
    // Aborted as asked: the reason is why (a cancel, a timeout), libvirt's words are not. QEMU
    // cut off mid-send may fail the job otherwise than "canceled by client" (a broken socket).
    if (signal?.aborted && (isLibvirtCode(e, VirErr.OPERATION_ABORTED) || watch?.abortTaken())) throw signal.reason;
    throw e;
  } finally {
    await watch?.stop();
    await own.close().catch(() => undefined);
  }
  reporter.progress(100);
  return { vmNativeId: uuid, vmPlatformId: destination.platformId };
}

/**
 * Reads the domain's job until stopped: its progress and bytes go to the
 * reporter, and an abort of the reporter's signal aborts the job, again at
 * each poll until libvirt takes it (the job may not have begun yet when the
 * abort comes, and libvirt refuses an abort with no job to abort).
 */
function watchJob(
  conns: MigrationConnections,
  uuid: string,
  reporter: OperationReporter,
): { stop(): Promise<void>; abortTaken(): boolean } {
  const signal = reporter.signal;
  let stopped = false;
  let aborted = false;
  let wake: (() => void) | null = null;
  const onAbort = () => wake?.();
  signal?.addEventListener('abort', onAbort, { once: true });
  const loop = (async () => {
    while (!stopped) {
      if (signal?.aborted && !aborted) {
        aborted = await conns
          .use((c) => c.call('abortJob', uuid))
          .then(
            () => true,
            () => false,
          );
      }
      try {
        const job = await conns.use((c) => c.call('getJobStats', uuid, 0));
        const transfer = transferOf(job);
        if (transfer) {
          reporter.transfer?.(transfer);
          reporter.progress(((transfer.total - transfer.remaining) / transfer.total) * 100);
        }
      } catch {
        // The domain leaves this host as the migration ends: its job can no longer be read.
      }
      if (stopped) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, JOB_POLL_MS);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = null;
    }
  })();
  return {
    /** Whether libvirt took the abort (virDomainAbortJob succeeded). */
    abortTaken: () => aborted,
    async stop() {
      stopped = true;
      wake?.();
      signal?.removeEventListener('abort', onAbort);
      await loop;
    },
  };
}

/** What a job's stats say of its transfer; null before it has begun moving data, and once it has ended. */
export function transferOf(job: NativeJobStats): TransferProgress | null {
  if (job.type !== JobType.BOUNDED && job.type !== JobType.UNBOUNDED) return null;
  const num = (key: string) => {
    const v = job.params[key];
    return typeof v === 'number' ? v : null;
  };
  const total = num('data_total');
  const processed = num('data_processed');
  const remaining = num('data_remaining');
  if (total === null || processed === null || remaining === null || total <= 0) return null;
  return { total, processed, remaining };
}

import type { Logger } from 'pino';

import { errorMessage } from '../../model/errors.js';
import type { HostRecord } from '../../model/host.js';
import type {
  FullReadReason,
  InventoryChange,
  InventoryState,
  InventoryWatch,
  VmState,
  WatchOptions,
  WatchSink,
} from '../watch.js';
import type { FleetEvent } from './fleet.js';
import type { PlatformState } from '../../model/platform.js';
import { WatchLoop } from '../watch-loop.js';

// The change stream of a QMP platform: the events of every QEMU's monitor
// connection, and the fleet's own news (a QEMU connected: added; its
// connection closed, because it exited: removed). The watch reads
// everything (replace), then reads again the VM of each QEMU that sent a
// run-state or job event, or came or went, and reports it whole (apply):
// a QEMU that has gone reads as null, and its VM is removed. Events within
// `coalesceMs` of the first one become one read; every read and sink call
// happens on one loop, in order. While the platform is not CONNECTED (no
// QEMU reachable and something failed) the stream is down: `interrupted`,
// then a full read once it is back (reconnect), retried with backoff.
// A full read every resyncIntervalMs heals anything missed (snapshots
// made with qemu-img, a QEMU that stopped answering).

/** QEMU events after which a VM is read again (its run state, its snapshots). */
const WATCHED_EVENTS: ReadonlySet<string> = new Set([
  'STOP',
  'RESUME',
  'SHUTDOWN',
  'RESET',
  'POWERDOWN',
  'SUSPEND',
  'WAKEUP',
  'GUEST_PANICKED',
  'DEVICE_TRAY_MOVED',
  'JOB_STATUS_CHANGE',
]);

/** What the watch reads and listens to: the provider's fleet and its reads. */
export interface QmpWatchSource {
  readonly platformId: string;
  readonly logger: Logger;
  subscribe(listener: (event: FleetEvent) => void): () => void;
  state(): PlatformState;
  readAll(): Promise<InventoryState>;
  /** Each VM whole; null when its QEMU is gone, an Error when it alone could not be read. */
  readVms(vmNativeIds: readonly string[]): Promise<Map<string, VmState | null | Error>>;
  readHosts(): Promise<HostRecord[]>;
}

export interface QmpWatchOptions extends WatchOptions {
  /** Events within this long of the first one become one read. @default 5 */
  coalesceMs?: number;
}

export function watchQmp(sink: WatchSink, options: QmpWatchOptions, source: QmpWatchSource): InventoryWatch {
  return new QmpWatch(sink, options, source);
}

class Session {
  lost: string | null = null;
  vms = new Set<string>();
  hosts = false;
  dueAt: number | null = null;

  take(): { vms: string[]; hosts: boolean } {
    const taken = { vms: [...this.vms], hosts: this.hosts };
    this.vms = new Set();
    this.hosts = false;
    this.dueAt = null;
    return taken;
  }
}

class QmpWatch extends WatchLoop implements InventoryWatch {
  private session: Session | null = null;
  private readonly unsubscribe: () => void;
  private readonly running: Promise<void>;
  private readonly coalesceMs: number;
  /** The reason last given to interrupted(), until the stream works again. */
  private interruption: string | null = null;

  constructor(
    sink: WatchSink,
    private readonly options: QmpWatchOptions,
    private readonly source: QmpWatchSource,
  ) {
    super(sink, source.logger);
    this.coalesceMs = options.coalesceMs ?? 5;
    this.unsubscribe = source.subscribe((e) => this.onFleetEvent(e));
    this.running = this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe();
    this.wakeUp();
    await this.running;
  }

  private async loop(): Promise<void> {
    let reason: FullReadReason = 'initial';
    let delay = 0;
    while (!this.stopped) {
      try {
        await this.follow(reason, () => {
          delay = 0;
          this.interruption = null;
        });
      } catch (e) {
        if (this.stopped) break;
        const state = this.source.state();
        const down = state.status !== 'CONNECTED';
        const message = down
          ? (state.statusMessage ?? `the platform is ${state.status.toLowerCase()}`)
          : errorMessage(e);
        // Said once per reason: while the platform is down, the fleet retries its sockets, not the watch.
        if (message !== this.interruption) {
          this.interruption = message;
          this.source.logger.warn({ err: message, retryInMs: down ? null : delay }, 'QMP inventory watch interrupted');
          this.emit((s) => s.interrupted(message));
        }
        reason = 'reconnect';
        if (down) {
          // Until the platform's status changes (onFleetEvent wakes the loop).
          await this.sleepUntil(Number.POSITIVE_INFINITY);
          continue;
        }
        await this.sleepUntil(performance.now() + delay);
        delay = delay === 0 ? this.options.retryInitialMs : Math.min(delay * 2, this.options.retryMaxMs);
      }
    }
  }

  /** Reads everything, then follows the fleet's events until stopped; throws when the platform goes down. */
  private async follow(reason: FullReadReason, synced: () => void): Promise<void> {
    if (this.source.state().status !== 'CONNECTED') throw new Error('the platform is down');
    const session = new Session();
    this.session = session;
    try {
      await this.followChanges(
        session,
        reason,
        this.options.resyncIntervalMs,
        { all: () => this.source.readAll(), changed: () => this.readChanged(session) },
        synced,
      );
    } finally {
      if (this.session === session) this.session = null;
    }
  }

  private onFleetEvent(e: FleetEvent): void {
    if (this.stopped) return;
    if (e.type === 'status') {
      const session = this.session;
      if (e.state.status !== 'CONNECTED') {
        if (session && !session.lost) session.lost = e.state.statusMessage ?? e.state.status.toLowerCase();
      }
      this.wakeUp();
      return;
    }
    const session = this.session;
    if (!session) return;
    if (e.type === 'qemu-event') {
      if (!WATCHED_EVENTS.has(e.event.event)) return;
      // A job's end changes the snapshots; its other steps change nothing the graph shows.
      if (e.event.event === 'JOB_STATUS_CHANGE' && e.event.data['status'] !== 'concluded') return;
    } else {
      session.hosts = true;
    }
    session.vms.add(e.monitor.vmNativeId);
    this.readSoon(session, this.coalesceMs);
  }

  /** Reads again what the events named and applies it; a VM that alone failed is left to the next resync. */
  private async readChanged(session: Session): Promise<void> {
    const dirty = session.take();
    const changes: InventoryChange[] = [];
    const [vms, hosts] = await Promise.all([
      dirty.vms.length > 0 ? this.source.readVms(dirty.vms) : null,
      dirty.hosts ? this.source.readHosts() : null,
    ]);
    for (const id of dirty.vms) {
      const state = vms?.get(id);
      if (state instanceof Error) {
        this.source.logger.warn({ vm: id, err: errorMessage(state) }, 'QMP watch could not read a VM');
        continue;
      }
      changes.push({ kind: 'VirtualMachine', nativeId: id, record: state ?? null });
    }
    for (const host of hosts ?? []) changes.push({ kind: 'Host', nativeId: host.nativeId, record: host });
    if (this.stopped || session.lost || changes.length === 0) return;
    this.emit((s) => s.apply(changes));
  }
}

import type { Logger } from 'pino';

import { PlatformUnavailableError, errorMessage } from '../../model/errors.js';
import type { NetworkRecord } from '../../model/network.js';
import type { StorageRecord, StorageVolumeRecord } from '../../model/storage.js';
import type {
  FullReadReason,
  InventoryChange,
  InventoryState,
  InventoryWatch,
  VmState,
  WatchOptions,
  WatchSink,
} from '../watch.js';
import { CloseReason, type NativeEvent, type NativeEventSubscription } from './addon.js';
import { WatchLoop } from '../watch-loop.js';

// libvirt's change stream: the addon's event callbacks (domain, network and
// storage pool events, and the connection's close; see
// native/libvirt/src/events.cc). The watch subscribes on the platform's
// connection, reads everything (replace), then reads again only what an
// event names: a domain by its UUID (listing record, details and snapshots
// in one call), the networks, or the storage and that pool's volumes (apply).
// Events that arrive within `coalesceMs` of the first one become one read.
// Every read and every sink call happens on one loop, in order; events that
// arrive during a read are read again after it. A close event or a read that
// finds the connection gone interrupts the stream; the watch then subscribes
// again on the provider's next connection and reads everything (reconnect).
// libvirt has no events for snapshots, autostart or volumes: the full read
// every `resyncIntervalMs` heals those, and the inventory reads again what
// the gateway's own operations touch.

/** What the watch reads and subscribes through: the provider's connection. */
export interface LibvirtWatchSource {
  readonly platformId: string;
  readonly logger: Logger;
  /** Everything, as the provider's batch reads give it. */
  readAll(): Promise<InventoryState>;
  /** Each domain whole; null when it is gone, an Error when it alone could not be read. */
  readDomains(uuids: readonly string[]): Promise<Map<string, VmState | null | Error>>;
  readNetworks(): Promise<NetworkRecord[]>;
  /** Every storage, and the volumes of the given pools (one entry per pool, in order). */
  readStorage(
    poolUuids: readonly string[],
  ): Promise<{ storage: StorageRecord[]; volumes: (StorageVolumeRecord[] | Error)[] }>;
  /** Subscribes on the platform's current connection; throws while it is down. */
  subscribe(listener: (event: NativeEvent) => void): Promise<NativeEventSubscription>;
  /** A cheap call that libvirt answers while the connection works (virConnectIsAlive). */
  probe(): Promise<unknown>;
}

export interface LibvirtWatchOptions extends WatchOptions {
  /** Events within this long of the first one become one read. @default 5 */
  coalesceMs?: number;
  /** How long stop() waits for the callbacks' deregistration before it resolves anyway. @default 2_000 */
  stopGraceMs?: number;
  /**
   * How often the connection is probed. A daemon that stops answering
   * (paused, hung) closes nothing and sends no event: only an unanswered
   * call shows it. @default 10_000 // 10 seconds
   */
  livenessIntervalMs?: number;
  /** How long a probe may take before the stream counts as down. @default 5_000 // 5 seconds */
  livenessTimeoutMs?: number;
}

/** What the watch has done so far: for tests, benchmarks and metrics. */
export interface LibvirtWatchStats {
  /** Events received, close events included. */
  events: number;
  fullReads: number;
  /** Targeted reads after events, by what they read. */
  reads: { domains: number; networks: number; storage: number };
  /** sink.apply calls, and the objects they carried. */
  applies: number;
  changes: number;
  /** From an object's first event to the apply() that carried it. */
  latencyMs: { last: number | null; max: number | null; mean: number | null };
}

export interface LibvirtInventoryWatch extends InventoryWatch {
  stats(): LibvirtWatchStats;
}

export function watchLibvirt(
  sink: WatchSink,
  options: LibvirtWatchOptions,
  source: LibvirtWatchSource,
): LibvirtInventoryWatch {
  return new LibvirtWatch(sink, options, source);
}

const CLOSE_REASONS: Record<number, string> = {
  [CloseReason.ERROR]: 'an I/O error',
  [CloseReason.EOF]: 'end of file from the daemon',
  [CloseReason.KEEPALIVE]: 'keepalive',
  [CloseReason.CLIENT]: 'closed by the gateway',
};

/** One subscription, from subscribe to its loss or the watch's stop. */
class Session {
  subscription: NativeEventSubscription | null = null;
  /** Why the connection closed under it. */
  lost: string | null = null;
  /** The liveness probe's timer while the session follows events. */
  probing: NodeJS.Timeout | null = null;
  domains = new Set<string>();
  networks = new Set<string>();
  pools = new Set<string>();
  /** When each dirty object's first event arrived (performance.now()). */
  firstEventAt = new Map<string, number>();
  /** When the dirty objects are read (performance.now()); null when none is dirty. */
  dueAt: number | null = null;

  /** Takes the dirty objects, leaving none. */
  take() {
    const taken = {
      domains: [...this.domains],
      networks: [...this.networks],
      pools: [...this.pools],
      firstEventAt: this.firstEventAt,
    };
    this.domains = new Set();
    this.networks = new Set();
    this.pools = new Set();
    this.firstEventAt = new Map();
    this.dueAt = null;
    return taken;
  }
}

class LibvirtWatch extends WatchLoop implements LibvirtInventoryWatch {
  private session: Session | null = null;
  private readonly running: Promise<void>;
  private readonly coalesceMs: number;
  private readonly counts: LibvirtWatchStats = {
    events: 0,
    fullReads: 0,
    reads: { domains: 0, networks: 0, storage: 0 },
    applies: 0,
    changes: 0,
    latencyMs: { last: null, max: null, mean: null },
  };
  private latencySum = 0;
  private latencyCount = 0;
  private readonly warned = new Set<string>();

  constructor(
    sink: WatchSink,
    private readonly options: LibvirtWatchOptions,
    private readonly source: LibvirtWatchSource,
  ) {
    super(sink, source.logger);
    this.coalesceMs = options.coalesceMs ?? 5;
    this.running = this.loop();
  }

  async stop(): Promise<void> {
    if (!this.stopped) {
      this.stopped = true;
      this.wakeUp();
    }
    // Deregistered here rather than by the loop, which may wait on a read.
    const subscription = this.session?.subscription ?? null;
    if (this.session) this.session.subscription = null;
    const grace = new Promise<void>((resolve) => setTimeout(resolve, this.options.stopGraceMs ?? 2_000).unref());
    await Promise.race([
      Promise.all([subscription?.unsubscribe().catch(() => undefined), this.running]).then(() => undefined),
      grace,
    ]);
  }

  stats(): LibvirtWatchStats {
    return structuredClone(this.counts);
  }

  // --- the loop -----------------------------------------------------------

  private async loop(): Promise<void> {
    let reason: FullReadReason = 'initial';
    // After a stream that worked, the first retry is immediate: it finds the
    // connection gone (which has the provider reconnect) or back already.
    let delay = 0;
    while (!this.stopped) {
      try {
        await this.follow(reason, () => {
          delay = 0;
        });
      } catch (e) {
        if (this.stopped) break;
        this.source.logger.warn({ err: errorMessage(e), retryInMs: delay }, 'libvirt inventory watch interrupted');
        this.emit((s) => s.interrupted(errorMessage(e)));
        reason = 'reconnect';
        await this.sleepUntil(performance.now() + delay);
        delay = delay === 0 ? this.options.retryInitialMs : Math.min(delay * 2, this.options.retryMaxMs);
      }
    }
  }

  /**
   * Subscribes, reads everything, then follows the events until stopped;
   * throws when the stream fails. The subscription comes first, so that no
   * change between the full read and the subscription goes unseen.
   */
  private async follow(reason: FullReadReason, synced: () => void): Promise<void> {
    const session = new Session();
    this.session = session;
    try {
      const subscription = await this.subscribe(session);
      if (this.stopped) {
        await subscription?.unsubscribe().catch(() => undefined);
        return;
      }
      session.subscription = subscription;
      session.probing = this.probeLiveness(session);
      await this.followChanges(
        session,
        reason,
        this.options.resyncIntervalMs,
        {
          all: async () => {
            const state = await this.source.readAll();
            this.counts.fullReads++;
            return state;
          },
          changed: () => this.readChanged(session),
        },
        synced,
      );
    } finally {
      if (session.probing) clearInterval(session.probing);
      if (this.session === session) this.session = null;
      const subscription = session.subscription;
      session.subscription = null;
      // On a dead connection libvirt forgets the callbacks at once.
      if (subscription) await subscription.unsubscribe().catch(() => undefined);
    }
  }

  /**
   * The session's subscription; null when libvirt gives no events at all
   * (then the watch reads everything at each resync, as a polling watch).
   * Throws when the connection is down.
   */
  private async subscribe(session: Session): Promise<NativeEventSubscription | null> {
    let subscription: NativeEventSubscription;
    try {
      subscription = await this.source.subscribe((e) => this.onEvent(session, e));
    } catch (e) {
      if (e instanceof PlatformUnavailableError) throw e;
      this.warnOnce(`libvirt gives no events here (${errorMessage(e)}): changes show at each full read`);
      return null;
    }
    if (!subscription.registered.includes('domain:lifecycle')) {
      this.warnOnce(
        `this libvirt driver has no domain events (registered: ${subscription.registered.join(', ') || 'none'}): ` +
          'domain changes show at each full read',
      );
    }
    return subscription;
  }

  private warnOnce(message: string): void {
    if (this.warned.has(message)) return;
    this.warned.add(message);
    this.source.logger.warn({ platform: this.source.platformId }, message);
  }

  /**
   * Probes the connection now and then; one that does not answer in time
   * marks the session lost and the mirror stale at once, even while a read
   * of the loop hangs on the same dead daemon.
   */
  private probeLiveness(session: Session): NodeJS.Timeout {
    const timeoutMs = this.options.livenessTimeoutMs ?? 5_000;
    let pending = false;
    const timer = setInterval(() => {
      // A probe stuck on a hung daemon holds a thread: never start a second beside it.
      if (pending) return;
      pending = true;
      let late: NodeJS.Timeout | undefined;
      const deadline = new Promise<never>((_, reject) => {
        late = setTimeout(
          () => reject(new Error(`libvirt did not answer a liveness check within ${timeoutMs} ms`)),
          timeoutMs,
        );
      });
      const probe = this.source.probe();
      probe.then(
        () => (pending = false),
        () => (pending = false),
      );
      Promise.race([probe, deadline])
        .catch((e: unknown) => {
          if (this.stopped || this.session !== session || session.lost) return;
          session.lost = errorMessage(e);
          this.emit((sink) => sink.interrupted(session.lost ?? 'connection lost'));
          this.wakeUp();
        })
        .finally(() => clearTimeout(late));
    }, this.options.livenessIntervalMs ?? 10_000);
    timer.unref();
    return timer;
  }

  private onEvent(session: Session, e: NativeEvent): void {
    if (this.stopped || this.session !== session) return;
    this.counts.events++;
    if (e.type === 'close') {
      session.lost ??= `libvirt connection closed (${CLOSE_REASONS[e.reason] ?? `reason ${e.reason}`})`;
      this.wakeUp();
      return;
    }
    const key = `${e.type}:${e.uuid}`;
    if (e.type === 'domain') session.domains.add(e.uuid);
    else if (e.type === 'network') session.networks.add(e.uuid);
    else session.pools.add(e.uuid);
    if (!session.firstEventAt.has(key)) session.firstEventAt.set(key, performance.now());
    this.readSoon(session, this.coalesceMs);
  }

  /**
   * Reads again what the events named, and applies it. A read that finds
   * the connection gone throws (the stream is down); any other failure
   * leaves those objects to the next resync.
   */
  private async readChanged(session: Session): Promise<void> {
    const dirty = session.take();
    const changes: InventoryChange[] = [];
    const reads: Promise<void>[] = [];
    if (dirty.domains.length > 0) {
      this.counts.reads.domains++;
      reads.push(
        this.source.readDomains(dirty.domains).then((states) => {
          for (const id of dirty.domains) {
            const state = states.get(id);
            if (state instanceof Error) {
              this.source.logger.warn({ vm: id, err: errorMessage(state) }, 'libvirt watch could not read a domain');
              continue;
            }
            changes.push({ kind: 'VirtualMachine', nativeId: id, record: state ?? null });
          }
        }),
      );
    }
    if (dirty.networks.length > 0) {
      this.counts.reads.networks++;
      reads.push(
        this.source.readNetworks().then((networks) => {
          const byId = new Map(networks.map((n) => [n.nativeId, n]));
          for (const id of dirty.networks)
            changes.push({ kind: 'Network', nativeId: id, record: byId.get(id) ?? null });
        }),
      );
    }
    if (dirty.pools.length > 0) {
      this.counts.reads.storage++;
      reads.push(
        this.source.readStorage(dirty.pools).then(({ storage, volumes }) => {
          const byId = new Map(storage.map((s) => [s.nativeId, s]));
          dirty.pools.forEach((id, i) => {
            const pool = byId.get(id) ?? null;
            changes.push({ kind: 'Storage', nativeId: id, record: pool });
            const vols = volumes[i];
            if (!pool) changes.push({ kind: 'StorageVolumes', nativeId: id, record: [] });
            else if (vols && !(vols instanceof Error))
              changes.push({ kind: 'StorageVolumes', nativeId: id, record: vols });
          });
        }),
      );
    }
    const outcomes = await Promise.allSettled(reads);
    for (const o of outcomes) {
      if (o.status === 'fulfilled') continue;
      if (o.reason instanceof PlatformUnavailableError) throw o.reason;
      this.source.logger.warn({ err: errorMessage(o.reason) }, 'libvirt watch could not read what an event named');
    }
    if (this.stopped || session.lost || changes.length === 0) return;
    this.emit((s) => s.apply(changes));
    this.counts.applies++;
    this.counts.changes += changes.length;
    const now = performance.now();
    for (const c of changes) {
      const kind = c.kind === 'VirtualMachine' ? 'domain' : c.kind === 'Network' ? 'network' : 'pool';
      const first = dirty.firstEventAt.get(`${kind}:${c.nativeId}`);
      if (first !== undefined && c.kind !== 'StorageVolumes') this.recordLatency(now - first);
    }
  }

  private recordLatency(ms: number): void {
    const l = this.counts.latencyMs;
    l.last = ms;
    l.max = Math.max(l.max ?? 0, ms);
    this.latencySum += ms;
    this.latencyCount++;
    l.mean = this.latencySum / this.latencyCount;
  }

  // --- helpers ------------------------------------------------------------
}

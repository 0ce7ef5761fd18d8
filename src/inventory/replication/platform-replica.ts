import type { Logger } from 'pino';

import type { InventoryChange, InventoryWatch } from '../../datasources/watch.js';
import type { EventPublisher, GatewayEvent } from '../../model/events.js';
import { errorMessage } from '../../model/errors.js';
import { type RedisClient, blockingConnection } from '../../state/redis.js';
import type { MirrorState, PlatformMirror } from '../platform-mirror.js';
import {
  FencedError,
  type PlatformStream,
  type ReadEntry,
  type StreamEntry,
  compareEntryIds,
} from './platform-stream.js';

/** How this instance stands towards one platform. */
export type ReplicaRole =
  /** Reading the holder's snapshot, or waiting for one. */
  | 'STARTING'
  /** Holds the lease: watches the platform and writes its stream. */
  | 'HOLDER'
  /** Keeps its mirror from the stream. */
  | 'FOLLOWER';

export interface ReplicaOptions {
  instanceId: string;
  leaseTtlMs: number;
  snapshotEveryEntries: number;
}

/** Entries carry at most this many changed objects, so that one resync's corrections never make one huge entry. */
const MAX_CHANGES_PER_ENTRY = 200;
/** Entries one XREAD brings at most. */
const READ_COUNT = 500;
/** How long one XREAD waits for a new entry (ms). */
const READ_BLOCK_MS = 2_000;
/** How long a holder that stops may take to write what it has not written yet (ms). */
const FLUSH_ON_STOP_MS = 3_000;
/** A write that failed (Redis away) is tried again after this (ms). */
const WRITE_RETRY_MS = 250;

export type EntryListener = (platformId: string, read: ReadEntry) => void;

/**
 * One platform as seen by one of several gateway instances sharing a
 * Redis. The instance that holds the platform's lease runs its watch and
 * writes every change its mirror sees (the objects, whole, and the events)
 * to the platform's stream, in order, under the lease; every instance,
 * the holder too, reads the stream: followers apply the objects to their
 * own mirror, and everyone hands the events to its own subscribers. A
 * follower takes the lease over when its holder stops renewing it; the
 * watch it then starts reads the platform in full, and what differs from
 * the mirror it kept is what changed while nobody watched.
 */
export class PlatformReplica implements EventPublisher {
  private roleNow: ReplicaRole = 'STARTING';
  private lease: string | null = null;
  private watch: InventoryWatch | null = null;
  /** The stream entry this instance has read up to. */
  private lastId = '0-0';
  private stopped = false;
  private readonly loops: Promise<void>[] = [];
  private readonly reader: RedisClient;
  private readonly stopping = new AbortController();
  /** The holder's mirror state as the stream last told it (a follower's mirror goes back to it after Redis returns). */
  private holderStatus: MirrorState | null = null;

  // The holder's writing side.
  private pending: StreamEntry | null = null;
  private readonly outbox: StreamEntry[] = [];
  private seq = 0;
  private writing: Promise<void> | null = null;
  private sinceSnapshot = 0;
  private snapshotDue = true;
  private holderSince: Date | null = null;
  private knownHolder: string | null = null;
  /** A follower applied what it read after its own mutation before the holder told it: its mirror is ahead of the stream. */
  private aheadOfStream = false;

  constructor(
    private readonly stream: PlatformStream,
    private readonly mirror: PlatformMirror,
    private readonly startWatch: () => InventoryWatch,
    private readonly readAgain: (observed: InventoryChange[]) => Promise<void>,
    redis: RedisClient,
    private readonly options: ReplicaOptions,
    private readonly onEntry: EntryListener,
    private readonly logger: Logger,
  ) {
    this.reader = blockingConnection(redis);
    mirror.onChange((c) => this.changed(c));
  }

  get role(): ReplicaRole {
    return this.roleNow;
  }

  /** The lease's current holder (`<instance>#<fence>`) as last seen, and since when this instance holds it. */
  get leaseInfo(): { holder: string | null; heldHereSince: Date | null } {
    return { holder: this.roleNow === 'HOLDER' ? this.lease : this.knownHolder, heldHereSince: this.holderSince };
  }

  start(): void {
    this.loops.push(this.run());
  }

  /**
   * Stops following the platform. A holder first stops its watch and
   * writes what it still had to tell (for up to `FLUSH_ON_STOP_MS`), then
   * gives its lease back, so that another instance takes over at once
   * rather than after the lease runs out.
   */
  async stop(): Promise<void> {
    const lease = this.lease;
    if (this.roleNow === 'HOLDER') {
      const watch = this.watch;
      this.watch = null;
      await watch?.stop();
      this.closeEntry();
      if (this.writing) await Promise.race([this.writing, new Promise((r) => setTimeout(r, FLUSH_ON_STOP_MS).unref())]);
    }
    this.stopped = true;
    this.stopping.abort();
    this.reader.disconnect();
    await Promise.allSettled(this.loops);
    await this.stepDown('stopping', false);
    if (lease) await this.stream.release(lease).catch(() => undefined);
  }

  // --- publishing (the mirror and the inventory call these) -------------

  /** What the mirror and the inventory see: the holder's to tell; a follower's mirror repeats it quietly. */
  publish(event: GatewayEvent): void {
    if (this.roleNow !== 'HOLDER') return;
    const entry = this.entry();
    entry.events.push(event);
    if (event.type === 'PLATFORM_STATUS') entry.status = this.mirror.state;
  }

  /** A gateway task's update, with its record for the other instances: any instance tells its own tasks. */
  publishTask(event: GatewayEvent, task: unknown): void {
    void this.appendShared({ v: 1, by: this.options.instanceId, events: [event], task });
  }

  /** Objects this instance read after a mutation: applied here, and named to the holder, which reads them again. */
  observed(changes: InventoryChange[]): void {
    this.mirror.apply(changes);
    if (this.roleNow === 'HOLDER' || changes.length === 0) return;
    this.aheadOfStream = true;
    void this.appendShared({ v: 1, by: this.options.instanceId, observed: changes, events: [] });
  }

  private changed(change: InventoryChange): void {
    if (this.roleNow !== 'HOLDER') return;
    let entry = this.entry();
    if ((entry.changes?.length ?? 0) >= MAX_CHANGES_PER_ENTRY) {
      this.closeEntry();
      entry = this.entry();
    }
    (entry.changes ??= []).push(change);
  }

  /** The entry being filled in this turn of the event loop; sent once the turn ends. */
  private entry(): StreamEntry {
    if (!this.pending) {
      this.pending = { v: 1, by: this.options.instanceId, events: [] };
      queueMicrotask(() => this.closeEntry());
    }
    return this.pending;
  }

  private closeEntry(): void {
    const entry = this.pending;
    if (!entry) return;
    this.pending = null;
    if (entry.events.length === 0 && !entry.changes && !entry.status) return;
    if ((entry.changes?.length ?? 0) >= MAX_CHANGES_PER_ENTRY) this.snapshotDue = true;
    this.outbox.push(entry);
    this.writing ??= this.drainOutbox().finally(() => (this.writing = null));
  }

  /** Writes the holder's entries in order, each once, retrying while Redis is away. */
  private async drainOutbox(): Promise<void> {
    while (this.outbox.length > 0 && this.roleNow === 'HOLDER' && this.lease) {
      const entry = this.outbox[0] as StreamEntry;
      entry.lease = this.lease;
      try {
        await this.stream.appendAsHolder(this.lease, this.seq + 1, entry);
        this.seq += 1;
        this.outbox.shift();
        this.sinceSnapshot += 1;
      } catch (e) {
        if (this.stopped) return;
        if (e instanceof FencedError) {
          // The lease lapsed under this holder (Redis came back empty, or a pause outlasted it): what it
          // queued is written under the lease taken again, unless another instance holds it now.
          const retaken = await this.retakeLease().catch(() => null);
          if (retaken === false) {
            await this.stepDown('another instance took the lease over', true);
            return;
          }
          if (retaken) continue;
        }
        await this.pause(WRITE_RETRY_MS);
      }
    }
    if (this.outbox.length === 0 && this.roleNow === 'HOLDER') await this.snapshotIfDue();
  }

  private async appendShared(entry: StreamEntry): Promise<void> {
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        await this.stream.append(entry);
        return;
      } catch (e) {
        if (attempt === 0) this.logger.warn({ err: errorMessage(e) }, 'could not write to the event stream; retrying');
        await this.pause(Math.min(WRITE_RETRY_MS * 2 ** attempt, 5_000));
      }
    }
  }

  /**
   * Writes the mirror as it is, with the ID of the last entry written: every
   * entry up to it is in the mirror, so a new instance that starts from the
   * snapshot and reads on from that ID misses nothing (an entry it reads
   * twice changes nothing: entries carry objects whole).
   */
  private async snapshotIfDue(): Promise<void> {
    if (!this.lease || !this.mirror.serving) return;
    if (!this.snapshotDue && this.sinceSnapshot < this.options.snapshotEveryEntries) return;
    const cursor = await this.stream.lastId();
    const written = await this.stream
      .writeSnapshot(this.lease, {
        cursor,
        state: this.mirror.exportState(),
        status: this.mirror.state,
        by: this.options.instanceId,
      })
      .catch((e: unknown) => {
        this.logger.warn({ err: errorMessage(e) }, 'could not write the inventory snapshot; will try again');
        return null;
      });
    if (written) {
      this.snapshotDue = false;
      this.sinceSnapshot = 0;
    }
  }

  /** Waits, or less when the replica stops. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.stopped) return resolve();
      const timer = setTimeout(done, ms);
      const signal = this.stopping.signal;
      function done() {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      }
      signal.addEventListener('abort', done);
    });
  }

  // --- roles ------------------------------------------------------------

  private async run(): Promise<void> {
    await this.bootstrap(true);
    const reading = this.readLoop();
    const leasing = this.leaseLoop();
    await Promise.all([reading, leasing]);
  }

  /**
   * Fills the mirror from the holder's snapshot and reads the stream on
   * from it. With `mayLead`, gives up waiting as soon as nobody holds the
   * lease (this instance may be the first).
   */
  private async bootstrap(mayLead: boolean): Promise<void> {
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        const snapshot = await this.stream.readSnapshot();
        if (snapshot) {
          this.mirror.replace(snapshot.state, 'initial');
          this.holderStatus = snapshot.status;
          this.mirror.follow(snapshot.status);
          const behind = compareEntryIds(snapshot.cursor, this.lastId) < 0;
          if (behind) {
            // Stepping down: the mirror goes back to what the stream says, without telling subscribers again.
            for (const r of await this.stream.range(snapshot.cursor, this.lastId, 100_000)) this.applyChanges(r);
          } else {
            this.lastId = snapshot.cursor;
          }
          if (this.roleNow === 'STARTING') this.roleNow = 'FOLLOWER';
          return;
        }
        if (mayLead && (await this.stream.holder()) === null) {
          this.lastId = await this.stream.lastId();
          if (this.roleNow === 'STARTING') this.roleNow = 'FOLLOWER';
          return;
        }
      } catch (e) {
        if (attempt === 0)
          this.logger.warn({ err: errorMessage(e) }, 'could not read the inventory snapshot; retrying');
      }
      await this.pause(Math.min(200 * 2 ** attempt, 2_000));
    }
  }

  private async leaseLoop(): Promise<void> {
    const every = Math.max(100, Math.floor(this.options.leaseTtlMs / 3));
    while (!this.stopped) {
      try {
        if (this.roleNow === 'HOLDER' && this.lease) {
          if (!(await this.stream.renew(this.lease, this.options.leaseTtlMs))) await this.reassert();
        } else if (this.roleNow === 'FOLLOWER') {
          const lease = await this.stream.acquire(this.options.instanceId, this.options.leaseTtlMs);
          if (lease) await this.lead(lease);
          else this.knownHolder = await this.stream.holder();
        }
      } catch (e) {
        // Redis away: a holder keeps watching and queues what it sees; nobody can take its lease meanwhile.
        this.logger.debug({ err: errorMessage(e) }, 'lease check failed');
      }
      await this.pause(every);
    }
  }

  /** The lease expired under the holder (Redis restarted, or a long pause): take it again unless someone else has. */
  private async reassert(): Promise<void> {
    if (!(await this.retakeLease())) {
      await this.stepDown('another instance took the lease over', true);
      return;
    }
    this.writing ??= this.drainOutbox().finally(() => (this.writing = null));
  }

  /** Takes the lease again after it lapsed; false when another instance holds it. */
  private async retakeLease(): Promise<boolean> {
    const lease = await this.stream.acquire(this.options.instanceId, this.options.leaseTtlMs);
    if (!lease) return false;
    if (lease !== this.lease) this.logger.info({ lease }, 'took the lease of the platform again');
    this.lease = lease;
    this.knownHolder = lease;
    this.snapshotDue = true;
    return true;
  }

  private async lead(lease: string): Promise<void> {
    // Whatever the previous holder wrote last is applied before this instance's own full read.
    for (;;) {
      const rest = await this.stream.range(this.lastId);
      if (rest.length === 0) break;
      for (const r of rest) this.dispatch(r);
    }
    // A mirror ahead of the stream would hide, from the full read below, a change the old holder never told.
    if (this.aheadOfStream) await this.bootstrap(false);
    this.aheadOfStream = false;
    this.lease = lease;
    this.knownHolder = lease;
    this.roleNow = 'HOLDER';
    this.holderSince = new Date();
    this.seq = 0;
    this.snapshotDue = true;
    this.logger.info({ lease }, 'holds the lease of the platform: watching it');
    this.watch = this.startWatch();
  }

  private async stepDown(why: string, rebootstrap: boolean): Promise<void> {
    if (this.roleNow !== 'HOLDER') return;
    if (!this.stopped) this.logger.warn({ why }, 'no longer holds the lease of the platform: following its stream');
    this.roleNow = 'FOLLOWER';
    this.holderSince = null;
    this.lease = null;
    this.pending = null;
    this.outbox.length = 0;
    const watch = this.watch;
    this.watch = null;
    await watch?.stop();
    // What this mirror saw that never reached the stream is not the platform's state as everyone else knows it.
    if (rebootstrap && !this.stopped) await this.bootstrap(false);
  }

  // --- reading ------------------------------------------------------------

  private async readLoop(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      if (this.reader.status !== 'ready') {
        // Its own connection (it blocks): not up yet, or reconnecting.
        let ready = () => {};
        await Promise.race([new Promise<void>((r) => this.reader.once('ready', (ready = r))), this.pause(1_000)]);
        this.reader.off('ready', ready);
        continue;
      }
      try {
        if (failures > 0 && (await this.stream.trimmedAfter(this.lastId))) {
          this.logger.warn(
            { after: this.lastId },
            'the event stream lost entries this instance had not read; starting again from the snapshot',
          );
          if (this.roleNow !== 'HOLDER') await this.bootstrap(false);
        }
        const batch = await this.stream.read(this.reader, this.lastId, READ_BLOCK_MS, READ_COUNT);
        if (failures > 0 && this.roleNow === 'FOLLOWER' && this.holderStatus) this.mirror.follow(this.holderStatus);
        failures = 0;
        for (const r of batch) this.dispatch(r);
      } catch (e) {
        if (this.stopped) return;
        if (failures++ === 0) this.logger.warn({ err: errorMessage(e) }, 'could not read the event stream; retrying');
        if (this.roleNow === 'FOLLOWER' && failures === 3) this.mirror.interrupted(`Redis: ${errorMessage(e)}`);
        await this.pause(Math.min(100 * 2 ** failures, 2_000));
      }
    }
  }

  private dispatch(r: ReadEntry): void {
    if (compareEntryIds(r.id, this.lastId) <= 0) return;
    this.lastId = r.id;
    this.applyChanges(r);
    this.onEntry(this.stream.platformId, r);
  }

  private applyChanges({ entry }: ReadEntry): void {
    if (this.roleNow === 'HOLDER') {
      // The holder's mirror is the source. What another instance read after its mutation names what
      // changed, but it was read before this entry came: the holder may have applied a newer state of
      // the same objects meanwhile (its watch is faster than a stream round trip), so it reads them
      // again itself rather than take an older reading over a newer one.
      if (entry.observed) void this.readAgain(entry.observed);
      return;
    }
    if (entry.changes) this.mirror.apply(entry.changes);
    if (entry.status) {
      this.holderStatus = entry.status;
      this.mirror.follow(entry.status);
    }
  }
}

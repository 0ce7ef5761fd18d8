import type { Logger } from 'pino';

import type { ReadEntry } from '../inventory/replication/platform-stream.js';
import { compareEntryIds } from '../inventory/replication/platform-stream.js';
import type { EventEnvelope } from '../model/events.js';
import { errorMessage } from '../model/errors.js';
import {
  type StreamCursor,
  type StreamPosition,
  decodeStreamCursor,
  encodeStreamCursor,
  isAfter,
} from './stream-cursor.js';
import {
  type Delivery,
  type EventSource,
  type SubscribeOptions,
  SubscriberQueue,
  type SubscriberStream,
} from './subscriber-queue.js';

/** The platforms' streams as kept in Redis, for clients that resume from further back than this instance holds. */
export interface StreamHistory {
  /** Entries of a platform from one ID (included) up to another. */
  range(platformId: string, from: string, until: string): Promise<ReadEntry[]>;
  /** Whether entries after this ID are gone (the stream is capped). */
  trimmedAfter(platformId: string, after: string): Promise<boolean>;
}

interface HeldEvent {
  platformId: string;
  id: string;
  index: number;
  /** What its subscribers receive: one object however many they are. */
  delivery: { type: 'EVENT'; envelope: EventEnvelope };
}

interface StreamSubscriber {
  queue: SubscriberQueue;
  /** While its backlog is read back from Redis, live events wait in the held history. */
  loading: boolean;
  /**
   * Positions of a cursor this instance had not read up to yet (the client
   * came from an instance further along): live events up to them were
   * delivered already.
   */
  ahead: StreamCursor | null;
}

/** A client's missed events are no longer in Redis. */
class TrimmedError extends Error {}

/** When an entry was written: its ID's time. */
const entryTime = (id: string) => new Date(Number(id.slice(0, id.indexOf('-'))));

/**
 * The event log of an instance among several: the events come from every
 * platform's Redis Stream (handed over by the replication once each entry's
 * objects are in the mirror), and a cursor names a position in each
 * stream, so a client resumes where it left off on whichever instance it
 * reconnects to. Recent events are held here; older ones are read back
 * from Redis; a cursor older than what Redis still holds gets
 * RESYNC_REQUIRED.
 */
export class StreamEventLog implements EventSource {
  /** The last entry handed over per platform: the live edge. */
  private readonly delivered = new Map<string, StreamPosition>();
  /** The first entry handed over per platform since this instance started reading. */
  private readonly firstSeen = new Map<string, string>();
  /** The newest entry per platform whose events left the held history. */
  private readonly evictedThrough = new Map<string, string>();
  private readonly held: HeldEvent[] = [];
  private heldStart = 0;
  private readonly subscribers = new Set<StreamSubscriber>();

  constructor(
    private readonly history: StreamHistory,
    private readonly logger: Logger,
    /** Events held here for clients that resume. @default 10_000 */
    private readonly holdSize = 10_000,
  ) {}

  /** Takes one stream entry in (called in each platform's order). */
  deliver(platformId: string, { id, entry }: ReadEntry): void {
    if (!this.firstSeen.has(platformId)) this.firstSeen.set(platformId, id);
    const at = entryTime(id);
    const last = entry.events.length - 1;
    if (last < 0) this.delivered.set(platformId, { id, index: Number.POSITIVE_INFINITY });
    entry.events.forEach((event, index) => {
      this.delivered.set(platformId, { id, index: index === last ? Number.POSITIVE_INFINITY : index });
      const envelope: EventEnvelope = { version: 1, cursor: encodeStreamCursor(this.delivered), at, event };
      const held: HeldEvent = { platformId, id, index, delivery: { type: 'EVENT', envelope } };
      this.hold(held);
      for (const s of this.subscribers) this.offer(s, held);
    });
  }

  private hold(e: HeldEvent): void {
    this.held.push(e);
    if (this.held.length - this.heldStart > this.holdSize) {
      const gone = this.held[this.heldStart] as HeldEvent;
      this.evictedThrough.set(gone.platformId, gone.id);
      this.heldStart += 1;
      // Compacted now and then rather than shifted per event.
      if (this.heldStart >= this.holdSize) {
        this.held.splice(0, this.heldStart);
        this.heldStart = 0;
      }
    }
  }

  private offer(s: StreamSubscriber, e: HeldEvent): void {
    if (s.loading) return;
    if (s.ahead?.has(e.platformId)) {
      if (!isAfter(e.id, e.index, s.ahead.get(e.platformId))) return;
      s.ahead.delete(e.platformId);
    }
    if (s.queue.filter(e.delivery.envelope.event)) s.queue.push(e.delivery);
  }

  subscribe(options: SubscribeOptions): SubscriberStream<Delivery> {
    const from = options.after ? decodeStreamCursor(options.after) : undefined;
    const s: StreamSubscriber = {
      queue: new SubscriberQueue(options, () => this.subscribers.delete(s)),
      loading: false,
      ahead: null,
    };
    this.subscribers.add(s);
    if (from === null) {
      // A cursor of a single instance's log, or of a run before Redis was configured.
      s.queue.backlog([this.resync()]);
    } else if (from) {
      this.resume(s, from);
    }
    return s.queue;
  }

  private resync(): Delivery {
    return { type: 'RESYNC_REQUIRED', cursor: encodeStreamCursor(this.delivered), at: new Date() };
  }

  /**
   * Hands a resuming subscriber what it missed: from the held events, or,
   * for a platform whose missed events this instance does not hold (they
   * are older than it, or were handed over on another instance), from
   * Redis first. Live events meanwhile wait in the held history, which is
   * replayed last, so nothing is missed or doubled.
   */
  private resume(s: StreamSubscriber, from: StreamCursor): void {
    const remote: [string, StreamPosition, StreamPosition | null][] = [];
    for (const [platformId, position] of from) {
      const edge = this.delivered.get(platformId);
      // Nothing handed over yet: where this instance's reading starts is not known here, so Redis says what came after.
      if (!edge) remote.push([platformId, position, null]);
      // This instance is behind the client: its reading goes on past the position.
      else if (!isAfter(edge.id, edge.index, position)) (s.ahead ??= new Map()).set(platformId, position);
      else if (!this.holds(platformId, position)) remote.push([platformId, position, edge]);
    }
    if (remote.length === 0) {
      s.queue.backlog(this.replayHeld(s, from));
      return;
    }
    s.loading = true;
    // Platforms the cursor does not name start live, from where they are now.
    const start = new Map(from);
    for (const [platformId, edge] of this.delivered) if (!start.has(platformId)) start.set(platformId, edge);
    void this.readBack(s, start, remote);
  }

  /** Whether the held events reach back to a position of a platform. */
  private holds(platformId: string, p: StreamPosition): boolean {
    const first = this.firstSeen.get(platformId);
    if (first === undefined || compareEntryIds(p.id, first) < 0) return false;
    const evicted = this.evictedThrough.get(platformId);
    if (evicted === undefined) return true;
    const c = compareEntryIds(p.id, evicted);
    return c > 0 || (c === 0 && !Number.isFinite(p.index));
  }

  /** The held events after the given positions (platforms without one are not replayed). */
  private replayHeld(s: StreamSubscriber, from: StreamCursor): Delivery[] {
    const out: Delivery[] = [];
    for (let i = this.heldStart; i < this.held.length; i++) {
      const e = this.held[i] as HeldEvent;
      const position = from.get(e.platformId);
      if (position && isAfter(e.id, e.index, position) && s.queue.filter(e.delivery.envelope.event))
        out.push(e.delivery);
    }
    return out;
  }

  private async readBack(
    s: StreamSubscriber,
    from: StreamCursor,
    /** Per platform: from where, up to where (null: up to the newest entry). */
    remote: [platformId: string, from: StreamPosition, until: StreamPosition | null][],
  ): Promise<void> {
    const backlog: Delivery[] = [];
    const rest = new Map(from);
    try {
      for (const [platformId, position, edge] of remote) {
        if (await this.history.trimmedAfter(platformId, position.id)) throw new TrimmedError();
        const positions = new Map(from);
        let reached = position;
        for (const { id, entry } of await this.history.range(platformId, position.id, edge?.id ?? '+')) {
          const last = entry.events.length - 1;
          reached = { id, index: Number.POSITIVE_INFINITY };
          entry.events.forEach((event, index) => {
            if (!isAfter(id, index, position)) return;
            positions.set(platformId, { id, index: index === last ? Number.POSITIVE_INFINITY : index });
            if (s.queue.filter(event))
              backlog.push({
                type: 'EVENT',
                envelope: { version: 1, cursor: encodeStreamCursor(positions), at: entryTime(id), event },
              });
          });
        }
        if (edge) {
          // What came after the edge is held here.
          rest.set(platformId, edge);
          if (!this.holds(platformId, edge)) throw new TrimmedError();
        } else {
          // This instance's reading may still be behind what Redis gave: skip what the client has now.
          rest.set(platformId, reached);
          (s.ahead ??= new Map()).set(platformId, reached);
        }
      }
    } catch (e) {
      if (!(e instanceof TrimmedError))
        this.logger.warn({ err: errorMessage(e) }, 'could not read missed events back from Redis');
      s.loading = false;
      s.queue.backlog([this.resync()]);
      return;
    }
    s.loading = false;
    s.queue.backlog([...backlog, ...this.replayHeld(s, rest)]);
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }
}

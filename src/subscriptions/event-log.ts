import { randomBytes } from 'node:crypto';

import { ErrorCode, GatewayError } from '../model/errors.js';
import type { EventEnvelope, EventPublisher, GatewayEvent } from '../model/events.js';

/** Deliveries handed to one subscriber in a row before the event loop gets a turn. */
const YIELD_EVERY = 16;

/** What a subscriber receives: an event, or word that it missed some and must read the state again. */
export type Delivery =
  { type: 'EVENT'; envelope: EventEnvelope } | { type: 'RESYNC_REQUIRED'; cursor: string; at: Date };

/** Raised into a subscription whose client fell behind by more than its queue holds. */
export class SubscriberTooSlowError extends Error {
  constructor(readonly queued: number) {
    super(`The client fell ${queued} events behind; it is disconnected rather than sent a thinned stream.`);
    this.name = 'SubscriberTooSlowError';
  }
}

export interface SubscribeOptions {
  /** Only events this accepts are queued. */
  filter: (event: GatewayEvent) => boolean;
  /** Resume after this cursor: every later event still held is delivered first. */
  after?: string | null;
  /** Events queued for a client that is not reading, before it is cut off. */
  maxQueue: number;
  /** Called once when the queue overflows (the transport closes the connection). */
  onOverflow?: (error: SubscriberTooSlowError) => void;
}

interface Subscriber {
  filter: (event: GatewayEvent) => boolean;
  queue: Delivery[];
  maxQueue: number;
  wake: (() => void) | null;
  failed: SubscriberTooSlowError | null;
  onOverflow?: (error: SubscriberTooSlowError) => void;
}

/**
 * The gateway's event log, in memory: every event gets the next cursor and
 * is kept in a bounded history, so a client that reconnects with its last
 * cursor receives what it missed, in order, before the live stream; a cursor
 * older than the history (or of another run of the gateway) gets
 * RESYNC_REQUIRED first. Each subscriber has a bounded queue: one that cannot
 * keep up is cut off, never silently thinned.
 */
export class MemoryEventLog implements EventPublisher {
  /** Distinguishes this log's cursors from those of an earlier run. */
  private readonly epoch = randomBytes(6).toString('base64url');
  private sequence = 0;
  private readonly history: EventEnvelope[] = [];
  private readonly subscribers = new Set<Subscriber>();

  constructor(
    /** Events kept for clients that resume. @default 10_000 */
    private readonly historySize = 10_000,
  ) {}

  publish(event: GatewayEvent): void {
    this.sequence += 1;
    const envelope: EventEnvelope = { version: 1, cursor: this.cursorOf(this.sequence), at: new Date(), event };
    this.history.push(envelope);
    if (this.history.length > this.historySize) this.history.splice(0, this.history.length - this.historySize);
    for (const s of this.subscribers) if (s.filter(event)) this.enqueue(s, { type: 'EVENT', envelope });
  }

  /** The cursor of the newest event (a client that starts now resumes after it). */
  get latestCursor(): string {
    return this.cursorOf(this.sequence);
  }

  private cursorOf(sequence: number): string {
    return `${this.epoch}.${sequence.toString(36)}`;
  }

  /** The sequence a cursor names, or null when it is of another run; throws on a malformed cursor. */
  private sequenceOf(cursor: string): number | null {
    const match = /^([A-Za-z0-9_-]{8})\.([0-9a-z]{1,11})$/.exec(cursor);
    if (!match) throw new GatewayError(ErrorCode.INVALID_CURSOR, `"${cursor.slice(0, 40)}" is not an event cursor.`);
    if (match[1] !== this.epoch) return null;
    const sequence = Number.parseInt(match[2] as string, 36);
    if (sequence > this.sequence) {
      throw new GatewayError(ErrorCode.INVALID_CURSOR, 'That event cursor is ahead of this gateway.');
    }
    return sequence;
  }

  private enqueue(s: Subscriber, d: Delivery): void {
    if (s.failed) return;
    if (s.queue.length >= s.maxQueue) {
      s.failed = new SubscriberTooSlowError(s.queue.length);
      s.queue.length = 0;
      this.subscribers.delete(s);
      s.onOverflow?.(s.failed);
    } else {
      s.queue.push(d);
    }
    s.wake?.();
  }

  /** The events after a cursor, in order; throws INVALID_CURSOR on a malformed one. */
  subscribe(options: SubscribeOptions): AsyncIterableIterator<Delivery> {
    const s: Subscriber = {
      filter: options.filter,
      queue: [],
      maxQueue: options.maxQueue,
      wake: null,
      failed: null,
      onOverflow: options.onOverflow,
    };
    if (options.after) {
      const from = this.sequenceOf(options.after);
      const oldest = this.history[0] ? this.sequenceOf(this.history[0].cursor) : this.sequence + 1;
      // The history reaches back to the cursor when it holds the event right after it.
      if (from === null || (from < this.sequence && (oldest === null || oldest > from + 1))) {
        s.queue.push({ type: 'RESYNC_REQUIRED', cursor: this.latestCursor, at: new Date() });
      } else {
        for (const e of this.history) {
          const seq = this.sequenceOf(e.cursor) as number;
          if (seq > from && options.filter(e.event)) s.queue.push({ type: 'EVENT', envelope: e });
        }
      }
    }
    // The backlog of a resuming client does not count against its queue.
    s.maxQueue += s.queue.length;
    this.subscribers.add(s);
    const subscribers = this.subscribers;
    let done = false;
    let inARow = 0;
    const finish = () => {
      done = true;
      subscribers.delete(s);
      s.wake?.();
    };
    return {
      [Symbol.asyncIterator]() {
        return this;
      },
      async next(): Promise<IteratorResult<Delivery>> {
        for (;;) {
          if (s.failed) throw s.failed;
          // A backlog handed over without a pause would keep the event loop
          // to itself (every step a microtask): let I/O in now and then.
          if (s.queue.length > 0 && ++inARow % YIELD_EVERY === 0) await new Promise((r) => setImmediate(r));
          const item = s.queue.shift();
          if (item) return { value: item, done: false };
          inARow = 0;
          if (done) return { value: undefined, done: true };
          await new Promise<void>((resolve) => (s.wake = resolve));
          s.wake = null;
        }
      },
      async return(): Promise<IteratorResult<Delivery>> {
        finish();
        return { value: undefined, done: true };
      },
      async throw(e: unknown): Promise<IteratorResult<Delivery>> {
        finish();
        throw e;
      },
    };
  }

  /** Open subscriptions, for metrics and tests. */
  get subscriberCount(): number {
    return this.subscribers.size;
  }
}

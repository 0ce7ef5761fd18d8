import type { EventEnvelope, GatewayEvent } from '../model/events.js';

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

/** Where subscriptions get their events (in memory, or from Redis Streams). */
export interface EventSource {
  /** The events after a cursor, in order, then live ones; throws INVALID_CURSOR on a malformed cursor. */
  subscribe(options: SubscribeOptions): AsyncIterableIterator<Delivery>;
  /** Open subscriptions, for metrics and tests. */
  readonly subscriberCount: number;
}

/**
 * One subscriber's bounded queue, read as an async iterator. A subscriber
 * that cannot keep up is cut off (onOverflow, then the iterator throws),
 * never silently thinned. A backlog handed over at once does not count
 * against the bound.
 */
export class SubscriberQueue<T = Delivery> implements AsyncIterableIterator<T> {
  readonly filter: (event: GatewayEvent) => boolean;
  private readonly items: T[] = [];
  private maxQueue: number;
  private wake: (() => void) | null = null;
  private failed: SubscriberTooSlowError | null = null;
  private done = false;
  private inARow = 0;

  constructor(
    /** A queue fed directly (not from an event log) needs no filter. */
    options: Omit<SubscribeOptions, 'filter'> & Partial<Pick<SubscribeOptions, 'filter'>>,
    /** Called once when the subscriber goes (ends, fails or is cut off). */
    private readonly onGone: (queue: SubscriberQueue<T>) => void,
  ) {
    this.filter = options.filter ?? (() => false);
    this.maxQueue = options.maxQueue;
    this.onOverflow = options.onOverflow;
  }

  private readonly onOverflow: SubscribeOptions['onOverflow'];

  get closed(): boolean {
    return this.done || this.failed !== null;
  }

  /** Queues what came before the live stream, beyond the bound. */
  backlog(items: readonly T[]): void {
    for (const d of items) this.items.push(d);
    this.maxQueue += items.length;
    this.wake?.();
  }

  push(d: T): void {
    if (this.closed) return;
    if (this.items.length >= this.maxQueue) {
      this.failed = new SubscriberTooSlowError(this.items.length);
      this.items.length = 0;
      this.onGone(this);
      this.onOverflow?.(this.failed);
    } else {
      this.items.push(d);
    }
    this.wake?.();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<T>> {
    for (;;) {
      if (this.failed) throw this.failed;
      // A backlog handed over without a pause would keep the event loop
      // to itself (every step a microtask): let I/O in now and then.
      if (this.items.length > 0 && ++this.inARow % YIELD_EVERY === 0) await new Promise((r) => setImmediate(r));
      const item = this.items.shift();
      if (item) return { value: item, done: false };
      this.inARow = 0;
      if (this.done) return { value: undefined, done: true };
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = null;
    }
  }

  async return(): Promise<IteratorResult<T>> {
    this.finish();
    return { value: undefined, done: true };
  }

  async throw(e: unknown): Promise<IteratorResult<T>> {
    this.finish();
    throw e;
  }

  private finish(): void {
    this.done = true;
    this.onGone(this);
    this.wake?.();
  }
}

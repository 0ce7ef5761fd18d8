import type { EventEnvelope, GatewayEvent } from '../model/events.js';

/** Deliveries handed to one subscriber in a row before the event loop gets a turn. */
const YIELD_EVERY = 16;

/**
 * How long deliveries are pushed through in one turn of the event loop
 * before the rest wait in their queues for the next turn. A batch of 1,000
 * changes applied at once (what a watch reads after falling behind) to 1,000
 * subscribers is a million socket writes: pushed in one go, seconds without
 * a timer, a ping, a lease renewal or another request.
 */
const TURN_BUDGET_MS = 40;
/** Deliveries between looks at the clock. */
const CLOCK_EVERY = 256;
let turnStartedAt: number | null = null;
let deliveredThisTurn = 0;
let turnSpent = false;

/** Counts one delivery against this turn; false once the turn's time is spent. */
function spendTurn(): boolean {
  if (turnStartedAt === null) {
    turnStartedAt = performance.now();
    setImmediate(() => {
      turnStartedAt = null;
      deliveredThisTurn = 0;
      turnSpent = false;
    });
  } else if (!turnSpent && ++deliveredThisTurn % CLOCK_EVERY === 0) {
    turnSpent = performance.now() - turnStartedAt > TURN_BUDGET_MS;
  }
  return !turnSpent;
}

/** What a subscriber receives: an event, or word that it missed some and must read the state again. */
export type Delivery =
  { type: 'EVENT'; envelope: EventEnvelope } | { type: 'RESYNC_REQUIRED'; cursor: string; at: Date };

/** Where a pushed stream's items go. */
export interface StreamSink<T> {
  /** Takes one item; false when it can take no more for now: the stream holds the next ones until resume(). */
  next(item: T): boolean;
  /** The stream ended: failed (its subscriber fell too far behind), or, without an error, ran out. Nothing follows. */
  end(error?: Error): void;
  /** Runs `deliver`, which hands over several items at once: the sink may gather them into one write. */
  many?(deliver: () => void): void;
}

/**
 * A subscriber's stream, read either way: pulled as an async iterator (what
 * GraphQL's subscribe resolvers return), or pushed into a sink, which takes
 * each event within the call that publishes it: no promise and no turn of
 * the event loop per item, which at 1,000 subscribers was most of the cost.
 */
export interface SubscriberStream<T> extends AsyncIterableIterator<T> {
  /** From now on, pushes every item into `sink`, those already held first. Once, instead of next(). */
  attach(sink: StreamSink<T>): void;
  /** The sink has room again after it refused an item. */
  resume(): void;
}

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
  subscribe(options: SubscribeOptions): SubscriberStream<Delivery>;
  /** Open subscriptions, for metrics and tests. */
  readonly subscriberCount: number;
}

/**
 * One subscriber's bounded queue, pulled as an async iterator or pushed
 * into a sink. A subscriber that cannot keep up (its sink refuses items, or
 * it does not pull) is cut off once the queue is full (onOverflow, then the
 * iterator throws or the sink is ended with the error), never silently
 * thinned. A backlog handed over at once does not count against the bound.
 */
export class SubscriberQueue<T = Delivery> implements SubscriberStream<T> {
  readonly filter: (event: GatewayEvent) => boolean;
  private items: T[] = [];
  /** Index of the first item not yet handed over (a long backlog is not shifted one item at a time). */
  private head = 0;
  private maxQueue: number;
  private wake: (() => void) | null = null;
  private failed: SubscriberTooSlowError | null = null;
  private done = false;
  private inARow = 0;
  private sink: StreamSink<T> | null = null;
  /** The sink refused the last item: hold the next ones until resume(). */
  private paused = false;
  private draining = false;
  private resumeScheduled = false;

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

  private get held(): number {
    return this.items.length - this.head;
  }

  /** The first item held; only while some are. */
  private take(): T {
    const item = this.items[this.head] as T;
    this.head += 1;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 1_024 && this.head * 2 >= this.items.length) {
      // A queue that never quite empties (a subscriber a few events behind
      // for hours) would otherwise keep every item it ever handed over.
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  /** Queues what came before the live stream, beyond the bound. */
  backlog(items: readonly T[]): void {
    for (const d of items) this.items.push(d);
    this.maxQueue += items.length;
    this.wake?.();
    if (this.sink) this.resume();
  }

  push(d: T): void {
    if (this.closed) return;
    if (this.sink && !this.paused && this.held === 0 && !this.draining && spendTurn()) {
      if (!this.sink.next(d)) this.paused = true;
      return;
    }
    if (this.held >= this.maxQueue) {
      this.failed = new SubscriberTooSlowError(this.held);
      this.items = [];
      this.head = 0;
      this.onGone(this);
      this.onOverflow?.(this.failed);
      this.sink?.end(this.failed);
    } else {
      this.items.push(d);
      if (this.sink && !this.paused) this.resumeNextTurn();
    }
    this.wake?.();
  }

  attach(sink: StreamSink<T>): void {
    if (this.sink) throw new Error('A subscriber stream is pushed into one sink only.');
    this.sink = sink;
    this.resume();
  }

  resume(): void {
    this.paused = false;
    const sink = this.sink;
    if (this.draining || !sink) return;
    this.draining = true;
    const drain = () => {
      while (!this.closed && !this.paused && this.held > 0) {
        if (!spendTurn()) return this.resumeNextTurn();
        if (!sink.next(this.take())) this.paused = true;
      }
    };
    try {
      // What waited goes in one write where the sink can gather it: a client
      // that fell behind is caught up with fewer writes, not more.
      if (this.held > 1 && sink.many) sink.many(drain);
      else drain();
    } finally {
      this.draining = false;
    }
  }

  private resumeNextTurn(): void {
    if (this.resumeScheduled) return;
    this.resumeScheduled = true;
    setImmediate(() => {
      this.resumeScheduled = false;
      this.resume();
    });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<T>> {
    for (;;) {
      if (this.failed) throw this.failed;
      // A backlog handed over without a pause would keep the event loop
      // to itself (every step a microtask): let I/O in now and then.
      if (this.held > 0 && ++this.inARow % YIELD_EVERY === 0) await new Promise((r) => setImmediate(r));
      if (this.held > 0) return { value: this.take(), done: false };
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

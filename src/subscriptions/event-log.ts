import { randomBytes } from 'node:crypto';

import { ErrorCode, GatewayError } from '../model/errors.js';
import type { EventEnvelope, EventPublisher, GatewayEvent } from '../model/events.js';
import {
  type Delivery,
  type EventSource,
  type SubscribeOptions,
  SubscriberQueue,
  type SubscriberStream,
} from './subscriber-queue.js';

export { type Delivery, type SubscribeOptions, SubscriberTooSlowError } from './subscriber-queue.js';

/**
 * The gateway's event log, in memory: every event gets the next cursor and
 * is kept in a bounded history, so a client that reconnects with its last
 * cursor receives what it missed, in order, before the live stream; a cursor
 * older than the history (or of another run of the gateway) gets
 * RESYNC_REQUIRED first. Each subscriber has a bounded queue: one that cannot
 * keep up is cut off, never silently thinned.
 */
export class MemoryEventLog implements EventPublisher, EventSource {
  /** Distinguishes this log's cursors from those of an earlier run. */
  private readonly epoch = randomBytes(6).toString('base64url');
  private sequence = 0;
  private readonly history: EventEnvelope[] = [];
  private readonly subscribers = new Set<SubscriberQueue>();

  constructor(
    /** Events kept for clients that resume. @default 10_000 */
    private readonly historySize = 10_000,
  ) {}

  publish(event: GatewayEvent): void {
    this.sequence += 1;
    const envelope: EventEnvelope = { version: 1, cursor: this.cursorOf(this.sequence), at: new Date(), event };
    this.history.push(envelope);
    if (this.history.length > this.historySize) this.history.splice(0, this.history.length - this.historySize);
    const delivery: Delivery = { type: 'EVENT', envelope };
    for (const s of this.subscribers) if (s.filter(event)) s.push(delivery);
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

  /** The events after a cursor, in order; throws INVALID_CURSOR on a malformed one. */
  subscribe(options: SubscribeOptions): SubscriberStream<Delivery> {
    const backlog: Delivery[] = [];
    if (options.after) {
      const from = this.sequenceOf(options.after);
      const oldest = this.history[0] ? this.sequenceOf(this.history[0].cursor) : this.sequence + 1;
      // The history reaches back to the cursor when it holds the event right after it.
      if (from === null || (from < this.sequence && (oldest === null || oldest > from + 1))) {
        backlog.push({ type: 'RESYNC_REQUIRED', cursor: this.latestCursor, at: new Date() });
      } else {
        for (const e of this.history) {
          const seq = this.sequenceOf(e.cursor) as number;
          if (seq > from && options.filter(e.event)) backlog.push({ type: 'EVENT', envelope: e });
        }
      }
    }
    const queue = new SubscriberQueue(options, (q) => this.subscribers.delete(q));
    queue.backlog(backlog);
    this.subscribers.add(queue);
    return queue;
  }

  /** Open subscriptions, for metrics and tests. */
  get subscriberCount(): number {
    return this.subscribers.size;
  }
}

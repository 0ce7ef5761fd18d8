import type { EventEnvelope } from '../model/events.js';
import { activeMetrics } from './metrics.js';

/** What a subscriber's queue raises when it overflows: how many events it discarded. */
interface Overflow extends Error {
  readonly queued: number;
}

/** A source of subscriber queues, as the subscriptions room's EventSource is shaped. */
export interface MeterableSource<O extends { onOverflow?: (error: Overflow) => void }, D> {
  subscribe(options: O): AsyncIterableIterator<D>;
  readonly subscriberCount: number;
}

/**
 * The event source subscriptions read, measured: the lag of each event
 * when its subscription takes it (from publication, by the publishing
 * instance's clock), and the events a too-slow subscriber's queue discards.
 * Costs one `then` per delivery while metrics are on, nothing otherwise.
 */
export function meteredEventSource<
  O extends { onOverflow?: (error: Overflow) => void },
  D extends { type: string; envelope?: EventEnvelope },
>(source: MeterableSource<O, D>): MeterableSource<O, D> {
  return {
    get subscriberCount() {
      return source.subscriberCount;
    },
    subscribe(options: O): AsyncIterableIterator<D> {
      const metrics = activeMetrics();
      if (!metrics) return source.subscribe(options);
      const onOverflow = options.onOverflow;
      const queue = source.subscribe({
        ...options,
        onOverflow: (error: Overflow) => {
          metrics.eventsDropped.inc(error.queued);
          onOverflow?.(error);
        },
      });
      const measured: AsyncIterableIterator<D> = {
        next: () =>
          queue.next().then((item) => {
            const at = item.done ? undefined : item.value.envelope?.at;
            if (at) metrics.eventLag.observe(Math.max(0, Date.now() - at.getTime()) / 1000);
            return item;
          }),
        return: (value?: unknown) => queue.return?.(value) ?? Promise.resolve({ value: undefined, done: true }),
        throw: (e?: unknown) => queue.throw?.(e) ?? Promise.reject(e),
        [Symbol.asyncIterator]() {
          return measured;
        },
      };
      return measured;
    },
  };
}

import type { EventEnvelope } from '../model/events.js';
import { activeMetrics } from './metrics.js';

/** What a subscriber's queue raises when it overflows: how many events it discarded. */
interface Overflow extends Error {
  readonly queued: number;
}

/** A subscriber's stream, as the subscriptions room shapes it: pulled, or pushed into a sink. */
interface MeterableStream<D> extends AsyncIterableIterator<D> {
  attach(sink: { next(item: D): boolean; end(error?: Error): void; many?(deliver: () => void): void }): void;
  resume(): void;
}

/** A source of subscriber streams, as the subscriptions room's EventSource is shaped. */
export interface MeterableSource<O extends { onOverflow?: (error: Overflow) => void }, D> {
  subscribe(options: O): MeterableStream<D>;
  readonly subscriberCount: number;
}

/**
 * The event source subscriptions read, measured: the lag of each event
 * when its subscription takes it (from publication, by the publishing
 * instance's clock), and the events a too-slow subscriber's queue discards.
 * Costs a clock read per delivery while metrics are on, nothing otherwise.
 */
export function meteredEventSource<
  O extends { onOverflow?: (error: Overflow) => void },
  D extends { type: string; envelope?: EventEnvelope },
>(source: MeterableSource<O, D>): MeterableSource<O, D> {
  return {
    get subscriberCount() {
      return source.subscriberCount;
    },
    subscribe(options: O): MeterableStream<D> {
      const metrics = activeMetrics();
      if (!metrics) return source.subscribe(options);
      const onOverflow = options.onOverflow;
      const stream = source.subscribe({
        ...options,
        onOverflow: (error: Overflow) => {
          metrics.eventsDropped.inc(error.queued);
          onOverflow?.(error);
        },
      });
      const observe = (item: D) => {
        const at = item.envelope?.at;
        if (at) metrics.eventLag.observe(Math.max(0, Date.now() - at.getTime()) / 1000);
      };
      const measured: MeterableStream<D> = {
        next: () =>
          stream.next().then((item) => {
            if (!item.done) observe(item.value);
            return item;
          }),
        return: (value?: unknown) => stream.return?.(value) ?? Promise.resolve({ value: undefined, done: true }),
        throw: (e?: unknown) => stream.throw?.(e) ?? Promise.reject(e),
        attach: (sink) =>
          stream.attach({
            next: (item) => {
              observe(item);
              return sink.next(item);
            },
            end: (error) => sink.end(error),
            ...(sink.many ? { many: sink.many.bind(sink) } : {}),
          }),
        resume: () => stream.resume(),
        [Symbol.asyncIterator]() {
          return measured;
        },
      };
      return measured;
    },
  };
}

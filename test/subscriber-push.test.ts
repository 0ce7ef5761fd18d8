import { describe, expect, it } from 'vitest';

import type { GatewayEvent } from '../src/model/events.js';
import { type Delivery, MemoryEventLog, SubscriberTooSlowError } from '../src/subscriptions/event-log.js';
import type { StreamSink } from '../src/subscriptions/subscriber-queue.js';

const task = (taskId: string): GatewayEvent => ({ type: 'TASK', platformId: 'p', taskId });
const all = () => true;
const idOf = (d: Delivery) => (d.type === 'EVENT' ? (d.envelope.event as { taskId: string }).taskId : d.type);

/** A sink that takes what it is given while `open`, recording it, and how many items came through many(). */
function recordingSink(opts: { open?: () => boolean; gathers?: boolean; cost?: () => void } = {}) {
  const got: string[] = [];
  const ended: (Error | undefined)[] = [];
  let gathered = 0;
  const sink: StreamSink<Delivery> = {
    next: (d) => {
      opts.cost?.();
      got.push(idOf(d));
      return opts.open?.() ?? true;
    },
    end: (error) => ended.push(error),
    ...(opts.gathers
      ? {
          many: (deliver: () => void) => {
            const before = got.length;
            deliver();
            gathered += got.length - before;
          },
        }
      : {}),
  };
  return { sink, got, ended, gathered: () => gathered };
}

const turn = () => new Promise((r) => setImmediate(r));

describe('subscriber streams pushed into a sink', () => {
  it('hands each event over within the call that publishes it', () => {
    const log = new MemoryEventLog(100);
    const { sink, got } = recordingSink();
    log.subscribe({ filter: (e) => e.type === 'TASK' && e.taskId !== 'skip', maxQueue: 10 }).attach(sink);
    log.publish(task('a'));
    expect(got).toEqual(['a']);
    log.publish(task('skip'));
    log.publish(task('b'));
    expect(got).toEqual(['a', 'b']);
  });

  it('holds events while the sink refuses them, and hands them over in order, gathered, on resume', async () => {
    const log = new MemoryEventLog(100);
    let open = false;
    const { sink, got, gathered } = recordingSink({ open: () => open, gathers: true });
    const stream = log.subscribe({ filter: all, maxQueue: 10 });
    stream.attach(sink);
    log.publish(task('e0'));
    // Refused: the sink took e0 and said it is full.
    for (let i = 1; i < 6; i++) log.publish(task(`e${i}`));
    expect(got).toEqual(['e0']);
    open = true;
    stream.resume();
    expect(got).toEqual(['e0', 'e1', 'e2', 'e3', 'e4', 'e5']);
    expect(gathered()).toBe(5);
    // Live again: straight through.
    log.publish(task('e6'));
    expect(got.at(-1)).toBe('e6');
    await turn();
  });

  it('cuts off a subscriber whose sink stays full once its queue is, and ends its stream with the error', () => {
    const log = new MemoryEventLog(100);
    const overflowed: SubscriberTooSlowError[] = [];
    const slow = recordingSink({ open: () => false });
    const fast = recordingSink();
    log.subscribe({ filter: all, maxQueue: 3, onOverflow: (e) => overflowed.push(e) }).attach(slow.sink);
    log.subscribe({ filter: all, maxQueue: 3 }).attach(fast.sink);
    for (let i = 0; i < 6; i++) log.publish(task(`e${i}`));
    expect(overflowed).toHaveLength(1);
    expect(slow.ended).toHaveLength(1);
    expect(slow.ended[0]).toBeInstanceOf(SubscriberTooSlowError);
    expect(slow.got).toEqual(['e0']);
    expect(fast.got).toEqual(['e0', 'e1', 'e2', 'e3', 'e4', 'e5']);
    expect(log.subscriberCount).toBe(1);
  });

  it('delivers a backlog after a cursor first, then live events', async () => {
    const log = new MemoryEventLog(100);
    const first = recordingSink();
    log.subscribe({ filter: all, maxQueue: 10 }).attach(first.sink);
    log.publish(task('a'));
    const cursor = log.latestCursor;
    log.publish(task('b'));
    log.publish(task('c'));
    const resumed = recordingSink();
    log.subscribe({ filter: all, after: cursor, maxQueue: 10 }).attach(resumed.sink);
    log.publish(task('d'));
    await turn();
    expect(resumed.got).toEqual(['b', 'c', 'd']);
  });

  it('lets the event loop turn while a large batch is delivered, and keeps each subscriber in order', async () => {
    const log = new MemoryEventLog(1_000);
    // Each delivery costs about 20 µs, as a socket write does: 200 events to 200 subscribers is
    // about 0.8 s of work, which must not be done in one go.
    const spin = () => {
      const until = performance.now() + 0.02;
      while (performance.now() < until);
    };
    const sinks = Array.from({ length: 200 }, () => recordingSink({ cost: spin }));
    for (const s of sinks) log.subscribe({ filter: all, maxQueue: 1_000 }).attach(s.sink);
    let deliveredWhenTimerRan = -1;
    const delivered = () => sinks.reduce((n, s) => n + s.got.length, 0);
    setTimeout(() => (deliveredWhenTimerRan = delivered()), 0);
    const expected = Array.from({ length: 200 }, (_, i) => `e${i}`);
    for (const id of expected) log.publish(task(id));
    while (delivered() < 200 * 200) await turn();
    // The timer ran in the middle of the batch, not after it.
    expect(deliveredWhenTimerRan).toBeGreaterThan(0);
    expect(deliveredWhenTimerRan).toBeLessThan(200 * 200);
    for (const s of sinks) expect(s.got).toEqual(expected);
  });
});

describe('a subscriber queue that never quite empties', () => {
  it('hands everything over in order, keeping only about what it still holds', async () => {
    const log = new MemoryEventLog(10);
    let drainAll = false;
    // Takes one item per resume (it says it is full after each), until told to take everything.
    const { sink, got } = recordingSink({ open: () => drainAll });
    const stream = log.subscribe({ filter: all, maxQueue: 100 });
    stream.attach(sink);
    const expected: string[] = [];
    const publish = (i: number) => {
      expected.push(`e${i}`);
      log.publish(task(`e${i}`));
    };
    // 50 behind, then one in and one out, 5,000 times: always about 50 held.
    for (let i = 0; i < 50; i++) publish(i);
    let longest = 0;
    for (let i = 50; i < 5_050; i++) {
      publish(i);
      stream.resume();
      longest = Math.max(longest, (stream as unknown as { items: unknown[] }).items.length);
      // A turn now and then: deliveries in one turn of the event loop are bounded in time.
      if (i % 100 === 0) await turn();
    }
    drainAll = true;
    stream.resume();
    while (got.length < expected.length) await turn();
    expect(got).toEqual(expected);
    // Without compaction the array would have kept all 5,050 items handed over.
    expect(longest).toBeLessThan(2_500);
  });
});

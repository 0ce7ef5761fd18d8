import { describe, expect, it } from 'vitest';

import type { GatewayEvent } from '../src/model/events.js';
import { type Delivery, MemoryEventLog, SubscriberTooSlowError } from '../src/subscriptions/event-log.js';

const task = (taskId: string): GatewayEvent => ({ type: 'TASK', platformId: 'p', taskId });
const all = () => true;
const ids = (ds: Delivery[]) =>
  ds.map((d) => (d.type === 'EVENT' ? (d.envelope.event as { taskId: string }).taskId : d.type));

async function take(it: AsyncIterator<Delivery>, n: number): Promise<Delivery[]> {
  const out: Delivery[] = [];
  while (out.length < n) out.push((await it.next()).value as Delivery);
  return out;
}

describe('the event log', () => {
  it('delivers in order with increasing cursors, and only what the filter accepts', async () => {
    const log = new MemoryEventLog(100);
    const sub = log.subscribe({ filter: (e) => e.type === 'TASK' && e.taskId !== 'skip', maxQueue: 10 });
    for (const id of ['a', 'skip', 'b', 'c']) log.publish(task(id));
    const got = await take(sub, 3);
    expect(ids(got)).toEqual(['a', 'b', 'c']);
    const cursors = got.map((d) => (d.type === 'EVENT' ? d.envelope.cursor : ''));
    expect(new Set(cursors).size).toBe(3);
    await sub.return!();
    expect(log.subscriberCount).toBe(0);
  });

  it('replays after a cursor, says RESYNC_REQUIRED past its history or for another run, and refuses a malformed cursor', async () => {
    const log = new MemoryEventLog(100);
    const first = log.subscribe({ filter: all, maxQueue: 10 });
    log.publish(task('a'));
    const [a] = await take(first, 1);
    const cursor = a!.type === 'EVENT' ? a!.envelope.cursor : '';
    for (const id of ['b', 'c', 'd']) log.publish(task(id));
    const resumed = log.subscribe({ filter: all, after: cursor, maxQueue: 10 });
    expect(ids(await take(resumed, 3))).toEqual(['b', 'c', 'd']);

    for (let i = 0; i < 150; i++) log.publish(task(`x${i}`));
    const tooOld = log.subscribe({ filter: all, after: cursor, maxQueue: 10 });
    expect(ids(await take(tooOld, 1))).toEqual(['RESYNC_REQUIRED']);
    const otherRun = new MemoryEventLog(100).subscribe({ filter: all, after: cursor, maxQueue: 10 });
    expect(ids(await take(otherRun, 1))).toEqual(['RESYNC_REQUIRED']);

    expect(() => log.subscribe({ filter: all, after: 'garbage', maxQueue: 10 })).toThrow(/not an event cursor/);
    expect(() => log.subscribe({ filter: all, after: cursor.replace(/\.[0-9a-z]+$/, '.zzzzz'), maxQueue: 10 })).toThrow(
      /ahead/,
    );
  });

  it('cuts off a subscriber that falls too far behind instead of thinning its stream', async () => {
    const log = new MemoryEventLog(1000);
    const overflowed: SubscriberTooSlowError[] = [];
    const slow = log.subscribe({ filter: all, maxQueue: 5, onOverflow: (e) => overflowed.push(e) });
    const fast = log.subscribe({ filter: all, maxQueue: 1000 });
    for (let i = 0; i < 6; i++) log.publish(task(`e${i}`));
    expect(overflowed).toHaveLength(1);
    await expect(slow.next()).rejects.toBeInstanceOf(SubscriberTooSlowError);
    // The others are not affected.
    expect(ids(await take(fast, 6))).toEqual(['e0', 'e1', 'e2', 'e3', 'e4', 'e5']);
  });
});

import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { PlatformStream, type ReadEntry } from '../src/inventory/replication/platform-stream.js';
import type { GatewayEvent } from '../src/model/events.js';
import { encodeStreamCursor } from '../src/subscriptions/stream-cursor.js';
import { StreamEventLog } from '../src/subscriptions/stream-event-log.js';
import type { Delivery } from '../src/subscriptions/subscriber-queue.js';
import { type RedisServer, redisServer } from './helpers/redis-server.js';

// The event log of one instance among several, against a real redis-server:
// what a resuming client missed comes from the events this instance holds
// or, further back, from the platform's stream in Redis; a gap the stream
// no longer covers is told as RESYNC_REQUIRED.
let server: RedisServer;
let redis: Redis;
let stream: PlatformStream;
const ids: string[] = [];

const task = (taskId: string): GatewayEvent => ({ type: 'TASK', platformId: 'p1', taskId });
const taskIds = (ds: Delivery[]) =>
  ds.map((d) => (d.type === 'EVENT' && d.envelope.event.type === 'TASK' ? d.envelope.event.taskId : d.type));
const all = { filter: () => true, maxQueue: 100 };

async function take(it: AsyncIterableIterator<Delivery>, n: number): Promise<Delivery[]> {
  const out: Delivery[] = [];
  while (out.length < n) out.push((await it.next()).value as Delivery);
  return out;
}

function logStartingAt(entries: ReadEntry[]): StreamEventLog {
  const log = new StreamEventLog(
    {
      range: (_p, from, until) => stream.range(from, until, 1_000, true),
      trimmedAfter: (_p, after) => stream.trimmedAfter(after),
    },
    pino({ level: 'silent' }),
    100,
  );
  for (const e of entries) log.deliver('p1', e);
  return log;
}

beforeAll(async () => {
  server = await redisServer();
  redis = new Redis(server.url);
  stream = new PlatformStream(redis, 'p1', 'test:', 1_000);
  // Five entries; the third carries two events.
  for (const events of [['a'], ['b'], ['c1', 'c2'], ['d'], ['e']]) {
    ids.push(await stream.append({ v: 1, by: 'test', events: events.map(task) }));
  }
});

afterAll(async () => {
  redis?.disconnect();
  await server?.kill();
});

describe('the event log of an instance among several', () => {
  it('reads back from Redis what it does not hold, then what it holds, then live events, each once', async () => {
    const entries = await stream.range('0-0');
    // This instance started reading at the fourth entry.
    const log = logStartingAt(entries.slice(3));
    const after = encodeStreamCursor([['p1', { id: ids[0]!, index: Number.POSITIVE_INFINITY }]]);
    const sub = log.subscribe({ ...all, after });
    log.deliver('p1', { id: `${Date.now() + 10_000}-0`, entry: { v: 1, by: 'test', events: [task('live')] } });
    expect(taskIds(await take(sub, 6))).toEqual(['b', 'c1', 'c2', 'd', 'e', 'live']);
    await sub.return?.();
  });

  it('resumes inside an entry, after the event its cursor names', async () => {
    const log = logStartingAt((await stream.range('0-0')).slice(4));
    const after = encodeStreamCursor([['p1', { id: ids[2]!, index: 0 }]]);
    const sub = log.subscribe({ ...all, after });
    expect(taskIds(await take(sub, 3))).toEqual(['c2', 'd', 'e']);
    await sub.return?.();
  });

  it('skips live events a client got from an instance further along', async () => {
    const entries = await stream.range('0-0');
    const log = logStartingAt(entries.slice(0, 2));
    const sub = log.subscribe({
      ...all,
      after: encodeStreamCursor([['p1', { id: ids[3]!, index: Number.POSITIVE_INFINITY }]]),
    });
    for (const e of entries.slice(2)) log.deliver('p1', e);
    expect(taskIds(await take(sub, 1))).toEqual(['e']);
    await sub.return?.();
  });

  it('asks Redis when it has handed over nothing yet, and skips what its own reading brings again', async () => {
    const entries = await stream.range('0-0');
    const log = logStartingAt([]);
    const sub = log.subscribe({
      ...all,
      after: encodeStreamCursor([['p1', { id: ids[1]!, index: Number.POSITIVE_INFINITY }]]),
    });
    expect(taskIds(await take(sub, 3))).toEqual(['c1', 'c2', 'd']);
    // Its reader catches up later, from wherever it started.
    for (const e of entries) log.deliver('p1', e);
    log.deliver('p1', { id: `${Date.now() + 20_000}-0`, entry: { v: 1, by: 'test', events: [task('live')] } });
    expect(taskIds(await take(sub, 2))).toEqual(['e', 'live']);
    await sub.return?.();
  });

  it('tells a client whose missed events were capped away to read the state again', async () => {
    const entries = await stream.range('0-0');
    const log = logStartingAt(entries.slice(4));
    await redis.xtrim('test:{p1}:events', 'MAXLEN', 2);
    const sub = log.subscribe({
      ...all,
      after: encodeStreamCursor([['p1', { id: ids[0]!, index: Number.POSITIVE_INFINITY }]]),
    });
    expect(taskIds(await take(sub, 1))).toEqual(['RESYNC_REQUIRED']);
    await sub.return?.();
    // A cursor of a gateway that ran alone: well formed, of another log.
    const other = log.subscribe({ ...all, after: 'AbCdEfGh.1z' });
    expect(taskIds(await take(other, 1))).toEqual(['RESYNC_REQUIRED']);
    await other.return?.();
    for (const bad of ['s1.!!', 's1.' + Buffer.from('p1=12').toString('base64url'), 'nonsense']) {
      expect(() => log.subscribe({ ...all, after: bad })).toThrow(/not an event cursor/);
    }
    expect(log.subscriberCount).toBe(0);
  });
});

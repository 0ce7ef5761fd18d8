import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import type { Aggregate, HistoryRetention, MetricHistoryStore } from '../src/metrics/history-store.js';
import {
  MemoryMetricHistory,
  OBJECT_OVERHEAD_BYTES,
  RAW_SAMPLE_BYTES,
  ROLLUP_WINDOW_BYTES,
} from '../src/metrics/memory-history.js';
import { RAW_RECORD_BYTES, ROLLUP_CHUNK_WINDOWS } from '../src/metrics/packed-samples.js';
import { RAW_CHUNK_MS, RedisMetricHistory } from '../src/metrics/redis-history.js';
import { METRIC_FIELDS, type MetricField, type MetricSample, emptySample } from '../src/model/metrics.js';
import { type RedisServer, redisServer } from './helpers/redis-server.js';
import { type RedisClusterProcesses, redisCluster } from './helpers/redis-topologies.js';

// The metrics history the gateway records for platforms that keep none,
// in memory and in a real redis-server: both run the same behavioural
// suite, and the expected rollups are computed here, plainly, from the raw
// samples the store returns.

let server: RedisServer;
const clients: Redis[] = [];
let prefixes = 0;

beforeAll(async () => {
  server = await redisServer();
});

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await server?.kill();
});

function redisClient(): Redis {
  const c = new Redis(server.url);
  clients.push(c);
  return c;
}

const T0 = Date.UTC(2026, 0, 1); // on a whole hour
const SEC = 1_000;
const MIN = 60 * SEC;
const HOUR = 60 * MIN;
const SMALL: HistoryRetention = { rawSeconds: 600, rollupSeconds: 60, rollupRetentionSeconds: 1_800 };

/** A deterministic generator (mulberry32), so a failure can be run again. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function sample(timestamp: number, intervalSeconds: number, values: Partial<Record<MetricField, number | null>>) {
  return { ...emptySample(timestamp, intervalSeconds), ...values };
}

/** Every field random, a fifth of them null, at scales like the real ones. */
function randomSample(rnd: () => number, timestamp: number, intervalSeconds = 60): MetricSample {
  const s = emptySample(timestamp, intervalSeconds);
  for (const f of METRIC_FIELDS) {
    if (rnd() < 0.2) continue;
    s[f] = f.endsWith('Percent') ? rnd() * 100 : f === 'memoryUsedBytes' ? Math.round(rnd() * 2 ** 34) : rnd() * 1e8;
  }
  return s;
}

/**
 * A sample as a running VM gives them: every field, except the rates (all
 * but memory) of the first sample, which has no earlier counters to count from.
 */
function steadySample(rnd: () => number, timestamp: number, first: boolean): MetricSample {
  const s = emptySample(timestamp, 60);
  for (const f of METRIC_FIELDS) {
    if (f === 'memoryUsedBytes') s[f] = Math.round(rnd() * 2 ** 34);
    else if (f === 'memoryUsagePercent') s[f] = rnd() * 100;
    else if (!first) s[f] = f.endsWith('Percent') ? rnd() * 100 : rnd() * 1e8;
  }
  return s;
}

/** Equal to within 7 significant digits: the memory store keeps Float32. */
function expectClose(actual: number | null, expected: number | null, what: string) {
  if (expected === null) return expect(actual, what).toBeNull();
  expect(actual, what).not.toBeNull();
  expect(Math.abs((actual as number) - expected), what).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(expected)));
}

function expectSamples(actual: MetricSample[], expected: MetricSample[]) {
  expect(actual.map((s) => [s.timestamp, s.intervalSeconds])).toEqual(
    expected.map((s) => [s.timestamp, s.intervalSeconds]),
  );
  actual.forEach((a, i) => {
    expect(a.raw).toEqual({});
    for (const f of METRIC_FIELDS) expectClose(a[f], expected[i]![f], `${f} at ${a.timestamp}`);
  });
}

/**
 * The points a rollup read should return, computed from raw samples
 * without the stores' code: per bucket (end - length, end] aligned to the
 * epoch, the plain average or maximum of every non-null value.
 */
function expectedPoints(raw: MetricSample[], bucketSeconds: number, aggregate: Aggregate): MetricSample[] {
  const ms = bucketSeconds * SEC;
  const buckets = new Map<number, MetricSample[]>();
  for (const s of raw) {
    const end = Math.ceil(s.timestamp / ms) * ms;
    buckets.set(end, [...(buckets.get(end) ?? []), s]);
  }
  return [...buckets.entries()]
    .sort(([a], [b]) => a - b)
    .map(([end, samples]) => {
      const point = emptySample(end, bucketSeconds);
      for (const f of METRIC_FIELDS) {
        const values = samples.map((s) => s[f]).filter((v): v is number => v !== null);
        if (values.length === 0) continue;
        point[f] = aggregate === 'MAXIMUM' ? Math.max(...values) : values.reduce((a, b) => a + b, 0) / values.length;
      }
      return point;
    });
}

interface StoreKind {
  name: string;
  open(retention?: HistoryRetention): MetricHistoryStore;
}

const KINDS: StoreKind[] = [
  { name: 'memory', open: (retention) => new MemoryMetricHistory({ retention }) },
  {
    name: 'Redis',
    open: (retention) => new RedisMetricHistory(redisClient(), `test${++prefixes}:`, { retention }),
  },
];

/** Records samplings one after the other: each a map of native ID -> sample. */
async function recordAll(store: MetricHistoryStore, samplings: Map<string, MetricSample>[], platform = 'kvm') {
  for (const s of samplings) await store.record(platform, 'VM', s);
}

describe.each(KINDS)('the $name metrics history', ({ open }) => {
  it('gives raw samples back as recorded, nulls included, within an inclusive range', async () => {
    const store = open();
    const a1 = sample(T0 + 10 * SEC, 60, { cpuUsagePercent: 12.5, memoryUsedBytes: 2 ** 30, diskReadIops: 0 });
    const a2 = sample(T0 + 70 * SEC, 60, { cpuUsagePercent: 99.75, networkTxBytesPerSecond: 1_234_567.125 });
    const b1 = sample(T0 + 10 * SEC, 60, { memoryUsagePercent: 40 });
    // Platform-only counters are not kept.
    a1.raw = { 'cpu.time': 123 };
    await store.record(
      'kvm',
      'VM',
      new Map([
        ['a', a1],
        ['b', b1],
      ]),
    );
    await store.record('kvm', 'VM', new Map([['a', a2]]));
    await store.record('kvm', 'HOST', new Map([['a', sample(T0 + 10 * SEC, 60, { cpuUsagePercent: 1 })]]));

    expectSamples(await store.read('kvm', 'VM', 'a', T0, T0 + HOUR, null, 'AVERAGE'), [{ ...a1, raw: {} }, a2]);
    expectSamples(await store.read('kvm', 'VM', 'b', T0, T0 + HOUR, null, 'AVERAGE'), [b1]);
    expectSamples(await store.read('kvm', 'VM', 'a', T0 + 70 * SEC, T0 + 70 * SEC, null, 'AVERAGE'), [a2]);
    expectSamples(await store.read('kvm', 'VM', 'a', T0 + 10 * SEC, T0 + 69 * SEC, 60, 'MAXIMUM'), [
      { ...a1, raw: {} },
    ]);
    expect(
      (await store.read('kvm', 'HOST', 'a', T0, T0 + HOUR, null, 'AVERAGE')).map((s) => s.cpuUsagePercent),
    ).toEqual([1]);
    expect(await store.read('kvm', 'VM', 'nobody', T0, T0 + HOUR, null, 'AVERAGE')).toEqual([]);
    expect(await store.read('other', 'VM', 'a', T0, T0 + HOUR, null, 'AVERAGE')).toEqual([]);
    expect(await store.kept('kvm', 'VM', 'a')).toEqual({
      rawIntervalSeconds: 60,
      rawFrom: T0 + 10 * SEC,
      rollupSeconds: 300,
      rollupFrom: null,
    });
    await store.close();
  });

  it('rolls up every closed window into the average and maximum of its raw samples', async () => {
    const store = open();
    const rnd = random(1);
    const samplings: Map<string, MetricSample>[] = [];
    let newest = 0;
    for (let k = 0; k < 31; k++) {
      const ts = T0 + 13 * SEC + k * MIN + Math.floor(rnd() * 2_000);
      newest = ts;
      const s = new Map<string, MetricSample>();
      for (const id of ['a', 'b', 'c', 'd']) if (rnd() < 0.85) s.set(id, randomSample(rnd, ts));
      // One that goes away in the middle of a window: that window still closes.
      if (k < 12) s.set('gone', randomSample(rnd, ts));
      samplings.push(s);
    }
    await recordAll(store, samplings);

    const lastClosed = Math.floor(newest / (5 * MIN)) * 5 * MIN;
    for (const id of ['a', 'b', 'c', 'd', 'gone']) {
      const recorded = samplings.flatMap((s) => (s.has(id) ? [s.get(id)!] : []));
      const raw = await store.read('kvm', 'VM', id, T0, T0 + HOUR, null, 'AVERAGE');
      expectSamples(raw, recorded);
      const closed = raw.filter((s) => s.timestamp <= lastClosed);
      for (const aggregate of ['AVERAGE', 'MAXIMUM'] as const) {
        const points = await store.read('kvm', 'VM', id, T0, T0 + HOUR, 300, aggregate);
        expect(points.length, id).toBeGreaterThanOrEqual(id === 'gone' ? 3 : 6);
        expectSamples(points, expectedPoints(closed, 300, aggregate));
        expect((await store.kept('kvm', 'VM', id)).rollupFrom).toBe(points[0]!.timestamp);
      }
    }
    await store.close();
  });

  it('re-aggregates rollups to an hour (and to 15 minutes) weighted by how many values each window had', async () => {
    const store = open();
    const rnd = random(2);
    const samplings: Map<string, MetricSample>[] = [];
    let newest = 0;
    for (let k = 0; k < 150; k++) {
      const ts = T0 + 5 * SEC + k * MIN;
      newest = ts;
      const s = new Map<string, MetricSample>();
      for (const id of ['a', 'b', 'c']) s.set(id, randomSample(rnd, ts));
      // One value in the first window, five in the second: the hour's average is (100 + 5 x 10) / 6, not (100 + 10) / 2.
      if (k < 10) s.set('w', sample(ts, 60, { cpuUsagePercent: k === 0 ? 100 : k < 5 ? null : 10 }));
      samplings.push(s);
    }
    await recordAll(store, samplings);
    const lastClosed = Math.floor(newest / (5 * MIN)) * 5 * MIN;

    for (const id of ['a', 'b', 'c', 'w']) {
      const raw = await store.read('kvm', 'VM', id, T0, T0 + 3 * HOUR, null, 'AVERAGE');
      const closed = raw.filter((s) => s.timestamp <= lastClosed);
      for (const aggregate of ['AVERAGE', 'MAXIMUM'] as const) {
        for (const bucket of [900, 3600]) {
          // The hour still under way is there too, from the windows closed in it.
          const points = await store.read('kvm', 'VM', id, T0, T0 + 3 * HOUR, bucket, aggregate);
          expectSamples(points, expectedPoints(closed, bucket, aggregate));
        }
      }
    }
    const hour = await store.read('kvm', 'VM', 'w', T0, T0 + HOUR, 3600, 'AVERAGE');
    expectClose(hour[0]!.cpuUsagePercent, 150 / 6, 'weighted average');
    // Within the range asked only: buckets that end from..to.
    expect((await store.read('kvm', 'VM', 'a', T0 + 1, T0 + 2 * HOUR - 1, 3600, 'AVERAGE')).length).toBe(1);
    await expect(store.read('kvm', 'VM', 'a', T0, T0 + HOUR, 450, 'AVERAGE')).rejects.toThrow(RangeError);
    await store.close();
  });

  it('keeps raw samples and rollups only as long as retention says, and forgets objects that went away', async () => {
    const store = open(SMALL);
    const rnd = random(3);
    let newest = 0;
    for (let k = 0; k < 720; k++) {
      newest = T0 + 3 * SEC + k * 10 * SEC;
      const s = new Map([
        ['a', randomSample(rnd, newest, 10)],
        ['b', randomSample(rnd, newest, 10)],
      ]);
      if (k < 30) s.set('gone', randomSample(rnd, newest, 10));
      await store.record('kvm', 'VM', s);
    }
    const raw = await store.read('kvm', 'VM', 'a', 0, newest, null, 'AVERAGE');
    // Trimmed once per window: at most a window more than retention.
    expect(raw[0]!.timestamp).toBeGreaterThanOrEqual(newest - (600 + 60) * SEC);
    expect(raw.at(-1)!.timestamp).toBe(newest);
    const rollups = await store.read('kvm', 'VM', 'a', 0, newest, 60, 'AVERAGE');
    expect(rollups[0]!.timestamp).toBeGreaterThanOrEqual(newest - (1_800 + 60) * SEC);
    expect(rollups.length).toBeGreaterThanOrEqual(29);
    expect(rollups.length).toBeLessThanOrEqual(31);
    const kept = await store.kept('kvm', 'VM', 'a');
    expect(kept).toEqual({
      rawIntervalSeconds: 10,
      rawFrom: raw[0]!.timestamp,
      rollupSeconds: 60,
      rollupFrom: rollups[0]!.timestamp,
    });
    expect(await store.kept('kvm', 'VM', 'gone')).toEqual({
      rawIntervalSeconds: null,
      rawFrom: null,
      rollupSeconds: 60,
      rollupFrom: null,
    });

    // A late sample from before raw retention: its window's rollup came from samples trimmed since, and stays.
    const late = newest - 900 * SEC - 3 * SEC;
    const window = (await store.read('kvm', 'VM', 'a', late, late + 60 * SEC, 60, 'MAXIMUM'))[0]!;
    await store.record('kvm', 'VM', new Map([['a', sample(late, 10, { cpuUsagePercent: 1_000 })]]));
    expectSamples(await store.read('kvm', 'VM', 'a', late, late + 60 * SEC, 60, 'MAXIMUM'), [window]);
    await store.close();
  });

  it('puts a late sample in time order, and computes its closed window again', async () => {
    const store = open();
    const at = (seconds: number) => T0 + seconds * SEC;
    // 900 s ends a 15-minute span, 910 s starts the next.
    for (const t of [10, 130, 250, 370, 900, 910])
      await store.record('kvm', 'VM', new Map([['a', sample(at(t), 60, { cpuUsagePercent: t })]]));
    // 190 s comes after the window (0, 300 s] closed.
    await store.record('kvm', 'VM', new Map([['a', sample(at(190), 60, { cpuUsagePercent: 1_000 })]]));
    const raw = await store.read('kvm', 'VM', 'a', T0, T0 + HOUR, null, 'AVERAGE');
    expect(raw.map((s) => [s.timestamp, s.cpuUsagePercent])).toEqual(
      [10, 130, 190, 250, 370, 900, 910].map((t) => [at(t), t === 190 ? 1_000 : t]),
    );
    const windows = await store.read('kvm', 'VM', 'a', T0, T0 + HOUR, 300, 'AVERAGE');
    expect(windows.map((s) => [s.timestamp, s.cpuUsagePercent])).toEqual([
      [at(300), (10 + 130 + 1_000 + 250) / 4],
      [at(600), 370],
      [at(900), 900],
    ]);
    await store.close();
  });

  it('runs concurrent recordings of a platform one after the other', async () => {
    const rnd = random(9);
    const samplings = Array.from({ length: 12 }, (_, k) => {
      const ts = T0 + 30 * SEC + k * MIN;
      return new Map(['a', 'b', 'c'].map((id) => [id, randomSample(rnd, ts)] as const));
    });
    const store = open();
    await Promise.all(samplings.map((s) => store.record('kvm', 'VM', s)));
    const raw = await store.read('kvm', 'VM', 'b', T0, T0 + HOUR, null, 'AVERAGE');
    expectSamples(
      raw,
      samplings.map((s) => s.get('b')!),
    );
    expectSamples(
      await store.read('kvm', 'VM', 'b', T0, T0 + HOUR, 300, 'AVERAGE'),
      expectedPoints(
        raw.filter((s) => s.timestamp <= T0 + 10 * MIN),
        300,
        'AVERAGE',
      ),
    );
    await store.close();
  });

  it('records a sampling again without change, and computes a closed window again when one of its samples changes', async () => {
    const store = open();
    const rnd = random(4);
    const samplings = Array.from({ length: 12 }, (_, k) => {
      const ts = T0 + 30 * SEC + k * MIN;
      return new Map([
        ['a', randomSample(rnd, ts)],
        ['b', randomSample(rnd, ts)],
      ]);
    });
    await recordAll(store, samplings);
    const rawBefore = await store.read('kvm', 'VM', 'a', T0, T0 + HOUR, null, 'AVERAGE');
    const rollupsBefore = await store.read('kvm', 'VM', 'a', T0, T0 + HOUR, 300, 'MAXIMUM');
    // The same samplings again, in order and the newest alone.
    await recordAll(store, samplings);
    await store.record('kvm', 'VM', samplings[11]!);
    expectSamples(await store.read('kvm', 'VM', 'a', T0, T0 + HOUR, null, 'AVERAGE'), rawBefore);
    expectSamples(await store.read('kvm', 'VM', 'a', T0, T0 + HOUR, 300, 'MAXIMUM'), rollupsBefore);

    // A sample of the first (closed) window recorded again with other values.
    const changed = { ...samplings[1]!.get('a')!, cpuUsagePercent: 1_000 };
    await store.record('kvm', 'VM', new Map([['a', changed]]));
    const raw = await store.read('kvm', 'VM', 'a', T0, T0 + HOUR, null, 'AVERAGE');
    expect(raw.length).toBe(12);
    expectSamples(
      await store.read('kvm', 'VM', 'a', T0, T0 + HOUR, 300, 'MAXIMUM'),
      expectedPoints(
        raw.filter((s) => s.timestamp <= T0 + 10 * MIN),
        300,
        'MAXIMUM',
      ),
    );
    expect((await store.read('kvm', 'VM', 'a', T0, T0 + HOUR, 300, 'MAXIMUM'))[0]!.cpuUsagePercent).toBe(1_000);
    await store.close();
  });
});

describe('the Redis metrics history', () => {
  it('survives a gateway restart, also with a window half recorded before it and finished after', async () => {
    const prefix = `restart${++prefixes}:`;
    const rnd = random(5);
    const samplings = Array.from({ length: 13 }, (_, k) => {
      const ts = T0 + 20 * SEC + k * MIN;
      return new Map([
        ['a', randomSample(rnd, ts)],
        ['b', randomSample(rnd, ts)],
      ]);
    });
    // The first instance records up to 7:20, in the middle of the window (5:00, 10:00], and goes.
    const first = redisClient();
    const before = new RedisMetricHistory(first, prefix);
    await recordAll(before, samplings.slice(0, 8));
    await before.close();
    first.disconnect();
    // Another (or the same, restarted) takes over and records the rest.
    const after = new RedisMetricHistory(redisClient(), prefix);
    await recordAll(after, samplings.slice(8));
    for (const id of ['a', 'b']) {
      const raw = await after.read('kvm', 'VM', id, T0, T0 + HOUR, null, 'AVERAGE');
      expectSamples(
        raw,
        samplings.map((s) => s.get(id)!),
      );
      const points = await after.read('kvm', 'VM', id, T0, T0 + HOUR, 300, 'AVERAGE');
      expect(points.map((p) => p.timestamp)).toEqual([T0 + 5 * MIN, T0 + 10 * MIN]);
      expectSamples(
        points,
        expectedPoints(
          raw.filter((s) => s.timestamp <= T0 + 10 * MIN),
          300,
          'AVERAGE',
        ),
      );
    }
    await after.close();
  });

  it('records 5,000 objects in one round trip, and closes their windows in three more', async () => {
    const client = redisClient();
    await client.ping();
    const store = new RedisMetricHistory(client, `bulk${++prefixes}:`);
    const rnd = random(6);
    const sampling = (ts: number) =>
      new Map(Array.from({ length: 5_000 }, (_, i) => [`vm-${i}`, randomSample(rnd, ts)] as const));
    // The first recording closes what it can (nothing, yet) to learn where it stands.
    await store.record('vc', 'VM', sampling(T0 + 10 * SEC));
    const writes = vi.spyOn(client.stream, 'write');
    const second = sampling(T0 + 70 * SEC);
    await store.record('vc', 'VM', second);
    expect(writes).toHaveBeenCalledTimes(1);
    writes.mockClear();
    const third = sampling(T0 + 5 * MIN + 10 * SEC);
    await store.record('vc', 'VM', third);
    expect(writes).toHaveBeenCalledTimes(4);
    writes.mockRestore();
    for (const id of ['vm-0', 'vm-4999']) {
      const raw = await store.read('vc', 'VM', id, T0, T0 + HOUR, null, 'AVERAGE');
      expect(raw.length).toBe(3);
      expectSamples(
        await store.read('vc', 'VM', id, T0, T0 + HOUR, 300, 'MAXIMUM'),
        expectedPoints(raw.slice(0, 2), 300, 'MAXIMUM'),
      );
    }
    // Every key of the platform under its hash tag, each with a TTL: per object a raw chunk, a rollup chunk and
    // (where a field had values in some of a window's samples only, as random nulls make likely) a counts entry.
    const base = `bulk${prefixes}:{vc}:history:VM:`;
    const keys = await client.keys(`bulk${prefixes}:*`);
    expect(keys.every((k) => k.startsWith(base))).toBe(true);
    const family = (name: string) => keys.filter((k) => k.startsWith(`${base}${name}:`));
    expect(family('raw').length).toBe(5_000);
    expect(family('rollup').length).toBe(5_000);
    expect(family('counts').length).toBeGreaterThan(0);
    expect(keys.length).toBe(2 * 5_000 + family('counts').length + 3);
    for (const k of [family('raw')[0]!, family('rollup')[0]!, family('counts')[0]!, `${base}objects`, `${base}closed`])
      expect(await client.pttl(k)).toBeGreaterThan(0);
    await store.close();
  });

  it('keeps the full retention of an object in well under a megabyte, as Redis counts its memory', async () => {
    const client = redisClient();
    const prefix = `size${++prefixes}:`;
    const store = new RedisMetricHistory(client, prefix);
    const rnd = random(11);
    // Native IDs as long as libvirt's UUIDs: key names are part of what a chunk costs.
    const ids = Array.from({ length: 10 }, (_, i) => `6f1c2a4e-0000-4000-8000-${String(i).padStart(12, '0')}`);
    // From the start of a rollup chunk, six chunks of 5-minute windows (24 h 30 min) at 60 s: a day of raw
    // samples, and rollup chunks all full.
    const chunkMs = ROLLUP_CHUNK_WINDOWS * 5 * MIN;
    const start = Math.ceil(T0 / chunkMs) * chunkMs;
    const windows = 6 * ROLLUP_CHUNK_WINDOWS;
    for (let k = 0; k <= windows * 5; k++) {
      const ts = start + 30 * SEC + k * MIN;
      await store.record('kvm', 'VM', new Map(ids.map((id) => [id, steadySample(rnd, ts, k === 0)] as const)));
    }
    const points = await store.read('kvm', 'VM', ids[3]!, start, start + 2 * 86_400 * SEC, 300, 'AVERAGE');
    expect(points.length).toBe(windows);

    const base = `${prefix}{kvm}:history:VM:`;
    const total = async (commands: string[][]) =>
      ((await client.pipeline(commands).exec()) ?? []).reduce((sum, [err, value]) => {
        if (err) throw err;
        return sum + Number(value);
      }, 0);
    const usage = (keys: string[]) => total(keys.map((k) => ['memory', 'usage', k, 'samples', '0']));
    const [raw = [], rollup = [], counts = []] = await Promise.all(
      ['raw', 'rollup', 'counts'].map((f) => client.keys(`${base}${f}:*`)),
    );
    const indexes = ['objects', 'rolled', 'closed'].map((k) => `${base}${k}`);
    expect(raw.length + rollup.length + counts.length + 3).toBe((await client.keys(`${prefix}*`)).length);
    expect(rollup.length).toBe(6 * ids.length);
    // Only the first window of each object has fields with values in some of its samples (no rates yet).
    expect(counts.length).toBe(ids.length);

    const samples = (await total(raw.map((k) => ['strlen', k]))) / RAW_RECORD_BYTES;
    const perSample = (await usage(raw)) / samples;
    const perWindow = ((await usage(rollup)) + (await usage(counts))) / (ids.length * windows);
    const perObject = 1_440 * perSample + 8_640 * perWindow + (await usage(indexes)) / ids.length;
    // The layout before, measured so: 204 bytes a sample, 325 a window, 3.1 MB an object; this one with Redis 7.0:
    // 59 bytes, 87 bytes, 0.84 MB.
    expect(perSample).toBeLessThanOrEqual(64);
    expect(perWindow).toBeLessThanOrEqual(90);
    expect(perObject).toBeLessThanOrEqual(1_200_000);
    expect(perObject).toBeLessThanOrEqual(900_000);
    await store.close();
  });

  it('deletes what is past retention, and every key of an object once nothing of it is kept', async () => {
    const client = redisClient();
    const prefix = `trim${++prefixes}:`;
    const store = new RedisMetricHistory(client, prefix, { retention: SMALL });
    const rnd = random(12);
    for (let k = 0; k < 3 * 360; k++) {
      const ts = T0 + 5 * SEC + k * 10 * SEC;
      const s = new Map<string, MetricSample>(
        Array.from({ length: 10 }, (_, i) => [`vm-${i}`, randomSample(rnd, ts, 10)]),
      );
      // Five that go away after an hour.
      if (k < 360) for (let i = 0; i < 5; i++) s.set(`gone-${i}`, randomSample(rnd, ts, 10));
      await store.record('kvm', 'VM', s);
    }
    const base = `${prefix}{kvm}:history:VM:`;
    const keys = await client.keys(`${prefix}*`);
    // Gone for two hours, longer than either retention (10 min raw, 30 min rollups): nothing of them is left.
    expect(keys.filter((k) => k.includes(':gone-'))).toEqual([]);
    expect(await client.zcard(`${base}objects`)).toBe(10);
    expect(await client.zcard(`${base}rolled`)).toBe(10);
    // Of the others, the chunks that hold what retention keeps: raw samples of 10 minutes and a window at most
    // (two 15-minute chunks), rollups of 30 minutes and a window (two chunks of 49 one-minute windows).
    expect(RAW_CHUNK_MS).toBe(15 * MIN);
    for (const family of ['raw', 'rollup', 'counts']) {
      for (let i = 0; i < 10; i++) {
        const held = keys.filter((k) => k.startsWith(`${base}${family}:vm-${i}:`));
        expect(held.length, `${family} of vm-${i}`).toBeLessThanOrEqual(2);
      }
    }
    await store.close();
  });
});

describe('the Redis metrics history in a Cluster', () => {
  let cluster: RedisClusterProcesses | undefined;
  let client: Cluster | undefined;
  afterAll(async () => {
    client?.disconnect();
    await cluster?.stop();
  });

  it('keeps each platform on the node of its hash tag, where one MULTI holds all its keys', async () => {
    cluster = await redisCluster();
    client = new Cluster(cluster.nodes);
    const store = new RedisMetricHistory(client, 'c:');
    const rnd = random(10);
    // Platforms whose hash tags fall on different nodes, 50 objects each.
    const platforms = ['kvm-1', 'kvm-2', 'kvm-3', 'kvm-4'];
    for (let k = 0; k < 12; k++) {
      const ts = T0 + 30 * SEC + k * MIN;
      await Promise.all(
        platforms.map((p) =>
          store.record(
            p,
            'VM',
            new Map(Array.from({ length: 50 }, (_, i) => [`vm-${i}`, randomSample(rnd, ts)] as const)),
          ),
        ),
      );
    }
    const holding = await Promise.all(cluster.nodes.map(async (n) => Number(await cluster!.command(n, 'DBSIZE'))));
    expect(holding.filter((n) => n > 0).length).toBe(cluster.nodes.length);
    for (const p of platforms) {
      const raw = await store.read(p, 'VM', 'vm-7', T0, T0 + HOUR, null, 'AVERAGE');
      expect(raw.length).toBe(12);
      expectSamples(
        await store.read(p, 'VM', 'vm-7', T0, T0 + HOUR, 300, 'MAXIMUM'),
        expectedPoints(
          raw.filter((s) => s.timestamp <= T0 + 10 * MIN),
          300,
          'MAXIMUM',
        ),
      );
    }
    await store.close();
  });
});

describe('the memory metrics history', () => {
  it('stays within what retention needs per object, however long it records', async () => {
    const store = new MemoryMetricHistory({ retention: SMALL });
    const rnd = random(7);
    // Per object at most: raw 600 s / 10 s + 2 samples of 52 bytes, 1800 s / 60 s + 1 rollups of 110 bytes.
    const perObject = OBJECT_OVERHEAD_BYTES + 62 * RAW_SAMPLE_BYTES + 31 * ROLLUP_WINDOW_BYTES;
    let most = 0;
    let newest = 0;
    for (let k = 0; k < 3 * 360; k++) {
      newest = T0 + k * 10 * SEC;
      const s = new Map(Array.from({ length: 50 }, (_, i) => [`vm-${i}`, randomSample(rnd, newest, 10)] as const));
      await store.record('kvm', 'VM', s);
      most = Math.max(most, store.bytes());
    }
    expect(most).toBeLessThanOrEqual(50 * perObject);
    // Those objects go away; one other records on for longer than retention: what they held is given back.
    for (let k = 1; k <= 200; k++) {
      await store.record('kvm', 'VM', new Map([['new', randomSample(rnd, newest + k * 10 * SEC, 10)]]));
    }
    expect(store.bytes()).toBeLessThanOrEqual(perObject);
    await store.close();
    expect(store.bytes()).toBe(0);
  });

  it('holds a day of thousands of objects compactly, and no more than maxBytes', async () => {
    const store = new MemoryMetricHistory();
    const rnd = random(8);
    for (let k = 0; k < 1_440; k++) {
      const ts = T0 + k * MIN;
      await store.record(
        'kvm',
        'VM',
        new Map(Array.from({ length: 20 }, (_, i) => [`vm-${i}`, randomSample(rnd, ts)])),
      );
    }
    // A day at 60 s: 1,440 raw samples (52 bytes) and 288 rollups (110 bytes, in a ring of 512 while it grows).
    const perObjectDay = store.bytes() / 20;
    expect(RAW_SAMPLE_BYTES).toBe(52);
    expect(ROLLUP_WINDOW_BYTES).toBe(110);
    expect(perObjectDay).toBeLessThanOrEqual(
      OBJECT_OVERHEAD_BYTES + 1_442 * RAW_SAMPLE_BYTES + 512 * ROLLUP_WINDOW_BYTES,
    );
    await store.close();

    const small = new MemoryMetricHistory({ retention: SMALL, maxBytes: 100_000 });
    let newest = 0;
    for (let k = 0; k < 360; k++) {
      newest = T0 + k * 10 * SEC;
      const s = new Map(Array.from({ length: 100 }, (_, i) => [`vm-${i}`, randomSample(rnd, newest, 10)] as const));
      await small.record('kvm', 'VM', s);
      expect(small.bytes()).toBeLessThanOrEqual(100_000);
    }
    // Full: histories shorter than retention (600 s raw), or not kept at all.
    const kept = await small.kept('kvm', 'VM', 'vm-0');
    expect(kept.rawFrom).toBeGreaterThan(newest - 600 * SEC);
    expect((await small.kept('kvm', 'VM', 'vm-99')).rawFrom).toBeNull();
  });
});

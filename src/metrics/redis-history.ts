import type { ChainableCommander } from 'ioredis';

import type { MetricEntityKind, MetricSample } from '../model/metrics.js';
import type { RedisClient } from '../state/redis.js';
import {
  type Aggregate,
  DEFAULT_RETENTION,
  type HistoryExtent,
  type HistoryRetention,
  type MetricHistoryStore,
  checkRetention,
} from './history-store.js';
import {
  FIELD_COUNT,
  type RawPoint,
  type Rollup,
  bucketRange,
  checkSample,
  pointSample,
  readPlan,
  reaggregate,
  rollupSample,
  rollupWindows,
  sampleValues,
  trimDue,
  windowsToClose,
} from './rollup.js';

// The metrics history in Redis: it survives gateway restarts, every
// instance reads it, and whichever instance holds a platform's lease
// records it. Keys (P = the configured key prefix, K = VM | HOST):
//
//   P{platformId}:history:K:raw:<nativeId>     sorted set, score = timestamp (ms),
//       member "timestamp,intervalSeconds,v1,…,v10" (METRIC_FIELDS order, empty for null);
//       the timestamp makes members unique, so equal values at two times are two members
//   P{platformId}:history:K:rollup:<nativeId>  sorted set, score = window end (ms),
//       member "end,samples,avg1,max1,count1,…" (avg and max empty where a field had no
//       value; count empty where it equals samples, as it mostly does)
//   P{platformId}:history:K:objects            sorted set: native ID by its newest sample's time,
//       so a closing window finds every object with samples in it, those gone since too
//   P{platformId}:history:K:rolled             sorted set: native ID by its newest rollup's end,
//       so the rollups of objects gone for longer than retention are deleted
//   P{platformId}:history:K:closed             the end of the last window closed (ms)
//
// Every key of a platform carries the hash tag {platformId}: in a Cluster
// they live on one node, so one pipeline or MULTI may touch them all.
// Every key has a TTL a little longer than what it keeps, renewed as it is
// written: a backstop, so that nothing stays when a platform is no longer
// recorded. Needs Redis 6.2 or later (ZADD GT).
//
// Round trips: a record() that closes no window is one MULTI (5,000 objects
// or one); one that closes windows (once per window) adds three: the
// object indexes, the raw samples of the windows (one pipeline for all
// objects), and the rollups with the trimming (one MULTI). Raw samples and
// rollups are trimmed when a window closes, once per hundredth of their
// retention (so a day of raw samples reaches back up to 15 minutes more).
//
// Numbers are written with 7 significant digits, as the memory store keeps
// them. Measured with Redis 7.0 (MEMORY USAGE), ten fields of 4-8 digits:
// a raw sample takes 201 bytes (its member is about 95, the rest is the
// sorted set's skiplist and dictionary), a rollup window 314 bytes. At 60 s,
// per object: a day of raw samples 289 KB, a day of rollups 90 KB; full
// retention (a day raw, 30 days of rollups) about 3 MB.

export interface RedisHistoryOptions {
  retention?: HistoryRetention;
}

export class RedisMetricHistory implements MetricHistoryStore {
  readonly retention: HistoryRetention;
  private readonly queue = new KeyedQueue();
  private readonly rawMs: number;
  private readonly windowMs: number;
  private readonly rollupMs: number;

  constructor(
    private readonly redis: RedisClient,
    /** The configured key prefix (`redis.keyPrefix`). */
    private readonly prefix: string,
    options: RedisHistoryOptions = {},
  ) {
    this.retention = options.retention ?? DEFAULT_RETENTION;
    checkRetention(this.retention);
    this.rawMs = this.retention.rawSeconds * 1000;
    this.windowMs = this.retention.rollupSeconds * 1000;
    this.rollupMs = this.retention.rollupRetentionSeconds * 1000;
  }

  record(platformId: string, kind: MetricEntityKind, samples: ReadonlyMap<string, MetricSample>): Promise<void> {
    if (samples.size === 0) return Promise.resolve();
    for (const [id, s] of samples) checkSample(id, s);
    return this.queue.run(`${kind}\u0000${platformId}`, () => this.write(this.keys(platformId, kind), samples));
  }

  private async write(keys: SeriesKeys, samples: ReadonlyMap<string, MetricSample>): Promise<void> {
    let newest = Number.NEGATIVE_INFINITY;
    let oldest = Number.POSITIVE_INFINITY;
    const tx = this.redis.multi();
    const index: (string | number)[] = [];
    for (const [id, sample] of samples) {
      const ts = sample.timestamp;
      newest = Math.max(newest, ts);
      oldest = Math.min(oldest, ts);
      const key = keys.raw(id);
      // Replaces a sample of the same time, so recording a sampling again changes nothing.
      tx.zremrangebyscore(key, ts, ts)
        .zadd(key, ts, encodeRaw(sample))
        .pexpire(key, this.rawMs + this.windowMs);
      index.push(ts, id);
    }
    tx.zadd(keys.objects, 'GT', ...index).pexpire(keys.objects, this.rollupMs);
    tx.get(keys.closed);
    const replies = await exec(tx);
    const marker = replies[replies.length - 1];
    const closedEnd = typeof marker === 'string' ? Number(marker) : null;
    const range = windowsToClose(closedEnd, oldest, newest, this.windowMs, this.rawMs);
    if (range) await this.closeWindows(keys, range.firstEnd, range.lastEnd, newest, closedEnd);
  }

  /**
   * Computes the windows ending firstEnd..lastEnd of every object with raw
   * samples in them, from the raw samples in Redis (those another instance
   * recorded too), stores them in place of any computed before, and trims
   * what is past retention.
   */
  private async closeWindows(
    keys: SeriesKeys,
    firstEnd: number,
    lastEnd: number,
    newest: number,
    closedEnd: number | null,
  ): Promise<void> {
    const start = firstEnd - this.windowMs;
    const rawCutoff = newest - this.rawMs;
    const rollupCutoff = newest - this.rollupMs;
    const [ids, rawGone, rollupsGone] = (await exec(
      this.redis
        .pipeline()
        .zrangebyscore(keys.objects, `(${start}`, '+inf')
        .zrangebyscore(keys.objects, '-inf', `(${rawCutoff}`)
        .zrangebyscore(keys.rolled, '-inf', `(${rollupCutoff}`),
    )) as [string[], string[], string[]];
    const read = this.redis.pipeline();
    for (const id of ids) read.zrangebyscore(keys.raw(id), `(${start}`, lastEnd);
    const raws = ids.length > 0 ? await exec(read) : [];
    // Rollups to replace only when windows are computed again; trimming once per hundredth of retention.
    const replace = closedEnd === null || firstEnd <= closedEnd;
    const trimRaw = trimDue(closedEnd, lastEnd, this.windowMs, this.rawMs);
    const trimRollups = trimDue(closedEnd, lastEnd, this.windowMs, this.rollupMs);
    const tx = this.redis.multi();
    const rolled: (string | number)[] = [];
    ids.forEach((id, i) => {
      const members = raws[i] as string[];
      const rollups = rollupWindows(members.map(decodeRaw), this.windowMs, firstEnd, lastEnd);
      const key = keys.rollup(id);
      if (replace) tx.zremrangebyscore(key, firstEnd, lastEnd);
      if (rollups.length > 0) {
        tx.zadd(key, ...rollups.flatMap((r) => [r.end, encodeRollup(r)])).pexpire(key, this.rollupMs + this.windowMs);
        rolled.push(rollups[rollups.length - 1]!.end, id);
      }
      if (trimRollups) tx.zremrangebyscore(key, '-inf', `(${rollupCutoff}`);
      if (trimRaw) tx.zremrangebyscore(keys.raw(id), '-inf', `(${rawCutoff}`);
    });
    // Objects that stopped reporting: nothing of theirs is within retention any more.
    if (rawGone.length > 0) tx.del(...rawGone.map(keys.raw)).zrem(keys.objects, ...rawGone);
    if (rollupsGone.length > 0) tx.del(...rollupsGone.map(keys.rollup)).zrem(keys.rolled, ...rollupsGone);
    if (rolled.length > 0) tx.zadd(keys.rolled, 'GT', ...rolled).pexpire(keys.rolled, this.rollupMs);
    tx.set(keys.closed, String(Math.max(lastEnd, closedEnd ?? lastEnd)), 'PX', this.rollupMs);
    await exec(tx);
  }

  async read(
    platformId: string,
    kind: MetricEntityKind,
    nativeId: string,
    from: number,
    to: number,
    resolutionSeconds: number | null,
    aggregate: Aggregate,
  ): Promise<MetricSample[]> {
    const keys = this.keys(platformId, kind);
    const rawKey = keys.raw(nativeId);
    if (resolutionSeconds === null) return (await this.redis.zrangebyscore(rawKey, from, to)).map(rawSample);
    // The raw interval decides between raw samples and rollups: ask for it and, in case, the rollups at once.
    const bucketMs = resolutionSeconds * 1000;
    const range = bucketRange(from, to, bucketMs);
    const rollupReadable = resolutionSeconds > 0 && resolutionSeconds % this.retention.rollupSeconds === 0;
    const p = this.redis.pipeline().zrange(rawKey, '-1', '-1');
    if (rollupReadable && range) p.zrangebyscore(keys.rollup(nativeId), `(${range.firstEnd - bucketMs}`, range.lastEnd);
    const [newestRaw, rollupMembers] = (await exec(p)) as [string[], string[] | undefined];
    const interval = newestRaw[0] === undefined ? null : decodeRaw(newestRaw[0]).intervalSeconds;
    if (readPlan(resolutionSeconds, interval, this.retention.rollupSeconds) === 'RAW')
      return (await this.redis.zrangebyscore(rawKey, from, to)).map(rawSample);
    const rollups = (rollupMembers ?? []).map(decodeRollup);
    return reaggregate(rollups, bucketMs).map((r) => rollupSample(r, aggregate, resolutionSeconds));
  }

  async kept(platformId: string, kind: MetricEntityKind, nativeId: string): Promise<HistoryExtent> {
    const keys = this.keys(platformId, kind);
    const [oldestRaw, newestRaw, oldestRollup] = (await exec(
      this.redis
        .pipeline()
        .zrange(keys.raw(nativeId), '0', '0')
        .zrange(keys.raw(nativeId), '-1', '-1')
        .zrange(keys.rollup(nativeId), '0', '0'),
    )) as [string[], string[], string[]];
    return {
      rawIntervalSeconds: newestRaw[0] === undefined ? null : decodeRaw(newestRaw[0]).intervalSeconds,
      rawFrom: oldestRaw[0] === undefined ? null : decodeRaw(oldestRaw[0]).timestamp,
      rollupSeconds: this.retention.rollupSeconds,
      rollupFrom: oldestRollup[0] === undefined ? null : decodeRollup(oldestRollup[0]).end,
    };
  }

  /** Waits for the recordings under way; the connection is the caller's. */
  async close(): Promise<void> {
    await this.queue.idle();
  }

  private keys(platformId: string, kind: MetricEntityKind): SeriesKeys {
    const base = `${this.prefix}{${platformId}}:history:${kind}:`;
    return {
      raw: (id) => `${base}raw:${id}`,
      rollup: (id) => `${base}rollup:${id}`,
      objects: `${base}objects`,
      rolled: `${base}rolled`,
      closed: `${base}closed`,
    };
  }
}

interface SeriesKeys {
  raw(nativeId: string): string;
  rollup(nativeId: string): string;
  objects: string;
  rolled: string;
  closed: string;
}

/** Runs a pipeline or MULTI; the replies, or the first command's error. */
async function exec(commands: ChainableCommander): Promise<unknown[]> {
  const replies = await commands.exec();
  if (!replies) throw new Error('Redis discarded the transaction');
  return replies.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}

/** 7 significant digits (what the memory store's Float32 keeps too): members half as long as JavaScript's 17. */
const num = (v: number) => (Number.isNaN(v) ? '' : String(Number(v.toPrecision(7))));
const parse = (s: string | undefined) => (s === undefined || s === '' ? Number.NaN : Number(s));

interface StoredRaw extends RawPoint {
  intervalSeconds: number;
}

export function encodeRaw(sample: MetricSample): string {
  return `${sample.timestamp},${sample.intervalSeconds},${sampleValues(sample).map(num).join(',')}`;
}

export function decodeRaw(member: string): StoredRaw {
  const parts = member.split(',');
  return {
    timestamp: Number(parts[0]),
    intervalSeconds: Number(parts[1]),
    values: Array.from({ length: FIELD_COUNT }, (_, f) => parse(parts[2 + f])),
  };
}

function rawSample(member: string) {
  const r = decodeRaw(member);
  return pointSample(r.timestamp, r.intervalSeconds, r.values);
}

export function encodeRollup(r: Rollup): string {
  const fields: string[] = [];
  for (let f = 0; f < FIELD_COUNT; f++) {
    const n = r.count[f]!;
    fields.push(n === 0 ? ',,' : `${num(r.avg[f]!)},${num(r.max[f]!)},${n === r.samples ? '' : n}`);
  }
  return `${r.end},${r.samples},${fields.join(',')}`;
}

export function decodeRollup(member: string): Rollup {
  const parts = member.split(',');
  const samples = Number(parts[1]);
  const r: Rollup = { end: Number(parts[0]), samples, avg: [], max: [], count: [] };
  for (let f = 0; f < FIELD_COUNT; f++) {
    const [a = '', m = '', c = ''] = parts.slice(2 + 3 * f, 5 + 3 * f);
    const none = a === '';
    r.avg.push(none ? Number.NaN : Number(a));
    r.max.push(none ? Number.NaN : Number(m));
    r.count.push(none ? 0 : c === '' ? samples : Number(c));
  }
  return r;
}

/**
 * Runs tasks of one key one after the other (the record() calls of one
 * platform and kind), so that two recordings never close the same windows
 * at once; tasks of different keys run side by side.
 */
class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    // A tail never rejects: a failed task does not stop the next.
    const next = (this.tails.get(key) ?? Promise.resolve()).then(task);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }

  /** Settles when every task queued so far has. */
  async idle(): Promise<void> {
    await Promise.all([...this.tails.values()]);
  }
}

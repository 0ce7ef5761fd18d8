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
  RAW_RECORD_BYTES,
  ROLLUP_CHUNK_WINDOWS,
  ROLLUP_RECORD_BYTES,
  type StoredRaw,
  decodeRawAt,
  decodeRawChunk,
  decodeRollups,
  encodeRaw,
  encodeRollup,
} from './packed-samples.js';
import {
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
  trimPeriod,
  windowsToClose,
} from './rollup.js';

// The metrics history in Redis: it survives gateway restarts, every
// instance reads it, and whichever instance holds a platform's lease
// records it. Samples and rollups are packed in binary chunks (the records
// are in packed-samples.ts). Keys (P = the configured key prefix, K = VM |
// HOST, S = a chunk's start in ms since the epoch; a chunk holds the times
// (S, S + its span], aligned to the epoch):
//
//   P{platformId}:history:K:raw:<nativeId>:S      string: the raw samples of 15 minutes
//       (RAW_CHUNK_MS), a 48-byte record each, sorted by time, one per time (ms)
//   P{platformId}:history:K:rollup:<nativeId>:S   string: 49 windows (ROLLUP_CHUNK_WINDOWS;
//       4 h 5 min of 5-minute windows), an 82-byte record per window at its slot, zeros in
//       the slots of windows without samples, and a spare byte
//   P{platformId}:history:K:counts:<nativeId>:S   string, only for a chunk that needs it: the
//       counts of fields that had values in some of a window's samples only
//   P{platformId}:history:K:objects               sorted set: native ID by its newest sample's time,
//       so a closing window finds every object with samples in it, those gone since too
//   P{platformId}:history:K:rolled                sorted set: native ID by its newest rollup's end
//   P{platformId}:history:K:closed                the end of the last window closed (ms)
//
// Retention counts back from the last window closed: a raw sample is kept
// (and read) while it is at most rawSeconds older, a rollup while its end
// is at most rollupRetentionSeconds older; the two indexes tell which
// chunks can hold anything kept. Once per hundredth of retention, closing a
// window deletes the chunks wholly past it, and the index entries of
// objects with nothing left.
//
// Every key of a platform carries the hash tag {platformId}: in a Cluster
// they live on one node, so one MULTI or script may touch them all. Every
// key has a TTL a little longer than what it keeps, counted from the newest
// sample: a backstop, so that nothing stays when a platform is no longer
// recorded, or when a gap in recording skipped a trim. Needs Redis 6.2 or
// later (ZADD GT). The sorted sets of the layout before (…:raw:<nativeId>,
// …:rollup:<nativeId>) are not read, and go with their TTL.
//
// Writing: a raw chunk is rewritten whole (by a script) on each sample it
// takes, which keeps it sorted, replaces a sample of the same time, and
// keeps its allocation exact (Redis doubles the allocation of a string it
// grows in place); a rollup chunk is allocated whole with its first window
// and written in place after. Round trips: a record() that closes no
// window is one MULTI (5,000 objects or one); one that closes windows
// (once per window) adds three: the object indexes, the raw chunks of the
// windows (one pipeline for all objects), and the rollups with the
// trimming (one MULTI). A read takes two (the indexes, then the chunks),
// three when it has to learn the raw interval first.
//
// Measured with Redis 7.0 (MEMORY USAGE over the keys, in
// test/metrics-history.test.ts; native IDs of 36 characters), at 60 s with
// 5-minute windows: a raw sample takes 59 bytes, a window 87; per object, a
// day of raw samples 85 KB, 30 days of rollups 751 KB, full retention
// 0.84 MB (the layout before: 204 bytes, 325 bytes, 3.1 MB). Between
// trims, up to 3% more; and Redis' used_memory counts some 60 bytes a key
// more than MEMORY USAGE does (its TTL, its slot in the key table): 16 KB
// an object.

/**
 * The span of a raw chunk (ms): a chunk is rewritten on each sample, which
 * is cheap while it is short (15 samples at 60 s: 720 bytes), and each
 * chunk costs Redis some 120 bytes of its own (its name, its entry), which
 * is little while it is long.
 */
export const RAW_CHUNK_MS = 15 * 60_000;

const ROLLUP_CHUNK_BYTES = ROLLUP_CHUNK_WINDOWS * ROLLUP_RECORD_BYTES;
const SPARE_BYTE = Buffer.alloc(1);
const EMPTY = Buffer.alloc(0);

/**
 * Writes raw samples into their chunks. KEYS[i] is a chunk, ARGV[2i - 1] a
 * record (its first 4 bytes its time in the chunk, big-endian), ARGV[2i]
 * the chunk's TTL (ms). The record goes in time order, in place of one of
 * the same time.
 */
const WRITE_RAW = `
local size = ${RAW_RECORD_BYTES}
local function time(s, at)
  local a, b, c, d = string.byte(s, at, at + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end
for i, key in ipairs(KEYS) do
  local record = ARGV[2 * i - 1]
  local t = time(record, 1)
  local chunk = redis.call('GET', key) or ''
  local lo, hi = 0, math.floor(#chunk / size)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if time(chunk, mid * size + 1) < t then lo = mid + 1 else hi = mid end
  end
  local at = lo * size
  local after = at
  if at + size <= #chunk and time(chunk, at + 1) == t then after = at + size end
  redis.call('SET', key, string.sub(chunk, 1, at) .. record .. string.sub(chunk, after + 1), 'PX', ARGV[2 * i])
end
return #KEYS
`;

export interface RedisHistoryOptions {
  retention?: HistoryRetention;
}

/** What is kept of an object's raw samples or rollups: times from..newest (ms, inclusive). */
interface Span {
  from: number;
  newest: number;
}

export class RedisMetricHistory implements MetricHistoryStore {
  readonly retention: HistoryRetention;
  private readonly queue = new KeyedQueue();
  private readonly rawMs: number;
  private readonly windowMs: number;
  private readonly rollupMs: number;
  /** The span of a rollup chunk (ms). */
  private readonly rollupSpan: number;
  private readonly rawPeriod: number;
  private readonly rollupPeriod: number;
  /** The TTL of the indexes and the closed marker: as long as any chunk's. */
  private readonly indexTtl: number;

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
    this.rollupSpan = ROLLUP_CHUNK_WINDOWS * this.windowMs;
    this.rawPeriod = trimPeriod(this.windowMs, this.rawMs);
    this.rollupPeriod = trimPeriod(this.windowMs, this.rollupMs);
    this.indexTtl = Math.max(
      this.rawMs + RAW_CHUNK_MS + this.rawPeriod,
      this.rollupMs + this.rollupSpan + this.rollupPeriod,
    );
  }

  record(platformId: string, kind: MetricEntityKind, samples: ReadonlyMap<string, MetricSample>): Promise<void> {
    if (samples.size === 0) return Promise.resolve();
    for (const [id, s] of samples) checkSample(id, s);
    return this.queue.run(`${kind}\u0000${platformId}`, () => this.write(this.keys(platformId, kind), samples));
  }

  private async write(keys: SeriesKeys, samples: ReadonlyMap<string, MetricSample>): Promise<void> {
    // Times to the millisecond: a record keeps its time as whole ms in its chunk.
    let newest = Number.NEGATIVE_INFINITY;
    let oldest = Number.POSITIVE_INFINITY;
    for (const sample of samples.values()) {
      const ts = Math.round(sample.timestamp);
      newest = Math.max(newest, ts);
      oldest = Math.min(oldest, ts);
    }
    const chunks: string[] = [];
    const args: (Buffer | number)[] = [];
    const index: (string | number)[] = [];
    for (const [id, sample] of samples) {
      const ts = Math.round(sample.timestamp);
      const start = chunkStart(ts, RAW_CHUNK_MS);
      chunks.push(keys.raw(id, start));
      args.push(encodeRaw(ts - start, sample.intervalSeconds, sampleValues(sample)), this.rawTtl(start, newest));
      index.push(ts, id);
    }
    const tx = this.redis.multi();
    tx.call('EVAL', [WRITE_RAW, chunks.length, ...chunks, ...args]);
    tx.call('ZADD', [keys.objects, 'GT', ...index]).pexpire(keys.objects, this.indexTtl);
    tx.get(keys.closed);
    const replies = await exec(tx);
    const marker = replies[replies.length - 1];
    const closedEnd = typeof marker === 'string' ? Number(marker) : null;
    const range = windowsToClose(closedEnd, oldest, newest, this.windowMs, this.rawMs);
    if (range) await this.closeWindows(keys, range.firstEnd, range.lastEnd, closedEnd);
  }

  /**
   * Computes the windows ending firstEnd..lastEnd of every object with raw
   * samples in them, from the raw samples in Redis (those another instance
   * recorded too), stores them in place of any computed before, and trims
   * what is past retention.
   */
  private async closeWindows(keys: SeriesKeys, firstEnd: number, lastEnd: number, closedEnd: number | null) {
    const start = firstEnd - this.windowMs;
    const closed = Math.max(lastEnd, closedEnd ?? lastEnd);
    const rawCutoff = closed - this.rawMs;
    const rollupCutoff = closed - this.rollupMs;
    const trimRaw = trimDue(closedEnd, lastEnd, this.windowMs, this.rawMs);
    const trimRollups = trimDue(closedEnd, lastEnd, this.windowMs, this.rollupMs);
    const find = this.redis.pipeline().zrangebyscore(keys.objects, `(${start}`, '+inf');
    // To trim: the objects with entries in the chunks a trim may delete.
    if (trimRaw)
      find.zrangebyscore(keys.objects, `(${trimFrom(rawCutoff, RAW_CHUNK_MS, this.rawPeriod)}`, '+inf', 'WITHSCORES');
    if (trimRollups)
      find.zrangebyscore(
        keys.rolled,
        `(${trimFrom(rollupCutoff, this.rollupSpan, this.rollupPeriod)}`,
        '+inf',
        'WITHSCORES',
      );
    const found = (await exec(find)) as string[][];
    const ids = found[0]!;
    const rawHeld = trimRaw ? found[1]! : [];
    const rollupsHeld = trimRollups ? found[found.length - 1]! : [];

    // Every raw sample of the windows: (start, lastEnd] is [start + 1, lastEnd] in whole ms.
    const starts = chunkStarts(start + 1, lastEnd, RAW_CHUNK_MS);
    const read = this.redis.pipeline();
    for (const id of ids) for (const s of starts) read.getBuffer(keys.raw(id, s));
    const chunks = ids.length > 0 ? ((await exec(read)) as (Buffer | null)[]) : [];

    const tx = this.redis.multi();
    // Deletions first: a chunk of an object that had gone, and came back, is then written anew.
    const deleted: string[] = [];
    for (let i = 0; i < rawHeld.length; i += 2) {
      for (const s of trimmedChunks(rawCutoff, Number(rawHeld[i + 1]), RAW_CHUNK_MS, this.rawPeriod))
        deleted.push(keys.raw(rawHeld[i]!, s));
    }
    for (let i = 0; i < rollupsHeld.length; i += 2) {
      const id = rollupsHeld[i]!;
      for (const s of trimmedChunks(rollupCutoff, Number(rollupsHeld[i + 1]), this.rollupSpan, this.rollupPeriod))
        deleted.push(keys.rollup(id, s), keys.counts(id, s));
    }
    for (let i = 0; i < deleted.length; i += 1_000) tx.call('DEL', deleted.slice(i, i + 1_000));
    if (trimRaw) tx.zremrangebyscore(keys.objects, '-inf', `(${rawCutoff}`);
    if (trimRollups) tx.zremrangebyscore(keys.rolled, '-inf', `(${rollupCutoff}`);

    const rolled: (string | number)[] = [];
    ids.forEach((id, i) => {
      const points: StoredRaw[] = [];
      starts.forEach((s, j) => {
        const chunk = chunks[i * starts.length + j];
        if (chunk) for (const p of decodeRawChunk(chunk, s)) points.push(p);
      });
      // Not windows past retention already (computed again, when rollups are kept for less long than raw samples).
      const rollups = rollupWindows(points, this.windowMs, firstEnd, lastEnd).filter((r) => r.end >= rollupCutoff);
      this.writeRollups(tx, keys, id, rollups, closed);
      if (rollups.length > 0) rolled.push(rollups[rollups.length - 1]!.end, id);
    });
    if (rolled.length > 0) tx.call('ZADD', [keys.rolled, 'GT', ...rolled]).pexpire(keys.rolled, this.indexTtl);
    tx.set(keys.closed, String(closed), 'PX', this.indexTtl);
    await exec(tx);
  }

  /**
   * Stores an object's rollups, each in its slot, over whatever was there
   * (a window computed again). A slot left empty stays as it was: a window
   * computed before still has all its raw samples when it is computed again.
   */
  private writeRollups(tx: ChainableCommander, keys: SeriesKeys, id: string, rollups: Rollup[], closed: number) {
    let sized: number | null = null;
    for (const r of rollups) {
      const start = chunkStart(r.end, this.rollupSpan);
      const slot = (r.end - start) / this.windowMs - 1;
      const key = keys.rollup(id, start);
      const ttl = this.rollupTtl(start, closed);
      if (start !== sized) {
        sized = start;
        // SETRANGE past the end of a string reallocates it at twice the
        // size, but makes a missing key exactly as long as asked: writing
        // the spare byte after the last slot allocates a new chunk whole,
        // and changes nothing in one that exists.
        tx.setrange(key, ROLLUP_CHUNK_BYTES, SPARE_BYTE).pexpire(key, ttl);
      }
      const { record, counts } = encodeRollup(r, slot);
      tx.setrange(key, slot * ROLLUP_RECORD_BYTES, record);
      if (counts) tx.append(keys.counts(id, start), counts).pexpire(keys.counts(id, start), ttl);
    }
  }

  /**
   * A raw chunk's TTL: until its newest possible sample is past retention
   * (counted from the newest sample recorded), and a trim period more, so
   * that trimming deletes it first while recording goes on.
   */
  private rawTtl(start: number, newest: number): number {
    return Math.max(start + RAW_CHUNK_MS - newest, 0) + this.rawMs + this.rawPeriod;
  }

  /** A rollup chunk's TTL, likewise, counted from the last window closed. */
  private rollupTtl(start: number, closed: number): number {
    return Math.max(start + this.rollupSpan - closed, 0) + this.rollupMs + this.rollupPeriod;
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
    const kept = await this.extent(keys, nativeId);
    if (resolutionSeconds === null) return this.readRaw(keys, nativeId, kept.raw, from, to);
    // The raw interval decides between raw samples and rollups: ask for it and, in case, the rollups at once.
    const bucketMs = resolutionSeconds * 1000;
    const range = bucketRange(from, to, bucketMs);
    const rollupReadable = resolutionSeconds > 0 && resolutionSeconds % this.retention.rollupSeconds === 0;
    const p = this.redis.pipeline();
    if (kept.raw)
      p.getrangeBuffer(keys.raw(nativeId, chunkStart(kept.raw.newest, RAW_CHUNK_MS)), -RAW_RECORD_BYTES, -1);
    const rollups =
      rollupReadable && range && kept.rollup
        ? this.readRollups(p, keys, nativeId, kept.rollup, range.firstEnd - bucketMs, range.lastEnd)
        : null;
    const replies = kept.raw || rollups ? await exec(p) : [];
    const interval = kept.raw ? newestInterval(replies[0] as Buffer) : null;
    if (readPlan(resolutionSeconds, interval, this.retention.rollupSeconds) === 'RAW')
      return this.readRaw(keys, nativeId, kept.raw, from, to);
    const windows = rollups ? rollups.decode(replies.slice(kept.raw ? 1 : 0)) : [];
    return reaggregate(windows, bucketMs).map((r) => rollupSample(r, aggregate, resolutionSeconds));
  }

  async kept(platformId: string, kind: MetricEntityKind, nativeId: string): Promise<HistoryExtent> {
    const keys = this.keys(platformId, kind);
    const kept = await this.extent(keys, nativeId);
    const p = this.redis.pipeline();
    const raw = kept.raw ? this.readRawExtent(p, keys, nativeId, kept.raw) : null;
    const rollups = kept.rollup ? this.readFirstRollup(p, keys, nativeId, kept.rollup) : null;
    const replies = raw || rollups ? await exec(p) : [];
    const extent = raw ? raw.decode(replies.splice(0, raw.commands)) : { interval: null, from: null };
    return {
      rawIntervalSeconds: extent.interval,
      rawFrom: extent.from,
      rollupSeconds: this.retention.rollupSeconds,
      rollupFrom: rollups ? await rollups.decode(replies) : null,
    };
  }

  /** Waits for the recordings under way; the connection is the caller's. */
  async close(): Promise<void> {
    await this.queue.idle();
  }

  /** What the indexes say is kept of an object. */
  private async extent(keys: SeriesKeys, id: string): Promise<{ raw: Span | null; rollup: Span | null }> {
    const [raw, rolled, closed] = (await exec(
      this.redis.pipeline().zscore(keys.objects, id).zscore(keys.rolled, id).get(keys.closed),
    )) as (string | null)[];
    const closedEnd = closed == null ? null : Number(closed);
    return { raw: keptSpan(raw, closedEnd, this.rawMs), rollup: keptSpan(rolled, closedEnd, this.rollupMs) };
  }

  /** The raw samples of an object from..to that are kept. */
  private async readRaw(keys: SeriesKeys, id: string, kept: Span | null, from: number, to: number) {
    const lo = Math.max(from, kept?.from ?? Number.POSITIVE_INFINITY);
    const hi = Math.min(to, kept?.newest ?? Number.NEGATIVE_INFINITY);
    if (!(lo <= hi)) return [];
    const starts = chunkStarts(lo, hi, RAW_CHUNK_MS);
    const p = this.redis.pipeline();
    for (const s of starts) p.getBuffer(keys.raw(id, s));
    const chunks = (await exec(p)) as (Buffer | null)[];
    const out: MetricSample[] = [];
    chunks.forEach((chunk, i) => {
      if (!chunk) return;
      for (const r of decodeRawChunk(chunk, starts[i]!))
        if (r.timestamp >= lo && r.timestamp <= hi) out.push(pointSample(r.timestamp, r.intervalSeconds, r.values));
    });
    return out;
  }

  /** Queues on `p` the reads of an object's rollups that end after `after` and up to `until`, and are kept. */
  private readRollups(
    p: ChainableCommander,
    keys: SeriesKeys,
    id: string,
    kept: Span,
    after: number,
    until: number,
  ): Queued<Rollup[]> {
    const w = this.windowMs;
    const firstEnd = Math.max(Math.floor(after / w) * w + w, Math.ceil(kept.from / w) * w);
    const lastEnd = Math.min(Math.floor(until / w) * w, kept.newest);
    const reads: { start: number; firstSlot: number }[] = [];
    if (firstEnd <= lastEnd) {
      for (const start of chunkStarts(firstEnd, lastEnd, this.rollupSpan)) {
        const firstSlot = (Math.max(firstEnd, start + w) - start) / w - 1;
        const lastSlot = (Math.min(lastEnd, start + this.rollupSpan) - start) / w - 1;
        p.getrangeBuffer(
          keys.rollup(id, start),
          firstSlot * ROLLUP_RECORD_BYTES,
          (lastSlot + 1) * ROLLUP_RECORD_BYTES - 1,
        );
        p.getBuffer(keys.counts(id, start));
        reads.push({ start, firstSlot });
      }
    }
    return {
      commands: 2 * reads.length,
      decode: (replies) =>
        reads.flatMap(({ start, firstSlot }, i) =>
          decodeRollups(
            replies[2 * i] as Buffer,
            firstSlot,
            replies[2 * i + 1] as Buffer | null,
            (slot) => start + (slot + 1) * w,
          ),
        ),
    };
  }

  /**
   * Queues on `p` the reads that tell an object's newest raw interval and
   * oldest raw sample kept: the newest sample (the last of its chunk), the
   * first chunk whole (it may hold samples past retention), and the first
   * sample of each other.
   */
  private readRawExtent(
    p: ChainableCommander,
    keys: SeriesKeys,
    id: string,
    kept: Span,
  ): Queued<{ interval: number | null; from: number | null }> {
    const starts = chunkStarts(kept.from, kept.newest, RAW_CHUNK_MS);
    p.getrangeBuffer(keys.raw(id, starts[starts.length - 1]!), -RAW_RECORD_BYTES, -1);
    p.getBuffer(keys.raw(id, starts[0]!));
    for (const s of starts.slice(1)) p.getrangeBuffer(keys.raw(id, s), 0, RAW_RECORD_BYTES - 1);
    return {
      commands: 1 + starts.length,
      decode: ([newest, first, ...others]) => {
        const inFirst = decodeRawChunk((first as Buffer | null) ?? EMPTY, starts[0]!).find(
          (r) => r.timestamp >= kept.from,
        );
        const other = others.findIndex((b) => (b as Buffer).length > 0);
        const from = inFirst
          ? inFirst.timestamp
          : other < 0
            ? null
            : decodeRawAt(others[other] as Buffer, 0, starts[1 + other]!).timestamp;
        return { interval: newestInterval(newest as Buffer), from };
      },
    };
  }

  /**
   * Queues on `p` the reads that tell an object's oldest rollup kept: its
   * first chunk from the first window kept, and whether the others exist
   * (a chunk exists only with a window in it). When the first chunk has no
   * window kept, decoding reads the first other that exists.
   */
  private readFirstRollup(
    p: ChainableCommander,
    keys: SeriesKeys,
    id: string,
    kept: Span,
  ): Queued<Promise<number | null>> {
    const w = this.windowMs;
    const firstEnd = Math.ceil(kept.from / w) * w;
    const starts = chunkStarts(firstEnd, kept.newest, this.rollupSpan);
    const firstSlot = (firstEnd - starts[0]!) / w - 1;
    p.getrangeBuffer(keys.rollup(id, starts[0]!), firstSlot * ROLLUP_RECORD_BYTES, -1);
    for (const s of starts.slice(1)) p.exists(keys.rollup(id, s));
    const firstIn = (records: Buffer, start: number, slot: number) =>
      decodeRollups(records, slot, null, (k) => start + (k + 1) * w)[0]?.end ?? null;
    return {
      commands: starts.length,
      decode: async ([first, ...others]) => {
        const found = firstIn(first as Buffer, starts[0]!, firstSlot);
        const other = others.indexOf(1);
        if (found !== null || other < 0) return found;
        const start = starts[1 + other]!;
        return firstIn((await this.redis.getBuffer(keys.rollup(id, start))) ?? EMPTY, start, 0);
      },
    };
  }

  private keys(platformId: string, kind: MetricEntityKind): SeriesKeys {
    const base = `${this.prefix}{${platformId}}:history:${kind}:`;
    return {
      raw: (id, start) => `${base}raw:${id}:${start}`,
      rollup: (id, start) => `${base}rollup:${id}:${start}`,
      counts: (id, start) => `${base}counts:${id}:${start}`,
      objects: `${base}objects`,
      rolled: `${base}rolled`,
      closed: `${base}closed`,
    };
  }
}

/** Reads queued on a pipeline, and how to make their result of their replies. */
interface Queued<T> {
  commands: number;
  decode(replies: unknown[]): T;
}

interface SeriesKeys {
  raw(nativeId: string, start: number): string;
  rollup(nativeId: string, start: number): string;
  counts(nativeId: string, start: number): string;
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

/** The start of the chunk of `span` ms (aligned to the epoch) that holds time t: chunks hold (start, start + span]. */
function chunkStart(t: number, span: number): number {
  return Math.ceil(t / span) * span - span;
}

/** The starts of the chunks that hold times from..to. */
function chunkStarts(from: number, to: number, span: number): number[] {
  const out: number[] = [];
  for (let s = chunkStart(from, span); s <= chunkStart(to, span); s += span) out.push(s);
  return out;
}

/**
 * The start of the oldest chunk a trim at `cutoff` deletes: trims come at
 * least once a trim period (and a window, less than a period) while
 * recording goes on, and each deleted what ended before its own cutoff.
 */
function trimFrom(cutoff: number, span: number, period: number): number {
  return chunkStart(cutoff - 2 * period, span) - span;
}

/**
 * The chunks a trim at `cutoff` deletes of an object whose newest entry is
 * at `newest`: those wholly before the cutoff since trimFrom(), and when
 * nothing of it is kept any more, all up to its newest.
 */
function trimmedChunks(cutoff: number, newest: number, span: number, period: number): number[] {
  const out: number[] = [];
  const last = newest < cutoff ? chunkStart(newest, span) : chunkStart(cutoff, span) - span;
  for (let s = trimFrom(cutoff, span, period); s <= last; s += span) out.push(s);
  return out;
}

/** What is kept, by the newest entry of an object (an index score) and the end of the last window closed. */
function keptSpan(newest: string | null | undefined, closedEnd: number | null, retentionMs: number): Span | null {
  if (newest == null) return null;
  const n = Number(newest);
  const from = (closedEnd ?? n) - retentionMs;
  return n >= from ? { from, newest: n } : null;
}

/** The interval of a raw record (the newest), or null when there is none. */
function newestInterval(record: Buffer | null): number | null {
  return record && record.length === RAW_RECORD_BYTES ? decodeRawAt(record, 0, 0).intervalSeconds : null;
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

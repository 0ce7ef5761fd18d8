import type { Logger } from 'pino';

import type { MetricEntityKind, MetricSample } from '../model/metrics.js';
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
  type Rollup,
  WindowAccumulator,
  bucketRange,
  checkSample,
  pointSample,
  readPlan,
  reaggregate,
  rollupSample,
  sampleValues,
  windowEnd,
  windowsToClose,
} from './rollup.js';

// The history of one gateway without Redis, in memory, compact and bounded.
//
// Per object, two rings of columns instead of an object per sample (a
// MetricSample object with its numbers takes about 400 bytes of V8 heap,
// measured: a day of 5,000 VMs at 60 s would be 2.9 GB):
//   raw:    Float64 timestamp + Float32 interval + FIELD_COUNT Float32
//           = 8 + 4 + 10 x 4 = 52 bytes a sample;
//           at 60 s, 1,440 a day: 74,880 bytes (73 KiB) per object per day.
//   rollup: Float64 window end + FIELD_COUNT x Float32 (average, maximum)
//           + Uint16 (samples, and each field's count)
//           = 8 + 80 + 22 = 110 bytes a window;
//           at 300 s, 288 a day: 31,680 bytes (31 KiB) per object per day,
//           950,400 bytes (928 KiB) for 30 days.
// A day of raw samples and a day of rollups: 106,560 bytes (104 KiB) per
// object; full retention (a day raw, 30 days of rollups): 1.0 MiB per
// object, plus OBJECT_OVERHEAD_BYTES.
// Float32 keeps 7 significant digits: finer than any of these counters is
// measured (64 GiB of memory to within 8 KiB); the Redis store writes 7
// digits too.
//
// Rings start small, double as needed, and stop at what retention needs
// (retention / interval); trimming shrinks them again, and objects that
// stopped reporting leave once nothing of them is kept. On top, the whole
// store stays within `maxBytes`: once it is reached, a full ring overwrites
// its oldest entry instead of growing (that object's history is shorter,
// as kept() tells), and an object never seen before is not recorded.

const RAW_F32 = 1 + FIELD_COUNT; // interval, fields
const ROLLUP_F32 = 2 * FIELD_COUNT; // averages, maxima
const ROLLUP_U16 = 1 + FIELD_COUNT; // samples, counts
/** What a raw sample takes: 52 bytes. */
export const RAW_SAMPLE_BYTES = 8 + 4 * RAW_F32;
/** What a window's rollup takes: 110 bytes. */
export const ROLLUP_WINDOW_BYTES = 8 + 4 * ROLLUP_F32 + 2 * ROLLUP_U16;
/** The smallest ring allocated, and the least it shrinks to. */
const MIN_CAPACITY = 8;
/** What an object costs besides its columns: its map entry, two rings, six typed arrays and their buffers (estimated). */
export const OBJECT_OVERHEAD_BYTES = 1_024;
/** A count that does not fit a Uint16 is kept at this (windows of more than 65,535 samples: 1 s samples in 18 h windows). */
const MAX_COUNT = 0xffff;

/** Bytes shared by every ring of the store. */
class Budget {
  used = 0;
  constructor(readonly max: number) {}

  /** How many more units of `unit` bytes fit. */
  room(unit: number): number {
    return Math.max(0, Math.floor((this.max - this.used) / unit));
  }
}

/**
 * Entries ordered by time in a ring of columns: a Float64 time, `f32`
 * Float32 and `u16` Uint16 numbers each. Logical index i (0 = oldest) is
 * at slot (head + i) % capacity.
 */
class Ring {
  times = new Float64Array(0);
  f32 = new Float32Array(0);
  u16 = new Uint16Array(0);
  private head = 0;
  size = 0;

  constructor(
    private readonly f32Stride: number,
    private readonly u16Stride: number,
    private readonly budget: Budget,
  ) {}

  get capacity(): number {
    return this.times.length;
  }

  private get entryBytes(): number {
    return 8 + 4 * this.f32Stride + 2 * this.u16Stride;
  }

  slot(i: number): number {
    return (this.head + i) % this.capacity;
  }

  time(i: number): number {
    return this.times[this.slot(i)]!;
  }

  /** The first index whose time is at or after `t` (size when none). */
  lowerBound(t: number): number {
    let lo = 0;
    let hi = this.size;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.time(mid) < t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * The slot for an entry at time `t`: the one holding `t` already (to be
   * overwritten), or a new one in order; -1 when the ring is full, cannot
   * grow, and `t` is older than all it holds.
   */
  place(t: number, bound: number): number {
    let i = this.lowerBound(t);
    if (i < this.size && this.time(i) === t) return this.slot(i);
    if (this.size === this.capacity && !this.grow(bound)) {
      if (i === 0) return -1;
      this.dropOldest(1);
      i--;
    }
    // Entries come in order almost always: then nothing moves.
    for (let j = this.size; j > i; j--) this.move(this.slot(j - 1), this.slot(j));
    this.size++;
    const slot = this.slot(i);
    this.times[slot] = t;
    return slot;
  }

  /** Drops the entries older than `t`, and gives back memory the ring no longer needs. */
  dropBefore(t: number): void {
    const n = this.lowerBound(t);
    if (n > 0) this.dropOldest(n);
    if (this.size === 0) this.resize(0);
    else if (this.capacity > MIN_CAPACITY && this.size <= this.capacity / 4)
      this.resize(Math.max(MIN_CAPACITY, 2 * this.size));
  }

  private dropOldest(n: number): void {
    this.head = (this.head + n) % this.capacity;
    this.size -= n;
  }

  private move(from: number, to: number): void {
    this.times[to] = this.times[from]!;
    this.f32.copyWithin(to * this.f32Stride, from * this.f32Stride, (from + 1) * this.f32Stride);
    this.u16.copyWithin(to * this.u16Stride, from * this.u16Stride, (from + 1) * this.u16Stride);
  }

  /** Doubles the ring, up to `bound` entries and what the budget allows; false when it cannot grow at all. */
  private grow(bound: number): boolean {
    const wanted = Math.min(bound, Math.max(MIN_CAPACITY, 2 * this.capacity)) - this.capacity;
    if (wanted <= 0) return false;
    const got = Math.min(wanted, this.budget.room(this.entryBytes));
    if (got === 0) return false;
    this.resize(this.capacity + got);
    return true;
  }

  /** Moves the entries to new columns of `capacity` entries, oldest at slot 0. */
  private resize(capacity: number): void {
    const times = new Float64Array(capacity);
    const f32 = new Float32Array(capacity * this.f32Stride);
    const u16 = new Uint16Array(capacity * this.u16Stride);
    for (let i = 0; i < this.size; i++) {
      const s = this.slot(i);
      times[i] = this.times[s]!;
      f32.set(this.f32.subarray(s * this.f32Stride, (s + 1) * this.f32Stride), i * this.f32Stride);
      u16.set(this.u16.subarray(s * this.u16Stride, (s + 1) * this.u16Stride), i * this.u16Stride);
    }
    this.budget.used += (capacity - this.capacity) * this.entryBytes;
    this.times = times;
    this.f32 = f32;
    this.u16 = u16;
    this.head = 0;
  }

  /** Gives back every byte (the object leaves). */
  release(): void {
    this.size = 0;
    this.resize(0);
  }
}

/** One object's history. */
class ObjectHistory {
  readonly raw: Ring;
  readonly rollups: Ring;
  /** The newest raw sample's time. */
  last = Number.NEGATIVE_INFINITY;
  /** The shortest interval its samples had (s): how many raw samples retention can need. */
  minInterval = Number.POSITIVE_INFINITY;

  constructor(budget: Budget) {
    this.raw = new Ring(RAW_F32, 0, budget);
    this.rollups = new Ring(ROLLUP_F32, ROLLUP_U16, budget);
  }

  rollupAt(i: number): Rollup {
    const s = this.rollups.slot(i);
    const f = this.rollups.f32.subarray(s * ROLLUP_F32, (s + 1) * ROLLUP_F32);
    const u = this.rollups.u16.subarray(s * ROLLUP_U16, (s + 1) * ROLLUP_U16);
    const count = Array.from(u.subarray(1));
    return {
      end: this.rollups.times[s]!,
      samples: u[0]!,
      avg: Array.from(f.subarray(0, FIELD_COUNT), (v, k) => (count[k] === 0 ? Number.NaN : v)),
      max: Array.from(f.subarray(FIELD_COUNT), (v, k) => (count[k] === 0 ? Number.NaN : v)),
      count,
    };
  }
}

/** The objects of one platform and kind, and the last rollup window closed for them. */
interface Series {
  objects: Map<string, ObjectHistory>;
  closedEnd: number | null;
}

export interface MemoryHistoryOptions {
  retention?: HistoryRetention;
  /**
   * The most the store holds, in bytes (columns and estimated per-object
   * overhead). @default 268_435_456 // 256 MiB: full retention of about
   * 260 objects sampled every 60 s, or a day of about 2,000.
   */
  maxBytes?: number;
  /** Told once when `maxBytes` is reached. */
  logger?: Logger;
}

/** The metrics history in this process's memory: see the notes at the top of this file. */
export class MemoryMetricHistory implements MetricHistoryStore {
  readonly retention: HistoryRetention;
  private readonly budget: Budget;
  private readonly series = new Map<string, Series>();
  private readonly rawMs: number;
  private readonly windowMs: number;
  private readonly rollupMs: number;
  private readonly rollupBound: number;
  private readonly logger: Logger | undefined;
  private warned = false;

  constructor(options: MemoryHistoryOptions = {}) {
    this.retention = options.retention ?? DEFAULT_RETENTION;
    checkRetention(this.retention);
    this.budget = new Budget(options.maxBytes ?? 256 * 1024 * 1024);
    this.logger = options.logger;
    this.rawMs = this.retention.rawSeconds * 1000;
    this.windowMs = this.retention.rollupSeconds * 1000;
    this.rollupMs = this.retention.rollupRetentionSeconds * 1000;
    this.rollupBound = Math.floor(this.retention.rollupRetentionSeconds / this.retention.rollupSeconds) + 1;
  }

  /** The bytes held now (columns and the estimated overhead of each object). */
  bytes(): number {
    return this.budget.used;
  }

  async record(platformId: string, kind: MetricEntityKind, samples: ReadonlyMap<string, MetricSample>): Promise<void> {
    if (samples.size === 0) return;
    for (const [id, s] of samples) checkSample(id, s);
    const key = seriesKey(platformId, kind);
    let series = this.series.get(key);
    if (!series) this.series.set(key, (series = { objects: new Map(), closedEnd: null }));
    let newest = Number.NEGATIVE_INFINITY;
    let oldest = Number.POSITIVE_INFINITY;
    for (const [id, sample] of samples) {
      newest = Math.max(newest, sample.timestamp);
      oldest = Math.min(oldest, sample.timestamp);
      const object = this.object(series, id);
      if (object) this.append(object, sample);
    }
    const range = windowsToClose(series.closedEnd, oldest, newest, this.windowMs, this.rawMs);
    if (range) {
      this.closeWindows(series, range.firstEnd, range.lastEnd);
      series.closedEnd = Math.max(series.closedEnd ?? Number.NEGATIVE_INFINITY, range.lastEnd);
      // Trimming every object (those gone too) once per window is cheap enough; per sampling it would not be.
      this.trim(series, newest);
    }
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
    const object = this.series.get(seriesKey(platformId, kind))?.objects.get(nativeId);
    const plan = readPlan(resolutionSeconds, object ? rawInterval(object) : null, this.retention.rollupSeconds);
    if (!object) return [];
    const out: MetricSample[] = [];
    if (plan === 'RAW') {
      const raw = object.raw;
      for (let i = raw.lowerBound(from); i < raw.size && raw.time(i) <= to; i++) {
        const s = raw.slot(i);
        out.push(pointSample(raw.times[s]!, raw.f32[s * RAW_F32]!, raw.f32, s * RAW_F32 + 1));
      }
      return out;
    }
    const bucketMs = (resolutionSeconds as number) * 1000;
    const range = bucketRange(from, to, bucketMs);
    if (!range) return out;
    const rollups: Rollup[] = [];
    const r = object.rollups;
    for (let i = r.lowerBound(range.firstEnd - bucketMs + 1); i < r.size && r.time(i) <= range.lastEnd; i++)
      rollups.push(object.rollupAt(i));
    return reaggregate(rollups, bucketMs).map((b) => rollupSample(b, aggregate, resolutionSeconds as number));
  }

  async kept(platformId: string, kind: MetricEntityKind, nativeId: string): Promise<HistoryExtent> {
    const object = this.series.get(seriesKey(platformId, kind))?.objects.get(nativeId);
    return {
      rawIntervalSeconds: object ? rawInterval(object) : null,
      rawFrom: object && object.raw.size > 0 ? object.raw.time(0) : null,
      rollupSeconds: this.retention.rollupSeconds,
      rollupFrom: object && object.rollups.size > 0 ? object.rollups.time(0) : null,
    };
  }

  async close(): Promise<void> {
    for (const series of this.series.values()) for (const o of series.objects.values()) this.forget(o);
    this.series.clear();
  }

  /** The object's history, new if need be; undefined when the budget has no room for one more. */
  private object(series: Series, id: string): ObjectHistory | undefined {
    const known = series.objects.get(id);
    if (known) return known;
    if (this.budget.room(OBJECT_OVERHEAD_BYTES) === 0) {
      this.full();
      return undefined;
    }
    this.budget.used += OBJECT_OVERHEAD_BYTES;
    const created = new ObjectHistory(this.budget);
    series.objects.set(id, created);
    return created;
  }

  private append(object: ObjectHistory, sample: MetricSample): void {
    object.minInterval = Math.min(object.minInterval, sample.intervalSeconds);
    // Inclusive ends and jittered timestamps: one more than retention / interval, and one to spare.
    const bound = Math.ceil(this.retention.rawSeconds / Math.max(1, object.minInterval)) + 2;
    const slot = object.raw.place(sample.timestamp, bound);
    // Older than all a full ring keeps: past retention, or the budget is what keeps the ring short.
    if (slot < 0) return object.raw.capacity < bound ? this.full() : undefined;
    const values = sampleValues(sample);
    const f32 = object.raw.f32;
    f32[slot * RAW_F32] = sample.intervalSeconds;
    for (let f = 0; f < FIELD_COUNT; f++) f32[slot * RAW_F32 + 1 + f] = values[f]!;
    object.last = Math.max(object.last, sample.timestamp);
  }

  /** Computes the windows ending firstEnd..lastEnd of every object with raw samples in them. */
  private closeWindows(series: Series, firstEnd: number, lastEnd: number): void {
    const start = firstEnd - this.windowMs;
    for (const object of series.objects.values()) {
      if (object.last <= start) continue;
      const raw = object.raw;
      let acc: WindowAccumulator | null = null;
      for (let i = raw.lowerBound(start + 1); i < raw.size && raw.time(i) <= lastEnd; i++) {
        const s = raw.slot(i);
        const end = windowEnd(raw.times[s]!, this.windowMs);
        if (acc === null || acc.end !== end) {
          if (acc) this.storeRollup(object, acc.finish());
          acc = new WindowAccumulator(end);
        }
        acc.add(raw.f32, s * RAW_F32 + 1);
      }
      if (acc) this.storeRollup(object, acc.finish());
    }
  }

  private storeRollup(object: ObjectHistory, r: Rollup): void {
    const slot = object.rollups.place(r.end, this.rollupBound);
    if (slot < 0) return object.rollups.capacity < this.rollupBound ? this.full() : undefined;
    const f32 = object.rollups.f32;
    const u16 = object.rollups.u16;
    u16[slot * ROLLUP_U16] = Math.min(r.samples, MAX_COUNT);
    for (let f = 0; f < FIELD_COUNT; f++) {
      // NaN where a field had no value; its count 0 says so when read.
      f32[slot * ROLLUP_F32 + f] = r.avg[f]!;
      f32[slot * ROLLUP_F32 + FIELD_COUNT + f] = r.max[f]!;
      u16[slot * ROLLUP_U16 + 1 + f] = Math.min(r.count[f]!, MAX_COUNT);
    }
  }

  private trim(series: Series, newest: number): void {
    for (const [id, object] of series.objects) {
      object.raw.dropBefore(newest - this.rawMs);
      object.rollups.dropBefore(newest - this.rollupMs);
      if (object.raw.size === 0 && object.rollups.size === 0) {
        this.forget(object);
        series.objects.delete(id);
      }
    }
  }

  private forget(object: ObjectHistory): void {
    object.raw.release();
    object.rollups.release();
    this.budget.used -= OBJECT_OVERHEAD_BYTES;
  }

  private full(): void {
    if (this.warned) return;
    this.warned = true;
    this.logger?.warn(
      { maxBytes: this.budget.max },
      'the in-memory metrics history is full: histories are shorter than retention, and new objects are not recorded',
    );
  }
}

function seriesKey(platformId: string, kind: MetricEntityKind): string {
  return `${kind}\u0000${platformId}`;
}

/** The interval of the object's newest raw sample. */
function rawInterval(object: ObjectHistory): number | null {
  const raw = object.raw;
  return raw.size === 0 ? null : raw.f32[raw.slot(raw.size - 1) * RAW_F32]!;
}

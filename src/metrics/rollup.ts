import { METRIC_FIELDS, type MetricSample } from '../model/metrics.js';
import type { Aggregate } from './history-store.js';

// The arithmetic of rollups, shared by the stores and free of storage:
// which windows a recording closes, a window's average and maximum per
// field from its raw values, and coarser points from finer rollups. Values
// travel as numbers in METRIC_FIELDS order, NaN for null, so that a store
// can hand over its own columns without building an object per sample.

/** How many numbers a sample carries. */
export const FIELD_COUNT = METRIC_FIELDS.length;

/** One window's (or one coarser bucket's) rollup of every field. */
export interface Rollup {
  /** The window's end (ms); the window is (end - length, end]. */
  end: number;
  /** How many raw samples fell in the window. */
  samples: number;
  /** Per field: the average of its non-null values, NaN where there were none. */
  avg: number[];
  /** Per field: the maximum of its non-null values, NaN where there were none. */
  max: number[];
  /** Per field: how many non-null values it had (the weight of its average). */
  count: number[];
}

/** The end of the window (aligned to the epoch) a timestamp falls in: windows are (end - length, end]. */
export function windowEnd(timestamp: number, windowMs: number): number {
  return Math.ceil(timestamp / windowMs) * windowMs;
}

/**
 * The windows a recording closes, by their ends (inclusive, a window
 * length apart), or null when it closes none.
 *
 * Normally: from the one after the last closed to the last that ended at
 * or before the newest sample. A sample of this recording that falls in a
 * window closed before (late, or recorded again) has that window computed
 * again, but never one that may have lost raw samples to trimming, whose
 * rollup already holds more than its raw samples now do: trimming keeps at
 * least what is newer than `rawMs` before the newest sample, and the
 * newest sample ever recorded is before `closedEnd` plus a window.
 *
 * With nothing closed yet, only the last window that ended: the marker of
 * the last closed window is written by the first recording of a platform
 * and kept as long as rollups are, so without it there is nothing older
 * to compute (and a gateway must not read a day of raw samples of every
 * object because one key was lost).
 */
export function windowsToClose(
  closedEnd: number | null,
  oldest: number,
  newest: number,
  windowMs: number,
  rawMs: number,
): { firstEnd: number; lastEnd: number } | null {
  const newestEnd = Math.floor(newest / windowMs) * windowMs;
  if (closedEnd === null) return { firstEnd: newestEnd, lastEnd: newestEnd };
  const lastEnd = Math.max(newestEnd, Math.min(closedEnd, windowEnd(newest, windowMs)));
  // The first window that starts at or after the oldest raw sample that may have been trimmed.
  const trimmedBefore = Math.max(newest, closedEnd + windowMs) - rawMs;
  const intact = Math.ceil(trimmedBefore / windowMs) * windowMs + windowMs;
  // Windows after the last closed one were never trimmed (trimming stops
  // short of the window that just closed), however long ago they were.
  const firstEnd = Math.min(closedEnd + windowMs, Math.max(windowEnd(oldest, windowMs), intact));
  return firstEnd <= lastEnd ? { firstEnd, lastEnd } : null;
}

/**
 * Whether closing windows up to `lastEnd`, after `closedEnd`, is the
 * moment to trim what is kept for `retentionMs`: once every hundredth of
 * it (at least once a window), so that trimming costs little and what is
 * kept reaches at most that much further back than retention.
 */
export function trimDue(closedEnd: number | null, lastEnd: number, windowMs: number, retentionMs: number): boolean {
  const period = trimPeriod(windowMs, retentionMs);
  return closedEnd === null || Math.floor(lastEnd / period) !== Math.floor(closedEnd / period);
}

/** How often trimDue() says to trim what is kept for `retentionMs` (ms): a hundredth of it, at least a window. */
export function trimPeriod(windowMs: number, retentionMs: number): number {
  return Math.max(windowMs, retentionMs / 100);
}

/** Sums one window's raw values as they come, oldest first or not. */
export class WindowAccumulator {
  samples = 0;
  private readonly sum = new Array<number>(FIELD_COUNT).fill(0);
  private readonly max = new Array<number>(FIELD_COUNT).fill(Number.NEGATIVE_INFINITY);
  private readonly count = new Array<number>(FIELD_COUNT).fill(0);

  constructor(readonly end: number) {}

  /** Adds one raw sample: FIELD_COUNT numbers of `values` from `offset` on, NaN for null. */
  add(values: ArrayLike<number>, offset = 0): void {
    this.samples++;
    for (let f = 0; f < FIELD_COUNT; f++) {
      const v = values[offset + f] as number;
      if (Number.isNaN(v)) continue;
      this.sum[f]! += v;
      this.count[f]!++;
      if (v > this.max[f]!) this.max[f] = v;
    }
  }

  finish(): Rollup {
    const avg: number[] = [];
    const max: number[] = [];
    for (let f = 0; f < FIELD_COUNT; f++) {
      const n = this.count[f]!;
      avg.push(n === 0 ? Number.NaN : this.sum[f]! / n);
      max.push(n === 0 ? Number.NaN : this.max[f]!);
    }
    return { end: this.end, samples: this.samples, avg, max, count: [...this.count] };
  }
}

/** A raw sample as the stores hand it over. */
export interface RawPoint {
  timestamp: number;
  /** FIELD_COUNT numbers, NaN for null. */
  values: ArrayLike<number>;
}

/**
 * The rollups of the windows ending from `firstEnd` to `lastEnd` that hold
 * at least one of `points` (which may come in any order), oldest first.
 */
export function rollupWindows(
  points: Iterable<RawPoint>,
  windowMs: number,
  firstEnd: number,
  lastEnd: number,
): Rollup[] {
  const windows = new Map<number, WindowAccumulator>();
  for (const p of points) {
    if (p.timestamp <= firstEnd - windowMs || p.timestamp > lastEnd) continue;
    const end = windowEnd(p.timestamp, windowMs);
    let acc = windows.get(end);
    if (!acc) windows.set(end, (acc = new WindowAccumulator(end)));
    acc.add(p.values);
  }
  return [...windows.values()].sort((a, b) => a.end - b.end).map((w) => w.finish());
}

/**
 * Coarser points from rollups (oldest first): one per bucket of
 * `bucketMs` (a multiple of the window length, aligned to the epoch) that
 * holds any, with each field's average weighted by its count and the
 * maximum of the maxima. So an hour's average is that of every raw value
 * in the hour, not an average of averages.
 */
export function reaggregate(rollups: readonly Rollup[], bucketMs: number): Rollup[] {
  const out: Rollup[] = [];
  let current: { end: number; samples: number; sum: number[]; max: number[]; count: number[] } | null = null;
  const flush = () => {
    if (!current) return;
    const c = current;
    out.push({
      end: c.end,
      samples: c.samples,
      avg: c.sum.map((s, f) => (c.count[f] === 0 ? Number.NaN : s / c.count[f]!)),
      max: c.max.map((m, f) => (c.count[f] === 0 ? Number.NaN : m)),
      count: c.count,
    });
  };
  for (const r of rollups) {
    const end = windowEnd(r.end, bucketMs);
    if (current === null || current.end !== end) {
      flush();
      current = {
        end,
        samples: 0,
        sum: new Array<number>(FIELD_COUNT).fill(0),
        max: new Array<number>(FIELD_COUNT).fill(Number.NEGATIVE_INFINITY),
        count: new Array<number>(FIELD_COUNT).fill(0),
      };
    }
    current.samples += r.samples;
    for (let f = 0; f < FIELD_COUNT; f++) {
      const n = r.count[f]!;
      if (n === 0) continue;
      current.sum[f]! += r.avg[f]! * n;
      current.count[f]! += n;
      if (r.max[f]! > current.max[f]!) current.max[f] = r.max[f]!;
    }
  }
  flush();
  return out;
}

/**
 * The window ends from..to (inclusive) a read at `bucketMs` answers with,
 * and the rollup window ends it needs: (firstEnd - bucketMs, lastEnd].
 * Null when no bucket ends in the range.
 */
export function bucketRange(from: number, to: number, bucketMs: number): { firstEnd: number; lastEnd: number } | null {
  const firstEnd = Math.ceil(from / bucketMs) * bucketMs;
  const lastEnd = Math.floor(to / bucketMs) * bucketMs;
  return firstEnd <= lastEnd ? { firstEnd, lastEnd } : null;
}

/** A rollup as a point: the average or maximum of each field, null where the window had no value. */
export function rollupSample(r: Rollup, aggregate: Aggregate, intervalSeconds: number): MetricSample {
  const values = aggregate === 'AVERAGE' ? r.avg : r.max;
  return pointSample(r.end, intervalSeconds, values);
}

/** A sample from FIELD_COUNT numbers of `values` from `offset` on (NaN for null). Platform counters are not kept: `raw` is empty. */
export function pointSample(
  timestamp: number,
  intervalSeconds: number,
  values: ArrayLike<number>,
  offset = 0,
): MetricSample {
  const sample = { timestamp, intervalSeconds, raw: {} } as MetricSample;
  for (let f = 0; f < FIELD_COUNT; f++) {
    const v = values[offset + f] as number;
    sample[METRIC_FIELDS[f]!] = Number.isNaN(v) ? null : v;
  }
  return sample;
}

/** A sample's numbers in METRIC_FIELDS order, NaN for null (and for anything not finite). */
export function sampleValues(sample: MetricSample): number[] {
  return METRIC_FIELDS.map((f) => {
    const v = sample[f];
    return typeof v === 'number' && Number.isFinite(v) ? v : Number.NaN;
  });
}

/** Throws unless a sample can be recorded: a finite timestamp and a positive interval. */
export function checkSample(nativeId: string, sample: MetricSample): void {
  if (!Number.isFinite(sample.timestamp))
    throw new RangeError(`sample of ${nativeId}: timestamp ${sample.timestamp} is not a time`);
  if (!(Number.isFinite(sample.intervalSeconds) && sample.intervalSeconds > 0))
    throw new RangeError(`sample of ${nativeId}: intervalSeconds ${sample.intervalSeconds} is not positive`);
}

/**
 * What a read at `resolutionSeconds` answers with: the raw samples (null
 * resolution, or the raw interval), or rollups re-aggregated to
 * `resolutionSeconds`. Throws a RangeError for any other resolution.
 */
export function readPlan(
  resolutionSeconds: number | null,
  rawIntervalSeconds: number | null,
  rollupSeconds: number,
): 'RAW' | 'ROLLUP' {
  if (resolutionSeconds === null || resolutionSeconds === rawIntervalSeconds) return 'RAW';
  if (Number.isInteger(resolutionSeconds) && resolutionSeconds > 0 && resolutionSeconds % rollupSeconds === 0)
    return 'ROLLUP';
  throw new RangeError(
    `no history at ${resolutionSeconds} s: it is kept raw` +
      (rawIntervalSeconds === null ? '' : ` (${rawIntervalSeconds} s)`) +
      ` and in multiples of ${rollupSeconds} s`,
  );
}

import type { MetricEntityKind, MetricSample } from '../model/metrics.js';

/**
 * How long the gateway keeps the history it records itself (for platforms
 * that keep none of their own: libvirt).
 */
export interface HistoryRetention {
  /** How far back raw samples reach (s). @default 86_400 // a day */
  rawSeconds: number;
  /** The length of a rollup window (s); readable resolutions are multiples of it. @default 300 // 5 minutes */
  rollupSeconds: number;
  /** How far back rollups reach (s). @default 2_592_000 // 30 days */
  rollupRetentionSeconds: number;
}

export const DEFAULT_RETENTION: HistoryRetention = {
  rawSeconds: 86_400,
  rollupSeconds: 300,
  rollupRetentionSeconds: 30 * 86_400,
};

/** Which value of a rollup a point carries. */
export type Aggregate = 'AVERAGE' | 'MAXIMUM';

/** What the history holds of one object. */
export interface HistoryExtent {
  /** The interval of the newest raw sample kept (s); null when none is kept. */
  rawIntervalSeconds: number | null;
  /** The timestamp of the oldest raw sample kept (ms), or null. */
  rawFrom: number | null;
  /** The length of a rollup window (s). */
  rollupSeconds: number;
  /** The timestamp (window end) of the oldest rollup kept (ms), or null. */
  rollupFrom: number | null;
}

/**
 * The metrics history the gateway records: raw samples for `rawSeconds`,
 * and per `rollupSeconds` window the average and maximum of each field
 * (with the number of values they came from) for `rollupRetentionSeconds`.
 *
 * Only the neutral METRIC_FIELDS are kept: the platform-only counters of a
 * sample (`raw`) are not, and every point read back has `raw: {}`.
 *
 * A rollup point is a MetricSample whose timestamp is its window's end and
 * whose intervalSeconds is the window's length; a window (end - length, end]
 * holds the samples whose timestamp falls in it. Each field is the average
 * (or maximum) of the window's non-null raw values, null where all were
 * null. A window without raw samples has no point.
 *
 * Time is the samples' time: windows close and retention is trimmed by the
 * newest timestamp recorded, not by the clock.
 */
export interface MetricHistoryStore {
  readonly retention: HistoryRetention;
  /**
   * Records one sampling: a sample per object (keys are native IDs).
   * Recording the same timestamp again replaces it. Closes and stores every
   * rollup window that ended at or before the newest sample, computed from
   * the stored raw samples of that window (so rollups are correct against
   * the raw samples, also after another instance recorded part of the
   * window, and a window a late sample falls into is computed again while
   * its raw samples are all kept). Trims what is past retention (the
   * Redis store once per hundredth of it: what is kept may reach that much
   * further back).
   * Calls for one platform and kind run one after the other.
   */
  record(platformId: string, kind: MetricEntityKind, samples: ReadonlyMap<string, MetricSample>): Promise<void>;
  /**
   * The points from `from` to `to` (ms, inclusive), oldest first: raw
   * samples when `resolutionSeconds` is null or equals the interval of the
   * object's newest raw sample; otherwise rollups at `rollupSeconds` or a
   * multiple of it (windows aligned to the epoch; re-aggregated from
   * rollups: average weighted by each field's count, maximum of maxima),
   * each carrying `aggregate`. Rejects with a RangeError for any other
   * resolution.
   */
  read(
    platformId: string,
    kind: MetricEntityKind,
    nativeId: string,
    from: number,
    to: number,
    resolutionSeconds: number | null,
    aggregate: Aggregate,
  ): Promise<MetricSample[]>;
  /** What is kept of one object: the raw interval seen, and how far back raw samples and rollups reach. */
  kept(platformId: string, kind: MetricEntityKind, nativeId: string): Promise<HistoryExtent>;
  close(): Promise<void>;
}

/** Throws unless the retention is one a store can work with. */
export function checkRetention(r: HistoryRetention): void {
  const whole = (n: number) => Number.isInteger(n) && n > 0;
  if (!whole(r.rawSeconds) || !whole(r.rollupSeconds) || !whole(r.rollupRetentionSeconds))
    throw new RangeError('history retention must be whole positive seconds');
  // A window is computed from its raw samples, which must still all be kept
  // when the window closes, up to a window after its end.
  if (r.rawSeconds < 2 * r.rollupSeconds) throw new RangeError('rawSeconds must be at least twice rollupSeconds');
  if (r.rollupRetentionSeconds < r.rollupSeconds)
    throw new RangeError('rollupRetentionSeconds must be at least rollupSeconds');
}

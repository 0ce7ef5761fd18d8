/** What a metric sample describes. */
export type MetricEntityKind = 'VM' | 'HOST';

/** The neutral numbers of a sample, every platform alike; null where the platform does not know one. */
export const METRIC_FIELDS = [
  'cpuUsagePercent',
  'cpuReadyPercent',
  'memoryUsedBytes',
  'memoryUsagePercent',
  'diskReadBytesPerSecond',
  'diskWriteBytesPerSecond',
  'diskReadIops',
  'diskWriteIops',
  'networkRxBytesPerSecond',
  'networkTxBytesPerSecond',
] as const;
export type MetricField = (typeof METRIC_FIELDS)[number];

/**
 * How busy a VM or host was over one interval. Rates are averages over the
 * interval that ends at `timestamp`.
 */
export type MetricSample = {
  /** The end of the interval, in ms since the epoch. */
  timestamp: number;
  /** How long the interval was. */
  intervalSeconds: number;
  /**
   * Counters only this platform has, by the platform's own name
   * (vSphere `cpu.usagemhz.average`, libvirt `cpu.time`), as it reported them.
   */
  raw: Record<string, number>;
} & Record<MetricField, number | null>;

/** A sample of nothing: every number unknown. */
export function emptySample(timestamp: number, intervalSeconds: number): MetricSample {
  const sample = { timestamp, intervalSeconds, raw: {} } as MetricSample;
  for (const f of METRIC_FIELDS) sample[f] = null;
  return sample;
}

/** The objects one sampling asks about, by native ID. */
export interface MetricTargets {
  vms: readonly string[];
  hosts: readonly string[];
}

/**
 * What one sampling returned: a sample per native ID that has one. An ID
 * that is missing has no sample this time (a VM that is off, one the
 * platform has no data for yet); an Error is one that could not be read.
 */
export interface MetricReadings {
  vms: Map<string, MetricSample | Error>;
  hosts: Map<string, MetricSample | Error>;
}

/** A resolution at which a platform keeps history of its own, and for how long. */
export interface HistoryResolution {
  resolutionSeconds: number;
  retentionSeconds: number;
}

/**
 * A platform's performance counters. Implementations make a number of
 * upstream calls per sampling that does not depend on how many objects are
 * asked about (vSphere: one QueryPerf; libvirt: one bulk stats call and the
 * node's counters).
 */
export interface MetricsSource {
  /** The shortest interval live samples can have; intervals are multiples of it. */
  readonly minIntervalSeconds: number;
  /** The platform's own history (vSphere's historical intervals); empty where it keeps none. */
  readonly historyResolutions: readonly HistoryResolution[];
  /**
   * The latest sample of each target. Where rates come from two readings
   * (libvirt), they cover the time since this source's previous reading of
   * the object, or a short window the call waits for when it has none recent.
   */
  sample(targets: MetricTargets, intervalSeconds: number): Promise<MetricReadings>;
  /**
   * The platform's own history at one of `historyResolutions`: the points
   * from `from` to `to` (ms since the epoch, inclusive), oldest first.
   */
  history(
    kind: MetricEntityKind,
    nativeIds: readonly string[],
    from: number,
    to: number,
    resolutionSeconds: number,
  ): Promise<Map<string, MetricSample[] | Error>>;
}

/** The sample under the name the generated resolver types map it by. */
export type MetricSampleRecord = MetricSample;

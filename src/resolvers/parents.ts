import type { Aggregate } from '../metrics/history-store.js';
import type { MetricEntityKind } from '../model/metrics.js';
import type { VmDiskRecord, VmNicRecord } from '../model/vm.js';

/** A disk with the platform it lives on, so its storage can be resolved. */
export type VmDiskParent = VmDiskRecord & { platformId: string };
/** A NIC with the platform it lives on, so its network can be resolved. */
export type VmNicParent = VmNicRecord & { platformId: string };

/** What a `metrics` field was asked: whose, and over which range. */
export interface MetricSeriesParent {
  platformId: string;
  kind: MetricEntityKind;
  nativeId: string;
  /** ms since the epoch; null when no range was asked. */
  from: number | null;
  to: number;
  resolutionSeconds: number | null;
  aggregate: Aggregate;
}

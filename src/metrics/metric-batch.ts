import type { MetricEntityKind, MetricSample } from '../model/metrics.js';

/** One object's sample in a batch, as subscriptions deliver it (one object per batch, shared by every subscriber). */
export interface MetricUpdate {
  /** Unique per batch and object: what a result shared between subscribers is kept under. */
  key: string;
  platformId: string;
  kind: MetricEntityKind;
  nativeId: string;
  sample: MetricSample;
}

/** What one sampling of a platform at one interval produced. */
export interface MetricBatch {
  platformId: string;
  intervalSeconds: number;
  /** When it was taken (ms); a multiple of the interval for a scheduled sampling. */
  tick: number;
  /** Taken on the interval's schedule (not a catch-up for objects that just became watched). */
  scheduled: boolean;
  /** By `kind:nativeId`. */
  updates: ReadonlyMap<string, MetricUpdate>;
  /** Objects that could not be read, by `kind:nativeId`, with why. */
  errors: ReadonlyMap<string, string>;
  /** Objects asked about that have no sample this time (a VM that is off), by `kind:nativeId`. */
  missing: readonly string[];
}

export const targetKey = (kind: MetricEntityKind, nativeId: string): string => `${kind}:${nativeId}`;

export function parseTargetKey(key: string): { kind: MetricEntityKind; nativeId: string } {
  const i = key.indexOf(':');
  return { kind: key.slice(0, i) as MetricEntityKind, nativeId: key.slice(i + 1) };
}

export function metricBatch(
  fields: Omit<MetricBatch, 'updates' | 'errors' | 'missing'>,
  samples: Iterable<[MetricEntityKind, string, MetricSample]>,
  errors: ReadonlyMap<string, string> = new Map(),
  missing: readonly string[] = [],
): MetricBatch {
  const updates = new Map<string, MetricUpdate>();
  for (const [kind, nativeId, sample] of samples) {
    const target = targetKey(kind, nativeId);
    updates.set(target, {
      key: `${fields.platformId}|${fields.intervalSeconds}|${fields.tick}|${target}`,
      platformId: fields.platformId,
      kind,
      nativeId,
      sample,
    });
  }
  return { ...fields, updates, errors, missing };
}

/** A batch as JSON, for other instances. */
export interface WireBatch {
  platformId: string;
  intervalSeconds: number;
  tick: number;
  scheduled: boolean;
  samples: [MetricEntityKind, string, MetricSample][];
  errors: [string, string][];
  missing: string[];
}

export function toWire(batch: MetricBatch): WireBatch {
  return {
    platformId: batch.platformId,
    intervalSeconds: batch.intervalSeconds,
    tick: batch.tick,
    scheduled: batch.scheduled,
    samples: [...batch.updates.values()].map((u) => [u.kind, u.nativeId, u.sample]),
    errors: [...batch.errors],
    missing: [...batch.missing],
  };
}

export function fromWire(wire: WireBatch): MetricBatch {
  const { samples, errors, missing, ...fields } = wire;
  return metricBatch(fields, samples, new Map(errors), missing ?? []);
}

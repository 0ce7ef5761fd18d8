import type { MetricUpdate } from '../metrics/metric-batch.js';
import type { MetricEntityKind } from '../model/metrics.js';
import { SubscriberQueue, type SubscribeOptions, type SubscriberStream } from './subscriber-queue.js';

/** What a vmMetrics or hostMetrics subscriber receives: one object's sample. */
export interface MetricDelivery {
  type: 'METRICS';
  update: MetricUpdate;
}

/** Where metric subscriptions get their samples (the metrics service). */
export interface MetricWatcher {
  watch(
    platformId: string,
    kind: MetricEntityKind,
    nativeIds: readonly string[],
    intervalSeconds: number,
    onUpdate: (update: MetricUpdate) => void,
  ): () => void;
}

/**
 * One subscriber's samples of some objects (on one or more platforms) at
 * one interval, through the same bounded queue as events: a client that
 * does not read is cut off, not thinned. Watching stops when it goes.
 */
export function subscribeMetrics(
  watcher: MetricWatcher,
  kind: MetricEntityKind,
  byPlatform: ReadonlyMap<string, readonly string[]>,
  intervalSeconds: number,
  options: Pick<SubscribeOptions, 'maxQueue' | 'onOverflow'>,
): SubscriberStream<MetricDelivery> {
  const releases: (() => void)[] = [];
  const queue = new SubscriberQueue<MetricDelivery>(options, () => {
    for (const release of releases.splice(0)) release();
  });
  try {
    for (const [platformId, ids] of byPlatform) {
      releases.push(
        watcher.watch(platformId, kind, ids, intervalSeconds, (update) => queue.push({ type: 'METRICS', update })),
      );
    }
  } catch (e) {
    for (const release of releases.splice(0)) release();
    throw e;
  }
  return queue;
}

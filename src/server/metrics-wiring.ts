import type { Logger } from 'pino';

import type { Config } from '../config/schema.js';
import type { PlatformRegistry } from '../datasources/registry.js';
import type { Inventory } from '../inventory/inventory.js';
import type { HistoryRetention, MetricHistoryStore } from '../metrics/history-store.js';
import { MemoryMetricHistory } from '../metrics/memory-history.js';
import { MetricsRelay } from '../metrics/metrics-relay.js';
import { MetricsService } from '../metrics/metrics-service.js';
import { RedisMetricHistory } from '../metrics/redis-history.js';
import type { SharedState } from './shared-state.js';

/**
 * Metrics as the configuration asks: recorded history in Redis when the
 * instances share one (it outlives a restart), in bounded memory otherwise,
 * and none when no platform records; samples relayed between instances.
 */
export function openMetrics(
  config: Config,
  shared: SharedState,
  registry: PlatformRegistry,
  inventory: Inventory,
  logger: Logger,
): MetricsService {
  const h = config.metrics.history;
  const retention: HistoryRetention = {
    rawSeconds: h.rawRetentionSeconds,
    rollupSeconds: h.rollupSeconds,
    rollupRetentionSeconds: h.rollupRetentionSeconds,
  };
  const records = config.platforms.some((p) => p.kind === 'libvirt' && p.metrics.history);
  const log = logger.child({ room: 'metrics' });
  let store: MetricHistoryStore | null = null;
  if (records) {
    store = shared.redis
      ? new RedisMetricHistory(shared.redis, shared.keyPrefix, { retention })
      : new MemoryMetricHistory({ retention, maxBytes: h.maxMemoryMiB * 1024 * 1024, logger: log });
  }
  const relay =
    shared.redis && shared.replication
      ? new MetricsRelay(shared.redis, shared.keyPrefix, shared.replication.instanceId, log)
      : null;
  return new MetricsService(
    registry,
    inventory,
    config.metrics,
    config.limits.maxSeriesPoints,
    config.platforms,
    store,
    relay,
    logger,
  );
}

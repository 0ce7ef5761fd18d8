import type { Logger } from 'pino';

import type { Config } from '../config/schema.js';
import { Replication } from '../inventory/replication/replication.js';
import { errorMessage } from '../model/errors.js';
import { type RedisClient, connectRedis, createRedis } from '../state/redis.js';

/** What instances share, when Redis is configured and reachable. */
export interface SharedState {
  /** null: this instance runs alone (no Redis configured, or Redis was down at start). */
  replication: Replication | null;
  redis: RedisClient | null;
  /** The prefix of every key the instances share. */
  keyPrefix: string;
  /** For /readyz and /healthz: Redis, and who holds each platform's lease. */
  health(): Record<string, unknown>;
  close(): Promise<void>;
}

/**
 * Connects to Redis when configured. A Redis that does not answer at start
 * does not stop the gateway: it runs alone (it watches every platform
 * itself, and its subscribers see only its own events), says so in the log
 * and in /readyz, and needs a restart to join the others.
 */
export async function openSharedState(config: Config, logger: Logger): Promise<SharedState> {
  if (!config.redis) {
    return { replication: null, redis: null, keyPrefix: '', health: () => ({}), close: async () => undefined };
  }
  const redisConfig = config.redis;
  const keyPrefix = redisConfig.keyPrefix;
  const redis = createRedis(redisConfig, logger.child({ room: 'redis' }));
  try {
    await connectRedis(redis, redisConfig.connectTimeoutMs);
  } catch (e) {
    redis.disconnect();
    const reason = errorMessage(e);
    logger.warn(
      { err: reason },
      'Redis is unreachable: this instance runs alone (it watches every platform itself, and its subscribers get only its own events) until it is restarted',
    );
    return {
      replication: null,
      redis: null,
      keyPrefix,
      health: () => ({ redis: { status: 'UNAVAILABLE', reason }, subscriptions: 'DEGRADED' }),
      close: async () => undefined,
    };
  }
  const replication = new Replication(redis, redisConfig, logger);
  logger.info({ instance: replication.instanceId }, 'connected to Redis: sharing platforms with other instances');
  return {
    replication,
    redis,
    keyPrefix,
    health: () => ({
      redis: { status: redis.status === 'ready' ? 'CONNECTED' : 'RECONNECTING', instance: replication.instanceId },
      subscriptions: redis.status === 'ready' ? 'OK' : 'DEGRADED',
      leases: replication.leases().map((l) => ({
        platform: l.platformId,
        role: l.role,
        holder: l.holder,
        heldSince: l.heldSince?.toISOString() ?? null,
      })),
    }),
    close: async () => {
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}

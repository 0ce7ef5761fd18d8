import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';

import type { RedisConfig } from '../config/schema.js';
import { errorMessage } from '../model/errors.js';

/** A connection to Redis: one server (direct or through Sentinel) or a Cluster. */
export type RedisClient = Redis | Cluster;

/** How long a command waits for Redis before failing, so that a dead Redis never hangs a request (ms). */
const COMMAND_TIMEOUT_MS = 5_000;

/** Reconnects at once, then backs off to at most 2 s: the leases' renewals must not wait long. */
const retryStrategy = (attempt: number) => Math.min(50 * 2 ** Math.min(attempt, 6), 2_000);

/**
 * Opens the gateway's connection to Redis as configured (URL, Sentinel or
 * Cluster) without waiting for it. Commands given while Redis is away fail
 * at once instead of queueing: every caller has its own retry policy.
 */
export function createRedis(config: RedisConfig, logger: Logger): RedisClient {
  const common: RedisOptions = {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: config.connectTimeoutMs,
    commandTimeout: COMMAND_TIMEOUT_MS,
    retryStrategy,
    ...(config.password !== undefined ? { password: config.password } : {}),
  };
  let client: RedisClient;
  if (config.cluster) {
    client = new Cluster(config.cluster, {
      lazyConnect: true,
      enableOfflineQueue: false,
      clusterRetryStrategy: retryStrategy,
      redisOptions: common,
    });
  } else if (config.sentinels) {
    client = new Redis({ ...common, sentinels: config.sentinels, name: config.sentinelName });
  } else {
    client = new Redis(config.url as string, common);
  }
  let down = false;
  const lost = (e: unknown) => {
    if (down) return;
    down = true;
    logger.warn({ err: errorMessage(e) }, 'lost the connection to Redis; retrying');
  };
  client.on('error', lost);
  // A Cluster tells of one node's trouble apart from its own.
  if (client instanceof Cluster) client.on('node error', lost);
  client.on('ready', () => {
    if (down) logger.info('connected to Redis again');
    down = false;
  });
  return client;
}

/** A second connection for commands that block (XREAD BLOCK), which would hold up everything else on a shared one. */
export function blockingConnection(client: RedisClient): RedisClient {
  const copy: RedisClient = client instanceof Cluster ? client.duplicate() : client.duplicate();
  copy.on('error', () => {
    // Told once by the main connection; this one reconnects on its own.
  });
  // Connected now: commands on a connection that is not yet up fail at once (no offline queue).
  copy.connect().catch(() => undefined);
  return copy;
}

/** Connects, or throws after `timeoutMs`; the client keeps retrying in the background either way. */
export async function connectRedis(client: RedisClient, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      client.connect().catch((e: unknown) => {
        // ioredis rejects the first attempt but keeps reconnecting; wait for one that succeeds.
        if (client.status === 'ready') return;
        return new Promise<void>((resolve, reject) => {
          client.once('ready', resolve);
          client.once('end', () => reject(e));
        });
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Redis did not answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs a Lua script (sent whole each time: the scripts are short, and a
 * restarted Redis has forgotten any cached one).
 */
export function runScript(
  client: RedisClient,
  lua: string,
  keys: readonly string[],
  args: readonly (string | number)[],
): Promise<unknown> {
  return client.eval(lua, keys.length, ...keys, ...args);
}

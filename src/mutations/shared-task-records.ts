import type { Logger } from 'pino';

import { errorMessage } from '../model/errors.js';
import type { RedisClient } from '../state/redis.js';
import type { StoredTask } from './task-manager.js';

/**
 * Every instance's tasks, kept in Redis (a hash by ID and their order of
 * creation), so that an instance that starts later still knows the tasks
 * the others ran: `task(id)` and `tasks` answer the same on every instance.
 * Each instance keeps running its own tasks and its own journal (it alone
 * resumes them after a restart); this is what the others see of them.
 */
export class SharedTaskRecords {
  private readonly records: string;
  private readonly order: string;

  constructor(
    private readonly redis: RedisClient,
    prefix: string,
    /** Tasks kept; the oldest go first. */
    private readonly retain: number,
    private readonly logger: Logger,
  ) {
    // One hash tag: in a Cluster both keys live on one node, for MULTI.
    this.records = `${prefix}{tasks}:records`;
    this.order = `${prefix}{tasks}:order`;
  }

  /** Keeps a task as it is now (in the background: the event stream tells it at once anyway). */
  save(task: StoredTask): void {
    this.redis
      .multi()
      .hset(this.records, task.id, JSON.stringify(task))
      .zadd(this.order, 'NX', Date.parse(task.createdAt), task.id)
      .exec()
      .then(() => this.trim())
      .catch((e: unknown) =>
        this.logger.warn({ err: errorMessage(e), task: task.id }, 'could not share a task record'),
      );
  }

  private async trim(): Promise<void> {
    const excess = (await this.redis.zcard(this.order)) - this.retain;
    if (excess <= 0) return;
    const oldest = await this.redis.zrange(this.order, '0', String(excess - 1));
    if (oldest.length > 0)
      await this.redis
        .multi()
        .zrem(this.order, ...oldest)
        .hdel(this.records, ...oldest)
        .exec();
  }

  /** One task as its instance last shared it; null when no instance keeps it. */
  async get(id: string): Promise<StoredTask | null> {
    const value = await this.redis.hget(this.records, id);
    return value === null ? null : (JSON.parse(value) as StoredTask);
  }

  /** The newest `retain` tasks, oldest first. */
  async recent(): Promise<StoredTask[]> {
    const ids = await this.redis.zrange(this.order, String(-this.retain), '-1');
    if (ids.length === 0) return [];
    const values = await this.redis.hmget(this.records, ...ids);
    return values.flatMap((v) => (v === null ? [] : [JSON.parse(v) as StoredTask]));
  }
}

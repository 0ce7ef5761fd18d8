import type { Logger } from 'pino';

import { errorMessage } from '../model/errors.js';
import { type RedisClient, blockingConnection } from '../state/redis.js';
import { type WireBatch, fromWire, toWire } from './metric-batch.js';
import type { IntervalInterest, PlatformSampler } from './platform-sampler.js';

/** How often an instance tells again what it watches; what it said lapses after three times this. */
const INTEREST_REFRESH_MS = 5_000;
/** Changes in what an instance watches are told after this pause, to tell a burst of subscriptions at once. */
const INTEREST_DEBOUNCE_MS = 50;

type RelayMessage = { t: 'batch'; by: string; batch: WireBatch } | { t: 'interest'; by: string };

/**
 * Metrics across instances. Each instance keeps what its clients watch in
 * one Redis hash per platform (field: the instance; value: its interests
 * and when they lapse), and says on the platform's channel when it changed.
 * The instance that samples the platform (its lease holder) reads the hash
 * and samples the union; every batch it takes goes out on the channel, and
 * the other instances hand it to their own subscribers. Samples are live
 * numbers: one missed while an instance reconnects is not replayed.
 */
export class MetricsRelay {
  private readonly subscriber: RedisClient;
  private readonly samplers = new Map<string, PlatformSampler>();
  private readonly dirty = new Set<string>();
  private debounce: NodeJS.Timeout | null = null;
  private readonly refresh: NodeJS.Timeout;

  constructor(
    private readonly redis: RedisClient,
    private readonly keyPrefix: string,
    private readonly instanceId: string,
    private readonly logger: Logger,
  ) {
    this.subscriber = blockingConnection(redis);
    this.subscriber.on('messageBuffer', (channel: Buffer, message: Buffer) => this.onMessage(channel, message));
    this.refresh = setInterval(() => {
      for (const id of this.samplers.keys()) this.dirty.add(id);
      void this.flush();
    }, INTEREST_REFRESH_MS);
    this.refresh.unref();
  }

  private interestKey(platformId: string): string {
    return `${this.keyPrefix}{${platformId}}:metrics:interest`;
  }

  private channel(platformId: string): string {
    return `${this.keyPrefix}{${platformId}}:metrics`;
  }

  /** Shares a platform's sampler with the other instances. */
  add(sampler: PlatformSampler): void {
    const platformId = sampler.platformId;
    this.samplers.set(platformId, sampler);
    sampler.onInterestChange(() => this.markDirty(platformId));
    sampler.onBatch((batch, sampledHere) => {
      if (!sampledHere) return;
      const message: RelayMessage = { t: 'batch', by: this.instanceId, batch: toWire(batch) };
      this.redis.publish(this.channel(platformId), JSON.stringify(message)).catch((e: unknown) => {
        this.logger.warn({ platform: platformId, err: errorMessage(e) }, 'could not relay a metrics batch');
      });
    });
    this.subscriber.subscribe(this.channel(platformId)).catch((e: unknown) => {
      this.logger.warn({ platform: platformId, err: errorMessage(e) }, 'could not subscribe to relayed metrics');
    });
    this.markDirty(platformId);
    void this.readInterest(platformId);
  }

  async stop(): Promise<void> {
    clearInterval(this.refresh);
    if (this.debounce) clearTimeout(this.debounce);
    await Promise.all(
      [...this.samplers.keys()].map((id) => this.redis.hdel(this.interestKey(id), this.instanceId).catch(() => 0)),
    );
    this.subscriber.disconnect();
  }

  private markDirty(platformId: string): void {
    this.dirty.add(platformId);
    this.debounce ??= setTimeout(() => {
      this.debounce = null;
      void this.flush();
    }, INTEREST_DEBOUNCE_MS);
  }

  /** Writes what this instance watches, and reads what the others do (the sampling instance needs it). */
  private async flush(): Promise<void> {
    const ids = [...this.dirty];
    this.dirty.clear();
    await Promise.all(
      ids.map(async (platformId) => {
        const sampler = this.samplers.get(platformId);
        if (!sampler) return;
        const intervals = sampler.localInterest();
        try {
          if (intervals.length === 0) await this.redis.hdel(this.interestKey(platformId), this.instanceId);
          else {
            const value = JSON.stringify({ expiresAt: Date.now() + 3 * INTEREST_REFRESH_MS, intervals });
            await this.redis.hset(this.interestKey(platformId), this.instanceId, value);
          }
          const notice: RelayMessage = { t: 'interest', by: this.instanceId };
          await this.redis.publish(this.channel(platformId), JSON.stringify(notice));
        } catch (e) {
          this.logger.warn(
            { platform: platformId, err: errorMessage(e) },
            'could not share what this instance watches',
          );
        }
        await this.readInterest(platformId);
      }),
    );
  }

  private async readInterest(platformId: string): Promise<void> {
    const sampler = this.samplers.get(platformId);
    if (!sampler) return;
    let all: Record<string, string>;
    try {
      all = await this.redis.hgetall(this.interestKey(platformId));
    } catch {
      return;
    }
    const now = Date.now();
    // An instance whose clients stopped watching removed its entry: its interests end now.
    for (const instance of sampler.remoteInstances())
      if (!(instance in all)) sampler.setRemoteInterest(instance, [], 0);
    for (const [instance, json] of Object.entries(all)) {
      if (instance === this.instanceId) continue;
      const parsed = parseInterest(json);
      if (!parsed || parsed.expiresAt < now) {
        // An instance that stopped without saying so: its interests lapse.
        void this.redis.hdel(this.interestKey(platformId), instance).catch(() => 0);
        sampler.setRemoteInterest(instance, [], 0);
      } else sampler.setRemoteInterest(instance, parsed.intervals, parsed.expiresAt);
    }
    sampler.expireRemoteInterest(now);
  }

  private onMessage(channelBuffer: Buffer, message: Buffer): void {
    const channel = channelBuffer.toString();
    const platformId = /\{([^}]+)\}:metrics$/.exec(channel)?.[1];
    const sampler = platformId ? this.samplers.get(platformId) : undefined;
    if (!sampler || !platformId) return;
    let parsed: RelayMessage;
    try {
      parsed = JSON.parse(message.toString()) as RelayMessage;
    } catch {
      return;
    }
    if (parsed.by === this.instanceId) return;
    if (parsed.t === 'interest') void this.readInterest(platformId);
    else if (parsed.t === 'batch' && parsed.batch.platformId === platformId) sampler.deliver(fromWire(parsed.batch));
  }
}

function parseInterest(json: string): { expiresAt: number; intervals: IntervalInterest[] } | null {
  try {
    const v = JSON.parse(json) as { expiresAt?: unknown; intervals?: unknown };
    if (typeof v.expiresAt !== 'number' || !Array.isArray(v.intervals)) return null;
    return { expiresAt: v.expiresAt, intervals: v.intervals as IntervalInterest[] };
  } catch {
    return null;
  }
}

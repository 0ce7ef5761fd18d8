import DataLoader from 'dataloader';
import type { Logger } from 'pino';

import type { Config, MetricsConfig } from '../config/schema.js';
import type { PlatformRegistry } from '../datasources/registry.js';
import type { Inventory } from '../inventory/inventory.js';
import { ErrorCode, GatewayError, errorMessage } from '../model/errors.js';
import type { MetricEntityKind, MetricSample, MetricsSource } from '../model/metrics.js';
import type { Aggregate, MetricHistoryStore } from './history-store.js';
import { type HistoryOffer, type HistoryRange, planHistory } from './history-plan.js';
import { type MetricUpdate, targetKey } from './metric-batch.js';
import type { MetricsRelay } from './metrics-relay.js';
import { PlatformSampler } from './platform-sampler.js';

/** The longest live interval a subscription may ask for. */
const MAX_INTERVAL_SECONDS = 3_600;

/** A history read's answer. */
export interface MetricHistory {
  resolutionSeconds: number;
  source: HistoryOffer['source'];
  aggregate: Aggregate;
  points: MetricSample[];
}

interface PlatformHistoryKey {
  platformId: string;
  kind: MetricEntityKind;
  from: number;
  to: number;
  resolutionSeconds: number;
}

/**
 * Metrics of every platform: live samples (sampled once per platform and
 * interval, whoever watches), the latest sample of an object, history
 * (the platform's own, or what the gateway records), and the recording.
 */
export class MetricsService {
  private readonly samplers = new Map<string, PlatformSampler>();
  private readonly recording = new Map<string, number>();
  private readonly lingering = new Map<string, { release: () => void; timer: NodeJS.Timeout }>();
  private readonly releases: (() => void)[] = [];
  /** The platform's own history reads of one tick, one call per platform, kind, range and resolution. */
  private readonly platformHistory = new Map<string, DataLoader<string, MetricSample[]>>();

  constructor(
    private readonly registry: PlatformRegistry,
    private readonly inventory: Inventory,
    private readonly config: MetricsConfig,
    /** Most points a series may have. */
    private readonly maxSeriesPoints: number,
    platforms: Config['platforms'],
    private readonly store: MetricHistoryStore | null,
    private readonly relay: MetricsRelay | null,
    private readonly logger: Logger,
  ) {
    for (const p of registry.providers) {
      if (!p.metrics) continue;
      const sampler = new PlatformSampler(
        p.id,
        p.metrics,
        () => {
          const lease = inventory.lease(p.id);
          return !lease || lease.role === 'HOLDER';
        },
        () => {
          const mirror = inventory.serving(p.id);
          return {
            vms: mirror?.listVms().map((v) => v.nativeId) ?? [],
            hosts: mirror?.listHosts().map((h) => h.nativeId) ?? [],
          };
        },
        logger.child({ platform: p.id, room: 'metrics' }),
      );
      this.samplers.set(p.id, sampler);
      const platformConfig = platforms.find((c) => c.id === p.id);
      if (platformConfig?.kind === 'libvirt' && platformConfig.metrics.history) {
        this.recording.set(p.id, platformConfig.metrics.historyIntervalSeconds);
      }
    }
  }

  /** Starts recording history and the estate's sampling, and shares samplers with other instances. */
  start(): void {
    for (const sampler of this.samplers.values()) {
      this.relay?.add(sampler);
      const interval = this.recording.get(sampler.platformId);
      if (interval !== undefined && this.store) {
        const store = this.store;
        this.releases.push(sampler.watch(interval, 'ALL'));
        sampler.onBatch((batch, sampledHere) => {
          // The instance that samples records, on the schedule only (catch-ups would skew the windows).
          if (!sampledHere || !batch.scheduled || batch.intervalSeconds !== interval) return;
          const byKind = { VM: new Map<string, MetricSample>(), HOST: new Map<string, MetricSample>() };
          for (const u of batch.updates.values()) byKind[u.kind].set(u.nativeId, u.sample);
          for (const kind of ['VM', 'HOST'] as const) {
            if (byKind[kind].size === 0) continue;
            store.record(sampler.platformId, kind, byKind[kind]).catch((e: unknown) => {
              this.logger.warn({ platform: sampler.platformId, err: errorMessage(e) }, 'could not record metrics');
            });
          }
        });
      }
      if (this.config.estate.enabled) this.releases.push(sampler.watch(this.config.estate.intervalSeconds, 'ALL'));
    }
  }

  async stop(): Promise<void> {
    for (const release of this.releases.splice(0)) release();
    for (const { timer } of this.lingering.values()) clearTimeout(timer);
    this.lingering.clear();
    for (const s of this.samplers.values()) s.stop();
    await this.relay?.stop();
    await this.store?.close();
  }

  /** The sampler of a platform, for tests, benchmarks and the estate's exposition. */
  sampler(platformId: string): PlatformSampler | undefined {
    return this.samplers.get(platformId);
  }

  private source(platformId: string): { sampler: PlatformSampler; source: MetricsSource } {
    const sampler = this.samplers.get(platformId);
    if (!sampler) {
      const kind = this.registry.get(platformId)?.kind ?? 'unknown';
      throw new GatewayError(
        ErrorCode.METRICS_UNAVAILABLE,
        `Platform ${platformId} (${kind}) has no metrics the gateway can read.`,
        { platformId },
      );
    }
    return { sampler, source: sampler.source };
  }

  /** Throws unless the platform samples at this interval. */
  checkInterval(platformId: string, intervalSeconds: number): void {
    const { source } = this.source(platformId);
    const min = source.minIntervalSeconds;
    if (
      !Number.isInteger(intervalSeconds) ||
      intervalSeconds < min ||
      intervalSeconds > MAX_INTERVAL_SECONDS ||
      intervalSeconds % min !== 0
    ) {
      throw new GatewayError(
        ErrorCode.INVALID_METRICS_REQUEST,
        `Platform ${platformId} samples every ${min} s or a multiple of it, up to ${MAX_INTERVAL_SECONDS} s; ${intervalSeconds} s is not one.`,
        { platformId, minIntervalSeconds: min, maxIntervalSeconds: MAX_INTERVAL_SECONDS },
      );
    }
  }

  /**
   * Watches objects of one platform at an interval: `onUpdate` gets each
   * object's sample as it comes. Returns the function that stops watching.
   */
  watch(
    platformId: string,
    kind: MetricEntityKind,
    nativeIds: readonly string[],
    intervalSeconds: number,
    onUpdate: (update: MetricUpdate) => void,
  ): () => void {
    this.checkInterval(platformId, intervalSeconds);
    const { sampler } = this.source(platformId);
    const keys = nativeIds.map((id) => targetKey(kind, id));
    return sampler.watch(intervalSeconds, { targets: keys }, (batch) => {
      for (const key of keys) {
        const update = batch.updates.get(key);
        if (update) onUpdate(update);
      }
    });
  }

  /**
   * The newest sample of an object. When nobody samples it, it is sampled
   * now and kept sampled for a while, so that the next ask is answered at once.
   */
  async latest(platformId: string, kind: MetricEntityKind, nativeId: string): Promise<MetricSample | null> {
    const { sampler, source } = this.source(platformId);
    const recent = sampler.latest(kind, nativeId);
    // A VM the live inventory knows to be off has no sample to wait for.
    if (!recent && kind === 'VM') {
      const state = this.inventory.serving(platformId)?.vm(nativeId);
      if (state && state.vm.powerState !== 'ON') return null;
    }
    const key = `${platformId}|${targetKey(kind, nativeId)}`;
    const interval = Math.max(
      source.minIntervalSeconds,
      Math.ceil(this.config.latestIntervalSeconds / source.minIntervalSeconds) * source.minIntervalSeconds,
    );
    let held = this.lingering.get(key);
    if (held) clearTimeout(held.timer);
    const release = held?.release ?? sampler.watch(interval, { targets: [targetKey(kind, nativeId)] });
    const timer = setTimeout(() => {
      this.lingering.delete(key);
      release();
    }, this.config.latestLingerSeconds * 1000);
    timer.unref();
    this.lingering.set(key, (held = { release, timer }));

    const now = sampler.latest(kind, nativeId);
    if (now) return now;
    await sampler.nextSampleOf(kind, nativeId, this.config.latestTimeoutMs);
    const sample = sampler.latest(kind, nativeId);
    if (sample) return sample;
    const failure = sampler.failure(kind, nativeId);
    if (failure) {
      throw new GatewayError(ErrorCode.PLATFORM_UNAVAILABLE, `Platform ${platformId} gave no sample: ${failure}`, {
        platformId,
      });
    }
    return null;
  }

  /** What the platform offers as history, or an error saying it has none. */
  private offer(platformId: string): HistoryOffer {
    const { source } = this.source(platformId);
    if (source.historyResolutions.length > 0) return { source: 'PLATFORM', resolutions: source.historyResolutions };
    const interval = this.recording.get(platformId);
    if (interval === undefined || !this.store) {
      throw new GatewayError(
        ErrorCode.METRICS_UNAVAILABLE,
        `Platform ${platformId} keeps no metrics history, and the gateway does not record it: set metrics.history: true on the platform in the configuration.`,
        { platformId },
      );
    }
    const r = this.store.retention;
    return {
      source: 'RECORDED',
      raw: { resolutionSeconds: interval, retentionSeconds: r.rawSeconds },
      rollup: { resolutionSeconds: r.rollupSeconds, retentionSeconds: r.rollupRetentionSeconds },
    };
  }

  /** Points of an object from..to (ms) at the resolution asked or chosen. */
  async history(
    platformId: string,
    kind: MetricEntityKind,
    nativeId: string,
    range: HistoryRange,
    resolutionSeconds: number | null,
    aggregate: Aggregate,
  ): Promise<MetricHistory> {
    const offer = this.offer(platformId);
    const now = Date.now();
    const clamped = { from: range.from, to: Math.min(range.to, now) };
    const plan = planHistory(offer, clamped, resolutionSeconds, this.maxSeriesPoints, now);
    if (offer.source === 'PLATFORM') {
      if (aggregate !== 'AVERAGE') {
        throw new GatewayError(
          ErrorCode.INVALID_METRICS_REQUEST,
          "This platform's own history holds averages only; ask aggregate: AVERAGE.",
          { platformId },
        );
      }
      const points = await this.platformHistoryLoader({ platformId, kind, ...clamped, ...plan }).load(nativeId);
      return { resolutionSeconds: plan.resolutionSeconds, source: 'PLATFORM', aggregate, points };
    }
    const store = this.store as MetricHistoryStore;
    const points = await store.read(
      platformId,
      kind,
      nativeId,
      clamped.from,
      clamped.to,
      plan.raw ? null : plan.resolutionSeconds,
      aggregate,
    );
    return { resolutionSeconds: plan.resolutionSeconds, source: 'RECORDED', aggregate, points };
  }

  /** One call to the platform for every object asked about in the same tick with the same range. */
  private platformHistoryLoader(k: PlatformHistoryKey): DataLoader<string, MetricSample[]> {
    const key = `${k.platformId}|${k.kind}|${k.from}|${k.to}|${k.resolutionSeconds}`;
    let loader = this.platformHistory.get(key);
    if (!loader) {
      loader = new DataLoader<string, MetricSample[]>(
        async (ids) => {
          this.platformHistory.delete(key);
          const { source } = this.source(k.platformId);
          const got = await source.history(k.kind, ids, k.from, k.to, k.resolutionSeconds).catch((e: unknown) => {
            // What the platform found it keeps once asked (an ESXi host keeps no history).
            if (e instanceof RangeError)
              throw new GatewayError(ErrorCode.INVALID_METRICS_REQUEST, e.message, { platformId: k.platformId });
            throw e;
          });
          return ids.map((id) => got.get(id) ?? []);
        },
        { cache: false },
      );
      this.platformHistory.set(key, loader);
    }
    return loader;
  }
}

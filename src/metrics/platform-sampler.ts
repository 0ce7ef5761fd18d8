import type { Logger } from 'pino';

import { errorMessage } from '../model/errors.js';
import type { MetricEntityKind, MetricSample, MetricTargets, MetricsSource } from '../model/metrics.js';
import { type MetricBatch, type MetricUpdate, metricBatch, parseTargetKey, targetKey } from './metric-batch.js';

/** What one interest asks for: some objects, or every VM and host of the platform. */
export type Interest = { targets: readonly string[] } | 'ALL';

/** Interests of one interval, as other instances are told them. */
export interface IntervalInterest {
  intervalSeconds: number;
  targets: string[];
  all: boolean;
}

interface RemoteInterest {
  intervals: IntervalInterest[];
  expiresAt: number;
}

/** Catch-up samplings for newly watched objects wait this long for others to join them. */
const CATCH_UP_COALESCE_MS = 25;

/**
 * The sampling of one platform: a loop per interval that somebody watches,
 * each sampling the union of what every watcher of that interval asks for
 * in one call to the platform's MetricsSource, on ticks aligned to the wall
 * clock (so that every instance agrees on them, and a new holder carries
 * on the same schedule). Objects that become watched without a recent
 * sample get one at once (a catch-up), so nobody waits a whole interval for
 * the first number.
 *
 * Only the instance that `samplesHere()` (the platform's lease holder, or
 * the only instance) calls the platform; elsewhere batches come from it
 * through `deliver`.
 */
export class PlatformSampler {
  private readonly loops = new Map<number, SamplingLoop>();
  private readonly remote = new Map<string, RemoteInterest>();
  private readonly latestSamples = new Map<string, MetricSample>();
  private readonly failures = new Map<string, string>();
  private readonly batchListeners = new Set<(batch: MetricBatch, sampledHere: boolean) => void>();
  private readonly interestListeners = new Set<() => void>();
  private readonly waiters = new Map<string, Set<() => void>>();
  private stopped = false;
  private forgotAt = Date.now();
  /** Calls made to the platform's MetricsSource, for tests and benchmarks. */
  samplings = 0;

  constructor(
    readonly platformId: string,
    readonly source: MetricsSource,
    private readonly samplesHere: () => boolean,
    /** Every VM and host of the platform, for interests in all of them. */
    private readonly everything: () => MetricTargets,
    private readonly logger: Logger,
  ) {}

  /**
   * Watches objects at an interval until the returned function is called;
   * `listener` gets every batch of that interval.
   */
  watch(intervalSeconds: number, interest: Interest, listener?: (batch: MetricBatch) => void): () => void {
    const loop = this.loopOf(intervalSeconds);
    const added = loop.addLocal(interest);
    if (listener) loop.listeners.add(listener);
    this.interestChanged(loop, added);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (listener) loop.listeners.delete(listener);
      loop.removeLocal(interest);
      this.interestChanged(loop, []);
    };
  }

  /** What this instance watches, to tell the instance that samples. */
  localInterest(): IntervalInterest[] {
    return [...this.loops.values()].filter((l) => l.hasLocal()).map((l) => l.localInterest());
  }

  /** What another instance watches (replacing what it said before), valid until `expiresAt`. */
  setRemoteInterest(instanceId: string, intervals: IntervalInterest[], expiresAt: number): void {
    const before = this.remote.get(instanceId);
    if (intervals.length === 0) this.remote.delete(instanceId);
    else this.remote.set(instanceId, { intervals, expiresAt });
    const touched = new Set([...(before?.intervals ?? []), ...intervals].map((i) => i.intervalSeconds));
    for (const interval of touched) {
      const loop = this.loopOf(interval);
      loop.remote = this.remoteOf(interval);
      const asked = intervals.find((i) => i.intervalSeconds === interval);
      this.interestChanged(loop, asked?.all ? 'ALL' : (asked?.targets ?? []), false);
    }
  }

  /** The other instances whose interests are held. */
  remoteInstances(): string[] {
    return [...this.remote.keys()];
  }

  /** Drops what instances that stopped telling said they watch. */
  expireRemoteInterest(now = Date.now()): void {
    for (const [instance, r] of this.remote) if (r.expiresAt < now) this.setRemoteInterest(instance, [], 0);
  }

  /** Called whenever what this instance watches changes. */
  onInterestChange(listener: () => void): void {
    this.interestListeners.add(listener);
  }

  /** Called with every batch: sampled here (`sampledHere`) or relayed from the instance that samples. */
  onBatch(listener: (batch: MetricBatch, sampledHere: boolean) => void): void {
    this.batchListeners.add(listener);
  }

  /** A batch the sampling instance published. */
  deliver(batch: MetricBatch): void {
    if (this.stopped) return;
    this.take(batch, false);
  }

  /** The newest sample of an object, whatever the interval, while it is recent. */
  latest(kind: MetricEntityKind, nativeId: string, now = Date.now()): MetricSample | undefined {
    const s = this.latestSamples.get(targetKey(kind, nativeId));
    return s && isRecent(s, now) ? s : undefined;
  }

  /** Why the last sampling of an object gave no sample, if it failed. */
  failure(kind: MetricEntityKind, nativeId: string): string | undefined {
    return this.failures.get(targetKey(kind, nativeId));
  }

  /** Resolves at the next batch that has a sample or an error for the object, or after `timeoutMs`. */
  nextSampleOf(kind: MetricEntityKind, nativeId: string, timeoutMs: number): Promise<void> {
    const key = targetKey(kind, nativeId);
    return new Promise((resolve) => {
      let set = this.waiters.get(key);
      if (!set) this.waiters.set(key, (set = new Set()));
      const done = () => {
        clearTimeout(timer);
        set.delete(done);
        if (set.size === 0 && this.waiters.get(key) === set) this.waiters.delete(key);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      set.add(done);
    });
  }

  /** Intervals sampled now (locally or for other instances), for status and tests. */
  activeIntervals(): number[] {
    return [...this.loops.keys()].sort((a, b) => a - b);
  }

  stop(): void {
    this.stopped = true;
    for (const loop of this.loops.values()) loop.stop();
    this.loops.clear();
  }

  private forgetOld(now = Date.now()): void {
    if (now - this.forgotAt < FORGET_EVERY_MS) return;
    this.forgotAt = now;
    for (const [key, s] of this.latestSamples) if (!isRecent(s, now)) this.latestSamples.delete(key);
    for (const key of this.failures.keys()) if (!this.latestSamples.has(key)) this.failures.delete(key);
  }

  private loopOf(intervalSeconds: number): SamplingLoop {
    let loop = this.loops.get(intervalSeconds);
    if (!loop) {
      loop = new SamplingLoop(intervalSeconds, (targets, scheduled) =>
        this.sample(loop as SamplingLoop, targets, scheduled),
      );
      loop.remote = this.remoteOf(intervalSeconds);
      this.loops.set(intervalSeconds, loop);
    }
    return loop;
  }

  private remoteOf(intervalSeconds: number): IntervalInterest[] {
    const out: IntervalInterest[] = [];
    for (const r of this.remote.values()) {
      const i = r.intervals.find((x) => x.intervalSeconds === intervalSeconds);
      if (i) out.push(i);
    }
    return out;
  }

  /** Starts or stops the loop's schedule, and samples at once what just became watched. */
  private interestChanged(loop: SamplingLoop, added: readonly string[] | 'ALL', local = true): void {
    if (local) for (const l of this.interestListeners) l();
    if (this.stopped) return;
    if (loop.idle()) {
      loop.stop();
      this.loops.delete(loop.intervalSeconds);
      return;
    }
    loop.schedule();
    if (!this.samplesHere()) return;
    const now = Date.now();
    const wanted = added === 'ALL' ? this.allKeys() : added;
    const missing = wanted.filter((k) => {
      const { kind, nativeId } = parseTargetKey(k);
      return !this.latest(kind, nativeId, now);
    });
    if (missing.length > 0) loop.catchUp(missing);
  }

  private allKeys(): string[] {
    const all = this.everything();
    return [...all.vms.map((id) => targetKey('VM', id)), ...all.hosts.map((id) => targetKey('HOST', id))];
  }

  /** One call to the platform for the loop's targets; null when this instance does not sample. */
  private async sample(loop: SamplingLoop, keys: ReadonlySet<string> | null, scheduled: boolean): Promise<void> {
    if (this.stopped || !this.samplesHere()) return;
    const wanted = keys ?? loop.targets(() => this.allKeys());
    if (wanted.size === 0) return;
    const vms: string[] = [];
    const hosts: string[] = [];
    for (const k of wanted) {
      const { kind, nativeId } = parseTargetKey(k);
      (kind === 'VM' ? vms : hosts).push(nativeId);
    }
    const tick = scheduled ? loop.currentTick : Date.now();
    this.samplings += 1;
    let batch: MetricBatch;
    try {
      const readings = await this.source.sample({ vms, hosts }, loop.intervalSeconds);
      const samples: [MetricEntityKind, string, MetricSample][] = [];
      const errors = new Map<string, string>();
      for (const [kind, map] of [
        ['VM', readings.vms],
        ['HOST', readings.hosts],
      ] as const) {
        for (const [id, s] of map) {
          if (s instanceof Error) errors.set(targetKey(kind, id), s.message);
          else samples.push([kind, id, s]);
        }
      }
      const missing = [...wanted].filter((k) => {
        const { kind, nativeId } = parseTargetKey(k);
        return !(kind === 'VM' ? readings.vms : readings.hosts).has(nativeId);
      });
      batch = metricBatch(
        { platformId: this.platformId, intervalSeconds: loop.intervalSeconds, tick, scheduled },
        samples,
        errors,
        missing,
      );
    } catch (e) {
      const reason = errorMessage(e);
      this.logger.warn(
        { err: reason, interval: loop.intervalSeconds, objects: wanted.size },
        'metrics sampling failed',
      );
      batch = metricBatch(
        { platformId: this.platformId, intervalSeconds: loop.intervalSeconds, tick, scheduled },
        [],
        new Map([...wanted].map((k) => [k, reason])),
      );
    }
    if (!this.stopped) this.take(batch, true);
  }

  private take(batch: MetricBatch, sampledHere: boolean): void {
    if (batch.scheduled) this.forgetOld();
    for (const [key, u] of batch.updates) {
      const prev = this.latestSamples.get(key);
      if (!prev || prev.timestamp <= u.sample.timestamp) this.latestSamples.set(key, u.sample);
      this.failures.delete(key);
    }
    for (const [key, reason] of batch.errors) this.failures.set(key, reason);
    for (const l of this.batchListeners) l(batch, sampledHere);
    const loop = this.loops.get(batch.intervalSeconds);
    if (loop && loop.listeners.size > 0) {
      const fresh = loop.newSamples(batch);
      for (const l of loop.listeners) l(fresh);
    }
    for (const key of [...batch.updates.keys(), ...batch.errors.keys(), ...batch.missing]) {
      for (const w of [...(this.waiters.get(key) ?? [])]) w();
    }
  }
}

/** How often samples no longer recent are dropped, so memory follows what is watched. */
const FORGET_EVERY_MS = 60_000;

/** A sample counts as the latest for twice its interval (and a little slack for a slow platform). */
function isRecent(sample: MetricSample, now: number): boolean {
  return now - sample.timestamp <= 2 * sample.intervalSeconds * 1000 + 10_000;
}

/** The schedule and interest of one interval. */
class SamplingLoop {
  readonly listeners = new Set<(batch: MetricBatch) => void>();
  /** What other instances watch at this interval. */
  remote: IntervalInterest[] = [];
  private readonly local = new Map<string, number>();
  private localAll = 0;
  private timer: NodeJS.Timeout | null = null;
  private inFlight = false;
  private pendingCatchUp = new Set<string>();
  /** Objects a catch-up sampling is under way for: not asked for again meanwhile. */
  private readonly catchingUp = new Set<string>();
  /** The newest sample's time handed to this interval's listeners, per object. */
  private readonly delivered = new Map<string, number>();
  private catchUpTimer: NodeJS.Timeout | null = null;
  currentTick = 0;

  constructor(
    readonly intervalSeconds: number,
    private readonly run: (keys: ReadonlySet<string> | null, scheduled: boolean) => Promise<void>,
  ) {}

  addLocal(interest: Interest): readonly string[] | 'ALL' {
    if (interest === 'ALL') {
      this.localAll += 1;
      return 'ALL';
    }
    for (const k of interest.targets) this.local.set(k, (this.local.get(k) ?? 0) + 1);
    return interest.targets;
  }

  removeLocal(interest: Interest): void {
    if (interest === 'ALL') {
      this.localAll -= 1;
      return;
    }
    for (const k of interest.targets) {
      const n = (this.local.get(k) ?? 0) - 1;
      if (n <= 0) this.local.delete(k);
      else this.local.set(k, n);
    }
  }

  hasLocal(): boolean {
    return this.local.size > 0 || this.localAll > 0;
  }

  localInterest(): IntervalInterest {
    return { intervalSeconds: this.intervalSeconds, targets: [...this.local.keys()], all: this.localAll > 0 };
  }

  idle(): boolean {
    return !this.hasLocal() && this.remote.every((r) => r.targets.length === 0 && !r.all);
  }

  /** Every object watched at this interval, here and elsewhere. */
  targets(all: () => string[]): Set<string> {
    if (this.localAll > 0 || this.remote.some((r) => r.all)) return new Set(all());
    const out = new Set(this.local.keys());
    for (const r of this.remote) for (const k of r.targets) out.add(k);
    return out;
  }

  schedule(): void {
    if (this.timer) return;
    const ms = this.intervalSeconds * 1000;
    const next = (Math.floor(Date.now() / ms) + 1) * ms;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.currentTick = next;
      this.schedule();
      // A sampling slower than the interval skips ticks rather than piling calls on the platform.
      if (this.inFlight) return;
      this.inFlight = true;
      void this.run(null, true).finally(() => (this.inFlight = false));
    }, next - Date.now());
    this.timer.unref();
  }

  catchUp(keys: readonly string[]): void {
    for (const k of keys) if (!this.catchingUp.has(k)) this.pendingCatchUp.add(k);
    if (this.catchUpTimer || this.pendingCatchUp.size === 0) return;
    this.catchUpTimer = setTimeout(() => {
      this.catchUpTimer = null;
      const keys = this.pendingCatchUp;
      this.pendingCatchUp = new Set();
      for (const k of keys) this.catchingUp.add(k);
      void this.run(keys, false).finally(() => {
        for (const k of keys) this.catchingUp.delete(k);
      });
    }, CATCH_UP_COALESCE_MS);
  }

  /**
   * The batch without the samples this interval's listeners already had
   * (a catch-up and a tick can bring the same sample), remembering the rest.
   */
  newSamples(batch: MetricBatch): MetricBatch {
    let fresh: Map<string, MetricUpdate> | null = null;
    for (const [key, u] of batch.updates) {
      const last = this.delivered.get(key);
      if (last !== undefined && last >= u.sample.timestamp) {
        fresh ??= new Map(batch.updates);
        fresh.delete(key);
      } else this.delivered.set(key, u.sample.timestamp);
    }
    if (batch.scheduled) {
      // Forget objects nobody here watches any more, so the map stays as large as the interest.
      for (const key of this.delivered.keys())
        if (!batch.updates.has(key) && !this.local.has(key)) this.delivered.delete(key);
    }
    return fresh ? { ...batch, updates: fresh } : batch;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.catchUpTimer) clearTimeout(this.catchUpTimer);
    this.timer = null;
    this.catchUpTimer = null;
  }
}

import { setTimeout as sleep } from 'node:timers/promises';

import type { Logger } from 'pino';

import { ErrorCode, GatewayError, errorMessage } from '../../model/errors.js';
import type {
  HistoryResolution,
  MetricEntityKind,
  MetricReadings,
  MetricSample,
  MetricTargets,
  MetricsSource,
} from '../../model/metrics.js';
import {
  DomainStats,
  DomainStatsFlags,
  ModificationImpact,
  type NativeDomainStats,
  type NativeNodeStats,
} from './addon.js';
import type { LibvirtClient } from './client.js';
import {
  type CounterReading,
  domainRateCounters,
  domainSample,
  hostRateCounters,
  hostSample,
  memoryReportAge,
  resetReason,
} from './metric-rates.js';

/** The stats groups a domain's sample is made of, asked for in one bulk call. */
const DOMAIN_STATS =
  DomainStats.STATE |
  DomainStats.CPU_TOTAL |
  DomainStats.BALLOON |
  DomainStats.VCPU |
  DomainStats.INTERFACE |
  DomainStats.BLOCK;

/**
 * virDomainState values of a domain whose QEMU runs and keeps counters:
 * running, blocked, paused and shutting down. A paused domain's CPU counter
 * stands still while it holds its memory: 0 % CPU is what it uses. Shut off,
 * crashed and suspended-to-RAM domains have no sample.
 */
const ACTIVE_STATES: ReadonlySet<number> = new Set([1, 2, 3, 4]);

/** A previous reading this many intervals old or older is not the start of rates: too coarse to be "now". */
const STALE_AFTER_INTERVALS = 3;
/** Rates over less time than this are noise; such a previous reading is passed over. */
const MIN_WINDOW_MS = 500;
/** Readings kept per object: the newest two, so that a reading just taken by another interval's sampling leaves an older start. */
const READINGS_KEPT = 2;
/** Readings of objects nobody sampled for this long are dropped. */
const FORGET_AFTER_MS = 15 * 60_000;
/** The guest's balloon driver reports memory use at most this many seconds apart, however long the interval. */
const MAX_STATS_PERIOD_SECONDS = 10;

export interface LibvirtMetricsOptions {
  /** Runs a call with the platform's live connection (the provider's `connection.use`). */
  use: <T>(fn: (client: LibvirtClient) => Promise<T>) => Promise<T>;
  /** The native ID of the connection's host: its hostname, as listHosts gives it. */
  hostName: () => string;
  /**
   * Asks each running guest's balloon driver to report memory use
   * (virDomainSetMemoryStatsPeriod, live only) when it does not yet: without
   * it libvirt knows what QEMU holds, not what the guest uses. A write, so
   * off on read-only connections.
   */
  setStatsPeriod: boolean;
  logger: Logger;
  /**
   * How long a sampling waits between two readings of objects it has no
   * recent reading of.
   * @default 1_000 // 1 second
   */
  windowMs?: number;
}

type DomainRead = CounterReading | null | Error;

interface Reading {
  vms: Map<string, DomainRead>;
  host: CounterReading | Error | null;
}

/**
 * libvirt's performance counters as a MetricsSource. Each sampling makes one
 * bulk domain stats call (getDomainStats: virDomainListGetStats over the
 * domains asked) and, when a host is asked, one node stats call; rates are
 * counter differences between this reading and this source's previous
 * reading of the same object. An object with no recent previous reading is
 * read again after a short window (one more pair of calls for all such
 * objects), so the first sample of an object takes about a second.
 *
 * libvirt keeps no history: the gateway records it (metrics.history).
 */
export class LibvirtMetricsSource implements MetricsSource {
  /**
   * libvirt reads counters when asked, so any whole number of seconds works;
   * below a second QEMU's block and network counters move in too few steps
   * to give steady rates.
   */
  readonly minIntervalSeconds = 1;
  readonly historyResolutions: readonly HistoryResolution[] = [];
  /** What this source has done, for tests and benchmarks. */
  readonly activity = { samplings: 0, readings: 0, windows: 0, statsPeriodsSet: 0 };

  /** Recent readings per object (`vm:<uuid>`, `host:<name>`), oldest first. */
  private readonly readings = new Map<string, CounterReading[]>();
  /** The run (domain ID) each domain's stats period was last asked for, so it is asked once per start. */
  private readonly statsPeriodAsked = new Map<string, number>();
  private readonly windowMs: number;

  constructor(private readonly opts: LibvirtMetricsOptions) {
    this.windowMs = opts.windowMs ?? 1_000;
  }

  async sample(targets: MetricTargets, intervalSeconds: number): Promise<MetricReadings> {
    this.activity.samplings += 1;
    const out: MetricReadings = { vms: new Map(), hosts: new Map() };
    const hostName = this.opts.hostName();
    let hostAsked = false;
    for (const h of targets.hosts) {
      if (h === hostName) hostAsked = true;
      else out.hosts.set(h, new Error(`No host "${h}" on this libvirt connection; its host is "${hostName}".`));
    }
    const uuids = [...new Set(targets.vms)];
    if (uuids.length === 0 && !hostAsked) return out;
    this.forgetOld(Date.now());

    const maxAgeMs = STALE_AFTER_INTERVALS * intervalSeconds * 1000;
    const first = await this.read(uuids, hostAsked);
    const pendingVms: [string, CounterReading][] = [];
    for (const uuid of uuids) {
      const reading = first.vms.get(uuid) ?? null;
      if (!this.settle('vm', uuid, reading, out.vms)) continue;
      const base = this.startOf(`vm:${uuid}`, reading, maxAgeMs, domainRateCounters);
      if (base || domainRateCounters(reading.counters).size === 0) {
        out.vms.set(uuid, domainSample(base, reading, intervalSeconds));
      } else {
        pendingVms.push([uuid, reading]);
      }
      this.remember(`vm:${uuid}`, reading, domainRateCounters);
    }
    let pendingHost: CounterReading | null = null;
    const hostReading = first.host;
    if (hostAsked && this.settle('host', hostName, hostReading, out.hosts)) {
      const reading = hostReading;
      const base = this.startOf(`host:${hostName}`, reading, maxAgeMs, hostRateCounters);
      if (base || hostRateCounters(reading.counters).size === 0) {
        out.hosts.set(hostName, hostSample(base, reading, intervalSeconds));
      } else {
        pendingHost = reading;
      }
      this.remember(`host:${hostName}`, reading, hostRateCounters);
    }
    await this.askForMemoryStats(first.vms, intervalSeconds);
    if (pendingVms.length === 0 && !pendingHost) return out;

    // No recent reading to start from: read these again after a short window.
    this.activity.windows += 1;
    await sleep(this.windowMs);
    const second = await this.read(
      pendingVms.map(([uuid]) => uuid),
      pendingHost !== null,
    );
    for (const [uuid, before] of pendingVms) {
      const reading = second.vms.get(uuid) ?? null;
      if (!this.settle('vm', uuid, reading, out.vms)) continue;
      // Restarted within the window: gauges only, rates at the next sampling.
      const base = resetReason(before, reading, domainRateCounters) === null ? before : null;
      out.vms.set(uuid, domainSample(base, reading, intervalSeconds));
      this.remember(`vm:${uuid}`, reading, domainRateCounters);
    }
    const hostAgain = second.host;
    if (pendingHost && this.settle('host', hostName, hostAgain, out.hosts)) {
      const reading = hostAgain;
      const base = resetReason(pendingHost, reading, hostRateCounters) === null ? pendingHost : null;
      out.hosts.set(hostName, hostSample(base, reading, intervalSeconds));
      this.remember(`host:${hostName}`, reading, hostRateCounters);
    }
    return out;
  }

  /** libvirt keeps no history of its own; the gateway records samples where configured. */
  history(
    _kind: MetricEntityKind,
    _nativeIds: readonly string[],
    _from: number,
    _to: number,
    _resolutionSeconds: number,
  ): Promise<Map<string, MetricSample[] | Error>> {
    return Promise.reject(
      new GatewayError(
        ErrorCode.METRICS_UNAVAILABLE,
        'libvirt keeps no metrics history; the gateway records it when the platform has metrics.history: true in the configuration.',
      ),
    );
  }

  /**
   * Puts what a reading says about an object that has no sample (an error,
   * or nothing for a domain that is not running) into `out`, forgetting its
   * readings; true when the reading is counters to make a sample of.
   */
  private settle(
    kind: 'vm' | 'host',
    id: string,
    r: CounterReading | Error | null,
    out: Map<string, MetricSample | Error>,
  ): r is CounterReading {
    if (r instanceof Error) out.set(id, r);
    if (r instanceof Error || r === null) {
      this.readings.delete(`${kind}:${id}`);
      if (kind === 'vm') this.statsPeriodAsked.delete(id);
      return false;
    }
    return true;
  }

  /** The newest kept reading of an object that rates ending at `current` can start from, or null. */
  private startOf(
    key: string,
    current: CounterReading,
    maxAgeMs: number,
    rateCounters: (c: Readonly<Record<string, number>>) => Map<string, number>,
  ): CounterReading | null {
    const kept = this.readings.get(key) ?? [];
    for (let i = kept.length - 1; i >= 0; i--) {
      const previous = kept[i] as CounterReading;
      const age = current.time - previous.time;
      if (age < MIN_WINDOW_MS) continue;
      if (age > maxAgeMs) return null;
      return resetReason(previous, current, rateCounters) === null ? previous : null;
    }
    return null;
  }

  /** Keeps a reading, dropping those it cannot follow (another run, higher counters). */
  private remember(
    key: string,
    reading: CounterReading,
    rateCounters: (c: Readonly<Record<string, number>>) => Map<string, number>,
  ): void {
    const kept = (this.readings.get(key) ?? []).filter(
      // Newer ones come from a sampling that overlapped this one.
      (r) => r.time > reading.time || resetReason(r, reading, rateCounters) === null,
    );
    kept.push(reading);
    kept.sort((a, b) => a.time - b.time);
    this.readings.set(key, kept.slice(-READINGS_KEPT));
  }

  private forgetOld(now: number): void {
    for (const [key, kept] of this.readings) {
      const newest = kept[kept.length - 1];
      if (!newest || now - newest.time > FORGET_AFTER_MS) this.readings.delete(key);
    }
    for (const uuid of this.statsPeriodAsked.keys()) {
      if (!this.readings.has(`vm:${uuid}`)) this.statsPeriodAsked.delete(uuid);
    }
  }

  /** One bulk domain stats call and, when asked, one node stats call. */
  private read(uuids: readonly string[], host: boolean): Promise<Reading> {
    this.activity.readings += 1;
    return this.opts.use(async (client) => {
      const [domains, node] = await Promise.all([
        // NOWAIT: a domain busy with a long job (a migration, a snapshot)
        // gives the stats it has at once instead of holding up everyone's.
        uuids.length > 0 ? client.call('getDomainStats', uuids, DOMAIN_STATS, DomainStatsFlags.NOWAIT) : null,
        host ? client.call('getNodeStats') : null,
      ]);
      const vms = new Map<string, DomainRead>();
      uuids.forEach((uuid, i) => {
        const d = domains?.domains[i];
        vms.set(uuid, d === undefined ? null : domainReading(d, domains?.time ?? Date.now()));
      });
      return { vms, host: node ? nodeReading(node) : null };
    });
  }

  /** Sets the stats period of running domains whose guest reports no memory use yet, once per start. */
  private async askForMemoryStats(vms: ReadonlyMap<string, DomainRead>, intervalSeconds: number): Promise<void> {
    if (!this.opts.setStatsPeriod) return;
    // As often as samples are taken, so memory is as fresh as the rest.
    const period = Math.min(MAX_STATS_PERIOD_SECONDS, Math.max(1, Math.round(intervalSeconds)));
    const ask: string[] = [];
    for (const [uuid, r] of vms) {
      if (!r || r instanceof Error || this.statsPeriodAsked.get(uuid) === r.run) continue;
      // A report older than two periods: the period is unset (the guest
      // reported once, at boot) or longer than wanted.
      const age = memoryReportAge(r.counters, r.time);
      if (age !== null && age <= 2 * period + 2) continue;
      this.statsPeriodAsked.set(uuid, r.run);
      ask.push(uuid);
    }
    if (ask.length === 0) return;
    try {
      const results = await this.opts.use((c) => c.call('setMemoryStatsPeriod', ask, period, ModificationImpact.LIVE));
      this.activity.statsPeriodsSet += results.filter((r) => r === true).length;
      results.forEach((r, i) => {
        // A guest without a balloon device: memory use stays unknown, not an error.
        if (r instanceof Error) this.opts.logger.debug({ vm: ask[i], err: r.message }, 'balloon stats period not set');
      });
    } catch (e) {
      this.opts.logger.debug({ err: errorMessage(e) }, 'balloon stats periods not set');
    }
  }
}

/** A domain's numeric stats as a reading; null when it is not running, the Error when it is gone. */
function domainReading(d: NativeDomainStats | Error, time: number): DomainRead {
  if (d instanceof Error) return d;
  const state = d.params['state.state'];
  if (typeof state !== 'number' || !ACTIVE_STATES.has(state)) return null;
  const counters: Record<string, number> = {};
  for (const [name, v] of Object.entries(d.params)) if (typeof v === 'number') counters[name] = v;
  return { time: Math.round(time), run: d.id, counters };
}

/** The host's counters as `cpu.<field>` and `memory.<field>` (libvirt's field names); an Error when neither could be read. */
function nodeReading(node: NativeNodeStats): CounterReading | Error {
  if (node.cpu instanceof Error && node.memory instanceof Error) return node.cpu;
  const counters: Record<string, number> = {};
  for (const [part, values] of [
    ['cpu', node.cpu],
    ['memory', node.memory],
  ] as const) {
    if (values instanceof Error) continue;
    for (const [name, v] of Object.entries(values)) counters[`${part}.${name}`] = v;
  }
  return { time: Math.round(node.time), run: 0, counters };
}

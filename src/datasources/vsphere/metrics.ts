import { UnreachableCaseError } from '../../model/errors.js';
import {
  type HistoryResolution,
  type MetricEntityKind,
  type MetricField,
  type MetricReadings,
  type MetricSample,
  type MetricTargets,
  type MetricsSource,
  emptySample,
} from '../../model/metrics.js';
import { VimFault, isVimFault } from './errors.js';
import {
  PERF_MANAGER_SPEC,
  type PerfCounterInfo,
  type PerfEntityMetric,
  type PerfInterval,
  type PerfQuerySpec,
  parsePerfCounters,
  parsePerfIntervals,
  queryPerf,
} from './perf-counters.js';
import type { VsphereSession } from './session.js';
import { type ObjectContent, continueRetrievePropertiesEx, retrievePropertiesEx } from './vim.js';
import { type MoRef, elementXml, intOf, moRefXml } from './xml.js';

// vSphere's performance counters (PerformanceManager) as neutral samples.
//
// Counters are named, not numbered: their keys differ between vCenter, ESXi
// and versions, so each session reads the perfCounter property once and
// looks the names up (again after the session is renewed: a vCenter that
// restarted may number them anew). Only the aggregate instance ("") is read.
// The same read takes historicalInterval: the history a vCenter keeps is
// configurable (resolutions, retention, intervals turned off), and a
// standalone ESXi host keeps none a client can read (it lists one 300 s
// interval, but that describes the rollups vCenter collects from it).
//
// Live samples are one QueryPerf for every entity (realtime queries have no
// size limit). History is not: vCenter 6.0 and later refuse a historical
// QueryPerf that asks for more entity x counter pairs than
// config.vpxd.stats.maxQueryMetrics (64 by default), so history asks only for
// the counters of the neutral fields (its points have no `raw`, like the
// history the gateway records) and splits the entities over as few calls as
// fit, a few in flight at a time (see queryAll).
//
// Conversions (vSphere's units are in PerfCounterInfo.unitInfo; a counter
// whose unit is not the one below is left out rather than misread; KB is
// 1024 bytes, as vSphere counts):
//   cpu.usage.average (hundredths of a percent)        -> cpuUsagePercent / 100
//   cpu.ready.summation (ms of the sample interval)    -> cpuReadyPercent, see below
//   mem.consumed.average (KB)                          -> memoryUsedBytes * 1024
//   mem.usage.average (hundredths of a percent)        -> memoryUsagePercent / 100
//   disk.read.average, disk.write.average (KB/s)       -> disk{Read,Write}BytesPerSecond * 1024
//   disk.numberReadAveraged.average, ...Write... (/s)  -> disk{Read,Write}Iops as they are
//   net.received.average, net.transmitted.average (KB/s) -> network{Rx,Tx}BytesPerSecond * 1024
// cpu.ready.summation's aggregate is the sum over the entity's CPUs of the
// milliseconds they waited to run, so the percent of the interval is divided
// by the CPU count: per vCPU for a VM (config.hardware.numCPU), so that 5 %
// means the same for 1 and 16 vCPUs; per logical CPU for a host
// (summary.hardware.numCpuThreads). CPU counts come from the property
// collector, one call for every entity whose count is not known or older than
// CPU_COUNT_TTL_MS; cpuReadyPercent is null where the count is unknown. A
// history point uses today's count.
//
// Counters without a neutral field go into `raw` by their dotted names, with
// vSphere's values (the mean, where a sample averages several).
//
// A counter the endpoint or entity does not have (disk.numberReadAveraged has
// no aggregate on many VMs; historical intervals hold only the counters of
// their statistics level) is simply missing from QueryPerf's answer: its
// field is null.

/** vCenter's realtime interval: hosts sample every 20 s and keep an hour of samples. */
const REALTIME_SECONDS = 20;

/**
 * vCenter's default historical intervals (PerformanceManager.historicalInterval):
 * 5 minutes for a day, 30 minutes for a week, 2 hours for a month, a day for
 * a year. VsphereMetrics offers them until a session has read the real ones.
 */
export const VSPHERE_HISTORY_RESOLUTIONS: readonly HistoryResolution[] = [
  { resolutionSeconds: 300, retentionSeconds: 86_400 },
  { resolutionSeconds: 1_800, retentionSeconds: 7 * 86_400 },
  { resolutionSeconds: 7_200, retentionSeconds: 30 * 86_400 },
  { resolutionSeconds: 86_400, retentionSeconds: 365 * 86_400 },
];

/**
 * vCenter's default `config.vpxd.stats.maxQueryMetrics`: the most entity x
 * counter pairs one historical QueryPerf may ask for.
 */
export const VSPHERE_PERF_MAX_QUERY_METRICS = 64;

export interface VsphereMetricsOptions {
  /**
   * The most entity x counter pairs one historical QueryPerf asks for, as
   * the vCenter's `config.vpxd.stats.maxQueryMetrics` allows; 0 or less (the
   * vCenter's -1): no limit. A vCenter that allows fewer is found out (it
   * refuses the call as too large) and the calls are split further.
   * @default 64
   */
  maxQueryMetrics?: number;
}

/** QueryPerf calls of one history read in flight at once (on the platform's one connection pool). */
const MAX_CALLS_IN_FLIGHT = 4;

/** How long a VM's vCPU count or a host's thread count is trusted. @default 600_000 // 10 minutes */
const CPU_COUNT_TTL_MS = 600_000;

/**
 * Tries of one call when QueryPerf faults with ManagedObjectNotFound (each
 * finds the entities that are gone and asks again without them), and of one
 * read when the session is renewed under it (the counters are read again).
 */
const MAX_ATTEMPTS = 3;

type Conversion = 'hundredthsOfPercent' | 'kilobytes' | 'asIs' | 'readyMilliseconds';

interface FieldCounter {
  name: string;
  /** The unit the conversion expects. */
  unit: string;
  field: MetricField;
  conversion: Conversion;
}

const FIELD_COUNTERS: readonly FieldCounter[] = [
  { name: 'cpu.usage.average', unit: 'percent', field: 'cpuUsagePercent', conversion: 'hundredthsOfPercent' },
  { name: 'cpu.ready.summation', unit: 'millisecond', field: 'cpuReadyPercent', conversion: 'readyMilliseconds' },
  { name: 'mem.consumed.average', unit: 'kiloBytes', field: 'memoryUsedBytes', conversion: 'kilobytes' },
  { name: 'mem.usage.average', unit: 'percent', field: 'memoryUsagePercent', conversion: 'hundredthsOfPercent' },
  { name: 'disk.read.average', unit: 'kiloBytesPerSecond', field: 'diskReadBytesPerSecond', conversion: 'kilobytes' },
  { name: 'disk.write.average', unit: 'kiloBytesPerSecond', field: 'diskWriteBytesPerSecond', conversion: 'kilobytes' },
  { name: 'disk.numberReadAveraged.average', unit: 'number', field: 'diskReadIops', conversion: 'asIs' },
  { name: 'disk.numberWriteAveraged.average', unit: 'number', field: 'diskWriteIops', conversion: 'asIs' },
  {
    name: 'net.received.average',
    unit: 'kiloBytesPerSecond',
    field: 'networkRxBytesPerSecond',
    conversion: 'kilobytes',
  },
  {
    name: 'net.transmitted.average',
    unit: 'kiloBytesPerSecond',
    field: 'networkTxBytesPerSecond',
    conversion: 'kilobytes',
  },
];

/** Counters kept in `raw` as vSphere reports them. */
const RAW_COUNTERS: readonly string[] = [
  'cpu.usagemhz.average', // MHz
  'cpu.costop.summation', // ms the vCPUs were held back to run together
  'cpu.latency.average', // hundredths of a percent
  'mem.active.average', // KB
  'mem.granted.average', // KB
  'mem.vmmemctl.average', // KB taken by the balloon driver
  'mem.swapped.average', // KB
  'disk.usage.average', // KB/s
  'disk.maxTotalLatency.latest', // ms
  'net.usage.average', // KB/s
];

/** The counters of one session: the keys to ask for and what each becomes. */
interface CounterPlan {
  /** Every counter: live samples. */
  keys: number[];
  /** The neutral fields' counters only: history. */
  fieldKeys: number[];
  byKey: Map<number, { name: string; field: FieldCounter | null }>;
}

const NO_COUNTERS: CounterPlan = { keys: [], fieldKeys: [], byKey: new Map() };

function planOf(counters: readonly PerfCounterInfo[]): CounterPlan {
  const byName = new Map(counters.map((c) => [c.name, c]));
  const byKey: CounterPlan['byKey'] = new Map();
  for (const field of FIELD_COUNTERS) {
    const info = byName.get(field.name);
    if (info && info.unit === field.unit) byKey.set(info.key, { name: field.name, field });
  }
  for (const name of RAW_COUNTERS) {
    const info = byName.get(name);
    if (info) byKey.set(info.key, { name, field: null });
  }
  const sorted = (keys: Iterable<number>) => [...keys].sort((a, b) => a - b);
  return {
    keys: sorted(byKey.keys()),
    fieldKeys: sorted([...byKey].filter(([, c]) => c.field).map(([key]) => key)),
    byKey,
  };
}

/**
 * The history an endpoint serves: its enabled historical intervals, finest
 * first. None on a standalone ESXi host: the interval it lists describes the
 * 5-minute rollups vCenter collects from it, which it does not serve itself.
 */
function resolutionsOf(apiType: string, intervals: readonly PerfInterval[]): HistoryResolution[] {
  if (apiType === 'HostAgent') return [];
  return intervals
    .filter((i) => i.enabled && i.samplingPeriod > REALTIME_SECONDS && i.length > 0)
    .map((i) => ({ resolutionSeconds: i.samplingPeriod, retentionSeconds: i.length }))
    .sort((a, b) => a.resolutionSeconds - b.resolutionSeconds);
}

/** The RangeError for history asked at a resolution the endpoint does not keep, naming those it keeps; null if it does. */
function notKeptAt(resolutionSeconds: number, kept: readonly HistoryResolution[]): RangeError | null {
  if (kept.some((r) => r.resolutionSeconds === resolutionSeconds)) return null;
  if (kept.length === 0) {
    return new RangeError(
      `vSphere keeps no history here (a standalone ESXi host serves its last hour at 20 s only), not at ${resolutionSeconds} s`,
    );
  }
  const list = kept.map((r) => `${r.resolutionSeconds} s`).join(', ');
  return new RangeError(`vSphere keeps history at ${list}, not at ${resolutionSeconds} s`);
}

function convert(conversion: Conversion, value: number, sampleSeconds: number, cpus: number | null): number | null {
  switch (conversion) {
    case 'hundredthsOfPercent':
      return value / 100;
    case 'kilobytes':
      return value * 1024;
    case 'asIs':
      return value;
    case 'readyMilliseconds':
      // ms / (s * 1000 ms/s) * 100 % / CPUs
      return cpus ? value / (sampleSeconds * 10 * cpus) : null;
    default:
      throw new UnreachableCaseError(conversion);
  }
}

/** Where each kind's CPU count is. */
const CPU_COUNT_PATHS: Record<string, string> = {
  VirtualMachine: 'config.hardware.numCPU',
  HostSystem: 'summary.hardware.numCpuThreads',
};

const CPU_COUNT_PROP_SETS = Object.entries(CPU_COUNT_PATHS)
  .map(
    ([type, path]) =>
      `<propSet>${elementXml('type', type)}${elementXml('all', false)}${elementXml('pathSet', path)}</propSet>`,
  )
  .join('');

const keyOf = (e: MoRef): string => `${e.type}:${e.value}`;

type SessionUser = <T>(fn: (session: VsphereSession) => Promise<T>) => Promise<T>;

/** Entities that do not exist, by keyOf, each with its error. */
type Gone = Map<string, { entity: MoRef; error: Error }>;

/** What one session knows of the endpoint's PerformanceManager. */
interface SessionPerf {
  plan: CounterPlan;
  resolutions: readonly HistoryResolution[];
}

/** One session's PerformanceManager read, and what its historical calls may ask for. */
interface SessionEntry {
  /** The login the read belongs to: another login reads again. */
  sessionKey: string;
  perf: Promise<SessionPerf>;
  /**
   * Entity x counter pairs per historical call: the configured limit, halved
   * each time the endpoint refuses a call as too large (a vCenter configured
   * lower), for the rest of the session.
   */
  budget: number;
}

/** One QueryPerf of a read, and its tries so far against ManagedObjectNotFound. */
interface Call {
  specs: PerfQuerySpec[];
  attempt: number;
}

/** What a read asks QueryPerf for. */
interface PerfRead {
  /** Historical calls are limited in size (maxQueryMetrics) and ask for the neutral fields' counters only. */
  historical: boolean;
  specOf: (entity: MoRef, counterIds: readonly number[]) => PerfQuerySpec;
  /** An error to reject with, given the history the session's endpoint keeps; null to go on. */
  refuse?: (kept: readonly HistoryResolution[]) => Error | null;
}

/** Thrown inside a call whose session logged in again since the read began: the read starts over. */
class SessionRenewed extends Error {
  constructor() {
    super('the vSphere session was renewed during the read, again and again');
    this.name = 'SessionRenewed';
  }
}

/**
 * A vCenter's or ESXi host's performance counters: one QueryPerf per
 * sampling, for every entity asked about at once; history in as few
 * QueryPerf calls as vCenter's limit on their size allows.
 */
export class VsphereMetrics implements MetricsSource {
  readonly minIntervalSeconds = REALTIME_SECONDS;

  private resolutions: readonly HistoryResolution[] = VSPHERE_HISTORY_RESOLUTIONS;
  private readonly maxQueryMetrics: number;
  private readonly sessions = new WeakMap<VsphereSession, SessionEntry>();
  private readonly cpuCounts = new Map<string, { cpus: number | null; readAt: number }>();

  /** `use` runs a function with the platform's live session (PlatformConnection.use). */
  constructor(
    private readonly use: SessionUser,
    options: VsphereMetricsOptions = {},
  ) {
    const limit = options.maxQueryMetrics ?? VSPHERE_PERF_MAX_QUERY_METRICS;
    if (!Number.isInteger(limit)) throw new RangeError(`maxQueryMetrics must be an integer, not ${limit}`);
    this.maxQueryMetrics = limit > 0 ? limit : Infinity;
  }

  /**
   * The history the endpoint keeps, as the last session read it (its enabled
   * historical intervals; none on a standalone ESXi host), and vCenter's
   * defaults until a session has read it.
   */
  get historyResolutions(): readonly HistoryResolution[] {
    return this.resolutions;
  }

  /**
   * The latest `intervalSeconds / 20` realtime samples of each target,
   * averaged: one QueryPerf (intervalId 20, maxSample) for every VM and host.
   */
  sample(targets: MetricTargets, intervalSeconds: number): Promise<MetricReadings> {
    if (!Number.isInteger(intervalSeconds / REALTIME_SECONDS) || intervalSeconds <= 0) {
      return Promise.reject(new RangeError(`vSphere samples cover multiples of 20 s, not ${intervalSeconds} s`));
    }
    const readings: MetricReadings = { vms: new Map(), hosts: new Map() };
    const entities = [
      ...[...new Set(targets.vms)].map((value) => ({ type: 'VirtualMachine', value })),
      ...[...new Set(targets.hosts)].map((value) => ({ type: 'HostSystem', value })),
    ];
    if (entities.length === 0) return Promise.resolve(readings);
    const readingsOf = (e: MoRef) => (e.type === 'VirtualMachine' ? readings.vms : readings.hosts);
    // maxSample is what makes vcsim answer at all; vCenter needs no range with it.
    const maxSample = intervalSeconds / REALTIME_SECONDS;
    return this.read(
      entities,
      {
        historical: false,
        specOf: (entity, counterIds) => ({ entity, maxSample, counterIds, instance: '', intervalId: REALTIME_SECONDS }),
      },
      (answers, plan, gone) => {
        for (const { entity, error } of gone.values()) readingsOf(entity).set(entity.value, error);
        const asked = new Set(entities.map(keyOf));
        for (const m of answers) {
          const key = keyOf(m.entity);
          const sample = asked.has(key) && !gone.has(key) ? this.mean(m, plan) : null;
          if (sample) readingsOf(m.entity).set(m.entity.value, sample);
        }
        return readings;
      },
    );
  }

  /**
   * vCenter's own history at one of its historical intervals, the neutral
   * fields only (`raw` is empty): as few QueryPerf calls as its
   * maxQueryMetrics allows. Rejects with a RangeError, naming the
   * resolutions kept, for any other resolution (every one on ESXi).
   */
  history(
    kind: MetricEntityKind,
    nativeIds: readonly string[],
    from: number,
    to: number,
    resolutionSeconds: number,
  ): Promise<Map<string, MetricSample[] | Error>> {
    // What is known already refuses at once; what the session reads decides (below).
    const refused = notKeptAt(resolutionSeconds, this.resolutions);
    if (refused) return Promise.reject(refused);
    const type = entityType(kind);
    const ids = [...new Set(nativeIds)];
    const result = new Map<string, MetricSample[] | Error>(ids.map((id) => [id, []]));
    if (ids.length === 0 || from > to) return Promise.resolve(result);
    // startTime is exclusive: one second earlier includes a point at `from`.
    const startTime = new Date(from - 1_000);
    const endTime = new Date(to);
    return this.read(
      ids.map((value) => ({ type, value })),
      {
        historical: true,
        specOf: (entity, counterIds) => ({
          entity,
          startTime,
          endTime,
          counterIds,
          instance: '',
          intervalId: resolutionSeconds,
        }),
        refuse: (kept) => notKeptAt(resolutionSeconds, kept),
      },
      (answers, plan, gone) => {
        // An entity's counters may have been split over calls: its points are merged by time.
        const points = new Map<string, Map<number, MetricSample>>();
        for (const m of answers) {
          if (m.entity.type !== type || !result.has(m.entity.value) || gone.has(keyOf(m.entity))) continue;
          let byTime = points.get(m.entity.value);
          if (!byTime) points.set(m.entity.value, (byTime = new Map()));
          this.addPoints(byTime, m, plan, from, to);
        }
        for (const [id, byTime] of points) {
          result.set(
            id,
            [...byTime.values()].sort((a, b) => a.timestamp - b.timestamp),
          );
        }
        for (const { entity, error } of gone.values()) result.set(entity.value, error);
        return result;
      },
    );
  }

  /**
   * QueryPerf for every entity (see queryAll), and `consume` over the
   * answers (parsed as they are iterated). Entities found gone get an Error
   * each. A session renewed during the read (a vCenter that restarted may
   * number its counters anew) reads the counters again and starts over.
   */
  private read<T>(
    entities: readonly MoRef[],
    query: PerfRead,
    consume: (answers: Iterable<PerfEntityMetric>, plan: CounterPlan, gone: Gone) => T,
  ): Promise<T> {
    return this.use(async (s) => {
      const perfManager = s.content.perfManager;
      if (!perfManager) throw new VimFault('NotSupported', 'this endpoint has no PerformanceManager');
      const gone: Gone = new Map();
      for (let attempt = 1; ; attempt++) {
        const session = this.session(s, perfManager);
        const { plan, resolutions } = await session.perf;
        const refused = query.refuse?.(resolutions);
        if (refused) throw refused;
        if (attempt === 1) {
          const now = Date.now();
          const stale = (e: MoRef) => (this.cpuCounts.get(keyOf(e))?.readAt ?? -Infinity) <= now - CPU_COUNT_TTL_MS;
          await this.readCpuCounts(s, entities.filter(stale), gone);
        }
        const keys = query.historical ? plan.fieldKeys : plan.keys;
        const live = entities.filter((e) => !gone.has(keyOf(e)));
        // Without metricId, QueryPerf answers every counter the entity has: no counters, no call.
        if (live.length === 0 || keys.length === 0) return consume([], plan, gone);
        try {
          const specs = live.map((e) => query.specOf(e, keys));
          const answers = await this.queryAll(s, perfManager, session, specs, query.historical, gone);
          return consume(concat(answers), plan, gone);
        } catch (e) {
          if (!(e instanceof SessionRenewed) || attempt >= MAX_ATTEMPTS) throw e;
        }
      }
    });
  }

  /**
   * QueryPerf for `specs`: realtime ones in one call; historical ones in as
   * few calls as fit the session's budget (whole entities, floor(budget /
   * counters) to a call; an entity's counters spread over calls only where
   * one entity alone is over it), MAX_CALLS_IN_FLIGHT at a time.
   *
   * A call vCenter refuses as too large (InvalidArgument on querySpec.size:
   * it allows fewer than configured here) halves the session's budget and is
   * split to fit it. A call that faults with ManagedObjectNotFound (vCenter
   * faults the whole call when one entity is gone, without saying which in a
   * way a client can rely on) has the property collector, which answers per
   * object, find the gone entities, and is made again without them. Any
   * other failure rejects, once the calls in flight have ended.
   */
  private async queryAll(
    s: VsphereSession,
    perfManager: MoRef,
    session: SessionEntry,
    specs: readonly PerfQuerySpec[],
    historical: boolean,
    gone: Gone,
  ): Promise<Iterable<PerfEntityMetric>[]> {
    const budget = () => (historical ? session.budget : Infinity);
    const queue: Call[] = pack(specs, budget()).map((specs) => ({ specs, attempt: 1 }));
    const answers: Iterable<PerfEntityMetric>[] = [];
    const failures: unknown[] = [];
    /** A call was refused as too large since the queue was last packed. */
    let refused = false;

    /** Makes one call; what is to be asked again goes back to the queue. */
    const run = async ({ specs: callSpecs, attempt }: Call, sent: number): Promise<void> => {
      const size = sizeOf(callSpecs);
      try {
        answers.push(
          await s.call(() => {
            // After a login (s.call's retry), the counter keys asked for may be another session's.
            if (this.session(s, perfManager) !== session) throw new SessionRenewed();
            return queryPerf(s.client, perfManager, callSpecs);
          }),
        );
      } catch (e) {
        if (historical && isTooLarge(e) && size > 1) {
          // Half the budget it was sent with (half its size when unlimited): the calls in
          // flight with the same budget are refused alike and halve it once between them.
          const half = Math.max(1, Math.floor((sent === Infinity ? size : sent) / 2));
          session.budget = Math.min(session.budget, half);
          queue.unshift({ specs: callSpecs, attempt });
          refused = true;
          return;
        }
        if (!isVimFault(e, 'ManagedObjectNotFound') || attempt >= MAX_ATTEMPTS) throw e;
        const known = gone.size;
        const entities = new Map(callSpecs.map((spec) => [keyOf(spec.entity), spec.entity]));
        await this.readCpuCounts(s, [...entities.values()], gone);
        if (gone.size === known) throw e;
        const rest = callSpecs.filter((spec) => !gone.has(keyOf(spec.entity)));
        if (rest.length > 0) queue.unshift({ specs: rest, attempt: attempt + 1 });
      }
    };

    // Calls are started as others end, until the queue is empty or one has
    // failed. After a refusal, the rest waits for the calls in flight (they
    // may be refused too), then is packed anew at the lowered budget, all
    // together, so that it takes as few calls as the first packing would have.
    await new Promise<void>((resolve) => {
      let running = 0;
      const dispatch = (): void => {
        if (refused && running === 0) {
          const attempt = Math.max(1, ...queue.map((c) => c.attempt));
          const rest = coalesce(queue.flatMap((c) => c.specs));
          queue.splice(0, queue.length, ...pack(rest, budget()).map((specs) => ({ specs, attempt })));
          refused = false;
        }
        while (!refused && running < MAX_CALLS_IN_FLIGHT && failures.length === 0) {
          const call = queue.shift();
          if (!call) break;
          running++;
          void run(call, budget())
            .catch((e: unknown) => {
              failures.push(e);
            })
            .finally(() => {
              running--;
              dispatch();
            });
        }
        if (running === 0) resolve();
      };
      dispatch();
    });
    if (failures.length > 0) throw failures[0];
    return answers;
  }

  /**
   * The session's PerformanceManager read (perfCounter and
   * historicalInterval in one call), once per session and login; it also
   * updates historyResolutions.
   */
  private session(s: VsphereSession, perfManager: MoRef): SessionEntry {
    const cached = this.sessions.get(s);
    if (cached && cached.sessionKey === s.sessionKey) return cached;
    const entry: SessionEntry = {
      sessionKey: s.sessionKey,
      budget: this.maxQueryMetrics,
      perf: s.retrieveObjects([perfManager], [PERF_MANAGER_SPEC]).then((objects) => {
        // A login renewed during the read: the counters are the new session's.
        entry.sessionKey = s.sessionKey;
        const props = objects[0]?.props;
        const counters = props?.get('perfCounter');
        const intervals = props?.get('historicalInterval');
        const perf: SessionPerf = {
          plan: counters ? planOf(parsePerfCounters(counters)) : NO_COUNTERS,
          resolutions: resolutionsOf(s.content.about.apiType, intervals ? parsePerfIntervals(intervals) : []),
        };
        this.resolutions = perf.resolutions;
        return perf;
      }),
    };
    entry.perf.catch(() => {
      if (this.sessions.get(s) === entry) this.sessions.delete(s);
    });
    this.sessions.set(s, entry);
    return entry;
  }

  /**
   * Reads the CPU counts of `entities` in one RetrievePropertiesEx (pages
   * aside), which also tells which of them are gone: those go into `gone`.
   */
  private async readCpuCounts(s: VsphereSession, entities: readonly MoRef[], gone: Gone): Promise<void> {
    if (entities.length === 0) return;
    // Missing objects reported per object, rather than as a fault of the whole call.
    const spec =
      `<specSet>${CPU_COUNT_PROP_SETS}` +
      entities.map((e) => `<objectSet>${moRefXml('obj', e)}${elementXml('skip', false)}</objectSet>`).join('') +
      `${elementXml('reportMissingObjectsInResults', true)}</specSet>`;
    const objects = await s.call(async () => {
      let page = await retrievePropertiesEx(s.client, s.content, spec, s.pageSize);
      const all: ObjectContent[] = [...page.objects];
      while (page.token) {
        page = await continueRetrievePropertiesEx(s.client, s.content, page.token);
        all.push(...page.objects);
      }
      return all;
    });
    const found = new Map(
      objects.filter((o) => !o.missing.some((m) => m.fault === 'ManagedObjectNotFound')).map((o) => [keyOf(o.obj), o]),
    );
    const now = Date.now();
    for (const [key, count] of this.cpuCounts) {
      if (count.readAt < now - 2 * CPU_COUNT_TTL_MS) this.cpuCounts.delete(key);
    }
    for (const entity of entities) {
      const key = keyOf(entity);
      const o = found.get(key);
      if (!o) {
        this.cpuCounts.delete(key);
        gone.set(key, {
          entity,
          error: new VimFault('ManagedObjectNotFound', `${entity.type} ${entity.value} does not exist`),
        });
        continue;
      }
      const path = CPU_COUNT_PATHS[entity.type];
      const cpus = path ? intOf(o.props.get(path)) : null;
      this.cpuCounts.set(key, { cpus: cpus !== null && cpus > 0 ? cpus : null, readAt: now });
    }
  }

  /** The mean of an entity's samples (oldest first), stamped with the newest; null without samples. */
  private mean(m: PerfEntityMetric, plan: CounterPlan): MetricSample | null {
    const order = chronological(m);
    const newest = order[order.length - 1];
    if (newest === undefined) return null;
    const sampleSeconds = m.sampleInfo[newest]?.intervalSeconds || REALTIME_SECONDS;
    const sample = emptySample(m.sampleInfo[newest]?.timestamp ?? 0, sampleSeconds * order.length);
    const cpus = this.cpuCounts.get(keyOf(m.entity))?.cpus ?? null;
    for (const series of m.series) {
      const counter = series.instance === '' ? plan.byKey.get(series.counterId) : undefined;
      if (!counter) continue;
      let sum = 0;
      let n = 0;
      for (const i of order) {
        const v = series.values[i];
        // -1: vCenter has no value for this sample.
        if (v !== undefined && v >= 0) {
          sum += v;
          n++;
        }
      }
      if (n > 0) put(sample, counter, sum / n, sampleSeconds, cpus);
    }
    return sample;
  }

  /** Adds an entity's samples from `from` to `to` to its points by time (an answer may hold some of its counters only). */
  private addPoints(
    byTime: Map<number, MetricSample>,
    m: PerfEntityMetric,
    plan: CounterPlan,
    from: number,
    to: number,
  ): void {
    const cpus = this.cpuCounts.get(keyOf(m.entity))?.cpus ?? null;
    m.sampleInfo.forEach((info, i) => {
      if (info.timestamp < from || info.timestamp > to) return;
      let sample = byTime.get(info.timestamp);
      if (!sample) byTime.set(info.timestamp, (sample = emptySample(info.timestamp, info.intervalSeconds)));
      for (const series of m.series) {
        const counter = series.instance === '' ? plan.byKey.get(series.counterId) : undefined;
        const v = series.values[i];
        if (counter && v !== undefined && v >= 0) put(sample, counter, v, info.intervalSeconds, cpus);
      }
    });
  }
}

/** Entity x counter pairs of a call, as vCenter counts them against maxQueryMetrics. */
function sizeOf(specs: readonly PerfQuerySpec[]): number {
  return specs.reduce((n, spec) => n + spec.counterIds.length, 0);
}

/**
 * Specs in calls of at most `budget` pairs: whole specs while one fits, in
 * order; a spec over the budget alone has its counters spread over calls,
 * each filled.
 */
function pack(specs: readonly PerfQuerySpec[], budget: number): PerfQuerySpec[][] {
  const calls: PerfQuerySpec[][] = [];
  let call: PerfQuerySpec[] = [];
  let size = 0;
  const flush = () => {
    if (call.length > 0) calls.push(call);
    call = [];
    size = 0;
  };
  for (const spec of specs) {
    const n = spec.counterIds.length;
    if (n <= budget) {
      if (size + n > budget) flush();
      call.push(spec);
      size += n;
      continue;
    }
    for (let i = 0; i < n;) {
      if (size >= budget) flush();
      const take = Math.min(budget - size, n - i);
      call.push({ ...spec, counterIds: spec.counterIds.slice(i, i + take) });
      size += take;
      i += take;
    }
  }
  flush();
  return calls;
}

/** Adjacent specs of the same entity (its counters split over calls) as one spec. */
function coalesce(specs: readonly PerfQuerySpec[]): PerfQuerySpec[] {
  const out: PerfQuerySpec[] = [];
  for (const spec of specs) {
    const last = out[out.length - 1];
    if (last && keyOf(last.entity) === keyOf(spec.entity)) {
      out[out.length - 1] = { ...last, counterIds: [...last.counterIds, ...spec.counterIds] };
    } else {
      out.push(spec);
    }
  }
  return out;
}

/** vCenter's refusal of a historical QueryPerf over its config.vpxd.stats.maxQueryMetrics. */
function isTooLarge(e: unknown): boolean {
  return isVimFault(e, 'InvalidArgument') && e.message.includes('querySpec.size');
}

function* concat<T>(lists: readonly Iterable<T>[]): Generator<T> {
  for (const list of lists) yield* list;
}

/** Indexes of an entity's samples, oldest first (vCenter sends them so; vcsim newest first). */
function chronological(m: PerfEntityMetric): number[] {
  return m.sampleInfo
    .map((_, i) => i)
    .sort((a, b) => (m.sampleInfo[a]?.timestamp ?? 0) - (m.sampleInfo[b]?.timestamp ?? 0));
}

function put(
  sample: MetricSample,
  counter: { name: string; field: FieldCounter | null },
  value: number,
  sampleSeconds: number,
  cpus: number | null,
): void {
  if (!counter.field) {
    sample.raw[counter.name] = value;
    return;
  }
  const converted = convert(counter.field.conversion, value, sampleSeconds, cpus);
  if (converted !== null) sample[counter.field.field] = converted;
}

function entityType(kind: MetricEntityKind): string {
  switch (kind) {
    case 'VM':
      return 'VirtualMachine';
    case 'HOST':
      return 'HostSystem';
    default:
      throw new UnreachableCaseError(kind);
  }
}

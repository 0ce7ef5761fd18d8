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
  PERF_COUNTER_SPEC,
  type PerfCounterInfo,
  type PerfEntityMetric,
  type PerfQuerySpec,
  parsePerfCounters,
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
 * 5 minutes for a day, 30 minutes for a week, 2 hours for a month, a day for a year.
 */
export const VSPHERE_HISTORY_RESOLUTIONS: readonly HistoryResolution[] = [
  { resolutionSeconds: 300, retentionSeconds: 86_400 },
  { resolutionSeconds: 1_800, retentionSeconds: 7 * 86_400 },
  { resolutionSeconds: 7_200, retentionSeconds: 30 * 86_400 },
  { resolutionSeconds: 86_400, retentionSeconds: 365 * 86_400 },
];

/** How long a VM's vCPU count or a host's thread count is trusted. @default 600_000 // 10 minutes */
const CPU_COUNT_TTL_MS = 600_000;

/**
 * Tries of one read when QueryPerf faults with ManagedObjectNotFound: each
 * finds the entities that are gone and asks again without them.
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
  keys: number[];
  byKey: Map<number, { name: string; field: FieldCounter | null }>;
}

const NO_COUNTERS: CounterPlan = { keys: [], byKey: new Map() };

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
  return { keys: [...byKey.keys()].sort((a, b) => a - b), byKey };
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

/**
 * A vCenter's or ESXi host's performance counters: one QueryPerf per
 * sampling or history read, for every entity asked about at once.
 */
export class VsphereMetrics implements MetricsSource {
  readonly minIntervalSeconds = REALTIME_SECONDS;
  readonly historyResolutions = VSPHERE_HISTORY_RESOLUTIONS;

  private readonly plans = new WeakMap<VsphereSession, { sessionKey: string; plan: Promise<CounterPlan> }>();
  private readonly cpuCounts = new Map<string, { cpus: number | null; readAt: number }>();

  /** `use` runs a function with the platform's live session (PlatformConnection.use). */
  constructor(private readonly use: SessionUser) {}

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
      (entity, counterIds) => ({ entity, maxSample, counterIds, instance: '', intervalId: REALTIME_SECONDS }),
      (answers, plan, gone) => {
        for (const { entity, error } of gone.values()) readingsOf(entity).set(entity.value, error);
        const asked = new Set(entities.map(keyOf));
        for (const m of answers) {
          const sample = asked.has(keyOf(m.entity)) ? this.mean(m, plan) : null;
          if (sample) readingsOf(m.entity).set(m.entity.value, sample);
        }
        return readings;
      },
    );
  }

  /** vCenter's own history at one of its historical intervals: one QueryPerf for every ID. */
  history(
    kind: MetricEntityKind,
    nativeIds: readonly string[],
    from: number,
    to: number,
    resolutionSeconds: number,
  ): Promise<Map<string, MetricSample[] | Error>> {
    if (!VSPHERE_HISTORY_RESOLUTIONS.some((r) => r.resolutionSeconds === resolutionSeconds)) {
      return Promise.reject(new RangeError(`vSphere keeps no history at ${resolutionSeconds} s`));
    }
    const type = entityType(kind);
    const ids = [...new Set(nativeIds)];
    const result = new Map<string, MetricSample[] | Error>(ids.map((id) => [id, []]));
    if (ids.length === 0 || from > to) return Promise.resolve(result);
    // startTime is exclusive: one second earlier includes a point at `from`.
    const startTime = new Date(from - 1_000);
    const endTime = new Date(to);
    return this.read(
      ids.map((value) => ({ type, value })),
      (entity, counterIds) => ({ entity, startTime, endTime, counterIds, instance: '', intervalId: resolutionSeconds }),
      (answers, plan, gone) => {
        for (const { entity, error } of gone.values()) result.set(entity.value, error);
        for (const m of answers) {
          if (m.entity.type === type && result.has(m.entity.value)) {
            result.set(m.entity.value, this.points(m, plan, from, to));
          }
        }
        return result;
      },
    );
  }

  /**
   * One QueryPerf for every entity, and `consume` over its answer (parsed as
   * it is iterated). vCenter faults the whole call when one entity is gone,
   * without saying which in a way a client can rely on: the property
   * collector, which answers per object, finds the gone ones, and QueryPerf
   * is asked again without them (they get an Error each).
   */
  private read<T>(
    entities: readonly MoRef[],
    specOf: (entity: MoRef, counterIds: readonly number[]) => PerfQuerySpec,
    consume: (answers: Iterable<PerfEntityMetric>, plan: CounterPlan, gone: Gone) => T,
  ): Promise<T> {
    return this.use(async (s) => {
      const perfManager = s.content.perfManager;
      if (!perfManager) throw new VimFault('NotSupported', 'this endpoint has no PerformanceManager');
      const gone: Gone = new Map();
      const now = Date.now();
      const stale = (e: MoRef) => (this.cpuCounts.get(keyOf(e))?.readAt ?? -Infinity) <= now - CPU_COUNT_TTL_MS;
      await this.readCpuCounts(s, entities.filter(stale), gone);
      for (let attempt = 1; ; attempt++) {
        const live = entities.filter((e) => !gone.has(keyOf(e)));
        if (live.length === 0) return consume([], NO_COUNTERS, gone);
        try {
          const { plan, answers } = await s.call(async () => {
            const plan = await this.planOf(s, perfManager);
            // Without metricId, QueryPerf answers every counter the entity has.
            if (plan.keys.length === 0) return { plan, answers: [] };
            return {
              plan,
              answers: await queryPerf(
                s.client,
                perfManager,
                live.map((e) => specOf(e, plan.keys)),
              ),
            };
          });
          return consume(answers, plan, gone);
        } catch (e) {
          if (!isVimFault(e, 'ManagedObjectNotFound') || attempt >= MAX_ATTEMPTS) throw e;
          const known = gone.size;
          await this.readCpuCounts(s, live, gone);
          if (gone.size === known) throw e;
        }
      }
    });
  }

  /** The session's counter plan: the perfCounter property, read once per session (and login). */
  private planOf(s: VsphereSession, perfManager: MoRef): Promise<CounterPlan> {
    const cached = this.plans.get(s);
    if (cached && cached.sessionKey === s.sessionKey) return cached.plan;
    const entry = {
      sessionKey: s.sessionKey,
      plan: s.retrieveObjects([perfManager], [PERF_COUNTER_SPEC]).then((objects) => {
        // A login renewed during the read: the counters are the new session's.
        entry.sessionKey = s.sessionKey;
        const val = objects[0]?.props.get('perfCounter');
        return val ? planOf(parsePerfCounters(val)) : NO_COUNTERS;
      }),
    };
    entry.plan.catch(() => {
      if (this.plans.get(s) === entry) this.plans.delete(s);
    });
    this.plans.set(s, entry);
    return entry.plan;
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

  /** Each sample of an entity from `from` to `to`, oldest first. */
  private points(m: PerfEntityMetric, plan: CounterPlan, from: number, to: number): MetricSample[] {
    const cpus = this.cpuCounts.get(keyOf(m.entity))?.cpus ?? null;
    return chronological(m).flatMap((i) => {
      const info = m.sampleInfo[i];
      if (!info || info.timestamp < from || info.timestamp > to) return [];
      const sample = emptySample(info.timestamp, info.intervalSeconds);
      for (const series of m.series) {
        const counter = series.instance === '' ? plan.byKey.get(series.counterId) : undefined;
        const v = series.values[i];
        if (counter && v !== undefined && v >= 0) put(sample, counter, v, info.intervalSeconds, cpus);
      }
      return [sample];
    });
  }
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

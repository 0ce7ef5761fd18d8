import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';

import { validateConfig } from '../src/config/load.js';
import type { VspherePlatformConfig } from '../src/config/schema.js';
import { isVimFault } from '../src/datasources/vsphere/errors.js';
import {
  VSPHERE_HISTORY_RESOLUTIONS,
  VSPHERE_PERF_MAX_QUERY_METRICS,
  VsphereMetrics,
} from '../src/datasources/vsphere/metrics.js';
import { VsphereProvider } from '../src/datasources/vsphere/provider.js';
import type { VsphereSession } from '../src/datasources/vsphere/session.js';
import { invokeTask, terminateSession } from '../src/datasources/vsphere/vim.js';
import { elementXml } from '../src/datasources/vsphere/xml.js';
import { PlatformUnavailableError } from '../src/model/errors.js';
import { type MetricField, type MetricReadings, type MetricSample, emptySample } from '../src/model/metrics.js';
import {
  type GovmomiPerfEntity,
  type Vcsim,
  adminSession,
  govmomiPerf,
  startVcsim,
  vspherePlatform,
} from './helpers/vcsim.js';

// The vSphere MetricsSource reads PerformanceManager's counters with one
// QueryPerf per sampling, and history in as few QueryPerf calls as vCenter's
// limit on historical queries allows (config.vpxd.stats.maxQueryMetrics,
// which the fixture enforces as vCenter does). Every number is compared with
// what govmomi's performance package reads from the same simulator for the
// same samples: the fixture's QueryPerf is deterministic per (entity,
// counter, time), so both clients see the same values (see
// test/fixtures/vcsim/perf.go).

const silent = pino({ level: 'silent' });
const reporter = { progress: () => {}, upstreamTask: () => {} };

// The mapping, written out again rather than imported: vSphere's counter,
// the neutral field, and how vSphere's number (for a sample of `seconds`, of
// an entity with `cpus` vCPUs or logical CPUs) becomes the field's.
const FIELDS: Record<string, [MetricField, (v: number, seconds: number, cpus: number) => number]> = {
  'cpu.usage.average': ['cpuUsagePercent', (v) => v / 100],
  // Milliseconds waited over the interval's milliseconds, as a percent, per CPU.
  'cpu.ready.summation': ['cpuReadyPercent', (v, seconds, cpus) => v / (seconds * 10 * cpus)],
  'mem.consumed.average': ['memoryUsedBytes', (v) => v * 1024],
  'mem.usage.average': ['memoryUsagePercent', (v) => v / 100],
  'disk.read.average': ['diskReadBytesPerSecond', (v) => v * 1024],
  'disk.write.average': ['diskWriteBytesPerSecond', (v) => v * 1024],
  'disk.numberReadAveraged.average': ['diskReadIops', (v) => v],
  'disk.numberWriteAveraged.average': ['diskWriteIops', (v) => v],
  'net.received.average': ['networkRxBytesPerSecond', (v) => v * 1024],
  'net.transmitted.average': ['networkTxBytesPerSecond', (v) => v * 1024],
};
const RAW = [
  'cpu.usagemhz.average',
  'cpu.costop.summation',
  'cpu.latency.average',
  'mem.active.average',
  'mem.granted.average',
  'mem.vmmemctl.average',
  'mem.swapped.average',
  'disk.usage.average',
  'disk.maxTotalLatency.latest',
  'net.usage.average',
];
const COUNTERS = [...Object.keys(FIELDS), ...RAW];

/** History asks for the neutral fields' counters only. */
const HISTORY_COUNTERS = Object.keys(FIELDS);

/** What the gateway should make of govmomi's samples `indexes` (oldest first) of one entity: their mean. */
function expected(e: GovmomiPerfEntity, indexes: number[], cpus: number): MetricSample {
  const samples = e.samples ?? [];
  const newest = samples[indexes[indexes.length - 1]!]!;
  const sample = emptySample(Date.parse(newest.timestamp), newest.interval * indexes.length);
  for (const [name, values] of Object.entries(e.series)) {
    const valid = indexes.map((i) => values[i]!).filter((v) => v >= 0);
    if (valid.length === 0) continue;
    const mean = valid.reduce((a, b) => a + b, 0) / valid.length;
    const field = FIELDS[name];
    if (field) sample[field[0]] = field[1](mean, newest.interval, cpus);
    else sample.raw[name] = mean;
  }
  return sample;
}

/**
 * govmomi's history of `ids` at `resolution` from `from` to `to`, as the
 * gateway's points should be: read in queries of at most `maxQueryMetrics`
 * pairs, which the simulator allows (govmomi does not split them itself),
 * and merged by time.
 */
async function govmomiHistory(
  sim: Vcsim,
  type: string,
  ids: readonly string[],
  from: number,
  to: number,
  resolution: number,
  maxQueryMetrics = VSPHERE_PERF_MAX_QUERY_METRICS,
): Promise<Map<string, MetricSample[]>> {
  const chunks = <T>(xs: readonly T[], n: number): T[][] =>
    Array.from({ length: Math.ceil(xs.length / n) }, (_, i) => xs.slice(i * n, (i + 1) * n));
  const queries = chunks(HISTORY_COUNTERS, maxQueryMetrics).flatMap((counters) =>
    chunks(ids, Math.floor(maxQueryMetrics / counters.length)).map((group) =>
      govmomiPerf(sim, {
        entities: group.map((value) => ({ type, value })),
        counters,
        intervalId: resolution,
        // A wider window than asked for, cut to it below: the oracle does not share our reading of startTime.
        start: new Date(from - 3600_000),
        end: new Date(to + 3600_000),
      }),
    ),
  );
  // By entity, by time: each counter's value.
  const byTime = new Map<string, Map<number, GovmomiPerfEntity>>(ids.map((id) => [id, new Map()]));
  for (const answer of await Promise.all(queries)) {
    for (const [id, e] of Object.entries(answer)) {
      (e.samples ?? []).forEach((x, i) => {
        const ts = Date.parse(x.timestamp);
        if (ts < from || ts > to) return;
        const points = byTime.get(id)!;
        const point = points.get(ts) ?? { type, samples: [x], series: {} };
        for (const [name, values] of Object.entries(e.series)) point.series[name] = [values[i]!];
        points.set(ts, point);
      });
    }
  }
  return new Map(
    [...byTime].map(([id, points]) => [
      id,
      [...points].sort(([a], [b]) => a - b).map(([, point]) => expected(point, [0], cpusOf(sim, type, id))),
    ]),
  );
}

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => undefined);
});

async function provider(sim: Vcsim): Promise<VsphereProvider> {
  const config = validateConfig({ platforms: [vspherePlatform(sim, { retryInitialMs: 50, retryMaxMs: 200 })] });
  const p = new VsphereProvider(config.platforms[0] as VspherePlatformConfig, silent);
  await p.start();
  cleanups.push(() => p.stop());
  expect(p.state().status).toBe('CONNECTED');
  return p;
}

async function admin(sim: Vcsim): Promise<VsphereSession> {
  const s = await adminSession(sim);
  cleanups.push(() => s.close());
  return s;
}

/** SOAP calls a provider's session made while `fn` ran, by method. */
async function callsDuring(p: VsphereProvider, fn: () => Promise<unknown>): Promise<Record<string, number>> {
  const counts = () => p.withClient(async (s) => s.client.callCounts().byMethod);
  const before = await counts();
  await fn();
  const after = await counts();
  return Object.fromEntries(
    Object.entries(after)
      .map(([k, v]) => [k, v - (before[k] ?? 0)] as const)
      .filter(([, v]) => v !== 0),
  );
}

const vmRef = (value: string) => ({ type: 'VirtualMachine', value });

function isSample(x: MetricSample | Error | undefined): x is MetricSample {
  return x !== undefined && !(x instanceof Error);
}

let vc: Vcsim;
let esx: Vcsim;
let vcProvider: VsphereProvider;
let esxProvider: VsphereProvider;
/** vCenter's VMs and hosts, sorted. */
let vms: string[];
let hosts: string[];

beforeAll(async () => {
  // 50 VMs in the cluster's pool and 50 in the standalone host's: 100 VMs, 3 hosts.
  [vc, esx] = await Promise.all([
    startVcsim({ dc: 1, cluster: 1, clusterHost: 2, host: 1, vm: 50, ds: 1, pg: 1 }),
    startVcsim({ esx: true, vm: 2 }),
  ]);
  cleanups.push(
    () => vc.stop(),
    () => esx.stop(),
  );
  // One VM with 4 vCPUs, so that ready time is seen divided by the vCPU count.
  const a = await admin(vc);
  vms = Object.keys(vc.oracle.vms).sort();
  hosts = Object.keys(vc.oracle.hosts).sort();
  await a.tasks.wait(
    await invokeTask(a.client, 'ReconfigVM_Task', vmRef(vms[0]!), `<spec>${elementXml('numCPUs', 4)}</spec>`),
    reporter,
  );
  vc.oracle = await vc.refreshOracle();
  expect(vc.oracle.vms[vms[0]!]!.numCpu).toBe(4);
  [vcProvider, esxProvider] = await Promise.all([provider(vc), provider(esx)]);
});

const cpusOf = (sim: Vcsim, type: string, id: string): number =>
  type === 'VirtualMachine' ? sim.oracle.vms[id]!.numCpu : sim.oracle.hosts[id]!.numCpuThreads;

describe('vSphere metrics (PerformanceManager) match govmomi', () => {
  it.each([['vCenter'], ['ESXi']])('latest samples of VMs and hosts of %s are govmomi’s readings', async (which) => {
    const sim = which === 'vCenter' ? vc : esx;
    const p = which === 'vCenter' ? vcProvider : esxProvider;
    const someVms = Object.keys(sim.oracle.vms).sort().slice(0, 4);
    const allHosts = Object.keys(sim.oracle.hosts).sort();
    const readings = await p.metrics.sample({ vms: someVms, hosts: allHosts }, 20);
    expect([...readings.vms.keys()].sort()).toEqual(someVms);
    expect([...readings.hosts.keys()].sort()).toEqual(allHosts);

    const samples = [...readings.vms.values(), ...readings.hosts.values()].filter(isSample);
    expect(samples).toHaveLength(someVms.length + allHosts.length);
    // One QueryPerf: every entity's latest sample ends at the same 20 s boundary.
    const t = samples[0]!.timestamp;
    expect(t % 20_000).toBe(0);
    const entities = [
      ...someVms.map((value) => ({ type: 'VirtualMachine', value })),
      ...allHosts.map((value) => ({ type: 'HostSystem', value })),
    ];
    const oracle = await govmomiPerf(sim, {
      entities,
      counters: COUNTERS,
      intervalId: 20,
      start: new Date(t - 20_000),
      end: new Date(t),
      maxSample: 1,
    });
    for (const e of entities) {
      const got = (e.type === 'VirtualMachine' ? readings.vms : readings.hosts).get(e.value);
      const theirs = oracle[e.value]!;
      expect(theirs.samples).toEqual([{ timestamp: new Date(t).toISOString().replace('.000', ''), interval: 20 }]);
      expect(got, `${e.type} ${e.value}`).toEqual(expected(theirs, [0], cpusOf(sim, e.type, e.value)));
    }
    // The simulator has numbers for CPU, memory and network, and, like many
    // vCenters, no aggregate of disk.numberReadAveraged: that field is null.
    const host = readings.hosts.get(allHosts[0]!) as MetricSample;
    expect(host.cpuUsagePercent).toEqual(expect.any(Number));
    expect(host.cpuReadyPercent).toEqual(expect.any(Number));
    expect(host.memoryUsedBytes).toEqual(expect.any(Number));
    expect(host.networkRxBytesPerSecond).toEqual(expect.any(Number));
    expect(host.diskReadIops).toBeNull();
    expect(host.raw['cpu.usagemhz.average']).toEqual(expect.any(Number));
  });

  it('divides ready time by the vCPU count', async () => {
    const readings = await vcProvider.metrics.sample({ vms: [vms[0]!], hosts: [] }, 20);
    const s = readings.vms.get(vms[0]!) as MetricSample;
    const oracle = await govmomiPerf(vc, {
      entities: [vmRef(vms[0]!)],
      counters: ['cpu.ready.summation'],
      intervalId: 20,
      start: new Date(s.timestamp - 20_000),
      end: new Date(s.timestamp),
      maxSample: 1,
    });
    const readyMs = oracle[vms[0]!]!.series['cpu.ready.summation']![0]!;
    expect(readyMs).toBeGreaterThan(0);
    // 4 vCPUs over a 20 s interval: 80 000 ms of vCPU time.
    expect(s.cpuReadyPercent).toBeCloseTo((readyMs / 80_000) * 100, 12);
  });

  it('averages 20 s samples over a longer interval', async () => {
    const someVms = vms.slice(0, 3);
    const readings = await vcProvider.metrics.sample({ vms: someVms, hosts }, 60);
    const first = [...readings.vms.values()][0] as MetricSample;
    expect(first.intervalSeconds).toBe(60);
    const t = first.timestamp;
    const entities = [...someVms.map(vmRef), ...hosts.map((value) => ({ type: 'HostSystem', value }))];
    const oracle = await govmomiPerf(vc, {
      entities,
      counters: COUNTERS,
      intervalId: 20,
      start: new Date(t - 60_000),
      end: new Date(t),
      maxSample: 3,
    });
    for (const e of entities) {
      const theirs = oracle[e.value]!;
      expect(theirs.samples!.map((x) => Date.parse(x.timestamp))).toEqual([t - 40_000, t - 20_000, t]);
      const got = (e.type === 'VirtualMachine' ? readings.vms : readings.hosts).get(e.value);
      expect(got, `${e.type} ${e.value}`).toEqual(expected(theirs, [0, 1, 2], cpusOf(vc, e.type, e.value)));
    }
  });

  it('reads history at 300 s as govmomi does, oldest first, the neutral fields only', async () => {
    const to = Date.now();
    const from = to - 2 * 3600_000;
    for (const [kind, type, ids] of [
      ['VM', 'VirtualMachine', vms.slice(0, 3)],
      ['HOST', 'HostSystem', hosts],
    ] as const) {
      const history = await vcProvider.metrics.history(kind, ids, from, to, 300);
      const oracle = await govmomiHistory(vc, type, ids, from, to, 300);
      for (const id of ids) {
        const points = history.get(id) as MetricSample[];
        expect(points.length).toBeGreaterThanOrEqual(23);
        expect(points.every((x) => x.timestamp % 300_000 === 0 && x.intervalSeconds === 300)).toBe(true);
        // History has no `raw`: the raw counters would cost vCenter's limited query size.
        expect(points.every((x) => Object.keys(x.raw).length === 0)).toBe(true);
        expect(points).toEqual(oracle.get(id));
      }
    }
    await expect(vcProvider.metrics.history('VM', vms.slice(0, 1), from, to, 600)).rejects.toThrow(
      new RangeError('vSphere keeps history at 300 s, 1800 s, 7200 s, 86400 s, not at 600 s'),
    );
  });

  it('splits history over as few QueryPerf calls as vCenter’s maxQueryMetrics allows', async () => {
    // 20 VMs x 10 counters: 200 pairs; vCenter allows 64 a call: 6 VMs a call, 4 calls.
    const ids = vms.slice(0, 20);
    const to = Date.now();
    const from = to - 2 * 3600_000;
    let history: Map<string, MetricSample[] | Error> | undefined;
    const calls = await callsDuring(vcProvider, async () => {
      history = await vcProvider.metrics.history('VM', ids, from, to, 300);
    });
    const perCall = Math.floor(VSPHERE_PERF_MAX_QUERY_METRICS / HISTORY_COUNTERS.length);
    expect(calls['QueryPerf']).toBe(Math.ceil(ids.length / perCall));
    expect(calls['QueryPerf']).toBe(4);
    // Besides QueryPerf, at most the CPU counts of VMs not read before.
    expect(Object.keys(calls).filter((m) => m !== 'QueryPerf' && m !== 'RetrievePropertiesEx')).toEqual([]);
    const oracle = await govmomiHistory(vc, 'VirtualMachine', ids, from, to, 300);
    for (const id of ids) {
      expect((history!.get(id) as MetricSample[]).length).toBeGreaterThanOrEqual(23);
      expect(history!.get(id), id).toEqual(oracle.get(id));
    }
    // And all 100 VMs: ceil(100 / 6).
    const all = await callsDuring(vcProvider, () => vcProvider.metrics.history('VM', vms, from, to, 300));
    expect(all['QueryPerf']).toBe(17);
  });

  it('finds out a vCenter that allows fewer pairs a call by halving, and keeps to it for the session', async () => {
    // config.vpxd.stats.maxQueryMetrics = 8: fewer than one VM's 10 counters.
    const small = await startVcsim({ cluster: 1, clusterHost: 1, host: 1, vm: 5, perfMaxQueryMetrics: 8 });
    cleanups.push(() => small.stop());
    const p = await provider(small);
    const ids = Object.keys(small.oracle.vms).sort();
    expect(ids).toHaveLength(10);
    const to = Date.now();
    const from = to - 3600_000;
    let history: Map<string, MetricSample[] | Error> | undefined;
    const first = await callsDuring(p, async () => {
      history = await p.metrics.history('VM', ids, from, to, 300);
    });
    // 100 pairs: refused as 60 + 40 pairs (64 a call), as 30 + 30 + 30 + 10 (32 a call),
    // as 10 pairs (16 a call: 4 in flight, the other 6 wait), then 8 a call, each VM's
    // counters spread over calls: 2 + 4 + 4 + 13.
    const pairs = ids.length * HISTORY_COUNTERS.length;
    expect(first).toEqual({ RetrievePropertiesEx: 2, QueryPerf: 2 + 4 + 4 + Math.ceil(pairs / 8) });
    const oracle = await govmomiHistory(small, 'VirtualMachine', ids.slice(0, 3), from, to, 300, 8);
    for (const id of ids) expect((history!.get(id) as MetricSample[]).length).toBeGreaterThanOrEqual(11);
    for (const id of ids.slice(0, 3)) expect(history!.get(id), id).toEqual(oracle.get(id));
    // The session keeps the budget found: 8 pairs a call, filled, no refusal.
    const again = await callsDuring(p, () => p.metrics.history('VM', ids, from, to, 300));
    expect(again).toEqual({ QueryPerf: Math.ceil(pairs / 8) });

    // Configured as the vCenter is: no refusal from the first call.
    const configured = new VsphereMetrics((fn) => p.withClient(fn), { maxQueryMetrics: 8 });
    let same: Map<string, MetricSample[] | Error> | undefined;
    const direct = await callsDuring(p, async () => {
      same = await configured.history('VM', ids, from, to, 300);
    });
    // Its own PerformanceManager read and CPU counts, and 13 calls.
    expect(direct).toEqual({ RetrievePropertiesEx: 2, QueryPerf: 13 });
    expect(same).toEqual(history);
  });

  it('with no limit configured, still finds out vCenter’s', async () => {
    // maxQueryMetrics -1 (vCenter's "no limit"), against a vCenter that allows 64:
    // 200 pairs refused, then 2 x 100 refused, then 4 x 50.
    const unlimited = new VsphereMetrics((fn) => vcProvider.withClient(fn), { maxQueryMetrics: -1 });
    const ids = vms.slice(0, 20);
    const to = Date.now();
    const from = to - 3600_000;
    let history: Map<string, MetricSample[] | Error> | undefined;
    const calls = await callsDuring(vcProvider, async () => {
      history = await unlimited.history('VM', ids, from, to, 300);
    });
    expect(calls['QueryPerf']).toBe(7);
    expect(history).toEqual(await vcProvider.metrics.history('VM', ids, from, to, 300));
  });
});

describe('vSphere metrics: the history an endpoint keeps', () => {
  it('offers vCenter’s default intervals before any read, and as read from a vCenter that keeps them', async () => {
    const p = await provider(vc);
    expect(p.metrics.historyResolutions).toEqual(VSPHERE_HISTORY_RESOLUTIONS);
    // Read with the counters, in the same call.
    expect(await callsDuring(p, () => p.metrics.sample({ vms: vms.slice(0, 2), hosts: [] }, 20))).toEqual({
      RetrievePropertiesEx: 2,
      QueryPerf: 1,
    });
    expect(p.metrics.historyResolutions).toEqual([
      { resolutionSeconds: 300, retentionSeconds: 86_400 },
      { resolutionSeconds: 1_800, retentionSeconds: 604_800 },
      { resolutionSeconds: 7_200, retentionSeconds: 2_592_000 },
      { resolutionSeconds: 86_400, retentionSeconds: 31_536_000 },
    ]);
  });

  it('follows a vCenter whose intervals were changed', async () => {
    // The day's 5-minute samples kept 3 days; the month's and year's intervals turned off.
    const sim = await startVcsim({
      cluster: 1,
      clusterHost: 1,
      host: 0,
      vm: 1,
      perfIntervals: '300:259200,1800:604800,7200:2592000:disabled,86400:31536000:disabled',
    });
    cleanups.push(() => sim.stop());
    const p = await provider(sim);
    const [vm] = Object.keys(sim.oracle.vms).sort();
    // The first history read finds them out; 2 days back at 300 s is there.
    const to = Date.now();
    const from = to - 2 * 86_400_000;
    const history = await p.metrics.history('VM', [vm!], from, to, 300);
    expect(p.metrics.historyResolutions).toEqual([
      { resolutionSeconds: 300, retentionSeconds: 259_200 },
      { resolutionSeconds: 1_800, retentionSeconds: 604_800 },
    ]);
    const points = history.get(vm!) as MetricSample[];
    expect(points.length).toBeGreaterThanOrEqual(2 * 288 - 1);
    expect(points).toEqual((await govmomiHistory(sim, 'VirtualMachine', [vm!], from, to, 300)).get(vm!));
    // The turned-off ones are refused without a call, naming those kept.
    expect(
      await callsDuring(p, () =>
        expect(p.metrics.history('VM', [vm!], from, to, 7200)).rejects.toThrow(
          new RangeError('vSphere keeps history at 300 s, 1800 s, not at 7200 s'),
        ),
      ),
    ).toEqual({});
  });

  it('offers none on a standalone ESXi host, and refuses history there', async () => {
    // A fresh provider, whose first call is for history: the read tells, before any QueryPerf.
    const p = await provider(esx);
    expect(p.metrics.historyResolutions).toEqual(VSPHERE_HISTORY_RESOLUTIONS);
    const vmIds = Object.keys(esx.oracle.vms);
    const refused = new RangeError(
      'vSphere keeps no history here (a standalone ESXi host serves its last hour at 20 s only), not at 300 s',
    );
    expect(
      await callsDuring(p, () =>
        expect(p.metrics.history('VM', vmIds, Date.now() - 3600_000, Date.now(), 300)).rejects.toThrow(refused),
      ),
    ).toEqual({ RetrievePropertiesEx: 1 });
    // ESXi lists one interval (300 s, 36 h) that it does not serve: none.
    expect(p.metrics.historyResolutions).toEqual([]);
    expect(
      await callsDuring(p, () =>
        expect(p.metrics.history('HOST', ['ha-host'], Date.now() - 3600_000, Date.now(), 300)).rejects.toThrow(
          RangeError,
        ),
      ),
    ).toEqual({});
    // Live samples as ever.
    const readings = await p.metrics.sample({ vms: vmIds, hosts: [] }, 20);
    expect([...readings.vms.values()].every(isSample)).toBe(true);
    expect(esxProvider.metrics.historyResolutions).toEqual([]);
  });
});

describe('vSphere metrics: upstream calls and failures', () => {
  it('samples 100 VMs and 3 hosts with one QueryPerf', async () => {
    expect(vms).toHaveLength(100);
    let readings: MetricReadings | undefined;
    const first = await callsDuring(vcProvider, async () => {
      readings = await vcProvider.metrics.sample({ vms, hosts }, 20);
    });
    expect(readings!.vms.size).toBe(100);
    expect(readings!.hosts.size).toBe(3);
    expect([...readings!.vms.values(), ...readings!.hosts.values()].every(isSample)).toBe(true);
    // Besides QueryPerf, at most the CPU counts of VMs not read before.
    expect(first['QueryPerf']).toBe(1);
    expect(Object.keys(first).filter((m) => m !== 'QueryPerf' && m !== 'RetrievePropertiesEx')).toEqual([]);
    // Once the CPU counts are known, QueryPerf is all.
    const again = await callsDuring(vcProvider, () => vcProvider.metrics.sample({ vms, hosts }, 40));
    expect(again).toEqual({ QueryPerf: 1 });
  });

  it('leaves out a VM that is off', async () => {
    const a = await admin(vc);
    const off = vms[99]!;
    await a.tasks.wait(await invokeTask(a.client, 'PowerOffVM_Task', vmRef(off)), reporter);
    const readings = await vcProvider.metrics.sample({ vms: vms.slice(97), hosts: [] }, 20);
    expect(readings.vms.has(off)).toBe(false);
    expect([...readings.vms.keys()].sort()).toEqual(vms.slice(97, 99));
  });

  it('answers an Error for an unknown or deleted VM only', async () => {
    const known = vms.slice(1, 3);
    let readings: MetricReadings | undefined;
    // Unknown: the CPU count lookup finds it gone before QueryPerf.
    const calls = await callsDuring(vcProvider, async () => {
      readings = await vcProvider.metrics.sample({ vms: [...known, 'vm-424242'], hosts: [hosts[0]!] }, 20);
    });
    expect(calls).toEqual({ RetrievePropertiesEx: 1, QueryPerf: 1 });
    const unknown = readings!.vms.get('vm-424242');
    expect(isVimFault(unknown, 'ManagedObjectNotFound')).toBe(true);
    expect(known.every((id) => isSample(readings!.vms.get(id)))).toBe(true);
    expect(isSample(readings!.hosts.get(hosts[0]!))).toBe(true);

    // Deleted after its CPU count was read: QueryPerf faults for the whole call and is asked again without it.
    const gone = vms[99]!; // powered off above
    await vcProvider.metrics.sample({ vms: [...known, gone], hosts: [] }, 20);
    const a = await admin(vc);
    await a.tasks.wait(await invokeTask(a.client, 'Destroy_Task', vmRef(gone)), reporter);
    const afterDelete = await callsDuring(vcProvider, async () => {
      readings = await vcProvider.metrics.sample({ vms: [...known, gone], hosts: [] }, 20);
    });
    expect(afterDelete).toEqual({ QueryPerf: 2, RetrievePropertiesEx: 1 });
    expect(isVimFault(readings!.vms.get(gone), 'ManagedObjectNotFound')).toBe(true);
    expect(known.every((id) => isSample(readings!.vms.get(id)))).toBe(true);

    const history = await vcProvider.metrics.history('VM', [known[0]!, gone], Date.now() - 3600_000, Date.now(), 300);
    expect(isVimFault(history.get(gone), 'ManagedObjectNotFound')).toBe(true);
    expect((history.get(known[0]!) as MetricSample[]).length).toBeGreaterThan(10);
  });

  it('reads the counter IDs once per session, and again after the session is renewed', async () => {
    const p = await provider(esx);
    const ids = { vms: Object.keys(esx.oracle.vms), hosts: Object.keys(esx.oracle.hosts) };
    // perfCounter and the CPU counts.
    expect(await callsDuring(p, () => p.metrics.sample(ids, 20))).toEqual({ RetrievePropertiesEx: 2, QueryPerf: 1 });
    expect(await callsDuring(p, () => p.metrics.sample(ids, 20))).toEqual({ QueryPerf: 1 });

    const a = await admin(esx);
    await terminateSession(a.client, a.content, [await p.withClient(async (s) => s.sessionKey)]);
    // NotAuthenticated, a new login, the counters read again for it, QueryPerf again.
    let readings: MetricReadings | undefined;
    const renewed = await callsDuring(p, async () => {
      readings = await p.metrics.sample(ids, 20);
    });
    expect(renewed).toEqual({ QueryPerf: 2, Login: 1, RetrievePropertiesEx: 1 });
    expect([...readings!.vms.values()].every(isSample)).toBe(true);
    expect(await callsDuring(p, () => p.metrics.sample(ids, 20))).toEqual({ QueryPerf: 1 });
  });

  it('rejects with the usual typed error when vSphere is unreachable', async () => {
    const p = await provider(esx);
    await esx.stop();
    await expect(p.metrics.sample({ vms: Object.keys(esx.oracle.vms), hosts: [] }, 20)).rejects.toBeInstanceOf(
      PlatformUnavailableError,
    );
    // And while it stays down, at once.
    await expect(p.metrics.history('HOST', ['ha-host'], 0, Date.now(), 300)).rejects.toBeInstanceOf(
      PlatformUnavailableError,
    );
  });
});

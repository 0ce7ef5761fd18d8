// The cost of one metrics sampling (one interval) at 1,000 and 5,000 running
// VMs, against the minimal direct calls measured in the same run, as a ratio.
//
// 1. vSphere, a vCenter simulator per size (the test fixture's, whose
//    QueryPerf answers as vCenter does): the provider's VsphereMetrics
//    sample() of every VM and host, and the same through PlatformSampler
//    (the gateway's path to subscribers), against govmomi
//    (bench/govmomi-perf) making the one QueryPerf with the same entities and
//    counters (intervalId 20, maxSample 1), logged in and with the counter
//    keys resolved beforehand, as the gateway's session is. Timed directly
//    against the simulator (TLS); SOAP calls counted by the session, bytes
//    counted by a plain-HTTP proxy in a separate, untimed pass.
// 2. libvirt, the test driver with an estate of that many running domains:
//    the provider's LibvirtMetricsSource sample() of every domain and the
//    host, against the addon called directly (one bulk getDomainStats with
//    the same stats groups and flags, and getNodeStats).
//
// Beside each wall time, the CPU time the client spent (this process's, or
// the Go process's): on loopback the simulator's own work dominates the wall
// time, the CPU time is the client's cost.
//
// Sizes: METRICS_SIZES (1000,5000); METRICS_PARTS (vsphere,libvirt); medians
// of METRICS_RUNS (5) runs after a warm-up, the sides alternating. Absolute
// times are for orientation only. About 2.5 minutes on the 2-core machine.
import { type ChildProcessWithoutNullStreams, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { pino } from 'pino';
import { Agent, request } from 'undici';

import { validateConfig } from '../src/config/load.js';
import type { LibvirtPlatformConfig, VspherePlatformConfig } from '../src/config/schema.js';
import { DomainStats, DomainStatsFlags, nativeAddon } from '../src/datasources/libvirt/addon.js';
import { LibvirtProvider } from '../src/datasources/libvirt/provider.js';
import { createRequestScope } from '../src/datasources/request-scope.js';
import { VsphereProvider } from '../src/datasources/vsphere/provider.js';
import { PlatformSampler } from '../src/metrics/platform-sampler.js';
import type { MetricReadings, MetricTargets, MetricsSource } from '../src/model/metrics.js';
import { writeEstate } from '../test/fixtures/libvirt-estate.js';
import { vspherePlatform } from '../test/helpers/vcsim.js';
import {
  machine,
  medianOf,
  memoryOf,
  mib,
  ms,
  printTable,
  ratio,
  settledRss,
  sleep,
  startLargeVcsim,
  timeAlternating,
} from './support.js';

const SIZES = (process.env['METRICS_SIZES'] ?? '1000,5000').split(',').map(Number);
const RUNS = Number(process.env['METRICS_RUNS'] ?? 5);
const PARTS = new Set((process.env['METRICS_PARTS'] ?? 'vsphere,libvirt').split(','));

const silent = pino({ level: 'silent' });
/** vSphere's realtime interval: QueryPerf with intervalId 20 and maxSample 1. */
const INTERVAL_SECONDS = 20;

/** The stats groups and flags of LibvirtMetricsSource's bulk call (src/datasources/libvirt/metrics.ts). */
const LIBVIRT_DOMAIN_STATS =
  DomainStats.STATE |
  DomainStats.CPU_TOTAL |
  DomainStats.BALLOON |
  DomainStats.VCPU |
  DomainStats.INTERFACE |
  DomainStats.BLOCK;
const LIBVIRT_STATS_FLAGS = DomainStatsFlags.NOWAIT;

/**
 * Between two libvirt samplings: longer than the least time the source makes
 * rates over (500 ms), so each starts from the previous reading rather than
 * waiting a window for a second one, as a sampling every interval does.
 */
const LIBVIRT_GAP_MS = 700;

const bytes = (n: number) =>
  n >= 1024 * 1024 ? `${(n / 1024 / 1024).toFixed(2)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`;
const callsText = (c: Record<string, number>) =>
  Object.entries(c)
    .map(([m, n]) => `${m} ${n}`)
    .join(', ') || 'none';

function diff(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (v - (before[k] ?? 0) !== 0) out[k] = v - (before[k] ?? 0);
  return out;
}

console.log(`metrics sampling benchmarks on ${machine()}`);

// --- the Go baseline ---------------------------------------------------------

const GOVMOMI_PERF = join(process.cwd(), '.cache/bin/govmomi-perf');

/** Builds bench/govmomi-perf offline from Debian's govmomi sources, as support.ts builds govmomi-list. */
function buildGovmomiPerf(): void {
  const source = join(process.cwd(), 'bench/govmomi-perf/main.go');
  if (existsSync(GOVMOMI_PERF) && statSync(GOVMOMI_PERF).mtimeMs >= statSync(source).mtimeMs) return;
  execFileSync('go', ['build', '-o', GOVMOMI_PERF, './bench/govmomi-perf'], {
    stdio: 'inherit',
    env: {
      ...process.env,
      GO111MODULE: 'off',
      GOPATH: '/usr/share/gocode',
      GOCACHE: join(process.cwd(), '.cache/go-build'),
      GOENV: 'off',
      GOPROXY: 'off',
    },
  });
}

interface GoRun {
  run: number;
  ms: number;
  /** The Go process's CPU time during the run (user and system, every thread). */
  cpuMs: number;
  entities: number;
  series: number;
  peakRssMiB: number;
}

interface GoPerf {
  /** Counters resolved by name. */
  counters: number;
  /** One QueryPerf, timed by the Go process itself. */
  next(): Promise<GoRun>;
  close(): Promise<void>;
}

interface SimLogin {
  url: string;
  username: string;
  password: string;
  certFile?: string;
}

/** Starts govmomi-perf in its one-run-per-input-line mode; resolves once it has logged in and resolved the counters. */
async function startGoPerf(sim: SimLogin, entitiesFile: string): Promise<GoPerf> {
  const child: ChildProcessWithoutNullStreams = spawn(
    GOVMOMI_PERF,
    [
      `-url=${sim.url}`,
      `-username=${sim.username}`,
      `-password=${sim.password}`,
      ...(sim.certFile ? [`-ca=${sim.certFile}`] : []),
      `-entities=${entitiesFile}`,
      '-runs=0',
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-10_000)));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const waiting: { resolve: (line: string) => void; reject: (e: Error) => void }[] = [];
  createInterface({ input: child.stdout }).on('line', (l) => waiting.shift()?.resolve(l));
  void exited.then(() => {
    for (const w of waiting.splice(0)) w.reject(new Error(`govmomi-perf exited: ${stderr}`));
  });
  const nextLine = () => new Promise<string>((resolve, reject) => waiting.push({ resolve, reject }));
  const ready = JSON.parse(await nextLine()) as { counters: number };
  return {
    counters: ready.counters,
    next: async () => {
      const line = nextLine();
      child.stdin.write('\n');
      return JSON.parse(await line) as GoRun;
    },
    close: async () => {
      child.stdin.end();
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}

// --- bytes on the wire ---------------------------------------------------------

interface MethodBytes {
  calls: number;
  /** SOAP envelopes: request and response bodies, uncompressed (neither side compresses). */
  requestBytes: number;
  responseBytes: number;
  /** `<counterId>` elements sent (QueryPerf: entities x counters). */
  counterIds: number;
}

interface ByteProxy {
  /** http://127.0.0.1:PORT/sdk */
  url: string;
  byMethod(): Map<string, MethodBytes>;
  close(): Promise<void>;
}

/** Headers of the client's hop (Go sends its body chunked), not relayed: the relay sends the body whole. */
const HOP_HEADERS: ReadonlySet<string> = new Set([
  'host',
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
]);

/** A plain-HTTP relay to a simulator that counts each SOAP method's calls and body bytes both ways. */
async function startByteProxy(target: string, caFile: string): Promise<ByteProxy> {
  const dispatcher = new Agent({ connect: { ca: readFileSync(caFile, 'utf8') }, headersTimeout: 0, bodyTimeout: 0 });
  const counts = new Map<string, MethodBytes>();
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const text = body.toString('utf8');
    const method = /<(\w+) xmlns="urn:vim25">/.exec(text.slice(0, 2048))?.[1] ?? 'unknown';
    const m = counts.get(method) ?? { calls: 0, requestBytes: 0, responseBytes: 0, counterIds: 0 };
    counts.set(method, m);
    m.calls += 1;
    m.requestBytes += body.length;
    m.counterIds += text.split('<counterId>').length - 1;
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && !HOP_HEADERS.has(k)) headers[k] = v;
    const upstream = await request(target, { method: 'POST', headers, body, dispatcher });
    if (upstream.headers['content-encoding']) throw new Error('a compressed answer: its bytes would not be comparable');
    const out: Record<string, string | string[]> = { 'content-type': 'text/xml; charset=utf-8' };
    const cookie = upstream.headers['set-cookie'];
    if (cookie) out['set-cookie'] = cookie;
    res.writeHead(upstream.statusCode, out);
    for await (const c of upstream.body) {
      m.responseBytes += (c as Buffer).length;
      res.write(c);
    }
    res.end();
  };
  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(502);
      res.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/sdk`,
    byMethod: () => new Map([...counts].map(([k, v]) => [k, { ...v }])),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await dispatcher.close();
    },
  };
}

function bytesSince(
  before: Map<string, MethodBytes>,
  after: Map<string, MethodBytes>,
  method: string,
): MethodBytes | null {
  const a = after.get(method);
  if (!a) return null;
  const b = before.get(method) ?? { calls: 0, requestBytes: 0, responseBytes: 0, counterIds: 0 };
  return {
    calls: a.calls - b.calls,
    requestBytes: a.requestBytes - b.requestBytes,
    responseBytes: a.responseBytes - b.responseBytes,
    counterIds: a.counterIds - b.counterIds,
  };
}

// --- the gateway's sampler ---------------------------------------------------------

/**
 * One sampling through PlatformSampler (what MetricsService runs per
 * platform and interval), as the catch-up a new watcher of every object
 * causes: the source's sample() and the sampler's bookkeeping (the batch, the
 * latest samples, the interval's listeners) up to the listener. A fresh
 * sampler each time; its wall-clock ticks are kept from sampling (only the
 * first call reaches the source). Both times in ms: from the source's call to
 * the listener, and from the source's answer to the listener.
 */
async function throughSampler(
  source: MetricsSource,
  targets: MetricTargets,
  intervalSeconds: number,
): Promise<{ totalMs: number; bookkeepingMs: number; samples: number }> {
  let allowed = true;
  let calledAt = 0;
  let answeredAt = 0;
  const timed: MetricsSource = {
    minIntervalSeconds: source.minIntervalSeconds,
    historyResolutions: source.historyResolutions,
    history: (...args) => source.history(...args),
    sample: async (t, i) => {
      allowed = false;
      calledAt = performance.now();
      const r = await source.sample(t, i);
      answeredAt = performance.now();
      return r;
    },
  };
  const sampler = new PlatformSampler(
    'bench',
    timed,
    () => allowed,
    () => targets,
    silent,
  );
  try {
    const samples = await new Promise<number>((resolve) => {
      sampler.watch(intervalSeconds, 'ALL', (batch) => resolve(batch.updates.size));
    });
    const doneAt = performance.now();
    return { totalMs: doneAt - calledAt, bookkeepingMs: doneAt - answeredAt, samples };
  } finally {
    sampler.stop();
  }
}

/** Runs fn, pushing this process's CPU time meanwhile (user and system, every thread, the addon's too) in ms. */
async function withCpu<T>(into: number[], fn: () => Promise<T>): Promise<T> {
  const c0 = process.cpuUsage();
  try {
    return await fn();
  } finally {
    const c = process.cpuUsage(c0);
    into.push((c.user + c.system) / 1000);
  }
}

/** The median of values recorded per run, without the first (timeAlternating's warm-up). */
const measuredMedian = (values: readonly number[]) => medianOf(values.slice(1));

/** "x1.25 (CPU x2.10)" */
const ratios = (wall: number, wallBase: number, cpu: number, cpuBase: number) =>
  `${ratio(wall, wallBase)} (CPU ${ratio(cpu, cpuBase)})`;

const sampleCount = (r: MetricReadings) =>
  [...r.vms.values(), ...r.hosts.values()].filter((s) => !(s instanceof Error)).length;

type Row = string[];
const HEADERS = ['what', 'baseline', 'measured', 'ratio', 'RSS'];

// --- 1: vSphere -------------------------------------------------------------------

async function vsphere(n: number, rows: Row[]): Promise<void> {
  const clusters = 2;
  const sim = await startLargeVcsim({ clusters, hostsPerCluster: 2, vmsPerCluster: Math.ceil(n / clusters) });
  const providers: VsphereProvider[] = [];
  let go: GoPerf | null = null;
  let proxy: ByteProxy | null = null;
  try {
    const rssBefore = await settledRss(process.pid, 3, 200);
    const config = validateConfig({ platforms: [vspherePlatform(sim)] });
    const provider = new VsphereProvider(config.platforms[0] as VspherePlatformConfig, silent);
    providers.push(provider);
    await provider.start();
    const allVms = await provider.listVms();
    const vms = allVms.filter((v) => v.powerState === 'ON').map((v) => v.nativeId);
    const hosts = (await provider.listHosts(createRequestScope())).map((h) => h.nativeId);
    if (vms.length !== n) throw new Error(`the simulator has ${vms.length} running VMs of ${allVms.length}, not ${n}`);
    console.log(
      `vcsim with ${allVms.length} VMs (${vms.length} on) and ${hosts.length} hosts started in ${ms(sim.startMs)}`,
    );
    const targets: MetricTargets = { vms, hosts };
    const dir = mkdtempSync(join(tmpdir(), 'virt-graph-bench-perf-'));
    const entitiesFile = join(dir, 'entities.txt');
    writeFileSync(
      entitiesFile,
      [...vms.map((v) => `VirtualMachine:${v}`), ...hosts.map((h) => `HostSystem:${h}`)].join('\n') + '\n',
    );
    const counts = () => provider.withClient(async (s) => s.client.callCounts().byMethod);

    // The first sampling of a session: the counter list and every entity's CPU count, then QueryPerf.
    let before = await counts();
    const t = performance.now();
    const cold = await provider.metrics.sample(targets, INTERVAL_SECONDS);
    const coldMs = performance.now() - t;
    const coldCalls = diff(before, await counts());
    const expected = n + hosts.length;
    if (sampleCount(cold) !== expected) throw new Error(`sampled ${sampleCount(cold)} of ${expected}`);

    // A sampling later in the session: its calls.
    before = await counts();
    await provider.metrics.sample(targets, INTERVAL_SECONDS);
    const warmCalls = diff(before, await counts());

    go = await startGoPerf(sim, entitiesFile);
    const goPerf = go;
    let goRun: GoRun | null = null;
    const bookkeeping: number[] = [];
    const cpu = { govmomi: [] as number[], source: [] as number[], sampler: [] as number[] };
    const timed = await timeAlternating(
      {
        govmomi: async () => {
          goRun = await goPerf.next();
          if (goRun.entities !== expected) throw new Error(`govmomi: ${JSON.stringify(goRun)}`);
          cpu.govmomi.push(goRun.cpuMs);
          return goRun.ms;
        },
        source: () =>
          withCpu(cpu.source, async () => {
            const r = await provider.metrics.sample(targets, INTERVAL_SECONDS);
            if (sampleCount(r) !== expected) throw new Error(`sampled ${sampleCount(r)} of ${expected}`);
          }),
        sampler: () =>
          withCpu(cpu.sampler, async () => {
            const r = await throughSampler(provider.metrics, targets, INTERVAL_SECONDS);
            if (r.samples !== expected) throw new Error(`the sampler delivered ${r.samples} of ${expected}`);
            bookkeeping.push(r.bookkeepingMs);
            return r.totalMs;
          }),
      },
      RUNS,
    );
    const cpuMs = {
      govmomi: measuredMedian(cpu.govmomi),
      source: measuredMedian(cpu.source),
      sampler: measuredMedian(cpu.sampler),
    };
    const rssAfter = await settledRss(process.pid, 3, 200);
    const goPeak = (goRun as GoRun | null)?.peakRssMiB ?? NaN;
    await go.close();
    go = null;

    // Bytes, untimed: a provider and a govmomi-perf of their own through a counting proxy.
    proxy = await startByteProxy(sim.url, sim.certFile);
    const viaProxy = { url: proxy.url, username: sim.username, password: sim.password };
    const counted = new VsphereProvider(
      validateConfig({ platforms: [{ id: 'vc', kind: 'vsphere', ...viaProxy }] }).platforms[0] as VspherePlatformConfig,
      silent,
    );
    providers.push(counted);
    await counted.start();
    const b0 = proxy.byMethod();
    await counted.metrics.sample(targets, INTERVAL_SECONDS);
    const coldBytes = proxy.byMethod();
    const coldRetrieve = bytesSince(b0, coldBytes, 'RetrievePropertiesEx');
    await counted.metrics.sample(targets, INTERVAL_SECONDS);
    const gwBytes = bytesSince(coldBytes, proxy.byMethod(), 'QueryPerf');
    const countingGo = await startGoPerf(viaProxy, entitiesFile);
    const goBefore = proxy.byMethod();
    await countingGo.next();
    const goBytes = bytesSince(goBefore, proxy.byMethod(), 'QueryPerf');
    await countingGo.close();
    if (!gwBytes || !goBytes || gwBytes.calls !== 1 || goBytes.calls !== 1) {
      throw new Error(`QueryPerf calls through the proxy: ${JSON.stringify({ gwBytes, goBytes })}`);
    }
    const gwCounters = gwBytes.counterIds / expected;
    const goCounters = goBytes.counterIds / expected;
    if (gwCounters !== goCounters || goCounters !== goPerf.counters) {
      throw new Error(
        `counters per entity: gateway ${gwCounters}, govmomi ${goCounters} (${goPerf.counters} resolved)`,
      );
    }

    const what = `vSphere, ${n} VMs + ${hosts.length} hosts`;
    const bk = measuredMedian(bookkeeping);
    rows.push(
      [
        `${what}: one sampling (${gwCounters} counters each)`,
        `govmomi, one QueryPerf decoded: ${ms(timed.govmomi.median)}, CPU ${ms(cpuMs.govmomi)}`,
        `VsphereMetrics.sample(): ${ms(timed.source.median)}, CPU ${ms(cpuMs.source)}`,
        ratios(timed.source.median, timed.govmomi.median, cpuMs.source, cpuMs.govmomi),
        `govmomi peak ${mib(goPeak)}; bench process ${mib(rssAfter)} (${rssAfter >= rssBefore ? '+' : ''}${mib(rssAfter - rssBefore)} with the provider)`,
      ],
      [
        `${what}: through PlatformSampler`,
        'same',
        `${ms(timed.sampler.median)}, CPU ${ms(cpuMs.sampler)} (bookkeeping ${ms(bk)})`,
        ratios(timed.sampler.median, timed.govmomi.median, cpuMs.sampler, cpuMs.govmomi),
        '',
      ],
      [
        `${what}: SOAP calls per sampling`,
        'QueryPerf 1',
        `${callsText(warmCalls)}; a session's first: ${callsText(coldCalls)}, ${ms(coldMs)}`,
        '',
        '',
      ],
      [
        `${what}: QueryPerf bytes, request / response`,
        `${bytes(goBytes.requestBytes)} / ${bytes(goBytes.responseBytes)}`,
        `${bytes(gwBytes.requestBytes)} / ${bytes(gwBytes.responseBytes)}` +
          (coldRetrieve
            ? `; CPU counts and counter list, first only: ${bytes(coldRetrieve.responseBytes)} received`
            : ''),
        `x${(gwBytes.requestBytes / goBytes.requestBytes).toFixed(2)} / x${(gwBytes.responseBytes / goBytes.responseBytes).toFixed(2)}`,
        '',
      ],
    );
    console.log(
      `${what}: govmomi ${timed.govmomi.samples.map(ms).join(', ')}; source ${timed.source.samples.map(ms).join(', ')}; ` +
        `sampler ${timed.sampler.samples.map(ms).join(', ')}; RSS ${mib(memoryOf(process.pid).rssMiB)}`,
    );
  } finally {
    await go?.close();
    await proxy?.close();
    for (const p of providers) await p.stop();
    await sim.stop();
  }
}

// --- 2: libvirt -------------------------------------------------------------------

async function libvirt(n: number, rows: Row[]): Promise<void> {
  // Every domain running: the fixture's estate cycles through states, so its run states are rewritten.
  const estate = writeEstate({ vms: n });
  writeFileSync(
    estate.path,
    readFileSync(estate.path, 'utf8').replace(
      /<test:runstate>\d+<\/test:runstate>/g,
      '<test:runstate>1</test:runstate>',
    ),
  );
  const rssBefore = await settledRss(process.pid, 3, 200);
  const config = validateConfig({ platforms: [{ id: 'lv', kind: 'libvirt', uri: estate.uri }] });
  const provider = new LibvirtProvider(config.platforms[0] as LibvirtPlatformConfig, silent);
  const conn = await nativeAddon().open(estate.uri);
  try {
    await provider.start();
    const [host] = await provider.listHosts();
    if (!host) throw new Error('no host');
    const uuids = estate.vms.map((v) => v.uuid);
    const targets: MetricTargets = { vms: uuids, hosts: [host.nativeId] };
    const expected = n + 1;
    const counts = () =>
      provider.withClient(async (c) => ({ addon: c.addonCalls().byMethod, libvirt: c.libvirtCalls() }));

    // The first sampling: no previous reading of the host, so a window; each domain asked for memory reports.
    let before = await counts();
    const t = performance.now();
    const cold = await provider.metrics.sample(targets, INTERVAL_SECONDS);
    const coldMs = performance.now() - t;
    const coldCalls = diff(before.addon, (await counts()).addon);
    if (sampleCount(cold) !== expected) throw new Error(`sampled ${sampleCount(cold)} of ${expected}`);
    await sleep(LIBVIRT_GAP_MS);
    before = await counts();
    await provider.metrics.sample(targets, INTERVAL_SECONDS);
    const after = await counts();
    const warmCalls = diff(before.addon, after.addon);
    const warmLibvirt = after.libvirt - before.libvirt;

    const windows = provider.metrics.activity.windows;
    const bookkeeping: number[] = [];
    const gapped =
      (cpuInto: number[], fn: () => Promise<unknown>): (() => Promise<number>) =>
      async () => {
        await sleep(LIBVIRT_GAP_MS);
        const t0 = performance.now();
        const r = await withCpu(cpuInto, fn);
        return typeof r === 'number' ? r : performance.now() - t0;
      };
    const cpu = { addon: [] as number[], source: [] as number[], sampler: [] as number[] };
    const timed = await timeAlternating(
      {
        addon: gapped(cpu.addon, async () => {
          const [stats, node] = await Promise.all([
            conn.getDomainStats(uuids, LIBVIRT_DOMAIN_STATS, LIBVIRT_STATS_FLAGS),
            conn.getNodeStats(),
          ]);
          if (stats.domains.length !== n || node.cpu instanceof Error) throw new Error('addon: short answer');
        }),
        source: gapped(cpu.source, async () => {
          const r = await provider.metrics.sample(targets, INTERVAL_SECONDS);
          if (sampleCount(r) !== expected) throw new Error(`sampled ${sampleCount(r)} of ${expected}`);
        }),
        sampler: gapped(cpu.sampler, async () => {
          const r = await throughSampler(provider.metrics, targets, INTERVAL_SECONDS);
          if (r.samples !== expected) throw new Error(`the sampler delivered ${r.samples} of ${expected}`);
          bookkeeping.push(r.bookkeepingMs);
          return r.totalMs;
        }),
      },
      RUNS,
    );
    const cpuMs = {
      addon: measuredMedian(cpu.addon),
      source: measuredMedian(cpu.source),
      sampler: measuredMedian(cpu.sampler),
    };
    const windowed = provider.metrics.activity.windows - windows;
    if (windowed > 0) throw new Error(`${windowed} samplings waited for a window: the gap is too short`);
    const rssAfter = await settledRss(process.pid, 3, 200);

    const what = `libvirt test driver, ${n} running domains + host`;
    rows.push(
      [
        `${what}: one sampling`,
        `addon, getDomainStats + getNodeStats: ${ms(timed.addon.median)}, CPU ${ms(cpuMs.addon)}`,
        `LibvirtMetricsSource.sample(): ${ms(timed.source.median)}, CPU ${ms(cpuMs.source)}`,
        ratios(timed.source.median, timed.addon.median, cpuMs.source, cpuMs.addon),
        `bench process ${mib(rssAfter)} (${rssAfter >= rssBefore ? '+' : ''}${mib(rssAfter - rssBefore)} with two test-driver connections)`,
      ],
      [
        `${what}: through PlatformSampler`,
        'same',
        `${ms(timed.sampler.median)}, CPU ${ms(cpuMs.sampler)} (bookkeeping ${ms(measuredMedian(bookkeeping))})`,
        ratios(timed.sampler.median, timed.addon.median, cpuMs.sampler, cpuMs.addon),
        '',
      ],
      [
        `${what}: calls per sampling`,
        'addon: getDomainStats 1, getNodeStats 1',
        `addon: ${callsText(warmCalls)} (libvirt: ${warmLibvirt}); the first: ${callsText(coldCalls)}, ${ms(coldMs)} (a 1 s window for the host's rates)`,
        '',
        '',
      ],
    );
    console.log(
      `${what}: addon ${timed.addon.samples.map(ms).join(', ')}; source ${timed.source.samples.map(ms).join(', ')}; ` +
        `sampler ${timed.sampler.samples.map(ms).join(', ')}`,
    );
  } finally {
    await provider.stop();
    await conn.close();
  }
}

const rows: Row[] = [];
if (PARTS.has('vsphere')) {
  buildGovmomiPerf();
  for (const n of SIZES) await vsphere(n, rows);
}
if (PARTS.has('libvirt')) {
  for (const n of SIZES) await libvirt(n, rows);
}
printTable('Metrics: one sampling (one interval) of every VM and host', HEADERS, rows);
console.log(
  "\nlibvirt's test driver reports state only (no CPU, block or network counters): the libvirt rows measure the " +
    'calls and the bookkeeping; numbers from real guests are checked by test/libvirt-metrics.test.ts.',
);

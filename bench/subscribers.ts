// 1,000 graphql-ws subscribers to vmChanged while VMs change 200 times a
// second for 30 s (issue 7), against a bare `ws` server broadcasting the same
// payloads to as many sockets: delivery latency from publication (the
// event's `at`) to the client, p50 and p99, and the gateway's resident memory
// per 1,000 idle subscriptions.
//
// The changes are real: a libvirtd (libvirt's test driver, shared by every
// connection to test:///default) serves the gateway's platform, and this
// process suspends and resumes its domains through a connection of its own,
// as virsh would; the gateway learns of them from libvirt's events. The
// gateway runs as its own process; the subscribers run in SUBS_PROCS child
// processes, so neither the driver nor the clients share its event loop.
//
// SUBS_CLIENTS (1000), SUBS_RATE (200 changes/s), SUBS_SECONDS (30),
// SUBS_PROCS (2), SUBS_VMS (1000 domains, each changed every VMS/RATE s).
import { type ChildProcess, fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { LibvirtClient } from '../src/datasources/libvirt/client.js';
import { libvirtd } from '../test/helpers/libvirtd.js';
import type { BroadcastCommand } from './subscribers-broadcast.js';
import { BUCKETS, type ClientCommand, type ClientReport, bucketLimit } from './subscribers-client.js';
import { type GatewayProcess, machine, mib, ms, printTable, settledRss, sleep, spawnGateway } from './support.js';

const CLIENTS = Number(process.env['SUBS_CLIENTS'] ?? 1000);
const RATE = Number(process.env['SUBS_RATE'] ?? 200);
const SECONDS = Number(process.env['SUBS_SECONDS'] ?? 30);
const PROCS = Number(process.env['SUBS_PROCS'] ?? 2);
const VMS = Number(process.env['SUBS_VMS'] ?? 1000);

const SUBSCRIPTION = `subscription {
  vmChanged { cursor at type changes previousPowerState powerState vm { id name powerState } }
}`;

// --- child processes --------------------------------------------------------

class Child<C> {
  private readonly waiting: ((v: unknown) => void)[] = [];
  readonly ready: Promise<unknown>;

  constructor(readonly proc: ChildProcess) {
    this.ready = new Promise((resolve) => this.waiting.push(resolve));
    proc.on('message', (m) => this.waiting.shift()?.(m));
  }

  static start<C>(file: string): Child<C> {
    const path = fileURLToPath(new URL(file, import.meta.url));
    return new Child<C>(
      fork(path, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
    );
  }

  request<R>(command: C): Promise<R> {
    return new Promise<R>((resolve) => {
      this.waiting.push(resolve as (v: unknown) => void);
      this.proc.send(command as object);
    });
  }
}

type Clients = Child<ClientCommand>[];

async function startClients(url: string): Promise<Clients> {
  const children = Array.from({ length: PROCS }, () => Child.start<ClientCommand>('./subscribers-client.ts'));
  await Promise.all(children.map((c) => c.ready));
  const results = await Promise.all(
    children.map((c, i) =>
      c.request<{ ok: boolean; error?: string }>({
        cmd: 'connect',
        url,
        count: Math.floor(CLIENTS / PROCS) + (i < CLIENTS % PROCS ? 1 : 0),
        query: SUBSCRIPTION,
      }),
    ),
  );
  const failed = results.find((r) => !r.ok);
  if (failed) throw new Error(`subscribers could not connect: ${failed.error}`);
  return children;
}

const reports = (clients: Clients) => Promise.all(clients.map((c) => c.request<ClientReport>({ cmd: 'report' })));

async function closeClients(clients: Clients): Promise<void> {
  await Promise.all(clients.map((c) => c.request({ cmd: 'close' })));
}

/** Waits until every socket has received at least one event since the last reset (its subscription is live). */
async function untilAllReceived(clients: Clients, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const rs = await reports(clients);
    if (rs.every((r) => r.minPerSocket > 0)) return;
    if (Date.now() > until) {
      throw new Error(
        `not every subscriber received an event: ${JSON.stringify(rs.map((r) => [r.acked, r.minPerSocket, r.closes, r.errors]))}`,
      );
    }
    await sleep(200);
  }
}

/**
 * Waits until every expected event arrived, or none arrived for `quietMs`
 * (longer than the gateway's longest event-loop stalls), or `timeoutMs` passed.
 */
async function drain(
  clients: Clients,
  expected: number,
  timeoutMs: number,
  onProgress: () => void,
  quietMs = 30_000,
): Promise<ClientReport[]> {
  const until = Date.now() + timeoutMs;
  let last = -1;
  let stableSince = Date.now();
  for (;;) {
    const rs = await reports(clients);
    const total = rs.reduce((a, r) => a + r.received, 0);
    if (total !== last) {
      last = total;
      stableSince = Date.now();
      onProgress();
    }
    if (total >= expected) return rs;
    if (Date.now() - stableSince > quietMs || Date.now() > until) return rs;
    await sleep(250);
  }
}

// --- numbers -------------------------------------------------------------------

interface Latency {
  delivered: number;
  /** Events the server published in the window, from the cursors' sequence numbers (null without cursors). */
  published: number | null;
  p50: number;
  p99: number;
  max: number;
  minPerSocket: number;
  maxPerSocket: number;
  closes: Record<string, number>;
  errors: string[];
}

function latencyOf(rs: ClientReport[]): Latency {
  const hist = new Float64Array(BUCKETS);
  let over = 0;
  for (const r of rs) {
    r.histogram.forEach((n, i) => (hist[i] = (hist[i] as number) + n));
    over += r.over;
  }
  const total = hist.reduce((a, b) => a + b, 0) + over;
  const at = (p: number) => {
    const rank = Math.ceil(p * total);
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += hist[i] as number;
      if (seen >= rank) return bucketLimit(i);
    }
    return Infinity;
  };
  const closes: Record<string, number> = {};
  for (const r of rs) for (const [code, n] of Object.entries(r.closes)) closes[code] = (closes[code] ?? 0) + n;
  const ranges = rs.flatMap((r) => (r.sequences ? [r.sequences] : []));
  const published =
    ranges.length > 0 ? Math.max(...ranges.map((r) => r[1])) - Math.min(...ranges.map((r) => r[0])) + 1 : null;
  return {
    delivered: total,
    published,
    p50: at(0.5),
    p99: at(0.99),
    max: Math.max(...rs.map((r) => r.maxMs)),
    minPerSocket: Math.min(...rs.map((r) => r.minPerSocket)),
    maxPerSocket: Math.max(...rs.map((r) => r.maxPerSocket)),
    closes,
    errors: rs.flatMap((r) => r.errors).slice(0, 5),
  };
}

/** CPU seconds (user + system) a process has used, from /proc. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const fmtLatency = (v: number) => (Number.isFinite(v) ? ms(v) : `> ${bucketLimit(BUCKETS - 1) / 1000} s`);

// --- the changes ---------------------------------------------------------------

/** Suspends or resumes domains round-robin, `rate` a second for `seconds`: the number made, and the rate reached. */
async function drive(
  client: LibvirtClient,
  uuids: readonly string[],
  running: Map<string, boolean>,
  rate: number,
  seconds: number,
): Promise<{ changes: number; failed: number; rate: number }> {
  const total = Math.round(rate * seconds);
  const calls: Promise<unknown>[] = [];
  let failed = 0;
  let k = 0;
  const start = performance.now();
  while (k < total) {
    const wait = start + (k * 1000) / rate - performance.now();
    if (wait > 0) await sleep(wait);
    while (k < total && start + (k * 1000) / rate <= performance.now()) {
      const uuid = uuids[k % uuids.length] as string;
      const on = running.get(uuid) ?? true;
      running.set(uuid, !on);
      calls.push(client.call('domainLifecycle', uuid, on ? 'suspend' : 'resume').catch(() => (failed += 1)));
      k += 1;
    }
  }
  await Promise.all(calls);
  const elapsed = (performance.now() - start) / 1000;
  return { changes: total - failed, failed, rate: (total - failed) / elapsed };
}

// --- the run -----------------------------------------------------------------------

console.log(
  `subscribers benchmark on ${machine()}: ${CLIENTS} subscribers in ${PROCS} processes, ${RATE} changes/s for ${SECONDS} s`,
);

const daemon = libvirtd();
await daemon.start();
let gw: GatewayProcess | null = null;
let clients: Clients = [];
try {
  // The estate: VMS running domains in libvirtd's shared test:///default.
  const admin = await LibvirtClient.open(daemon.uri);
  const uuids: string[] = [];
  for (let start = 0; start < VMS; start += 50) {
    uuids.push(
      ...(await Promise.all(
        Array.from({ length: Math.min(50, VMS - start) }, async (_, j) => {
          const name = `sub-${String(start + j).padStart(5, '0')}`;
          const ref = await admin.call(
            'defineXml',
            `<domain type='test'><name>${name}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>`,
          );
          await admin.call('domainLifecycle', ref.uuid, 'create');
          return ref.uuid;
        }),
      )),
    );
  }
  const running = new Map(uuids.map((u) => [u, true]));

  gw = await spawnGateway({
    inventory: { resyncIntervalSeconds: 3600 },
    platforms: [{ id: 'lv', kind: 'libvirt', uri: daemon.uri }],
  });
  await gw.waitSynced(120_000);
  const rssNone = await settledRss(gw.pid, 7);

  clients = await startClients(gw.url.replace(/^http/, 'ws'));
  // A few changes first: every subscription is live once each socket has seen one.
  await drive(admin, uuids, running, 20, 1);
  await untilAllReceived(clients, 60_000);
  await sleep(3_000);
  const rssIdle = await settledRss(gw.pid, 7);
  const sample = (await reports(clients)).find((r) => r.sample)?.sample ?? null;
  if (!sample) throw new Error('no event payload to broadcast in the baseline');

  await Promise.all(clients.map((c) => c.request({ cmd: 'reset' })));
  const cpu0 = cpuSeconds(gw.pid);
  const mark = gw.probeMark();
  let rssPeak = 0;
  const sampler = setInterval(() => {
    rssPeak = Math.max(
      rssPeak,
      Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${gw!.pid}/status`, 'utf8'))?.[1]) / 1024,
    );
  }, 500);
  const t0 = performance.now();
  const driven = await drive(admin, uuids, running, RATE, SECONDS);
  // CPU and event loop from the first change to the last delivery (not the quiet wait after it).
  let cpu = 0;
  let loop = { maxStallMs: 0, utilization: 0 };
  const gatewayPid = gw.pid;
  const gatewayRun = latencyOf(
    await drain(clients, driven.changes * CLIENTS, 300_000, () => {
      cpu = (cpuSeconds(gatewayPid) - cpu0) / ((performance.now() - t0) / 1000);
      loop = gw!.eventLoop(mark);
    }),
  );
  clearInterval(sampler);
  // A stall is reported when it ends, possibly after the last delivery it held up.
  loop = { utilization: loop.utilization, maxStallMs: Math.max(loop.maxStallMs, gw.eventLoop(mark).maxStallMs) };
  await closeClients(clients);
  clients = [];
  await admin.close();
  await gw.stop();
  gw = null;

  // The baseline: a bare ws server, the same payload, the same sockets and rate.
  const server = Child.start<BroadcastCommand>('./subscribers-broadcast.ts');
  await server.ready;
  const { port } = await server.request<{ port: number }>({ cmd: 'listen' });
  const serverRssNone = await settledRss(server.proc.pid as number, 3);
  clients = await startClients(`ws://127.0.0.1:${port}/graphql`);
  await server.request({ cmd: 'broadcast', template: sample, rate: 20, seconds: 1 });
  await untilAllReceived(clients, 60_000);
  await sleep(1_000);
  const serverRssIdle = await settledRss(server.proc.pid as number, 3);
  await Promise.all(clients.map((c) => c.request({ cmd: 'reset' })));
  const b0 = cpuSeconds(server.proc.pid as number);
  const tb = performance.now();
  const sent = await server.request<{ sent: number; elapsedMs: number }>({
    cmd: 'broadcast',
    template: sample,
    rate: RATE,
    seconds: SECONDS,
  });
  let baselineCpu = 0;
  const baseline = latencyOf(
    await drain(clients, sent.sent * CLIENTS, 300_000, () => {
      baselineCpu = (cpuSeconds(server.proc.pid as number) - b0) / ((performance.now() - tb) / 1000);
    }),
  );
  await closeClients(clients);
  clients = [];
  await server.request({ cmd: 'close' });

  printTable(
    `${CLIENTS} graphql-ws subscribers to vmChanged, ${RATE} changes/s for ${SECONDS} s (libvirt test driver behind libvirtd; changes made through libvirt, not the gateway)`,
    ['what', 'baseline: bare ws broadcast', 'measured: gateway', 'ratio', 'goal'],
    [
      [
        'delivery latency p50 (publish to client)',
        fmtLatency(baseline.p50),
        fmtLatency(gatewayRun.p50),
        `x${(gatewayRun.p50 / baseline.p50).toFixed(2)}`,
        '',
      ],
      [
        'delivery latency p99',
        fmtLatency(baseline.p99),
        fmtLatency(gatewayRun.p99),
        `x${(gatewayRun.p99 / baseline.p99).toFixed(2)}`,
        `ratio ≤ 2: ${gatewayRun.p99 / baseline.p99 <= 2 ? 'met' : '**missed**'}; p99 ≤ 50 ms: ${gatewayRun.p99 <= 50 ? 'met' : '**missed**'}`,
      ],
      ['latency max', fmtLatency(baseline.max), fmtLatency(gatewayRun.max), '', ''],
      [
        'events sent / delivered',
        `${sent.sent} x ${CLIENTS}; ${baseline.delivered} delivered (per socket ${baseline.minPerSocket} to ${baseline.maxPerSocket})`,
        `${driven.changes} changes (${driven.rate.toFixed(0)}/s reached); ${gatewayRun.published ?? '?'} events published ` +
          `(by their cursors) x ${CLIENTS}; ${gatewayRun.delivered} delivered (per socket ${gatewayRun.minPerSocket} to ${gatewayRun.maxPerSocket})`,
        '',
        '',
      ],
      ['sockets closed by the server', JSON.stringify(baseline.closes), JSON.stringify(gatewayRun.closes), '', ''],
      ['server CPU, first event to last delivery (cores)', baselineCpu.toFixed(2), cpu.toFixed(2), '', ''],
      [
        "gateway's event loop, first event to last delivery",
        '',
        `longest stall ${ms(loop.maxStallMs)}; utilization ${(loop.utilization * 100).toFixed(0)}%`,
        '',
        '',
      ],
      [
        `RSS: ${CLIENTS} idle subscriptions minus none`,
        `${mib(serverRssIdle - serverRssNone)} (${mib(serverRssNone)} to ${mib(serverRssIdle)})`,
        `${mib(rssIdle - rssNone)} (${mib(rssNone)} to ${mib(rssIdle)})`,
        `x${((rssIdle - rssNone) / Math.max(0.1, serverRssIdle - serverRssNone)).toFixed(1)}`,
        `≤ 10 MB per 1,000: ${(rssIdle - rssNone) * (1000 / CLIENTS) <= 10 ? 'met' : '**missed**'}`,
      ],
      ['gateway RSS peak during the run', '', mib(rssPeak), '', ''],
    ],
  );
  if (gatewayRun.errors.length > 0) console.log(`subscriber errors: ${gatewayRun.errors.join(' | ')}`);
} finally {
  if (clients.length > 0) await closeClients(clients).catch(() => undefined);
  await gw?.stop();
  await daemon.stop();
}

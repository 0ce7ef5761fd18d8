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
// SUBS_MODE picks the gateways measured: `memory` (one gateway, its event
// log in memory), `redis` (two gateway processes sharing a redis-server: one
// holds the platform's lease and writes its events to a Redis Stream, both
// read the stream and deliver to their own sockets; half the subscribers
// connect to each) or `both` (memory then redis in one run, for their ratio).
// In redis mode an event's `at` is its stream entry's time (the entry ID's
// milliseconds, Redis's clock on this machine), so latency is read alike.
//
// SUBS_MODE (memory), SUBS_CLIENTS (1000), SUBS_RATE (200 changes/s),
// SUBS_SECONDS (30), SUBS_PROCS (2, rounded up to a multiple of the
// gateways), SUBS_VMS (1000 domains, each changed every VMS/RATE s).
import { type ChildProcess, fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';

import { Redis } from 'ioredis';

import { LibvirtClient } from '../src/datasources/libvirt/client.js';
import type { StreamEntry } from '../src/inventory/replication/platform-stream.js';
import { decodeTagged } from '../src/state/tagged-json.js';
import { libvirtd } from '../test/helpers/libvirtd.js';
import { type RedisServer, redisServer } from '../test/helpers/redis-server.js';
import type { BroadcastCommand } from './subscribers-broadcast.js';
import { BUCKETS, type ClientCommand, type ClientReport, bucketLimit } from './subscribers-client.js';
import {
  BENCH_AUTH,
  type GatewayProcess,
  compiledScript,
  cpuMsOf,
  machine,
  memoryOf,
  mib,
  ms,
  printTable,
  ratio,
  settledRss,
  sleep,
  spawnGateway,
} from './support.js';

type Mode = 'memory' | 'redis';

const MODES: Mode[] = (() => {
  const mode = process.env['SUBS_MODE'] ?? 'memory';
  if (mode === 'both') return ['memory', 'redis'];
  if (mode === 'memory' || mode === 'redis') return [mode];
  throw new Error(`SUBS_MODE must be memory, redis or both, not ${mode}`);
})();
const CLIENTS = Number(process.env['SUBS_CLIENTS'] ?? 1000);
const RATE = Number(process.env['SUBS_RATE'] ?? 200);
const SECONDS = Number(process.env['SUBS_SECONDS'] ?? 30);
const PROCS = Number(process.env['SUBS_PROCS'] ?? 2);
const VMS = Number(process.env['SUBS_VMS'] ?? 1000);

const PLATFORM = 'lv';
/** The gateways of each mode. */
const INSTANCES: Record<Mode, number> = { memory: 1, redis: 2 };
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
    const path = compiledScript(fileURLToPath(new URL(file, import.meta.url)));
    return new Child<C>(fork(path, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  }

  request<R>(command: C): Promise<R> {
    return new Promise<R>((resolve) => {
      this.waiting.push(resolve as (v: unknown) => void);
      this.proc.send(command as object);
    });
  }
}

type Clients = Child<ClientCommand>[];

/**
 * CLIENTS sockets spread evenly over the servers: child process i connects
 * all of its sockets to urls[i % urls.length] (a child holds one server's
 * sockets), so there are as many children for each server.
 */
async function startClients(urls: readonly string[]): Promise<Clients> {
  const procs = Math.ceil(PROCS / urls.length) * urls.length;
  const children = Array.from({ length: procs }, () => Child.start<ClientCommand>('./subscribers-client.ts'));
  await Promise.all(children.map((c) => c.ready));
  const results = await Promise.all(
    children.map((c, i) =>
      c.request<{ ok: boolean; error?: string }>({
        cmd: 'connect',
        url: urls[i % urls.length] as string,
        count: Math.floor(CLIENTS / procs) + (i < CLIENTS % procs ? 1 : 0),
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
  /**
   * Events the server published in the window, from the cursors' sequence
   * numbers (null without cursors). Stream cursors (redis mode) carry no
   * sequence: there the stream itself is counted (eventsInStream).
   */
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

/** Jiffies the whole machine spent busy (not idle or waiting on I/O), and in all, over every core: /proc/stat. */
function machineTicks(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - (fields[3] ?? 0) - (fields[4] ?? 0), total };
}

/** Cores the given processes use from now on, read when asked. */
function coresMeter(pids: readonly number[]): () => number {
  const t0 = performance.now();
  const used = () => pids.reduce((a, pid) => a + cpuMsOf(pid) / 1000, 0);
  const used0 = used();
  return () => (used() - used0) / ((performance.now() - t0) / 1000);
}

/** Cores the whole machine uses from now on (every process and the kernel's network path), read when asked. */
function machineMeter(): () => number {
  const t0 = machineTicks();
  return () => {
    const t = machineTicks();
    return ((t.busy - t0.busy) / Math.max(1, t.total - t0.total)) * cpus().length;
  };
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

// --- the gateways --------------------------------------------------------------

interface Estate {
  uri: string;
  /** This process's own connection to libvirtd, which makes the changes. */
  admin: LibvirtClient;
  uuids: string[];
  /** Whether each domain runs now: changes alternate suspend and resume. */
  running: Map<string, boolean>;
}

/** VMS running domains in libvirtd's shared test:///default. */
async function createEstate(uri: string): Promise<Estate> {
  const admin = await LibvirtClient.open(uri);
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
  return { uri, admin, uuids, running: new Map(uuids.map((u) => [u, true])) };
}

type EventLoop = { maxStallMs: number; utilization: number };

/** One gateway process of a run and what was measured of it. */
interface InstanceRun {
  /** Its part in the platform's lease (HOLDER or FOLLOWER) in redis mode; null alone. */
  role: string | null;
  rssNone: number;
  rssIdle: number;
  rssPeak: number;
  /** Cores used from the first change to the last delivery. */
  cpu: number;
  loop: EventLoop;
  /** Its own subscribers' latency. */
  latency: Latency;
}

interface ModeRun {
  mode: Mode;
  driven: { changes: number; failed: number; rate: number };
  latency: Latency;
  /** Events published in the window (see Latency.published). */
  published: number | null;
  instances: InstanceRun[];
  /** Whether one lease (same holder, same fence) lasted the whole run; null without Redis. */
  holderKept: boolean | null;
  /** A payload as the gateway sent it, for the baseline to broadcast. */
  sample: string;
  /** Cores used by the client processes, and by the whole machine, from the first change to the last delivery. */
  clientCpu: number;
  machineCpu: number;
}

interface Watch {
  role: string;
  holder: string | null;
}

/**
 * Waits until every gateway has the platform SYNCED and exactly one holds its
 * lease, the others following it: each gateway's role, and the lease.
 */
async function settledLease(
  gateways: readonly GatewayProcess[],
  timeoutMs = 60_000,
): Promise<{ roles: string[]; holder: string }> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const watches = await Promise.all(
      gateways.map(async (g) => {
        const body = await g
          .post<{ platforms: { name: string; inventoryState: string; watch: Watch | null }[] }>(
            '{ platforms { name inventoryState watch { role holder } } }',
          )
          .catch(() => null);
        const platform = body?.data?.platforms.find((p) => p.name === PLATFORM);
        return platform?.inventoryState === 'SYNCED' ? platform.watch : null;
      }),
    );
    const roles = watches.map((w) => w?.role ?? 'unknown');
    const holder = watches[0]?.holder ?? null;
    if (
      holder !== null &&
      roles.filter((r) => r === 'HOLDER').length === 1 &&
      roles.every((r) => r === 'HOLDER' || r === 'FOLLOWER') &&
      watches.every((w) => w?.holder === holder)
    ) {
      return { roles, holder };
    }
    if (Date.now() > until) throw new Error(`the lease of ${PLATFORM} did not settle: ${JSON.stringify(watches)}`);
    await sleep(250);
  }
}

/** The events written to the platform's stream since a time: entry IDs start with their epoch milliseconds. */
async function eventsInStream(url: string, sinceEpochMs: number): Promise<number> {
  const redis = new Redis(url);
  try {
    // The gateways run with the default keyPrefix, `virt-graph:`.
    const entries = await redis.xrange(`virt-graph:{${PLATFORM}}:events`, String(sinceEpochMs), '+');
    let events = 0;
    for (const [, fields] of entries) {
      const text = fields[fields.indexOf('e') + 1];
      if (text !== undefined) events += decodeTagged<StreamEntry>(text).events.length;
    }
    return events;
  } finally {
    redis.disconnect();
  }
}

/**
 * Starts the mode's gateways (with a redis-server of their own in redis
 * mode), subscribes CLIENTS sockets spread over them, makes RATE changes a
 * second for SECONDS and measures until the last delivery.
 */
async function measureGateways(mode: Mode, estate: Estate): Promise<ModeRun> {
  const redis: RedisServer | null = mode === 'redis' ? await redisServer() : null;
  const gateways: GatewayProcess[] = [];
  let clients: Clients = [];
  try {
    const config = {
      inventory: { resyncIntervalSeconds: 3600 },
      auth: BENCH_AUTH,
      platforms: [{ id: PLATFORM, kind: 'libvirt', uri: estate.uri }],
      ...(redis ? { redis: { url: redis.url } } : {}),
    };
    // One after the other, so that the first takes the lease and the next starts as a follower.
    for (let i = 0; i < INSTANCES[mode]; i++) {
      const gw = await spawnGateway(config);
      gateways.push(gw);
      await gw.waitSynced(120_000);
    }
    const lease = redis ? await settledLease(gateways) : null;
    const rssNone = await Promise.all(gateways.map((g) => settledRss(g.pid, 7)));

    clients = await startClients(gateways.map((g) => g.url.replace(/^http/, 'ws')));
    // A few changes first: every subscription is live once each socket has seen one.
    await drive(estate.admin, estate.uuids, estate.running, 20, 1);
    await untilAllReceived(clients, 60_000);
    await sleep(3_000);
    const rssIdle = await Promise.all(gateways.map((g) => settledRss(g.pid, 7)));
    const sample = (await reports(clients)).find((r) => r.sample)?.sample;
    if (!sample) throw new Error('no event payload to broadcast in the baseline');

    await Promise.all(clients.map((c) => c.request({ cmd: 'reset' })));
    const gatewayMeters = gateways.map((g) => coresMeter([g.pid]));
    const clientMeter = coresMeter(clients.map((c) => c.proc.pid as number));
    const machine = machineMeter();
    const marks = gateways.map((g) => g.probeMark());
    const rssPeak = gateways.map(() => 0);
    const sampler = setInterval(() => {
      gateways.forEach((g, i) => (rssPeak[i] = Math.max(rssPeak[i] as number, memoryOf(g.pid).rssMiB)));
    }, 500);
    const t0Epoch = Date.now();
    const driven = await drive(estate.admin, estate.uuids, estate.running, RATE, SECONDS);
    // CPU and event loop from the first change to the last delivery (not the quiet wait after it).
    let cpu = gateways.map(() => 0);
    let clientCpu = 0;
    let machineCpu = 0;
    let loops: EventLoop[] = gateways.map(() => ({ maxStallMs: 0, utilization: 0 }));
    const rs = await drain(clients, driven.changes * CLIENTS, 300_000, () => {
      cpu = gatewayMeters.map((m) => m());
      clientCpu = clientMeter();
      machineCpu = machine();
      loops = gateways.map((g, i) => g.eventLoop(marks[i] as number));
    });
    clearInterval(sampler);
    // A stall is reported when it ends, possibly after the last delivery it held up.
    loops = loops.map((l, i) => ({
      utilization: l.utilization,
      maxStallMs: Math.max(l.maxStallMs, (gateways[i] as GatewayProcess).eventLoop(marks[i] as number).maxStallMs),
    }));
    const latency = latencyOf(rs);
    const leaseAfter = lease ? await settledLease(gateways, 15_000).catch(() => null) : null;
    return {
      mode,
      driven,
      latency,
      published: redis ? await eventsInStream(redis.url, t0Epoch) : latency.published,
      instances: gateways.map((_, i) => ({
        role: lease?.roles[i] ?? null,
        rssNone: rssNone[i] as number,
        rssIdle: rssIdle[i] as number,
        rssPeak: rssPeak[i] as number,
        cpu: cpu[i] as number,
        loop: loops[i] as EventLoop,
        // Client process j holds sockets of gateway j % gateways.length (startClients).
        latency: latencyOf(rs.filter((_r, j) => j % gateways.length === i)),
      })),
      holderKept: lease ? lease.holder === leaseAfter?.holder : null,
      sample,
      clientCpu,
      machineCpu,
    };
  } finally {
    if (clients.length > 0) await closeClients(clients).catch(() => undefined);
    for (const g of gateways) await g.stop();
    await redis?.stop();
  }
}

// --- the baseline --------------------------------------------------------------

interface BaselineRun {
  sent: number;
  latency: Latency;
  cpu: number;
  clientCpu: number;
  machineCpu: number;
  rssNone: number;
  rssIdle: number;
}

/**
 * A bare ws server broadcasting a gateway's payload to as many sockets at the
 * same rate; with `load`, while it runs (the same libvirt changes made as
 * during the gateway's run, so that libvirtd and this process take the same
 * share of the machine, though nobody listens to them).
 */
async function measureBaseline(sample: string, load?: () => Promise<unknown>): Promise<BaselineRun> {
  const server = Child.start<BroadcastCommand>('./subscribers-broadcast.ts');
  const pid = server.proc.pid as number;
  let clients: Clients = [];
  try {
    await server.ready;
    const { port } = await server.request<{ port: number }>({ cmd: 'listen' });
    const rssNone = await settledRss(pid, 3);
    clients = await startClients([`ws://127.0.0.1:${port}/graphql`]);
    await server.request({ cmd: 'broadcast', template: sample, rate: 20, seconds: 1 });
    await untilAllReceived(clients, 60_000);
    await sleep(1_000);
    const rssIdle = await settledRss(pid, 3);
    await Promise.all(clients.map((c) => c.request({ cmd: 'reset' })));
    const serverMeter = coresMeter([pid]);
    const clientMeter = coresMeter(clients.map((c) => c.proc.pid as number));
    const machine = machineMeter();
    const [{ sent }] = await Promise.all([
      server.request<{ sent: number }>({ cmd: 'broadcast', template: sample, rate: RATE, seconds: SECONDS }),
      load?.(),
    ]);
    let cpu = 0;
    let clientCpu = 0;
    let machineCpu = 0;
    const latency = latencyOf(
      await drain(clients, sent * CLIENTS, 300_000, () => {
        cpu = serverMeter();
        clientCpu = clientMeter();
        machineCpu = machine();
      }),
    );
    return { sent, latency, cpu, clientCpu, machineCpu, rssNone, rssIdle };
  } finally {
    if (clients.length > 0) await closeClients(clients).catch(() => undefined);
    server.proc.kill();
  }
}

// --- the tables ----------------------------------------------------------------

const TITLES: Record<Mode, string> = {
  memory: 'measured: gateway in memory (1 instance)',
  redis: 'measured: gateway through Redis (2 instances, half the sockets each)',
};

/** One figure per gateway of a run, each named by its role when there are several. */
const perInstance = (run: ModeRun, figure: (i: InstanceRun) => string) =>
  run.instances.map((i) => (run.instances.length > 1 ? `${i.role}: ${figure(i)}` : figure(i))).join('; ');

/** RSS grown by all the run's gateways for CLIENTS idle subscriptions. */
const idleGrowth = (run: ModeRun) => run.instances.reduce((a, i) => a + i.rssIdle - i.rssNone, 0);

const met = (ok: boolean) => (ok ? 'met' : '**missed**');

function printResults(baseline: BaselineRun, loaded: BaselineRun, runs: readonly ModeRun[]): void {
  const b = baseline.latency;
  const l = loaded.latency;
  const several = runs.some((r) => r.instances.length > 1);
  const rows: string[][] = [
    [
      'delivery latency p50 (publish to client; ratio to the baseline)',
      fmtLatency(b.p50),
      ...runs.map((r) => `${fmtLatency(r.latency.p50)} (${ratio(r.latency.p50, b.p50)})`),
      '',
    ],
    [
      'delivery latency p99',
      fmtLatency(b.p99),
      ...runs.map((r) => `${fmtLatency(r.latency.p99)} (${ratio(r.latency.p99, b.p99)})`),
      runs
        .map((r) => `${r.mode}: ratio ≤ 2 ${met(r.latency.p99 / b.p99 <= 2)}, p99 ≤ 50 ms ${met(r.latency.p99 <= 50)}`)
        .join('; '),
    ],
    ['latency max', fmtLatency(b.max), ...runs.map((r) => fmtLatency(r.latency.max)), ''],
    [
      'bare ws while the same libvirt changes are made (libvirtd and the driver as busy as in the run): p50 / p99; ratios',
      `${fmtLatency(l.p50)} / ${fmtLatency(l.p99)} (${l.delivered} delivered)`,
      ...runs.map((r) => `${ratio(r.latency.p50, l.p50)} / ${ratio(r.latency.p99, l.p99)}`),
      runs.map((r) => `${r.mode}: p99 ratio ≤ 2 ${met(r.latency.p99 / l.p99 <= 2)}`).join('; '),
    ],
    ...(several
      ? [
          [
            'latency p50 / p99 by gateway (its own sockets)',
            '',
            ...runs.map((r) => perInstance(r, (i) => `${fmtLatency(i.latency.p50)} / ${fmtLatency(i.latency.p99)}`)),
            '',
          ],
        ]
      : []),
    [
      'events sent / delivered',
      `${baseline.sent} x ${CLIENTS}; ${b.delivered} delivered (per socket ${b.minPerSocket} to ${b.maxPerSocket})`,
      ...runs.map(
        (r) =>
          `${r.driven.changes} changes (${r.driven.rate.toFixed(0)}/s reached); ${r.published ?? '?'} events published ` +
          // A socket closed early sees no later cursor: the memory figure is then a floor.
          `(${r.mode === 'redis' ? 'in the Redis stream' : 'by the cursors received'}) x ${CLIENTS}; ${r.latency.delivered} ` +
          `delivered (per socket ${r.latency.minPerSocket} to ${r.latency.maxPerSocket})`,
      ),
      '',
    ],
    [
      'sockets closed by the server',
      JSON.stringify(b.closes),
      ...runs.map((r) => JSON.stringify(r.latency.closes)),
      '',
    ],
    ...(several
      ? [
          [
            "the platform's lease",
            '',
            ...runs.map((r) =>
              r.holderKept === null ? '' : r.holderKept ? 'one holder throughout' : '**changed hands during the run**',
            ),
            '',
          ],
        ]
      : []),
    [
      'server CPU, first event to last delivery (cores)',
      baseline.cpu.toFixed(2),
      ...runs.map((r) => perInstance(r, (i) => i.cpu.toFixed(2))),
      '',
    ],
    [
      'client processes CPU, first event to last delivery (cores)',
      baseline.clientCpu.toFixed(2),
      ...runs.map((r) => r.clientCpu.toFixed(2)),
      '',
    ],
    [
      `the whole machine's CPU in use, every process and the kernel (cores of ${cpus().length})`,
      baseline.machineCpu.toFixed(2),
      ...runs.map((r) => r.machineCpu.toFixed(2)),
      '',
    ],
    [
      "gateway's event loop, first event to last delivery",
      '',
      ...runs.map((r) =>
        perInstance(
          r,
          (i) => `longest stall ${ms(i.loop.maxStallMs)}, utilization ${(i.loop.utilization * 100).toFixed(0)}%`,
        ),
      ),
      '',
    ],
    [
      `RSS: ${CLIENTS} idle subscriptions minus none (each gateway its share; ratio of the sum to the baseline)`,
      `${mib(baseline.rssIdle - baseline.rssNone)} (${mib(baseline.rssNone)} to ${mib(baseline.rssIdle)})`,
      ...runs.map(
        (r) =>
          `${perInstance(r, (i) => `${mib(i.rssIdle - i.rssNone)} (${mib(i.rssNone)} to ${mib(i.rssIdle)})`)} ` +
          `(x${(idleGrowth(r) / Math.max(0.1, baseline.rssIdle - baseline.rssNone)).toFixed(1)})`,
      ),
      `≤ 10 MB per 1,000: ${runs.map((r) => `${r.mode} ${met(idleGrowth(r) * (1000 / CLIENTS) <= 10)}`).join('; ')}`,
    ],
    ['gateway RSS peak during the run', '', ...runs.map((r) => perInstance(r, (i) => mib(i.rssPeak))), ''],
  ];
  printTable(
    `${CLIENTS} graphql-ws subscribers to vmChanged, ${RATE} changes/s for ${SECONDS} s (libvirt test driver behind libvirtd; changes made through libvirt, not the gateway)`,
    ['what', 'baseline: bare ws broadcast', ...runs.map((r) => TITLES[r.mode]), 'goal'],
    rows,
  );
  const memory = runs.find((r) => r.mode === 'memory');
  const redis = runs.find((r) => r.mode === 'redis');
  if (memory && redis) {
    printTable(
      `Through Redis (2 instances) against in memory (1 instance), same run: ${CLIENTS} subscribers, ${RATE} changes/s`,
      ['what', 'in memory', 'through Redis', 'redis / memory'],
      (['p50', 'p99'] as const).map((p) => [
        `delivery latency ${p}`,
        fmtLatency(memory.latency[p]),
        fmtLatency(redis.latency[p]),
        ratio(redis.latency[p], memory.latency[p]),
      ]),
    );
  }
  for (const r of runs) {
    if (r.latency.errors.length > 0) console.log(`subscriber errors (${r.mode}): ${r.latency.errors.join(' | ')}`);
  }
}

// --- the run -----------------------------------------------------------------------

console.log(
  `subscribers benchmark on ${machine()}: ${CLIENTS} subscribers, ${RATE} changes/s for ${SECONDS} s, ` +
    `modes: ${MODES.join(' then ')}`,
);

const daemon = libvirtd();
await daemon.start();
let estate: Estate | null = null;
try {
  estate = await createEstate(daemon.uri);
  const runs: ModeRun[] = [];
  for (const mode of MODES) runs.push(await measureGateways(mode, estate));
  const sample = (runs[0] as ModeRun).sample;
  const baseline = await measureBaseline(sample);
  const { admin, uuids, running } = estate;
  const loaded = await measureBaseline(sample, () => drive(admin, uuids, running, RATE, SECONDS));
  printResults(baseline, loaded, runs);
} finally {
  await estate?.admin.close();
  await daemon.stop();
}

// Shared pieces of the live-inventory benchmarks: the gateway as a process
// of its own (so its resident memory is its own), a vCenter simulator large
// enough to take minutes to start, a plain-HTTP proxy that counts SOAP calls
// by method, percentiles and a table printer.
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, totalmem, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

import ts from 'typescript';

import { Agent, request } from 'undici';

import { closedPort } from '../test/helpers/gateway.js';
import { VCSIM_BINARY } from '../test/helpers/vcsim.js';

/**
 * Benchmarks drive the gateway from one anonymous address far past a
 * user's budget: they measure the gateway's work, so its rate limit is off.
 */
export const BENCH_AUTH = { anonymous: { roles: ['admin'] }, rateLimit: { enabled: false } };

// --- resident memory ------------------------------------------------------

/** VmRSS and VmHWM (peak) of a process, in MiB, from /proc. */
export function memoryOf(pid: number): { rssMiB: number; peakMiB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMiB: kib('VmRSS') / 1024, peakMiB: kib('VmHWM') / 1024 };
}

/** User + system CPU time of a process so far, in ms (from /proc, in clock ticks of 10 ms). */
export function cpuMsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at field 3; utime and stime are 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** The median of a few RSS samples taken `everyMs` apart: one sample catches a collection half done. */
export async function settledRss(pid: number, samples = 5, everyMs = 400): Promise<number> {
  const values: number[] = [];
  for (let i = 0; i < samples; i++) {
    if (i > 0) await sleep(everyMs);
    values.push(memoryOf(pid).rssMiB);
  }
  return medianOf(values);
}

// --- numbers --------------------------------------------------------------

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function medianOf(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

/** The p-th percentile (0..100) of values, nearest rank. */
export function percentile(values: readonly number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  const rank = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[rank] as number;
}

/** Times `runs` calls of fn after `warmup` unmeasured ones; every sample in ms, and their median. */
export async function timeRuns(
  fn: () => Promise<unknown>,
  runs = 5,
  warmup = 1,
): Promise<{ median: number; samples: number[] }> {
  for (let i = 0; i < warmup; i++) await fn();
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await fn();
    samples.push(performance.now() - t);
  }
  return { median: medianOf(samples), samples };
}

/**
 * Times several functions in alternation (a, b, c, a, b, c, ...) after one
 * warm-up of each, so a machine that gets busier or quieter during the run
 * weighs on all alike; the median and samples of each, in ms. A function may
 * return its own duration (a number) in place of the wall time measured here.
 */
export async function timeAlternating<K extends string>(
  fns: Record<K, () => Promise<unknown>>,
  runs = 5,
): Promise<Record<K, { median: number; samples: number[] }>> {
  const keys = Object.keys(fns) as K[];
  for (const k of keys) await fns[k]();
  const samples = Object.fromEntries(keys.map((k) => [k, [] as number[]])) as Record<K, number[]>;
  for (let i = 0; i < runs; i++) {
    for (const k of keys) {
      const t = performance.now();
      const own = await fns[k]();
      samples[k].push(typeof own === 'number' ? own : performance.now() - t);
    }
  }
  return Object.fromEntries(keys.map((k) => [k, { median: medianOf(samples[k]), samples: samples[k] }])) as Record<
    K,
    { median: number; samples: number[] }
  >;
}

export const ms = (v: number) => (v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(1)} ms`);
export const mib = (v: number) => `${v.toFixed(0)} MiB`;
export const ratio = (measured: number, baseline: number) =>
  `x${(measured / baseline).toFixed(measured / baseline < 0.1 ? 3 : 2)}`;

/** Prints a Markdown table (it reads as a table in a terminal too). */
export function printTable(title: string, headers: string[], rows: string[][]): void {
  console.log(`\n${title}\n`);
  console.log(`| ${headers.join(' | ')} |`);
  console.log(`| ${headers.map(() => '---').join(' | ')} |`);
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
}

/** What the numbers were taken on: cores, memory, load, Node.js. */
export function machine(): string {
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  return (
    `${cpus().length} cores (${cpus()[0]?.model.trim() ?? 'unknown'}), ${(totalmem() / 1024 ** 3).toFixed(1)} GiB, ` +
    `Node.js ${process.version}, load average ${load}`
  );
}

// --- the gateway as a process ----------------------------------------------

export interface ProbeHeap {
  heapUsedMiB: number;
  heapTotalMiB: number;
  externalMiB: number;
}

interface ProbeLine extends ProbeHeap {
  at: number;
  utilization: number;
  maxDelayMs: number;
}

export interface GatewayProcess {
  url: string;
  pid: number;
  /** performance.now() when it was spawned, and Date.now() then. */
  spawnedAt: number;
  spawnedAtEpoch: number;
  post<T = unknown>(query: string, variables?: Record<string, unknown>): Promise<GraphQLBody<T>>;
  /**
   * Polls until every platform's inventoryState is SYNCED: the platforms'
   * syncedAt (epoch ms) then, the slowest poll's answer and how many polls
   * failed (a gateway whose event loop is held up answers late, or its
   * server drops the request).
   */
  waitSynced(timeoutMs: number): Promise<{ syncedAt: number; slowestPollMs: number; failedPolls: number }>;
  output(): string;
  /**
   * What bench/event-loop-probe.mjs reported since `mark` (a value of
   * probeMark()): the longest the event loop went without turning, and its
   * utilization over that time.
   */
  eventLoop(mark: number): { maxStallMs: number; utilization: number };
  probeMark(): number;
  /** The JavaScript heap as the probe last saw it (RSS is memoryOf's). */
  heap(): ProbeHeap | null;
  /** SIGTERM, then SIGKILL after 10 s. */
  stop(): Promise<void>;
}

export interface GraphQLBody<T> {
  data?: T;
  errors?: { message: string; extensions?: Record<string, unknown> }[];
  extensions?: Record<string, unknown>;
}

const agent = new Agent({ connections: 512, pipelining: 1, keepAliveTimeout: 30_000 });

/** POSTs one GraphQL request and parses the answer; the time includes reading and parsing the whole body. */
export async function postGraphQL<T>(
  url: string,
  query: string,
  variables?: Record<string, unknown>,
): Promise<GraphQLBody<T>> {
  const res = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
    dispatcher: agent,
    headersTimeout: 600_000,
    bodyTimeout: 600_000,
  });
  return (await res.body.json()) as GraphQLBody<T>;
}

/** Inputs of `npm run build`: dist/ is stale when any is newer than dist/main.js. */
const BUILD_INPUTS = ['src', 'schema', 'codegen.ts', 'package.json', 'tsconfig.json', 'tsconfig.build.json'];

function newestChange(path: string): number {
  const stat = statSync(path);
  if (!stat.isDirectory()) return stat.mtimeMs;
  let newest = stat.mtimeMs;
  for (const entry of readdirSync(path)) newest = Math.max(newest, newestChange(join(path, entry)));
  return newest;
}

/**
 * The gateway as users run it (scripts/run-gateway.sh, `npm start`):
 * compiled, built first when a source is newer than the last build. Run
 * through a TypeScript loader instead, every function would carry a name
 * property of its own (about 250 bytes per closure made) and the figures
 * would be a loader's, not the gateway's.
 */
export function builtGateway(): string {
  const entry = 'dist/main.js';
  const built = existsSync(entry) ? statSync(entry).mtimeMs : -1;
  if (BUILD_INPUTS.some((input) => newestChange(input) > built)) {
    process.stderr.write('compiling the gateway to dist/ (npm run build)\n');
    execFileSync('npm', ['run', '--silent', 'build'], { stdio: ['ignore', 'inherit', 'inherit'] });
  }
  return entry;
}

/**
 * A benchmark's own TypeScript file (a child process: a host, a client, a
 * baseline server) as plain JavaScript in .cache/bench/, its imports of the
 * gateway's sources pointed at their compiled modules (dist/, built first
 * when stale): every process of a run then runs as production would, none
 * under a TypeScript loader.
 */
export function compiledScript(file: string): string {
  const source = readFileSync(file, 'utf8');
  const { outputText } = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  });
  if (source.includes("from '../src/")) builtGateway();
  const dist = pathToFileURL(resolve('dist')).href;
  // What it imports from beside it (bench/closed-loop.ts) is compiled beside it.
  const siblings = /from '\.\/([\w-]+)\.js'/g;
  for (const [, name] of outputText.matchAll(siblings)) compiledScript(join(dirname(file), `${name}.ts`));
  const out = resolve('.cache/bench', basename(file).replace(/\.ts$/, '.mjs'));
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, outputText.replaceAll("from '../src/", `from '${dist}/`).replace(siblings, "from './$1.mjs'"));
  return out;
}

/**
 * Starts `node dist/main.js --config FILE` (JSON is YAML) on a free loopback
 * port, as an operator runs it, and waits for /readyz.
 */
export async function spawnGateway(config: Record<string, unknown>, readyTimeoutMs = 120_000): Promise<GatewayProcess> {
  const port = await closedPort();
  const dir = mkdtempSync(join(tmpdir(), 'virt-graph-bench-'));
  const file = join(dir, 'gateway.yaml');
  writeFileSync(
    file,
    JSON.stringify({
      server: { host: '127.0.0.1', port },
      logging: { level: process.env['BENCH_GATEWAY_LOG'] === '1' ? 'info' : 'warn' },
      state: { dir: join(dir, 'state') },
      ...config,
    }),
  );
  const spawnedAt = performance.now();
  const spawnedAtEpoch = Date.now();
  // BENCH_GATEWAY_NODE_ARGS adds Node.js options, e.g. "--cpu-prof --cpu-prof-dir=.cache/prof" to profile it.
  const nodeArgs = (process.env['BENCH_GATEWAY_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
  const probe = ['--import', './bench/event-loop-probe.mjs'];
  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, ...probe, builtGateway(), '--config', file], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const probes: ProbeLine[] = [];
  const echo = process.env['BENCH_GATEWAY_LOG'] === '1';
  let partial = '';
  const keep = (d: Buffer) => {
    if (echo) process.stderr.write(d);
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (line.startsWith('{"eventLoopProbe"')) {
        probes.push((JSON.parse(line) as { eventLoopProbe: ProbeLine }).eventLoopProbe);
      } else {
        out += `${line}\n`;
      }
    }
    if (out.length > 200_000) out = out.slice(-100_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const base = `http://127.0.0.1:${port}`;
  const url = `${base}/graphql`;
  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    try {
      const res = await request(`${base}/readyz`, { dispatcher: agent });
      await res.body.dump();
      if (res.statusCode === 200) break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null) throw new Error(`the gateway exited before it was ready:\n${out}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the gateway was not ready within ${readyTimeoutMs} ms:\n${out}`);
    }
    await sleep(100);
  }
  return {
    url,
    pid: child.pid as number,
    spawnedAt,
    spawnedAtEpoch,
    post: (query, variables) => postGraphQL(url, query, variables),
    async waitSynced(timeoutMs) {
      const until = Date.now() + timeoutMs;
      let slowestMs = 0;
      let failures = 0;
      for (;;) {
        const t = performance.now();
        let body: GraphQLBody<{ platforms: { inventoryState: string; syncedAt: string | null }[] }> | null = null;
        try {
          body = await postGraphQL(url, '{ platforms { inventoryState syncedAt } }');
        } catch {
          // A gateway whose event loop is held up long enough has its server drop the request.
          failures += 1;
        }
        slowestMs = Math.max(slowestMs, performance.now() - t);
        const platforms = body?.data?.platforms ?? [];
        if (platforms.length > 0 && platforms.every((p) => p.inventoryState === 'SYNCED')) {
          return {
            syncedAt: Math.max(...platforms.map((p) => Date.parse(p.syncedAt ?? '') || Date.now())),
            slowestPollMs: slowestMs,
            failedPolls: failures,
          };
        }
        if (child.exitCode !== null) throw new Error(`the gateway exited:\n${out}`);
        if (Date.now() > until) throw new Error(`not SYNCED within ${timeoutMs} ms: ${JSON.stringify(body)}`);
        await sleep(250);
      }
    },
    output: () => out,
    probeMark: () => probes.length,
    heap: () => {
      const last = probes[probes.length - 1];
      return last
        ? { heapUsedMiB: last.heapUsedMiB, heapTotalMiB: last.heapTotalMiB, externalMiB: last.externalMiB }
        : null;
    },
    eventLoop(mark) {
      // Each line covers the time since the one before: utilization weighted by that time.
      let busy = 0;
      let total = 0;
      for (let i = Math.max(1, mark); i < probes.length; i++) {
        const span = (probes[i] as { at: number }).at - (probes[i - 1] as { at: number }).at;
        busy += span * (probes[i] as { utilization: number }).utilization;
        total += span;
      }
      return {
        maxStallMs: Math.max(0, ...probes.slice(mark).map((p) => p.maxDelayMs)),
        utilization: total > 0 ? busy / total : 0,
      };
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}

// --- a large vCenter simulator -------------------------------------------

export interface LargeVcsim {
  url: string;
  certFile: string;
  username: string;
  password: string;
  pid: number;
  /** How long it took to build its inventory and listen, in ms. */
  startMs: number;
  stop(): Promise<void>;
}

/**
 * VMware's simulator (the test fixture's binary) with `clusters` clusters of
 * `hostsPerCluster` hosts and `vmsPerCluster` VMs in each cluster's resource
 * pool, no standalone hosts: clusters x vmsPerCluster VMs. Unlike the tests'
 * startVcsim it writes no oracle (a govmomi read of everything) and waits as
 * long as the inventory takes to build.
 */
export async function startLargeVcsim(opts: {
  clusters: number;
  hostsPerCluster: number;
  vmsPerCluster: number;
  readyTimeoutMs?: number;
}): Promise<LargeVcsim> {
  if (!existsSync(VCSIM_BINARY)) throw new Error(`${VCSIM_BINARY} is missing: run \`bash scripts/setup.sh\``);
  const dir = mkdtempSync(join(tmpdir(), 'virt-graph-bench-vcsim-'));
  const certFile = join(dir, 'cert.pem');
  const username = 'bench';
  const password = 'bench-password';
  const started = performance.now();
  const child = spawn(
    VCSIM_BINARY,
    [
      '-listen=127.0.0.1:0',
      `-username=${username}`,
      `-password=${password}`,
      `-cert=${certFile}`,
      '-dc=1',
      `-cluster=${opts.clusters}`,
      `-cluster-host=${opts.hostsPerCluster}`,
      '-host=0',
      `-vm=${opts.vmsPerCluster}`,
      '-ds=1',
      '-pg=1',
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  child.stdin.on('error', () => {});
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-10_000)));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(t);
    }
  };
  const timeout = opts.readyTimeoutMs ?? 20 * 60_000;
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`vcsim printed no ready line within ${timeout} ms`)), timeout);
    createInterface({ input: child.stdout }).once('line', (l) => {
      clearTimeout(timer);
      resolve(l);
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`vcsim exited: ${stderr}`));
    });
  }).catch(async (e: unknown) => {
    await stop();
    throw e;
  });
  const url = (JSON.parse(line) as { url: string }).url;
  return { url, certFile, username, password, pid: child.pid as number, startMs: performance.now() - started, stop };
}

// --- SOAP calls, counted ---------------------------------------------------

export interface CountingProxy {
  /** http://127.0.0.1:PORT/sdk */
  url: string;
  /** SOAP requests relayed so far, per vim25 method. */
  counts(): Record<string, number>;
  close(): Promise<void>;
}

/** A plain-HTTP relay to a simulator that counts each SOAP request by its method (the body's first element). */
export async function startCountingProxy(target: string, caFile: string): Promise<CountingProxy> {
  const dispatcher = new Agent({
    connect: { ca: readFileSync(caFile, 'utf8') },
    headersTimeout: 0,
    bodyTimeout: 0,
  });
  const counts = new Map<string, number>();
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const method = /<(\w+) xmlns="urn:vim25">/.exec(body.subarray(0, 2048).toString('utf8'))?.[1] ?? 'unknown';
    counts.set(method, (counts.get(method) ?? 0) + 1);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && k !== 'host') headers[k] = v;
    const upstream = await request(target, { method: 'POST', headers, body, dispatcher });
    const out: Record<string, string | string[]> = { 'content-type': 'text/xml; charset=utf-8' };
    const cookie = upstream.headers['set-cookie'];
    if (cookie) out['set-cookie'] = cookie;
    res.writeHead(upstream.statusCode, out);
    for await (const c of upstream.body) res.write(c);
    res.end();
  };
  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(502);
      res.destroy();
    });
  });
  server.keepAliveTimeout = 120_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/sdk`,
    counts: () => Object.fromEntries(counts),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await dispatcher.close();
    },
  };
}

/** Per-method differences between two count snapshots, zero entries left out. */
export function countsSince(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (v - (before[k] ?? 0) > 0) out[k] = v - (before[k] ?? 0);
  return out;
}

// --- the Go baseline -------------------------------------------------------

export const GOVMOMI_LIST = join(process.cwd(), '.cache/bin/govmomi-list');

/** Builds bench/govmomi-list offline from Debian's govmomi sources, as scripts/setup.sh builds vcsim. */
export function buildGovmomiList(): void {
  const source = join(process.cwd(), 'bench/govmomi-list/main.go');
  if (existsSync(GOVMOMI_LIST) && statSync(GOVMOMI_LIST).mtimeMs >= statSync(source).mtimeMs) return;
  execFileSync('go', ['build', '-o', GOVMOMI_LIST, './bench/govmomi-list'], {
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

/** Runs the Go listing `runs` times in one process (each run logs in afresh): each run's VMs, ms and the process's peak RSS. */
export async function runGovmomiList(
  sim: { url: string; username: string; password: string; certFile: string },
  runs: number,
): Promise<{ vms: number; ms: number; peakRssMiB: number }[]> {
  const { stdout } = await promisify(execFile)(
    GOVMOMI_LIST,
    [
      `-url=${sim.url}`,
      `-username=${sim.username}`,
      `-password=${sim.password}`,
      `-ca=${sim.certFile}`,
      `-runs=${runs}`,
    ],
    { encoding: 'utf8', maxBuffer: 1 << 20, timeout: 30 * 60_000 },
  );
  return stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { vms: number; ms: number; peakRssMiB: number });
}

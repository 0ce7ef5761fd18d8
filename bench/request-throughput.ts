// Request throughput over HTTP against executing the same documents in
// process with graphql-js, on the same schema, context and SYNCED mirror (a
// 1,000-VM libvirt test-driver estate), 32 requests always in flight:
//
// - a small `node(id)` query (a VM's name and power state; a different VM
//   each request);
// - a 100-VM listing (`virtualMachines(first: 100)`, six fields and the host).
//
// Four ways to answer, all in one process of their own
// (bench/throughput-host.ts), driven in alternation round by round:
//
// - graphql-js in process: the baseline;
// - the gateway over HTTP (Apollo Server, with its cost limit, access
//   policy, access log and metrics as configured by default): the measured;
// - graphql-jit in process: what compiling hot documents would give;
// - a bare HTTP layer (node:http + JSON + graphql-js, nothing else): what a
//   lighter HTTP layer than Apollo's would give.
//
// The host runs as production does, on plain Node.js over the compiled
// gateway (`npm run build`, dist/): under tsx's loader, a `require` at run
// time (Apollo's per-request hash does one) costs ten times as much.
//
// The HTTP client (undici) runs in this process, on the same machine: on a
// machine of 2 cores it takes the core the gateway does not use.
//
// Before measuring, the answers are checked: each way returns the same data
// for both documents, and the listing holds 100 VMs of the estate.
//
// THROUGHPUT_MODES picks ways (graphql-js,http,graphql-jit,bare-http); THROUGHPUT_DOCUMENTS picks
// documents (node,list). Sizes: THROUGHPUT_VMS (1000), THROUGHPUT_ROUNDS (3), THROUGHPUT_ROUND_MS (4000).
import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Agent, request } from 'undici';

import { estateVms, writeEstate } from '../test/fixtures/libvirt-estate.js';
import {
  BENCH_AUTH,
  compiledScript,
  cpuMsOf,
  machine,
  medianOf,
  memoryOf,
  mib,
  ms,
  percentile,
  printTable,
  sleep,
} from './support.js';
import type { HostMessage, InProcessMode, RunRequest, RunResult } from './throughput-host.js';
import { closedLoop } from './closed-loop.js';

const VMS = Number(process.env['THROUGHPUT_VMS'] ?? 1000);
const ROUNDS = Number(process.env['THROUGHPUT_ROUNDS'] ?? 3);
const ROUND_MS = Number(process.env['THROUGHPUT_ROUND_MS'] ?? 4000);
const IN_FLIGHT = 32;
const PAGE = 100;
/** The goal: throughput over HTTP, over graphql-js in process. */
const GOAL = 0.5;

const NODE_QUERY = `query($id: ID!) { node(id: $id) { id ... on VirtualMachine { name powerState } } }`;
const LIST_QUERY = `query($first: Int!) {
  virtualMachines(first: $first) { totalCount nodes { id name powerState vcpus memoryMiB host { name } } }
}`;

type Mode = InProcessMode | 'http' | 'bare-http';
const ALL_MODES: { mode: Mode; label: string }[] = [
  { mode: 'graphql-js', label: 'graphql-js in process (baseline)' },
  { mode: 'http', label: 'the gateway over HTTP (Apollo Server)' },
  { mode: 'graphql-jit', label: 'alternative: graphql-jit in process' },
  { mode: 'bare-http', label: 'alternative: node:http + graphql-js, nothing else' },
];
const picked = (env: string | undefined) => (env ? new Set(env.split(',')) : null);
const MODE_PICK = picked(process.env['THROUGHPUT_MODES']);
const MODES = ALL_MODES.filter((m) => MODE_PICK?.has(m.mode) ?? true);
const DOCUMENT_PICK = picked(process.env['THROUGHPUT_DOCUMENTS']);

interface Document {
  key: string;
  label: string;
  query: string;
  variables: Record<string, unknown>[];
}

// --- the host process ----------------------------------------------------------

interface Host {
  pid: number;
  url: string;
  bareUrl: string;
  run(request: RunRequest): Promise<RunResult>;
  stop(): Promise<void>;
}

async function startHost(config: Record<string, unknown>): Promise<Host> {
  const child: ChildProcess = fork(compiledScript('bench/throughput-host.ts'), [], {
    // BENCH_GATEWAY_NODE_ARGS adds Node.js options, as bench/support.ts does: "--cpu-prof --cpu-prof-dir=.cache/prof".
    execArgv: (process.env['BENCH_GATEWAY_NODE_ARGS'] ?? '').split(' ').filter(Boolean),
    env: { ...process.env, THROUGHPUT_CONFIG: JSON.stringify(config) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const next = () =>
    new Promise<HostMessage>((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`the host exited (${code})`));
      child.once('exit', onExit);
      child.once('message', (m: HostMessage) => {
        child.off('exit', onExit);
        resolve(m);
      });
    });
  const first = await next();
  if (!('ready' in first)) throw new Error(`the host did not start: ${JSON.stringify(first)}`);
  return {
    pid: child.pid as number,
    ...first.ready,
    async run(runRequest) {
      const answer = next();
      child.send({ run: runRequest });
      const m = await answer;
      if ('result' in m) return m.result;
      throw new Error('error' in m ? m.error : JSON.stringify(m));
    },
    async stop() {
      const exited = new Promise((r) => child.once('exit', r));
      child.send({ stop: true });
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}

// --- HTTP --------------------------------------------------------------------------

const agent = new Agent({ connections: 64, pipelining: 1, keepAliveTimeout: 30_000 });

async function postText(url: string, query: string, variables: Record<string, unknown>): Promise<string> {
  const res = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
    dispatcher: agent,
  });
  const text = await res.body.text();
  // Cheap enough not to weigh on the client: a whole answer with data and no error.
  if (res.statusCode !== 200 || !text.startsWith('{"data":') || text.includes('"errors":')) {
    throw new Error(`HTTP ${res.statusCode}: ${text.slice(0, 500)}`);
  }
  return text;
}

/** IN_FLIGHT workers over HTTP, each sending the next request when its answer is in. */
function httpLoop(url: string, doc: Document, durationMs: number): Promise<RunResult> {
  return closedLoop(IN_FLIGHT, durationMs, doc.variables, (variables) => postText(url, doc.query, variables));
}

// --- the checks ----------------------------------------------------------------------

/** Every way answers both documents with the same data; the listing is PAGE VMs of the estate. */
async function checkAnswers(host: Host, docs: Document[], names: Set<string>): Promise<void> {
  for (const doc of docs) {
    for (const variables of doc.variables.slice(0, 3)) {
      const over = JSON.parse(await postText(host.url, doc.query, variables)) as { data: unknown };
      const bare = JSON.parse(await postText(host.bareUrl, doc.query, variables)) as { data: unknown };
      if (JSON.stringify(over.data) !== JSON.stringify(bare.data)) {
        throw new Error(`${doc.key}: the gateway and the bare layer answer differently`);
      }
      if (doc.key === 'list') {
        const vms = (over.data as { virtualMachines: { totalCount: number; nodes: { name: string }[] } })
          .virtualMachines;
        if (vms.totalCount !== names.size || vms.nodes.length !== PAGE || !vms.nodes.every((v) => names.has(v.name))) {
          throw new Error(`list: ${vms.totalCount} VMs, a page of ${vms.nodes.length}`);
        }
      } else if (!names.has((over.data as { node: { name: string } | null }).node?.name ?? '')) {
        throw new Error(`node: ${JSON.stringify(over.data)}`);
      }
    }
  }
}

// --- the run -----------------------------------------------------------------------

console.log(`request-throughput benchmark on ${machine()}`);
const estate = writeEstate({ vms: VMS });
const names = new Set(estateVms(VMS).map((v) => v.name));
const host = await startHost({
  server: { host: '127.0.0.1', port: 0 },
  logging: { level: 'warn' },
  state: { dir: join(mkdtempSync(join(tmpdir(), 'virt-graph-bench-')), 'state') },
  auth: BENCH_AUTH,
  // No periodic full re-read during the measurements (it would compete for the CPU at a random moment).
  inventory: { resyncIntervalSeconds: 3600 },
  platforms: [{ id: 'lv', kind: 'libvirt', uri: estate.uri }],
});
try {
  const idleRss = memoryOf(host.pid).rssMiB;
  const ids = JSON.parse(await postText(host.url, `{ virtualMachines(first: ${PAGE}) { nodes { id } } }`, {})) as {
    data: { virtualMachines: { nodes: { id: string }[] } };
  };
  const docs: Document[] = [
    {
      key: 'node',
      label: 'node(id): a VM’s name and power state',
      query: NODE_QUERY,
      variables: ids.data.virtualMachines.nodes.map((n) => ({ id: n.id })),
    },
    {
      key: 'list',
      label: `${PAGE}-VM listing (id name powerState vcpus memoryMiB host { name }, totalCount)`,
      query: LIST_QUERY,
      variables: [{ first: PAGE }],
    },
  ];
  await checkAnswers(host, docs, names);
  docs.splice(0, docs.length, ...docs.filter((d) => DOCUMENT_PICK?.has(d.key) ?? true));
  console.log(`answers checked: the same data over HTTP and bare HTTP; the listing is ${PAGE} of the ${VMS} VMs`);

  const once = async (mode: Mode, doc: Document, durationMs: number) => {
    const before = cpuMsOf(host.pid);
    const result =
      mode === 'http' || mode === 'bare-http'
        ? await httpLoop(mode === 'http' ? host.url : host.bareUrl, doc, durationMs)
        : await host.run({ mode, query: doc.query, variables: doc.variables, concurrency: IN_FLIGHT, durationMs });
    return { ...result, hostCpuMs: cpuMsOf(host.pid) - before, rssMiB: memoryOf(host.pid).rssMiB };
  };
  type Round = Awaited<ReturnType<typeof once>>;

  for (const doc of docs) {
    const rounds = new Map<Mode, Round[]>(ALL_MODES.map((m) => [m.mode, []]));
    for (const { mode } of MODES) await once(mode, doc, Math.min(ROUND_MS, 2000));
    for (let r = 0; r < ROUNDS; r++) {
      for (let i = 0; i < MODES.length; i++) {
        const { mode } = MODES[(r + i) % MODES.length]!;
        rounds.get(mode)!.push(await once(mode, doc, ROUND_MS));
        await sleep(200);
      }
    }
    const summary = (mode: Mode) => {
      const rs = rounds.get(mode)!;
      const requests = rs.reduce((s, r) => s + r.requests, 0);
      const latencies = rs.flatMap((r) => r.latencies);
      return {
        rps: medianOf(rs.map((r) => r.requests / r.seconds)),
        p50: percentile(latencies, 50),
        p99: percentile(latencies, 99),
        hostCpu: rs.reduce((s, r) => s + r.hostCpuMs, 0) / requests,
        clientCpu: mode === 'http' || mode === 'bare-http' ? rs.reduce((s, r) => s + r.cpuMs, 0) / requests : null,
        rss: medianOf(rs.map((r) => r.rssMiB)),
      };
    };
    const base = rounds.get('graphql-js')!.length > 0 ? summary('graphql-js') : null;
    printTable(
      `${doc.label}, ${VMS}-VM libvirt estate, SYNCED mirror, ${IN_FLIGHT} in flight: median of ${ROUNDS} rounds of ` +
        `${ROUND_MS / 1000} s in alternation (host RSS idle ${mib(idleRss)})`,
      [
        'way',
        'throughput',
        'ratio to graphql-js',
        'goal',
        'p50',
        'p99',
        'host CPU per request',
        'client CPU per request',
        'host RSS',
      ],
      MODES.map(({ mode, label }) => {
        const s = summary(mode);
        const r = base ? s.rps / base.rps : NaN;
        return [
          label,
          `${s.rps.toFixed(0)} req/s`,
          mode === 'graphql-js' || !base ? '' : `x${r.toFixed(2)}`,
          mode === 'http' && base ? (r >= GOAL ? `≥ ${GOAL}: met` : `≥ ${GOAL}: **missed**`) : '',
          ms(s.p50),
          ms(s.p99),
          `${s.hostCpu.toFixed(3)} ms`,
          s.clientCpu === null ? '' : `${s.clientCpu.toFixed(3)} ms`,
          mib(s.rss),
        ];
      }),
    );
  }
} finally {
  await host.stop();
  await agent.close();
}

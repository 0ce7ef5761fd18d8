// Request throughput with authorization on against off, for a 100-VM page
// of a 1,000-VM libvirt estate (libvirt's test driver, read from the SYNCED
// live inventory). Each configuration runs as a gateway process of its own,
// rate limit off, and they are driven in alternation (a, b, c, b, c, a, ...)
// with the same closed loop: IN_FLIGHT requests always in flight for
// AUTHZ_ROUND_MS per round, AUTHZ_ROUNDS rounds after a warm-up round.
//
// - off: anonymous callers are admins of `*` (the default): no credential
//   to check, nothing filtered.
// - API token: `Authorization: Bearer vgt_...`, a viewer of a tenant
//   selecting `web-*` and `db-*` (half the estate): a SHA-256 per request,
//   and every list filtered.
// - JWT: an RS256 token from a key whose JWKS this benchmark serves on
//   loopback, bound through its `groups` claim to the same tenant: a
//   signature check per request, and the same filtering.
// - API token on `*` and JWT on `*` (diagnosis): a second token, and a JWT
//   of a second group, bound to everything in the same two gateways:
//   authentication without filtering, which tells the two costs apart.
//
// Before measuring, the answers are checked: each credential pages through
// exactly the VMs it may see (names, power states, vCPUs and memory as the
// estate wrote them, totalCount), and a request without a credential, or
// with an unknown API token, is refused.
//
// Sizes: AUTHZ_VMS (1000), AUTHZ_ROUNDS (4), AUTHZ_ROUND_MS (5000).
// Profiling: BENCH_GATEWAY_NODE_ARGS="--cpu-prof --cpu-prof-dir=.cache/prof"
// (bench/support.ts) writes one profile per gateway when it stops.
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

import { type JWK, SignJWT, exportJWK, generateKeyPair } from 'jose';
import { Agent, request } from 'undici';

import { apiTokenSha256, generateApiToken } from '../src/server/api-tokens.js';
import { estateVms, writeEstate } from '../test/fixtures/libvirt-estate.js';
import { closedLoop } from './closed-loop.js';
import {
  type GatewayProcess,
  type GraphQLBody,
  cpuMsOf,
  machine,
  medianOf,
  memoryOf,
  mib,
  ms,
  percentile,
  printTable,
  settledRss,
  sleep,
  spawnGateway,
} from './support.js';

const VMS = Number(process.env['AUTHZ_VMS'] ?? 1000);
const ROUNDS = Number(process.env['AUTHZ_ROUNDS'] ?? 4);
const ROUND_MS = Number(process.env['AUTHZ_ROUND_MS'] ?? 5000);
const IN_FLIGHT = 16;
const PAGE = 100;
/** The goal: throughput with authorization on, over off. */
const GOAL = 0.9;

const ISSUER = 'https://idp.bench';
const AUDIENCE = 'virt-graph';
const GROUP = 'web-db-viewers';
const WIDE_GROUP = 'estate-viewers';
const TENANT = 'web-db';
const PATTERNS = ['web-*', 'db-*'];
const inTenant = (name: string) => /^(web|db)-/.test(name);
/** The power state the gateway shows for each run state the estate writes. */
const POWER_STATES: Record<string, string> = {
  running: 'ON',
  shutoff: 'OFF',
  paused: 'PAUSED',
  pmsuspended: 'SUSPENDED',
};

// A tenant's listing is read with these limits too; the measured page is 100 VMs.
const LIMITS = { maxPageSize: 1_000, maxCost: 1_000_000 };
// No periodic full re-read during the measurements (it would compete for the CPU at a random moment).
const INVENTORY = { resyncIntervalSeconds: 3600 };
const NO_RATE_LIMIT = { enabled: false };

const FIELDS = 'name powerState host { name } vcpus memoryMiB';
const QUERY = `query($first: Int!, $after: String) {
  virtualMachines(first: $first, after: $after) {
    totalCount pageInfo { endCursor hasNextPage } nodes { ${FIELDS} }
  }
}`;

interface VmNode {
  name: string;
  powerState: string;
  host: { name: string } | null;
  vcpus: number;
  memoryMiB: number;
}

interface Listing {
  virtualMachines: {
    totalCount: number;
    pageInfo: { endCursor: string | null; hasNextPage: boolean };
    nodes: VmNode[];
  };
}

// --- HTTP, with a credential -----------------------------------------------

const agent = new Agent({ connections: 64, pipelining: 1, keepAliveTimeout: 30_000 });

/** POSTs a query with an optional Authorization header: the status and the parsed answer. */
async function post<T = Listing>(
  url: string,
  authorization: string | null,
  variables: Record<string, unknown>,
  query = QUERY,
): Promise<{ status: number; body: GraphQLBody<T> }> {
  const res = await request(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(authorization === null ? {} : { authorization }),
    },
    body: JSON.stringify({ query, variables }),
    dispatcher: agent,
  });
  return { status: res.statusCode, body: (await res.body.json()) as GraphQLBody<T> };
}

/**
 * Polls, with the target's credential, until its platforms are SYNCED (the
 * support's waitSynced sends none, which a gateway without anonymous
 * callers refuses).
 */
async function waitSynced(target: Target, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const { body } = await post<{ platforms: { inventoryState: string }[] }>(
      target.gw.url,
      target.authorization,
      {},
      '{ platforms { inventoryState } }',
    );
    const states = body.data?.platforms.map((p) => p.inventoryState) ?? [];
    if (states.length > 0 && states.every((s) => s === 'SYNCED')) return;
    if (Date.now() > until)
      throw new Error(`${target.label}: not SYNCED within ${timeoutMs} ms: ${JSON.stringify(body)}`);
    await sleep(250);
  }
}

/** One page, refused unless it came whole: status 200, no errors, the expected totalCount and page length. */
async function page(target: Target, after: string | null = null): Promise<Listing['virtualMachines']> {
  const { status, body } = await post(target.gw.url, target.authorization, { first: PAGE, after });
  const vms = body.data?.virtualMachines;
  if (status !== 200 || body.errors || !vms) {
    throw new Error(`${target.label}: HTTP ${status}: ${JSON.stringify(body).slice(0, 1000)}`);
  }
  if (vms.totalCount !== target.expected.length) {
    throw new Error(`${target.label}: totalCount ${vms.totalCount}, expected ${target.expected.length}`);
  }
  if (vms.nodes.length !== Math.min(PAGE, target.expected.length) && after === null) {
    throw new Error(`${target.label}: a page of ${vms.nodes.length} VMs`);
  }
  return vms;
}

// --- a JWKS on loopback --------------------------------------------------------

async function serveJwks(keys: JWK[]): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/jwks`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

// --- the closed loop -----------------------------------------------------------

interface Target {
  key: string;
  label: string;
  gw: GatewayProcess;
  authorization: string | null;
  /** The VMs the caller may see, as the estate wrote them. */
  expected: ReturnType<typeof estateVms>;
}

interface Round {
  requests: number;
  seconds: number;
  latencies: number[];
  gatewayCpuMs: number;
  utilization: number;
}

/** IN_FLIGHT workers, each sending the next request when its answer is in, for `durationMs`. */
async function drive(target: Target, durationMs: number): Promise<Round> {
  const cpuBefore = cpuMsOf(target.gw.pid);
  const mark = target.gw.probeMark();
  const loop = await closedLoop(IN_FLIGHT, durationMs, [{}], () => page(target));
  return {
    requests: loop.requests,
    seconds: loop.seconds,
    latencies: loop.latencies,
    gatewayCpuMs: cpuMsOf(target.gw.pid) - cpuBefore,
    utilization: target.gw.eventLoop(mark).utilization,
  };
}

// --- the checks ------------------------------------------------------------------

/** Pages through everything the caller sees and compares it with what the estate holds for it. */
async function checkAnswers(target: Target): Promise<void> {
  const seen: VmNode[] = [];
  let after: string | null = null;
  for (;;) {
    const vms: Listing['virtualMachines'] = await page(target, after);
    seen.push(...vms.nodes);
    if (!vms.pageInfo.hasNextPage) break;
    after = vms.pageInfo.endCursor;
  }
  const byName = new Map(target.expected.map((v) => [v.name, v]));
  if (seen.length !== byName.size || new Set(seen.map((v) => v.name)).size !== seen.length) {
    throw new Error(`${target.label}: listed ${seen.length} VMs, expected ${byName.size}`);
  }
  for (const vm of seen) {
    const want = byName.get(vm.name);
    if (!want) throw new Error(`${target.label}: listed ${vm.name}, which it may not see`);
    if (
      vm.vcpus !== want.vcpus ||
      vm.memoryMiB !== want.currentMemoryMiB ||
      vm.powerState !== POWER_STATES[want.rawState] ||
      !vm.host?.name
    ) {
      throw new Error(
        `${target.label}: ${vm.name} read as ${JSON.stringify(vm)}, the estate says ${JSON.stringify(want)}`,
      );
    }
  }
}

/** A request without a credential (or with an unknown API token) is refused with 401 by the gateways that need one. */
async function checkRefused(gw: GatewayProcess, authorization: string | null, what: string): Promise<void> {
  const { status, body } = await post(gw.url, authorization, { first: PAGE });
  if (status !== 401 || body.errors?.[0]?.extensions?.['code'] !== 'UNAUTHENTICATED') {
    throw new Error(`${what} was not refused: HTTP ${status} ${JSON.stringify(body).slice(0, 300)}`);
  }
}

// --- the run ---------------------------------------------------------------------

console.log(`authorization benchmark on ${machine()}`);
const estate = writeEstate({ vms: VMS });
const everyVm = estateVms(VMS);
const tenantVms = everyVm.filter((v) => inTenant(v.name));
const platforms = [{ id: 'lv', kind: 'libvirt', uri: estate.uri }];

const token = generateApiToken();
const wideToken = generateApiToken();
const key = await generateKeyPair('RS256');
const kid = 'bench-1';
const jwks = await serveJwks([{ ...(await exportJWK(key.publicKey)), kid, alg: 'RS256', use: 'sig' }]);
const now = Math.floor(Date.now() / 1000);
/** An RS256 JWT for `sub` in `groups`, valid for an hour. */
const signJwt = (sub: string, groups: string[]) =>
  new SignJWT({ iss: ISSUER, aud: AUDIENCE, sub, groups, iat: now, exp: now + 3600 })
    .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' })
    .sign(key.privateKey);
const jwt = await signJwt('bench-user', [GROUP]);
const wideJwt = await signJwt('bench-estate', [WIDE_GROUP]);

const tenants = { [TENANT]: { namePatterns: PATTERNS } };
const gateways: GatewayProcess[] = [];
try {
  const common = { limits: LIMITS, inventory: INVENTORY, platforms };
  const spawned = await Promise.all([
    spawnGateway({
      ...common,
      auth: { anonymous: { roles: ['admin'], tenants: ['*'] }, rateLimit: NO_RATE_LIMIT },
    }),
    spawnGateway({
      ...common,
      auth: {
        rateLimit: NO_RATE_LIMIT,
        apiTokens: [
          { name: 'bench-viewer', sha256: apiTokenSha256(token) },
          { name: 'bench-wide', sha256: apiTokenSha256(wideToken) },
        ],
        tenants,
        bindings: [
          { subjects: ['token:bench-viewer'], roles: ['viewer'], tenants: [TENANT] },
          { subjects: ['token:bench-wide'], roles: ['viewer'], tenants: ['*'] },
        ],
      },
    }),
    spawnGateway({
      ...common,
      auth: {
        rateLimit: NO_RATE_LIMIT,
        jwt: { jwksUrl: jwks.url, issuer: ISSUER, audience: AUDIENCE, algorithms: ['RS256'] },
        tenants,
        bindings: [
          { subjects: [`group:${GROUP}`], roles: ['viewer'], tenants: [TENANT] },
          { subjects: [`group:${WIDE_GROUP}`], roles: ['viewer'], tenants: ['*'] },
        ],
      },
    }),
  ]);
  gateways.push(...spawned);
  const [off, tokenGw, jwtGw] = spawned as [GatewayProcess, GatewayProcess, GatewayProcess];
  const targets: Target[] = [
    { key: 'off', label: 'off (anonymous admin of *)', gw: off, authorization: null, expected: everyVm },
    {
      key: 'token',
      label: `on, API token (viewer of ${TENANT})`,
      gw: tokenGw,
      authorization: `Bearer ${token}`,
      expected: tenantVms,
    },
    {
      key: 'jwt',
      label: `on, JWT RS256 (group → ${TENANT})`,
      gw: jwtGw,
      authorization: `Bearer ${jwt}`,
      expected: tenantVms,
    },
    {
      key: 'wide',
      label: 'diagnosis: API token on * (authentication, no filtering)',
      gw: tokenGw,
      authorization: `Bearer ${wideToken}`,
      expected: everyVm,
    },
    {
      key: 'wideJwt',
      label: 'diagnosis: JWT on * (authentication, no filtering)',
      gw: jwtGw,
      authorization: `Bearer ${wideJwt}`,
      expected: everyVm,
    },
  ];

  await Promise.all(targets.map((t) => waitSynced(t, 10 * 60_000)));
  const idleRss = await Promise.all(spawned.map((gw) => settledRss(gw.pid)));
  for (const t of targets) await checkAnswers(t);
  await checkRefused(tokenGw, null, 'a request without a credential (API-token gateway)');
  await checkRefused(tokenGw, `Bearer ${generateApiToken()}`, 'an unknown API token');
  await checkRefused(jwtGw, null, 'a request without a credential (JWT gateway)');
  console.log(
    `answers checked: ${VMS} VMs for off and the token on *, ${tenantVms.length} (${PATTERNS.join(', ')}) for the ` +
      'tenant token and the JWT, names, power states, vCPUs, memory (current) and totalCount as the estate wrote them; requests without a ' +
      'credential and with an unknown token refused (401)',
  );

  // A warm-up round each (the JIT, the caches), then the measured rounds in alternation, each
  // round starting one configuration further on, so that none always follows the same one.
  const rounds = new Map<string, Round[]>(targets.map((t) => [t.key, []]));
  for (const t of targets) await drive(t, Math.min(ROUND_MS, 2000));
  for (let r = 0; r < ROUNDS; r++) {
    for (let i = 0; i < targets.length; i++) {
      const t = targets[(r + i) % targets.length] as Target;
      rounds.get(t.key)!.push(await drive(t, ROUND_MS));
      await sleep(200);
    }
  }
  const rss = await Promise.all(spawned.map((gw) => settledRss(gw.pid)));
  const rssOf = (gw: GatewayProcess) => {
    const i = spawned.indexOf(gw);
    return `${mib(idleRss[i] as number)} idle, ${mib(rss[i] as number)} after (peak ${mib(memoryOf(gw.pid).peakMiB)})`;
  };

  const summary = (key: string) => {
    const rs = rounds.get(key)!;
    const perRound = rs.map((r) => r.requests / r.seconds);
    const latencies = rs.flatMap((r) => r.latencies);
    const requests = rs.reduce((s, r) => s + r.requests, 0);
    return {
      rps: medianOf(perRound),
      perRound,
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      cpuPerRequest: rs.reduce((s, r) => s + r.gatewayCpuMs, 0) / requests,
      utilization: medianOf(rs.map((r) => r.utilization)),
      requests,
    };
  };
  const base = summary('off');
  const rows = targets.map((t) => {
    const s = summary(t.key);
    const r = s.rps / base.rps;
    return [
      t.label,
      `${s.rps.toFixed(0)} req/s`,
      // Beside it, the same ratio from the gateway's CPU time per request, which a busy machine disturbs less.
      t.key === 'off' ? '' : `x${r.toFixed(2)} (CPU x${(base.cpuPerRequest / s.cpuPerRequest).toFixed(2)})`,
      t.key === 'off' || t.key.startsWith('wide') ? '' : r >= GOAL ? `≥ ${GOAL}: met` : `≥ ${GOAL}: **missed**`,
      ms(s.p50),
      ms(s.p99),
      `${s.cpuPerRequest.toFixed(2)} ms`,
      `${(s.utilization * 100).toFixed(0)}%`,
      t.key === 'wide' ? "(the API token's process)" : t.key === 'wideJwt' ? "(the JWT's process)" : rssOf(t.gw),
    ];
  });
  printTable(
    `${PAGE}-VM page (${FIELDS}) of a ${VMS}-VM libvirt estate, SYNCED mirror, rate limit off: ` +
      `${IN_FLIGHT} requests in flight, median of ${ROUNDS} rounds of ${ROUND_MS / 1000} s in alternation`,
    [
      'caller',
      'throughput',
      'ratio on/off',
      'goal',
      'p50',
      'p99',
      'gateway CPU per request',
      'event loop busy',
      'gateway RSS',
    ],
    rows,
  );
  console.log(
    `\nrequests per second, per round: ${targets
      .map((t) => {
        const s = summary(t.key);
        return `${t.key} ${s.perRound.map((v) => v.toFixed(0)).join(', ')} (${s.requests} requests)`;
      })
      .join('; ')}`,
  );
} finally {
  await Promise.all(gateways.map((gw) => gw.stop()));
  await jwks.close();
  await agent.close();
}

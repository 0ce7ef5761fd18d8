import { parse } from 'graphql';
import { type Client, createClient } from 'graphql-ws';
import { Agent, fetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';

import { validateConfig } from '../src/config/load.js';
import { apiTokenSha256, generateApiToken } from '../src/server/api-tokens.js';
import { operationCost } from '../src/server/limits.js';
import { addressKey } from '../src/server/rate-limit.js';
import { buildGatewaySchema } from '../src/server/schema.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { type RedisServer, redisServer } from './helpers/redis-server.js';

// A budget of query cost points per caller and window, over real HTTP and
// graphql-ws against gateways on libvirt's test driver, and shared through a
// real redis-server: a caller over its budget is refused (429, Retry-After;
// on a WebSocket an error for that operation) while others are served, every
// answer says what it cost and what is left, and the budget is whole again
// once the window ends.

const LIMIT = 200;
const WINDOW_SECONDS = 4;
const PLATFORMS = [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }];
const QUERY = '{ platforms { id name } }';
/** QUERY's cost: the platforms list (2 + its @listSize of 8 entries of 2 leaves each). */
const COST = 18;
/** How many QUERYs one window's budget pays for. */
const AFFORDABLE = Math.floor(LIMIT / COST);

const TOKEN_NAMES = ['spender', 'bystander', 'operator', 'dry', 'socket', 'subscriber', 'shared', 'alone'] as const;
type TokenName = (typeof TOKEN_NAMES)[number];
const tokens = Object.fromEntries(TOKEN_NAMES.map((n) => [n, generateApiToken()])) as Record<TokenName, string>;

function authConfig(rateLimit: Record<string, unknown>): Record<string, unknown> {
  const subjects = TOKEN_NAMES.filter((n) => n !== 'operator').map((n) => `token:${n}`);
  return {
    anonymous: { roles: ['viewer'] },
    apiTokens: TOKEN_NAMES.map((name) => ({ name, sha256: apiTokenSha256(tokens[name]) })),
    bindings: [
      { subjects, roles: ['viewer'], tenants: ['*'] },
      { subjects: ['token:operator'], roles: ['operator'], tenants: ['*'] },
    ],
    rateLimit,
  };
}
const RATE_LIMIT = { pointsPerWindow: LIMIT, windowSeconds: WINDOW_SECONDS };

interface Extension {
  limit: number;
  cost: number;
  remaining: number;
  resetAt: string;
}
interface Answer {
  status: number;
  headers: { get(name: string): string | null };
  body: {
    data?: Record<string, unknown> | null;
    errors?: { message: string; extensions?: Record<string, unknown> }[];
    extensions?: { rateLimit?: Extension };
  };
}

const agents = new Map<string, Agent>();
/** An HTTP agent whose sockets leave from `localAddress` (any 127.x address is this machine's loopback). */
function agentFrom(localAddress: string): Agent {
  let agent = agents.get(localAddress);
  // The client's own option: undici 7 passes `connect.localAddress` over with the client's (unset) one.
  if (!agent) agents.set(localAddress, (agent = new Agent({ localAddress })));
  return agent;
}
afterAll(async () => {
  await Promise.all([...agents.values()].map((a) => a.close()));
});

async function post(
  url: string,
  query: string,
  opts: { token?: TokenName; from?: string; variables?: Record<string, unknown> } = {},
): Promise<Answer> {
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(opts.token ? { authorization: `Bearer ${tokens[opts.token]}` } : {}),
    },
    body: JSON.stringify({ query, variables: opts.variables }),
    dispatcher: agentFrom(opts.from ?? '127.0.0.1'),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Answer['body'] };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits for a window to begin, so that a sequence of requests falls in one window (they take well under one). */
async function freshWindow(): Promise<void> {
  const windowMs = WINDOW_SECONDS * 1000;
  await sleep(windowMs - (Date.now() % windowMs) + 20);
}

/** Spends a caller's budget with QUERY until it is refused; the refusal. */
async function exhaust(url: string, opts: { token?: TokenName; from?: string }): Promise<Answer> {
  for (let i = 0; i <= AFFORDABLE; i++) {
    const res = await post(url, QUERY, opts);
    if (res.status !== 200) return res;
  }
  throw new Error(`still served after ${AFFORDABLE + 1} queries`);
}

/** A graphql-ws client for `token`, remembering whether the server closed it. */
function socketClient(url: string, token: TokenName): { client: Client; closed: () => boolean } {
  let closed = false;
  const client = createClient({
    url: url.replace(/^http/, 'ws'),
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    // One connection for every operation of the test (a lazy client closes it between them).
    lazy: false,
    connectionParams: { authorization: `Bearer ${tokens[token]}` },
    on: { closed: () => (closed = true) },
  });
  return { client, closed: () => closed };
}

interface WsResult {
  data?: Record<string, unknown> | null;
  errors?: readonly { message: string; extensions?: Record<string, unknown> }[];
  extensions?: { rateLimit?: Extension };
}

/** Runs one query on an open client: its result, or the errors that refused it. */
function wsRun(client: Client, query: string): Promise<WsResult> {
  return new Promise((resolve, reject) => {
    let result: WsResult = {};
    client.subscribe(
      { query },
      {
        next: (value) => {
          result = value as WsResult;
        },
        error: (e) => (Array.isArray(e) ? resolve({ errors: e as WsResult['errors'] }) : reject(e as Error)),
        complete: () => resolve(result),
      },
    );
  });
}

describe('a budget of cost points per caller', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ auth: authConfig(RATE_LIMIT), platforms: PLATFORMS });
  });
  afterAll(() => gw?.close());

  it('charges each query its cost, says what is left, and refuses the one over budget with 429 while others are served', async () => {
    await freshWindow();
    let remaining = LIMIT;
    let resetAt = '';
    for (let i = 0; i < AFFORDABLE; i++) {
      const res = await post(gw.url, QUERY, { token: 'spender' });
      expect(res.status).toBe(200);
      remaining -= COST;
      resetAt = res.body.extensions!.rateLimit!.resetAt;
      expect(res.body.extensions!.rateLimit).toEqual({ limit: LIMIT, cost: COST, remaining, resetAt });
      expect(Date.parse(resetAt) % (WINDOW_SECONDS * 1000)).toBe(0);
      // GitHub's headers say the same.
      expect(res.headers.get('x-ratelimit-remaining')).toBe(String(remaining));
      expect(res.headers.get('x-ratelimit-used')).toBe(String(LIMIT - remaining));
      expect(res.headers.get('x-ratelimit-reset')).toBe(String(Date.parse(resetAt) / 1000));
    }

    const refused = await post(gw.url, QUERY, { token: 'spender' });
    expect(refused.status).toBe(429);
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(WINDOW_SECONDS);
    expect(refused.body.data).toBeUndefined();
    expect(refused.body.errors).toHaveLength(1);
    expect(refused.body.errors![0]!.extensions).toEqual({
      code: 'RATE_LIMITED',
      cost: COST,
      remaining,
      resetAt,
      retryAfterSeconds: retryAfter,
    });
    // A refusal spends nothing: what is left is still left for a cheaper operation.
    const cheap = await post(gw.url, '{ __typename }', { token: 'spender' });
    expect(cheap.status).toBe(200);
    expect(cheap.body.extensions!.rateLimit).toMatchObject({ cost: 1, remaining: remaining - 1 });

    // Another identity has a budget of its own.
    const other = await post(gw.url, QUERY, { token: 'bystander' });
    expect(other.status).toBe(200);
    expect(other.body.extensions!.rateLimit).toMatchObject({ cost: COST, remaining: LIMIT - COST });

    // Once the window ends, the budget is whole again.
    await sleep(Math.max(0, Date.parse(resetAt) - Date.now()) + 50);
    const again = await post(gw.url, QUERY, { token: 'spender' });
    expect(again.status).toBe(200);
    expect(again.body.extensions!.rateLimit).toMatchObject({ cost: COST, remaining: LIMIT - COST });
    expect(Date.parse(again.body.extensions!.rateLimit!.resetAt)).toBeGreaterThan(Date.parse(resetAt));
  });

  it('answers the rateLimit field as the extensions say', async () => {
    const res = await post(gw.url, '{ rateLimit { limit cost remaining used resetAt } platforms { id } }', {
      token: 'bystander',
    });
    const field = res.body.data!['rateLimit'] as Extension & { used: number };
    const { used, ...rest } = field;
    expect(rest).toEqual(res.body.extensions!.rateLimit);
    expect(used).toBe(LIMIT - field.remaining);
  });

  it('runs nothing of a refused mutation', async () => {
    await freshWindow();
    const vms = await post(gw.url, '{ virtualMachines(first: 5) { nodes { id name powerState } } }', {
      token: 'operator',
    });
    const vm = (vms.body.data!['virtualMachines'] as { nodes: { id: string; powerState: string }[] }).nodes[0]!;
    expect(vm.powerState).toBe('ON');
    await exhaust(gw.url, { token: 'operator' });
    const refused = await post(
      gw.url,
      // Costlier than whatever the exhausted budget has left (less than QUERY's cost).
      'mutation($id: ID!) { pauseVm(input: { vmId: $id }) { vm { id name powerState } task { id } userErrors { code message } } }',
      { token: 'operator', variables: { id: vm.id } },
    );
    expect(refused.status).toBe(429);
    expect(refused.body.errors![0]!.extensions!['code']).toBe('RATE_LIMITED');
    const after = await post(gw.url, 'query($id: ID!) { node(id: $id) { ... on VirtualMachine { powerState } } }', {
      token: 'bystander',
      variables: { id: vm.id },
    });
    expect(after.body.data!['node']).toEqual({ powerState: 'ON' });
  });

  it('prices a dry run without charging it or running its other fields', async () => {
    const dry = await post(gw.url, '{ rateLimit(dryRun: true) { cost remaining used } platforms { id name } }', {
      token: 'dry',
    });
    expect(dry.status).toBe(200);
    const rateLimitCost = 2 + 3; // the rateLimit object and its three leaves
    expect(dry.body.data).toEqual({ rateLimit: { cost: COST + rateLimitCost, remaining: LIMIT, used: 0 } });
    expect(dry.body.extensions!.rateLimit).toMatchObject({ cost: COST + rateLimitCost, remaining: LIMIT });

    const charged = await post(gw.url, '{ rateLimit { cost remaining used } }', { token: 'dry' });
    expect(charged.body.data).toEqual({ rateLimit: { cost: 5, remaining: LIMIT - 5, used: 5 } });

    // `dryRun: $dry` counts at its value; false charges and runs everything.
    const byVariable = await post(
      gw.url,
      'query($dry: Boolean!) { rateLimit(dryRun: $dry) { cost } platforms { id } }',
      {
        token: 'dry',
        variables: { dry: false },
      },
    );
    expect(byVariable.body.data!['platforms']).toEqual([{ id: expect.any(String) }]);
  });

  it('refuses an operation over budget on a WebSocket with an error for it, and keeps the connection', async () => {
    await freshWindow();
    const { client, closed } = socketClient(gw.url, 'socket');
    try {
      let remaining = LIMIT;
      for (let i = 0; i < AFFORDABLE; i++) {
        const res = await wsRun(client, QUERY);
        remaining -= COST;
        expect(res.errors).toBeUndefined();
        expect(res.extensions!.rateLimit).toMatchObject({ limit: LIMIT, cost: COST, remaining });
      }
      const refused = await wsRun(client, QUERY);
      expect(refused.data).toBeUndefined();
      expect(refused.errors![0]!.extensions).toEqual({
        code: 'RATE_LIMITED',
        cost: COST,
        remaining,
        resetAt: expect.stringMatching(/Z$/),
        retryAfterSeconds: expect.any(Number),
      });
      // A subscription is charged when it starts: refused too.
      const subscription = await wsRun(client, 'subscription { platformStatusChanged { cursor } }');
      expect(subscription.errors![0]!.extensions!['code']).toBe('RATE_LIMITED');
      // The same connection goes on: a dry run costs nothing and is answered.
      const dry = await wsRun(client, '{ rateLimit(dryRun: true) { remaining } }');
      expect(dry.data).toEqual({ rateLimit: { remaining } });
      expect(closed()).toBe(false);
    } finally {
      await client.dispose();
    }
  });

  it('charges a subscription once, when it starts, not for its events', async () => {
    const schema = buildGatewaySchema();
    const limits = validateConfig({ platforms: PLATFORMS }).limits;
    const SUBSCRIPTION = 'subscription { vmChanged { type powerState vm { name } } }';
    const READ = '{ rateLimit { remaining resetAt } }';
    const [subscriptionCost, readCost] = [SUBSCRIPTION, READ].map((q) =>
      operationCost(schema, parse(q), null, null, limits),
    );
    await freshWindow();
    const { client } = socketClient(gw.url, 'subscriber');
    try {
      const before = (await wsRun(client, READ)).data!['rateLimit'] as { remaining: number; resetAt: string };
      const events: unknown[] = [];
      const dispose = client.subscribe(
        { query: SUBSCRIPTION },
        { next: (e) => void events.push(e), error: () => undefined, complete: () => undefined },
      );
      await sleep(200);
      const vms = await post(gw.url, '{ virtualMachines(first: 5) { nodes { id powerState } } }', {
        token: 'operator',
      });
      const vm = (vms.body.data!['virtualMachines'] as { nodes: { id: string; powerState: string }[] }).nodes[0]!;
      const act = (op: string) =>
        post(gw.url, `mutation($id: ID!) { ${op}(input: { vmId: $id }) { userErrors { code } } }`, {
          token: 'operator',
          variables: { id: vm.id },
        });
      expect((await act(vm.powerState === 'PAUSED' ? 'unpauseVm' : 'pauseVm')).status).toBe(200);
      for (let i = 0; i < 40 && events.length === 0; i++) await sleep(50);
      expect(events.length).toBeGreaterThan(0);
      const after = (await wsRun(client, READ)).data!['rateLimit'] as { remaining: number; resetAt: string };
      dispose();
      expect(after.resetAt).toBe(before.resetAt);
      // The second read, and the subscription's start; no event was charged.
      expect(before.remaining - after.remaining).toBe(readCost! + subscriptionCost!);
    } finally {
      await client.dispose();
    }
  });

  it('gives anonymous callers a budget per source address', async () => {
    await freshWindow();
    const refused = await exhaust(gw.url, { from: '127.0.0.1' });
    expect(refused.status).toBe(429);
    const elsewhere = await post(gw.url, QUERY, { from: '127.0.0.2' });
    expect(elsewhere.status).toBe(200);
    expect(elsewhere.body.extensions!.rateLimit).toMatchObject({ remaining: LIMIT - COST });
    expect((await post(gw.url, QUERY, { from: '127.0.0.1' })).status).toBe(429);
  });
});

describe('the source address of an anonymous caller', () => {
  it('counts an IPv4 address as itself and an IPv6 address by its /64', () => {
    expect(addressKey('192.0.2.7')).toBe('192.0.2.7');
    expect(addressKey('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(addressKey('2001:db8:0:12:a::1')).toBe('2001:db8:0:12::/64');
    expect(addressKey('2001:DB8:0:0012:ffff:ffff:ffff:ffff')).toBe('2001:db8:0:12::/64');
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(addressKey(undefined)).toBe('unknown');
  });
});

describe('rate limits turned off', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({
      auth: authConfig({ enabled: false, pointsPerWindow: 10 }),
      platforms: PLATFORMS,
    });
  });
  afterAll(() => gw?.close());

  it('charge nothing and add no extensions', async () => {
    for (let i = 0; i < 3; i++) {
      const res = await post(gw.url, `{ rateLimit { cost } ${QUERY.slice(1, -1)} }`, { token: 'spender' });
      expect(res.status).toBe(200);
      expect(res.body.data!['rateLimit']).toBeNull();
      expect(res.body.extensions).toBeUndefined();
      expect(res.headers.get('x-ratelimit-remaining')).toBeNull();
    }
  });
});

describe('a budget shared through Redis', () => {
  let redis: RedisServer;
  let one: TestGateway;
  let two: TestGateway;
  beforeAll(async () => {
    redis = await redisServer();
    const config = () => ({
      redis: { url: redis.url, connectTimeoutMs: 2_000 },
      auth: authConfig(RATE_LIMIT),
      platforms: PLATFORMS,
    });
    [one, two] = await Promise.all([startTestGateway(config()), startTestGateway(config())]);
  });
  afterAll(async () => {
    await Promise.all([one?.close(), two?.close()]);
    await redis?.stop();
  });

  it('is spent on one instance and refused on the other, in one key per caller and window', async () => {
    await freshWindow();
    for (let i = 0; i < AFFORDABLE; i++) {
      const res = await post((i % 2 === 0 ? one : two).url, QUERY, { token: 'shared' });
      expect(res.body.extensions!.rateLimit).toMatchObject({ remaining: LIMIT - (i + 1) * COST });
    }
    const refused = await post(two.url, QUERY, { token: 'shared' });
    expect(refused.status).toBe(429);
    expect((await post(one.url, QUERY, { token: 'shared' })).status).toBe(429);
    expect((await post(one.url, QUERY, { token: 'bystander' })).status).toBe(200);

    const window =
      Math.floor(Date.parse(refused.body.errors![0]!.extensions!['resetAt'] as string) / 1000 / WINDOW_SECONDS) - 1;
    const key = `virt-graph:ratelimit:{token:shared}:${window}`;
    expect(await redis.command('GET', key)).toBe(`$3\r\n${AFFORDABLE * COST}\r\n`);
    // The counter goes with its window.
    const ttl = Number(/^:(-?\d+)/.exec(await redis.command('PTTL', key))![1]);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(WINDOW_SECONDS * 1000 + 1_000);
  });

  it('counts in memory while Redis does not answer, says so once, and shares again once it does', async () => {
    await redis.kill();
    try {
      for (let i = 0; i < 3; i++) {
        const res = await post(one.url, QUERY, { token: 'alone' });
        expect(res.status).toBe(200);
        expect(res.body.extensions!.rateLimit).toMatchObject({ cost: COST });
      }
      const warnings = one
        .logs()
        .filter((l) => String(l['msg']).startsWith('Redis did not answer a rate-limit charge'));
      expect(warnings).toHaveLength(1);
    } finally {
      await redis.start();
    }
    for (let i = 0; i < 100; i++) {
      await post(one.url, QUERY, { token: 'alone' });
      if (one.logs().some((l) => l['msg'] === 'rate limits are shared through Redis again')) return;
      await sleep(100);
    }
    throw new Error('never shared through Redis again');
  });
});

import { writeFileSync } from 'node:fs';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { FormattedExecutionResult } from 'graphql';
import { createClient } from 'graphql-ws';
import { type CryptoKey, type JWK, SignJWT, base64url, exportJWK, exportSPKI, generateKeyPair } from 'jose';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { WebSocket } from 'ws';

import { ConfigError } from '../src/config/load.js';
import { authSchema } from '../src/config/schema.js';
import { apiTokenSha256, generateApiToken } from '../src/server/api-tokens.js';
import {
  AuthenticationError,
  type RefusalReason,
  createAuthenticator,
  isLoopbackHost,
} from '../src/server/authentication.js';
import { PROTOCOL } from '../src/server/graphql-transport-ws.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, closedPort, startTestGateway } from './helpers/gateway.js';

// Who is calling, proven on HTTP and WebSocket alike, against a real JWKS
// served over HTTP by the test: every bad credential is refused with
// UNAUTHENTICATED (401, or a WebSocket closed with 4403), never served as
// anonymous and never written to the logs.

const ISSUER = 'https://idp.test';
const AUDIENCE = 'virt-graph';
const PORTAL = 'https://portal.example';

interface SigningKey {
  kid: string;
  alg: 'RS256' | 'ES256';
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  jwk: JWK;
}

async function signingKey(kid: string, alg: SigningKey['alg']): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg);
  return { kid, alg, privateKey, publicKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

const now = () => Math.floor(Date.now() / 1000);

/** A JWT for `alice` in group `ops`, valid for an hour, with `claims` over it (an undefined claim is left out). */
async function jwt(key: SigningKey, claims: Record<string, unknown> = {}): Promise<string> {
  const payload = {
    iss: ISSUER,
    aud: AUDIENCE,
    sub: 'alice',
    groups: ['ops'],
    iat: now(),
    exp: now() + 3600,
    ...claims,
  };
  const defined = Object.fromEntries(Object.entries(payload).filter(([, v]) => v !== undefined));
  return new SignJWT(defined).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' }).sign(key.privateKey);
}

const segment = (value: unknown) => base64url.encode(JSON.stringify(value));

/** A JWKS endpoint over real HTTP: the keys it serves can be changed, and it counts its fetches. */
class JwksServer {
  fetches = 0;
  private constructor(
    private readonly server: Server,
    public keys: JWK[],
  ) {}

  static async start(keys: JWK[]): Promise<JwksServer> {
    const server = createServer();
    const jwks = new JwksServer(server, keys);
    server.on('request', (_req, res) => {
      jwks.fetches += 1;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: jwks.keys }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    return jwks;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/jwks`;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

interface HttpOutcome {
  status: number;
  challenge: string | null;
  body: FormattedExecutionResult<Record<string, unknown>>;
}

async function post(
  url: string,
  query: string,
  authorization?: string,
  variables?: Record<string, unknown>,
): Promise<HttpOutcome> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(authorization === undefined ? {} : { authorization }) },
    body: JSON.stringify({ query, variables }),
  });
  return {
    status: res.status,
    challenge: res.headers.get('www-authenticate'),
    body: (await res.json()) as HttpOutcome['body'],
  };
}

interface WsOutcome {
  result?: FormattedExecutionResult<Record<string, unknown>>;
  close?: { code: number; reason: string };
}

const isCloseEvent = (e: unknown): e is { code: number; reason: string } =>
  typeof e === 'object' && e !== null && 'code' in e && 'reason' in e;

/** One operation over a real graphql-ws client, with `connectionParams` in its connection_init. */
async function wsRun(url: string, query: string, connectionParams?: Record<string, unknown>): Promise<WsOutcome> {
  const client = createClient({
    url: url.replace(/^http/, 'ws'),
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    lazy: true,
    connectionParams,
  });
  try {
    return await new Promise<WsOutcome>((resolve, reject) => {
      let result: WsOutcome['result'];
      client.subscribe<Record<string, unknown>, Record<string, unknown>>(
        { query },
        {
          next: (value) => (result = value),
          error: (e) => {
            if (isCloseEvent(e)) resolve({ close: { code: e.code, reason: e.reason } });
            else if (Array.isArray(e)) resolve({ result: { errors: e } });
            else reject(e instanceof Error ? e : new Error(JSON.stringify(e)));
          },
          complete: () => resolve({ result }),
        },
      );
    });
  } finally {
    await client.dispose();
  }
}

/** A raw WebSocket upgrade with an Origin header: the HTTP status when refused, the open socket when not. */
function upgrade(url: string, origin?: string): Promise<{ status: number } | { socket: WebSocket }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url.replace(/^http/, 'ws'), PROTOCOL, origin ? { origin } : {});
    socket.once('unexpected-response', (req, res) => {
      resolve({ status: res.statusCode ?? 0 });
      req.destroy();
    });
    socket.once('open', () => resolve({ socket }));
    socket.once('error', reject);
  });
}

/** Sends connection_init on an open socket: true when acknowledged. */
function initialise(socket: WebSocket, payload: Record<string, unknown>): Promise<boolean> {
  return new Promise((resolve) => {
    socket.once('message', (data) =>
      resolve((JSON.parse(data.toString()) as { type: string }).type === 'connection_ack'),
    );
    socket.once('close', () => resolve(false));
    socket.send(JSON.stringify({ type: 'connection_init', payload }));
  });
}

const PLATFORMS = [{ id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 3 }).uri }];
const QUERY = '{ platforms { id } }';
const apiToken = generateApiToken();

function jwtConfig(jwksUrl: string) {
  // No clock tolerance: the expiry test closes its WebSocket at the token's exp.
  return { jwksUrl, issuer: ISSUER, audience: AUDIENCE, algorithms: ['RS256'], clockToleranceSeconds: 0 };
}
const BINDINGS = [{ subjects: ['user:alice', 'user:bob', 'token:ci'], roles: ['admin', 'auditor'], tenants: ['*'] }];

let keyA: SigningKey;
let keyB: SigningKey;
let keyE: SigningKey;
let stranger: SigningKey;
let jwks: JwksServer;
let gw: TestGateway;

beforeAll(async () => {
  [keyA, keyB, keyE, stranger] = await Promise.all([
    signingKey('a', 'RS256'),
    signingKey('b', 'RS256'),
    signingKey('e', 'ES256'),
    signingKey('a', 'RS256'), // the same kid as keyA, another key: a forger's
  ]);
  // The issuer publishes an ES256 key too; the gateway accepts only RS256.
  jwks = await JwksServer.start([keyA.jwk, keyE.jwk]);
  gw = await startTestGateway({
    server: { corsOrigins: [PORTAL] },
    auth: {
      jwt: jwtConfig(jwks.url),
      apiTokens: [{ name: 'ci', sha256: apiTokenSha256(apiToken) }],
      bindings: BINDINGS,
    },
    platforms: PLATFORMS,
  });
});
afterAll(async () => {
  await gw?.close();
  await jwks?.stop();
});

/** The caller the audit log names for a mutation made with `authorization` (over HTTP or WebSocket). */
async function auditedCaller(via: 'http' | 'websocket', authorization: string, key: string): Promise<string[]> {
  const vms = await post(gw.url, '{ virtualMachines(first: 10) { nodes { id powerState } } }', authorization);
  const running = (vms.body.data!['virtualMachines'] as { nodes: { id: string; powerState: string }[] }).nodes.find(
    (v) => v.powerState === 'ON',
  )!;
  // Unpausing a running VM is refused (WRONG_STATE) and changes nothing, but is audited with its caller.
  const mutation = `mutation { unpauseVm(input: { vmId: "${running.id}", clientMutationId: "${key}" }) { userErrors { code } } }`;
  if (via === 'http') expect((await post(gw.url, mutation, authorization)).status).toBe(200);
  else expect((await wsRun(gw.url, mutation, { authorization })).result?.data).toBeDefined();
  const audit = await post(
    gw.url,
    'query($t: ID!) { auditLog(first: 50, filter: { targetIds: [$t] }) { nodes { caller input } } }',
    authorization,
    { t: running.id },
  );
  const nodes = (audit.body.data!['auditLog'] as { nodes: { caller: string; input: string }[] }).nodes;
  return nodes
    .filter((n) => (JSON.parse(n.input) as { clientMutationId?: string }).clientMutationId === key)
    .map((n) => n.caller);
}

describe('bad credentials', () => {
  // What is sent, and the reason the log gives for refusing it.
  const BAD: [string, () => Promise<string>, RefusalReason][] = [
    ['an expired JWT', async () => `Bearer ${await jwt(keyA, { iat: now() - 7200, exp: now() - 3600 })}`, 'expired'],
    ['a JWT not valid yet', async () => `Bearer ${await jwt(keyA, { nbf: now() + 3600 })}`, 'not-yet-valid'],
    ['a JWT of another issuer', async () => `Bearer ${await jwt(keyA, { iss: 'https://evil.test' })}`, 'issuer'],
    ['a JWT for another audience', async () => `Bearer ${await jwt(keyA, { aud: 'another-api' })}`, 'audience'],
    ['a JWT without exp', async () => `Bearer ${await jwt(keyA, { exp: undefined })}`, 'claims'],
    [
      'an unsigned JWT (alg none)',
      async () =>
        `Bearer ${segment({ alg: 'none', typ: 'JWT' })}.${segment({ iss: ISSUER, aud: AUDIENCE, sub: 'alice', exp: now() + 3600 })}.`,
      'algorithm',
    ],
    [
      'a JWT whose payload was changed after signing',
      async () => {
        const [header, , signature] = (await jwt(keyA, { sub: 'mallory' })).split('.');
        const forged = segment({ iss: ISSUER, aud: AUDIENCE, sub: 'alice', groups: ['admins'], exp: now() + 3600 });
        return `Bearer ${header}.${forged}.${signature}`;
      },
      'signature',
    ],
    [
      'a JWT signed by a key the issuer does not publish, under its kid',
      async () => `Bearer ${await jwt(stranger)}`,
      'signature',
    ],
    [
      'a JWT with a kid the issuer does not publish',
      async () => `Bearer ${await jwt({ ...stranger, kid: 'nobody' })}`,
      'unknown-key',
    ],
    ['a JWT signed with an algorithm not accepted (ES256)', async () => `Bearer ${await jwt(keyE)}`, 'algorithm'],
    [
      'a JWT signed with HS256 and the public key as secret',
      async () => {
        const secret = new TextEncoder().encode(await exportSPKI(keyA.publicKey));
        const token = await new SignJWT({ iss: ISSUER, aud: AUDIENCE, sub: 'alice', exp: now() + 3600 })
          .setProtectedHeader({ alg: 'HS256', kid: 'a' })
          .sign(secret);
        return `Bearer ${token}`;
      },
      'algorithm',
    ],
    ['garbage after Bearer', async () => 'Bearer garbage', 'malformed'],
    ['another scheme (Basic)', async () => `Basic ${Buffer.from('admin:admin').toString('base64')}`, 'malformed'],
    ['an empty Authorization value', async () => '', 'malformed'],
    ['an unknown API token', async () => `Bearer ${generateApiToken()}`, 'unknown-api-token'],
  ];

  it.each(BAD)(
    'refuses %s with UNAUTHENTICATED on HTTP and WebSocket, and logs no token',
    async (_what, make, reason) => {
      const authorization = await make();
      const http = await post(gw.url, QUERY, authorization);
      expect(http.status).toBe(401);
      expect(http.challenge).toMatch(/^Bearer realm="virt-graph", error="invalid_(token|request)"$/);
      expect(http.body.data).toBeUndefined();
      expect(http.body.errors).toMatchObject([{ extensions: { code: 'UNAUTHENTICATED' } }]);

      const ws = await wsRun(gw.url, QUERY, { authorization });
      expect(ws.result).toBeUndefined();
      expect(ws.close?.code).toBe(4403);
      expect(ws.close?.reason).toBe(`Forbidden: ${http.body.errors![0]!.message}`);

      const logs = JSON.stringify(gw.logs());
      const token = authorization.replace(/^\S+ /, '');
      if (token.length > 8) {
        expect(logs).not.toContain(token);
        for (const part of token.split('.').filter((p) => p.length > 8)) expect(logs).not.toContain(part);
      }
      const refusals = gw.logs().filter((l) => l['msg'] === 'authentication refused');
      expect(refusals.slice(-2).map((l) => [l['transport'], l['reason']])).toEqual([
        ['http', reason],
        ['websocket', reason],
      ]);
    },
  );

  it('runs nothing for a refused caller: its mutation is never executed nor audited', async () => {
    const before = await post(gw.url, '{ auditLog(first: 0) { totalCount } }', `Bearer ${await jwt(keyA)}`);
    const expired = `Bearer ${await jwt(keyA, { exp: now() - 60 })}`;
    const vms = await post(gw.url, '{ virtualMachines(first: 1) { nodes { id } } }', `Bearer ${await jwt(keyA)}`);
    const id = (vms.body.data!['virtualMachines'] as { nodes: { id: string }[] }).nodes[0]!.id;
    const res = await post(
      gw.url,
      `mutation { stopVm(input: { vmId: "${id}", force: true }) { task { id } } }`,
      expired,
    );
    expect(res.status).toBe(401);
    const after = await post(gw.url, '{ auditLog(first: 0) { totalCount } }', `Bearer ${await jwt(keyA)}`);
    expect(after.body.data).toEqual(before.body.data);
  });

  it('refuses a request without a credential when anonymous callers are not configured', async () => {
    const http = await post(gw.url, QUERY);
    expect(http.status).toBe(401);
    expect(http.challenge).toBe('Bearer realm="virt-graph"');
    expect(http.body.errors).toMatchObject([{ extensions: { code: 'UNAUTHENTICATED' } }]);
    expect((await wsRun(gw.url, QUERY)).close?.code).toBe(4403);
  });
});

describe('good credentials', () => {
  it('serves a valid JWT as user:<sub>, on HTTP and on WebSocket', async () => {
    const alice = `Bearer ${await jwt(keyA)}`;
    const http = await post(gw.url, QUERY, alice);
    expect(http.status).toBe(200);
    expect(http.body).toEqual({
      data: { platforms: [{ id: expect.any(String) }] },
      extensions: { rateLimit: expect.any(Object) },
    });
    expect(await auditedCaller('http', alice, 'jwt-http')).toEqual(['user:alice']);
    // Each connection keeps its own caller for every operation on it.
    expect(await auditedCaller('websocket', `Bearer ${await jwt(keyA, { sub: 'bob' })}`, 'jwt-ws')).toEqual([
      'user:bob',
    ]);
  });

  it('serves a configured API token as token:<name>, also under connection_init "Authorization"', async () => {
    expect(await auditedCaller('http', `Bearer ${apiToken}`, 'token-http')).toEqual(['token:ci']);
    const ws = await wsRun(gw.url, QUERY, { Authorization: `Bearer ${apiToken}` });
    expect(ws.result).toEqual({
      data: { platforms: [{ id: expect.any(String) }] },
      extensions: { rateLimit: expect.any(Object) },
    });
    expect(JSON.stringify(gw.logs())).not.toContain(apiToken);
  });

  it("reads the user's groups and expiry from the token", async () => {
    const auth = await createAuthenticator(
      authSchema.parse({ jwt: { ...jwtConfig(jwks.url), groupsClaim: 'roles' } }),
      pino({ level: 'silent' }),
    );
    const exp = now() + 600;
    expect(
      await auth.authenticate({ authorization: `Bearer ${await jwt(keyA, { roles: ['ops', 'dev'], exp })}` }),
    ).toEqual({
      id: 'user:alice',
      kind: 'user',
      groups: ['ops', 'dev'],
      expiresAt: exp * 1000,
    });
    // A groups claim that is not a list of strings grants no group.
    const odd = await auth.authenticate({ authorization: `Bearer ${await jwt(keyA, { roles: 'ops' })}` });
    expect(odd.groups).toEqual([]);
    const missing = auth.authenticate({ authorization: `Bearer ${await jwt(keyA, { sub: undefined })}` });
    await expect(missing).rejects.toMatchObject({ reason: 'claims', extensions: { code: 'UNAUTHENTICATED' } });
  });

  it('verifies against a static public key file, accepting only algorithms that fit the key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virt-graph-key-'));
    const file = join(dir, 'issuer.pem');
    writeFileSync(file, await exportSPKI(keyA.publicKey));
    const config = (publicKeyFile: string) =>
      authSchema.parse({ jwt: { publicKeyFile, issuer: ISSUER, audience: AUDIENCE, algorithms: ['RS256', 'ES256'] } });
    const auth = await createAuthenticator(config(file), pino({ level: 'silent' }));
    expect((await auth.authenticate({ authorization: `Bearer ${await jwt(keyA)}` })).id).toBe('user:alice');
    await expect(auth.authenticate({ authorization: `Bearer ${await jwt(keyE)}` })).rejects.toBeInstanceOf(
      AuthenticationError,
    );
    await expect(auth.authenticate({ authorization: `Bearer ${await jwt(stranger)}` })).rejects.toMatchObject({
      reason: 'signature',
    });
    writeFileSync(join(dir, 'junk.pem'), 'not a key');
    await expect(createAuthenticator(config(join(dir, 'junk.pem')), pino({ level: 'silent' }))).rejects.toThrow(
      ConfigError,
    );
  });
});

describe('anonymous callers', () => {
  let anon: TestGateway;
  beforeAll(async () => {
    anon = await startTestGateway({
      auth: { anonymous: { roles: ['viewer'] }, jwt: jwtConfig(jwks.url), bindings: BINDINGS },
      platforms: PLATFORMS,
    });
  });
  afterAll(() => anon?.close());

  it('serves a request without a credential as anonymous where configured', async () => {
    expect((await post(anon.url, QUERY)).body).toEqual({
      data: { platforms: [{ id: expect.any(String) }] },
      extensions: { rateLimit: expect.any(Object) },
    });
    expect((await wsRun(anon.url, QUERY)).result).toEqual({
      data: { platforms: [{ id: expect.any(String) }] },
      extensions: { rateLimit: expect.any(Object) },
    });
  });

  it('still refuses a bad credential: never downgraded to anonymous', async () => {
    const expired = `Bearer ${await jwt(keyA, { exp: now() - 60 })}`;
    expect((await post(anon.url, QUERY, expired)).status).toBe(401);
    expect((await post(anon.url, QUERY, 'Bearer garbage')).status).toBe(401);
    expect((await wsRun(anon.url, QUERY, { authorization: expired })).close?.code).toBe(4403);
    expect((await wsRun(anon.url, QUERY, { authorization: 42 })).close?.code).toBe(4403);
  });
});

describe('the issuer keys (JWKS)', () => {
  it('fetches the JWKS again for an unknown kid once the cooldown has passed, and drops withdrawn keys', async () => {
    const rotating = await JwksServer.start([keyA.jwk]);
    const gateway = await startTestGateway({
      auth: { jwt: jwtConfig(rotating.url), bindings: BINDINGS },
      platforms: PLATFORMS,
    });
    try {
      expect((await post(gateway.url, QUERY, `Bearer ${await jwt(keyA)}`)).status).toBe(200);
      const fetched = rotating.fetches;
      expect(fetched).toBeGreaterThanOrEqual(1);
      rotating.keys = [keyB.jwk];
      // Just after a fetch an unknown kid does not send the gateway to the issuer again (tokens with made-up kids).
      expect((await post(gateway.url, QUERY, `Bearer ${await jwt(keyB)}`)).status).toBe(401);
      expect(rotating.fetches).toBe(fetched);
      vi.useFakeTimers({ toFake: ['Date'], shouldAdvanceTime: true });
      try {
        vi.setSystemTime(Date.now() + 31_000);
        expect((await post(gateway.url, QUERY, `Bearer ${await jwt(keyB)}`)).status).toBe(200);
        expect(rotating.fetches).toBe(fetched + 1);
        // The issuer withdrew key a: tokens it signed are refused now.
        expect((await post(gateway.url, QUERY, `Bearer ${await jwt(keyA)}`)).status).toBe(401);
      } finally {
        vi.useRealTimers();
      }
    } finally {
      await gateway.close();
      await rotating.stop();
    }
  });

  it('keeps verifying with keys fetched before when the JWKS endpoint goes down', async () => {
    const failing = await JwksServer.start([keyA.jwk]);
    const gateway = await startTestGateway({
      auth: { jwt: jwtConfig(failing.url), bindings: BINDINGS },
      platforms: PLATFORMS,
    });
    try {
      expect((await post(gateway.url, QUERY, `Bearer ${await jwt(keyA)}`)).status).toBe(200);
      await failing.stop();
      expect((await post(gateway.url, QUERY, `Bearer ${await jwt(keyA)}`)).status).toBe(200);
      expect((await wsRun(gateway.url, QUERY, { authorization: `Bearer ${await jwt(keyA)}` })).result?.data).toEqual({
        platforms: [{ id: expect.any(String) }],
      });
    } finally {
      await gateway.close();
    }
  });

  it('refuses with a clear UNAUTHENTICATED (not a 500) when the JWKS was never fetched and cannot be', async () => {
    const down = `http://127.0.0.1:${await closedPort()}/jwks`;
    const gateway = await startTestGateway({
      auth: { jwt: jwtConfig(down), bindings: BINDINGS },
      platforms: PLATFORMS,
    });
    try {
      const token = `Bearer ${await jwt(keyA)}`;
      const http = await post(gateway.url, QUERY, token);
      expect(http.status).toBe(401);
      expect(http.body.errors).toEqual([
        {
          message: "The gateway could not fetch its token issuer's signing keys (JWKS); try again later.",
          extensions: { code: 'UNAUTHENTICATED' },
        },
      ]);
      const ws = await wsRun(gateway.url, QUERY, { authorization: token });
      expect(ws.close).toEqual({ code: 4403, reason: `Forbidden: ${http.body.errors![0]!.message}` });
      expect(gateway.logs().some((l) => l['level'] === 40 && l['jwksUrl'] === down)).toBe(true);
    } finally {
      await gateway.close();
    }
  });
});

describe('WebSocket origins and lifetime', () => {
  const token = async () => `Bearer ${await jwt(keyA)}`;

  it('refuses the upgrade from a foreign browser origin with 403', async () => {
    expect(await upgrade(gw.url, 'https://evil.example')).toEqual({ status: 403 });
    expect(await upgrade(gw.url, 'null')).toEqual({ status: 403 });
  });

  it.each([
    ['a listed origin', PORTAL],
    ['no Origin (not a browser)', undefined],
    ["the gateway's own origin", 'self'],
  ])('accepts %s', async (_what, origin) => {
    const opened = await upgrade(gw.url, origin === 'self' ? new URL(gw.url).origin : origin);
    if (!('socket' in opened)) throw new Error(`refused with ${opened.status}`);
    expect(await initialise(opened.socket, { authorization: await token() })).toBe(true);
    opened.socket.close();
  });

  it('closes a connection with 4403 when its token expires', async () => {
    const exp = now() + 2;
    const client = createClient({
      url: gw.url.replace(/^http/, 'ws'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      connectionParams: { authorization: `Bearer ${await jwt(keyA, { exp })}` },
    });
    let acknowledged = false;
    client.on('connected', () => (acknowledged = true));
    try {
      const closed = await new Promise<{ code: number; reason: string }>((resolve, reject) => {
        client.subscribe(
          { query: 'subscription { platformStatusChanged { type } }' },
          {
            next: () => undefined,
            error: (e) => (isCloseEvent(e) ? resolve(e) : reject(new Error(JSON.stringify(e)))),
            complete: () => reject(new Error('completed instead of being closed')),
          },
        );
      });
      expect(acknowledged).toBe(true);
      expect({ code: closed.code, reason: closed.reason }).toEqual({ code: 4403, reason: 'Forbidden: token expired' });
      expect(Date.now()).toBeGreaterThanOrEqual(exp * 1000);
      expect(Date.now()).toBeLessThan(exp * 1000 + 2_000);
    } finally {
      await client.dispose();
    }
  });
});

describe('listening on the network', () => {
  it('refuses to start on a non-loopback address when anonymous callers may change VMs', async () => {
    // Without an auth section anonymous callers are admins.
    await expect(startTestGateway({ server: { host: '0.0.0.0' }, platforms: PLATFORMS })).rejects.toThrow(ConfigError);
    await expect(
      startTestGateway({
        server: { host: '0.0.0.0' },
        auth: { anonymous: { roles: ['operator'] } },
        platforms: PLATFORMS,
      }),
    ).rejects.toThrow(/anonymous callers have the operator role.*allowAnonymousWriteOnNetwork: true/);
  });

  it('starts there when anonymous callers may only read, or when told so explicitly', async () => {
    for (const auth of [
      { anonymous: { roles: ['viewer'] } },
      { anonymous: { roles: ['admin'] }, allowAnonymousWriteOnNetwork: true },
    ]) {
      const gateway = await startTestGateway({ server: { host: '0.0.0.0' }, auth, platforms: PLATFORMS });
      await gateway.close();
    }
  });

  it('tells loopback addresses from others', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1'])
      expect(isLoopbackHost(host), host).toBe(true);
    for (const host of ['0.0.0.0', '::', '10.0.0.1', 'gateway.example', '128.0.0.1'])
      expect(isLoopbackHost(host), host).toBe(false);
  });
});

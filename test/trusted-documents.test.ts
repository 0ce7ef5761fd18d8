import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { type SubscribePayload, createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';

import { ConfigError } from '../src/config/load.js';
import { apiTokenSha256, generateApiToken } from '../src/server/api-tokens.js';
import { documentHash, readManifest } from '../src/server/trusted-documents.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { subscribe } from './helpers/subscriptions.js';

// Trusted documents: a gateway that runs only the operations of a manifest,
// named by SHA-256 (documentId, or Apollo's persistedQuery extension) or
// sent as registered text, on HTTP (POST and GET) and WebSocket alike; with
// authentication, authorization, cost limits and rate limits applying to
// them as to any document. Real HTTP, a real graphql-ws client, libvirt's
// test driver.

const PLATFORMS = [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }];

const PLATFORMS_DOC = 'query Platforms { platforms { id name } }';
const VMS_DOC =
  'query Vms($first: Int!) { virtualMachines(first: $first) { totalCount edges { node { id name powerState } } } }';
const STOP_DOC =
  'mutation Stop($vmId: ID!) { stopVm(input: { vmId: $vmId, force: true }) { userErrors { code } task { id } } }';
const CHANGES_DOC = 'subscription Changes { vmChanged { type powerState vm { name } } }';
const COSTLY_DOC = 'query Costly { virtualMachines(first: 1000) { edges { node { name host { name } } } } }';
const UNREGISTERED = '{ platforms { name kind } }';

const id = (doc: string) => `sha256:${documentHash(doc)}`;

const dir = mkdtempSync(join(tmpdir(), 'virt-graph-trusted-'));
/** Writes a manifest file (GraphQL Code Generator's client-preset format unless given an object) and returns its path. */
function manifest(name: string, content: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  return file;
}
/** GraphQL Code Generator's persisted-documents.json: plain hex keys. */
const codegen = (docs: string[]) => Object.fromEntries(docs.map((d) => [documentHash(d), d]));

interface Answer {
  status: number;
  body: {
    data?: Record<string, unknown> | null;
    errors?: { message: string; extensions?: { code?: string } }[];
    extensions?: { rateLimit?: { cost: number; remaining: number } };
  };
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Answer['body'] };
}

/** A GET as a browser client sends one: Apollo's CSRF prevention wants a header that forces a preflight. */
async function get(url: string, params: Record<string, string>): Promise<Answer> {
  const res = await fetch(`${url}?${new URLSearchParams(params)}`, { headers: { 'apollo-require-preflight': 'true' } });
  return { status: res.status, body: (await res.json()) as Answer['body'] };
}

/** One operation over a real graphql-ws client; the payload may carry `documentId` (graphql-ws sends it as it is). */
async function ws(url: string, payload: SubscribePayload & { documentId?: string }): Promise<Answer['body']> {
  const client = createClient({ url: url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, retryAttempts: 0 });
  try {
    return await new Promise((resolve, reject) => {
      let result: Answer['body'] = {};
      client.subscribe(payload, {
        next: (value) => (result = value as Answer['body']),
        error: (errors) =>
          Array.isArray(errors)
            ? resolve({ errors: errors as Answer['body']['errors'] })
            : reject(errors instanceof Error ? errors : new Error(JSON.stringify(errors))),
        complete: () => resolve(result),
      });
    });
  } finally {
    await client.dispose();
  }
}

const codeOf = (body: Answer['body']) => body.errors?.[0]?.extensions?.code;

type VmChanged = { vmChanged: { type: string; powerState: string } };

/** A subscription named by documentId over a real graphql-ws client: its first event, and a way to end it. */
function subscribeById(url: string, documentId: string): { first: Promise<VmChanged>; close(): Promise<void> } {
  const client = createClient({ url: url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, retryAttempts: 0 });
  let dispose = () => {};
  const first = new Promise<VmChanged>((resolve, reject) => {
    const payload: SubscribePayload & { documentId: string } = { query: '', documentId };
    dispose = client.subscribe<VmChanged>(payload, {
      next: (value) => (value.data ? resolve(value.data) : reject(new Error(JSON.stringify(value.errors)))),
      error: (e) => reject(e instanceof Error ? e : new Error(JSON.stringify(e))),
      complete: () => reject(new Error('completed before any event')),
    });
  });
  return {
    first,
    async close() {
      dispose();
      await client.dispose();
    },
  };
}

describe('trusted documents, enforced', () => {
  const viewerToken = generateApiToken();
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({
      server: {
        trustedDocuments: {
          manifestFile: manifest('enforced.json', codegen([PLATFORMS_DOC, VMS_DOC, STOP_DOC, CHANGES_DOC])),
        },
      },
      // Anonymous callers are admins (loopback); the API token is a viewer's.
      auth: {
        anonymous: { roles: ['admin'] },
        apiTokens: [{ name: 'viewer-bot', sha256: apiTokenSha256(viewerToken) }],
        bindings: [{ subjects: ['token:viewer-bot'], roles: ['viewer'], tenants: ['*'] }],
      },
      platforms: PLATFORMS,
    });
  });
  afterAll(() => gw?.close());

  it('runs a registered document named by documentId, with or without the sha256: prefix', async () => {
    const prefixed = await post(gw.url, { documentId: id(PLATFORMS_DOC) });
    expect(prefixed.status).toBe(200);
    expect(prefixed.body.data).toEqual({ platforms: [{ id: expect.any(String), name: expect.any(String) }] });
    const bare = await post(gw.url, {
      documentId: documentHash(VMS_DOC),
      variables: { first: 1 },
      operationName: 'Vms',
    });
    expect(bare.status).toBe(200);
    expect(bare.body.data).toMatchObject({ virtualMachines: { totalCount: 1, edges: [{ node: { name: 'test' } }] } });
  });

  it("runs one named by Apollo's persistedQuery extension", async () => {
    const res = await post(gw.url, {
      variables: { first: 1 },
      extensions: { persistedQuery: { version: 1, sha256Hash: documentHash(VMS_DOC) } },
    });
    expect(res.status).toBe(200);
    expect(res.body.data).toMatchObject({ virtualMachines: { totalCount: 1 } });
  });

  it('runs registered text, alone or sent with its id; refuses text that is not the document its id names', async () => {
    expect((await post(gw.url, { query: PLATFORMS_DOC })).body.data).toBeTruthy();
    expect((await post(gw.url, { query: PLATFORMS_DOC, documentId: id(PLATFORMS_DOC) })).body.data).toBeTruthy();
    const mismatch = await post(gw.url, { query: UNREGISTERED, documentId: id(PLATFORMS_DOC) });
    expect(mismatch.status).toBe(400);
    expect(codeOf(mismatch.body)).toBe('BAD_REQUEST');
  });

  it('refuses an unknown id with PERSISTED_QUERY_NOT_FOUND (400), and a malformed one', async () => {
    const unknown = await post(gw.url, { documentId: id('query Other { platforms { id } }') });
    expect(unknown.status).toBe(400);
    expect(codeOf(unknown.body)).toBe('PERSISTED_QUERY_NOT_FOUND');
    expect(unknown.body.errors?.[0]?.message).toMatch(/No document sha256:[0-9a-f]{64} is registered/);
    const apollo = await post(gw.url, { extensions: { persistedQuery: { version: 1, sha256Hash: 'f'.repeat(64) } } });
    expect(apollo.status).toBe(400);
    expect(codeOf(apollo.body)).toBe('PERSISTED_QUERY_NOT_FOUND');
    const malformed = await post(gw.url, { documentId: 'md5:abc' });
    expect(malformed.status).toBe(400);
    expect(codeOf(malformed.body)).toBe('PERSISTED_QUERY_NOT_FOUND');
  });

  it('refuses unregistered text with OPERATION_NOT_TRUSTED (403) before parsing it, and logs its hash', async () => {
    const res = await post(gw.url, { query: UNREGISTERED });
    expect(res.status).toBe(403);
    expect(codeOf(res.body)).toBe('OPERATION_NOT_TRUSTED');
    expect(res.body.data).toBeUndefined();
    // Not even parsed: garbage is refused as untrusted, not as a syntax error.
    const garbage = await post(gw.url, { query: '{{{ not graphql' });
    expect(garbage.status).toBe(403);
    expect(codeOf(garbage.body)).toBe('OPERATION_NOT_TRUSTED');
    const logged = gw.logs().filter((l) => l['documentHash'] === documentHash(UNREGISTERED));
    expect(logged).toEqual([expect.objectContaining({ level: 40, transport: 'http' })]);
    expect(JSON.stringify(gw.logs())).not.toContain('kind }');
  });

  it('resolves GET requests the same way', async () => {
    const ok = await get(gw.url, { documentId: id(VMS_DOC), variables: JSON.stringify({ first: 1 }) });
    expect(ok.status).toBe(200);
    expect(ok.body.data).toMatchObject({ virtualMachines: { totalCount: 1 } });
    const apollo = await get(gw.url, {
      extensions: JSON.stringify({ persistedQuery: { version: 1, sha256Hash: documentHash(PLATFORMS_DOC) } }),
    });
    expect(apollo.status).toBe(200);
    expect(apollo.body.data).toMatchObject({ platforms: expect.any(Array) });
    const untrusted = await get(gw.url, { query: UNREGISTERED });
    expect(untrusted.status).toBe(403);
    expect(codeOf(untrusted.body)).toBe('OPERATION_NOT_TRUSTED');
    // Twice: which one would be checked and which one run must not be a question.
    const twice = await fetch(`${gw.url}?documentId=${id(PLATFORMS_DOC)}&documentId=${id(UNREGISTERED)}`, {
      headers: { 'apollo-require-preflight': 'true' },
    });
    expect(twice.status).toBe(400);
  });

  it('resolves WebSocket operations the same way', async () => {
    const byId = await ws(gw.url, { query: '', documentId: id(VMS_DOC), variables: { first: 1 } });
    expect(byId.data).toMatchObject({ virtualMachines: { totalCount: 1 } });
    const byApolloHash = await ws(gw.url, {
      query: '',
      extensions: { persistedQuery: { version: 1, sha256Hash: documentHash(PLATFORMS_DOC) } },
    });
    expect(byApolloHash.data).toMatchObject({ platforms: expect.any(Array) });
    expect((await ws(gw.url, { query: PLATFORMS_DOC })).data).toMatchObject({ platforms: expect.any(Array) });
    expect(codeOf(await ws(gw.url, { query: UNREGISTERED }))).toBe('OPERATION_NOT_TRUSTED');
    expect(codeOf(await ws(gw.url, { query: '', documentId: id(UNREGISTERED) }))).toBe('PERSISTED_QUERY_NOT_FOUND');
  });

  it('still authenticates and authorizes: a bad token is refused, a viewer may not stop a VM, an admin may', async () => {
    const forged = await post(gw.url, { documentId: id(PLATFORMS_DOC) }, { authorization: 'Bearer vgt_forged' });
    expect(forged.status).toBe(401);
    expect(codeOf(forged.body)).toBe('UNAUTHENTICATED');

    const vms = await post(gw.url, { documentId: id(VMS_DOC), variables: { first: 1 } });
    const vm = (vms.body.data as { virtualMachines: { edges: { node: { id: string } }[] } }).virtualMachines.edges[0]!;
    // The registered subscription twice: sent as its text, and named by documentId.
    const byText = subscribe<VmChanged>(gw.url, CHANGES_DOC);
    const byId = subscribeById(gw.url, id(CHANGES_DOC));
    // Let the subscriptions start before the change they wait for.
    await new Promise((r) => setTimeout(r, 200));

    const viewer = await post(
      gw.url,
      { documentId: id(STOP_DOC), variables: { vmId: vm.node.id } },
      { authorization: `Bearer ${viewerToken}` },
    );
    expect(viewer.body.data).toEqual({ stopVm: { userErrors: [{ code: 'FORBIDDEN' }], task: null } });

    const admin = await post(gw.url, { documentId: id(STOP_DOC), variables: { vmId: vm.node.id } });
    expect(admin.body.data).toEqual({ stopVm: { userErrors: [], task: { id: expect.any(String) } } });
    const [event] = await byText.until(1);
    expect(event!.vmChanged).toMatchObject({ type: 'MODIFIED', powerState: 'OFF' });
    await byText.close();
    expect((await byId.first).vmChanged).toMatchObject({ type: 'MODIFIED', powerState: 'OFF' });
    await byId.close();
  });
});

describe('trusted documents under cost and rate limits', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({
      server: { trustedDocuments: { manifestFile: manifest('limits.json', codegen([PLATFORMS_DOC, COSTLY_DOC])) } },
      limits: { maxCost: 1000 },
      // A window of an hour: the budget cannot refill while the test spends it.
      auth: { anonymous: { roles: ['viewer'] }, rateLimit: { pointsPerWindow: 100, windowSeconds: 3600 } },
      platforms: PLATFORMS,
    });
  });
  afterAll(() => gw?.close());

  it('refuses a registered document over limits.maxCost, on HTTP and WebSocket', async () => {
    expect(codeOf((await post(gw.url, { documentId: id(COSTLY_DOC) })).body)).toBe('QUERY_TOO_COSTLY');
    expect(codeOf(await ws(gw.url, { query: '', documentId: id(COSTLY_DOC) }))).toBe('QUERY_TOO_COSTLY');
  });

  it("charges a registered document to the caller's budget until it is spent", async () => {
    const first = await post(gw.url, { documentId: id(PLATFORMS_DOC) });
    expect(first.body.extensions?.rateLimit?.cost).toBeGreaterThan(0);
    let last = first;
    for (let i = 0; i < 100 && last.status !== 429; i++) last = await post(gw.url, { documentId: id(PLATFORMS_DOC) });
    expect(last.status).toBe(429);
    expect(codeOf(last.body)).toBe('RATE_LIMITED');
  });
});

describe('trusted documents, not enforced (rolling out)', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    // Apollo's manifest format this time.
    const apolloManifest = {
      format: 'apollo-persisted-query-manifest',
      version: 1,
      operations: [{ id: documentHash(PLATFORMS_DOC), body: PLATFORMS_DOC, name: 'Platforms', type: 'query' }],
    };
    gw = await startTestGateway({
      server: { trustedDocuments: { manifestFile: manifest('apollo.json', apolloManifest), enforce: false } },
      platforms: PLATFORMS,
    });
  });
  afterAll(() => gw?.close());

  it('runs registered documents by hash', async () => {
    const res = await post(gw.url, { documentId: id(PLATFORMS_DOC) });
    expect(res.body.data).toMatchObject({ platforms: expect.any(Array) });
  });

  it('runs unregistered text, and logs a warning once per document', async () => {
    const doc = 'query Rollout { platforms { name } }';
    for (let i = 0; i < 3; i++) {
      const res = await post(gw.url, { query: doc, operationName: 'Rollout' });
      expect(res.status).toBe(200);
      expect(res.body.data).toMatchObject({ platforms: expect.any(Array) });
    }
    expect(await ws(gw.url, { query: doc })).toMatchObject({ data: { platforms: expect.any(Array) } });
    const warnings = gw.logs().filter((l) => l['documentHash'] === documentHash(doc));
    expect(warnings).toEqual([
      expect.objectContaining({
        level: 40,
        operationName: 'Rollout',
        msg: 'unregistered document served (server.trustedDocuments.enforce is false)',
      }),
    ]);
  });

  it("follows Apollo's persisted-query retry: a miss by hash, then the text with its hash runs", async () => {
    const doc = 'query Retry { platforms { id } }';
    const persistedQuery = { version: 1, sha256Hash: documentHash(doc) };
    const miss = await post(gw.url, { extensions: { persistedQuery } });
    expect(miss.status).toBe(400);
    expect(codeOf(miss.body)).toBe('PERSISTED_QUERY_NOT_FOUND');
    const retry = await post(gw.url, { query: doc, extensions: { persistedQuery } });
    expect(retry.status).toBe(200);
    expect(retry.body.data).toMatchObject({ platforms: expect.any(Array) });
  });

  it('still refuses an id it does not hold', async () => {
    const res = await post(gw.url, { documentId: id('query Nope { platforms { id } }') });
    expect(res.status).toBe(400);
    expect(codeOf(res.body)).toBe('PERSISTED_QUERY_NOT_FOUND');
  });
});

describe('without trusted documents', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ platforms: PLATFORMS });
  });
  afterAll(() => gw?.close());

  it('runs any document as before', async () => {
    expect((await post(gw.url, { query: UNREGISTERED })).body.data).toMatchObject({ platforms: expect.any(Array) });
  });

  it('refuses a documentId clearly instead of ignoring it, on HTTP and WebSocket', async () => {
    const res = await post(gw.url, { documentId: id(PLATFORMS_DOC) });
    expect(res.status).toBe(400);
    expect(codeOf(res.body)).toBe('PERSISTED_QUERY_NOT_FOUND');
    expect(res.body.errors?.[0]?.message).toMatch(/no trusted documents \(server\.trustedDocuments\)/);
    // Even with a query beside it: the client expects the document it named.
    expect((await post(gw.url, { query: UNREGISTERED, documentId: id(UNREGISTERED) })).status).toBe(400);
    expect(codeOf(await ws(gw.url, { query: '', documentId: id(PLATFORMS_DOC) }))).toBe('PERSISTED_QUERY_NOT_FOUND');
  });

  it("keeps Apollo's automatic persisted queries: registered by a client, then run by hash", async () => {
    const doc = 'query Apq { platforms { id } }';
    const persistedQuery = { version: 1, sha256Hash: documentHash(doc) };
    expect((await post(gw.url, { query: doc, extensions: { persistedQuery } })).body.data).toBeTruthy();
    const byHash = await post(gw.url, { extensions: { persistedQuery } });
    expect(byHash.status).toBe(200);
    expect(byHash.body.data).toMatchObject({ platforms: expect.any(Array) });
  });
});

describe('the manifest', () => {
  it('reads both formats, with or without the sha256: prefix, in any case', () => {
    const hash = documentHash(PLATFORMS_DOC);
    const codegenFile = manifest('prefixed.json', { [`sha256:${hash.toUpperCase()}`]: PLATFORMS_DOC });
    expect(readManifest(codegenFile)).toEqual(new Map([[hash, PLATFORMS_DOC]]));
    const apolloFile = manifest('apollo-ok.json', {
      format: 'apollo-persisted-query-manifest',
      version: 1,
      operations: [{ id: hash, body: PLATFORMS_DOC, name: 'Platforms', type: 'query' }],
    });
    expect(readManifest(apolloFile)).toEqual(new Map([[hash, PLATFORMS_DOC]]));
  });

  it('refuses to start when a hash is not its document, naming the id', async () => {
    const wrong = 'a'.repeat(64);
    const file = manifest('mismatch.json', { ...codegen([PLATFORMS_DOC]), [wrong]: VMS_DOC });
    const start = startTestGateway({ server: { trustedDocuments: { manifestFile: file } }, platforms: PLATFORMS });
    await expect(start).rejects.toThrow(ConfigError);
    await expect(start).rejects.toThrow(new RegExp(`document "${wrong}" does not match its text`));
  });

  it('refuses to start on a file it cannot read or understand, naming the file', async () => {
    const missing = join(dir, 'absent.json');
    await expect(
      startTestGateway({ server: { trustedDocuments: { manifestFile: missing } }, platforms: PLATFORMS }),
    ).rejects.toThrow(new RegExp(`manifestFile ${missing} cannot be read as JSON`));
    expect(() => readManifest(manifest('broken.json', '{ "abc": '))).toThrow(/broken\.json cannot be read as JSON/);
    expect(() => readManifest(manifest('list.json', '[]'))).toThrow(/list\.json is not a manifest/);
    expect(() =>
      readManifest(manifest('v2.json', { format: 'apollo-persisted-query-manifest', version: 2, operations: [] })),
    ).toThrow(/v2\.json: format "apollo-persisted-query-manifest" version 2 is not one the gateway reads/);
    expect(() => readManifest(manifest('empty-doc.json', { [documentHash('')]: '' }))).toThrow(/has no document text/);
  });

  it("tells a SHA-1 manifest (GraphQL Code Generator's default) what to change", () => {
    const file = manifest('sha1.json', { ['0123456789abcdef0123456789abcdef01234567']: PLATFORMS_DOC });
    expect(() => readManifest(file)).toThrow(
      /not named by a SHA-256 hex digest \(a SHA-1 digest.*hashAlgorithm to 'sha256'\)/,
    );
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';

import { apiToken } from './helpers/callers.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { eventually, subscribe } from './helpers/subscriptions.js';

// One info line per GraphQL operation: its request ID (the client's
// x-request-id, or one given and sent back), name, type, duration and
// outcome; never the query text, the variables or a credential.

const SECRET_LITERAL = 'hunter2-in-a-literal';
const SECRET_VARIABLE = 'correct-horse-battery-staple';
const admin = apiToken('ops-admin');

interface AccessLine {
  msg: string;
  level: number;
  requestId: string;
  transport: 'http' | 'websocket';
  operationType: string | null;
  operationName: string | null;
  outcome: string;
  durationMs: number;
  status?: number;
  events?: number;
  errorCodes?: string[];
  caller?: string;
}

const accessLines = (gw: TestGateway) => gw.logs().filter((l) => l['msg'] === 'operation') as unknown as AccessLine[];

async function post(
  gw: TestGateway,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(gw.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${admin.token}`, ...headers },
    body: JSON.stringify(body),
  });
}

/** A raw graphql-transport-ws connection: its connection_ack, and one operation's frames. */
async function wsOperation(
  url: string,
  init: Record<string, unknown>,
  subscribeId: string,
  query: string,
): Promise<{ ack: { type: string; payload?: { requestId?: string } }; frames: { type: string }[] }> {
  const socket = new WebSocket(url.replace(/^http/, 'ws'), 'graphql-transport-ws');
  const frames: { type: string; id?: string; payload?: { requestId?: string } }[] = [];
  const waiters: (() => void)[] = [];
  socket.on('message', (data: Buffer) => {
    frames.push(JSON.parse(data.toString('utf8')) as { type: string });
    for (const w of waiters.splice(0)) w();
  });
  const until = async (check: () => boolean) => {
    const deadline = Date.now() + 5_000;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`frames so far: ${JSON.stringify(frames)}`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 100);
      });
    }
  };
  await new Promise<void>((resolve, reject) => socket.once('open', resolve).once('error', reject));
  socket.send(JSON.stringify({ type: 'connection_init', payload: init }));
  await until(() => frames.some((f) => f.type === 'connection_ack'));
  socket.send(JSON.stringify({ type: 'subscribe', id: subscribeId, payload: { query } }));
  await until(() => frames.some((f) => f.id === subscribeId && (f.type === 'complete' || f.type === 'error')));
  socket.close();
  const ack = frames.find((f) => f.type === 'connection_ack')!;
  return { ack, frames: frames.filter((f) => f.id === subscribeId) };
}

describe('the access log', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({
      platforms: [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }],
      auth: {
        apiTokens: [admin.entry],
        bindings: [{ subjects: ['token:ops-admin'], roles: ['admin'], tenants: ['*'] }],
      },
    });
  });
  afterAll(() => gw?.close());

  it('writes one info line per HTTP operation with the request ID the client sent, and sends it back', async () => {
    const res = await post(
      gw,
      {
        query: `query FindVm($name: String) { virtualMachines(first: 5, filter: { nameContains: $name }) { totalCount } vm: virtualMachines(first: 1, filter: { nameContains: "${SECRET_LITERAL}" }) { totalCount } }`,
        variables: { name: SECRET_VARIABLE },
        operationName: 'FindVm',
      },
      { 'x-request-id': 'portal-7f3a.42' },
    );
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('portal-7f3a.42');
    const lines = accessLines(gw).filter((l) => l.requestId === 'portal-7f3a.42');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 30,
      transport: 'http',
      operationType: 'query',
      operationName: 'FindVm',
      outcome: 'ok',
      status: 200,
      caller: 'token:ops-admin',
    });
    expect(lines[0]!.durationMs).toBeGreaterThan(0);
    expect(lines[0]).not.toHaveProperty('errorCodes');
  });

  it('gives a request without a usable ID one of its own, in the header and the line', async () => {
    const none = await post(gw, { query: 'query Plain { platforms { id } }' });
    const given = none.headers.get('x-request-id');
    expect(given).toMatch(/^[0-9a-f-]{36}$/);
    // Too long, or with characters a log query would have to escape: replaced, not trusted.
    const bad = await post(gw, { query: 'query Plain { platforms { id } }' }, { 'x-request-id': 'a b"c' });
    const replaced = bad.headers.get('x-request-id');
    expect(replaced).toMatch(/^[0-9a-f-]{36}$/);
    const ids = accessLines(gw).map((l) => l.requestId);
    expect(ids).toContain(given);
    expect(ids).toContain(replaced);
    expect(ids).not.toContain('a b"c');
    // Every answer carries one, health probes too.
    expect((await fetch(new URL('/healthz', gw.url))).headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('says how an operation failed: its outcome and the codes of its errors', async () => {
    await post(gw, { query: 'query Broken { noSuchField }' }, { 'x-request-id': 'broken-1' });
    await post(gw, { query: '{ platforms { id } }' }, { 'x-request-id': 'anon-1' });
    await fetch(gw.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'no-token-1' },
      body: JSON.stringify({ query: 'query Sneaky { platforms { id } }' }),
    });
    const byId = new Map(accessLines(gw).map((l) => [l.requestId, l]));
    expect(byId.get('broken-1')).toMatchObject({
      outcome: 'error',
      operationType: null,
      operationName: null,
      status: 400,
      errorCodes: ['GRAPHQL_VALIDATION_FAILED'],
    });
    expect(byId.get('anon-1')).toMatchObject({ outcome: 'ok', operationType: 'query', operationName: null });
    // Refused before the operation was read: no name, no caller.
    expect(byId.get('no-token-1')).toMatchObject({
      outcome: 'error',
      status: 401,
      operationName: null,
      errorCodes: ['UNAUTHENTICATED'],
    });
    expect(byId.get('no-token-1')).not.toHaveProperty('caller');
  });

  it('logs a WebSocket operation under the connection_init requestId and its subscribe ID, and acknowledges with it', async () => {
    const { ack, frames } = await wsOperation(
      gw.url,
      { authorization: `Bearer ${admin.token}`, requestId: 'dash-1' },
      'op-9',
      'query WsPlatforms { platforms { id } }',
    );
    expect(ack.payload).toEqual({ requestId: 'dash-1' });
    expect(frames.map((f) => f.type)).toEqual(['next', 'complete']);
    await eventually(() => accessLines(gw).some((l) => l.requestId === 'dash-1:op-9'));
    expect(accessLines(gw).find((l) => l.requestId === 'dash-1:op-9')).toMatchObject({
      transport: 'websocket',
      operationType: 'query',
      operationName: 'WsPlatforms',
      outcome: 'ok',
      caller: 'token:ops-admin',
    });

    const generated = await wsOperation(gw.url, { authorization: `Bearer ${admin.token}` }, 'x', '{ nope }');
    const connectionId = generated.ack.payload?.requestId;
    expect(connectionId).toMatch(/^[0-9a-f-]{36}$/);
    await eventually(() => accessLines(gw).some((l) => l.requestId === `${connectionId}:x`));
    expect(accessLines(gw).find((l) => l.requestId === `${connectionId}:x`)).toMatchObject({
      outcome: 'error',
      errorCodes: ['GRAPHQL_VALIDATION_FAILED'],
    });
  });

  it('logs a subscription once, when it ends, with its life and the events it was sent', async () => {
    const sub = subscribe(
      gw.url,
      'subscription Tasks { taskUpdated { task { id state } } }',
      {},
      { authorization: `Bearer ${admin.token}`, requestId: 'tasks-dash' },
    );
    await new Promise((r) => setTimeout(r, 200));
    expect(accessLines(gw).some((l) => l.requestId.startsWith('tasks-dash:'))).toBe(false);
    const vms = (await (await post(gw, { query: '{ virtualMachines(first: 1) { nodes { id } } }' })).json()) as {
      data: { virtualMachines: { nodes: { id: string }[] } };
    };
    const vmId = vms.data.virtualMachines.nodes[0]!.id;
    for (const mutation of ['suspendVm', 'resumeVm']) {
      const res = await post(gw, { query: `mutation { ${mutation}(input: { vmId: "${vmId}" }) { task { id } } }` });
      expect(res.status).toBe(200);
    }
    await sub.until(2);
    await sub.close();
    await eventually(() => accessLines(gw).some((l) => l.requestId.startsWith('tasks-dash:')));
    const line = accessLines(gw).find((l) => l.requestId.startsWith('tasks-dash:'))!;
    expect(line).toMatchObject({ transport: 'websocket', operationType: 'subscription', operationName: 'Tasks' });
    // Sent, that is: an update on its way when the client closed was sent but never read.
    expect(line.events).toBeGreaterThanOrEqual(Math.max(2, sub.events.length));
    expect(line.durationMs).toBeGreaterThanOrEqual(200);
  });

  it('never writes query text, variables or credentials', () => {
    const text = JSON.stringify(gw.logs());
    expect(text).not.toContain(SECRET_LITERAL);
    expect(text).not.toContain(SECRET_VARIABLE);
    expect(text).not.toContain(admin.token);
    expect(text).not.toContain('noSuchField');
    expect(text).not.toContain('virtualMachines(first');
  });
});

describe('logging.accessLog: false', () => {
  it('writes no access line, and still sends the request ID', async () => {
    const gw = await startTestGateway({
      platforms: [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }],
      logging: { accessLog: false },
    });
    try {
      const res = await fetch(gw.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-request-id': 'quiet-1' },
        body: JSON.stringify({ query: '{ platforms { id } }' }),
      });
      expect(res.headers.get('x-request-id')).toBe('quiet-1');
      expect(accessLines(gw)).toHaveLength(0);
    } finally {
      await gw.close();
    }
  });
});

import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';

import { PROTOCOL, type PayloadSink, serveGraphqlTransportWs } from '../src/server/graphql-transport-ws.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';

// The graphql-transport-ws protocol as a raw client speaks it: every message
// and close code the protocol defines, against a real gateway.

interface Frame {
  type: string;
  id?: string;
  payload?: unknown;
}

/** A raw WebSocket: frames received so far, and how it was closed. */
function connect(url: string, protocol: string[] = [PROTOCOL]) {
  const socket = new WebSocket(url.replace(/^http/, 'ws'), protocol);
  const frames: Frame[] = [];
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  const waiters: (() => void)[] = [];
  socket.on('message', (data) => {
    frames.push(JSON.parse(data.toString()) as Frame);
    for (const w of waiters.splice(0)) w();
  });
  const opened = new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  return {
    socket,
    frames,
    closed,
    send: async (message: unknown) => {
      await opened;
      socket.send(typeof message === 'string' ? message : JSON.stringify(message));
    },
    /** Waits for a frame matching `match`, up to 5 s. */
    async frame(match: (f: Frame) => boolean): Promise<Frame> {
      const deadline = Date.now() + 5_000;
      for (;;) {
        const found = frames.find(match);
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`no such frame among ${JSON.stringify(frames)}`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 200);
        });
      }
    },
  };
}

describe('GraphQL over WebSocket (graphql-transport-ws)', () => {
  let gw: TestGateway;

  beforeAll(async () => {
    gw = await startTestGateway({
      subscriptions: { connectionInitTimeoutMs: 300, maxPerConnection: 2 },
      platforms: [{ id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 3 }).uri }],
    });
  });
  afterAll(() => gw?.close());

  it('acknowledges connection_init, answers pings, and runs a query as next then complete', async () => {
    const c = connect(gw.url);
    await c.send({ type: 'connection_init', payload: {} });
    await c.frame((f) => f.type === 'connection_ack');
    await c.send({ type: 'ping', payload: { n: 1 } });
    expect(await c.frame((f) => f.type === 'pong')).toEqual({ type: 'pong', payload: { n: 1 } });
    await c.send({ type: 'subscribe', id: 'q1', payload: { query: '{ platforms { name kind } }' } });
    const next = await c.frame((f) => f.type === 'next' && f.id === 'q1');
    expect(next.payload).toEqual({
      data: { platforms: [{ name: 'kvm', kind: 'LIBVIRT' }] },
      extensions: { rateLimit: expect.any(Object) },
    });
    await c.frame((f) => f.type === 'complete' && f.id === 'q1');
    c.socket.close();
  });

  it('refuses an invalid operation with an error message carrying its code, and keeps the connection', async () => {
    const c = connect(gw.url);
    await c.send({ type: 'connection_init' });
    await c.frame((f) => f.type === 'connection_ack');
    await c.send({ type: 'subscribe', id: 'bad', payload: { query: '{ noSuchField }' } });
    const error = await c.frame((f) => f.type === 'error' && f.id === 'bad');
    expect(error.payload).toMatchObject([{ extensions: { code: 'GRAPHQL_VALIDATION_FAILED' } }]);
    await c.send({ type: 'subscribe', id: 'ok', payload: { query: '{ platforms { id } }' } });
    await c.frame((f) => f.type === 'complete' && f.id === 'ok');
    c.socket.close();
  });

  it('stops a subscription the client completes, and refuses more operations than a connection may hold', async () => {
    const c = connect(gw.url);
    await c.send({ type: 'connection_init' });
    await c.frame((f) => f.type === 'connection_ack');
    const sub = 'subscription { platformStatusChanged { platformId } }';
    await c.send({ type: 'subscribe', id: 's1', payload: { query: sub } });
    await c.send({ type: 'subscribe', id: 's2', payload: { query: sub } });
    await c.send({ type: 'subscribe', id: 's3', payload: { query: sub } });
    const refused = await c.frame((f) => f.type === 'error' && f.id === 's3');
    expect(refused.payload).toMatchObject([{ extensions: { code: 'TOO_MANY_SUBSCRIPTIONS' } }]);
    await c.send({ type: 'complete', id: 's1' });
    // The completed one's place is free again.
    await c.send({ type: 'subscribe', id: 's4', payload: { query: '{ platforms { id } }' } });
    await c.frame((f) => f.type === 'complete' && f.id === 's4');
    c.socket.close();
  });

  it.each([
    ['a client that never sends connection_init', [], 4408],
    ['a message that is not JSON', ['{nope'], 4400],
    ['a message of no known type', [{ type: 'hello' }], 4400],
    [
      'a subscribe without an id',
      [{ type: 'connection_init' }, { type: 'subscribe', payload: { query: '{x}' } }],
      4400,
    ],
    [
      'a subscribe before connection_init',
      [{ type: 'subscribe', id: '1', payload: { query: '{ platforms { id } }' } }],
      4401,
    ],
    ['a second connection_init', [{ type: 'connection_init' }, { type: 'connection_init' }], 4429],
  ] as const)('closes %s with %s', async (_what, messages, code) => {
    const c = connect(gw.url);
    for (const m of messages) await c.send(m);
    expect((await c.closed).code).toBe(code);
  });

  it('closes a second subscription with an ID already running with 4409', async () => {
    const c = connect(gw.url);
    await c.send({ type: 'connection_init' });
    await c.frame((f) => f.type === 'connection_ack');
    const sub = {
      type: 'subscribe',
      id: 'same',
      payload: { query: 'subscription { platformStatusChanged { platformId } }' },
    };
    await c.send(sub);
    await c.send(sub);
    expect((await c.closed).code).toBe(4409);
  });

  it('closes a client that offers no graphql-transport-ws sub-protocol with 4406', async () => {
    const c = connect(gw.url, []);
    expect((await c.closed).code).toBe(4406);
  });
});

describe('the WebSocket send path', () => {
  it('holds a stream while its client does not read, and delivers everything in order once it does', async () => {
    const http = createServer();
    const wss = new WebSocketServer({ server: http });
    let pushed = 0;
    const chunk = 'x'.repeat(64 * 1024);
    const server = serveGraphqlTransportWs(wss, {
      connectionInitTimeoutMs: 5_000,
      keepAliveMs: 60_000,
      highWaterBytes: 256 * 1024,
      init: async () => ({ kind: 'accepted', state: null, closeAt: null }),
      onInternalError: (e) => {
        throw e;
      },
      run: async () => {
        let sink: PayloadSink | null = null;
        let ended = false;
        // Pushes while the socket takes them, as an event source does.
        const flow = () => {
          while (sink && pushed < 400) if (!sink.next(JSON.stringify({ n: pushed++, chunk }))) return;
          if (sink && !ended) {
            ended = true;
            sink.end();
          }
        };
        return {
          kind: 'stream',
          stream: {
            attach: (s) => {
              sink = s;
              flow();
            },
            resume: flow,
            return: () => (sink = null),
          },
        };
      },
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', () => resolve()));
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    try {
      const c = connect(url);
      await c.send({ type: 'connection_init' });
      await c.frame((f) => f.type === 'connection_ack');
      // The client stops reading: the kernel's buffers fill, then the socket's own.
      (c.socket as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
      await c.send({ type: 'subscribe', id: 'big', payload: { query: 'subscription { x }' } });
      await new Promise((r) => setTimeout(r, 1_500));
      const whilePaused = pushed;
      await new Promise((r) => setTimeout(r, 500));
      // 400 payloads are 25 MiB: far more than loopback buffers hold, so the stream was held short.
      expect(pushed).toBe(whilePaused);
      expect(pushed).toBeLessThan(400);
      (c.socket as unknown as { _socket: { resume(): void } })._socket.resume();
      await c.frame((f) => f.type === 'complete' && f.id === 'big');
      const numbers = c.frames.filter((f) => f.type === 'next').map((f) => (f.payload as { n: number }).n);
      expect(numbers).toEqual([...Array(400).keys()]);
      c.socket.close();
    } finally {
      await server.close();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    }
  });
});

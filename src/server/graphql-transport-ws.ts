import type { IncomingMessage } from 'node:http';

import { type RawData, type WebSocket, WebSocketServer } from 'ws';

// The server side of the graphql-transport-ws protocol (the one graphql-ws,
// Apollo Client and urql speak), written for fan-out: payloads are pushed in
// as JSON text serialized once per event however many clients share it, a
// frame is that text with the operation's ID around it, and it is written
// within the call that published the event unless the socket has fallen
// behind. graphql-ws's own server serializes each payload once per
// subscriber and pulls each through promises, which at 1,000 subscribers
// and 200 events a second was most of the work.

export const PROTOCOL = 'graphql-transport-ws';

/** Close codes of the protocol, and ours. */
export const CloseCode = {
  GoingAway: 1001,
  BadRequest: 4400,
  Unauthorized: 4401,
  /** connection_init refused (the credential), or the connection's credential expired. */
  Forbidden: 4403,
  SubprotocolNotAcceptable: 4406,
  ConnectionInitialisationTimeout: 4408,
  SubscriberAlreadyExists: 4409,
  TooManyInitialisationRequests: 4429,
  InternalServerError: 4500,
  /** The client fell too far behind the events it subscribed to. */
  TooSlow: 4008,
} as const;

/** A subscribe message's payload. */
export interface OperationRequest {
  query: string;
  operationName?: string | null;
  variables?: Record<string, unknown> | null;
  extensions?: Record<string, unknown> | null;
}

/** Where a stream's payloads go: the socket. */
export interface PayloadSink {
  /** Sends one payload (JSON text); false when the socket is behind: hold the next ones until resume(). */
  next(payload: string): boolean;
  /** The stream ended: ran out (complete is sent), or failed (closed with 4500 unless already closing). */
  end(error?: Error): void;
  /** Runs `deliver`, which sends several payloads at once: they leave in one write. */
  many(deliver: () => void): void;
}

/** A subscription's results as JSON text, pushed into its socket as events arrive. */
export interface PayloadStream {
  /** Starts the flow into `sink`. Called once. */
  attach(sink: PayloadSink): void;
  /** The socket has drained after the sink refused a payload. */
  resume(): void;
  /** The client completed the operation or went away: stop and let go. */
  return(): unknown;
}

/**
 * What an operation gives, as JSON text: errors that refused it (an array of
 * formatted errors), one result (a query or mutation), or a stream of
 * results (a subscription).
 */
export type OperationOutcome =
  | { kind: 'refused'; errors: string }
  | { kind: 'result'; payload: string }
  | {
      kind: 'stream';
      stream: PayloadStream;
      /** Called once when the stream ends, however it ends, with the number of payloads sent. */
      ended?: (delivered: number) => void;
    };

/** The connection an operation came over, as operations see it. */
export interface TransportConnection<S> {
  /** What `init` accepted the connection with (its caller). */
  state: S;
  close(code: number, reason: string): void;
  /** Operations running on this connection, the one being started included. */
  operationCount(): number;
}

/**
 * What a connection_init decides: the connection goes on with `state`
 * (acknowledged, with `ack` as the connection_ack's payload) until `closeAt`
 * (ms since the epoch, null: no end), or is closed with 4403 and `reason`.
 */
export type InitOutcome<S> =
  | { kind: 'accepted'; state: S; closeAt: number | null; ack?: Record<string, unknown> }
  | { kind: 'refused'; reason: string };

export interface TransportOptions<S> {
  /**
   * Decides on a connection from its connection_init payload and the HTTP
   * upgrade request; no operation is accepted before it has answered.
   * Throws only on a fault of the gateway's own (the socket is closed with 4500).
   */
  init(payload: Record<string, unknown> | null, request: IncomingMessage): Promise<InitOutcome<S>>;
  /** How long a connection may wait before its connection_init. */
  connectionInitTimeoutMs: number;
  /** WebSocket ping interval; a client that misses a pong by the next one is dropped. */
  keepAliveMs: number;
  /** Bytes a socket may hold unsent before its streams hold their payloads (and, holding, fall behind). */
  highWaterBytes: number;
  /** Runs one operation; throws only on a fault of the gateway's own. */
  run(id: string, request: OperationRequest, connection: TransportConnection<S>): Promise<OperationOutcome>;
  /** Called with what went wrong when the gateway itself failed (the socket is closed with 4500). */
  onInternalError(error: unknown): void;
}

/** What the transport carries right now, and has sent so far (the gateway's metrics). */
export interface TransportStats {
  /** Sockets open. */
  connections: number;
  /** Streams (subscriptions) running. */
  subscriptions: number;
  /** Stream payloads sent since the server started. */
  delivered: number;
}

export interface TransportServer {
  clientCount(): number;
  stats(): TransportStats;
  /** Closes every socket with 1001 and stops accepting. */
  close(): Promise<void>;
}

type ClientMessage =
  | { type: 'connection_init'; payload: Record<string, unknown> | null }
  | { type: 'ping' | 'pong'; payload: Record<string, unknown> | null }
  | { type: 'subscribe'; id: string; payload: OperationRequest }
  | { type: 'complete'; id: string };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isOptional = (v: unknown, check: (v: unknown) => boolean) => v === undefined || v === null || check(v);

/** A client's message, or null when it is not one the protocol allows. */
export function parseClientMessage(data: string): ClientMessage | null {
  let m: unknown;
  try {
    m = JSON.parse(data);
  } catch {
    return null;
  }
  if (!isObject(m)) return null;
  switch (m['type']) {
    case 'connection_init':
    case 'ping':
    case 'pong':
      return isOptional(m['payload'], isObject)
        ? { type: m['type'], payload: (m['payload'] as Record<string, unknown> | undefined) ?? null }
        : null;
    case 'subscribe': {
      const { id, payload } = m;
      if (typeof id !== 'string' || id === '' || !isObject(payload) || typeof payload['query'] !== 'string')
        return null;
      if (!isOptional(payload['operationName'], (v) => typeof v === 'string')) return null;
      if (!isOptional(payload['variables'], isObject) || !isOptional(payload['extensions'], isObject)) return null;
      return { type: 'subscribe', id, payload: payload as unknown as OperationRequest };
    }
    case 'complete':
      return typeof m['id'] === 'string' && m['id'] !== '' ? { type: 'complete', id: m['id'] } : null;
    default:
      return null;
  }
}

/** The sub-protocol a client offers, chosen when it offers ours. */
function chooseProtocol(offered: Set<string>): string | false {
  return offered.has(PROTOCOL) ? PROTOCOL : false;
}

/** A close reason as the protocol allows it: at most 123 bytes of UTF-8 (cut at a character). */
export function closeReason(text: string): string {
  if (Buffer.byteLength(text) <= 123) return text;
  let cut = text.slice(0, 123);
  while (Buffer.byteLength(cut) > 123) cut = cut.slice(0, -1);
  return cut;
}

/** setTimeout's longest delay (about 24.8 days); a later deadline is reached in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Serves the protocol on `wss` (created with the HTTP server and path it answers on). */
export function serveGraphqlTransportWs<S>(wss: WebSocketServer, opts: TransportOptions<S>): TransportServer {
  wss.options.handleProtocols = chooseProtocol;
  const counts: Omit<TransportStats, 'connections'> = { subscriptions: 0, delivered: 0 };
  wss.on('connection', (socket, request) => openConnection(socket, request, opts, counts));
  return {
    clientCount: () => wss.clients.size,
    stats: () => ({ connections: wss.clients.size, ...counts }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const client of wss.clients) client.close(CloseCode.GoingAway, 'Server shutting down');
        wss.close(() => resolve());
      }),
  };
}

function openConnection<S>(
  socket: WebSocket,
  request: IncomingMessage,
  opts: TransportOptions<S>,
  /** The server's counts, kept with a plain addition per payload: metrics read them at a scrape. */
  counts: Omit<TransportStats, 'connections'>,
): void {
  if (socket.protocol !== PROTOCOL) {
    socket.close(CloseCode.SubprotocolNotAcceptable, 'Subprotocol not acceptable');
    return;
  }
  let initReceived = false;
  /** Set once `init` has accepted the connection (and the ack is sent); operations need it. */
  let connection: TransportConnection<S> | null = null;
  /** When the connection's credential stops being accepted; null: never. */
  let closeAt: number | null = null;
  let expiryTimer: NodeJS.Timeout | undefined;
  /** Operations running, by ID; how to stop a stream once it has one. */
  const operations = new Map<string, (() => void) | null>();
  const close = (code: number, reason: string) => socket.close(code, closeReason(reason));

  const initTimer = setTimeout(() => {
    if (!initReceived) socket.close(CloseCode.ConnectionInitialisationTimeout, 'Connection initialisation timeout');
  }, opts.connectionInitTimeoutMs);

  let alive = true;
  const pinger = setInterval(() => {
    if (!alive) return socket.terminate();
    alive = false;
    socket.ping();
  }, opts.keepAliveMs);
  socket.on('pong', () => (alive = true));

  const open = () => socket.readyState === socket.OPEN;
  /** The TCP socket under the WebSocket (the upgrade's), corked while several frames are sent at once. */
  const raw = request.socket;
  /** Sends a frame; resolves at once unless the socket holds more than the high-water mark unsent. */
  const send = (frame: string): Promise<void> | undefined => {
    if (!open()) return undefined;
    if (socket.bufferedAmount < opts.highWaterBytes) {
      socket.send(frame);
      return undefined;
    }
    return new Promise<void>((resolve) => socket.send(frame, () => resolve()));
  };
  const idJson = (id: string) => JSON.stringify(id);
  const failInternally = (e: unknown) => {
    opts.onInternalError(e);
    if (open()) socket.close(CloseCode.InternalServerError, 'Internal server error');
  };

  /** Closes the connection once its credential has expired: no operation outlives the right to start it. */
  const expired = (): boolean => {
    if (closeAt === null || Date.now() < closeAt) return false;
    if (open()) close(CloseCode.Forbidden, 'Forbidden: token expired');
    return true;
  };
  const armExpiry = () => {
    if (closeAt === null || expired()) return;
    expiryTimer = setTimeout(armExpiry, Math.min(closeAt - Date.now(), MAX_TIMER_MS));
  };

  const runOperation = async (id: string, payload: OperationRequest, connection: TransportConnection<S>) => {
    const outcome = await opts.run(id, payload, connection);
    if (!operations.has(id)) {
      // Completed by the client while it was being set up.
      if (outcome.kind === 'stream') {
        outcome.ended?.(0);
        outcome.stream.return();
      }
      return;
    }
    const frameId = idJson(id);
    if (outcome.kind === 'refused') {
      operations.delete(id);
      await send(`{"id":${frameId},"type":"error","payload":${outcome.errors}}`);
      return;
    }
    if (outcome.kind === 'result') {
      operations.delete(id);
      await send(`{"id":${frameId},"type":"next","payload":${outcome.payload}}`);
      await send(`{"id":${frameId},"type":"complete"}`);
      return;
    }
    streamInto(id, frameId, outcome);
  };

  /**
   * Pushes a stream's payloads into the socket as they come, each within
   * the call that produced it; a socket holding more than the high-water
   * mark unsent makes the stream hold the next ones (its bounded queue)
   * until that frame is written.
   */
  const streamInto = (id: string, frameId: string, outcome: Extract<OperationOutcome, { kind: 'stream' }>) => {
    const { stream } = outcome;
    const framePrefix = `{"id":${frameId},"type":"next","payload":`;
    let delivered = 0;
    let running = true;
    const stop = () => {
      if (!running) return false;
      running = false;
      counts.subscriptions -= 1;
      outcome.ended?.(delivered);
      return true;
    };
    operations.set(id, () => {
      if (stop()) stream.return();
    });
    counts.subscriptions += 1;
    const resume = () => {
      if (running) stream.resume();
    };
    stream.attach({
      next: (payload) => {
        if (!running || !open()) return false;
        delivered += 1;
        counts.delivered += 1;
        const waiting = send(`${framePrefix}${payload}}`);
        if (!waiting) return true;
        void waiting.then(resume);
        return false;
      },
      end: (error) => {
        if (!stop()) return;
        operations.delete(id);
        if (!error) void send(`{"id":${frameId},"type":"complete"}`);
        else if (open()) failInternally(error);
      },
      many: (deliver) => {
        raw.cork();
        try {
          deliver();
        } finally {
          raw.uncork();
        }
      },
    });
  };

  const onMessage = (data: string) => {
    const message = parseClientMessage(data);
    if (!message) return socket.close(CloseCode.BadRequest, 'Invalid message received');
    switch (message.type) {
      case 'connection_init':
        if (initReceived)
          return socket.close(CloseCode.TooManyInitialisationRequests, 'Too many initialisation requests');
        initReceived = true;
        clearTimeout(initTimer);
        opts.init(message.payload, request).then((outcome) => {
          if (!open()) return;
          if (outcome.kind === 'refused') return close(CloseCode.Forbidden, outcome.reason);
          connection = { state: outcome.state, close, operationCount: () => operations.size };
          closeAt = outcome.closeAt;
          armExpiry();
          if (open()) {
            void send(
              outcome.ack
                ? JSON.stringify({ type: 'connection_ack', payload: outcome.ack })
                : '{"type":"connection_ack"}',
            );
          }
        }, failInternally);
        return;
      case 'ping':
        void send(message.payload ? JSON.stringify({ type: 'pong', payload: message.payload }) : '{"type":"pong"}');
        return;
      case 'pong':
        return;
      case 'subscribe': {
        // As graphql-ws: an operation before the ack (init not sent, or still being decided) is a protocol error.
        if (!connection) return socket.close(CloseCode.Unauthorized, 'Unauthorized');
        if (expired()) return;
        const { id, payload } = message;
        if (operations.has(id)) {
          return socket.close(CloseCode.SubscriberAlreadyExists, `Subscriber for ${id.slice(0, 80)} already exists`);
        }
        operations.set(id, null);
        runOperation(id, payload, connection).catch((e: unknown) => {
          const stop = operations.get(id);
          operations.delete(id);
          stop?.();
          failInternally(e);
        });
        return;
      }
      case 'complete': {
        const stop = operations.get(message.id);
        operations.delete(message.id);
        stop?.();
        return;
      }
    }
  };

  socket.on('message', (data: RawData, isBinary: boolean) => {
    try {
      onMessage(isBinary ? '' : rawText(data));
    } catch (e) {
      failInternally(e);
    }
  });
  socket.once('error', () => socket.terminate());
  socket.once('close', () => {
    clearTimeout(initTimer);
    clearTimeout(expiryTimer);
    clearInterval(pinger);
    const running = [...operations.values()];
    operations.clear();
    for (const stop of running) stop?.();
  });
}

function rawText(data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.isBuffer(data) ? data.toString('utf8') : Buffer.from(data).toString('utf8');
}

// A child process of bench/subscribers.ts: many graphql-ws subscribers
// (graphql-transport-ws over real WebSockets on loopback), each a socket with
// one subscription, recording how long each event took from its `at` (when
// the server published it) to here. Speaks the protocol itself (a few lines)
// so that the gateway and the bare ws baseline are read by the same code.
import { WebSocket } from 'ws';

export type ClientCommand =
  | { cmd: 'connect'; url: string; count: number; query: string }
  | { cmd: 'reset' }
  | { cmd: 'report' }
  | { cmd: 'close' };

export interface ClientReport {
  sockets: number;
  acked: number;
  /** Events received since the last reset, in all and by the socket that received the fewest and most. */
  received: number;
  minPerSocket: number;
  maxPerSocket: number;
  /** Lowest and highest event sequence (from the cursors) received since the last reset; null when none. */
  sequences: [number, number] | null;
  /** Latency histogram (see bucketOf) since the last reset; later ones in `over`. */
  histogram: number[];
  over: number;
  maxMs: number;
  closes: Record<string, number>;
  errors: string[];
  /** The first `next` message received, as sent (for the baseline to broadcast the same payload). */
  sample: string | null;
}

/** Latency buckets: 0.1 ms wide up to 1 s, then 10 ms wide up to 300 s; later ones are counted in `over`. */
export const BUCKETS = 10_000 + 29_900;
export function bucketOf(ms: number): number {
  return ms < 1_000 ? Math.floor(ms * 10) : 10_000 + Math.floor((ms - 1_000) / 10);
}
/** The upper edge of a bucket, in ms. */
export function bucketLimit(i: number): number {
  return i < 10_000 ? (i + 1) / 10 : 1_000 + (i - 10_000 + 1) * 10;
}

const sockets: WebSocket[] = [];
let acked = 0;
let perSocket = new Uint32Array(0);
let histogram = new Uint32Array(BUCKETS);
let over = 0;
let maxMs = 0;
let received = 0;
let minSequence = Infinity;
let maxSequence = -Infinity;
const closes = new Map<string, number>();
const errors: string[] = [];
let sample: string | null = null;

function onEvent(index: number, text: string, now: number): void {
  const msg = JSON.parse(text) as {
    type: string;
    payload?: { data?: { vmChanged?: { at?: string; cursor?: string } }; errors?: unknown };
  };
  switch (msg.type) {
    case 'next': {
      sample ??= text;
      const at = Date.parse(msg.payload?.data?.vmChanged?.at ?? '');
      if (msg.payload?.errors && errors.length < 20) errors.push(JSON.stringify(msg.payload.errors).slice(0, 300));
      if (Number.isNaN(at)) return;
      // Cursors are <epoch>.<sequence in base 36>: the range seen tells how many events the server published.
      const sequence = Number.parseInt(msg.payload?.data?.vmChanged?.cursor?.split('.')[1] ?? '', 36);
      if (!Number.isNaN(sequence)) {
        if (sequence < minSequence) minSequence = sequence;
        if (sequence > maxSequence) maxSequence = sequence;
      }
      const latency = Math.max(0, now - at);
      received += 1;
      perSocket[index] = (perSocket[index] as number) + 1;
      const bucket = bucketOf(latency);
      if (bucket < BUCKETS) histogram[bucket] = (histogram[bucket] as number) + 1;
      else over += 1;
      if (latency > maxMs) maxMs = latency;
      return;
    }
    case 'ping':
      sockets[index]?.send('{"type":"pong"}');
      return;
    case 'error':
    case 'complete':
      if (errors.length < 20) errors.push(text.slice(0, 300));
      return;
    default:
      return;
  }
}

async function connect(url: string, count: number, query: string): Promise<void> {
  perSocket = new Uint32Array(count);
  const subscribe = JSON.stringify({ id: '1', type: 'subscribe', payload: { query } });
  // In waves, so that every socket's connection_init is answered within the server's timeout.
  for (let start = 0; start < count; start += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, count - start) }, (_, j) => {
        const index = start + j;
        return new Promise<void>((resolve, reject) => {
          const ws = new WebSocket(url, 'graphql-transport-ws', { perMessageDeflate: false });
          sockets[index] = ws;
          ws.on('open', () => ws.send('{"type":"connection_init"}'));
          ws.on('message', (data: Buffer) => {
            const now = performance.timeOrigin + performance.now();
            const text = data.toString('utf8');
            if (text.startsWith('{"type":"connection_ack"')) {
              acked += 1;
              ws.send(subscribe);
              resolve();
              return;
            }
            onEvent(index, text, now);
          });
          ws.on('close', (code: number) => {
            closes.set(String(code), (closes.get(String(code)) ?? 0) + 1);
            resolve();
          });
          ws.on('error', (e: Error) => {
            if (errors.length < 20) errors.push(e.message);
            reject(e);
          });
        });
      }),
    );
  }
}

function report(): ClientReport {
  let min = Infinity;
  let max = 0;
  for (const n of perSocket) {
    if (n < min) min = n;
    if (n > max) max = n;
  }
  return {
    sockets: sockets.length,
    acked,
    received,
    minPerSocket: Number.isFinite(min) ? min : 0,
    maxPerSocket: max,
    sequences: Number.isFinite(minSequence) ? [minSequence, maxSequence] : null,
    histogram: Array.from(histogram),
    over,
    maxMs,
    closes: Object.fromEntries(closes),
    errors: [...errors],
    sample,
  };
}

process.on('message', (m: ClientCommand) => {
  const reply = (v: unknown) => process.send?.(v);
  switch (m.cmd) {
    case 'connect':
      connect(m.url, m.count, m.query).then(
        () => reply({ ok: true }),
        (e: unknown) => reply({ ok: false, error: String(e) }),
      );
      return;
    case 'reset':
      histogram = new Uint32Array(BUCKETS);
      perSocket = new Uint32Array(sockets.length);
      over = 0;
      maxMs = 0;
      received = 0;
      minSequence = Infinity;
      maxSequence = -Infinity;
      reply({ ok: true });
      return;
    case 'report':
      reply(report());
      return;
    case 'close':
      for (const ws of sockets) ws.terminate();
      reply({ ok: true });
      setTimeout(() => process.exit(0), 50);
      return;
  }
});
process.send?.({ ok: true, ready: true });

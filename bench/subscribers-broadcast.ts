// A child process of bench/subscribers.ts: the baseline, a bare `ws` server
// that speaks just enough graphql-transport-ws (connection_ack, one
// subscription per socket) and broadcasts the payload the gateway sent,
// serialized once per event, to every socket, at the same rate.
import { WebSocketServer, type WebSocket } from 'ws';

export type BroadcastCommand =
  { cmd: 'listen' } | { cmd: 'broadcast'; template: string; rate: number; seconds: number } | { cmd: 'close' };

const subscribed = new Map<WebSocket, string>();
let wss: WebSocketServer | null = null;

function listen(): Promise<number> {
  return new Promise((resolve) => {
    wss = new WebSocketServer({
      host: '127.0.0.1',
      port: 0,
      perMessageDeflate: false,
      handleProtocols: (protocols) => (protocols.has('graphql-transport-ws') ? 'graphql-transport-ws' : false),
    });
    wss.on('connection', (ws) => {
      ws.on('message', (data: Buffer) => {
        const msg = JSON.parse(data.toString('utf8')) as { type: string; id?: string };
        if (msg.type === 'connection_init') ws.send('{"type":"connection_ack"}');
        else if (msg.type === 'subscribe') subscribed.set(ws, msg.id ?? '1');
        else if (msg.type === 'ping') ws.send('{"type":"pong"}');
      });
      ws.on('close', () => subscribed.delete(ws));
    });
    wss.on('listening', () => resolve((wss!.address() as { port: number }).port));
  });
}

/** Sends `rate` events a second for `seconds`, each stamped with the time it is sent, to every subscribed socket. */
async function broadcast(
  template: string,
  rate: number,
  seconds: number,
): Promise<{ sent: number; elapsedMs: number }> {
  const message = JSON.parse(template) as {
    id: string;
    payload: { data: { vmChanged: { at: string; cursor: string; powerState?: string } } };
  };
  const event = message.payload.data.vmChanged;
  const total = Math.round(rate * seconds);
  const start = performance.now();
  let sent = 0;
  while (sent < total) {
    const due = start + (sent * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    while (sent < total && start + (sent * 1000) / rate <= performance.now()) {
      event.at = new Date().toISOString();
      event.cursor = `baseline.${sent.toString(36)}`;
      const byId = new Map<string, string>();
      for (const [ws, id] of subscribed) {
        let text = byId.get(id);
        if (text === undefined) {
          message.id = id;
          text = JSON.stringify(message);
          byId.set(id, text);
        }
        ws.send(text);
      }
      sent += 1;
    }
  }
  return { sent, elapsedMs: performance.now() - start };
}

process.on('message', (m: BroadcastCommand) => {
  const reply = (v: unknown) => process.send?.(v);
  switch (m.cmd) {
    case 'listen':
      void listen().then((port) => reply({ port }));
      return;
    case 'broadcast':
      void broadcast(m.template, m.rate, m.seconds).then(reply);
      return;
    case 'close':
      for (const ws of wss?.clients ?? []) ws.terminate();
      wss?.close(() => {
        reply({ ok: true });
        setTimeout(() => process.exit(0), 50);
      });
      return;
  }
});
process.send?.({ ready: true });

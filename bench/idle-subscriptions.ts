// What idle subscriptions cost the gateway in resident memory, apart from
// their sockets: 1,000 vmChanged subscriptions over 10 WebSockets (100 each,
// as Apollo Client and urql put a client's subscriptions on one socket),
// against the same 10 sockets with none. Twice: every subscription the same
// document (a dashboard's), and each with a filter of its own (one VM each),
// so that none shares its operation. bench/subscribers.ts measures the other
// shape, one socket per subscription.
//
// IDLE_SOCKETS (10), IDLE_PER_SOCKET (100, at most subscriptions.maxPerConnection).
import { WebSocket } from 'ws';

import { BENCH_AUTH, machine, mib, printTable, settledRss, spawnGateway } from './support.js';

const SOCKETS = Number(process.env['IDLE_SOCKETS'] ?? 10);
const PER_SOCKET = Number(process.env['IDLE_PER_SOCKET'] ?? 100);
const QUERY = `subscription($filter: VmChangeFilter) {
  vmChanged(filter: $filter) { cursor at type changes powerState vm { id name powerState } }
}`;

/** Opens a socket and waits for its connection_ack. */
function openSocket(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, 'graphql-transport-ws', { perMessageDeflate: false });
    ws.on('open', () => ws.send('{"type":"connection_init"}'));
    ws.on('message', (data: Buffer) => {
      const text = data.toString('utf8');
      if (text.startsWith('{"type":"connection_ack"')) resolve(ws);
      else if (text.includes('"type":"ping"')) ws.send('{"type":"pong"}');
      else if (text.includes('"type":"error"')) reject(new Error(`refused: ${text.slice(0, 300)}`));
    });
    ws.on('close', (code) => reject(new Error(`closed with ${code}`)));
    ws.on('error', reject);
  });
}

/** A gateway of its own: its RSS and JavaScript heap with the sockets only, then with the subscriptions too. */
async function measure(variablesOf: (i: number) => Record<string, unknown>) {
  const gw = await spawnGateway({
    auth: BENCH_AUTH,
    platforms: [{ id: 'lv', kind: 'libvirt', uri: 'test:///default' }],
  });
  try {
    await gw.waitSynced(60_000);
    const url = gw.url.replace(/^http/, 'ws');
    const sockets = await Promise.all(Array.from({ length: SOCKETS }, () => openSocket(url)));
    const none = await settledRss(gw.pid, 7);
    const heapNone = gw.heap()?.heapUsedMiB ?? NaN;
    let n = 0;
    for (const ws of sockets) {
      for (let j = 0; j < PER_SOCKET; j++, n++) {
        const payload = { query: QUERY, variables: variablesOf(n) };
        ws.send(JSON.stringify({ id: String(j), type: 'subscribe', payload }));
      }
    }
    // Long enough for every subscribe to be parsed, validated and started.
    await new Promise((r) => setTimeout(r, 3_000));
    const idle = await settledRss(gw.pid, 7);
    const heapIdle = gw.heap()?.heapUsedMiB ?? NaN;
    for (const ws of sockets) ws.terminate();
    return { none, idle, heap: heapIdle - heapNone };
  } finally {
    await gw.stop();
  }
}

console.log(`idle subscriptions on ${machine()}: ${SOCKETS} sockets x ${PER_SOCKET} subscriptions`);
const shared = await measure(() => ({ filter: null }));
// A variable the document does not declare changes nothing but the operation's key: none is shared.
const distinct = await measure((i) => ({ filter: null, subscriber: i }));
const total = SOCKETS * PER_SOCKET;
const per1000 = (mibs: number) => mib((mibs * 1000) / total);
printTable(
  `${total} idle vmChanged subscriptions over ${SOCKETS} sockets: one gateway each`,
  [
    'subscriptions',
    'RSS, sockets only',
    'RSS with the subscriptions',
    'RSS per 1,000',
    'JS heap used per 1,000',
    'goal',
  ],
  [shared, distinct].map((r, i) => [
    i === 0 ? 'all the same document' : 'each an operation of its own',
    mib(r.none),
    mib(r.idle),
    per1000(r.idle - r.none),
    per1000(r.heap),
    i === 0 ? '≤ 10 MB per 1,000' : '',
  ]),
);

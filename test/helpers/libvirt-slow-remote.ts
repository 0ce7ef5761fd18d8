import { type Server, type Socket, connect, createServer } from 'node:net';

import { type Libvirtd, libvirtd } from './libvirtd.js';

/**
 * A remote libvirt host with a slow network: a real libvirtd serving the test
 * driver, reached over TCP through a proxy that holds back every chunk from
 * the daemon by `delayMs`. Each chunk is delayed on its own timer, so replies
 * to calls in flight at once arrive together, as over a long link, and a call
 * is slow only while it waits for its reply: on the client side libvirt
 * blocks its thread exactly as it would for a distant host.
 */
export interface SlowRemote {
  /** test+tcp://127.0.0.1:<proxy port>/default */
  uri: string;
  /** Delay added to every chunk from the daemon to the client; may change at any time. */
  delayMs: number;
  stop(): Promise<void>;
}

export async function slowRemote(): Promise<SlowRemote> {
  const daemon: Libvirtd = libvirtd();
  await daemon.start();
  // The daemon listens on a unix socket only; the proxy is the TCP side.
  const socketPath = new URL(daemon.uri).searchParams.get('socket')!;
  const open = new Set<Socket>();
  const remote = { uri: '', delayMs: 0, stop };

  const timers = new Set<NodeJS.Timeout>();

  const server: Server = createServer((client) => {
    const upstream = connect({ path: socketPath });
    open.add(client).add(upstream);
    // Chunks keep their order even when delayMs shrinks between two of them.
    let lastRelease = 0;
    let inFlight = 0;
    let upstreamEnded = false;
    const endWhenDrained = () => {
      if (upstreamEnded && inFlight === 0) client.end();
    };
    client.on('data', (chunk: Buffer) => upstream.write(chunk));
    client.on('end', () => upstream.end());
    upstream.on('data', (chunk: Buffer) => {
      const release = Math.max(Date.now() + remote.delayMs, lastRelease);
      lastRelease = release;
      inFlight += 1;
      const timer = setTimeout(() => {
        timers.delete(timer);
        inFlight -= 1;
        if (!client.destroyed) client.write(chunk);
        endWhenDrained();
      }, release - Date.now());
      timers.add(timer);
    });
    upstream.on('end', () => {
      upstreamEnded = true;
      endWhenDrained();
    });
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    client.on('close', () => upstream.destroy());
    for (const s of [client, upstream]) s.on('close', () => open.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('the proxy has no TCP port');
  remote.uri = `test+tcp://127.0.0.1:${address.port}/default`;

  async function stop(): Promise<void> {
    for (const t of timers) clearTimeout(t);
    for (const s of open) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await daemon.stop();
  }
  return remote;
}

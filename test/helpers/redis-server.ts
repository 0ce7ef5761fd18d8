import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { closedPort } from './gateway.js';

/** A real redis-server (Debian's) on a free loopback port, with its own directory, which a test may kill and restart. */
export interface RedisServer {
  url: string;
  port: number;
  start(): Promise<void>;
  /** SIGKILL: nothing more is written. */
  kill(): Promise<void>;
  /** SHUTDOWN-free stop (SIGTERM: with appendonly, the file is flushed). */
  stop(): Promise<void>;
  /** Runs one command through redis-cli-free RESP and returns the raw reply. */
  command(...args: string[]): Promise<string>;
}

export async function redisServer(options: { persistent?: boolean } = {}): Promise<RedisServer> {
  const port = await closedPort();
  const dir = mkdtempSync(join(tmpdir(), 'virt-graph-redis-'));
  let child: ChildProcess | null = null;
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    options.persistent ? 'yes' : 'no',
    '--appendfsync',
    'always',
    '--daemonize',
    'no',
    '--loglevel',
    'warning',
  ];
  const command = (...parts: string[]) =>
    new Promise<string>((resolve, reject) => {
      const socket = createConnection({ host: '127.0.0.1', port });
      let out = '';
      socket.on('data', (d) => {
        out += d.toString();
        socket.end();
      });
      socket.on('end', () => resolve(out));
      socket.on('error', reject);
      socket.write(`*${parts.length}\r\n${parts.map((p) => `$${Buffer.byteLength(p)}\r\n${p}\r\n`).join('')}`);
    });
  const server: RedisServer = {
    url: `redis://127.0.0.1:${port}`,
    port,
    async start() {
      child = spawn('redis-server', args, { stdio: 'ignore' });
      const deadline = Date.now() + 10_000;
      for (;;) {
        try {
          if ((await command('PING')).startsWith('+PONG')) return;
        } catch {
          // not listening yet
        }
        if (Date.now() > deadline) throw new Error('redis-server did not start');
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async kill() {
      await stopWith('SIGKILL');
    },
    async stop() {
      await stopWith('SIGTERM');
    },
    command,
  };
  async function stopWith(signal: NodeJS.Signals) {
    const c = child;
    child = null;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill(signal);
    await exited;
  }
  await server.start();
  return server;
}

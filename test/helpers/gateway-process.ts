import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { closedPort } from './gateway.js';

/** The gateway as its own process, started from a configuration, so a test can kill it hard. */
export interface GatewayProcess {
  url: string;
  child: ChildProcess;
  /** Everything it printed so far. */
  output(): string;
  /** POSTs a GraphQL request. */
  query<T = Record<string, unknown>>(
    query: string,
    variables?: Record<string, unknown>,
  ): Promise<{ data?: T; errors?: unknown[] }>;
  /** SIGKILL: no draining, no chance to write anything more. */
  kill(): Promise<void>;
}

export async function spawnGateway(config: Record<string, unknown>): Promise<GatewayProcess> {
  const port = await closedPort();
  const file = join(mkdtempSync(join(tmpdir(), 'virt-graph-config-')), 'gateway.yaml');
  // JSON is YAML.
  writeFileSync(file, JSON.stringify({ ...config, server: { host: '127.0.0.1', port }, logging: { level: 'debug' } }));
  // One process (no tsx wrapper in between), so a kill reaches the gateway itself.
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', '--config', file], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`${base}/readyz`)).status === 200) break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null) throw new Error(`the gateway exited before it was ready:\n${out}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the gateway did not become ready:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url: `${base}/graphql`,
    child,
    output: () => out,
    async query(query, variables) {
      const res = await fetch(`${base}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query, variables }),
      });
      return (await res.json()) as never;
    },
    async kill() {
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

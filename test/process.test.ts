import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { closedPort } from './helpers/gateway.js';

// The gateway as a user runs it: README command 1 (scripts/run-gateway.sh),
// which builds dist/ when a source changed and serves the embedded default
// with a local vCenter simulator.
function run(
  args: string[],
  env: Record<string, string>,
): { child: ChildProcess; output: () => string; stdout: () => string; exited: Promise<number | null> } {
  const child = spawn('bash', ['scripts/run-gateway.sh', ...args], {
    // As an operator runs it: vitest's NODE_ENV=test would hide what production mode does.
    env: { ...process.env, NODE_ENV: 'production', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    stdout += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, output: () => out, stdout: () => stdout, exited };
}

/** Setup's checks and a type-checked build of dist/ (when a source changed) come before the gateway starts. */
const START_MS = 150_000;

async function waitReady(base: string): Promise<void> {
  const deadline = Date.now() + START_MS;
  for (;;) {
    try {
      if ((await fetch(`${base}/readyz`)).status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error('gateway did not become ready');
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('the gateway process', () => {
  let gateway: ReturnType<typeof run>;
  let base: string;

  beforeAll(async () => {
    const port = await closedPort();
    base = `http://127.0.0.1:${port}`;
    gateway = run([], { PORT: String(port), VIRT_GRAPH_CONFIG: '' });
    await waitReady(base);
  }, START_MS + 10_000);
  afterAll(() => {
    if (gateway.child.exitCode === null) gateway.child.kill('SIGKILL');
  });

  it('connects the libvirt test driver and the local vCenter simulator', async () => {
    const ready = (await (await fetch(`${base}/readyz`)).json()) as { platforms: { id: string; status: string }[] };
    expect(ready.platforms).toEqual([
      { id: 'libvirt-test', status: 'CONNECTED' },
      { id: 'vcsim', status: 'CONNECTED' },
    ]);
  });

  it('answers the README query with the domains and VMs of both', async () => {
    const res = await fetch(`${base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        query: '{ virtualMachines(first: 5) { totalCount edges { node { name powerState host { name } } } } }',
      }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      errors?: unknown;
      data: { virtualMachines: { totalCount: number; edges: { node: { name: string; powerState: string } }[] } };
    };
    expect(body.errors).toBeUndefined();
    // The test driver's one domain and the simulator's four VMs.
    expect(body.data.virtualMachines.totalCount).toBe(5);
    expect(body.data.virtualMachines.edges.map((e) => e.node.name)).toContain('test');
  });

  it('serves the explorer page and its assets from local files', async () => {
    const page = await fetch(`${base}/graphql`, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('GraphiQL');
    const assets = [...html.matchAll(/(?:src|href)="(explorer\/[a-z-]+\.(?:js|css))"/g)].map((m) => m[1]!);
    expect(assets.length).toBeGreaterThanOrEqual(5);
    for (const src of assets) {
      const asset = await fetch(new URL(src, `${base}/graphql`));
      expect(asset.status, src).toBe(200);
      expect((await asset.arrayBuffer()).byteLength, src).toBeGreaterThan(1000);
    }
    expect((await fetch(`${base}/explorer/../../package.json`)).status).toBe(404);
  });

  it('answers health probes', async () => {
    expect(await (await fetch(`${base}/healthz`)).json()).toEqual({ status: 'ok' });
    const ready = (await (await fetch(`${base}/readyz`)).json()) as { status: string; platforms: unknown[] };
    expect(ready).toMatchObject({ status: 'ready', phase: 'serving' });
    expect((await fetch(`${base}/nothing-here`)).status).toBe(404);
  });

  it('writes structured JSON logs', () => {
    const lines = gateway
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'));
    expect(lines.length).toBeGreaterThan(0);
    const listening = lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l['msg'] === 'gateway listening');
    expect(listening).toMatchObject({ level: 30, service: 'virt-graph', url: `${base}/graphql` });
    // Setup, the build and the script itself speak on stderr: stdout is the log stream alone.
    const stdout = gateway.stdout().trim().split('\n');
    expect(stdout.filter((l) => !l.startsWith('{'))).toEqual([]);
  });

  it('shuts down gracefully on SIGTERM, and the simulator with it', async () => {
    gateway.child.kill('SIGTERM');
    expect(await gateway.exited).toBe(0);
    expect(gateway.output()).toContain('gateway stopped');
    const deadline = Date.now() + 10_000;
    for (;;) {
      const open = await fetch('https://127.0.0.1:8989/sdk').then(
        () => true,
        (e: { cause?: { code?: string } }) => e.cause?.code !== 'ECONNREFUSED',
      );
      if (!open) break;
      if (Date.now() > deadline) throw new Error('the simulator outlived the gateway');
      await new Promise((r) => setTimeout(r, 200));
    }
  });
});

describe('a bad configuration file', () => {
  it(
    'stops the start with a message naming the key (exit 3)',
    async () => {
      const path = join(mkdtempSync(join(tmpdir(), 'virt-graph-bad-')), 'bad.yaml');
      writeFileSync(path, 'platforms:\n  - { id: a, kind: libvirt, uri: "test:///default", passwrd: x }\n');
      const proc = run(['--config', path], {});
      expect(await proc.exited).toBe(3);
      expect(proc.output()).toMatch(/invalid configuration .*\n\s+platforms\[0\]: Unrecognized key: "passwrd"/);
    },
    START_MS,
  );
});

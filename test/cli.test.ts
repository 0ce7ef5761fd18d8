import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { type Server, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { closedPort } from './helpers/gateway.js';

// The compiled gateway as production runs it: plain Node on dist/, no
// TypeScript runtime. It is compiled into a package root of its own (the
// repository's package.json, node_modules, native addon and schema linked in),
// so the test neither races a build of dist/ by scripts/run-gateway.sh nor
// finds a file only because it sits beside src/. Type errors are the
// typecheck's business: --noCheck keeps the build to what this test needs.

const root = resolve(import.meta.dirname, '..');
const pkg = mkdtempSync(join(tmpdir(), 'virt-graph-dist-'));
const cli = join(pkg, 'dist/cli/virt-graph.js');
const run = promisify(execFile);

/** What the gateway must not inherit from whoever runs the tests. */
const CLEAN_ENV: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !['VIRT_GRAPH_CONFIG', 'PORT', 'HOST', 'LOG_LEVEL'].includes(k)),
);
const ENV = { ...CLEAN_ENV, NODE_ENV: 'production' };

interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface Running {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  finished: Promise<Finished>;
}

function start(command: string, args: string[], env: NodeJS.ProcessEnv = ENV, detached = false): Running {
  const child = spawn(command, args, { cwd: pkg, env, stdio: ['ignore', 'pipe', 'pipe'], detached });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const finished = new Promise<Finished>((done) =>
    child.on('close', (code, signal) => done({ code, signal, stdout, stderr })),
  );
  return { child, stdout: () => stdout, stderr: () => stderr, finished };
}

function virtGraph(args: string[], env?: NodeJS.ProcessEnv): Promise<Finished> {
  return start(process.execPath, [cli, ...args], env).finished;
}

function configFile(name: string, config: Record<string, unknown>): string {
  const file = join(pkg, name);
  // JSON is YAML.
  writeFileSync(file, JSON.stringify(config));
  return file;
}

const LIBVIRT_TEST = { id: 'lab', kind: 'libvirt', uri: 'test:///default' };

async function waitReady(base: string, gateway: Running): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`${base}/readyz`)).status === 200) return;
    } catch {
      // not listening yet
    }
    if (gateway.child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`the gateway did not become ready:\n${gateway.stdout()}${gateway.stderr()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Stack frames as Node prints them. */
const STACK = /^\s+at /m;

/** The JSON log lines with this message. */
function logged(stdout: string, msg: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l['msg'] === msg);
}

beforeAll(async () => {
  for (const entry of ['package.json', 'node_modules', 'native', 'schema'])
    symlinkSync(join(root, entry), join(pkg, entry));
  await run(
    join(root, 'node_modules/.bin/tsc'),
    ['-p', 'tsconfig.build.json', '--noCheck', '--outDir', join(pkg, 'dist')],
    {
      cwd: root,
    },
  );
}, 120_000);

afterAll(() => rmSync(pkg, { recursive: true, force: true }));

// Each of these is a process of its own, mostly starting Node and loading modules: run side by side.
describe.concurrent('the virt-graph command', () => {
  it('prints its usage with --help', async ({ expect }) => {
    const r = await virtGraph(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: virt-graph /);
    for (const command of ['serve', 'check-config', 'test-connection', 'encrypt-secret', 'print-schema']) {
      expect(r.stdout).toContain(command);
    }
    expect(r.stderr).toBe('');
  });

  it('refuses an unknown option in one line, with the usage and exit code 2', async ({ expect }) => {
    const r = await virtGraph(['serve', '--bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n')[0]).toBe("virt-graph: unknown option '--bogus'");
    expect(r.stderr).toContain('Usage: virt-graph serve');
    expect(r.stderr).not.toMatch(STACK);
    expect(r.stdout).toBe('');
  });

  it('checks a valid configuration and connects its platforms (exit 0)', async ({ expect }) => {
    const file = configFile('valid.yaml', { platforms: [LIBVIRT_TEST] });
    const r = await virtGraph(['check-config', file]);
    expect(r.stderr).toBe('');
    expect(r.stdout.split('\n')).toEqual([
      `${file}: valid (1 platform)`,
      expect.stringMatching(/^lab: CONNECTED \(libvirt test:\/\/\/default; /),
      '1 of 1 platform connected',
      '',
    ]);
    expect(r.code).toBe(0);
  });

  it('names the bad key of an invalid configuration (exit 3)', async ({ expect }) => {
    const file = configFile('invalid.yaml', { platforms: [{ ...LIBVIRT_TEST, passwrd: 'x' }] });
    const r = await virtGraph(['check-config', file]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(`invalid configuration (${file})`);
    expect(r.stderr).toContain('platforms[0]: Unrecognized key: "passwrd"');
    expect(r.stderr).not.toMatch(STACK);
  });

  it('reports an unreachable platform in one line (exit 4)', async ({ expect }) => {
    const port = await closedPort();
    const vsphere = { id: 'vc', kind: 'vsphere', url: `https://127.0.0.1:${port}/sdk`, username: 'u', password: 'p' };
    const file = configFile('unreachable.yaml', { platforms: [LIBVIRT_TEST, vsphere] });
    const r = await virtGraph(['check-config', file, '--timeout', '5']);
    expect(r.code).toBe(4);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toContainEqual(expect.stringMatching(/^lab: CONNECTED /));
    expect(lines).toContainEqual(
      expect.stringMatching(new RegExp(`^vc: UNREACHABLE \\(vsphere https://127.0.0.1:${port}/sdk\\): .*ECONNREFUSED`)),
    );
    expect(lines.at(-1)).toBe('1 of 2 platforms connected');
  });

  it('says in one line that the port is in use (exit 5)', async ({ expect }) => {
    const taken: Server = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const { port } = taken.address() as { port: number };
    try {
      const file = configFile('taken.yaml', { platforms: [LIBVIRT_TEST], server: { port } });
      const r = await virtGraph(['serve', '--config', file]);
      expect(r.code).toBe(5);
      expect(r.stderr).toBe(`virt-graph: cannot listen on 127.0.0.1:${port}: address already in use\n`);
    } finally {
      taken.close();
    }
  });

  it('blames a bad PORT on the environment variable, not on the file (exit 3)', async ({ expect }) => {
    const file = configFile('port.yaml', { platforms: [LIBVIRT_TEST] });
    const r = await virtGraph(['serve', '--config', file], { ...ENV, PORT: 'abc' });
    expect(r.code).toBe(3);
    expect(r.stderr).toBe(
      'virt-graph: invalid environment variable PORT="abc": expected a port number from 0 to 65535\n',
    );
  });
});

describe('stopping', () => {
  /** A gateway started by `command`, with debug logs, ready to serve. */
  async function serving(
    command: string,
    args: (file: string) => string[],
    detached = false,
  ): Promise<{ gateway: Running; base: string }> {
    const port = await closedPort();
    const file = configFile(`serve-${port}.yaml`, {
      platforms: [LIBVIRT_TEST],
      server: { port },
      logging: { level: 'debug' },
    });
    const gateway = start(command, args(file), ENV, detached);
    const base = `http://127.0.0.1:${port}`;
    await waitReady(base, gateway);
    return { gateway, base };
  }

  it('drains a request in flight on SIGTERM (sent twice, as npm may) and exits 0, once', async () => {
    const { gateway, base } = await serving(process.execPath, (file) => [cli, 'serve', '--config', file]);
    const body = JSON.stringify({ query: '{ virtualMachines(first: 5) { totalCount } }' });
    const socket = connect(Number(new URL(base).port), '127.0.0.1');
    let response = '';
    socket.on('data', (d: Buffer) => (response += d.toString()));
    const closed = new Promise<void>((r) => socket.on('close', () => r()));
    await new Promise<void>((r) => socket.once('connect', () => r()));
    // A request whose body is still on its way when the signal comes: in flight by any definition.
    socket.write(
      `POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, 10)}`,
    );
    await new Promise((r) => setTimeout(r, 300));
    gateway.child.kill('SIGTERM');
    // The same stop again, as npm passes on a signal its process group already got: not a second one.
    await new Promise((r) => setTimeout(r, 100));
    gateway.child.kill('SIGTERM');
    const deadline = Date.now() + 10_000;
    while (logged(gateway.stdout(), 'gateway shutting down').length === 0) {
      if (Date.now() > deadline) throw new Error(`no shutdown:\n${gateway.stdout()}${gateway.stderr()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    // New connections are refused while the one in flight is still served.
    while (
      await fetch(`${base}/healthz`).then(
        () => true,
        () => false,
      )
    ) {
      if (Date.now() > deadline) throw new Error('the gateway still accepts connections while draining');
      await new Promise((r) => setTimeout(r, 50));
    }
    socket.write(body.slice(10));
    const finished = await gateway.finished;
    await closed;
    expect(response).toMatch(/^HTTP\/1\.1 200 /);
    expect(response).toContain('"totalCount":1');
    expect(finished.code).toBe(0);
    expect(logged(finished.stdout, 'stopping')).toHaveLength(1);
    expect(logged(finished.stdout, 'signal repeated within a second; already stopping')).toHaveLength(1);
    expect(logged(finished.stdout, 'gateway stopped')).toHaveLength(1);
    expect(finished.stdout).not.toContain('second signal');
    expect(finished.stderr).toBe('');
  });

  it('npm start: SIGTERM to npm reaches the gateway, which drains and exits 0', async () => {
    const { gateway } = await serving('npm', (file) => ['start', '--silent', '--', '--config', file]);
    gateway.child.kill('SIGTERM');
    const finished = await gateway.finished;
    expect(finished.code).toBe(0);
    expect(logged(finished.stdout, 'gateway stopped')).toHaveLength(1);
    // No npm banner in the log stream: every line is JSON.
    expect(
      finished.stdout
        .trim()
        .split('\n')
        .every((l) => l.startsWith('{')),
    ).toBe(true);
  });

  it('npm start: SIGTERM to the process group, which npm passes on again, stops it once', async () => {
    const { gateway } = await serving('npm', (file) => ['start', '--silent', '--', '--config', file], true);
    // As Ctrl-C in a terminal or systemd's control-group kill: every process of the group gets it.
    process.kill(-gateway.child.pid!, 'SIGTERM');
    const finished = await gateway.finished;
    expect(finished.code).toBe(0);
    expect(logged(finished.stdout, 'stopping')).toHaveLength(1);
    expect(finished.stdout).not.toContain('second signal');
    expect(logged(finished.stdout, 'gateway stopped')).toHaveLength(1);
  });
});

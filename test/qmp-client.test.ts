import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { type Server, type Socket, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import {
  type QmpAddress,
  QmpClient,
  type QmpClientOptions,
  formatQmpAddress,
  parseQmpAddress,
} from '../src/datasources/qmp/client.js';
import {
  QmpAddressError,
  QmpCommandError,
  QmpConnectionError,
  type QmpEvent,
  QmpLineSplitter,
  QmpProtocolError,
  QmpTimeoutError,
  describeQmpError,
  isQmpEvent,
  parseQmpMessage,
} from '../src/datasources/qmp/protocol.js';
import { closedPort } from './helpers/gateway.js';
import { rejection } from './helpers/rejection.js';

// The client against real QEMU 7.2 processes (qemu-system-x86_64, no guest:
// `-machine none` has no CPU and needs no kernel), and, for what QEMU never
// does (garbage, wrong greetings, endless lines), against a scripted peer on
// a unix socket. Everything listens on a private directory or on loopback.

const dirs: string[] = [];
function privateDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'qmp-'));
  dirs.push(dir);
  return dir;
}

// ---------------------------------------------------------------- QEMU

interface Qemu {
  address: string;
  pid: number;
  /** Resolves when the process has exited. */
  exited: Promise<void>;
  signal(sig: NodeJS.Signals): void;
}

const qemus: ChildProcess[] = [];
const VM_UUID = randomUUID();

/** Starts a QEMU with its QMP monitor on a unix socket (or TCP port) and waits until it answers. */
async function startQemu(args: string[], qmp: { tcpPort: number } | null = null): Promise<Qemu> {
  const dir = privateDir();
  const address = qmp ? `tcp://127.0.0.1:${qmp.tcpPort}` : join(dir, 'qmp.sock');
  const monitor = qmp
    ? `tcp:127.0.0.1:${qmp.tcpPort},server=on,wait=off`
    : `unix:${join(dir, 'qmp.sock')},server=on,wait=off`;
  const child = spawn('qemu-system-x86_64', ['-nodefaults', '-display', 'none', '-qmp', monitor, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  qemus.push(child);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`qemu exited with ${child.exitCode}: ${stderr}`);
    try {
      const probe = await QmpClient.connect(address, { connectTimeoutMs: 2_000 });
      await probe.close();
      break;
    } catch (e) {
      if (!(e instanceof QmpConnectionError && e.failure === 'UNREACHABLE') || Date.now() > deadline) throw e;
      await sleep(25);
    }
  }
  return { address, pid: child.pid ?? -1, exited, signal: (sig) => child.kill(sig) };
}

afterAll(async () => {
  await Promise.all(
    qemus.map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await gone;
    }),
  );
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

// Every client a test opens is destroyed after it, so that the next test finds
// the monitor free (QEMU serves one QMP client per socket at a time).
const clients: QmpClient[] = [];
async function connect(address: string | QmpAddress, options: QmpClientOptions = {}): Promise<QmpClient> {
  const client = await QmpClient.connect(address, options);
  clients.push(client);
  return client;
}
afterEach(async () => {
  for (const c of clients.splice(0)) {
    c.destroy();
    await c.closed;
  }
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves once `check` holds, polling; fails after `ms`. */
async function until(check: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Every event a client receives, in order. */
function record(client: QmpClient): QmpEvent[] {
  const events: QmpEvent[] = [];
  client.onEvent((e) => events.push(e));
  return events;
}

// ---------------------------------------------------------------- addresses

describe('parseQmpAddress', () => {
  it('reads unix paths and tcp://host:port', () => {
    expect(parseQmpAddress('/run/qemu/vm1.sock')).toEqual({ kind: 'unix', path: '/run/qemu/vm1.sock' });
    expect(parseQmpAddress('unix:/run/qemu/vm1.sock')).toEqual({ kind: 'unix', path: '/run/qemu/vm1.sock' });
    expect(parseQmpAddress('unix:///run/qemu/vm1.sock')).toEqual({ kind: 'unix', path: '/run/qemu/vm1.sock' });
    expect(parseQmpAddress('relative/qmp.sock')).toEqual({ kind: 'unix', path: 'relative/qmp.sock' });
    expect(parseQmpAddress('tcp://127.0.0.1:4444')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 4444 });
    expect(parseQmpAddress('tcp://qemu-host.example:65535/')).toEqual({
      kind: 'tcp',
      host: 'qemu-host.example',
      port: 65535,
    });
    expect(parseQmpAddress('tcp://[::1]:4444')).toEqual({ kind: 'tcp', host: '::1', port: 4444 });
    expect(formatQmpAddress(parseQmpAddress('tcp://[::1]:4444'))).toBe('tcp://[::1]:4444');
    expect(formatQmpAddress(parseQmpAddress('/x.sock'))).toBe('unix:/x.sock');
  });

  it.each([
    ['', /empty/],
    ['tcp://127.0.0.1', /no port/],
    ['tcp://127.0.0.1:', /no port/],
    ['tcp://:4444', /no host/],
    ['tcp://127.0.0.1:0', /outside 1 to 65535/],
    ['tcp://127.0.0.1:70000', /outside 1 to 65535/],
    ['tcp://127.0.0.1:44a', /expected tcp:\/\/host:port/],
    ['tcp://user@127.0.0.1:4444', /expected tcp:\/\/host:port/],
    ['tcp://127.0.0.1:4444/path', /expected tcp:\/\/host:port/],
    ['tcp://[not-v6]:4444', /not an IPv6 address/],
    ['tcp://bad_host!:4444', /expected tcp:\/\/host:port|not a host name/],
    ['tcp:127.0.0.1:4444', /write a TCP address as tcp:\/\/host:port/],
    ['http://127.0.0.1:4444', /scheme http is not supported/],
    ['unix:', /no socket path/],
    ['unix://relative', /absolute path/],
    ['/tmp/a\0b', /NUL/],
    [`/tmp/${'x'.repeat(120)}`, /at most 107 bytes/],
  ])('refuses %j', (input, reason) => {
    let error: unknown;
    try {
      parseQmpAddress(input);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(QmpAddressError);
    expect((error as Error).message).toMatch(reason);
  });

  it('rejects connect() with the same error, before touching the network', async () => {
    expect(await rejection(QmpClient.connect('tcp://localhost'))).toBeInstanceOf(QmpAddressError);
  });
});

// ---------------------------------------------------------------- real QEMU

describe('against QEMU 7.2 (-machine none, paused with -S)', () => {
  let qemu: Qemu;
  let imageDir: string;
  beforeAll(async () => {
    imageDir = privateDir();
    qemu = await startQemu([
      '-machine',
      'none',
      '-S',
      '-m',
      '64',
      '-name',
      'test-vm',
      '-uuid',
      VM_UUID,
      // A drive without a device: a medium for query-block and query-blockstats.
      '-drive',
      'if=none,id=drive0,driver=null-co,read-only=on',
    ]);
  });

  it('reads the greeting and negotiates capabilities', async () => {
    const client = await connect(qemu.address);
    expect(client.state).toBe('ready');
    expect(client.greeting.version.qemu).toMatchObject({ major: 7, minor: 2 });
    expect(client.greeting.version.package).toMatch(/Debian/);
    expect(client.greeting.capabilities).toContain('oob');
    expect(client.address).toEqual({ kind: 'unix', path: qemu.address });
  });

  it('answers query-name, query-uuid, query-status and the inventory queries, typed', async () => {
    const client = await connect(qemu.address);
    expect(await client.execute('query-name')).toEqual({ name: 'test-vm' });
    expect(await client.execute('query-uuid')).toEqual({ UUID: VM_UUID });
    const status = await client.execute('query-status');
    expect(status).toMatchObject({ running: false, status: 'prelaunch' });
    // -machine none has no CPU on x86 (and refuses -cpu: "apic-id property was not initialized properly").
    expect(await client.execute('query-cpus-fast')).toEqual([]);
    expect(await client.execute('query-memory-size-summary')).toEqual({
      'base-memory': 64 * 1024 * 1024,
      'plugged-memory': 0,
    });
    const [drive] = await client.execute('query-block');
    expect(drive).toMatchObject({ device: 'drive0', removable: true, locked: false });
    expect(drive?.inserted).toMatchObject({ drv: 'null-co', ro: true, image: { format: 'null-co' } });
    expect(drive?.inserted?.image['virtual-size']).toBeGreaterThan(0);
    const [stats] = await client.execute('query-blockstats');
    expect(stats?.device).toBe('drive0');
    expect(stats?.stats).toMatchObject({ rd_bytes: 0, wr_operations: 0, timed_stats: [] });
  });

  it('reports STOP and RESUME for stop and cont, before their replies', async () => {
    const client = await connect(qemu.address);
    const seen: string[] = [];
    client.onEvent((e) => seen.push(`event ${e.event}`));
    const resumes: QmpEvent<'RESUME'>[] = [];
    client.onEvent('RESUME', (e) => resumes.push(e));

    await client.execute('cont').then(() => seen.push('cont returned'));
    expect(await client.execute('query-status')).toMatchObject({ running: true, status: 'running' });
    await client.execute('stop').then(() => seen.push('stop returned'));
    expect(await client.execute('query-status')).toMatchObject({ running: false, status: 'paused' });

    expect(seen).toEqual(['event RESUME', 'cont returned', 'event STOP', 'stop returned']);
    expect(resumes[0]?.data).toEqual({});
    const at = resumes[0]?.timestamp.getTime() ?? 0;
    expect(Math.abs(at - Date.now())).toBeLessThan(60_000);
  });

  it('reports RESET and POWERDOWN with their data', async () => {
    const client = await connect(qemu.address);
    const events = record(client);
    await client.execute('system_reset');
    await client.execute('system_powerdown');
    const reset = events.find((e) => isQmpEvent(e, 'RESET'));
    expect(reset?.data).toEqual({ guest: false, reason: 'host-qmp-system-reset' });
    // Without ACPI (machine none) nothing answers the button, and QEMU keeps running.
    expect(events.map((e) => e.event)).toContain('POWERDOWN');
    expect(await client.execute('query-name')).toEqual({ name: 'test-vm' });
  });

  it('follows a job through JOB_STATUS_CHANGE, events interleaved with replies', async () => {
    const client = await connect(qemu.address);
    const statuses: string[] = [];
    client.onEvent('JOB_STATUS_CHANGE', (e) => {
      if (e.data.id === 'create1') statuses.push(e.data.status);
    });
    // blockdev-create is a job even under -machine none: it writes a 1 MiB file.
    const image = join(imageDir, 'disk.img');
    await client.execute('blockdev-create', {
      'job-id': 'create1',
      options: { driver: 'file', filename: image, size: 1024 * 1024 },
    });
    await until(() => statuses.includes('concluded'), 'the job to conclude');
    await client.execute('job-dismiss', { id: 'create1' });
    await until(() => statuses.includes('null'), 'the job to be dismissed');
    expect(statuses).toEqual(['created', 'running', 'waiting', 'pending', 'concluded', 'null']);
    expect(existsSync(image)).toBe(true);
  });

  it('rejects an unknown command with QmpCommandError CommandNotFound, and carries on', async () => {
    const client = await connect(qemu.address);
    const e = await rejection(client.execute('no-such-command'));
    expect(e).toBeInstanceOf(QmpCommandError);
    expect(e).toMatchObject({ command: 'no-such-command', errorClass: 'CommandNotFound' });
    expect((e as QmpCommandError).desc).toMatch(/no-such-command has not been found/);
    expect((e as QmpCommandError).is('CommandNotFound')).toBe(true);
    expect(describeQmpError(e)).toEqual({
      message: 'QEMU: The command no-such-command has not been found',
      extensions: { qmpClass: 'CommandNotFound' },
    });

    // Arguments the map would refuse for query-name: naming the reply type lets them through, to QEMU.
    const bad = await rejection(client.execute<unknown>('query-name', { unexpected: 1 }));
    expect(bad).toMatchObject({ errorClass: 'GenericError', desc: "Parameter 'unexpected' is unexpected" });
    expect(client.state).toBe('ready');
    expect(await client.execute('query-name')).toEqual({ name: 'test-vm' });
  });

  it('refuses arguments nested deeper than QEMU reads, before sending them', async () => {
    const client = await connect(qemu.address);
    const nest = (levels: number): Record<string, unknown> => (levels === 1 ? {} : { a: nest(levels - 1) });
    // 1023 levels reach QEMU, which reads them and refuses the parameter.
    const deepest = await rejection(client.execute<unknown>('query-name', nest(1023)));
    expect(deepest).toMatchObject({ errorClass: 'GenericError', desc: "Parameter 'a' is unexpected" });
    // One more and QEMU would answer with errors carrying no id; the client does not send it.
    const tooDeep = await rejection(client.execute<unknown>('query-name', nest(1024)));
    expect(tooDeep).toBeInstanceOf(RangeError);
    expect(await rejection(client.execute<unknown>('query-name', { n: 1n }))).toBeInstanceOf(TypeError);
    expect(await client.execute('query-name')).toEqual({ name: 'test-vm' });
  });

  it('times a command out while QEMU is frozen, and stays usable', async () => {
    const client = await connect(qemu.address);
    qemu.signal('SIGSTOP');
    let timedOut: unknown;
    const started = Date.now();
    try {
      timedOut = await rejection(client.execute('query-name', undefined, { timeoutMs: 300 }));
    } finally {
      qemu.signal('SIGCONT');
    }
    expect(timedOut).toBeInstanceOf(QmpTimeoutError);
    expect(timedOut).toMatchObject({ command: 'query-name', timeoutMs: 300 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(client.commandsInFlight).toBe(0);
    // The late answer to the timed-out command arrives first, and is dropped.
    expect(await client.execute('query-uuid')).toEqual({ UUID: VM_UUID });
    expect(client.state).toBe('ready');
  });

  it('matches many concurrent commands to their replies by id', async () => {
    const client = await connect(qemu.address);
    const kinds = ['query-name', 'query-uuid', 'query-status', 'no-such-command'] as const;
    const calls = Array.from({ length: 400 }, (_, i) => kinds[i % kinds.length] ?? 'query-name');
    const results = await Promise.allSettled(calls.map((c: string) => client.execute(c)));
    results.forEach((r, i) => {
      switch (calls[i]) {
        case 'query-name':
          expect(r).toEqual({ status: 'fulfilled', value: { name: 'test-vm' } });
          break;
        case 'query-uuid':
          expect(r).toEqual({ status: 'fulfilled', value: { UUID: VM_UUID } });
          break;
        case 'query-status':
          expect(r).toMatchObject({ status: 'fulfilled', value: { running: false } });
          break;
        default:
          expect(r).toMatchObject({ status: 'rejected', reason: { errorClass: 'CommandNotFound' } });
      }
    });
    expect(client.commandsInFlight).toBe(0);
  });

  it('serves one client at a time: a second one gets no greeting until the first leaves', async () => {
    const first = await connect(qemu.address);
    const second = await rejection(connect(qemu.address, { connectTimeoutMs: 500 }));
    expect(second).toBeInstanceOf(QmpConnectionError);
    expect(second).toMatchObject({ failure: 'TIMEOUT' });
    expect((second as Error).message).toMatch(/no QMP greeting within 500 ms \(is another client connected/);
    await first.close();
    expect(await (await connect(qemu.address)).execute('query-name')).toEqual({ name: 'test-vm' });
  });

  it('closes gracefully: commands in flight are answered, new ones refused', async () => {
    const client = await connect(qemu.address);
    const inFlight = client.execute('query-name');
    const closing = client.close();
    expect(client.state).toBe('closing');
    const refused = await rejection(client.execute('query-uuid'));
    expect(refused).toMatchObject({ name: 'QmpConnectionError', failure: 'CLOSED' });
    expect(await inFlight).toEqual({ name: 'test-vm' });
    expect(await closing).toEqual({ kind: 'client-closed' });
    expect(await client.closed).toEqual({ kind: 'client-closed' });
    expect(client.state).toBe('closed');
  });

  it('destroys at once, rejecting commands in flight; reconnecting is a new client', async () => {
    const events: string[] = [];
    const options: QmpClientOptions = { onEvent: (e) => events.push(e.event) };
    const client = await connect(qemu.address, options);
    const inFlight = client.execute('query-name');
    client.destroy();
    const e = await rejection(inFlight);
    expect(e).toBeInstanceOf(QmpConnectionError);
    expect(e).toMatchObject({ failure: 'CLOSED' });
    expect((e as Error).message).toMatch(/query-name: no answer from unix:.*the client closed the connection/);
    expect(await client.closed).toEqual({ kind: 'client-closed' });

    const again = await connect(client.address, client.options);
    await again.execute('cont');
    await again.execute('stop');
    expect(events).toEqual(['RESUME', 'STOP']);
  });
});

describe('against QEMU over TCP (-machine pc, two vCPUs, paused)', () => {
  it('connects to tcp://127.0.0.1:PORT and lists the vCPUs', async () => {
    const port = await closedPort();
    const qemu = await startQemu(['-machine', 'pc,accel=tcg', '-smp', '2', '-m', '64', '-S'], { tcpPort: port });
    const client = await connect(qemu.address);
    expect(client.address).toEqual({ kind: 'tcp', host: '127.0.0.1', port });
    // Without -name, QEMU has no name to give.
    expect(await client.execute('query-name')).toEqual({});
    expect(await client.execute('query-uuid')).toEqual({ UUID: '00000000-0000-0000-0000-000000000000' });
    const cpus = await client.execute('query-cpus-fast');
    expect(cpus.map((c) => [c['cpu-index'], c.target, c.props?.['core-id']])).toEqual([
      [0, 'x86_64', 0],
      [1, 'x86_64', 1],
    ]);
    for (const cpu of cpus) expect(cpu['thread-id']).toBeGreaterThan(0);
    await client.execute('quit');
    expect(await client.closed).toEqual({ kind: 'peer-closed' });
    await qemu.exited;
  });
});

describe('when QEMU goes away', () => {
  it('quit: answered, SHUTDOWN reported when QEMU sends it, then the connection closes and commands behind quit are rejected', async () => {
    const qemu = await startQemu(['-machine', 'none', '-S']);
    const client = await connect(qemu.address);
    const shutdowns: QmpEvent<'SHUTDOWN'>[] = [];
    client.onEvent('SHUTDOWN', (e) => shutdowns.push(e));
    // Sent in one go: QEMU answers quit and exits without reading the rest.
    const quit = client.execute('quit');
    const behind = [client.execute('query-status'), client.execute('query-name')];
    expect(await quit).toEqual({});
    for (const e of await Promise.all(behind.map(rejection))) {
      expect(e).toBeInstanceOf(QmpConnectionError);
      expect(e).toMatchObject({ failure: 'CLOSED' });
      expect((e as Error).message).toMatch(/the peer closed the connection/);
    }
    // QEMU may exit (or reset the connection) before its SHUTDOWN event is out; once sent, it is told.
    expect(shutdowns.length).toBeLessThanOrEqual(1);
    for (const e of shutdowns) expect(e.data).toEqual({ guest: false, reason: 'host-qmp-quit' });
    expect(await client.closed).toEqual({ kind: 'peer-closed' });
    expect(await rejection(client.execute('query-name'))).toMatchObject({ failure: 'CLOSED' });
    await qemu.exited;
    // QEMU removes its socket when it exits cleanly.
    expect(await rejection(QmpClient.connect(qemu.address))).toMatchObject({ failure: 'UNREACHABLE' });
  });

  it('killed: commands in flight are rejected; the socket file it leaves refuses connections', async () => {
    const qemu = await startQemu(['-machine', 'none', '-S']);
    const client = await connect(qemu.address);
    qemu.signal('SIGSTOP');
    const inFlight = client.execute('query-status');
    await sleep(50);
    qemu.signal('SIGKILL');
    const e = await rejection(inFlight);
    expect(e).toBeInstanceOf(QmpConnectionError);
    expect(await client.closed).toEqual({ kind: 'peer-closed' });
    await qemu.exited;

    expect(existsSync(qemu.address)).toBe(true);
    const stale = await rejection(QmpClient.connect(qemu.address));
    expect(stale).toMatchObject({ name: 'QmpConnectionError', failure: 'UNREACHABLE' });
    expect((stale as Error).message).toMatch(/nothing listens on .*ECONNREFUSED.*QEMU that has exited/);
  });
});

describe('connection failures', () => {
  it('a missing socket path', async () => {
    const path = join(privateDir(), 'absent.sock');
    const e = await rejection(QmpClient.connect(path));
    expect(e).toBeInstanceOf(QmpConnectionError);
    expect(e).toMatchObject({ failure: 'UNREACHABLE', address: `unix:${path}` });
    expect((e as Error).message).toBe(
      `no socket at ${path} (ENOENT): is QEMU running with -qmp unix:${path},server=on?`,
    );
    expect(describeQmpError(e)?.extensions).toEqual({ transport: 'UNREACHABLE' });
  });

  it('a refused TCP port', async () => {
    const port = await closedPort();
    const e = await rejection(QmpClient.connect(`tcp://127.0.0.1:${port}`));
    expect(e).toBeInstanceOf(QmpConnectionError);
    expect(e).toMatchObject({ failure: 'UNREACHABLE' });
    expect((e as Error).message).toBe(`nothing listens on 127.0.0.1:${port} (ECONNREFUSED)`);
  });

  it('bad timeouts and limits', async () => {
    expect(await rejection(QmpClient.connect('/x.sock', { connectTimeoutMs: 0 }))).toBeInstanceOf(RangeError);
    expect(await rejection(QmpClient.connect('/x.sock', { maxLineBytes: 0 }))).toBeInstanceOf(RangeError);
    expect(await rejection(QmpClient.connect('/x.sock', { commandTimeoutMs: Number.NaN }))).toBeInstanceOf(RangeError);
  });
});

// ---------------------------------------------------------------- a scripted peer

const GREETING =
  '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}\r\n';

interface Command {
  execute: string;
  id: number;
  arguments?: Record<string, unknown>;
}

/** The server's side of one connection: commands in, lines out. */
class Peer {
  private buffer = '';
  private readonly queue: Command[] = [];
  private waiter: ((c: Command) => void) | null = null;

  constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffer += d.toString();
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) !== -1) {
        const command = JSON.parse(this.buffer.slice(0, nl)) as Command;
        this.buffer = this.buffer.slice(nl + 1);
        if (this.waiter) {
          this.waiter(command);
          this.waiter = null;
        } else this.queue.push(command);
      }
    });
    socket.on('error', () => undefined);
  }

  next(): Promise<Command> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  send(text: string | Buffer): void {
    this.socket.write(text);
  }
}

const servers: Server[] = [];
afterAll(() => {
  for (const s of servers) s.close();
});

/**
 * A peer on a private unix socket. Unless told otherwise, it greets and
 * answers qmp_capabilities like QEMU; then `script` runs for the connection.
 */
async function scriptedPeer(
  script: (peer: Peer) => void | Promise<void>,
  handshake: 'qemu' | 'none' = 'qemu',
): Promise<string> {
  const path = join(privateDir(), 'peer.sock');
  const server = createServer((socket) => {
    const peer = new Peer(socket);
    void (async () => {
      if (handshake === 'qemu') {
        peer.send(GREETING);
        const caps = await peer.next();
        peer.send(`{"return": {}, "id": ${caps.id}}\r\n`);
      }
      await script(peer);
    })();
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return path;
}

describe('against a peer that is not QEMU', () => {
  it.each([
    ['a line that is not JSON', 'hello\r\n', /a line that is not JSON: "hello"/],
    ['a JSON value that is not an object', '[1,2]\r\n', /not a JSON object/],
    ['an object of no known kind', '{"foo": 1}\r\n', /neither a greeting, a reply nor an event/],
    ['a reply and an event in one', '{"return": {}, "event": "STOP"}\r\n', /neither a greeting, a reply nor an event/],
    ['a reply to an id never sent', '{"return": {}, "id": 999}\r\n', /a reply to id 999, which no command/],
    ['an id of another type', '{"return": {}, "id": "1"}\r\n', /carries no id of this client/],
    [
      'an error without an id (QEMU could not read a command)',
      '{"error": {"class": "GenericError", "desc": "JSON parse error"}}\r\n',
      /carries no id of this client/,
    ],
    ['an error without a class', '{"error": {"desc": "x"}, "id": 1}\r\n', /without a class and a description/],
    ['an event without a timestamp', '{"event": "STOP"}\r\n', /a malformed event/],
    ['an event with data that is no object', '{"event": "STOP", "data": 3, "timestamp": {}}\r\n', /malformed event/],
    ['a second greeting', GREETING, /a second greeting/],
  ])('%s: closes with QmpProtocolError and rejects the command in flight', async (_what, line, reason) => {
    const address = await scriptedPeer(async (peer) => {
      await peer.next();
      peer.send(line);
    });
    const client = await connect(address);
    const e = await rejection(client.execute('query-status'));
    expect(e).toBeInstanceOf(QmpConnectionError);
    expect((e as QmpConnectionError).cause).toBeInstanceOf(QmpProtocolError);
    const closed = await client.closed;
    expect(closed.kind).toBe('protocol-error');
    expect(closed.kind === 'protocol-error' && closed.error.message).toMatch(reason);
    expect(client.state).toBe('closed');
  });

  it('refuses a line that grows past 16 MiB without a newline', async () => {
    let bytesSent = 0;
    const address = await scriptedPeer(async (peer) => {
      await peer.next();
      const block = Buffer.alloc(1024 * 1024, 0x78);
      // Streams until the client hangs up, a little more than the cap at most.
      while (!peer.socket.destroyed && bytesSent < 64 * 1024 * 1024) {
        if (!peer.socket.write(block)) await new Promise((r) => peer.socket.once('drain', r));
        bytesSent += block.length;
        await new Promise((r) => setImmediate(r));
      }
    });
    const client = await connect(address);
    const e = await rejection(client.execute('query-status'));
    expect((e as QmpConnectionError).cause).toBeInstanceOf(QmpProtocolError);
    const closed = await client.closed;
    expect(closed.kind === 'protocol-error' && closed.error.message).toMatch(/a line longer than 16777216 bytes/);
    expect(bytesSent).toBeLessThan(24 * 1024 * 1024);
  });

  it('refuses a greeting that is not QMP, and a peer that greets nothing in time', async () => {
    const ssh = await scriptedPeer((peer) => peer.send('SSH-2.0-OpenSSH_9.2\r\n'), 'none');
    const e = await rejection(QmpClient.connect(ssh));
    expect(e).toBeInstanceOf(QmpProtocolError);
    expect((e as Error).message).toMatch(/not JSON: "SSH-2.0-OpenSSH_9.2"/);

    const early = await scriptedPeer((peer) => peer.send('{"return": {}, "id": 1}\r\n'), 'none');
    expect(await rejection(QmpClient.connect(early))).toMatchObject({
      name: 'QmpProtocolError',
      message: expect.stringMatching(/expected the QMP greeting/),
    });

    const wrong = await scriptedPeer((peer) => peer.send('{"QMP": {"version": "7.2"}}\r\n'), 'none');
    expect(await rejection(QmpClient.connect(wrong))).toMatchObject({
      message: expect.stringMatching(/a malformed QMP greeting/),
    });

    const silent = await scriptedPeer(() => undefined, 'none');
    const timeout = await rejection(QmpClient.connect(silent, { connectTimeoutMs: 200 }));
    expect(timeout).toMatchObject({ name: 'QmpConnectionError', failure: 'TIMEOUT' });

    const refusing = await scriptedPeer(async (peer) => {
      peer.send(GREETING);
      const caps = await peer.next();
      peer.send(`{"error": {"class": "CommandNotFound", "desc": "nope"}, "id": ${caps.id}}\r\n`);
    }, 'none');
    expect(await rejection(QmpClient.connect(refusing))).toMatchObject({
      name: 'QmpProtocolError',
      message: expect.stringMatching(/refused capabilities negotiation \(CommandNotFound: nope\)/),
    });

    const hangsUp = await scriptedPeer((peer) => {
      peer.socket.end();
    }, 'none');
    expect(await rejection(QmpClient.connect(hangsUp))).toMatchObject({
      name: 'QmpConnectionError',
      failure: 'CLOSED',
      message: expect.stringMatching(/closed the connection during the QMP handshake/),
    });
  });

  it('a peer that closes mid-command: the command is rejected, the reason is peer-closed', async () => {
    const address = await scriptedPeer(async (peer) => {
      await peer.next();
      peer.socket.end();
    });
    const client = await connect(address);
    const e = await rejection(client.execute('query-status'));
    expect(e).toBeInstanceOf(QmpConnectionError);
    expect((e as Error).message).toMatch(/query-status: no answer from unix:.*: the peer closed the connection/);
    expect(await client.closed).toEqual({ kind: 'peer-closed' });
  });

  it('quit resolves when the peer hangs up without its reply (as QEMU 7.2 often does); other commands do not', async () => {
    const address = await scriptedPeer(async (peer) => {
      await peer.next();
      await peer.next();
      peer.send(
        '{"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}, "timestamp": {"seconds": 1, "microseconds": 0}}\r\n',
      );
      peer.socket.end();
    });
    const client = await connect(address);
    const quit = client.execute('quit');
    const after = client.execute('query-status');
    expect(await quit).toEqual({});
    expect(await rejection(after)).toMatchObject({ name: 'QmpConnectionError', failure: 'CLOSED' });
    expect(await client.closed).toEqual({ kind: 'peer-closed' });
  });

  it('reassembles replies cut anywhere, and reads several messages from one chunk', async () => {
    const address = await scriptedPeer(async (peer) => {
      const a = await peer.next();
      const b = await peer.next();
      const c = await peer.next();
      // b's reply in one chunk with an event and a blank line, then c's and a's byte by
      // byte (a UTF-8 character cut in the middle), out of order.
      peer.send(
        `{"return": {"name": "b"}, "id": ${b.id}}\r\n\r\n` +
          '{"event": "STOP", "timestamp": {"seconds": 1700000000, "microseconds": 123456}}\r\n',
      );
      const rest = Buffer.from(
        `{"return": {"name": "c"}, "id": ${c.id}}\r\n{"return": {"name": "ä✓"}, "id": ${a.id}}\r\n`,
      );
      for (const byte of rest) {
        peer.send(Buffer.from([byte]));
        await new Promise((r) => setImmediate(r));
      }
    });
    const client = await connect(address);
    const events = record(client);
    const [a, b, c] = await Promise.all([
      client.execute('query-name'),
      client.execute('query-name'),
      client.execute('query-name'),
    ]);
    expect([a, b, c]).toEqual([{ name: 'ä✓' }, { name: 'b' }, { name: 'c' }]);
    expect(events).toEqual([{ event: 'STOP', data: {}, timestamp: new Date(1_700_000_000_123) }]);
  });

  it('a listener that throws does not disturb other listeners or the connection', async () => {
    const address = await scriptedPeer(async (peer) => {
      for (;;) {
        const cmd = await peer.next();
        peer.send(`{"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 0}}\r\n`);
        peer.send(`{"return": {}, "id": ${cmd.id}}\r\n`);
      }
    });
    const failures: unknown[] = [];
    const client = await connect(address, { onListenerError: (e) => failures.push(e) });
    const seen: string[] = [];
    client.onEvent(() => {
      throw new Error('listener bug');
    });
    const off = client.onEvent('RESUME', (e) => seen.push(e.event));
    await client.execute('cont');
    off();
    await client.execute('cont');
    expect(seen).toEqual(['RESUME']);
    expect(failures).toHaveLength(2);
    expect(client.state).toBe('ready');
  });

  it('drops the late answer to a timed-out command, and only that', async () => {
    const address = await scriptedPeer(async (peer) => {
      const slow = await peer.next();
      const next = await peer.next();
      peer.send(`{"return": {"late": true}, "id": ${slow.id}}\r\n`);
      peer.send(`{"return": {"late": false}, "id": ${next.id}}\r\n`);
      // The same late id again is no longer expected by anyone.
      const third = await peer.next();
      peer.send(`{"return": {}, "id": ${slow.id}}\r\n`);
      void third;
    });
    const client = await connect(address);
    expect(await rejection(client.execute('slow', undefined, { timeoutMs: 100 }))).toBeInstanceOf(QmpTimeoutError);
    expect(await client.execute('next')).toEqual({ late: false });
    const third = await rejection(client.execute('third'));
    expect((third as QmpConnectionError).cause).toBeInstanceOf(QmpProtocolError);
  });
});

describe('QmpLineSplitter and parseQmpMessage', () => {
  it('splits on LF, strips CR, and keeps partial lines until they end', () => {
    const s = new QmpLineSplitter(64);
    expect(s.push(Buffer.from('{"a"'))).toEqual([]);
    expect(s.pendingBytes).toBe(4);
    expect(s.push(Buffer.from(':1}\r\n{"b":2}\n{"c"')).map(String)).toEqual(['{"a":1}', '{"b":2}']);
    expect(s.push(Buffer.from(':3}\r\n')).map(String)).toEqual(['{"c":3}']);
    expect(s.pendingBytes).toBe(0);
  });

  it('refuses a line past the cap as soon as it passes it', () => {
    const s = new QmpLineSplitter(8);
    expect(s.push(Buffer.from('12345678\n')).map(String)).toEqual(['12345678']);
    s.push(Buffer.from('12345'));
    expect(() => s.push(Buffer.from('6789'))).toThrow(QmpProtocolError);
  });

  it('classifies messages', () => {
    expect(parseQmpMessage('')).toBeNull();
    expect(parseQmpMessage('{"return": [1], "id": 3}')).toEqual({ kind: 'return', id: 3, value: [1] });
    expect(parseQmpMessage('{"error": {"class": "GenericError", "desc": "d"}, "id": 4}')).toEqual({
      kind: 'error',
      id: 4,
      error: { class: 'GenericError', desc: 'd' },
    });
    const event = parseQmpMessage(
      '{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}, "timestamp": {"seconds": 2, "microseconds": 5000}}',
    );
    expect(event).toEqual({
      kind: 'event',
      event: { event: 'SHUTDOWN', data: { guest: true, reason: 'guest-shutdown' }, timestamp: new Date(2005) },
    });
    expect(() => parseQmpMessage('{"__proto__": {"return": 1}}')).toThrow(/neither a greeting/);
  });
});

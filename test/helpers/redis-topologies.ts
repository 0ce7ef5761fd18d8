import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { closedPort } from './gateway.js';

// Redis Cluster and Redis Sentinel made of real redis-server processes
// (Debian's), each on free loopback ports with a private directory, for
// tests that configure the gateway with `redis.cluster` or `redis.sentinels`.

const run = promisify(execFile);
const HOST = '127.0.0.1';

export interface HostPort {
  host: string;
  port: number;
}

export interface RedisClusterProcesses {
  /** Every master of the cluster (each holds a third of the slots, with three). */
  nodes: HostPort[];
  /** Runs one command on one node through redis-cli and returns its output. */
  command(node: HostPort, ...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

export interface RedisSentinelProcesses {
  sentinels: HostPort[];
  /** The name the sentinels know the master by. */
  name: 'mymaster';
  master: HostPort;
  /** Runs one command through redis-cli and returns its output. */
  command(node: HostPort, ...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

/** One redis-cli command (the reply as redis-cli prints it, without a trailing newline). */
async function cli(node: HostPort, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', node.host, '-p', String(node.port), ...args], { timeout: 5_000 });
  return stdout.trimEnd();
}

/** Free ports, all different (one closedPort() may hand out a port another just did). */
async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await closedPort());
  return [...ports];
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not answering yet
    }
    if (Date.now() > deadline) throw new Error(`${what} in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The processes a topology started, stopped together (SIGTERM, then SIGKILL if one lingers). */
class Processes {
  private readonly children: ChildProcess[] = [];

  constructor(readonly dir: string) {}

  start(args: string[], log: string): ChildProcess {
    const child = spawn('redis-server', [...args, '--logfile', log], { stdio: 'ignore' });
    this.children.push(child);
    return child;
  }

  /** Fails with the process's log when it exited, so that a wrong option is told at once. */
  alive(child: ChildProcess, log: string): void {
    if (child.exitCode !== null || child.signalCode !== null) {
      let text = '';
      try {
        text = readFileSync(log, 'utf8');
      } catch {
        // no log written
      }
      throw new Error(`redis-server exited (${child.exitCode ?? child.signalCode}):\n${text}`);
    }
  }

  async stop(): Promise<void> {
    const running = this.children.splice(0).filter((c) => c.exitCode === null && c.signalCode === null);
    await Promise.all(
      running.map(async (c) => {
        const exited = new Promise((r) => c.once('exit', r));
        c.kill('SIGTERM');
        const timer = setTimeout(() => c.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }),
    );
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Options every server shares: loopback only, nothing written to disk but its log and cluster state. */
function serverArgs(port: number, dir: string): string[] {
  return [
    '--port',
    String(port),
    '--bind',
    HOST,
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    'no',
    '--daemonize',
    'no',
    '--loglevel',
    'warning',
  ];
}

/**
 * A Redis Cluster of `nodes` masters (no replicas), created with
 * `redis-cli --cluster create`; resolves once every node says
 * cluster_state:ok with all slots served.
 */
export async function redisCluster(nodes = 3): Promise<RedisClusterProcesses> {
  const processes = new Processes(mkdtempSync(join(tmpdir(), 'virt-graph-redis-cluster-')));
  try {
    // A node's cluster bus listens on its own port too (cluster-port), rather than port + 10000, which may be taken.
    const ports = await freePorts(nodes * 2);
    const members: HostPort[] = [];
    const started: { child: ChildProcess; log: string; node: HostPort }[] = [];
    for (let i = 0; i < nodes; i++) {
      const dir = join(processes.dir, `node-${i}`);
      mkdirSync(dir);
      const port = ports[2 * i]!;
      const log = join(dir, 'redis.log');
      const child = processes.start(
        [
          ...serverArgs(port, dir),
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(dir, 'nodes.conf'),
          '--cluster-port',
          String(ports[2 * i + 1]!),
          '--cluster-node-timeout',
          '5000',
        ],
        log,
      );
      const node = { host: HOST, port };
      members.push(node);
      started.push({ child, log, node });
    }
    for (const { child, log, node } of started) {
      await waitFor(`cluster node ${node.port} did not answer PING`, async () => {
        processes.alive(child, log);
        return (await cli(node, 'PING')) === 'PONG';
      });
    }
    await run(
      'redis-cli',
      ['--cluster', 'create', ...members.map((m) => `${m.host}:${m.port}`), '--cluster-replicas', '0', '--cluster-yes'],
      { timeout: 30_000 },
    );
    await waitFor(
      'the cluster did not reach cluster_state:ok',
      async () => {
        for (const node of members) {
          const info = await cli(node, 'CLUSTER', 'INFO');
          if (!/^cluster_state:ok\r?$/m.test(info) || !/^cluster_slots_ok:16384\r?$/m.test(info)) return false;
          if (!new RegExp(`^cluster_known_nodes:${nodes}\\r?$`, 'm').test(info)) return false;
        }
        return true;
      },
      30_000,
    );
    return { nodes: members, command: cli, stop: () => processes.stop() };
  } catch (e) {
    await processes.stop();
    throw e;
  }
}

/**
 * A master redis-server and one sentinel monitoring it as `mymaster`
 * (quorum 1); resolves once the sentinel has read the master's INFO and
 * reports it up, as a master, at its address.
 */
export async function redisSentinel(): Promise<RedisSentinelProcesses> {
  const processes = new Processes(mkdtempSync(join(tmpdir(), 'virt-graph-redis-sentinel-')));
  try {
    const [masterPort, sentinelPort] = (await freePorts(2)) as [number, number];
    const master = { host: HOST, port: masterPort };
    const sentinel = { host: HOST, port: sentinelPort };

    const masterDir = join(processes.dir, 'master');
    mkdirSync(masterDir);
    const masterLog = join(masterDir, 'redis.log');
    const masterChild = processes.start(serverArgs(masterPort, masterDir), masterLog);
    await waitFor('the master did not answer PING', async () => {
      processes.alive(masterChild, masterLog);
      return (await cli(master, 'PING')) === 'PONG';
    });

    // A sentinel rewrites its configuration file: it gets one of its own.
    const sentinelDir = join(processes.dir, 'sentinel');
    mkdirSync(sentinelDir);
    const conf = join(sentinelDir, 'sentinel.conf');
    const sentinelLog = join(sentinelDir, 'sentinel.log');
    writeFileSync(
      conf,
      [
        `port ${sentinelPort}`,
        `bind ${HOST}`,
        `dir ${sentinelDir}`,
        'daemonize no',
        'loglevel warning',
        `sentinel monitor mymaster ${HOST} ${masterPort} 1`,
        'sentinel down-after-milliseconds mymaster 5000',
        'sentinel failover-timeout mymaster 60000',
        '',
      ].join('\n'),
    );
    const sentinelChild = processes.start([conf, '--sentinel'], sentinelLog);
    await waitFor('the sentinel did not report the master', async () => {
      processes.alive(sentinelChild, sentinelLog);
      const addr = (await cli(sentinel, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'mymaster')).split('\n');
      if (addr[0] !== HOST || addr[1] !== String(masterPort)) return false;
      // redis-cli prints the reply's field/value pairs one a line.
      const lines = (await cli(sentinel, 'SENTINEL', 'MASTER', 'mymaster')).split('\n');
      const field = (name: string) => lines[lines.indexOf(name) + 1];
      // info-refresh is the time since the sentinel last read the master's INFO (huge before the first).
      return (
        field('flags') === 'master' && Number(field('info-refresh')) < 10_000 && field('role-reported') === 'master'
      );
    });
    return { sentinels: [sentinel], name: 'mymaster', master, command: cli, stop: () => processes.stop() };
  } catch (e) {
    await processes.stop();
    throw e;
  }
}

import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { connect as tlsConnect } from 'node:tls';

import { pino } from 'pino';

import { VsphereSession } from '../../src/datasources/vsphere/session.js';

/** The inventory as govmomi (VMware's Go client) sees it: the tests' oracle. */
export interface Oracle {
  vms: Record<
    string,
    {
      name: string;
      uuid: string;
      instanceUuid: string;
      powerState: string;
      numCpu: number;
      coresPerSocket: number;
      memoryMB: number;
      guestId: string;
      guestFullName: string;
      hardwareVersion: string;
      template: boolean;
      host: string;
      resourcePool: string;
      datastores: string[];
      networks: string[];
      toolsStatus: string;
      ipAddress: string;
      /** When it last powered on (RFC 3339); empty when vCenter has none. */
      bootTime: string;
      hostName: string;
      disks: number;
      nics: number;
      snapshots: string[] | null;
      currentSnapshot: string;
    }
  >;
  hosts: Record<
    string,
    {
      name: string;
      parent: string;
      connectionState: string;
      powerState: string;
      inMaintenanceMode: boolean;
      cpuModel: string;
      cpuMhz: number;
      numCpuCores: number;
      numCpuThreads: number;
      numCpuPkgs: number;
      memorySize: number;
      version: string;
      build: string;
      uuid: string;
    }
  >;
  datastores: Record<
    string,
    {
      name: string;
      type: string;
      capacity: number;
      freeSpace: number;
      uncommitted: number;
      accessible: boolean;
      url: string;
    }
  >;
  clusters: Record<string, { name: string; parent: string; drsEnabled: boolean | null; haEnabled: boolean | null }>;
  datacenters: Record<string, { name: string }>;
  networks: Record<string, { name: string }>;
  networkTypes: Record<string, string>;
}

export interface VcsimOptions {
  dc?: number;
  cluster?: number;
  clusterHost?: number;
  host?: number;
  vm?: number;
  /** Extra resource pools per cluster (`DC0_C0_RP1`, ...), each with its own VMs. */
  pool?: number;
  ds?: number;
  pg?: number;
  esx?: boolean;
  username?: string;
  password?: string;
  /** Serve on this loopback port (to come back where a killed simulator was). */
  port?: number;
  /** Slow methods down, in ms: { PowerOnVM_Task: 1500 }. */
  methodDelay?: Record<string, number>;
  /**
   * vCenter's config.vpxd.stats.maxQueryMetrics: the most entity x counter
   * pairs of a historical QueryPerf (0 or less: no limit).
   * @default 64
   */
  perfMaxQueryMetrics?: number;
  /**
   * vCenter's historical intervals, `samplingPeriod:lengthSeconds[:disabled]`
   * comma-separated (default: vCenter's 300:86400,1800:604800,7200:2592000,86400:31536000).
   */
  perfIntervals?: string;
}

export interface Vcsim {
  /** https://127.0.0.1:PORT/sdk */
  url: string;
  port: number;
  certFile: string;
  username: string;
  password: string;
  oracle: Oracle;
  /** Stops the simulator and waits for it to exit. */
  stop(): Promise<void>;
  /** Asks govmomi to read the inventory again (after mutations) and returns it. */
  refreshOracle(): Promise<Oracle>;
  /** SIGSTOP / SIGCONT: a simulator that accepts connections but never answers. */
  pause(): void;
  resume(): void;
}

export const VCSIM_BINARY = join(process.cwd(), '.cache/bin/vcsim-fixture');

/** How long a simulator may take to print its ready line (a large inventory takes a few seconds). */
const READY_TIMEOUT_MS = 30_000;

/**
 * One TLS key and certificate for every simulator of this test process, so a
 * simulator started again on the port of a stopped one (`port`) serves the
 * certificate that gateways configured with the first one's `certFile` trust.
 */
let sharedKeyFile: string | undefined;
function keyFile(): string {
  sharedKeyFile ??= join(mkdtempSync(join(tmpdir(), 'virt-graph-vcsim-tls-')), 'key.pem');
  return sharedKeyFile;
}

/** An error's message with its code and causes, for failures that must say what went wrong. */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    if (e instanceof Error) {
      const code = (e as { code?: unknown }).code;
      parts.push(typeof code === 'string' && !e.message.includes(code) ? `${e.message} (${code})` : e.message);
      e = e.cause;
    } else {
      parts.push(String(e));
      break;
    }
  }
  return parts.join(': ') || 'unknown error';
}

/**
 * Completes a TLS handshake with the simulator, trusting only its
 * certificate, as the gateway does: a simulator this Node.js refuses (a key
 * too weak for its OpenSSL, say) fails the test here, naming why.
 */
export async function checkVcsimTls(url: string, certFile: string, timeoutMs = 10_000): Promise<void> {
  const { hostname, port } = new URL(url);
  const host = hostname.replace(/^\[|\]$/g, '');
  let ca: string;
  try {
    ca = readFileSync(certFile, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the simulator's certificate ${certFile}: ${describeError(err)}`);
  }
  await new Promise<void>((resolve, reject) => {
    const socket = tlsConnect({ host, port: Number(port), ca, servername: isIP(host) ? undefined : host });
    const fail = (err: unknown) => {
      socket.destroy();
      reject(
        new Error(
          `cannot reach the vCenter simulator at ${url} over TLS from Node.js ${process.version} ` +
            `(OpenSSL ${process.versions.openssl}): ${describeError(err)}. ` +
            'Rebuild it with `bash scripts/setup.sh` if its certificate is refused.',
        ),
      );
    };
    socket.setTimeout(timeoutMs, () => fail(new Error(`no TLS handshake within ${timeoutMs} ms`)));
    socket.on('error', fail);
    socket.once('secureConnect', () => {
      socket.setTimeout(0);
      socket.end();
      resolve();
    });
  });
}

/** Starts VMware's simulator as a real process on a free loopback port (built by scripts/setup.sh). */
export async function startVcsim(opts: VcsimOptions = {}): Promise<Vcsim> {
  if (!existsSync(VCSIM_BINARY)) {
    throw new Error(`the vCenter simulator is not built (${VCSIM_BINARY} is missing): run \`bash scripts/setup.sh\``);
  }
  const dir = mkdtempSync(join(tmpdir(), 'virt-graph-vcsim-'));
  const username = opts.username ?? 'gateway';
  const password = opts.password ?? 'vcsim-password';
  const oracleFile = join(dir, 'oracle.json');
  const certFile = join(dir, 'cert.pem');
  const args = [
    `-listen=127.0.0.1:${opts.port ?? 0}`,
    `-username=${username}`,
    `-password=${password}`,
    `-oracle=${oracleFile}`,
    `-cert=${certFile}`,
    `-key=${keyFile()}`,
    `-dc=${opts.dc ?? 1}`,
    `-cluster=${opts.cluster ?? 1}`,
    `-cluster-host=${opts.clusterHost ?? 3}`,
    `-host=${opts.host ?? 1}`,
    `-vm=${opts.vm ?? 2}`,
    `-ds=${opts.ds ?? 1}`,
    `-pg=${opts.pg ?? 1}`,
    `-pool=${opts.pool ?? 0}`,
    ...(opts.esx ? ['-esx'] : []),
    ...(opts.perfMaxQueryMetrics !== undefined ? [`-perf-max-query-metrics=${opts.perfMaxQueryMetrics}`] : []),
    ...(opts.perfIntervals !== undefined ? [`-perf-intervals=${opts.perfIntervals}`] : []),
    ...(opts.methodDelay
      ? [
          `-method-delay=${Object.entries(opts.methodDelay)
            .map(([m, ms]) => `${m}=${ms}`)
            .join(',')}`,
        ]
      : []),
  ];
  const child: ChildProcess = spawn(VCSIM_BINARY, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  // The simulator exits when its stdin closes; writing to a dead one must not crash the tests.
  child.stdin!.on('error', () => {});
  let spawnError: Error | undefined;
  // 'close' rather than 'exit': by then stderr has been read, for the message.
  const exited = new Promise<void>((resolve) => {
    child.once('close', () => resolve());
    child.on('error', (err) => {
      // Spawning failed (no 'close' follows), or a signal could not be sent.
      if (child.pid === undefined) {
        spawnError = err;
        resolve();
      }
    });
  });
  const alive = () => spawnError === undefined && child.exitCode === null && child.signalCode === null;
  const how = () =>
    spawnError
      ? `could not start (${describeError(spawnError)})`
      : `exited (${child.signalCode ?? `code ${child.exitCode}`})${stderr ? `: ${stderr.trim()}` : ''}`;
  const kill = async () => {
    if (alive()) {
      child.kill('SIGCONT');
      child.kill('SIGTERM');
    }
    await exited;
  };
  const lines = createInterface({ input: child.stdout! });

  let url: string;
  let oracle: Oracle;
  try {
    const line = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`the vCenter simulator printed no ready line within ${READY_TIMEOUT_MS} ms`)),
        READY_TIMEOUT_MS,
      );
      lines.once('line', (l) => {
        clearTimeout(timer);
        resolve(l);
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`the vCenter simulator ${how()}`));
      });
    });
    try {
      url = (JSON.parse(line) as { url: string }).url;
      new URL(url);
    } catch {
      throw new Error(`the vCenter simulator printed an unexpected ready line: ${line}`);
    }
    oracle = JSON.parse(readFileSync(oracleFile, 'utf8')) as Oracle;
    await checkVcsimTls(url, certFile);
  } catch (err) {
    await kill();
    throw err;
  }

  return {
    url,
    port: Number(new URL(url).port),
    certFile,
    username,
    password,
    oracle,
    refreshOracle: async () => {
      if (!alive()) throw new Error(`cannot refresh the oracle: the vCenter simulator ${how()}`);
      let onLine: (l: string) => void = () => {};
      try {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error('the vCenter simulator did not write the oracle within 30000 ms')),
            30_000,
          );
          onLine = (l: string) => {
            if (l.includes('"oracle"')) {
              clearTimeout(timer);
              resolve();
            }
          };
          lines.on('line', onLine);
          void exited.then(() => {
            clearTimeout(timer);
            reject(new Error(`cannot refresh the oracle: the vCenter simulator ${how()}`));
          });
          child.kill('SIGUSR1');
        });
      } finally {
        lines.off('line', onLine);
      }
      return JSON.parse(readFileSync(oracleFile, 'utf8')) as Oracle;
    },
    stop: kill,
    pause: () => {
      if (alive()) child.kill('SIGSTOP');
    },
    resume: () => {
      if (alive()) child.kill('SIGCONT');
    },
  };
}

/** What a gateway needs to log in to a simulator (ours, or a benchmark's large one). */
export type SimulatorLogin = Pick<Vcsim, 'url' | 'username' | 'password' | 'certFile'>;

/** A vSphere platform entry for a gateway configuration, pointing at a simulator. */
export function vspherePlatform(sim: SimulatorLogin, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: 'vc',
    kind: 'vsphere',
    url: sim.url,
    username: sim.username,
    password: sim.password,
    caFile: sim.certFile,
    ...extra,
  };
}

/** A session of the test's own on the simulator, for changes made behind the gateway's back. */
export function adminSession(sim: Vcsim): Promise<VsphereSession> {
  return VsphereSession.open({
    url: sim.url,
    username: sim.username,
    password: sim.password,
    caFile: sim.certFile,
    logger: pino({ level: 'silent' }),
  });
}

/** What govmomi's performance package read for one entity: the samples' times and each counter's values by name. */
export interface GovmomiPerfEntity {
  type: string;
  samples: { timestamp: string; interval: number }[] | null;
  series: Record<string, number[]>;
}

export interface GovmomiPerfQuery {
  entities: { type: string; value: string }[];
  /** Counter names (`cpu.usage.average`); those the simulator does not have are left out. */
  counters: readonly string[];
  intervalId: number;
  /** Exclusive. */
  start?: Date;
  /** Inclusive. */
  end?: Date;
  maxSample?: number;
}

/**
 * Reads performance counters from the simulator through govmomi's own
 * client (the fixture's -perf-query mode): the tests' oracle for QueryPerf.
 * Entities the answer leaves out are absent; a fault rejects.
 */
export async function govmomiPerf(
  sim: SimulatorLogin,
  q: GovmomiPerfQuery,
): Promise<Record<string, GovmomiPerfEntity>> {
  const url = new URL(sim.url);
  url.username = encodeURIComponent(sim.username);
  url.password = encodeURIComponent(sim.password);
  const args = [
    `-perf-query=${url.toString()}`,
    `-perf-entities=${q.entities.map((e) => `${e.type}:${e.value}`).join(',')}`,
    `-perf-counters=${q.counters.join(',')}`,
    `-perf-interval=${q.intervalId}`,
    ...(q.start ? [`-perf-start=${q.start.toISOString()}`] : []),
    ...(q.end ? [`-perf-end=${q.end.toISOString()}`] : []),
    ...(q.maxSample !== undefined ? [`-perf-max-sample=${q.maxSample}`] : []),
  ];
  const child = spawn(VCSIM_BINARY, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  });
  if (code !== 0) throw new Error(`govmomi's performance query failed (${code}): ${stderr.trim()}`);
  return JSON.parse(stdout) as Record<string, GovmomiPerfEntity>;
}

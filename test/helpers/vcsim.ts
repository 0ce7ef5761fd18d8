import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

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
  ds?: number;
  pg?: number;
  esx?: boolean;
  username?: string;
  password?: string;
  /** Serve on this loopback port (to come back where a killed simulator was). */
  port?: number;
  /** Slow methods down, in ms: { PowerOnVM_Task: 1500 }. */
  methodDelay?: Record<string, number>;
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

/** Starts VMware's simulator as a real process on a free loopback port (built by scripts/setup.sh). */
export async function startVcsim(opts: VcsimOptions = {}): Promise<Vcsim> {
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
    `-dc=${opts.dc ?? 1}`,
    `-cluster=${opts.cluster ?? 1}`,
    `-cluster-host=${opts.clusterHost ?? 3}`,
    `-host=${opts.host ?? 1}`,
    `-vm=${opts.vm ?? 2}`,
    `-ds=${opts.ds ?? 1}`,
    `-pg=${opts.pg ?? 1}`,
    ...(opts.esx ? ['-esx'] : []),
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
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const lines = createInterface({ input: child.stdout! });
  const line = await new Promise<string>((resolve, reject) => {
    lines.once('line', (l) => resolve(l));
    child.once('exit', (code) => reject(new Error(`vcsim exited with ${code}: ${stderr}`)));
  });
  const { url } = JSON.parse(line) as { url: string };
  return {
    url,
    port: Number(new URL(url).port),
    certFile,
    username,
    password,
    oracle: JSON.parse(readFileSync(oracleFile, 'utf8')) as Oracle,
    refreshOracle: async () => {
      const written = new Promise<void>((resolve) => {
        const onLine = (l: string) => {
          if (l.includes('"oracle"')) {
            lines.off('line', onLine);
            resolve();
          }
        };
        lines.on('line', onLine);
      });
      child.kill('SIGUSR1');
      await written;
      return JSON.parse(readFileSync(oracleFile, 'utf8')) as Oracle;
    },
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGCONT');
        child.kill('SIGTERM');
      }
      await exited;
    },
    pause: () => child.kill('SIGSTOP'),
    resume: () => child.kill('SIGCONT'),
  };
}

/** A vSphere platform entry for a gateway configuration, pointing at a simulator. */
export function vspherePlatform(sim: Vcsim, extra: Record<string, unknown> = {}): Record<string, unknown> {
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

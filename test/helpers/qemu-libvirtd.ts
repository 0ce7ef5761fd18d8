import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * A real libvirtd with the qemu driver, in system mode, that is the test's
 * own: its configuration, state, runtime, log and cache directories are
 * private (bind-mounted over libvirt's compiled-in paths inside a mount
 * namespace of its own), and it listens on a private socket. It runs in a
 * network namespace of its own too, so the bridges and firewall rules of
 * its networks live and die with it, and no guest traffic can leave. It
 * never touches a system daemon or the machine's /etc/libvirt, and every
 * guest it starts runs as root without a security driver. Needs root.
 */
export interface QemuLibvirtd {
  /** qemu+unix:///system?socket=... */
  uri: string;
  /** The daemon's private directory (guests' logs are under log/qemu/). */
  dir: string;
  start(): Promise<void>;
  /** SIGTERM: libvirtd stops; guests it started keep running (QEMU processes of their own), and start() brings it back to them. */
  stop(): Promise<void>;
  /** Stops the daemon and lets its namespaces go (destroy the guests first). */
  destroy(): Promise<void>;
  /** A process in the daemon's namespaces. */
  holderPid(): number;
  /** Runs virsh against this daemon. */
  virsh(...args: string[]): Promise<string>;
}

/** Where a peer daemon takes incoming migrations, in the network namespace it shares (libvirt refuses loopback). */
const MIGRATION_ADDRESS = '10.254.0.1';

/** libvirt's compiled-in paths for the system daemon, each replaced by a private directory. */
const PRIVATE_PATHS = {
  etc: '/etc/libvirt',
  lib: '/var/lib/libvirt',
  run: '/run/libvirt',
  log: '/var/log/libvirt',
  cache: '/var/cache/libvirt',
};

export interface QemuLibvirtdOptions {
  /**
   * A second host for migrations: this daemon shares the network namespace
   * (its bridges, its loopback) of `peerOf`, and has a mount namespace and a
   * host name of its own, so libvirt takes them for two hosts.
   */
  peerOf?: QemuLibvirtd;
  /** Directories this daemon sees empty, of its own (a host's local disks, at the same paths as another host's). */
  privateDirs?: string[];
}

export function qemuLibvirtd(name = 'qemu', options: QemuLibvirtdOptions = {}): QemuLibvirtd {
  const dir = mkdtempSync(join(tmpdir(), `virt-graph-${name}-libvirtd-`));
  for (const sub of Object.keys(PRIVATE_PATHS)) mkdirSync(join(dir, sub), { recursive: true });
  const sockets = join(dir, 'sock');
  mkdirSync(sockets);
  // The mount points must exist outside the namespace for the bind mounts.
  for (const path of Object.values(PRIVATE_PATHS)) mkdirSync(path, { recursive: true });
  writeFileSync(
    join(dir, 'etc', 'libvirtd.conf'),
    `unix_sock_dir = "${sockets}"\nunix_sock_rw_perms = "0700"\nauth_unix_ro = "none"\nauth_unix_rw = "none"\n` +
      `listen_tls = 0\nlisten_tcp = 0\nhost_uuid = "${randomUuid()}"\n`,
  );
  writeFileSync(
    join(dir, 'etc', 'qemu.conf'),
    [
      'user = "root"',
      'group = "root"',
      'dynamic_ownership = 0',
      'remember_owner = 0',
      'security_driver = "none"',
      // QEMU's output goes to files (no virtlogd to run).
      'stdio_handler = "file"',
      // No private /dev per guest: not needed here, and it wants more privileges than a test has.
      'namespaces = []',
      // A migration to this host comes over the shared network namespace, to the address given to it there.
      ...(options.peerOf ? [`migration_host = "${MIGRATION_ADDRESS}"`] : []),
    ].join('\n') + '\n',
  );
  // Debian's libvirt resolves its default guest user before it reads qemu.conf: the daemon sees
  // a passwd and group that know it (private copies; the machine's own stay as they are).
  writeFileSync(
    join(dir, 'passwd'),
    `${readFileSync('/etc/passwd', 'utf8')}libvirt-qemu:x:64055:64055::/var/lib/libvirt:/usr/sbin/nologin\n`,
  );
  const groups = readFileSync('/etc/group', 'utf8');
  writeFileSync(join(dir, 'group'), `${groups}libvirt-qemu:x:64055:\n${/^kvm:/m.test(groups) ? '' : 'kvm:x:64056:\n'}`);
  const binds: [string, string][] = [
    ...Object.entries(PRIVATE_PATHS).map(([sub, path]): [string, string] => [join(dir, sub), path]),
    ...(options.privateDirs ?? []).map((path, i): [string, string] => {
      const own = join(dir, `private-${i}`);
      mkdirSync(own);
      return [own, path];
    }),
    [join(dir, 'passwd'), '/etc/passwd'],
    [join(dir, 'group'), '/etc/group'],
  ];
  const mounts = binds.map(([from, to]) => `mount --bind '${from}' '${to}'`).join(' && ');
  const socket = join(sockets, 'libvirt-sock');
  const uri = `qemu+unix:///system?socket=${socket}`;
  let child: ChildProcess | null = null;
  // Holds the namespaces between daemon runs: guests outlive a restarted daemon, on the same bridges.
  let holder: ChildProcess | null = null;
  let log = '';
  const daemon: QemuLibvirtd = {
    uri,
    dir,
    async start() {
      if (!holder || holder.exitCode !== null) {
        const peer = options.peerOf?.holderPid();
        holder = peer
          ? await holdNamespaces(
              `hostname 'virt-graph-${name}' && ${mounts}`,
              ['nsenter', '-t', String(peer), '-n'],
              ['-u'],
            )
          : await holdNamespaces(
              `ip link set lo up && ip link add vgmig0 type bridge && ip addr add ${MIGRATION_ADDRESS}/32 dev vgmig0 && ip link set vgmig0 up && ${mounts}`,
              [],
              ['-n'],
            );
      }
      child = spawn(
        'nsenter',
        [
          '-t',
          String(holder.pid),
          '-m',
          '-n',
          '-u',
          '/usr/sbin/libvirtd',
          '--config',
          join(dir, 'etc', 'libvirtd.conf'),
          '--pid-file',
          join(dir, 'libvirtd.pid'),
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
      const deadline = Date.now() + 20_000;
      for (;;) {
        try {
          await run('virsh', ['-c', uri, 'version'], { timeout: 5_000 });
          return;
        } catch {
          // not up yet
        }
        if (child.exitCode !== null) throw new Error(`libvirtd (qemu driver) exited at start:\n${log}`);
        if (Date.now() > deadline) throw new Error(`libvirtd (qemu driver) did not start:\n${log}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async stop() {
      const c = child;
      child = null;
      if (!c || c.exitCode !== null) return;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      await exited;
    },
    holderPid() {
      if (!holder?.pid) throw new Error('the daemon has not started');
      return holder.pid;
    },
    async destroy() {
      await daemon.stop();
      holder?.kill('SIGKILL');
      holder = null;
    },
    async virsh(...args: string[]) {
      const { stdout } = await run('virsh', ['-c', uri, ...args], { timeout: 60_000 });
      return stdout;
    },
  };
  return daemon;
}

/**
 * A process that sits in a new mount namespace, and the other new
 * namespaces named (`-n`, `-u`), set up by `setup`, until killed; `prefix`
 * runs it from within existing namespaces (nsenter).
 */
async function holdNamespaces(setup: string, prefix: string[], namespaces: string[]): Promise<ChildProcess> {
  const [command = 'unshare', ...args] = [
    ...prefix,
    'unshare',
    '-m',
    '-u',
    ...namespaces.filter((n) => n !== '-u'),
    '--propagation',
    'private',
    'sh',
    '-c',
    `${setup} && echo ready && exec sleep infinity`,
  ];
  const holder = spawn(command, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    holder.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    holder.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    holder.once('exit', () => reject(new Error(`could not set up the daemon's namespaces:\n${out}`)));
  });
  holder.unref();
  return holder;
}

function randomUuid(): string {
  return readFileSync('/proc/sys/kernel/random/uuid', 'utf8').trim();
}

import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createConnection } from 'node:net';
import { join } from 'node:path';

/** Whether something accepts connections on a unix socket now (its file appears at bind, before listen). */
function accepting(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createConnection({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

/**
 * A real libvirtd serving libvirt's test driver on a private unix socket, so
 * tests can cut a remote connection by stopping the daemon. No other driver
 * is loaded (an empty driver directory), so it needs no system setup.
 */
export interface Libvirtd {
  /** test+unix:///default?socket=... */
  uri: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** SIGSTOP / SIGCONT: a daemon that keeps its socket but stops answering. */
  pause(): void;
  resume(): void;
}

export function libvirtd(): Libvirtd {
  const dir = mkdtempSync(join(tmpdir(), 'virt-graph-libvirtd-'));
  const sockets = join(dir, 'sock');
  const drivers = join(dir, 'no-drivers');
  mkdirSync(sockets);
  mkdirSync(drivers);
  const config = join(dir, 'libvirtd.conf');
  writeFileSync(
    config,
    `unix_sock_dir = "${sockets}"\nunix_sock_rw_perms = "0700"\nauth_unix_ro = "none"\nauth_unix_rw = "none"\nlisten_tls = 0\nlisten_tcp = 0\n`,
  );
  const socket = join(sockets, 'libvirt-sock');
  let child: ChildProcess | null = null;
  return {
    uri: `test+unix:///default?socket=${socket}`,
    async start() {
      child = spawn('/usr/sbin/libvirtd', ['--config', config, '--pid-file', join(dir, 'pid')], {
        env: { ...process.env, LIBVIRT_DRIVER_DIR: drivers },
        stdio: 'ignore',
      });
      const deadline = Date.now() + 10_000;
      // The file may be left from the run before, or bound and not yet listening: ready is accepting.
      while (!existsSync(socket) || !(await accepting(socket))) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error('libvirtd did not start');
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      const running = child;
      child = null;
      if (!running || running.exitCode !== null) return;
      const exited = new Promise((r) => running.once('exit', r));
      running.kill('SIGCONT');
      running.kill('SIGTERM');
      await exited;
    },
    pause: () => child?.kill('SIGSTOP'),
    resume: () => child?.kill('SIGCONT'),
  };
}

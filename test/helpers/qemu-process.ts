import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { QmpClient } from '../../src/datasources/qmp/client.js';
import { QmpConnectionError } from '../../src/datasources/qmp/protocol.js';

// QEMU processes without a guest OS for the QMP platform's tests: a pc
// machine under TCG (SeaBIOS finds nothing to boot and waits), a qcow2 disk
// made with qemu-img, the monitor the gateway holds, and a second monitor
// for the test to act behind the gateway's back (QMP serves one client per
// socket).

const run = promisify(execFile);

export interface QemuOptions {
  /** `-name`; none when null (QEMU then answers query-name without a name). */
  name: string | null;
  /** The file name of both sockets (`<socketDir>/<file>.qmp`, `<oobDir>/<file>.qmp`). */
  file: string;
  /** `-uuid`; none (QEMU's all-zero UUID) when null. */
  uuid: string | null;
  /** Where the monitor the gateway holds listens. */
  socketDir: string;
  /** The gateway's monitor on this loopback TCP port instead (`qmpSocket` is then tcp://127.0.0.1:PORT). */
  tcpPort?: number;
  /** Where the test's own monitor listens. */
  oobDir: string;
  /** Where the qcow2 disk is made; no disk when null. */
  diskDir: string | null;
  /** More QEMU arguments. */
  args?: string[];
}

export interface QemuProcess {
  file: string;
  qmpSocket: string;
  oobSocket: string;
  disk: string | null;
  child: ChildProcess;
  /** Settles when QEMU has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The test's own monitor (connected once, on first use). */
  oob(): Promise<QmpClient>;
  /** SIGKILL, then waits for the process to be gone. */
  kill(): Promise<void>;
}

const running = new Set<QemuProcess>();

export async function startQemu(o: QemuOptions): Promise<QemuProcess> {
  const qmpSocket = o.tcpPort ? `tcp://127.0.0.1:${o.tcpPort}` : join(o.socketDir, `${o.file}.qmp`);
  const oobSocket = join(o.oobDir, `${o.file}.qmp`);
  let disk: string | null = null;
  if (o.diskDir) {
    disk = join(o.diskDir, `${o.file}.qcow2`);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '64M']);
  }
  const args = [
    '-machine',
    'pc,accel=tcg',
    '-m',
    '64',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    ...(o.name !== null ? ['-name', o.name] : []),
    ...(o.uuid !== null ? ['-uuid', o.uuid] : []),
    ...(disk ? ['-drive', `file=${disk},if=virtio,format=qcow2`] : []),
    '-qmp',
    o.tcpPort ? `tcp:127.0.0.1:${o.tcpPort},server=on,wait=off` : `unix:${qmpSocket},server=on,wait=off`,
    '-qmp',
    `unix:${oobSocket},server=on,wait=off`,
    ...(o.args ?? []),
  ];
  const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  let oob: Promise<QmpClient> | null = null;
  const qemu: QemuProcess = {
    file: o.file,
    qmpSocket,
    oobSocket,
    disk,
    child,
    exited,
    oob: () => (oob ??= QmpClient.connect(oobSocket, { connectTimeoutMs: 5_000 })),
    async kill() {
      running.delete(qemu);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
  running.add(qemu);
  // QEMU makes every socket before it runs: once the test's own answers, the gateway's is there too.
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`qemu exited with ${child.exitCode}: ${stderr}`);
    try {
      await qemu.oob();
      break;
    } catch (e) {
      oob = null;
      if (!(e instanceof QmpConnectionError && e.failure === 'UNREACHABLE') || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  if (!o.tcpPort && !existsSync(qmpSocket)) throw new Error(`QEMU made no socket at ${qmpSocket}`);
  return qemu;
}

/** Kills every QEMU started here and not yet killed. */
export async function killAllQemus(): Promise<void> {
  await Promise.all([...running].map((q) => q.kill()));
}

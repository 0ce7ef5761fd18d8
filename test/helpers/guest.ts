import { type ChildProcess, execFile, spawn } from 'node:child_process';
import {
  closeSync,
  constants,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/**
 * Small real Linux guests under QEMU, built by `scripts/build-guest.sh` into
 * `.cache/guest/`: Debian's kernel, a busybox initramfs whose init prints
 * {@link READY_MARKER} on the serial console (ttyS0), powers off when the
 * ACPI power button is pressed (QMP `system_powerdown`, libvirt's shutdown)
 * and reboots on request; and an empty qcow2 disk template. No network leaves
 * the machine: guests get no NIC, or one on a hub with no host side.
 */
const DIR = fileURLToPath(new URL('../../.cache/guest/', import.meta.url));

export const GUEST = {
  dir: DIR,
  /** The uncompressed kernel (an ELF with a PVH entry): QEMU starts it without unpacking, 3.5 s sooner under TCG. */
  kernel: join(DIR, 'vmlinux'),
  /** The same kernel as Debian ships it (bzImage), for what needs one. */
  compressedKernel: join(DIR, 'vmlinuz'),
  initramfs: join(DIR, 'initramfs.gz'),
  /** An empty 64 MiB qcow2 image; attach an overlay ({@link diskOverlay}), never the template itself. */
  diskTemplate: join(DIR, 'disk.qcow2'),
  /** The kernel command line: console on the first serial port; no CPU-bug mitigations (0.4 s less under TCG). */
  cmdline: 'console=ttyS0 mitigations=off',
} as const;

/** The line the guest's init prints on ttyS0 once modules are loaded and acpid listens. */
export const READY_MARKER = 'VIRT-GRAPH-GUEST READY';

/** How long the KVM boot probe waits for the ready marker before it settles for TCG. */
export const KVM_PROBE_TIMEOUT_MS = 15_000; // a KVM guest is ready in about a second

/** Throws, naming the command that builds them, when the guest's files are missing. */
export function assertGuestBuilt(): void {
  const missing = [GUEST.kernel, GUEST.initramfs, GUEST.diskTemplate].filter((f) => !existsSync(f));
  if (missing.length > 0) {
    throw new Error(`the test guest is not built (missing ${missing.join(', ')}): run bash scripts/build-guest.sh`);
  }
}

export type GuestAccel = 'kvm' | 'tcg';

export interface AccelChoice {
  /** QEMU's `-accel`. */
  accel: GuestAccel;
  /** The matching libvirt `<domain type=...>`: `kvm`, or `qemu` for TCG. */
  domainType: 'kvm' | 'qemu';
  /** Why: the probe's verdict, from the cache or the environment. */
  reason: string;
}

const choice = (accel: GuestAccel, reason: string): AccelChoice => ({
  accel,
  domainType: accel === 'kvm' ? 'kvm' : 'qemu',
  reason,
});

const ACCEL_CACHE = join(DIR, 'accel');
const ACCEL_LOCK = join(DIR, 'accel.lock');
/** How often a probing process touches its lock, and how long untouched makes it a dead one's. */
const LOCK_TOUCH_MS = 2_000;
const LOCK_STALE_MS = 10_000;
let accelChoice: Promise<AccelChoice> | undefined;

/**
 * KVM when it boots the guest to its ready marker, TCG otherwise (on some
 * machines `/dev/kvm` opens but the guest hangs at boot). The probe runs once
 * per checkout, when `/dev/kvm` opens: its verdict is kept in
 * `.cache/guest/accel` (removed when the guest is rebuilt), and concurrent
 * test processes wait for the one probing.
 * `VIRT_GRAPH_GUEST_ACCEL=kvm|tcg` skips the probe.
 */
export function guestAccel(): Promise<AccelChoice> {
  accelChoice ??= chooseAccel();
  return accelChoice;
}

async function chooseAccel(): Promise<AccelChoice> {
  const forced = process.env['VIRT_GRAPH_GUEST_ACCEL'];
  if (forced === 'kvm' || forced === 'tcg') return choice(forced, 'VIRT_GRAPH_GUEST_ACCEL');
  const unavailable = kvmUnavailable();
  if (unavailable) return choice('tcg', unavailable);
  assertGuestBuilt();
  for (;;) {
    const cached = readAccelCache();
    if (cached) return cached;
    let lock: number;
    try {
      lock = openSync(ACCEL_LOCK, 'wx');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // Another process is probing, and touches the lock while it does: a lock left untouched was left by a killed one.
      const since = statSync(ACCEL_LOCK, { throwIfNoEntry: false })?.mtimeMs ?? Date.now();
      if (Date.now() - since > LOCK_STALE_MS) {
        rmSync(ACCEL_LOCK, { force: true });
      }
      await sleep(200);
      continue;
    }
    const touching = setInterval(() => {
      try {
        const now = new Date();
        utimesSync(ACCEL_LOCK, now, now);
      } catch {
        // Taken for a dead one's and removed meanwhile: the verdict is written all the same.
      }
    }, LOCK_TOUCH_MS).unref();
    try {
      const result = await probeKvm();
      const tmp = `${ACCEL_CACHE}.${process.pid}`;
      writeFileSync(tmp, `${result.accel}\n${result.reason}\n`);
      renameSync(tmp, ACCEL_CACHE);
      return result;
    } finally {
      clearInterval(touching);
      closeSync(lock);
      rmSync(ACCEL_LOCK, { force: true });
    }
  }
}

function readAccelCache(): AccelChoice | null {
  let text: string;
  try {
    text = readFileSync(ACCEL_CACHE, 'utf8');
  } catch {
    return null;
  }
  const [accel, reason = ''] = text.split('\n');
  return accel === 'kvm' || accel === 'tcg' ? choice(accel, `${reason} (cached in ${ACCEL_CACHE})`) : null;
}

/** Why KVM cannot be used at all, or null when /dev/kvm opens (checked each time: it is cheap). */
function kvmUnavailable(): string | null {
  try {
    closeSync(openSync('/dev/kvm', constants.O_RDWR));
    return null;
  } catch (err) {
    return `/dev/kvm does not open (${(err as NodeJS.ErrnoException).code})`;
  }
}

async function probeKvm(): Promise<AccelChoice> {
  const started = Date.now();
  const guest = await bootGuest({ accel: 'kvm' });
  try {
    await guest.waitForReady(KVM_PROBE_TIMEOUT_MS);
    return choice('kvm', `KVM booted the guest in ${Date.now() - started} ms`);
  } catch (err) {
    const lastLine = guest.serialLog().trim().split('\n').pop() ?? '';
    return choice(
      'tcg',
      `KVM did not boot the guest: ${(err as Error).message.split('\n')[0]}; last line: ${lastLine}`,
    );
  } finally {
    await guest.kill();
  }
}

export interface GuestOptions {
  /** @default (await guestAccel()).accel */
  accel?: GuestAccel;
  /** @default 256 // MiB; 64 is too little for Debian's kernel */
  memoryMiB?: number;
  /** @default 1 */
  cpus?: number;
  /** A qcow2 image attached as a virtio disk (the guest's vda); see {@link diskOverlay}. */
  disk?: string;
  /**
   * A virtio NIC (the guest's eth0) on a QEMU hub with nothing else on it: no
   * packet leaves QEMU.
   * @default false
   */
  nic?: boolean;
  /** Appended to {@link GUEST.cmdline}. */
  append?: string;
  /** More QEMU arguments, last on the command line. */
  qemuArgs?: string[];
}

export interface GuestExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Guest {
  /** The QMP server (`-qmp unix:...,server=on,wait=off`), in the guest's private directory. */
  qmpSocket: string;
  /** The guest's private directory, removed when QEMU has exited. */
  dir: string;
  accel: GuestAccel;
  child: ChildProcess;
  /** Everything the guest wrote to its serial console (kernel, init, shell) so far. */
  serialLog(): string;
  /** What QEMU itself wrote to stderr (warnings, errors). */
  stderr(): string;
  /** How many times the guest has printed the ready marker (once per boot). */
  readyCount(): number;
  /**
   * Resolves once the ready marker has been printed `times` times in all
   * (2: booted again after a reboot); rejects on timeout or when QEMU exits.
   */
  waitForReady(timeoutMs?: number, times?: number): Promise<void>;
  /** Resolves when the serial output, from `from` on (a serialLog() length), matches. */
  waitForSerial(pattern: string | RegExp, timeoutMs?: number, from?: number): Promise<void>;
  /** Types on the serial console, where a root shell reads (e.g. "reboot\n"). */
  send(text: string): void;
  /** SIGKILL, then waits for QEMU to be gone. */
  kill(): Promise<void>;
  /** Settles when QEMU has exited (a guest that powered off exits with code 0). */
  exited: Promise<GuestExit>;
}

/** Guests still running, killed if the test process exits first. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Starts QEMU on the built kernel and initramfs; resolves once the process has started (not booted). */
export async function bootGuest(options: GuestOptions = {}): Promise<Guest> {
  assertGuestBuilt();
  const accel = options.accel ?? (await guestAccel()).accel;
  const dir = mkdtempSync(join(tmpdir(), 'virt-graph-guest-'));
  const qmpSocket = join(dir, 'qmp.sock');
  const args = [
    '-name',
    'virt-graph-guest',
    '-accel',
    accel,
    '-m',
    String(options.memoryMiB ?? 256),
    '-smp',
    String(options.cpus ?? 1),
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-monitor',
    'none',
    // The guest's ttyS0 on QEMU's stdin and stdout.
    '-serial',
    'stdio',
    '-qmp',
    `unix:${qmpSocket},server=on,wait=off`,
    '-kernel',
    GUEST.kernel,
    '-initrd',
    GUEST.initramfs,
    '-append',
    options.append ? `${GUEST.cmdline} ${options.append}` : GUEST.cmdline,
    ...(options.nic
      ? ['-netdev', 'hubport,id=net0,hubid=0', '-device', 'virtio-net-pci,netdev=net0']
      : ['-nic', 'none']),
    ...(options.disk ? ['-drive', `file=${options.disk},if=virtio,format=qcow2`] : []),
    ...(options.qemuArgs ?? []),
  ];
  const child = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  running.add(child);
  let serial = '';
  let errors = '';
  let closed = false;
  const waiters = new Set<() => void>();
  const wake = () => waiters.forEach((w) => w());
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (text: string) => {
    serial += text;
    wake();
  });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (text: string) => (errors += text));
  // A guest that has exited no longer reads its console.
  child.stdin!.on('error', () => {});
  // 'close' rather than 'exit': by then everything QEMU wrote has been read.
  const exited = new Promise<GuestExit>((resolve) =>
    child.once('close', (code, signal) => {
      closed = true;
      running.delete(child);
      rmSync(dir, { recursive: true, force: true });
      resolve({ code, signal });
      wake();
    }),
  );
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });

  const count = () => serial.split(READY_MARKER).length - 1;
  const tail = () => serial.split('\n').slice(-15).join('\n');
  function waitUntil(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (done()) finish();
        else if (closed) {
          finish(new Error(`QEMU exited (${child.exitCode ?? child.signalCode}) before ${what}`));
        }
      };
      const timer = setTimeout(() => finish(new Error(`no ${what} within ${timeoutMs} ms`)), timeoutMs);
      const finish = (err?: Error) => {
        clearTimeout(timer);
        waiters.delete(check);
        if (err) {
          err.message += `\n--- serial (last lines) ---\n${tail()}\n--- qemu stderr ---\n${errors}`;
          reject(err);
        } else resolve();
      };
      waiters.add(check);
      check();
    });
  }

  return {
    qmpSocket,
    dir,
    accel,
    child,
    serialLog: () => serial,
    stderr: () => errors,
    readyCount: count,
    waitForReady: (timeoutMs = 60_000, times = 1) =>
      waitUntil(() => count() >= times, timeoutMs, times === 1 ? 'ready marker' : `ready marker #${times}`),
    waitForSerial: (pattern, timeoutMs = 30_000, from = 0) =>
      waitUntil(
        () => (typeof pattern === 'string' ? serial.includes(pattern, from) : pattern.test(serial.slice(from))),
        timeoutMs,
        `serial output matching ${String(pattern)}`,
      ),
    send: (text) => {
      child.stdin!.write(text);
    },
    async kill() {
      if (!closed) child.kill('SIGKILL');
      await exited;
    },
    exited,
  };
}

const run = promisify(execFile);

/** A fresh qcow2 overlay on the disk template, in `dir` (default: a new temporary directory, the caller's to remove). */
export async function diskOverlay(dir = mkdtempSync(join(tmpdir(), 'virt-graph-disk-'))): Promise<string> {
  assertGuestBuilt();
  const file = join(dir, 'disk.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', GUEST.diskTemplate, '-F', 'qcow2', file]);
  return file;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

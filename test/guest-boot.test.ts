import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import {
  type AccelChoice,
  type Guest,
  type GuestOptions,
  bootGuest,
  diskOverlay,
  guestAccel,
} from './helpers/guest.js';
import { holdGuestTurn } from './helpers/guest-turn.js';

// A real Linux guest under QEMU (built by scripts/build-guest.sh), driven
// over raw QMP: the ground the libvirt qemu driver and the QMP platform stand
// on. The guest powers itself off on the ACPI power button and boots again
// when it reboots or is reset.

interface QmpMessage {
  QMP?: { version: { qemu: { major: number; minor: number; micro: number } }; capabilities: string[] };
  id?: number;
  return?: unknown;
  error?: { class: string; desc: string };
  event?: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

/** QMP as its specification reads: a greeting, then one JSON object per line, commands matched by id. */
interface RawQmp {
  greeting: QmpMessage;
  events: QmpMessage[];
  execute(command: string, args?: Record<string, unknown>): Promise<unknown>;
  /** Resolves with the first event of that name (already received or to come). */
  event(name: string, timeoutMs?: number): Promise<QmpMessage>;
  close(): void;
}

async function rawQmp(path: string, timeoutMs = 10_000): Promise<RawQmp> {
  // QEMU creates the socket shortly after it starts: retry until it listens.
  const deadline = Date.now() + timeoutMs;
  let socket: Socket;
  for (;;) {
    try {
      socket = await new Promise<Socket>((resolve, reject) => {
        const s = connect(path, () => resolve(s));
        s.once('error', reject);
      });
      break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const events: QmpMessage[] = [];
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  const listeners = new Set<() => void>();
  let greet: (m: QmpMessage) => void;
  let noGreeting: (e: Error) => void;
  const greeting = new Promise<QmpMessage>((resolve, reject) => {
    greet = resolve;
    noGreeting = reject;
  });
  let buffer = '';
  let nextId = 1;
  socket.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('utf8');
    let eol: number;
    while ((eol = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, eol).trim();
      buffer = buffer.slice(eol + 1);
      if (!line) continue;
      const message = JSON.parse(line) as QmpMessage;
      if (message.QMP) greet(message);
      else if (message.event) {
        events.push(message);
        listeners.forEach((l) => l());
      } else if (message.id !== undefined) {
        const call = pending.get(message.id);
        pending.delete(message.id);
        if (message.error) call?.reject(new Error(`${message.error.class}: ${message.error.desc}`));
        else call?.resolve(message.return);
      }
    }
  });
  // A QEMU that exits resets the connection: 'close' tells the waiters.
  socket.on('error', () => {});
  socket.on('close', () => {
    noGreeting(new Error('QMP socket closed before the greeting'));
    for (const call of pending.values()) call.reject(new Error('QMP socket closed'));
    pending.clear();
    listeners.forEach((l) => l());
  });
  return {
    greeting: await greeting,
    events,
    execute(command, args) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
      });
    },
    event(name, eventTimeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = events.find((e) => e.event === name);
          if (found) done(null, found);
          else if (socket.destroyed) done(new Error(`QMP socket closed before event ${name}`));
        };
        const timer = setTimeout(
          () => done(new Error(`no QMP event ${name} within ${eventTimeoutMs} ms`)),
          eventTimeoutMs,
        );
        const done = (err: Error | null, found?: QmpMessage) => {
          clearTimeout(timer);
          listeners.delete(check);
          if (err) reject(err);
          else resolve(found!);
        };
        listeners.add(check);
        check();
      });
    },
    close: () => socket.destroy(),
  };
}

let accel: AccelChoice | undefined;
const guests: Guest[] = [];
const timings: string[] = [];
/** Disk overlays and the like, removed after the tests. */
const scratch = mkdtempSync(join(tmpdir(), 'virt-graph-guest-test-'));

/** Boots a guest and waits for its ready marker; notes how long that took. */
async function readyGuest(options: GuestOptions = {}): Promise<Guest> {
  const started = Date.now();
  const guest = await bootGuest(options);
  guests.push(guest);
  await guest.waitForReady(60_000);
  timings.push(`boot ${Date.now() - started} ms`);
  return guest;
}

holdGuestTurn();

beforeAll(async () => {
  // The first run on a machine probes KVM (up to 15 s); later runs read the verdict.
  accel = await guestAccel();
});

afterEach(async () => {
  await Promise.all(guests.splice(0).map((g) => g.kill()));
});

afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
  if (accel) console.log(`guest under ${accel.accel} (${accel.reason}): ${timings.join(', ')}`);
});

describe('a real Linux guest under QEMU', () => {
  it('answers QMP, and powers itself off on the ACPI power button', { timeout: 120_000 }, async () => {
    const disk = await diskOverlay(scratch);
    const guest = await readyGuest({ disk, nic: true });
    expect(guest.accel).toBe(accel!.accel);
    // The virtio modules loaded: the overlay is vda, the NIC eth0.
    expect(guest.serialLog()).toMatch(/disks: vda, nics: eth0/);

    const qmp = await rawQmp(guest.qmpSocket);
    expect(qmp.greeting.QMP!.version.qemu.major).toBeGreaterThanOrEqual(7);
    expect(await qmp.execute('qmp_capabilities')).toEqual({});
    expect(await qmp.execute('query-status')).toMatchObject({ status: 'running', running: true });

    const pressed = Date.now();
    expect(await qmp.execute('system_powerdown')).toEqual({});
    // QEMU reports the button, then the guest's own ACPI power off (S5), then exits.
    expect((await qmp.event('POWERDOWN')).event).toBe('POWERDOWN');
    expect((await qmp.event('SHUTDOWN', 30_000)).data).toEqual({ guest: true, reason: 'guest-shutdown' });
    expect(await guest.exited).toEqual({ code: 0, signal: null });
    timings.push(`power off ${Date.now() - pressed} ms`);
    expect(guest.serialLog()).toContain('power button pressed, powering off');
    expect(guest.serialLog()).toContain('reboot: Power down');
    qmp.close();
  });

  it('boots again when it reboots itself and when QEMU resets it', { timeout: 120_000 }, async () => {
    const guest = await readyGuest();
    const qmp = await rawQmp(guest.qmpSocket);
    await qmp.execute('qmp_capabilities');

    // The guest's own reboot, typed at its console shell: init stops everything and resets the machine.
    // QEMU may report one reset more than once (the kernel tries more than one way to reset, and the
    // firmware resets again on a warm start), so the test looks at the first of each kind.
    const resets = () => qmp.events.filter((e) => e.event === 'RESET').map((e) => e.data);
    await guest.waitForSerial('guest# ');
    const asked = Date.now();
    guest.send('reboot\n');
    await qmp.event('RESET', 30_000);
    expect(resets()[0]).toEqual({ guest: true, reason: 'guest-reset' });
    await guest.waitForReady(60_000, 2);
    timings.push(`reboot to ready ${Date.now() - asked} ms`);
    expect(guest.serialLog()).toContain('The system is going down NOW!');
    expect(guest.serialLog()).toContain('reboot: Restarting system');

    // A hard reset from outside (QMP system_reset): no shutdown, straight back to boot.
    const guestResets = resets().length;
    const reset = Date.now();
    expect(await qmp.execute('system_reset')).toEqual({});
    await guest.waitForReady(60_000, 3);
    timings.push(`reset to ready ${Date.now() - reset} ms`);
    expect(resets()[guestResets]).toEqual({ guest: false, reason: 'host-qmp-system-reset' });
    expect(await qmp.execute('query-status')).toMatchObject({ status: 'running', running: true });
    expect(guest.child.exitCode).toBeNull();
    qmp.close();
  });
});

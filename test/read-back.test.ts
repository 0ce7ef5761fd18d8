import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { validateConfig } from '../src/config/load.js';
import type { Provider } from '../src/datasources/provider.js';
import { PlatformRegistry } from '../src/datasources/registry.js';
import { Inventory } from '../src/inventory/inventory.js';
import type { GatewayEvent, InventoryEvent } from '../src/model/events.js';
import { type Libvirtd, libvirtd } from './helpers/libvirtd.js';
import { eventually } from './helpers/subscriptions.js';

// A read-back (after an operation, the gateway reads what it changed and
// applies it, so that the next query sees it) races the change stream: the
// watch can apply a newer record of the same VM while the read-back's reply
// is on its way. Here the read-back's reply is held after the daemon
// answered, while virsh changes the VM and the watch applies the change:
// the older reply must not put the VM back as it was.
const run = promisify(execFile);
let daemon: Libvirtd;
let registry: PlatformRegistry;
let inventory: Inventory;
let provider: Provider;
let vmId: string;
const events: InventoryEvent[] = [];
const virsh = (...args: string[]) => run('virsh', ['-c', daemon.uri, ...args]);
const mirror = () => inventory.mirror('lv')!;
const powerState = () => mirror().vm(vmId)?.vm.powerState;

/** Calls of readVmStates; while `hold` is set, the next call's reply is kept until it resolves. */
const reads: string[][] = [];
let hold: { answered: () => void; release: Promise<void> } | null = null;

beforeAll(async () => {
  daemon = libvirtd();
  await daemon.start();
  const config = validateConfig({
    state: { dir: mkdtempSync(join(tmpdir(), 'virt-graph-state-')) },
    platforms: [{ id: 'lv', kind: 'libvirt', uri: daemon.uri }],
  });
  const logger = pino({ level: 'silent' });
  registry = PlatformRegistry.fromConfig(config.platforms, logger);
  const publisher = {
    publish: (e: GatewayEvent) => {
      if (e.type === 'INVENTORY' && e.kind === 'VirtualMachine') events.push(e);
    },
  };
  inventory = new Inventory(
    registry,
    publisher,
    { enabled: true, resyncIntervalMs: 3_600_000, retryInitialMs: 50, retryMaxMs: 200 },
    logger,
  );
  provider = registry.get('lv')!;
  const read = provider.readVmStates.bind(provider);
  // The watch reads through the same method: only the call made while `hold` is set waits.
  provider.readVmStates = async (ids, scope) => {
    reads.push([...ids]);
    const held = hold;
    hold = null;
    const reply = await read(ids, scope);
    if (held) {
      held.answered();
      await held.release;
    }
    return reply;
  };
  await registry.start();
  inventory.start();
  await eventually(() => inventory.serving('lv') !== undefined, 10_000);
  vmId = mirror()
    .listVms()
    .find((v) => v.name === 'test')!.nativeId;
});
afterAll(async () => {
  await inventory?.stop();
  await registry?.stop();
  await daemon?.stop();
});

describe('a read-back after an operation, against the change stream', () => {
  it('applies what it read in one read when the stream brings nothing meanwhile', async () => {
    expect(powerState()).toBe('ON');
    reads.length = 0;
    await inventory.refresh('lv', { vms: [vmId], storage: false });
    expect(reads).toEqual([[vmId]]);
    expect(powerState()).toBe('ON');
  });

  it('never puts back a state older than the one the watch applied while it read, and reads that VM again', async () => {
    let answered!: () => void;
    const daemonAnswered = new Promise<void>((resolve) => (answered = resolve));
    let release!: () => void;
    hold = { answered, release: new Promise<void>((resolve) => (release = resolve)) };
    events.length = 0;
    reads.length = 0;

    const refreshing = inventory.refresh('lv', { vms: [vmId], storage: false });
    // The daemon has answered: the VM was running when the read-back read it.
    await daemonAnswered;
    await virsh('suspend', 'test');
    await eventually(() => powerState() === 'PAUSED', 5_000);
    release();
    await refreshing;

    expect(powerState()).toBe('PAUSED');
    // One change, the real one: no event that puts the VM back ON.
    expect(events.map((e) => `${e.previousPowerState}->${e.powerState}`)).toEqual(['ON->PAUSED']);
    // The held read-back, the watch's read after libvirt's event, then the read-back's second read.
    expect(reads.filter((ids) => ids.length === 1 && ids[0] === vmId).length).toBeGreaterThanOrEqual(3);
    expect(reads.at(-1)).toEqual([vmId]);

    await virsh('resume', 'test');
    await eventually(() => powerState() === 'ON', 5_000);
  });

  it('counts a full read as a newer record of everything, and notes nothing once the read is over', () => {
    const during = mirror().beginRead();
    const after = mirror().beginRead();
    after.end();
    mirror().apply([{ kind: 'Network', nativeId: 'n1', record: null }]);
    expect(during.arrivedSince('Network', 'n1')).toBe(true);
    expect(during.arrivedSince('VirtualMachine', vmId)).toBe(false);
    mirror().replace(mirror().exportState(), 'resync');
    expect(during.arrivedSince('VirtualMachine', vmId)).toBe(true);
    expect(after.arrivedSince('Network', 'n1')).toBe(false);
    expect(after.arrivedSince('VirtualMachine', vmId)).toBe(false);
    during.end();
  });
});

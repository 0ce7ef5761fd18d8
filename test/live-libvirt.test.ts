import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { type Libvirtd, libvirtd } from './helpers/libvirtd.js';
import { finished, mutate } from './helpers/mutations.js';
import { eventually, subscribe } from './helpers/subscriptions.js';

// The live inventory of a libvirt host reached through a real libvirtd:
// changes made with virsh (behind the gateway's back) reach subscribers;
// a daemon that hangs or dies leaves the mirror STALE until it answers again.
const run = promisify(execFile);
let daemon: Libvirtd;
let gw: TestGateway;
const virsh = (...args: string[]) => run('virsh', ['-c', daemon.uri, ...args]);

const VM_CHANGED = `subscription($f: VmChangeFilter) {
  vmChanged(filter: $f) { type vmId changes previousPowerState powerState vm { name powerState } }
}`;

interface VmEvent {
  vmChanged: {
    type: string;
    changes: string[];
    previousPowerState: string | null;
    powerState: string | null;
    vm: { name: string } | null;
  };
}

async function platform() {
  const res = await gw.query<{ platforms: { inventoryState: string }[] }>('{ platforms { inventoryState } }');
  return res.data!.platforms[0]!;
}

beforeAll(async () => {
  daemon = libvirtd();
  await daemon.start();
  gw = await startTestGateway({
    limits: { operationTimeoutMs: 1_500 },
    inventory: { retryInitialMs: 50, retryMaxMs: 200 },
    platforms: [
      {
        id: 'remote',
        kind: 'libvirt',
        uri: daemon.uri,
        retryInitialMs: 50,
        retryMaxMs: 200,
        livenessIntervalMs: 250,
        livenessTimeoutMs: 500,
      },
    ],
  });
  await eventually(async () => (await platform()).inventoryState === 'SYNCED', 10_000);
});
afterAll(async () => {
  await gw?.close();
  await daemon?.stop();
});

describe('the live inventory of a libvirt host', () => {
  it('streams changes made with virsh within a second, and answers from the mirror', async () => {
    const sub = subscribe<VmEvent>(gw.url, VM_CHANGED);
    await new Promise((r) => setTimeout(r, 300));
    const started = Date.now();
    await virsh('suspend', 'test');
    const [paused] = await sub.until(1, 3_000);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(paused!.vmChanged).toMatchObject({
      type: 'MODIFIED',
      previousPowerState: 'ON',
      powerState: 'PAUSED',
      vm: { name: 'test' },
    });
    const res = await gw.query<{ virtualMachines: { nodes: { powerState: string }[] } }>(
      '{ virtualMachines(first: 5, filter: { nameContains: "test" }) { nodes { powerState } } }',
    );
    expect(res.data!.virtualMachines.nodes[0]!.powerState).toBe('PAUSED');
    expect((res as { extensions?: { directReads?: unknown } }).extensions?.directReads).toBeUndefined();

    // A domain defined and removed behind the gateway's back.
    const dir = mkdtempSync(join(tmpdir(), 'virt-graph-virsh-'));
    writeFileSync(
      join(dir, 'extra.xml'),
      `<domain type='test'><name>extra</name><memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type arch='i686'>hvm</type></os></domain>`,
    );
    await virsh('define', join(dir, 'extra.xml'));
    await virsh('undefine', 'extra');
    const events = await sub.until(3, 3_000);
    expect(events.slice(1).map((e) => [e.vmChanged.type, e.vmChanged.vm?.name ?? null])).toEqual([
      ['ADDED', 'extra'],
      ['REMOVED', null],
    ]);
    await virsh('resume', 'test');
    await sub.until(4, 3_000);
    await sub.close();
  }, 30_000);

  it('shows its own mutations at once, and goes STALE when the daemon hangs, SYNCED again when it answers', async () => {
    const id = (
      await gw.query<{ virtualMachines: { nodes: { id: string }[] } }>('{ virtualMachines(first: 1) { nodes { id } } }')
    ).data!.virtualMachines.nodes[0]!.id;
    const payload = await mutate(gw, 'pauseVm', { vmId: id });
    expect((await finished(gw, payload.task!.id)).state).toBe('SUCCEEDED');
    const after = await gw.query<{ node: { powerState: string } }>(
      'query($id: ID!) { node(id: $id) { ... on VirtualMachine { powerState } } }',
      { id },
    );
    expect(after.data!.node.powerState).toBe('PAUSED');

    daemon.pause();
    try {
      await eventually(async () => (await platform()).inventoryState === 'STALE', 5_000);
      const res = await gw.query('{ virtualMachines(first: 1) { totalCount } }');
      expect((res as { extensions?: { directReads?: unknown[] } }).extensions?.directReads).toHaveLength(1);
    } finally {
      daemon.resume();
    }
    await eventually(async () => (await platform()).inventoryState === 'SYNCED', 10_000);

    await daemon.stop();
    await eventually(async () => (await platform()).inventoryState === 'STALE', 5_000);
    await daemon.start();
    await eventually(async () => (await platform()).inventoryState === 'SYNCED', 10_000);
    // A new daemon: the test driver starts over, and the mirror follows it.
    const fresh = await gw.query<{ node: { powerState: string } }>(
      'query($id: ID!) { node(id: $id) { ... on VirtualMachine { powerState } } }',
      { id },
    );
    expect(fresh.data!.node.powerState).toBe('ON');
  }, 60_000);
});

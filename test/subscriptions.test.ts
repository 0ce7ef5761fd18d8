import { createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';

import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { finished, mutate } from './helpers/mutations.js';
import { eventually, subscribe } from './helpers/subscriptions.js';

interface VmEvent {
  vmChanged: {
    cursor: string;
    type: string;
    vmId: string | null;
    changes: string[];
    previousPowerState: string | null;
    powerState: string | null;
    vm: { name: string; powerState: string } | null;
  };
}

const VM_CHANGED = `subscription($after: String, $filter: VmChangeFilter) {
  vmChanged(after: $after, filter: $filter) {
    cursor type vmId changes previousPowerState powerState vm { name powerState }
  }
}`;

let gw: TestGateway;

async function vmId(name: string): Promise<string> {
  const res = await gw.query<{ virtualMachines: { nodes: { id: string; name: string }[] } }>(
    'query($n: String) { virtualMachines(first: 50, filter: { nameContains: $n }) { nodes { id name } } }',
    { n: name },
  );
  return res.data!.virtualMachines.nodes.find((v) => v.name === name)!.id;
}

/** Moves a VM to another power state, whichever it is in. */
async function changePower(id: string): Promise<void> {
  const res = await gw.query<{ node: { powerState: string } }>(
    'query($id: ID!) { node(id: $id) { ... on VirtualMachine { powerState } } }',
    { id },
  );
  const action: Record<string, [string, Record<string, unknown>]> = {
    ON: ['stopVm', { force: true }],
    OFF: ['startVm', {}],
    PAUSED: ['unpauseVm', {}],
    SUSPENDED: ['resumeVm', {}],
  };
  const [mutation, extra] = action[res.data!.node.powerState]!;
  const payload = await mutate(gw, mutation, { vmId: id, ...extra });
  expect(payload.userErrors).toEqual([]);
  await finished(gw, payload.task!.id);
}

async function synced(): Promise<void> {
  await eventually(async () => {
    const res = await gw.query<{ platforms: { inventoryState: string }[] }>('{ platforms { inventoryState } }');
    return res.data!.platforms.every((p) => p.inventoryState === 'SYNCED');
  });
}

beforeAll(async () => {
  gw = await startTestGateway({
    subscriptions: { maxPerConnection: 3 },
    platforms: [{ id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 12 }).uri }],
  });
  await synced();
});
afterAll(() => gw?.close());

describe('the live inventory', () => {
  it('answers queries from the mirror once SYNCED, saying when it was synced', async () => {
    const res = await gw.query<{ platforms: { inventoryState: string; syncedAt: string | null; staleSince: null }[] }>(
      '{ platforms { inventoryState syncedAt staleSince } virtualMachines(first: 5) { totalCount } }',
    );
    expect(res.data!.platforms[0]).toMatchObject({ inventoryState: 'SYNCED', staleSince: null });
    expect(Date.parse(res.data!.platforms[0]!.syncedAt!)).toBeGreaterThan(Date.now() - 60_000);
    expect((res as { extensions?: { directReads?: unknown } }).extensions?.directReads).toBeUndefined();
  });

  it('shows a mutation done once its task succeeded, and streams it as a vmChanged event', async () => {
    const id = await vmId('web-001');
    const sub = subscribe<VmEvent>(gw.url, VM_CHANGED, { filter: { vmIds: [id] } });
    await new Promise((r) => setTimeout(r, 200));
    const started = Date.now();
    const payload = await mutate(gw, 'stopVm', { vmId: id, force: true });
    const task = await finished(gw, payload.task!.id);
    expect(task.state).toBe('SUCCEEDED');
    // Read your writes: the query right after the task sees the new state.
    const now = await gw.query<{ node: { powerState: string } }>(
      'query($id: ID!) { node(id: $id) { ... on VirtualMachine { powerState } } }',
      { id },
    );
    expect(now.data!.node.powerState).toBe('OFF');
    const [event] = await sub.until(1);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(event!.vmChanged).toMatchObject({
      type: 'MODIFIED',
      vmId: id,
      previousPowerState: 'ON',
      powerState: 'OFF',
      vm: { name: 'web-001', powerState: 'OFF' },
    });
    expect(event!.vmChanged.changes).toContain('POWER_STATE');
    await sub.close();
  });

  it('replays exactly the events a client missed after its cursor, then live ones', async () => {
    const ids = await Promise.all(['db-002', 'cache-003', 'batch-004', 'web-005'].map(vmId));
    const filter = { vmIds: ids, aspects: ['POWER_STATE'] };
    const first = subscribe<VmEvent>(gw.url, VM_CHANGED, { filter });
    await new Promise((r) => setTimeout(r, 200));
    await finished(gw, (await mutate(gw, 'createSnapshot', { vmId: ids[0], name: 'not-a-power-change' })).task!.id);
    await changePower(ids[0]!);
    const [seen] = await first.until(1);
    await first.close();

    // While the client is away, three VMs change.
    for (const id of ids.slice(1)) await changePower(id!);
    const resumed = subscribe<VmEvent>(gw.url, VM_CHANGED, { filter, after: seen!.vmChanged.cursor });
    const missed = await resumed.until(3);
    expect(missed.map((e) => e.vmChanged.vmId)).toEqual(ids.slice(1));
    await changePower(ids[0]!);
    const [, , , live] = await resumed.until(4);
    expect(live!.vmChanged).toMatchObject({ vmId: ids[0], type: 'MODIFIED' });
    expect(resumed.events).toHaveLength(4);
    await resumed.close();
  });

  it('says RESYNC_REQUIRED first for a cursor it no longer has, and refuses a malformed one', async () => {
    const stale = subscribe<VmEvent>(gw.url, VM_CHANGED, { after: 'AAAAAAAA.1' });
    const [first] = await stale.until(1);
    expect(first!.vmChanged).toMatchObject({ type: 'RESYNC_REQUIRED', vmId: null, vm: null });
    await stale.close();

    const bad = subscribe<VmEvent>(gw.url, VM_CHANGED, { after: 'not a cursor' });
    await eventually(() => bad.errors.length > 0);
    expect(JSON.stringify(bad.errors)).toContain('INVALID_CURSOR');
    await bad.close();
  });

  it('streams task updates to the end', async () => {
    const id = await vmId('cache-007');
    const sub = subscribe<{ taskUpdated: { task: { state: string; progress: number } } }>(
      gw.url,
      'subscription($f: TaskUpdateFilter) { taskUpdated(filter: $f) { task { state progress } } }',
      { f: { targetIds: [id] } },
    );
    await new Promise((r) => setTimeout(r, 200));
    await finished(gw, (await mutate(gw, 'createSnapshot', { vmId: id, name: 's1' })).task!.id);
    await eventually(() => sub.events.some((e) => e.taskUpdated.task.state === 'SUCCEEDED'));
    expect(sub.events.at(-1)!.taskUpdated.task).toEqual({ state: 'SUCCEEDED', progress: 100 });
    await sub.close();
  });

  it('refuses unknown platforms in a filter and more subscriptions than a connection may hold', async () => {
    const ghost = Buffer.from('v1:Platform:ghost:ghost').toString('base64url');
    const unknown = subscribe(gw.url, VM_CHANGED, { filter: { platformIds: [ghost] } });
    await eventually(() => unknown.errors.length > 0);
    expect(JSON.stringify(unknown.errors)).toContain('UNKNOWN_PLATFORM');
    await unknown.close();

    // One connection, one subscription more than it may hold.
    const client = createClient({ url: gw.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, retryAttempts: 0 });
    const outcomes: string[] = [];
    const disposers = [1, 2, 3, 4].map(() =>
      client.subscribe(
        { query: 'subscription { platformStatusChanged { cursor } }' },
        {
          next: () => {},
          error: (e) => outcomes.push(JSON.stringify(e)),
          complete: () => {},
        },
      ),
    );
    await eventually(() => outcomes.length > 0);
    expect(outcomes).toHaveLength(1);
    expect(outcomes[0]).toContain('TOO_MANY_SUBSCRIPTIONS');
    for (const d of disposers) d();
    await client.dispose();
  });
});

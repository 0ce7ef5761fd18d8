import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { invokeTask } from '../src/datasources/vsphere/vim.js';
import { encodeId } from '../src/model/ids.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { finished, mutate } from './helpers/mutations.js';
import { startSoapProxy } from './helpers/soap-proxy.js';
import { eventually, subscribe } from './helpers/subscriptions.js';
import { type Vcsim, startVcsim, vspherePlatform, adminSession } from './helpers/vcsim.js';

// The gateway's live inventory against VMware's simulator: changes made
// behind its back (SOAP straight to vCenter) reach subscribers; a vCenter
// that dies leaves the mirror STALE, the answer read directly and flagged.
let sim: Vcsim;
let gw: TestGateway;

const VM_CHANGED = `subscription($f: VmChangeFilter) {
  vmChanged(filter: $f) { type vmId changes previousPowerState powerState vm { name powerState } }
}`;

async function platform() {
  const res = await gw.query<{ platforms: { inventoryState: string; status: string; staleSince: string | null }[] }>(
    '{ platforms { inventoryState status staleSince } }',
  );
  return res.data!.platforms[0]!;
}

beforeAll(async () => {
  sim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 2, host: 0, vm: 3 });
  gw = await startTestGateway({
    inventory: { retryInitialMs: 100, retryMaxMs: 500 },
    platforms: [vspherePlatform(sim, { requestTimeoutMs: 1_000, retryInitialMs: 100, retryMaxMs: 500 })],
  });
  await eventually(async () => (await platform()).inventoryState === 'SYNCED', 20_000);
});
afterAll(async () => {
  await gw?.close();
  await sim?.stop();
});

describe('the live inventory of a vCenter', () => {
  it('streams a change made behind the gateway, within a second of vCenter reporting it', async () => {
    const [moref, vm] = Object.entries(sim.oracle.vms).find(([, v]) => v.powerState === 'poweredOn' && !v.template)!;
    const id = encodeId({ kind: 'VirtualMachine', platformId: 'vc', nativeId: moref });
    const sub = subscribe<{ vmChanged: Record<string, unknown> }>(gw.url, VM_CHANGED, { f: { vmIds: [id] } });
    await new Promise((r) => setTimeout(r, 300));

    const admin = await adminSession(sim);
    try {
      const reporter = { progress: () => {}, upstreamTask: () => {} };
      const task = await invokeTask(admin.client, 'PowerOffVM_Task', { type: 'VirtualMachine', value: moref });
      await admin.tasks.wait(task, reporter);
      const done = Date.now();
      const [event] = await sub.until(1, 5_000);
      // vcsim batches its updates every 250 ms; the gateway adds little.
      expect(Date.now() - done).toBeLessThan(1_000);
      expect(event!.vmChanged).toMatchObject({
        type: 'MODIFIED',
        vmId: id,
        previousPowerState: 'ON',
        powerState: 'OFF',
        vm: { name: vm.name, powerState: 'OFF' },
      });
      // Answered from the mirror, no direct read.
      const res = await gw.query<{ node: { powerState: string } }>(
        'query($id: ID!) { node(id: $id) { ... on VirtualMachine { powerState } } }',
        { id },
      );
      expect(res.data!.node.powerState).toBe('OFF');
      expect((res as { extensions?: { directReads?: unknown } }).extensions?.directReads).toBeUndefined();
    } finally {
      await admin.close();
      await sub.close();
    }
  }, 30_000);

  it("streams vCenter's own tasks through taskUpdated, whoever started them, and links the gateway's", async () => {
    const vms = Object.entries(sim.oracle.vms).filter(([, v]) => !v.template);
    const [byAdmin, byGateway] = vms.slice(-2).map(([moref]) => moref) as [string, string];
    const idOf = (moref: string) => encodeId({ kind: 'VirtualMachine', platformId: 'vc', nativeId: moref });
    type Update = {
      taskUpdated: {
        task: { id: string } | null;
        upstreamTask: {
          upstreamTaskId: string;
          description: string;
          state: string;
          progress: number;
          target: { id: string } | null;
          initiatedBy: string | null;
          finishedAt: string | null;
          error: { code: string } | null;
          gatewayTask: { id: string } | null;
        } | null;
      };
    };
    const TASKS = `subscription($f: TaskUpdateFilter) { taskUpdated(filter: $f) { task { id }
      upstreamTask { upstreamTaskId description state progress target { id } initiatedBy finishedAt error { code } gatewayTask { id } } } }`;
    const upstream = subscribe<Update>(gw.url, TASKS, { f: { targetIds: [idOf(byAdmin), idOf(byGateway)] } });
    const gatewayOnly = subscribe<Update>(gw.url, TASKS, { f: { targetIds: [idOf(byAdmin)], includeUpstream: false } });
    await new Promise((r) => setTimeout(r, 300));

    // A task started behind the gateway's back, SOAP straight to vCenter.
    const admin = await adminSession(sim);
    try {
      const task = await invokeTask(admin.client, 'PowerOffVM_Task', { type: 'VirtualMachine', value: byAdmin });
      await admin.tasks.wait(task, { progress: () => {}, upstreamTask: () => {} });
      await eventually(() =>
        upstream.events.some(
          (e) =>
            e.taskUpdated.upstreamTask?.upstreamTaskId === task.value &&
            e.taskUpdated.upstreamTask.state === 'SUCCEEDED',
        ),
      );
      const done = upstream.events.map((e) => e.taskUpdated).find((u) => u.upstreamTask?.state === 'SUCCEEDED')!;
      expect(done.task).toBeNull();
      expect(done.upstreamTask).toMatchObject({
        description: 'VirtualMachine.powerOff',
        progress: 100,
        target: { id: idOf(byAdmin) },
        // vcsim names its own user here ("vcsim"), whoever logged in; vCenter names the session's user.
        initiatedBy: expect.any(String),
        error: null,
        gatewayTask: null,
      });
      expect(done.upstreamTask!.finishedAt).not.toBeNull();
    } finally {
      await admin.close();
    }

    // A task the gateway started shows as the vCenter task it is, linked to the gateway's.
    const payload = await mutate(gw, 'stopVm', { vmId: idOf(byGateway), force: true });
    expect(payload.userErrors).toEqual([]);
    const finishedTask = await finished(gw, payload.task!.id);
    await eventually(() =>
      upstream.events.some(
        (e) =>
          e.taskUpdated.upstreamTask?.upstreamTaskId === finishedTask.upstreamTaskId &&
          e.taskUpdated.upstreamTask.state === 'SUCCEEDED',
      ),
    );
    const linked = upstream.events
      .map((e) => e.taskUpdated.upstreamTask)
      .find((u) => u?.upstreamTaskId === finishedTask.upstreamTaskId && u.state === 'SUCCEEDED')!;
    expect(linked.gatewayTask).toEqual({ id: payload.task!.id });
    // The gateway's own task is streamed as ever; a subscriber that asked for no upstream tasks saw none.
    expect(upstream.events.some((e) => e.taskUpdated.task?.id === payload.task!.id)).toBe(true);
    expect(gatewayOnly.events.filter((e) => e.taskUpdated.upstreamTask !== null)).toEqual([]);
    await upstream.close();
    await gatewayOnly.close();
  }, 30_000);

  it('goes STALE when vCenter stops answering, says so, reads directly, and is SYNCED again when it answers', async () => {
    const statuses = subscribe<{ platformStatusChanged: { platform: { inventoryState: string } } }>(
      gw.url,
      'subscription { platformStatusChanged { platform { inventoryState } } }',
    );
    await new Promise((r) => setTimeout(r, 300));
    sim.pause();
    try {
      await eventually(async () => (await platform()).inventoryState === 'STALE', 15_000);
      expect((await platform()).staleSince).not.toBeNull();
      const res = await gw.query('{ virtualMachines(first: 1) { totalCount } }');
      const ext = (res as { extensions?: { directReads?: { platformId: string; reason: string }[] } }).extensions;
      expect(ext?.directReads?.[0]).toMatchObject({ platformId: 'vc' });
      expect(ext!.directReads![0]!.reason).toContain('STALE');
    } finally {
      sim.resume();
    }
    await eventually(async () => (await platform()).inventoryState === 'SYNCED', 20_000);
    await eventually(() => statuses.events.some((e) => e.platformStatusChanged.platform.inventoryState === 'SYNCED'));
    expect(statuses.events.map((e) => e.platformStatusChanged.platform.inventoryState)).toContain('STALE');
    await statuses.close();
  }, 60_000);
});

describe('read your writes on a vCenter', () => {
  it('reads back only the VM a mutation changed, not the estate, before its task succeeds', async () => {
    const proxy = await startSoapProxy(sim.url, sim.certFile);
    const own = await startTestGateway({
      platforms: [{ id: 'vc', kind: 'vsphere', url: proxy.url, username: sim.username, password: sim.password }],
    });
    try {
      const synced = async () =>
        (await own.query<{ platforms: { inventoryState: string }[] }>('{ platforms { inventoryState } }')).data!
          .platforms[0]!.inventoryState === 'SYNCED';
      await eventually(synced, 20_000);
      const listed = await own.query<{ virtualMachines: { nodes: { id: string; powerState: string }[] } }>(
        '{ virtualMachines(first: 1) { nodes { id powerState } } }',
      );
      const { id, powerState } = listed.data!.virtualMachines.nodes[0]!;
      const [mutation, input, expected] =
        powerState === 'ON' ? ['stopVm', { vmId: id, force: true }, 'OFF'] : ['startVm', { vmId: id }, 'ON'];
      const before = proxy.responses().length;
      const payload = await mutate(own, mutation, input);
      expect(payload.userErrors).toEqual([]);
      await finished(own, payload.task!.id);
      const after = await own.query<{ node: { powerState: string } }>(
        'query($id: ID!) { node(id: $id) { ... on VirtualMachine { powerState } } }',
        { id },
      );
      expect(after.data!.node.powerState).toBe(expected);
      // Every VirtualMachine object vCenter sent meanwhile, per answer: one VM read back, never a listing of all.
      const perAnswer = proxy
        .responses()
        .slice(before)
        .filter((r) => r.includes('RetrievePropertiesExResponse'))
        .map((r) => r.split('<obj type="VirtualMachine">').length - 1);
      expect(perAnswer.some((n) => n === 1)).toBe(true);
      expect(Math.max(...perAnswer)).toBe(1);
    } finally {
      await own.close();
      await proxy.close();
    }
  });
});

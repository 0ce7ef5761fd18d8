import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { finished, mutate, succeed } from './helpers/mutations.js';
import { type Oracle, type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';

// Every operation against VMware's simulator; each effect is read back by
// govmomi (the oracle), not only by the gateway.
let sim: Vcsim;
let gw: TestGateway;

beforeAll(async () => {
  sim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 2, host: 1, vm: 3 });
  gw = await startTestGateway({
    platforms: [vspherePlatform(sim)],
  });
});
afterAll(async () => {
  await gw?.close();
  await sim?.stop();
});

interface VmRow {
  id: string;
  name: string;
  powerState: string;
  vsphere: { managedObjectId: string };
  snapshots: { id: string; name: string }[];
}

async function vms(): Promise<VmRow[]> {
  const res = await gw.query<{ virtualMachines: { nodes: VmRow[] } }>(
    '{ virtualMachines(first: 100) { nodes { id name powerState vsphere { managedObjectId } snapshots { id name } } } }',
  );
  return res.data!.virtualMachines.nodes;
}

async function vm(name: string): Promise<VmRow> {
  const row = (await vms()).find((v) => v.name === name);
  expect(row, name).toBeDefined();
  return row!;
}

const oracleVm = (o: Oracle, name: string) => Object.values(o.vms).find((v) => v.name === name);

describe('VM lifecycle on vSphere, checked by govmomi', () => {
  it('powers off, on, suspends and resumes, mirroring the upstream tasks', async () => {
    const target = await vm('DC0_H0_VM0');
    const off = await succeed(gw, 'stopVm', { vmId: target.id, force: true });
    expect(off.upstreamTaskId).toMatch(/^task-\d+$/);
    expect(oracleVm(await sim.refreshOracle(), 'DC0_H0_VM0')!.powerState).toBe('poweredOff');
    expect((await vm('DC0_H0_VM0')).powerState).toBe('OFF');

    expect((await mutate(gw, 'suspendVm', { vmId: target.id })).userErrors[0]!.code).toBe('WRONG_STATE');
    await succeed(gw, 'startVm', { vmId: target.id });
    expect(oracleVm(await sim.refreshOracle(), 'DC0_H0_VM0')!.powerState).toBe('poweredOn');

    await succeed(gw, 'suspendVm', { vmId: target.id });
    expect(oracleVm(await sim.refreshOracle(), 'DC0_H0_VM0')!.powerState).toBe('suspended');
    expect((await vm('DC0_H0_VM0')).powerState).toBe('SUSPENDED');
    await succeed(gw, 'resumeVm', { vmId: target.id });
    const bootedBefore = oracleVm(await sim.refreshOracle(), 'DC0_H0_VM0')!.bootTime;
    expect(bootedBefore).not.toBe('');
    // A reset powers the VM off and on again: vCenter records a new boot.
    await succeed(gw, 'resetVm', { vmId: target.id });
    const afterReset = oracleVm(await sim.refreshOracle(), 'DC0_H0_VM0')!;
    expect(afterReset.powerState).toBe('poweredOn');
    expect(Date.parse(afterReset.bootTime)).toBeGreaterThan(Date.parse(bootedBefore));
  });

  it('asks the guest to shut down and waits until it is off', async () => {
    const target = await vm('DC0_H0_VM1');
    await succeed(gw, 'stopVm', { vmId: target.id });
    expect(oracleVm(await sim.refreshOracle(), 'DC0_H0_VM1')!.powerState).toBe('poweredOff');
  });

  it('refuses pause with UNSUPPORTED, saying why', async () => {
    const res = await mutate(gw, 'pauseVm', { vmId: (await vm('DC0_H0_VM2')).id });
    expect(res.userErrors).toEqual([
      {
        field: null,
        code: 'UNSUPPORTED',
        message: 'vSphere cannot pause a VM with its memory kept in place; use suspendVm.',
      },
    ]);
  });

  it('takes, reverts to and removes snapshots', async () => {
    const target = await vm('DC0_C0_RP0_VM0');
    const first = await succeed(gw, 'createSnapshot', { vmId: target.id, name: 'base', includeMemory: true });
    const second = await succeed(gw, 'createSnapshot', {
      vmId: target.id,
      name: 'patched',
      description: 'after patching',
    });
    expect(first.resultSnapshot?.name).toBe('base');
    let o = oracleVm(await sim.refreshOracle(), 'DC0_C0_RP0_VM0')!;
    expect(o.snapshots).toEqual(['base', 'patched']);
    expect(o.currentSnapshot).toBe('patched');

    await succeed(gw, 'revertToSnapshot', { snapshotId: first.resultSnapshot!.id });
    expect(oracleVm(await sim.refreshOracle(), 'DC0_C0_RP0_VM0')!.currentSnapshot).toBe('base');

    await succeed(gw, 'deleteSnapshot', { snapshotId: second.resultSnapshot!.id });
    o = oracleVm(await sim.refreshOracle(), 'DC0_C0_RP0_VM0')!;
    expect(o.snapshots).toEqual(['base']);
    expect((await vm('DC0_C0_RP0_VM0')).snapshots.map((s) => s.name)).toEqual(['base']);
  });

  it('refuses to delete a running VM without force, and destroys it with force', async () => {
    const target = await vm('DC0_C0_RP0_VM1');
    expect((await mutate(gw, 'deleteVm', { vmId: target.id })).userErrors[0]!.code).toBe('WRONG_STATE');
    expect(oracleVm(await sim.refreshOracle(), 'DC0_C0_RP0_VM1')).toBeDefined();
    await succeed(gw, 'deleteVm', { vmId: target.id, force: true });
    expect(oracleVm(await sim.refreshOracle(), 'DC0_C0_RP0_VM1')).toBeUndefined();
    expect((await vms()).some((v) => v.name === 'DC0_C0_RP0_VM1')).toBe(false);
  });

  it('fails a task with the fault vSphere reported', async () => {
    // vcsim 0.24 does not implement RebootGuest: a real upstream fault.
    const payload = await mutate(gw, 'rebootVm', { vmId: (await vm('DC0_H0_VM2')).id });
    const task = await finished(gw, payload.task!.id);
    expect(task.state).toBe('FAILED');
    expect(task.error?.code).toBe('UPSTREAM_FAILED');
    expect(task.error?.message).toBeTruthy();
  });
});

describe('task budget and conflicts on vSphere', () => {
  let slow: Vcsim;
  let slowGw: TestGateway;

  beforeAll(async () => {
    slow = await startVcsim({ dc: 1, cluster: 0, host: 1, vm: 3, methodDelay: { PowerOnVM_Task: 1500 } });
    slowGw = await startTestGateway({
      tasks: { maxPerHost: 1 },
      platforms: [vspherePlatform(slow)],
    });
  });
  afterAll(async () => {
    await slowGw?.close();
    await slow?.stop();
  });

  it('queues tasks past the per-host cap with their position, refuses a second operation on a busy VM, cancels a queued task', async () => {
    const res = await slowGw.query<{ virtualMachines: { nodes: { id: string; name: string }[] } }>(
      '{ virtualMachines(first: 10, orderBy: { field: NAME }) { nodes { id name } } }',
    );
    const [a, b, c] = res.data!.virtualMachines.nodes;
    for (const v of [a, b, c]) await succeed(slowGw, 'stopVm', { vmId: v!.id, force: true });

    const first = await mutate(slowGw, 'startVm', { vmId: a!.id });
    const second = await mutate(slowGw, 'startVm', { vmId: b!.id });
    const third = await mutate(slowGw, 'startVm', { vmId: c!.id });
    expect(first.task!.state).toBe('RUNNING');
    expect([second.task!.state, second.task!.queuePosition]).toEqual(['QUEUED', 1]);
    expect([third.task!.state, third.task!.queuePosition]).toEqual(['QUEUED', 2]);

    const busy = await mutate(slowGw, 'stopVm', { vmId: a!.id, force: true });
    expect(busy.userErrors[0]!.code).toBe('CONFLICT');
    expect(busy.userErrors[0]!.message).toMatch(/has a START_VM task RUNNING/);

    const cancel = (taskId: string) =>
      slowGw.query<{ cancelTask: { task: { state: string } | null; userErrors: { code: string }[] } }>(
        'mutation($id: ID!) { cancelTask(input: { taskId: $id }) { task { state } userErrors { code } } }',
        { id: taskId },
      );
    expect((await cancel(third.task!.id)).data!.cancelTask).toEqual({ task: { state: 'CANCELLED' }, userErrors: [] });
    expect((await cancel(first.task!.id)).data!.cancelTask).toEqual({
      task: null,
      userErrors: [{ code: 'WRONG_STATE' }],
    });

    for (const t of [first, second]) expect((await finished(slowGw, t.task!.id)).state).toBe('SUCCEEDED');
    expect((await finished(slowGw, third.task!.id)).state).toBe('CANCELLED');
    const o = await slow.refreshOracle();
    expect([a, b, c].map((v) => oracleVm(o, v!.name)!.powerState)).toEqual(['poweredOn', 'poweredOn', 'poweredOff']);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { encodeId } from '../src/model/ids.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { finished, mutate, succeed } from './helpers/mutations.js';

// Every operation against libvirt's test driver, its effect checked by a
// fresh query, and every refusal checked to change nothing.
let gw: TestGateway;

beforeAll(async () => {
  gw = await startTestGateway({ platforms: [{ id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 21 }).uri }] });
});
afterAll(() => gw?.close());

interface VmRow {
  id: string;
  name: string;
  powerState: string;
  rawState: string;
  snapshots: { id: string; name: string; isCurrent: boolean }[];
}

async function vm(name: string): Promise<VmRow | undefined> {
  const res = await gw.query<{ virtualMachines: { nodes: VmRow[] } }>(
    'query($n: String) { virtualMachines(first: 100, filter: { nameContains: $n }) { nodes { id name powerState rawState snapshots { id name isCurrent } } } }',
    { n: name },
  );
  return res.data!.virtualMachines.nodes.find((v) => v.name === name);
}

/** Power state, raw state and the driver's reason for it, as a fresh query shows them. */
async function reason(name: string): Promise<[string, string, string | null]> {
  const res = await gw.query<{
    virtualMachines: { nodes: { name: string; powerState: string; rawState: string; rawStateReason: string | null }[] };
  }>(
    'query($n: String) { virtualMachines(first: 100, filter: { nameContains: $n }) { nodes { name powerState rawState rawStateReason } } }',
    { n: name },
  );
  const row = res.data!.virtualMachines.nodes.find((v) => v.name === name)!;
  return [row.powerState, row.rawState, row.rawStateReason];
}

async function must(name: string): Promise<VmRow> {
  const row = await vm(name);
  expect(row, name).toBeDefined();
  return row!;
}

describe('VM lifecycle on libvirt', () => {
  it('starts a stopped VM, and refuses to start a running one without changing it', async () => {
    const target = await must('db-002'); // shut off
    expect(target.powerState).toBe('OFF');
    await succeed(gw, 'startVm', { vmId: target.id });
    expect((await must('db-002')).powerState).toBe('ON');

    const again = await mutate(gw, 'startVm', { vmId: target.id });
    expect(again.task).toBeNull();
    expect(again.userErrors).toEqual([
      { field: null, code: 'WRONG_STATE', message: 'db-002 is ON (running, booted); startVm needs it OFF.' },
    ]);
    expect((await must('db-002')).powerState).toBe('ON');
  });

  it('shuts a VM down gracefully, and powers one off with force', async () => {
    await succeed(gw, 'stopVm', { vmId: (await must('web-001')).id });
    expect(await must('web-001')).toMatchObject({ powerState: 'OFF', rawState: 'shutoff' });
    await succeed(gw, 'stopVm', { vmId: (await must('cache-003')).id, force: true });
    expect((await must('cache-003')).powerState).toBe('OFF');
    const refused = await mutate(gw, 'stopVm', { vmId: (await must('cache-003')).id });
    expect(refused.userErrors[0]!.code).toBe('WRONG_STATE');
  });

  it('pauses and unpauses, reboots and resets a running VM', async () => {
    const id = (await must('db-006')).id;
    await succeed(gw, 'pauseVm', { vmId: id });
    expect((await must('db-006')).powerState).toBe('PAUSED');
    expect((await mutate(gw, 'pauseVm', { vmId: id })).userErrors[0]!.code).toBe('WRONG_STATE');
    await succeed(gw, 'unpauseVm', { vmId: id });
    expect(await reason('db-006')).toEqual(['ON', 'running', 'unpaused']);
    // The driver restarts the domain: running again, and this time because it booted.
    await succeed(gw, 'rebootVm', { vmId: id });
    expect(await reason('db-006')).toEqual(['ON', 'running', 'booted']);
    // libvirt's test driver only checks that the domain runs on reset (testDomainReset);
    // its effect is checked on vSphere and on real QEMU guests.
    await succeed(gw, 'resetVm', { vmId: id });
    expect(await reason('db-006')).toEqual(['ON', 'running', 'booted']);
  });

  it('suspends a VM to disk and resumes it', async () => {
    const id = (await must('batch-008')).id;
    await succeed(gw, 'suspendVm', { vmId: id });
    expect(await must('batch-008')).toMatchObject({ powerState: 'SUSPENDED', rawState: 'shutoff' });
    expect((await mutate(gw, 'suspendVm', { vmId: id })).userErrors[0]!.code).toBe('WRONG_STATE');
    await succeed(gw, 'resumeVm', { vmId: id });
    expect((await must('batch-008')).powerState).toBe('ON');
  });

  it('takes, reverts to and deletes snapshots', async () => {
    const target = await must('web-009');
    const created = await succeed(gw, 'createSnapshot', {
      vmId: target.id,
      name: 'before-upgrade',
      description: 'pre 2.0',
    });
    expect(created.resultSnapshot).toMatchObject({ name: 'before-upgrade' });
    const withSnap = await must('web-009');
    expect(withSnap.snapshots.map((s) => [s.name, s.isCurrent])).toEqual([['before-upgrade', true]]);

    await succeed(gw, 'revertToSnapshot', { snapshotId: created.resultSnapshot!.id });
    await succeed(gw, 'deleteSnapshot', { snapshotId: created.resultSnapshot!.id });
    expect((await must('web-009')).snapshots).toEqual([]);

    const gone = await mutate(gw, 'revertToSnapshot', { snapshotId: created.resultSnapshot!.id });
    expect(gone.userErrors).toEqual([
      { field: ['snapshotId'], code: 'NOT_FOUND', message: 'web-009 has no such snapshot.' },
    ]);
  });

  it('deletes a snapshot with its children', async () => {
    const web1 = await must('web-001');
    expect(web1.snapshots.map((s) => s.name)).toEqual(['installed', 'patched']);
    await succeed(gw, 'deleteSnapshot', { snapshotId: web1.snapshots[0]!.id, withChildren: true });
    expect((await must('web-001')).snapshots).toEqual([]);
  });

  it('refuses to delete a running VM without force, and deletes with force', async () => {
    const target = await must('web-013');
    expect(target.powerState).toBe('ON');
    const refused = await mutate(gw, 'deleteVm', { vmId: target.id });
    expect(refused.userErrors[0]).toMatchObject({ code: 'WRONG_STATE' });
    expect(await vm('web-013')).toBeDefined();
    await succeed(gw, 'deleteVm', { vmId: target.id, force: true });
    expect(await vm('web-013')).toBeUndefined();
    const twice = await mutate(gw, 'deleteVm', { vmId: target.id, force: true });
    expect(twice.userErrors[0]).toMatchObject({ code: 'NOT_FOUND', field: ['vmId'] });
  });

  it('deletes a stopped VM with its snapshots', async () => {
    const target = await must('cache-011'); // paused, then stopped
    await succeed(gw, 'stopVm', { vmId: target.id, force: true });
    await succeed(gw, 'createSnapshot', { vmId: target.id, name: 'keep-me-not' });
    await succeed(gw, 'deleteVm', { vmId: target.id });
    expect(await vm('cache-011')).toBeUndefined();
  });

  it('refuses malformed, foreign and unknown targets as user errors', async () => {
    expect((await mutate(gw, 'startVm', { vmId: 'garbage!' })).userErrors[0]).toMatchObject({
      code: 'INVALID_INPUT',
      field: ['vmId'],
    });
    const notVm = encodeId({ kind: 'Network', platformId: 'kvm', nativeId: 'x' });
    expect((await mutate(gw, 'startVm', { vmId: notVm })).userErrors[0]).toMatchObject({
      code: 'INVALID_INPUT',
      message: 'Expected the ID of a VirtualMachine, got the ID of a Network.',
    });
    const ghost = encodeId({ kind: 'VirtualMachine', platformId: 'nowhere', nativeId: 'x' });
    expect((await mutate(gw, 'startVm', { vmId: ghost })).userErrors[0]).toMatchObject({ code: 'NOT_FOUND' });
  });

  it('returns the first result for a retried mutation with the same idempotency key', async () => {
    const id = (await must('db-010')).id;
    const first = await mutate(gw, 'stopVm', { vmId: id, force: true, idempotencyKey: 'stop-db-010-1' });
    const retry = await mutate(gw, 'stopVm', { vmId: id, force: true, idempotencyKey: 'stop-db-010-1' });
    expect(retry.task!.id).toBe(first.task!.id);
    expect(retry.userErrors).toEqual([]);
    await finished(gw, first.task!.id);
    const other = await mutate(gw, 'startVm', { vmId: id, idempotencyKey: 'stop-db-010-1' });
    expect(other.userErrors[0]).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED', field: ['idempotencyKey'] });
    expect((await must('db-010')).powerState).toBe('OFF');
  });

  it('records every mutation, allowed or refused, in the audit log', async () => {
    const id = (await must('web-017')).id;
    const refused = await mutate(gw, 'unpauseVm', { vmId: id, clientMutationId: 'c-1' });
    expect(refused.userErrors[0]!.code).toBe('WRONG_STATE');
    const accepted = await mutate(gw, 'pauseVm', { vmId: id });
    await finished(gw, accepted.task!.id);
    const res = await gw.query<{ auditLog: { totalCount: number; nodes: Record<string, unknown>[] } }>(
      'query($t: ID!) { auditLog(first: 10, filter: { targetIds: [$t] }) { totalCount nodes { operation caller outcome userErrorCodes taskId targetId input at } } }',
      { t: id },
    );
    // Newest first: how the task ended, then its acceptance, then the refusal.
    expect(res.data!.auditLog.nodes.map((e) => [e['operation'], e['outcome'], e['userErrorCodes']])).toEqual([
      ['pauseVm', 'SUCCEEDED', []],
      ['pauseVm', 'ACCEPTED', []],
      ['unpauseVm', 'REFUSED', ['WRONG_STATE']],
    ]);
    for (const entry of res.data!.auditLog.nodes.slice(0, 2)) {
      expect(entry).toMatchObject({ caller: 'anonymous', taskId: accepted.task!.id, targetId: id });
    }
    expect(JSON.parse(res.data!.auditLog.nodes[2]!['input'] as string)).toEqual({ vmId: id, clientMutationId: 'c-1' });
    const byOperation = await gw.query<{ auditLog: { totalCount: number } }>(
      '{ auditLog(first: 0, filter: { operations: ["deleteVm"], callers: ["anonymous"] }) { totalCount } }',
    );
    expect(byOperation.data!.auditLog.totalCount).toBeGreaterThanOrEqual(3);
  });

  it('lists tasks newest first, filtered by state and target', async () => {
    const res = await gw.query<{ tasks: { totalCount: number; nodes: { operation: string; state: string }[] } }>(
      '{ tasks(first: 100, filter: { states: [SUCCEEDED] }) { totalCount nodes { operation state } } }',
    );
    expect(res.data!.tasks.totalCount).toBeGreaterThan(10);
    expect(res.data!.tasks.nodes.every((t) => t.state === 'SUCCEEDED')).toBe(true);
  });

  it('lists tasks newest first: the task just started leads, and creation times never rise', async () => {
    const latest = await mutate(gw, 'createSnapshot', { vmId: (await must('batch-020')).id, name: 'latest' });
    await finished(gw, latest.task!.id);
    const res = await gw.query<{ tasks: { nodes: { id: string; createdAt: string }[] } }>(
      '{ tasks(first: 100) { nodes { id createdAt } } }',
    );
    const nodes = res.data!.tasks.nodes;
    expect(nodes.length).toBeGreaterThan(10);
    expect(nodes[0]!.id).toBe(latest.task!.id);
    const times = nodes.map((t) => Date.parse(t.createdAt));
    expect(times).toEqual([...times].sort((a, b) => b - a));
  });
});

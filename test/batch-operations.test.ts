import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { invokeVoid } from '../src/datasources/vsphere/vim.js';
import { expandName } from '../src/model/vm.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { type TaskRow, finished, mutate, succeed } from './helpers/mutations.js';
import { type Vcsim, startVcsim, vspherePlatform, adminSession } from './helpers/vcsim.js';

interface Batch {
  items: { task: TaskRow | null; userErrors: { code: string; message: string }[] }[];
  tasks: TaskRow[];
  aggregate: { total: number; state: string; succeeded: number; failed: number };
  userErrors: { code: string; field: string[] | null; message: string }[];
}

async function batch(gw: TestGateway, mutation: string, type: string, input: Record<string, unknown>): Promise<Batch> {
  const res = await gw.query<Record<string, Batch>>(
    `mutation($input: ${type}!) { ${mutation}(input: $input) {
      items { task { id state } userErrors { code message } } tasks { id operation state targetName }
      aggregate { total state succeeded failed } userErrors { code field message } } }`,
    { input },
  );
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return res.data![mutation]!;
}

async function aggregateOf(gw: TestGateway, ids: string[]) {
  const res = await gw.query<{ taskAggregate: { total: number; succeeded: number; failed: number; state: string } }>(
    'query($ids: [ID!]!) { taskAggregate(ids: $ids) { total succeeded failed state } }',
    { ids },
  );
  return res.data!.taskAggregate;
}

async function vmsNamed(gw: TestGateway, prefix: string) {
  const res = await gw.query<{
    virtualMachines: { nodes: { id: string; name: string; powerState: string; disks: { source: string | null }[] }[] };
  }>(
    'query($n: String) { virtualMachines(first: 200, filter: { nameContains: $n }) { nodes { id name powerState disks { source } } } }',
    { n: prefix },
  );
  return res.data!.virtualMachines.nodes;
}

it('expands name patterns', () => {
  expect(['web-{n}', 'web-{n:3}', 'x{n:2}-{n}'].map((p) => expandName(p, 7))).toEqual(['web-7', 'web-007', 'x07-7']);
});

describe('clones and batches on libvirt', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ platforms: [{ id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 14 }).uri }] });
  });
  afterAll(() => gw?.close());

  it('clones a stopped VM with copies of its disks, and refuses a running source or a taken name', async () => {
    const [source] = await vmsNamed(gw, 'db-002');
    const task = await succeed(gw, 'cloneVm', { vmId: source!.id, name: 'db-002-copy', powerOn: true });
    expect(task.operation).toBe('CLONE_VM');
    const [copy] = await vmsNamed(gw, 'db-002-copy');
    expect(copy).toMatchObject({
      powerState: 'ON',
      disks: [{ source: '/var/lib/virt-graph/images/db-002-copy-disk1.qcow2' }],
    });
    expect((await mutate(gw, 'cloneVm', { vmId: source!.id, name: 'db-002-copy' })).userErrors[0]).toMatchObject({
      code: 'INVALID_INPUT',
      field: ['name'],
    });
    const [running] = await vmsNamed(gw, 'web-001');
    const refused = await mutate(gw, 'cloneVm', { vmId: running!.id, name: 'nope' });
    expect(refused.userErrors[0]!.message).toBe(
      'web-001 is ON (running, unknown); cloneVm needs it OFF on this platform.',
    );
  });

  it('deploys 10 VMs from a template and reports 10 succeeded tasks', async () => {
    const [template] = await vmsNamed(gw, 'batch-012'); // shut off
    const res = await batch(gw, 'deployVms', 'DeployVmsInput', {
      templateId: template!.id,
      count: 10,
      namePattern: 'app-{n:2}',
    });
    expect(res.userErrors).toEqual([]);
    expect(res.tasks).toHaveLength(10);
    const done = await Promise.all(res.tasks.map((t) => finished(gw, t.id)));
    expect(done.map((t) => t.state)).toEqual(Array(10).fill('SUCCEEDED'));
    expect(
      await aggregateOf(
        gw,
        res.tasks.map((t) => t.id),
      ),
    ).toEqual({ total: 10, succeeded: 10, failed: 0, state: 'SUCCEEDED' });
    const apps = await vmsNamed(gw, 'app-');
    expect(apps.map((v) => v.name).sort()).toEqual(
      Array.from({ length: 10 }, (_, i) => `app-${String(i + 1).padStart(2, '0')}`),
    );
    expect(apps.every((v) => v.powerState === 'ON')).toBe(true);
  });

  it('refuses a whole batch whose input cannot work, and acts on nothing', async () => {
    const [template] = await vmsNamed(gw, 'batch-012');
    const noIndex = await batch(gw, 'deployVms', 'DeployVmsInput', {
      templateId: template!.id,
      count: 3,
      namePattern: 'same',
    });
    expect(noIndex.userErrors).toEqual([
      { code: 'INVALID_INPUT', field: ['namePattern'], message: expect.stringContaining('{n}') },
    ]);
    const tooMany = await batch(gw, 'deployVms', 'DeployVmsInput', {
      templateId: template!.id,
      count: 101,
      namePattern: 'x-{n}',
    });
    expect(tooMany.userErrors[0]!.field).toEqual(['count']);
    expect(await vmsNamed(gw, 'same')).toEqual([]);
  });

  it('snapshots many VMs with one timestamped name, and powers many', async () => {
    const vms = await vmsNamed(gw, 'app-0');
    const snaps = await batch(gw, 'snapshotVms', 'SnapshotVmsInput', {
      vmIds: vms.map((v) => v.id),
      namePrefix: 'nightly',
    });
    await Promise.all(snaps.tasks.map((t) => finished(gw, t.id)));
    expect(
      await aggregateOf(
        gw,
        snaps.tasks.map((t) => t.id),
      ),
    ).toMatchObject({ succeeded: vms.length, state: 'SUCCEEDED' });
    const res = await gw.query<{ virtualMachines: { nodes: { snapshots: { name: string }[] }[] } }>(
      '{ virtualMachines(first: 20, filter: { nameContains: "app-0" }) { nodes { snapshots { name } } } }',
    );
    const names = new Set(res.data!.virtualMachines.nodes.flatMap((n) => n.snapshots.map((s) => s.name)));
    expect(names.size).toBe(1);
    expect([...names][0]).toMatch(/^nightly-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$/);

    const stop = await batch(gw, 'powerVms', 'PowerVmsInput', { vmIds: vms.map((v) => v.id), action: 'FORCE_STOP' });
    await Promise.all(stop.tasks.map((t) => finished(gw, t.id)));
    expect((await vmsNamed(gw, 'app-0')).every((v) => v.powerState === 'OFF')).toBe(true);
    // Stopping them again is refused item by item, with the state in each message.
    const again = await batch(gw, 'powerVms', 'PowerVmsInput', { vmIds: vms.map((v) => v.id), action: 'STOP' });
    expect(again.tasks).toEqual([]);
    expect(again.items.every((i) => i.userErrors[0]?.code === 'WRONG_STATE')).toBe(true);
  });
});

describe('clones and batches on vSphere, checked by govmomi', () => {
  let sim: Vcsim;
  let gw: TestGateway;
  beforeAll(async () => {
    sim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 2, host: 1, vm: 2 });
    gw = await startTestGateway({
      platforms: [vspherePlatform(sim)],
    });
  });
  afterAll(async () => {
    await gw?.close();
    await sim?.stop();
  });

  it('clones a standalone host VM into a cluster and starts it', async () => {
    // vcsim 0.24 honors the resource pool of a clone's placement but not its host.
    const [source] = await vmsNamed(gw, 'DC0_H0_VM0');
    const clusters = await gw.query<{ clusters: { nodes: { id: string }[] } }>(
      '{ clusters(first: 1) { nodes { id } } }',
    );
    const task = await succeed(gw, 'cloneVm', {
      vmId: source!.id,
      name: 'copy-1',
      powerOn: true,
      placement: { clusterId: clusters.data!.clusters.nodes[0]!.id },
    });
    expect(task.upstreamTaskId).toMatch(/^task-/);
    const oracle = await sim.refreshOracle();
    const copy = Object.values(oracle.vms).find((v) => v.name === 'copy-1')!;
    const clusterVm = Object.values(oracle.vms).find((v) => v.name === 'DC0_C0_RP0_VM0')!;
    expect(copy).toMatchObject({ powerState: 'poweredOn', resourcePool: clusterVm.resourcePool });
  });

  it('refuses a placement on another platform', async () => {
    const [source] = await vmsNamed(gw, 'DC0_H0_VM0');
    const foreign = Buffer.from('v1:Host:elsewhere:host-1').toString('base64url');
    const res = await mutate(gw, 'cloneVm', { vmId: source!.id, name: 'copy-x', placement: { hostId: foreign } });
    expect(res.userErrors[0]).toMatchObject({ code: 'INVALID_INPUT', field: ['placement', 'hostId'] });
  });

  it('deploys 10 VMs from a template into a cluster and reports 10 succeeded tasks', async () => {
    const [template] = await vmsNamed(gw, 'DC0_H0_VM1');
    // Make it a template through the API, as an administrator would.
    const admin = await adminSession(sim);
    const moref = {
      type: 'VirtualMachine',
      value: Object.entries(sim.oracle.vms).find(([, v]) => v.name === 'DC0_H0_VM1')![0],
    };
    await succeed(gw, 'stopVm', { vmId: template!.id, force: true });
    await invokeVoid(admin.client, 'MarkAsTemplate', moref);
    await admin.close();

    const clusters = await gw.query<{ clusters: { nodes: { id: string }[] } }>(
      '{ clusters(first: 1) { nodes { id } } }',
    );
    const res = await batch(gw, 'deployVms', 'DeployVmsInput', {
      templateId: template!.id,
      count: 10,
      namePattern: 'web-{n:2}',
      placement: { clusterId: clusters.data!.clusters.nodes[0]!.id },
    });
    expect(res.userErrors).toEqual([]);
    const done = await Promise.all(res.tasks.map((t) => finished(gw, t.id)));
    expect(done.map((t) => [t.state, t.error])).toEqual(Array(10).fill(['SUCCEEDED', null]));
    const oracle = await sim.refreshOracle();
    const webs = Object.values(oracle.vms).filter((v) => v.name.startsWith('web-'));
    expect(webs.map((v) => v.name).sort()).toEqual(
      Array.from({ length: 10 }, (_, i) => `web-${String(i + 1).padStart(2, '0')}`),
    );
    expect(webs.every((v) => v.powerState === 'poweredOn' && !v.template)).toBe(true);
  });
});

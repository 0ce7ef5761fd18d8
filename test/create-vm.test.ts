import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { finished, mutate, succeed } from './helpers/mutations.js';
import { type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';

const GiB = 1024 ** 3;

async function ids(
  gw: TestGateway,
): Promise<{ platform: string; networks: Record<string, string>; clusters: string[] }> {
  const res = await gw.query<{
    platforms: { id: string }[];
    networks: { nodes: { id: string; name: string }[] };
    clusters: { nodes: { id: string }[] };
  }>('{ platforms { id } networks(first: 50) { nodes { id name } } clusters(first: 5) { nodes { id } } }');
  return {
    platform: res.data!.platforms[0]!.id,
    networks: Object.fromEntries(res.data!.networks.nodes.map((n) => [n.name, n.id])),
    clusters: res.data!.clusters.nodes.map((c) => c.id),
  };
}

async function vmByName(gw: TestGateway, name: string) {
  const res = await gw.query<{ virtualMachines: { nodes: Record<string, unknown>[] } }>(
    'query($n: String) { virtualMachines(first: 10, filter: { nameContains: $n }) { nodes { name powerState vcpus coresPerSocket memoryMiB guestOs disks { target capacityBytes format } nics { model network { name } } } } }',
    { n: name },
  );
  return res.data!.virtualMachines.nodes.find((v) => v['name'] === name);
}

describe('createVm on libvirt', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ platforms: [{ id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 3 }).uri }] });
  });
  afterAll(() => gw?.close());

  it('creates and starts a VM with a new disk and a NIC', async () => {
    const { platform, networks } = await ids(gw);
    const task = await succeed(gw, 'createVm', {
      platformId: platform,
      name: 'fresh-1',
      vcpus: 4,
      coresPerSocket: 2,
      memoryMiB: 2048,
      guestOs: 'http://debian.org/debian/12',
      disks: [{ capacityBytes: 5 * GiB }],
      nics: [{ networkId: networks['default'] }],
      powerOn: true,
    });
    expect(task.operation).toBe('CREATE_VM');
    const res = await gw.query<{ task: { resultVm: { name: string } | null } }>(
      'query($id: ID!) { task(id: $id) { resultVm { name } } }',
      { id: task.id },
    );
    expect(res.data!.task.resultVm).toEqual({ name: 'fresh-1' });
    expect(await vmByName(gw, 'fresh-1')).toEqual({
      name: 'fresh-1',
      powerState: 'ON',
      vcpus: 4,
      coresPerSocket: 2,
      memoryMiB: 2048,
      guestOs: 'http://debian.org/debian/12',
      disks: [{ target: 'vda', capacityBytes: 5 * GiB, format: 'qcow2' }],
      nics: [{ model: 'virtio', network: { name: 'default' } }],
    });
  });

  it('honors idempotency keys like every mutation: a retry replays, a key of another mutation is refused', async () => {
    const { platform } = await ids(gw);
    const vms = await gw.query<{ virtualMachines: { nodes: { id: string }[] } }>(
      '{ virtualMachines(first: 1) { nodes { id } } }',
    );
    await mutate(gw, 'stopVm', {
      vmId: vms.data!.virtualMachines.nodes[0]!.id,
      force: true,
      idempotencyKey: 'key-stop-1',
    });
    const reused = await mutate(gw, 'createVm', {
      platformId: platform,
      name: 'never',
      memoryMiB: 512,
      idempotencyKey: 'key-stop-1',
    });
    expect(reused.userErrors[0]).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED', field: ['idempotencyKey'] });
    expect(await vmByName(gw, 'never')).toBeUndefined();

    const first = await mutate(gw, 'createVm', {
      platformId: platform,
      name: 'once',
      memoryMiB: 512,
      idempotencyKey: 'key-create-1',
    });
    const retry = await mutate(gw, 'createVm', {
      platformId: platform,
      name: 'once',
      memoryMiB: 512,
      idempotencyKey: 'key-create-1',
    });
    expect(retry.userErrors).toEqual([]);
    expect(retry.task!.id).toBe(first.task!.id);
  });

  it('lets the name of a deleted VM be used again', async () => {
    const { platform } = await ids(gw);
    const create = () => mutate(gw, 'createVm', { platformId: platform, name: 'reused', memoryMiB: 256 });
    const first = await create();
    expect(first.userErrors).toEqual([]);
    await finished(gw, first.task!.id);
    const res = await gw.query<{ virtualMachines: { nodes: { id: string }[] } }>(
      '{ virtualMachines(first: 5, filter: { nameContains: "reused" }) { nodes { id } } }',
    );
    await succeed(gw, 'deleteVm', { vmId: res.data!.virtualMachines.nodes[0]!.id });
    expect(await vmByName(gw, 'reused')).toBeUndefined();
    const again = await create();
    expect(again.userErrors).toEqual([]);
    expect((await finished(gw, again.task!.id)).state).toBe('SUCCEEDED');
    expect(await vmByName(gw, 'reused')).toBeDefined();
  });

  it('refuses a taken name, a cluster placement and an unknown platform', async () => {
    const { platform } = await ids(gw);
    const taken = await mutate(gw, 'createVm', { platformId: platform, name: 'web-001', memoryMiB: 512 });
    expect(taken.userErrors[0]).toMatchObject({ code: 'INVALID_INPUT', field: ['name'] });
    const cluster = Buffer.from('v1:Cluster:kvm:c1').toString('base64url');
    const placed = await mutate(gw, 'createVm', {
      platformId: platform,
      name: 'x',
      memoryMiB: 512,
      placement: { clusterId: cluster },
    });
    expect(placed.userErrors[0]).toMatchObject({ code: 'INVALID_INPUT', field: ['placement'] });
    const ghost = Buffer.from('v1:Platform:ghost:ghost').toString('base64url');
    expect(
      (await mutate(gw, 'createVm', { platformId: ghost, name: 'x', memoryMiB: 512 })).userErrors[0],
    ).toMatchObject({ code: 'NOT_FOUND' });
    expect(
      (await mutate(gw, 'createVm', { platformId: platform, name: 'x', memoryMiB: 1 })).userErrors[0],
    ).toMatchObject({ field: ['memoryMiB'] });
  });
});

describe('createVm on vSphere, checked by govmomi', () => {
  let sim: Vcsim;
  let gw: TestGateway;
  beforeAll(async () => {
    sim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 2, host: 0, vm: 1, ds: 1, pg: 1 });
    gw = await startTestGateway({
      platforms: [vspherePlatform(sim)],
    });
  });
  afterAll(async () => {
    await gw?.close();
    await sim?.stop();
  });

  it('creates a VM in a cluster with a disk and NICs, and starts it', async () => {
    const { platform, networks, clusters } = await ids(gw);
    await succeed(gw, 'createVm', {
      platformId: platform,
      name: 'new-web',
      vcpus: 2,
      memoryMiB: 256,
      guestOs: 'ubuntu64Guest',
      disks: [{ capacityBytes: 2 * GiB }],
      nics: [{ networkId: networks['VM Network'] }, { networkId: networks['DC0_DVPG0'] }],
      placement: { clusterId: clusters[0] },
      powerOn: true,
    });
    const o = Object.values((await sim.refreshOracle()).vms).find((v) => v.name === 'new-web')!;
    expect(o).toMatchObject({
      powerState: 'poweredOn',
      numCpu: 2,
      memoryMB: 256,
      guestId: 'ubuntu64Guest',
      disks: 1,
      nics: 2,
    });
    expect(await vmByName(gw, 'new-web')).toMatchObject({ powerState: 'ON', vcpus: 2, memoryMiB: 256 });
  });

  it('refuses a VM without a cluster or host to place it on', async () => {
    const { platform } = await ids(gw);
    const res = await mutate(gw, 'createVm', { platformId: platform, name: 'nowhere', memoryMiB: 256 });
    expect(res.userErrors).toEqual([
      {
        code: 'INVALID_INPUT',
        field: ['placement'],
        message: 'vSphere needs placement.clusterId, placement.hostId or placement.resourcePool for a new VM.',
      },
    ]);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { mutate, succeed } from './helpers/mutations.js';
import { type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';

interface Hardware {
  id: string;
  vcpus: number;
  coresPerSocket: number | null;
  memoryMiB: number;
  disks: { device: string; target: string; capacityBytes: number | null }[];
  nics: { mac: string; network: { id: string; name: string } | null }[];
}

async function hardware(gw: TestGateway, name: string): Promise<Hardware> {
  const res = await gw.query<{ virtualMachines: { nodes: (Hardware & { name: string })[] } }>(
    'query($n: String) { virtualMachines(first: 50, filter: { nameContains: $n }) { nodes { id name vcpus coresPerSocket memoryMiB disks { device target capacityBytes } nics { mac network { id name } } } } }',
    { n: name },
  );
  return res.data!.virtualMachines.nodes.find((v) => v.name === name)!;
}

async function networkId(gw: TestGateway, name: string): Promise<string> {
  const res = await gw.query<{ networks: { nodes: { id: string; name: string }[] } }>(
    '{ networks(first: 50) { nodes { id name } } }',
  );
  return res.data!.networks.nodes.find((n) => n.name === name)!.id;
}

const GiB = 1024 ** 3;

describe('reconfigureVm on libvirt', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ platforms: [{ id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 6 }).uri }] });
  });
  afterAll(() => gw?.close());

  it('changes vCPUs, topology and memory, adds a disk and a NIC, removes a NIC', async () => {
    const before = await hardware(gw, 'db-002');
    const isolated = await networkId(gw, 'isolated');
    await succeed(gw, 'reconfigureVm', {
      vmId: before.id,
      vcpus: 4,
      coresPerSocket: 2,
      memoryMiB: 3072,
      addDisks: [{ capacityBytes: 2 * GiB }],
      addNics: [{ networkId: isolated }],
      removeNicMacs: [before.nics[0]!.mac],
    });
    const after = await hardware(gw, 'db-002');
    expect(after).toMatchObject({ vcpus: 4, coresPerSocket: 2, memoryMiB: 3072 });
    expect(after.disks.map((d) => [d.target, d.capacityBytes])).toEqual([
      ['vda', 20 * GiB],
      ['vdb', 2 * GiB],
    ]);
    expect(after.nics.map((n) => n.network?.name)).toEqual(['isolated']);

    await succeed(gw, 'reconfigureVm', { vmId: before.id, removeDiskTargets: ['vdb'] });
    expect((await hardware(gw, 'db-002')).disks.map((d) => d.target)).toEqual(['vda']);
  });

  it('refuses input that cannot work, changing nothing', async () => {
    const vm = await hardware(gw, 'web-005');
    const cases: [Record<string, unknown>, string[]][] = [
      [{}, ['vmId']],
      [{ vcpus: 0 }, ['vcpus']],
      [{ vcpus: 3, coresPerSocket: 2 }, ['coresPerSocket']],
      [{ memoryMiB: 1 }, ['memoryMiB']],
      [{ addDisks: [{ capacityBytes: 10 }] }, ['addDisks']],
      [{ addNics: [{ networkId: Buffer.from('v1:Network:elsewhere:x').toString('base64url') }] }, ['addNics']],
    ];
    for (const [input, field] of cases) {
      const res = await mutate(gw, 'reconfigureVm', { vmId: vm.id, ...input });
      expect(res.userErrors[0], JSON.stringify(input)).toMatchObject({ code: 'INVALID_INPUT', field });
    }
    expect(await hardware(gw, 'web-005')).toEqual(vm);
  });

  it('refuses disks and NICs the VM does not have before any task starts, compared exactly', async () => {
    const vm = await hardware(gw, 'web-001');
    expect(vm.disks.map((d) => d.target)).toContain('vda');
    const cases: [Record<string, unknown>, string[]][] = [
      [{ removeDiskTargets: ['vd.'] }, ['removeDiskTargets']],
      [{ removeDiskTargets: ['vd('] }, ['removeDiskTargets']],
      [{ removeDiskTargets: ['VDA'] }, ['removeDiskTargets']],
      [{ removeNicMacs: ['02:00:00:de:ad:00'] }, ['removeNicMacs']],
    ];
    for (const [input, field] of cases) {
      const res = await mutate(gw, 'reconfigureVm', { vmId: vm.id, ...input });
      expect(res.task, JSON.stringify(input)).toBeNull();
      expect(res.userErrors[0], JSON.stringify(input)).toMatchObject({ code: 'INVALID_INPUT', field });
    }
    expect(await hardware(gw, 'web-001')).toEqual(vm);
  });
});

describe('reconfigureVm on vSphere, checked by govmomi', () => {
  let sim: Vcsim;
  let gw: TestGateway;
  beforeAll(async () => {
    sim = await startVcsim({ dc: 1, cluster: 0, host: 1, vm: 2, pg: 1 });
    gw = await startTestGateway({
      platforms: [vspherePlatform(sim)],
    });
  });
  afterAll(async () => {
    await gw?.close();
    await sim?.stop();
  });

  it('changes CPUs and memory, adds a disk and NICs on a standard and a distributed port group, then removes them', async () => {
    const before = await hardware(gw, 'DC0_H0_VM0');
    await succeed(gw, 'reconfigureVm', {
      vmId: before.id,
      vcpus: 2,
      memoryMiB: 64,
      addDisks: [{ capacityBytes: GiB }],
      addNics: [{ networkId: await networkId(gw, 'VM Network') }, { networkId: await networkId(gw, 'DC0_DVPG0') }],
    });
    let o = Object.values((await sim.refreshOracle()).vms).find((v) => v.name === 'DC0_H0_VM0')!;
    expect(o).toMatchObject({ numCpu: 2, memoryMB: 64, disks: 2, nics: 3 });
    const after = await hardware(gw, 'DC0_H0_VM0');
    const added = after.disks.find((d) => d.device === 'DISK' && d.capacityBytes === GiB)!;
    expect(added.target).toMatch(/^scsi0:\d+$/);
    expect(after.nics.map((n) => n.network?.name).sort()).toEqual(['DC0_DVPG0', 'DC0_DVPG0', 'VM Network']);

    const newNics = after.nics.filter((n) => !before.nics.some((b) => b.mac === n.mac));
    await succeed(gw, 'reconfigureVm', {
      vmId: before.id,
      removeDiskTargets: [added.target],
      removeNicMacs: newNics.map((n) => n.mac),
    });
    o = Object.values((await sim.refreshOracle()).vms).find((v) => v.name === 'DC0_H0_VM0')!;
    expect(o).toMatchObject({ disks: 1, nics: 1 });
  });
});

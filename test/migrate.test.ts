import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { mutate, succeed } from './helpers/mutations.js';
import { type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';

let sim: Vcsim;
let gw: TestGateway;

beforeAll(async () => {
  sim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 2, host: 1, vm: 1, ds: 2 });
  const estate = writeEstate({ vms: 3 });
  gw = await startTestGateway({
    platforms: [
      vspherePlatform(sim),
      { id: 'kvm-a', kind: 'libvirt', uri: estate.uri },
      { id: 'kvm-b', kind: 'libvirt', uri: writeEstate({ vms: 1 }).uri },
    ],
  });
});
afterAll(async () => {
  await gw?.close();
  await sim?.stop();
});

async function lookup() {
  const res = await gw.query<{
    virtualMachines: { nodes: { id: string; name: string; platform: { name: string } }[] };
    hosts: { nodes: { id: string; name: string; platform: { name: string } }[] };
    storage: { nodes: { id: string; name: string; url: string | null; platform: { name: string } }[] };
  }>(`{
    virtualMachines(first: 100) { nodes { id name platform { name } } }
    hosts(first: 100) { nodes { id name platform { name } } }
    storage(first: 100) { nodes { id name platform { name } ... on Datastore { url } } }
  }`);
  const d = res.data!;
  return {
    vm: (name: string, platform: string) =>
      d.virtualMachines.nodes.find((v) => v.name === name && v.platform.name === platform)!,
    host: (name: string, platform: string) =>
      d.hosts.nodes.find((h) => h.name === name && h.platform.name === platform)!,
    store: (name: string) => d.storage.nodes.find((s) => s.name === name && s.platform.name === 'vc')!,
  };
}

describe('migrateVm', () => {
  it('relocates a vSphere VM to another host and datastore, as govmomi sees it', async () => {
    const l = await lookup();
    const vm = l.vm('DC0_C0_RP0_VM0', 'vc');
    const before = Object.values(sim.oracle.vms).find((v) => v.name === 'DC0_C0_RP0_VM0')!;
    const targetStore = Object.entries(sim.oracle.datastores).find(([ref]) => !before.datastores.includes(ref))!;
    await succeed(gw, 'migrateVm', {
      vmId: vm.id,
      hostId: l.host('DC0_H0', 'vc').id,
      storageId: l.store(targetStore[1].name).id,
    });
    const o = await sim.refreshOracle();
    const after = Object.values(o.vms).find((v) => v.name === 'DC0_C0_RP0_VM0')!;
    expect(o.hosts[after.host]!.name).toBe('DC0_H0');
    expect(after.datastores).toEqual([targetStore[0]]);
  });

  it('refuses moving a vSphere VM to a host of another platform', async () => {
    const l = await lookup();
    const res = await mutate(gw, 'migrateVm', { vmId: l.vm('DC0_H0_VM0', 'vc').id, hostId: l.host('vm', 'kvm-a').id });
    expect(res.userErrors).toEqual([
      { code: 'INVALID_INPUT', field: ['hostId'], message: 'A vSphere VM moves between hosts of its own vCenter.' },
    ]);
  });

  it("says UNSUPPORTED for libvirt's test driver, and refuses a libvirt VM's own host", async () => {
    const l = await lookup();
    const vm = l.vm('web-001', 'kvm-a');
    const other = await mutate(gw, 'migrateVm', { vmId: vm.id, hostId: l.host('vm', 'kvm-b').id });
    expect(other.userErrors).toEqual([
      { code: 'UNSUPPORTED', field: null, message: "libvirt's test driver cannot migrate domains." },
    ]);
    const same = await mutate(gw, 'migrateVm', { vmId: vm.id, hostId: l.host('vm', 'kvm-a').id });
    expect(same.userErrors[0]).toMatchObject({ code: 'INVALID_INPUT', field: ['hostId'] });
  });
});

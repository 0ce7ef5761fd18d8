import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';

// Two vCenters of different shapes and a libvirt host in one graph. Every
// answer is compared with what govmomi, VMware's Go client, reads from the
// same simulator (the oracle), not with the gateway's own client.
let big: Vcsim;
let esx: Vcsim;
let gw: TestGateway;

beforeAll(async () => {
  [big, esx] = await Promise.all([
    startVcsim({ dc: 2, cluster: 2, clusterHost: 2, host: 1, vm: 2, ds: 2, pg: 2 }),
    startVcsim({ esx: true, vm: 3 }),
  ]);
  gw = await startTestGateway({
    platforms: [
      vspherePlatform(big, { id: 'vc-big' }),
      vspherePlatform(esx, { id: 'esx-1' }),
      { id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 5 }).uri },
    ],
    // The documents below ask for whole estates at once, every relation at its largest page.
    limits: { maxCost: 10_000_000 },
  });
});
afterAll(async () => {
  await gw?.close();
  await Promise.all([big?.stop(), esx?.stop()]);
});

type Row = Record<string, unknown>;

async function vmsOf(platform: string): Promise<Row[]> {
  const platforms = await gw.query<{ platforms: { id: string; name: string }[] }>('{ platforms { id name } }');
  const id = platforms.data!.platforms.find((p) => p.name === platform)!.id;
  const res = await gw.query<{ virtualMachines: { nodes: Row[] } }>(
    `query($p: ID!) { virtualMachines(first: 100, filter: { platformIds: [$p] }) { nodes {
      id name uuid powerState phase rawState vcpus coresPerSocket memoryMiB guestOs guestOsFullName hardwareVersion isTemplate guestHostName
      vsphere { managedObjectId instanceUuid toolsStatus }
      host { name } datacenter { name } cluster { name }
      disks { device capacityBytes storage { name } } nics { mac model network { name } }
      networks { name } storage { name }
    } } }`,
    { p: id },
  );
  expect(res.errors).toBeUndefined();
  return res.data!.virtualMachines.nodes;
}

const POWER: Record<string, string> = { poweredOn: 'ON', poweredOff: 'OFF', suspended: 'SUSPENDED' };
// vSphere's datastore types (summary.type) in the graph's StorageType.
const STORAGE_TYPES: Record<string, string> = { VMFS: 'VMFS', NFS: 'NFS', NFS41: 'NFS', vsan: 'VSAN', VVOL: 'VVOL' };

describe('vSphere inventory matches what govmomi sees', () => {
  it('connects both simulators and the libvirt host', async () => {
    const res = await gw.query<{ platforms: Row[] }>(
      '{ platforms { name kind status hypervisorType hypervisorVersion } }',
    );
    expect(res.data!.platforms).toEqual([
      {
        name: 'vc-big',
        kind: 'VSPHERE',
        status: 'CONNECTED',
        hypervisorType: 'VirtualCenter',
        hypervisorVersion: expect.any(String),
      },
      {
        name: 'esx-1',
        kind: 'VSPHERE',
        status: 'CONNECTED',
        hypervisorType: 'HostAgent',
        hypervisorVersion: expect.any(String),
      },
      { name: 'kvm', kind: 'LIBVIRT', status: 'CONNECTED', hypervisorType: 'TEST', hypervisorVersion: '0.0.2' },
    ]);
  });

  it.each([['vc-big'], ['esx-1']])('answers every VM of %s as the oracle has it', async (platform) => {
    const sim = platform === 'vc-big' ? big : esx;
    const oracle = sim.oracle;
    const vms = await vmsOf(platform);
    expect(vms).toHaveLength(Object.keys(oracle.vms).length);
    for (const vm of vms) {
      const moref = (vm['vsphere'] as { managedObjectId: string }).managedObjectId;
      const o = oracle.vms[moref]!;
      expect(o, moref).toBeDefined();
      expect(vm).toMatchObject({
        name: o.name,
        uuid: o.uuid,
        powerState: POWER[o.powerState],
        rawState: o.powerState,
        vcpus: o.numCpu,
        coresPerSocket: o.coresPerSocket,
        memoryMiB: o.memoryMB,
        guestOs: o.guestId,
        guestOsFullName: o.guestFullName,
        hardwareVersion: o.hardwareVersion,
        isTemplate: o.template,
        vsphere: { managedObjectId: moref, instanceUuid: o.instanceUuid },
        host: { name: oracle.hosts[o.host]!.name },
      });
      const disks = vm['disks'] as { device: string }[];
      expect(disks.filter((d) => d.device === 'DISK')).toHaveLength(o.disks);
      expect(vm['nics']).toHaveLength(o.nics);
      expect((vm['storage'] as { name: string }[]).map((s) => s.name).sort()).toEqual(
        o.datastores.map((d) => oracle.datastores[d]!.name).sort(),
      );
      expect((vm['networks'] as { name: string }[]).map((n) => n.name).sort()).toEqual(
        o.networks.map((n) => oracle.networks[n]!.name).sort(),
      );
      const parent = oracle.hosts[o.host]!.parent;
      expect(vm['cluster']).toEqual(oracle.clusters[parent] ? { name: oracle.clusters[parent]!.name } : null);
    }
  });

  it('answers hosts with hardware, versions, states, cluster and datacenter', async () => {
    const res = await gw.query<{ hosts: { nodes: Row[] } }>(`{ hosts(first: 100) { nodes {
      name platform { name } cpuModel cpuMhz cpuSockets cpuThreads memoryMiB hypervisorVersion hypervisorBuild uuid
      connectionState powerState inMaintenanceMode cluster { name } datacenter { name } vsphere { managedObjectId }
      virtualMachines(first: 0) { totalCount }
    } } }`);
    expect(res.errors).toBeUndefined();
    for (const sim of [big, esx]) {
      const name = sim === big ? 'vc-big' : 'esx-1';
      const hosts = res.data!.hosts.nodes.filter((h) => (h['platform'] as { name: string }).name === name);
      expect(hosts).toHaveLength(Object.keys(sim.oracle.hosts).length);
      for (const h of hosts) {
        const moref = (h['vsphere'] as { managedObjectId: string }).managedObjectId;
        const o = sim.oracle.hosts[moref]!;
        expect(h).toMatchObject({
          name: o.name,
          cpuModel: o.cpuModel,
          cpuMhz: o.cpuMhz,
          cpuSockets: o.numCpuPkgs,
          cpuThreads: o.numCpuThreads,
          memoryMiB: Math.floor(o.memorySize / 1024 ** 2),
          hypervisorVersion: o.version,
          hypervisorBuild: o.build,
          uuid: o.uuid,
          connectionState: o.connectionState.toUpperCase(),
          powerState: o.powerState === 'poweredOn' ? 'ON' : expect.any(String),
          inMaintenanceMode: o.inMaintenanceMode,
          cluster: sim.oracle.clusters[o.parent] ? { name: sim.oracle.clusters[o.parent]!.name } : null,
          virtualMachines: { totalCount: Object.values(sim.oracle.vms).filter((v) => v.host === moref).length },
        });
      }
    }
  });

  it('answers datacenters, clusters, datastores and networks', async () => {
    const res = await gw.query<{
      datacenters: { nodes: Row[] };
      clusters: { nodes: Row[] };
      storage: { nodes: Row[] };
      networks: { nodes: Row[] };
    }>(`{
      datacenters(first: 50) { nodes { name platform { name } clusters(first: 100) { nodes { name } } hosts(first: 100) { nodes { name } } } }
      clusters(first: 50) { nodes { name platform { name } datacenter { name } numHosts drsEnabled haEnabled hosts(first: 100) { nodes { name } } virtualMachines(first: 0) { totalCount } } }
      storage(first: 50) { nodes { __typename name type rawType capacityBytes availableBytes allocationBytes accessible platform { name }
        ... on Datastore { datastoreType uncommittedBytes url datacenter { name } virtualMachines(first: 200) { nodes { name } } } } }
      networks(first: 50) { nodes { name kind platform { name } datacenter { name } virtualMachines(first: 200) { nodes { name } } } }
    }`);
    expect(res.errors).toBeUndefined();
    const of = (rows: Row[], p: string) => rows.filter((r) => (r['platform'] as { name: string }).name === p);
    const o = big.oracle;
    expect(
      of(res.data!.datacenters.nodes, 'vc-big')
        .map((d) => d['name'])
        .sort(),
    ).toEqual(
      Object.values(o.datacenters)
        .map((d) => d.name)
        .sort(),
    );
    expect(of(res.data!.datacenters.nodes, 'kvm')).toEqual([]);
    const clusters = of(res.data!.clusters.nodes, 'vc-big');
    expect(clusters.map((c) => c['name']).sort()).toEqual(
      Object.values(o.clusters)
        .map((c) => c.name)
        .sort(),
    );
    for (const c of clusters) {
      const oc = Object.entries(o.clusters).find(([, v]) => v.name === c['name'])!;
      const hosts = Object.values(o.hosts)
        .filter((h) => h.parent === oc[0])
        .map((h) => h.name)
        .sort();
      expect((c['hosts'] as { nodes: { name: string }[] }).nodes.map((h) => h.name).sort()).toEqual(hosts);
      expect(c['numHosts']).toBe(hosts.length);
      expect([c['drsEnabled'], c['haEnabled']]).toEqual([oc[1].drsEnabled, oc[1].haEnabled]);
    }
    const stores = of(res.data!.storage.nodes, 'vc-big');
    expect(stores).toHaveLength(Object.keys(o.datastores).length);
    for (const d of stores) {
      // Names repeat across datacenters; URLs do not.
      const [dsRef, od] = Object.entries(o.datastores).find(([, x]) => x.url === d['url'])!;
      expect(d).toMatchObject({
        __typename: 'Datastore',
        type: STORAGE_TYPES[od.type] ?? 'OTHER',
        rawType: od.type,
        capacityBytes: od.capacity,
        availableBytes: od.freeSpace,
        allocationBytes: od.capacity - od.freeSpace,
        uncommittedBytes: od.uncommitted,
        accessible: od.accessible,
        url: od.url,
      });
      const users = Object.values(o.vms).filter((v) => v.datastores.includes(dsRef));
      expect((d['virtualMachines'] as { nodes: { name: string }[] }).nodes.map((v) => v.name).sort()).toEqual(
        users.map((v) => v.name).sort(),
      );
    }
    const nets = of(res.data!.networks.nodes, 'vc-big');
    expect(nets.map((n) => n['name']).sort()).toEqual(
      Object.values(o.networks)
        .map((n) => n.name)
        .sort(),
    );
    for (const n of nets) {
      const [moref] = Object.entries(o.networks).find(([, v]) => v.name === n['name'])!;
      expect(n['kind']).toBe(o.networkTypes[moref] === 'Network' ? 'STANDARD_PORTGROUP' : 'DISTRIBUTED_PORTGROUP');
      const attached = Object.values(o.vms)
        .filter((v) => v.networks.includes(moref))
        .map((v) => v.name)
        .sort();
      expect((n['virtualMachines'] as { nodes: { name: string }[] }).nodes.map((v) => v.name).sort()).toEqual(attached);
    }
  });

  it('gives every object of every platform its own ID, and fetches each back', async () => {
    const res = await gw.query<{
      virtualMachines: { nodes: { id: string }[] };
      hosts: { nodes: { id: string }[] };
      storage: { nodes: { id: string }[] };
      networks: { nodes: { id: string }[] };
      datacenters: { nodes: { id: string }[] };
      clusters: { nodes: { id: string }[] };
    }>(`{
      virtualMachines(first: 100) { nodes { id } } hosts(first: 100) { nodes { id } } storage(first: 100) { nodes { id } }
      networks(first: 100) { nodes { id } } datacenters(first: 100) { nodes { id } } clusters(first: 100) { nodes { id } }
    }`);
    const ids = Object.values(res.data!).flatMap((c) => c.nodes.map((n) => n.id));
    expect(new Set(ids).size).toBe(ids.length);
    const back = await gw.query<{ nodes: ({ id: string } | null)[] }>(
      'query($ids: [ID!]!) { nodes(ids: $ids) { id } }',
      { ids: ids.slice(0, 100) },
    );
    expect(back.data!.nodes.map((n) => n?.id)).toEqual(ids.slice(0, 100));
  });

  it('filters and orders across all platforms at once', async () => {
    const res = await gw.query<{
      virtualMachines: {
        totalCount: number;
        nodes: { name: string; powerState: string; platform: { name: string } }[];
      };
    }>(
      '{ virtualMachines(first: 100, filter: { powerStates: [ON] }, orderBy: { field: NAME, direction: DESC }) { totalCount nodes { name powerState platform { name } } } }',
    );
    const names = res.data!.virtualMachines.nodes.map((n) => n.name);
    expect(new Set(res.data!.virtualMachines.nodes.map((n) => n.platform.name))).toEqual(
      new Set(['vc-big', 'esx-1', 'kvm']),
    );
    expect(res.data!.virtualMachines.nodes.every((n) => n.powerState === 'ON')).toBe(true);
    const on = [...Object.values(big.oracle.vms), ...Object.values(esx.oracle.vms)].filter(
      (v) => v.powerState === 'poweredOn',
    ).length;
    expect(res.data!.virtualMachines.totalCount).toBe(on + 2); // and the estate's two running domains
    expect(names).toEqual([...names].sort((a, b) => b.localeCompare(a, 'en', { numeric: true, sensitivity: 'base' })));
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type Estate, writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';

// One estate served by two platforms at once: the same domain UUIDs behind
// two platform IDs must give distinct global IDs.
let estate: Estate;
let gw: TestGateway;

beforeAll(async () => {
  estate = writeEstate({ vms: 60 });
  gw = await startTestGateway({
    platforms: [
      { id: 'lab-a', kind: 'libvirt', uri: estate.uri },
      { id: 'lab-b', kind: 'libvirt', uri: estate.uri },
    ],
    // The documents below ask for whole estates at once, every relation at its largest page.
    limits: { maxCost: 10_000_000 },
  });
});
afterAll(() => gw?.close());

interface VmNode {
  id: string;
  name: string;
  uuid: string;
  powerState: string;
  phase: string;
  rawState: string;
  platform: { name: string };
}

interface VmPage {
  virtualMachines: { edges: { cursor: string; node: VmNode }[]; pageInfo: { hasNextPage: boolean; endCursor: string } };
}

async function allVms(platformId?: string): Promise<VmNode[]> {
  const out: VmNode[] = [];
  let after: string | null = null;
  for (;;) {
    const res: Awaited<ReturnType<typeof gw.query<VmPage>>> = await gw.query<VmPage>(
      `query($after: String, $filter: VirtualMachineFilter) {
        virtualMachines(first: 17, after: $after, filter: $filter) {
          edges { cursor node { id name uuid powerState phase rawState platform { name } } }
          pageInfo { hasNextPage endCursor }
        }
      }`,
      { after, filter: platformId ? { platformIds: [platformId] } : null },
    );
    expect(res.errors).toBeUndefined();
    const page: VmPage['virtualMachines'] = res.data!.virtualMachines;
    out.push(...page.edges.map((e) => e.node));
    if (!page.pageInfo.hasNextPage) return out;
    after = page.pageInfo.endCursor;
  }
}

describe('libvirt inventory through the graph', () => {
  it('lists the platforms with their status and hypervisor', async () => {
    const res = await gw.query<{ platforms: Record<string, unknown>[] }>(
      '{ platforms { id name kind uri status statusMessage hypervisorType hypervisorVersion connectedAt hosts { nodes { name } } } }',
    );
    expect(res.data?.platforms).toHaveLength(2);
    for (const p of res.data!.platforms) {
      expect(p).toMatchObject({
        kind: 'LIBVIRT',
        uri: estate.uri,
        status: 'CONNECTED',
        statusMessage: null,
        hypervisorType: 'TEST',
      });
      expect((p['hosts'] as { nodes: unknown[] }).nodes).toHaveLength(1);
      expect(Date.parse(p['connectedAt'] as string)).not.toBeNaN();
    }
  });

  it('pages through every VM of both platforms without repeats, with distinct IDs', async () => {
    const vms = await allVms();
    expect(vms).toHaveLength(120);
    expect(new Set(vms.map((v) => v.id)).size).toBe(120);
    // The same UUID appears once per platform.
    const perUuid = new Map<string, string[]>();
    for (const v of vms) perUuid.set(v.uuid, [...(perUuid.get(v.uuid) ?? []), v.platform.name]);
    expect([...perUuid.values()].every((p) => p.sort().join() === 'lab-a,lab-b')).toBe(true);
  });

  it('reports each domain state as the fixture defines it', async () => {
    const platforms = await gw.query<{ platforms: { id: string; name: string }[] }>('{ platforms { id name } }');
    const labA = platforms.data!.platforms.find((p) => p.name === 'lab-a')!;
    const got = new Map((await allVms(labA.id)).map((v) => [v.name, v]));
    expect(got.size).toBe(60);
    const expected: Record<string, [string, string]> = {
      running: ['ON', 'RUNNING'],
      shutoff: ['OFF', 'STOPPED'],
      paused: ['PAUSED', 'PAUSED'],
      pmsuspended: ['SUSPENDED', 'PAUSED'],
    };
    for (const vm of estate.vms) {
      const g = got.get(vm.name)!;
      expect(g.rawState).toBe(vm.rawState);
      expect([g.powerState, g.phase]).toEqual(expected[vm.rawState]);
    }
  });

  it('answers VM details, disks with their volumes, NICs with their networks', async () => {
    const res = await gw.query<{ virtualMachines: { nodes: Record<string, unknown>[] } }>(`{
      virtualMachines(first: 10, filter: { nameContains: "db-002" }) {
        nodes {
          name vcpus vcpusMax memoryMiB maxMemoryMiB guestOs osType guestArch description persistent autostart runtimeId
          disks { device target bus sourceType source format capacityBytes readOnly volume { name pool { name } } storage { name } }
          nics { mac model type source network { name forwardMode } }
          graphics { type autoport port listen }
          networks { name }
          storage { name type rawType }
          host { name cpuModel cpuThreads memoryMiB }
        }
      }
    }`);
    expect(res.errors).toBeUndefined();
    const nodes = res.data!.virtualMachines.nodes;
    expect(nodes).toHaveLength(2);
    const fixture = estate.vms.find((v) => v.name === 'db-002')!;
    expect(nodes[0]).toMatchObject({
      name: 'db-002',
      vcpus: fixture.vcpus,
      vcpusMax: 4,
      memoryMiB: fixture.currentMemoryMiB,
      maxMemoryMiB: fixture.memoryMiB,
      guestOs: 'http://ubuntu.com/ubuntu/22.04',
      osType: 'hvm',
      guestArch: 'i686',
      description: 'db-002: db server',
      persistent: true,
      autostart: false,
      runtimeId: null,
      host: { name: expect.any(String), cpuModel: 'x86_64', cpuThreads: 32, memoryMiB: 262144 },
    });
    expect(nodes[0]!['disks']).toEqual([
      {
        device: 'DISK',
        target: 'vda',
        bus: 'virtio',
        sourceType: 'file',
        source: fixture.imagePath,
        format: 'qcow2',
        capacityBytes: 20 * 1024 ** 3,
        readOnly: false,
        volume: { name: 'db-002.qcow2', pool: { name: 'images' } },
        storage: { name: 'images' },
      },
    ]);
    expect(nodes[0]!['nics']).toEqual([
      {
        mac: '52:54:00:00:00:01',
        model: 'virtio',
        type: 'network',
        source: 'default',
        network: { name: 'default', forwardMode: 'nat' },
      },
    ]);
    expect(nodes[0]!['graphics']).toEqual([]);
    expect(nodes[0]!['networks']).toEqual([{ name: 'default' }]);
    expect(nodes[0]!['storage']).toEqual([{ name: 'images', type: 'DIRECTORY', rawType: 'dir' }]);
  });

  it('resolves volume-backed disks and empty CD-ROMs', async () => {
    const res = await gw.query<{
      virtualMachines: { nodes: { disks: Record<string, unknown>[]; storage: { name: string }[] }[] };
    }>(`{
      virtualMachines(first: 1, filter: { nameContains: "web-001" }) {
        nodes { disks { device target sourceType source capacityBytes readOnly volume { name } } storage { name } }
      }
    }`);
    const web1 = res.data!.virtualMachines.nodes[0]!;
    expect(web1.disks.map((d) => [d['device'], d['target'], d['source'], d['readOnly']])).toEqual([
      ['DISK', 'vda', '/var/lib/virt-graph/images/web-001.qcow2', false],
      ['CDROM', 'sda', null, true],
    ]);
    const withData = await gw.query<{
      virtualMachines: { nodes: { disks: Record<string, unknown>[]; storage: { name: string }[] }[] };
    }>(`{
      virtualMachines(first: 1, filter: { nameContains: "cache-003" }) {
        nodes { disks { target sourceType source capacityBytes format volume { name } } storage { name } }
      }
    }`);
    const vm = withData.data!.virtualMachines.nodes[0]!;
    expect(vm.disks[1]).toEqual({
      target: 'vdb',
      sourceType: 'volume',
      source: 'data/cache-003-data.raw',
      capacityBytes: 100 * 1024 ** 3,
      format: 'raw',
      volume: { name: 'cache-003-data.raw' },
    });
    expect(vm.storage.map((s) => s.name).sort()).toEqual(['data', 'images']);
  });

  it('answers the snapshot tree with parent, children and the current snapshot', async () => {
    const res = await gw.query<{ virtualMachines: { nodes: Record<string, unknown>[] } }>(`{
      virtualMachines(first: 1, filter: { nameContains: "web-001" }) {
        nodes {
          currentSnapshot { name }
          snapshots { id name description createdAt rawState powerState includesMemory isCurrent parent { name } children { name } vm { name } }
        }
      }
    }`);
    expect(res.errors).toBeUndefined();
    const vm = res.data!.virtualMachines.nodes[0]!;
    expect(vm['currentSnapshot']).toEqual({ name: 'patched' });
    const snaps = vm['snapshots'] as Record<string, unknown>[];
    const byName = Object.fromEntries(snaps.map((s) => [s['name'], s]));
    expect(byName['installed']).toMatchObject({
      description: 'installed state of web-001',
      createdAt: new Date(1_700_000_000 * 1000).toISOString(),
      rawState: 'shutoff',
      powerState: 'OFF',
      includesMemory: false,
      isCurrent: false,
      parent: null,
      children: [{ name: 'patched' }],
      vm: { name: 'web-001' },
    });
    expect(byName['patched']).toMatchObject({
      rawState: 'running',
      powerState: 'ON',
      includesMemory: true,
      isCurrent: true,
      parent: { name: 'installed' },
      children: [],
    });
  });

  it('lists networks with forwarding, addresses, DHCP ranges and attached VMs', async () => {
    const res = await gw.query<{ networks: { totalCount: number; nodes: Record<string, unknown>[] } }>(`{
      networks(first: 10, filter: { nameContains: "" }) {
        totalCount
        nodes { name uuid bridge forwardMode active persistent autostart addresses { family address prefix } dhcpRanges { start end } virtualMachines { nodes { name } } platform { name } }
      }
    }`);
    expect(res.errors).toBeUndefined();
    expect(res.data!.networks.totalCount).toBe(6);
    const labA = res.data!.networks.nodes.filter((n) => (n['platform'] as { name: string }).name === 'lab-a');
    const byName = Object.fromEntries(labA.map((n) => [n['name'], n]));
    expect(byName['default']).toMatchObject({
      bridge: 'virbr0',
      forwardMode: 'nat',
      active: true,
      persistent: true,
      addresses: [{ family: 'ipv4', address: '192.168.122.1', prefix: 24 }],
      dhcpRanges: [{ start: '192.168.122.2', end: '192.168.122.254' }],
    });
    expect(byName['isolated']).toMatchObject({
      forwardMode: 'isolated',
      addresses: [{ address: '10.10.0.1', prefix: 24 }],
    });
    expect(byName['lan']).toMatchObject({ forwardMode: 'bridge', bridge: 'br0', dhcpRanges: [] });
    for (const name of estate.networks) {
      const attached = (byName[name]!['virtualMachines'] as { nodes: { name: string }[] }).nodes
        .map((v) => v.name)
        .sort();
      expect(attached).toEqual(
        estate.vms
          .filter((v) => v.networks.includes(name))
          .map((v) => v.name)
          .sort(),
      );
    }
  });

  it('lists storage pools with capacity, usage and volumes', async () => {
    const res = await gw.query<{ storage: { totalCount: number; nodes: Record<string, unknown>[] } }>(`{
      storage(first: 10, filter: { nameContains: "a" }) {
        totalCount
        nodes {
          __typename name type rawType capacityBytes allocationBytes availableBytes usagePercent accessible platform { name }
          ... on StoragePool { uuid state active persistent targetPath volumes(first: 1000) { nodes { name path type format capacityBytes allocationBytes virtualMachines(first: 5) { nodes { name } } pool { name } } } }
        }
      }
    }`);
    expect(res.errors).toBeUndefined();
    expect(res.data!.storage.totalCount).toBe(4); // images and data, on two platforms
    const pools = res.data!.storage.nodes.filter((n) => (n['platform'] as { name: string }).name === 'lab-a');
    for (const fixture of estate.pools) {
      const pool = pools.find((p) => p['name'] === fixture.name)!;
      expect(pool).toMatchObject({
        __typename: 'StoragePool',
        type: 'DIRECTORY',
        rawType: 'dir',
        uuid: fixture.uuid,
        state: 'RUNNING',
        active: true,
        accessible: true,
        targetPath: fixture.path,
      });
      const volumes = (pool['volumes'] as { nodes: Record<string, unknown>[] }).nodes;
      expect(volumes.map((v) => v['name']).sort()).toEqual([...fixture.volumes].sort());
      expect(pool['allocationBytes']).toBe(volumes.reduce((sum, v) => sum + (v['allocationBytes'] as number), 0));
      expect(pool['usagePercent']).toBeCloseTo(
        ((pool['allocationBytes'] as number) / (pool['capacityBytes'] as number)) * 100,
        1,
      );
      for (const v of volumes) {
        expect(v['path']).toBe(`${fixture.path}/${v['name']}`);
        expect(v['pool']).toEqual({ name: fixture.name });
        expect((v['virtualMachines'] as { nodes: unknown[] }).nodes.length).toBe(1);
      }
    }
  });

  it('fetches every kind of object back by its ID through node and nodes', async () => {
    const res = await gw.query<{
      virtualMachines: { nodes: Record<string, unknown>[] };
      platforms: { id: string }[];
      networks: { nodes: { id: string }[] };
      storage: { nodes: { id: string; volumes: { nodes: { id: string }[] } }[] };
    }>(`{
      platforms { id }
      virtualMachines(first: 1, filter: { nameContains: "web-001" }) { nodes { id host { id } snapshots { id } } }
      networks(first: 1) { nodes { id } }
      storage(first: 1) { nodes { id ... on StoragePool { volumes { nodes { id } } } } }
    }`);
    const vm = res.data!.virtualMachines.nodes[0]! as { id: string; host: { id: string }; snapshots: { id: string }[] };
    const pool = res.data!.storage.nodes[0]!;
    const ids = [
      res.data!.platforms[0]!.id,
      vm.id,
      vm.host.id,
      vm.snapshots[0]!.id,
      res.data!.networks.nodes[0]!.id,
      pool.id,
      pool.volumes.nodes[0]!.id,
    ];
    const back = await gw.query<{ nodes: ({ id: string; __typename: string } | null)[] }>(
      'query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }',
      { ids },
    );
    expect(back.errors).toBeUndefined();
    expect(back.data!.nodes.map((n) => n?.__typename)).toEqual([
      'Platform',
      'VirtualMachine',
      'Host',
      'Snapshot',
      'Network',
      'StoragePool',
      'StorageVolume',
    ]);
    expect(back.data!.nodes.map((n) => n?.id)).toEqual(ids);
    const one = await gw.query<{ node: { name: string } }>(
      'query($id: ID!) { node(id: $id) { ... on VirtualMachine { name } } }',
      { id: vm.id },
    );
    expect(one.data!.node).toEqual({ name: 'web-001' });
  });

  it('filters by power state and host, and orders by memory with stable pages', async () => {
    const hosts = await gw.query<{
      hosts: {
        totalCount: number;
        nodes: { id: string; platform: { name: string }; virtualMachines: { totalCount: number } }[];
      };
    }>('{ hosts(first: 10) { totalCount nodes { id platform { name } virtualMachines(first: 0) { totalCount } } } }');
    expect(hosts.data!.hosts.totalCount).toBe(2);
    const hostA = hosts.data!.hosts.nodes.find((h) => h.platform.name === 'lab-a')!;
    expect(hostA.virtualMachines.totalCount).toBe(60);

    const paused = await gw.query<{
      virtualMachines: { totalCount: number; nodes: { name: string; powerState: string }[] };
    }>(
      `query($host: ID!) { virtualMachines(first: 100, filter: { hostIds: [$host], powerStates: [PAUSED, SUSPENDED] }) { totalCount nodes { name powerState } } }`,
      { host: hostA.id },
    );
    expect(paused.errors).toBeUndefined();
    const expected = estate.vms
      .filter((v) => v.rawState === 'paused' || v.rawState === 'pmsuspended')
      .map((v) => v.name);
    expect(paused.data!.virtualMachines.nodes.map((n) => n.name).sort()).toEqual(expected.sort());

    const ordered = await gw.query<{ virtualMachines: { nodes: { name: string; memoryMiB: number }[] } }>(
      `query($host: ID!) { virtualMachines(first: 60, filter: { hostIds: [$host] }, orderBy: { field: MEMORY_MIB, direction: DESC }) { nodes { name memoryMiB } } }`,
      { host: hostA.id },
    );
    const mem = ordered.data!.virtualMachines.nodes.map((n) => n.memoryMiB);
    expect(mem).toEqual([...mem].sort((a, b) => b - a));
    const byName = await gw.query<{ virtualMachines: { nodes: { name: string }[] } }>(
      `{ virtualMachines(first: 5, orderBy: { field: NAME, direction: ASC }) { nodes { name } } }`,
    );
    expect(byName.data!.virtualMachines.nodes.map((n) => n.name)).toEqual([
      'batch-004',
      'batch-004',
      'batch-008',
      'batch-008',
      'batch-012',
    ]);
  });

  it('serves the same query over WebSocket', async () => {
    const res = await gw.wsQuery<{ virtualMachines: { totalCount: number } }>(
      '{ virtualMachines(first: 1) { totalCount } }',
    );
    expect(res.errors).toBeUndefined();
    expect(res.data!.virtualMachines.totalCount).toBe(120);
  });
});

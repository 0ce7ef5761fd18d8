import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LibvirtProvider } from '../src/datasources/libvirt/provider.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';

// A query that lists every VM with its host, networks, storage and snapshots
// must cost the same number of calls into the addon whatever the number of
// VMs: the DataLoaders batch per platform, and the addon's bulk methods walk
// the objects on one worker thread.
const FULL_QUERY = `{
  virtualMachines(first: 1000) {
    totalCount
    edges { node {
      name powerState phase memoryMiB vcpus guestOs
      host { name cpuModel }
      networks { name bridge forwardMode }
      storage { name capacityBytes }
      disks { target capacityBytes volume { name } }
      nics { mac network { name } }
      snapshots { name createdAt parent { name } }
      currentSnapshot { name }
    } }
  }
}`;

const LIST_QUERY = '{ virtualMachines(first: 1000) { totalCount edges { node { name powerState host { name } } } } }';

interface Counts {
  addon: number;
  libvirt: number;
  byMethod: Record<string, number>;
}

const gateways: TestGateway[] = [];

async function countFor(n: number, query: string): Promise<Counts & { vms: number }> {
  const estate = writeEstate({ vms: n });
  const gw = await startTestGateway({
    limits: { maxCost: 10_000_000, maxPageSize: 1000 },
    // The direct read path (what serves a platform whose live inventory is down).
    inventory: { enabled: false },
    platforms: [{ id: 'lab', kind: 'libvirt', uri: estate.uri }],
  });
  gateways.push(gw);
  const provider = gw.registry.get('lab') as LibvirtProvider;
  const snapshot = () => provider.withClient(async (c) => ({ ...c.addonCalls(), libvirt: c.libvirtCalls() }));
  const before = await snapshot();
  const res = await gw.query<{ virtualMachines: { totalCount: number; edges: unknown[] } }>(query);
  const after = await snapshot();
  expect(res.errors).toBeUndefined();
  expect(res.data!.virtualMachines.edges).toHaveLength(n);
  const byMethod = Object.fromEntries(
    Object.entries(after.byMethod)
      .map(([k, v]) => [k, v - (before.byMethod[k] ?? 0)])
      .filter(([, v]) => v !== 0),
  );
  return { vms: n, addon: after.total - before.total, libvirt: after.libvirt - before.libvirt, byMethod };
}

afterAll(async () => {
  await Promise.all(gateways.map((g) => g.close()));
});

describe('upstream calls do not grow with the number of VMs', () => {
  let full10: Counts;
  let full200: Counts;
  let list10: Counts;
  let list200: Counts;

  beforeAll(async () => {
    full10 = await countFor(10, FULL_QUERY);
    full200 = await countFor(200, FULL_QUERY);
    list10 = await countFor(10, LIST_QUERY);
    list200 = await countFor(200, LIST_QUERY);
    // Printed for the benchmark notes.
    console.log(JSON.stringify({ full10, full200, list10, list200 }));
  });

  it('makes the same addon calls for 10 and 200 VMs with host, networks, storage and snapshots', () => {
    expect(full200.addon).toBe(full10.addon);
    expect(full200.byMethod).toEqual(full10.byMethod);
    expect(full10.byMethod).toEqual({
      getAllDomainStats: 1,
      listAllDomains: 3, // persistent, autostart, and which domains have snapshots
      getHostInfo: 1,
      getCapabilities: 1,
      getDomainXmlDescs: 1,
      listDomainSnapshots: 1,
      listAllNetworks: 1,
      listAllStoragePools: 1,
      listStorageVolumes: 1,
    });
  });

  it('makes the same libvirt API calls for 10 and 200 VMs when listing names, states and hosts', () => {
    expect(list200.addon).toBe(list10.addon);
    expect(list200.libvirt).toBe(list10.libvirt);
    expect(list10.byMethod).toEqual({ getAllDomainStats: 1, listAllDomains: 2, getHostInfo: 1, getCapabilities: 1 });
  });
});

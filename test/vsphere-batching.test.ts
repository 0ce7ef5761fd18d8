import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { VsphereProvider } from '../src/datasources/vsphere/provider.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { startSoapProxy } from './helpers/soap-proxy.js';
import { type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';

// Listing N VMs with their host, cluster, datacenter, datastores and networks
// must make the same SOAP calls for 10 VMs as for 500: one
// RetrievePropertiesEx per kind of object, for all objects at once.
const QUERY = `query($n: Int) {
  virtualMachines(first: $n) {
    totalCount
    edges { node {
      name powerState memoryMiB vcpus
      host { name cluster { name } datacenter { name } }
      cluster { name }
      storage { name ... on Datastore { datastoreType } }
      networks { name kind }
      disks { capacityBytes storage { name } }
      nics { mac network { name } }
      snapshots { name }
    } }
  }
}`;

const running: { gw: TestGateway; sim: Vcsim }[] = [];
const cleanupProxies: { close(): Promise<void> }[] = [];

async function soapCallsFor(
  vmsPerPool: number,
): Promise<{ vms: number; total: number; byMethod: Record<string, number> }> {
  // One cluster and one standalone host: two resource pools of vmsPerPool VMs each.
  const sim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 1, host: 1, vm: vmsPerPool, ds: 2, pg: 2 });
  const gw = await startTestGateway({
    limits: { maxCost: 10_000_000, maxPageSize: 1000 },
    // The direct read path (what serves a platform whose live inventory is down).
    inventory: { enabled: false },
    platforms: [vspherePlatform(sim)],
  });
  running.push({ gw, sim });
  const provider = gw.registry.get('vc') as VsphereProvider;
  const counts = () => provider.withClient(async (s) => s.client.callCounts());
  const before = await counts();
  const res = await gw.query<{ virtualMachines: { totalCount: number; edges: unknown[] } }>(QUERY, { n: 1000 });
  const after = await counts();
  expect(res.errors).toBeUndefined();
  const byMethod = Object.fromEntries(
    Object.entries(after.byMethod)
      .map(([k, v]) => [k, v - (before.byMethod[k] ?? 0)])
      .filter(([, v]) => v !== 0),
  );
  return { vms: res.data!.virtualMachines.edges.length, total: after.total - before.total, byMethod };
}

afterAll(async () => {
  for (const { gw, sim } of running) {
    await gw.close();
    await sim.stop();
  }
  for (const p of cleanupProxies) await p.close();
});

describe('SOAP calls do not grow with the number of VMs', () => {
  let small: Awaited<ReturnType<typeof soapCallsFor>>;
  let large: Awaited<ReturnType<typeof soapCallsFor>>;

  beforeAll(async () => {
    small = await soapCallsFor(5);
    large = await soapCallsFor(250);
    console.log(JSON.stringify({ small, large }));
  });

  it('lists 10 and 500 VMs with host, cluster, datastores and networks in the same calls', () => {
    expect(small.vms).toBe(10);
    expect(large.vms).toBe(500);
    expect(large.byMethod).toEqual(small.byMethod);
    expect(large.total).toBe(small.total);
    // VMs (list, details, snapshots), hosts, the folder tree, datastores, networks: one retrieval each,
    // each over a container view created once per session.
    expect(small.byMethod['RetrievePropertiesEx']).toBeLessThanOrEqual(7);
    expect(small.byMethod['ContinueRetrievePropertiesEx'] ?? 0).toBe(0);
  });
});

describe('paging through the property collector', () => {
  it('continues with ContinueRetrievePropertiesEx until every object is read', async () => {
    const sim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 1, host: 1, vm: 10 });
    // vcsim answers in one piece; the proxy pages its real answer as vCenter would.
    const proxy = await startSoapProxy(sim.url, sim.certFile, 3);
    proxy.setMode('page');
    const gw = await startTestGateway({
      inventory: { enabled: false },
      platforms: [
        { id: 'vc', kind: 'vsphere', url: proxy.url, username: sim.username, password: sim.password, pageSize: 3 },
      ],
    });
    running.push({ gw, sim });
    cleanupProxies.push(proxy);
    const res = await gw.query<{ virtualMachines: { totalCount: number; nodes: { name: string }[] } }>(
      '{ virtualMachines(first: 100) { totalCount nodes { name } } }',
    );
    expect(res.errors).toBeUndefined();
    expect(res.data!.virtualMachines.nodes.map((n) => n.name).sort()).toEqual(
      Object.values(sim.oracle.vms)
        .map((v) => v.name)
        .sort(),
    );
    const counts = await (gw.registry.get('vc') as VsphereProvider).withClient(
      async (s) => s.client.callCounts().byMethod,
    );
    // 20 VMs in pages of 3: one RetrievePropertiesEx and six continuations.
    expect(counts['ContinueRetrievePropertiesEx']).toBe(6);
  });
});

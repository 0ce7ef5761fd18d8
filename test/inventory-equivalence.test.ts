import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { eventually } from './helpers/subscriptions.js';
import { type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';

// The live inventory must answer exactly what reading the platform directly
// answers: the same query, every field and relation the schema serves, from
// a gateway reading its mirror and from one reading the platform.
const EVERYTHING = `{
  platforms { name kind status hypervisorType hosts { name } }
  virtualMachines(first: 1000) {
    totalCount
    nodes {
      id name uuid powerState phase rawState rawStateReason runtimeId vcpus vcpusMax coresPerSocket memoryMiB
      maxMemoryMiB guestOs guestOsFullName hardwareVersion ipAddresses guestHostName isTemplate osType guestArch
      machineType description autostart persistent
      disks { device target bus sourceType source format capacityBytes readOnly storage { id name } volume { id name } }
      nics { mac model type source targetDevice network { id name } }
      graphics { type port autoport listen }
      snapshots { id name description createdAt isCurrent includesMemory parent { id } }
      currentSnapshot { id }
      host { id name cpuModel memoryMiB } cluster { id name } datacenter { id name }
      vsphere { managedObjectId instanceUuid toolsStatus resourcePoolName vmPathName }
      networks { id name } storage { id name }
    }
  }
  hosts(first: 100) { nodes { id name virtualMachines(first: 1000) { totalCount nodes { id } } } }
  networks(first: 100) { nodes { id name kind bridge active attachedVms { id } } }
  storage(first: 100) {
    nodes {
      id name type capacityBytes allocationBytes availableBytes
      ... on StoragePool { state volumes { id name path capacityBytes attachedVms { id } } }
      ... on Datastore { datastoreType virtualMachines { id } }
    }
  }
  datacenters(first: 100) { nodes { id name clusters { id name } } }
}`;

async function synced(gw: TestGateway): Promise<void> {
  await eventually(async () => {
    const res = await gw.query<{ platforms: { inventoryState: string }[] }>('{ platforms { inventoryState } }');
    return res.data!.platforms.every((p) => p.inventoryState === 'SYNCED');
  }, 30_000);
}

async function compare(platforms: Record<string, unknown>[]): Promise<void> {
  const live = await startTestGateway({ limits: { maxCost: 100_000_000, maxPageSize: 1000 }, platforms });
  const direct = await startTestGateway({
    limits: { maxCost: 100_000_000, maxPageSize: 1000 },
    inventory: { enabled: false },
    platforms,
  });
  try {
    await synced(live);
    const [a, b] = await Promise.all([live.query(EVERYTHING), direct.query(EVERYTHING)]);
    expect(a.errors).toBeUndefined();
    expect(b.errors).toBeUndefined();
    expect((a as { extensions?: unknown }).extensions).toBeUndefined();
    expect((b as { extensions?: { directReads?: unknown[] } }).extensions?.directReads).toHaveLength(platforms.length);
    expect(a.data).toEqual(b.data);
  } finally {
    await Promise.all([live.close(), direct.close()]);
  }
}

describe('reads from the live inventory', () => {
  let sim: Vcsim;
  beforeAll(async () => {
    sim = await startVcsim({ dc: 2, cluster: 1, clusterHost: 2, host: 1, vm: 3, ds: 2, pg: 2 });
  });
  afterAll(() => sim?.stop());

  it('equal direct reads of a libvirt estate, field for field', async () => {
    await compare([{ id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 40 }).uri }]);
  }, 60_000);

  it('equal direct reads of a vCenter, field for field', async () => {
    await compare([vspherePlatform(sim)]);
  }, 60_000);
});

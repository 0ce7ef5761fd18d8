import { expect } from 'vitest';

import { type TestGateway, startTestGateway } from './gateway.js';
import { eventually } from './subscriptions.js';

// The live inventory must answer exactly what reading the platform directly
// answers: the same query, every field and relation the schema serves, from
// a gateway reading its mirror and from one reading the platform.
const EVERYTHING = `{
  platforms { name kind status hypervisorType hosts(first: 100) { nodes { name } } }
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
  hosts(first: 100) { nodes { id name hypervisorType rawHypervisorType virtualMachines(first: 1000) { totalCount nodes { id } } } }
  networks(first: 100) { nodes { id name kind bridge active virtualMachines(first: 1000) { nodes { id } } } }
  storage(first: 100) {
    nodes {
      id name type rawType capacityBytes allocationBytes availableBytes
      ... on StoragePool { state volumes(first: 1000) { nodes { id name path capacityBytes virtualMachines(first: 5) { nodes { id } } } } }
      ... on Datastore { datastoreType maintenanceMode rawMaintenanceMode virtualMachines(first: 1000) { nodes { id } } }
    }
  }
  datacenters(first: 100) { nodes { id name clusters(first: 100) { nodes { id name } } } }
}`;

async function synced(gw: TestGateway): Promise<void> {
  await eventually(async () => {
    const res = await gw.query<{ platforms: { inventoryState: string }[] }>('{ platforms { inventoryState } }');
    return res.data!.platforms.every((p) => p.inventoryState === 'SYNCED');
  }, 30_000);
}

/** One gateway answers from its mirror, another reads the platforms: the same query must get the same answer. */
export async function compareLiveWithDirect(platforms: Record<string, unknown>[]): Promise<void> {
  // EVERYTHING asks for whole estates, every relation at its largest page: past the default cost limit and budget.
  const unlimited = {
    limits: { maxCost: 100_000_000, maxPageSize: 1000 },
    auth: { anonymous: { roles: ['admin'], tenants: ['*'] }, rateLimit: { enabled: false } },
  };
  const live = await startTestGateway({ ...unlimited, platforms });
  const direct = await startTestGateway({ ...unlimited, inventory: { enabled: false }, platforms });
  try {
    await synced(live);
    const [a, b] = await Promise.all([live.query(EVERYTHING), direct.query(EVERYTHING)]);
    expect(a.errors).toBeUndefined();
    expect(b.errors).toBeUndefined();
    expect((a as { extensions?: { directReads?: unknown } }).extensions?.directReads).toBeUndefined();
    expect((b as { extensions?: { directReads?: unknown[] } }).extensions?.directReads).toHaveLength(platforms.length);
    expect(a.data).toEqual(b.data);
  } finally {
    await Promise.all([live.close(), direct.close()]);
  }
}

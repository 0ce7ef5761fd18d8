import { getNamedType, isCompositeType, isInterfaceType, isListType, isNonNullType, isObjectType } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { buildGatewaySchema } from '../src/server/schema.js';
import { listSizeOf } from '../src/server/limits.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';

// The query cost must bound the work a request does. A list that grows
// with the estate and is priced as a fixed guess let one 4,352-point query
// (a pool's volumes, each with its VMs) drive the heap to 4 GB. Every list
// field is now either a connection (priced by `first`) or declares what it
// can return (@listSize), and requests that walk every relation of a
// 1,000-domain estate either fit their price or are refused before running.

describe('every list field has a bound on its cost', () => {
  it('is a connection (`first`) or declares @listSize', () => {
    const schema = buildGatewaySchema();
    const unbounded: string[] = [];
    for (const type of Object.values(schema.getTypeMap())) {
      if (type.name.startsWith('__') || !(isObjectType(type) || isInterfaceType(type))) continue;
      for (const field of Object.values(type.getFields())) {
        const t = isNonNullType(field.type) ? field.type.ofType : field.type;
        if (!isListType(t)) continue;
        const paged =
          field.args.some((a) => a.name === 'first') ||
          (type.name.endsWith('Connection') && (field.name === 'edges' || field.name === 'nodes'));
        const declared = listSizeOf(field);
        const bounded = declared !== null && (declared.assumedSize !== undefined || !!declared.slicingArgument);
        if (!paged && !bounded) unbounded.push(`${type.name}.${field.name}`);
        if (declared?.slicingArgument && !field.args.some((a) => a.name === declared.slicingArgument))
          unbounded.push(`${type.name}.${field.name} (slices by a missing argument)`);
      }
    }
    expect(unbounded).toEqual([]);
  });

  it('declares no list that grows with the estate as a plain list', () => {
    // The objects whose relations grow with the estate: each of their lists of inventory objects is a connection.
    const schema = buildGatewaySchema();
    const estateKinds = new Set([
      'VirtualMachine',
      'Host',
      'Cluster',
      'Datacenter',
      'Network',
      'Storage',
      'StorageVolume',
    ]);
    const plain: string[] = [];
    for (const owner of [
      'Platform',
      'Datacenter',
      'Cluster',
      'Host',
      'Network',
      'Datastore',
      'StoragePool',
      'StorageVolume',
    ]) {
      const type = schema.getType(owner);
      if (!isObjectType(type)) continue;
      for (const field of Object.values(type.getFields())) {
        const t = isNonNullType(field.type) ? field.type.ofType : field.type;
        const named = getNamedType(field.type);
        if (isListType(t) && isCompositeType(named) && estateKinds.has(named.name))
          plain.push(`${owner}.${field.name}`);
      }
    }
    expect(plain).toEqual([]);
  });
});

/** How many objects a JSON value holds: what a response made the gateway build. */
function objectsIn(value: unknown): number {
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + objectsIn(v), 0);
  if (value !== null && typeof value === 'object')
    return 1 + Object.values(value).reduce((n: number, v) => n + objectsIn(v), 0);
  return 0;
}

describe('a request costs at least what it returns, on a 1,000-domain estate', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({
      platforms: [{ id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 1000 }).uri }],
      // The default cost limit (50,000) and page sizes: what a new user gets.
    });
  }, 60_000);
  afterAll(() => gw?.close());

  // Every relation between inventory objects, walked two levels deep at the largest pages allowed.
  const WALKS: Record<string, string> = {
    'pools, their volumes and each volume’s VMs (the query that took 4 GB)': `{
      storage(first: 100) { nodes { name ... on StoragePool {
        volumes(first: 1000) { totalCount nodes { name virtualMachines(first: 100) { nodes { name disks { target } } } } }
      } } } }`,
    'the same, at pages that fit': `{
      storage(first: 10) { nodes { name ... on StoragePool {
        volumes(first: 50) { totalCount nodes { name virtualMachines(first: 5) { nodes { name disks { target } } } } }
      } } } }`,
    'networks, their VMs and those VMs’ networks': `{
      networks(first: 10) { nodes { name virtualMachines(first: 1000) { nodes { name networks { name } } } } } }`,
    'hosts, their VMs, snapshots and their children': `{
      hosts(first: 10) { nodes { name virtualMachines(first: 500) { totalCount nodes { name
        snapshots { name children { name } } nics { mac } disks { target } } } } } }`,
    'platforms, their hosts and VMs': `{
      platforms { name hosts(first: 10) { nodes { name virtualMachines(first: 1000) { nodes { name storage { name } } } } } } }`,
  };

  for (const [name, query] of Object.entries(WALKS)) {
    it(`prices ${name} at no less than it returns, or refuses it before running`, async () => {
      const res = await gw.query(query);
      const codes = (res.errors ?? []).map((e) => e.extensions?.['code']);
      if (codes.includes('QUERY_TOO_COSTLY')) {
        expect(name, 'a walk at pages that fit must run').not.toMatch(/fit/);
        expect(res.data ?? null).toBeNull();
        return;
      }
      expect(res.errors).toBeUndefined();
      const cost = (res.extensions?.['rateLimit'] as { cost: number }).cost;
      expect(objectsIn(res.data)).toBeGreaterThan(0);
      expect(objectsIn(res.data)).toBeLessThanOrEqual(cost);
    });
  }

  it('refuses the 4 GB query at the default limits', async () => {
    const res = await gw.query(WALKS['pools, their volumes and each volume’s VMs (the query that took 4 GB)']!);
    expect(res.errors?.map((e) => e.extensions?.['code'])).toEqual(['QUERY_TOO_COSTLY']);
  });
});

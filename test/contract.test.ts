import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';

// The root of the graph as frontend teams consume it: one failing root
// field fails alone, objects are looked up by typed ID, and every root
// connection pages both ways and orders as asked.

let gw: TestGateway;
let sim: Vcsim;
const codes = (errors: readonly { extensions?: Record<string, unknown> }[] | undefined) =>
  (errors ?? []).map((e) => e.extensions?.['code']);

beforeAll(async () => {
  sim = await startVcsim();
  gw = await startTestGateway({
    platforms: [
      { id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 23 }).uri },
      { id: 'lab', kind: 'libvirt', uri: 'test:///default' },
    ],
  });
}, 60_000);
afterAll(async () => {
  await gw?.close();
  await vc?.close();
  await sim?.stop();
});

/** A gateway on the simulator, for the relations only vSphere has (clusters, datacenters, datastores). */
let vc: TestGateway | undefined;
async function vcenter(): Promise<TestGateway> {
  vc ??= await startTestGateway({ platforms: [vspherePlatform(sim)] });
  return vc;
}

interface Vm {
  id: string;
  name: string;
  uuid: string;
  host: { id: string; cluster: { id: string } | null; datacenter: { id: string } | null } | null;
  networks: { id: string }[];
  storage: { id: string }[];
}
const VM_FIELDS = 'id name uuid host { id cluster { id } datacenter { id } } networks { id } storage { id }';

async function vms(on: TestGateway, filter: Record<string, unknown> = {}): Promise<Vm[]> {
  const res = await on.query<{ virtualMachines: { nodes: Vm[] } }>(
    `query($f: VirtualMachineFilter) { virtualMachines(first: 1000, filter: $f) { nodes { ${VM_FIELDS} } } }`,
    { f: filter },
  );
  expect(res.errors).toBeUndefined();
  return res.data!.virtualMachines.nodes;
}
const names = (list: readonly { name: string }[]) => list.map((v) => v.name).sort();

describe('root fields', () => {
  it('fail alone: a bad cursor on one leaves its siblings answered', async () => {
    const res = await gw.query<Record<string, unknown>>(`{
      platforms { name }
      virtualMachines(first: 1, after: "not-a-cursor") { totalCount }
      hosts(first: 1) { totalCount }
      networks(first: 1, filter: { platformIds: ["bm9wZQ"] }) { totalCount }
    }`);
    expect(res.data!['virtualMachines']).toBeNull();
    expect(res.data!['networks']).toBeNull();
    expect(res.data!['platforms']).toEqual([{ name: 'kvm' }, { name: 'lab' }]);
    expect(res.data!['hosts']).toEqual({ totalCount: 2 });
    expect(res.errors!.map((e) => [e.path, e.extensions?.['code']])).toEqual(
      expect.arrayContaining([
        [['virtualMachines'], 'INVALID_CURSOR'],
        [['networks'], expect.any(String)],
      ]),
    );
  });

  it('look objects up by typed ID, refusing an ID of another kind', async () => {
    const { data } = await gw.query<{
      virtualMachines: { nodes: { id: string; name: string; host: { id: string } }[] };
    }>('{ virtualMachines(first: 1) { nodes { id name host { id } } } }');
    const vm = data!.virtualMachines.nodes[0]!;
    const res = await gw.query<Record<string, { name: string } | null>>(
      `query($vm: ID!, $host: ID!) {
        vm: virtualMachine(id: $vm) { name }
        host: host(id: $host) { name }
        wrong: virtualMachine(id: $host) { name }
      }`,
      { vm: vm.id, host: vm.host.id },
    );
    expect(res.data!['vm']).toEqual({ name: vm.name });
    expect(res.data!['host']).not.toBeNull();
    expect(res.data!['wrong']).toBeNull();
    expect(res.errors!.map((e) => [e.path, e.extensions?.['code']])).toEqual([[['wrong'], 'INVALID_ID']]);
    // A well-formed ID of nothing is null without an error, as node answers.
    const gone = await gw.query('query($id: ID!) { virtualMachine(id: $id) { name } }', {
      id: Buffer.from('v1:VirtualMachine:kvm:00000000-0000-0000-0000-00000000dead').toString('base64url'),
    });
    expect(gone).toMatchObject({ data: { virtualMachine: null } });
    expect(gone.errors).toBeUndefined();
  });
});

interface Page {
  totalCount: number;
  pageInfo: { hasNextPage: boolean; hasPreviousPage: boolean; startCursor: string | null; endCursor: string | null };
  nodes: { name: string }[];
}

async function page(field: string, args: string): Promise<Page> {
  const res = await gw.query<Record<string, Page>>(
    `{ p: ${field}(${args}) { totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } nodes { name } } }`,
  );
  expect(res.errors).toBeUndefined();
  return res.data!['p']!;
}

describe('root connections', () => {
  it('page backward with last/before through the same order as forward', async () => {
    const forward = (await page('virtualMachines', 'first: 1000')).nodes.map((n) => n.name);
    expect(forward.length).toBe(24);
    const backward: string[] = [];
    let before: string | null = null;
    for (;;) {
      const p: Page = await page('virtualMachines', `last: 5${before ? `, before: "${before}"` : ''}`);
      backward.unshift(...p.nodes.map((n) => n.name));
      expect(p.pageInfo.hasNextPage).toBe(before !== null);
      if (!p.pageInfo.hasPreviousPage) break;
      before = p.pageInfo.startCursor;
    }
    expect(backward).toEqual(forward);
    // A window between two cursors.
    const first = await page('virtualMachines', 'first: 3');
    const between = await page(
      'virtualMachines',
      `first: 100, after: "${first.pageInfo.endCursor}", before: "${first.pageInfo.endCursor}"`,
    );
    expect(between.nodes).toEqual([]);
    const res = await gw.query('{ virtualMachines(first: 1, last: 1) { totalCount } }');
    expect(codes(res.errors)).toEqual(['INVALID_PAGINATION']);
  });

  it('page backward inside objects too, and price `last` as `first`', async () => {
    const res = await gw.query<{ platforms: { hosts: { nodes: { name: string }[] } }[] }>(
      '{ platforms { hosts(last: 1) { nodes { name } } } }',
    );
    expect(res.data!.platforms.map((p) => p.hosts.nodes.length)).toEqual([1, 1]);
    const cost = async (q: string) =>
      ((await gw.query(q)).extensions?.['rateLimit'] as { cost: number } | undefined)?.cost;
    const forward = await cost('{ virtualMachines(first: 1000) { nodes { name } } }');
    expect(forward).toBeGreaterThan(1000);
    expect(await cost('{ virtualMachines(last: 1000) { nodes { name } } }')).toBe(forward);
  });

  it('order as asked: every name-ordered connection both ways, tasks by time', async () => {
    for (const field of ['hosts', 'networks', 'storage', 'datacenters', 'clusters']) {
      const asc = (await page(field, 'first: 100')).nodes.map((n) => n.name);
      const desc = (await page(field, 'first: 100, orderBy: { direction: DESC }')).nodes.map((n) => n.name);
      expect(desc, field).toEqual([...asc].reverse());
      const last = (await page(field, 'last: 2, orderBy: { direction: DESC }')).nodes.map((n) => n.name);
      expect(last, field).toEqual([...asc].reverse().slice(-2));
    }
    const res = await gw.query<{ newest: { nodes: { id: string }[] }; oldest: { nodes: { id: string }[] } }>(
      '{ newest: tasks(first: 100) { nodes { id } } oldest: tasks(first: 100, orderBy: { direction: ASC }) { nodes { id } } }',
    );
    expect(res.data!.oldest.nodes).toEqual([...res.data!.newest.nodes].reverse());
  });
});

describe('VM filters', () => {
  it('select by exact names and by UUIDs, in any case', async () => {
    const all = await vms(gw);
    const [a, b] = all;
    expect(names(await vms(gw, { names: [a!.name, b!.name, 'nope'] }))).toEqual(names([a!, b!]));
    expect(await vms(gw, { names: [a!.name.toUpperCase()] })).toEqual([]);
    expect(names(await vms(gw, { uuids: [a!.uuid.toUpperCase()] }))).toEqual([a!.name]);
  });

  it('select by network and by storage pool, as each one’s own VM connection lists them', async () => {
    const all = await vms(gw);
    const network = all.find((v) => v.networks.length > 0)!.networks[0]!.id;
    const pool = all.find((v) => v.storage.length > 0)!.storage[0]!.id;
    expect(names(await vms(gw, { networkIds: [network] }))).toEqual(
      names(all.filter((v) => v.networks.some((n) => n.id === network))),
    );
    expect(names(await vms(gw, { storageIds: [pool] }))).toEqual(
      names(all.filter((v) => v.storage.some((s) => s.id === pool))),
    );
    // Conditions combine: on the network and named as one VM.
    const one = all.find((v) => v.networks.some((n) => n.id === network))!;
    expect(names(await vms(gw, { networkIds: [network], names: [one.name] }))).toEqual([one.name]);
  });

  it('select by cluster, datacenter and datastore on vSphere, checked against each VM’s placement', async () => {
    const on = await vcenter();
    const all = await vms(on);
    const clustered = all.find((v) => v.host?.cluster)!;
    const cluster = clustered.host!.cluster!.id;
    expect(names(await vms(on, { clusterIds: [cluster] }))).toEqual(
      names(all.filter((v) => v.host?.cluster?.id === cluster)),
    );
    const datacenter = clustered.host!.datacenter!.id;
    expect(names(await vms(on, { datacenterIds: [datacenter] }))).toEqual(
      names(all.filter((v) => v.host?.datacenter?.id === datacenter)),
    );
    const datastore = all.find((v) => v.storage.length > 0)!.storage[0]!.id;
    expect(names(await vms(on, { storageIds: [datastore] }))).toEqual(
      names(all.filter((v) => v.storage.some((s) => s.id === datastore))),
    );
    const res = await on.query('{ virtualMachines(filter: { clusterIds: ["bm90LWFuLWlk"] }) { totalCount } }');
    expect(codes(res.errors)).toEqual(['INVALID_ID']);
  });
});

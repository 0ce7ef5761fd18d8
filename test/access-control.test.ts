import { randomUUID } from 'node:crypto';

import type { FormattedExecutionResult } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type NodeKind, decodeId, encodeId } from '../src/model/ids.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { type CallerClient, apiToken, callerClient } from './helpers/callers.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { eventually } from './helpers/subscriptions.js';
import { type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';

// Tenant isolation, table-driven over the schema: two tenants (a, b), each
// owning VMs on a libvirt platform (by name) and on a vCenter (a: a
// standalone host, b: a cluster), and callers with each role. Every root
// query, mutation and subscription has a row here, and the first test fails
// when the schema grows a root field without one: a new field must say how
// it keeps one tenant's VMs from the other.

// ---------------------------------------------------------------- callers

const CALLERS = ['a-viewer', 'a-operator', 'a-admin', 'b-operator', 'auditor', 'nobody'] as const;
type CallerName = (typeof CALLERS)[number];
type Tenant = 'a' | 'b';

const TOKENS = Object.fromEntries(CALLERS.map((name) => [name, apiToken(name)])) as Record<
  CallerName,
  ReturnType<typeof apiToken>
>;
const TENANT_OF: Record<CallerName, Tenant | null> = {
  'a-viewer': 'a',
  'a-operator': 'a',
  'a-admin': 'a',
  'b-operator': 'b',
  auditor: null,
  nobody: null,
};

const AUTH = {
  apiTokens: CALLERS.map((name) => TOKENS[name].entry),
  // A tenant's selectors are ORed and `platforms` restricts them, so each tenant is one per platform.
  tenants: {
    'a-kvm': { platforms: ['kvm'], namePatterns: ['web-*', 'db-*'] },
    'a-vc': { platforms: ['vc'], hosts: ['DC0_H0'] },
    'b-kvm': { platforms: ['kvm'], namePatterns: ['cache-*', 'batch-*'] },
    'b-vc': { platforms: ['vc'], clusters: ['DC0_C0'] },
  },
  bindings: [
    { subjects: ['token:a-viewer'], roles: ['viewer'], tenants: ['a-kvm', 'a-vc'] },
    { subjects: ['token:a-operator'], roles: ['operator'], tenants: ['a-kvm', 'a-vc'] },
    { subjects: ['token:a-admin'], roles: ['admin'], tenants: ['a-kvm', 'a-vc'] },
    { subjects: ['token:b-operator'], roles: ['operator'], tenants: ['b-kvm', 'b-vc'] },
    { subjects: ['token:auditor'], roles: ['auditor'], tenants: ['*'] },
  ],
  // Isolation is under test here, not the budget of query cost points.
  rateLimit: { pointsPerWindow: 1_000_000_000 },
};

// ---------------------------------------------------------------- what each tenant owns

interface KnownVm {
  tenant: Tenant;
  name: string;
  platform: 'kvm' | 'vc';
  nativeId: string;
  id: string;
  snapshotIds: string[];
}

const gid = (kind: NodeKind, platformId: string, nativeId: string) => encodeId({ kind, platformId, nativeId });
const PLATFORM = { kvm: gid('Platform', 'kvm', 'kvm'), vc: gid('Platform', 'vc', 'vc') };
const GHOST_PLATFORM = gid('Platform', 'ghost', 'ghost');

/** Every VM of the estate, by `platform:nativeId`, and by name: the oracle the responses are judged by. */
const known = new Map<string, KnownVm>();
const byName = new Map<string, KnownVm>();

function learn(vm: Omit<KnownVm, 'id' | 'snapshotIds'>, snapshots: readonly string[] = []): KnownVm {
  const entry: KnownVm = {
    ...vm,
    id: gid('VirtualMachine', vm.platform, vm.nativeId),
    snapshotIds: snapshots.map((s) => gid('Snapshot', vm.platform, `${vm.nativeId}/${s}`)),
  };
  known.set(`${vm.platform}:${vm.nativeId}`, entry);
  byName.set(vm.name, entry);
  return entry;
}

const vmsOf = (tenant: Tenant | null) => [...known.values()].filter((v) => v.tenant === tenant);
const namesOf = (vms: readonly KnownVm[]) => vms.map((v) => v.name).sort();
const vmNamed = (name: string) => byName.get(name) ?? expect.fail(`no VM named ${name} in the estate`);

/** Task IDs each tenant's callers started (beforeAll makes one each). */
const tasksOf: Record<Tenant, string[]> = { a: [], b: [] };

const fakeVmId = (platform: 'kvm' | 'vc') =>
  gid(
    'VirtualMachine',
    platform,
    platform === 'kvm' ? randomUUID() : `vm-${900_000 + Math.floor(Math.random() * 1000)}`,
  );
const fakeSnapshotId = () => gid('Snapshot', 'kvm', `${randomUUID()}/installed`);
const fakeTaskId = () => gid('Task', 'kvm', randomUUID());
/** Migration IDs of each tenant's VMs (beforeAll makes one of a's). */
const migrationsOf: Record<Tenant, string[]> = { a: [], b: [] };
const fakeMigrationId = () => gid('VmMigration', 'vc', randomUUID());
/**
 * a's VM declarations by platform (beforeAll makes them): on libvirt one whose VM the reconciler makes, on
 * the vCenter one on a's host that cannot be made (more memory than any host has), so it never has a VM.
 */
const DECLARED = { kvm: 'web-decl', vc: 'DC0_H0_pending' } as const;
/** The spec a's libvirt declaration is applied with (in beforeAll): a disk and a NIC, as every VM there has. */
let declaredSpec: Record<string, unknown> = {};
/** The names of each tenant's declarations: DECLARED's, and the members of its pools. */
const declarationsOf: Record<Tenant, string[]> = { a: [], b: [] };
/** Pool IDs of each tenant (beforeAll makes one of a's, of one member). */
const poolsOf: Record<Tenant, string[]> = { a: [], b: [] };
/** A pool ID of the same shape where there is none: a name of a's on the same platform. */
const fakePoolId = () => gid('VmPool', 'kvm', `web-pool-${randomUUID().slice(0, 8)}`);
/** The ID of the platform a VM's ID names. */
const platformOfVm = (vmId: string) => {
  const { platformId } = decodeId(vmId);
  return gid('Platform', platformId, platformId);
};

// ---------------------------------------------------------------- finding VMs in responses

/** Fields whose text is searched word by word (messages, audited inputs); every other string must match whole. */
const TEXT_FIELDS = new Set(['message', 'input']);

function vmOfId(s: string): KnownVm | undefined {
  if (s.length < 12 || !/^[A-Za-z0-9_-]+$/.test(s)) return undefined;
  try {
    const ref = decodeId(s);
    if (ref.kind === 'VirtualMachine') return known.get(`${ref.platformId}:${ref.nativeId}`);
    if (ref.kind === 'Snapshot') return known.get(`${ref.platformId}:${ref.nativeId.split('/')[0]}`);
  } catch {
    // Not a global ID.
  }
  return undefined;
}

/** Every VM a JSON value names anywhere (by name, or by a VM or snapshot ID), with where. */
function vmsIn(value: unknown, path = '$', out: { path: string; vm: KnownVm; as: string }[] = []) {
  if (typeof value === 'string') {
    const key = path.slice(path.lastIndexOf('.') + 1);
    const words = TEXT_FIELDS.has(key) ? (value.match(/[A-Za-z0-9_-]+/g) ?? []) : [value];
    for (const w of words) {
      const vm = byName.get(w) ?? vmOfId(w);
      if (vm) out.push({ path, vm, as: w });
    }
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => vmsIn(v, `${path}[${i}]`, out));
  } else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) vmsIn(v, `${path}.${k}`, out);
  }
  return out;
}

/** What a response shows of VMs that are not the tenant's (every VM, for a caller of no tenant). */
function leaks(value: unknown, tenant: Tenant | null): string[] {
  return vmsIn(value)
    .filter((r) => r.vm.tenant !== tenant)
    .map((r) => `${r.path} = ${r.as} (${r.vm.tenant}'s ${r.vm.name})`);
}

/** The VM names a response shows. */
const namesIn = (value: unknown) => [...new Set(vmsIn(value).map((r) => r.vm.name))].sort();

const codesOf = (res: FormattedExecutionResult<unknown>) =>
  (res.errors ?? []).map((e) => (e.extensions as { code?: string } | undefined)?.code ?? 'none');

/** Every value of a property, anywhere in a JSON value. */
function valuesOf(value: unknown, key: string, out: unknown[] = []): unknown[] {
  if (Array.isArray(value)) value.forEach((v) => valuesOf(v, key, out));
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === key) out.push(v);
      valuesOf(v, key, out);
    }
  }
  return out;
}

/** The sum of `totalCount` of every `virtualMachines` connection in a value. */
const vmTotals = (value: unknown) =>
  valuesOf(value, 'virtualMachines').reduce<number>(
    (sum, c) => sum + ((c as { totalCount?: number }).totalCount ?? 0),
    0,
  );

// ---------------------------------------------------------------- the gateway

let sim: Vcsim;
let gw: TestGateway;
let as: Record<CallerName, CallerClient>;
/** Global IDs of the vCenter's hosts, and of the libvirt host. */
let vcHostIds: string[];
let kvmHostId: string;

type Data = Record<string, unknown>;

/** Runs a request that must answer without errors, as a caller, over HTTP. */
async function ok<T = Data>(who: CallerName, query: string, variables?: Record<string, unknown>): Promise<T> {
  const res = await as[who].http<T>(query, variables);
  expect(res.errors, `${who}: ${JSON.stringify(res.errors)}`).toBeUndefined();
  return res.data as T;
}

interface TaskRow {
  id: string;
  state: string;
  error: { code: string; message: string } | null;
}

/** Polls a task, as a caller who may see it, until it has finished. */
async function finished(who: CallerName, taskId: string): Promise<TaskRow> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const { task } = await ok<{ task: TaskRow | null }>(
      who,
      'query($id: ID!) { task(id: $id) { id state error { code message } } }',
      {
        id: taskId,
      },
    );
    if (!task) return expect.fail(`${who} cannot see task ${taskId}`);
    if (['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(task.state)) return task;
    if (Date.now() > deadline) return expect.fail(`task ${taskId} still ${task.state}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface UserError {
  code: string;
  field: string[] | null;
  message: string;
}
interface Payload {
  vm?: { id: string; name: string } | null;
  task?: { id: string } | null;
  declaration?: { name: string; spec: { generation: number }; vm: { id: string } | null } | null;
  pool?: { id: string; name: string } | null;
  items?: Payload[];
  userErrors: UserError[];
}

/** The user errors of a payload, its batch items' included. */
const userErrorsOf = (p: Payload): UserError[] => [...p.userErrors, ...(p.items ?? []).flatMap((i) => i.userErrors)];

const POWER_MOVE: Record<string, [string, Record<string, unknown>]> = {
  ON: ['stopVm', { force: true }],
  OFF: ['startVm', {}],
  PAUSED: ['unpauseVm', {}],
  SUSPENDED: ['resumeVm', {}],
};

/** Moves a VM to another power state, as a caller who may, and waits for the task; returns the task ID. */
async function togglePower(who: CallerName, vmId: string): Promise<string> {
  const { node } = await ok<{ node: { powerState: string } | null }>(
    who,
    'query($id: ID!) { node(id: $id) { ... on VirtualMachine { powerState } } }',
    { id: vmId },
  );
  const [mutation, extra] = POWER_MOVE[node?.powerState ?? 'none'] ?? expect.fail(`${who} cannot see ${vmId}`);
  const payload = await runMutation(who, mutation, { vmId, ...extra });
  expect(payload.userErrors, `${who} ${mutation}`).toEqual([]);
  const task = await finished(who, payload.task!.id);
  expect(task.state, JSON.stringify(task.error)).toBe('SUCCEEDED');
  return task.id;
}

beforeAll(async () => {
  const estate = writeEstate({ vms: 12 });
  sim = await startVcsim();
  gw = await startTestGateway({
    platforms: [{ id: 'kvm', kind: 'libvirt', uri: estate.uri }, vspherePlatform(sim, { id: 'vc' })],
    auth: AUTH,
    // The nested documents below ask for whole estates at once.
    limits: { maxCost: 10_000_000 },
    // The estate's gauges for Prometheus: another way to VMs' names, over HTTP.
    metrics: { estate: { enabled: true, intervalSeconds: 20 } },
  });
  as = Object.fromEntries(CALLERS.map((n) => [n, callerClient(gw.url, n, TOKENS[n].token)])) as typeof as;

  for (const vm of estate.vms) {
    const tenant = /^(web|db)-/.test(vm.name) ? 'a' : 'b';
    learn({ tenant, name: vm.name, platform: 'kvm', nativeId: vm.uuid }, vm.snapshots);
  }
  const { vms, hosts, clusters } = sim.oracle;
  for (const [moref, vm] of Object.entries(vms)) {
    const host = hosts[vm.host];
    const tenant = host?.name === 'DC0_H0' ? 'a' : clusters[host?.parent ?? '']?.name === 'DC0_C0' ? 'b' : null;
    if (!tenant) throw new Error(`the simulator placed ${vm.name} on ${host?.name}: neither tenant's`);
    learn({ tenant, name: vm.name, platform: 'vc', nativeId: moref });
  }
  vcHostIds = Object.keys(hosts).map((moref) => gid('Host', 'vc', moref));
  expect(namesOf(vmsOf('a'))).toEqual(
    ['DC0_H0_VM0', 'DC0_H0_VM1', 'db-002', 'db-006', 'db-010', 'web-001', 'web-005', 'web-009'].sort(),
  );
  expect(vmsOf('b')).toHaveLength(8);

  // Both platforms' live inventories filled: queries see them whole.
  await eventually(async () => {
    const res = await as['a-viewer'].http<{ platforms: { inventoryState: string }[] }>(
      '{ platforms { inventoryState } }',
    );
    return res.data?.platforms.length === 2 && res.data.platforms.every((p) => p.inventoryState === 'SYNCED');
  }, 30_000);
  const { hosts: kvmHosts } = await ok<{ hosts: { nodes: { id: string }[] } }>(
    'a-viewer',
    'query($p: [ID!]) { hosts(filter: { platformIds: $p }) { nodes { id } } }',
    { p: [PLATFORM.kvm] },
  );
  kvmHostId = kvmHosts.nodes[0]!.id;

  // One task of each tenant, each leaving a snapshot behind, for the rows about tasks and snapshots.
  for (const [who, name] of [
    ['a-operator', 'web-001'],
    ['b-operator', 'cache-011'],
  ] as const) {
    const payload = await runMutation(who, 'createSnapshot', { vmId: vmNamed(name).id, name: `acl-${who}` });
    expect(payload.userErrors).toEqual([]);
    const task = await finished(who, payload.task!.id);
    expect(task.state).toBe('SUCCEEDED');
    tasksOf[TENANT_OF[who]!].push(task.id);
    vmNamed(name).snapshotIds.push(gid('Snapshot', 'kvm', `${vmNamed(name).nativeId}/acl-${who}`));
  }

  // One migration of a's, within a's own host, for the rows about migrations.
  const ownHost = Object.keys(sim.oracle.hosts).find((h) => sim.oracle.hosts[h]!.name === 'DC0_H0')!;
  const { migrateVm } = await ok<{ migrateVm: { migration: { id: string }; task: { id: string } } }>(
    'a-admin',
    'mutation($input: MigrateVmInput!) { migrateVm(input: $input) { migration { id } task { id } } }',
    { input: { vmId: vmNamed('DC0_H0_VM1').id, hostId: gid('Host', 'vc', ownHost) } },
  );
  expect((await finished('a-admin', migrateVm.task.id)).state).toBe('SUCCEEDED');
  migrationsOf.a.push(migrateVm.migration.id);
}, 60_000);

// a's declarations and pool, for the rows about them: a declared VM on libvirt and a pool of one clone (their
// VMs made by the reconciler, then known as a's), and a declaration on a's vCenter host that is never made.
beforeAll(async () => {
  const spec = { vcpus: 1, memoryMiB: 64, runStrategy: 'MANUAL' };
  const ownHost = Object.keys(sim.oracle.hosts).find((h) => sim.oracle.hosts[h]!.name === 'DC0_H0')!;
  const { networks, storage } = await ok<{
    networks: { nodes: { id: string; name: string }[] };
    storage: { nodes: { id: string; __typename: string }[] };
  }>(
    'a-admin',
    `query($p: [ID!]) {
      networks(filter: { platformIds: $p }) { nodes { id name } } storage(filter: { platformIds: $p }) { nodes { id __typename } }
    }`,
    { p: [PLATFORM.kvm] },
  );
  declaredSpec = {
    ...spec,
    disks: [{ capacityBytes: 2 ** 20, storageId: storage.nodes.find((n) => n.__typename === 'StoragePool')!.id }],
    nics: [{ networkId: networks.nodes.find((n) => n.name === 'default')!.id }],
  };
  for (const input of [
    { platformId: PLATFORM.kvm, name: DECLARED.kvm, spec: declaredSpec },
    // 1 TiB: more than any host of the simulator has, so the reconciler makes no VM.
    {
      platformId: PLATFORM.vc,
      name: DECLARED.vc,
      spec: { ...spec, memoryMiB: 1_048_576, placement: { hostId: gid('Host', 'vc', ownHost) } },
    },
  ]) {
    const applied = await runMutation('a-admin', 'applyVm', input);
    expect(applied.userErrors, input.name).toEqual([]);
    declarationsOf.a.push(input.name);
  }
  // A LINKED clone of a stopped VM of a's (web-005 is shut off in the estate).
  const applied = await runMutation('a-admin', 'applyVmPool', {
    platformId: PLATFORM.kvm,
    name: 'web-pool',
    replicas: 1,
    sourceId: vmNamed('web-005').id,
    namePattern: 'web-pool-{n:2}',
    cloneMode: 'LINKED',
    spec: { runStrategy: 'MANUAL' },
  });
  expect(applied.userErrors).toEqual([]);
  poolsOf.a.push(applied.pool!.id);
  declarationsOf.a.push('web-pool-01');

  // Until the libvirt ones have their VMs, and the vCenter one is known never to have one.
  let made: { name: string; vm: { id: string } | null; status: { conditions: { reason: string }[] } }[] = [];
  await eventually(async () => {
    const { vmDeclarations } = await ok<{ vmDeclarations: { nodes: typeof made } }>(
      'a-admin',
      '{ vmDeclarations { nodes { name vm { id } status { conditions { reason } } } } }',
    );
    made = vmDeclarations.nodes;
    const unmeetable = made.find((d) => d.name === DECLARED.vc)?.status.conditions ?? [];
    return (
      [DECLARED.kvm, 'web-pool-01'].every((n) => made.some((d) => d.name === n && d.vm !== null)) &&
      unmeetable.some((c) => c.reason === 'InsufficientResources')
    );
  }, 30_000);
  expect(made.map((d) => d.name).sort()).toEqual([...declarationsOf.a].sort());
  expect(made.find((d) => d.name === DECLARED.vc)).toMatchObject({ vm: null });
  for (const d of made.filter((m) => m.vm !== null)) {
    learn({ tenant: 'a', name: d.name, platform: 'kvm', nativeId: decodeId(d.vm!.id).nativeId });
  }
}, 60_000);

beforeAll(async () => {
  const { data } = await as['a-admin'].http<{
    hosts: { nodes: { id: string }[] };
    clusters: { nodes: { id: string }[] };
    datacenters: { nodes: { id: string }[] };
    networks: { nodes: { id: string }[] };
    storage: { nodes: { id: string; __typename: string; volumes?: { nodes: { id: string }[] } }[] };
    platforms: { id: string }[];
  }>(`{
    hosts(first: 1) { nodes { id } } clusters(first: 1) { nodes { id } } datacenters(first: 1) { nodes { id } }
    networks(first: 1) { nodes { id } } platforms { id }
    storage(first: 100) { nodes { id __typename ... on StoragePool { volumes(first: 1) { nodes { id } } } } }
  }`);
  const storage = data!.storage.nodes;
  const pool = storage.find((s) => s.__typename === 'StoragePool' && (s.volumes?.nodes.length ?? 0) > 0)!;
  Object.assign(infra, {
    host: data!.hosts.nodes[0]!.id,
    cluster: data!.clusters.nodes[0]!.id,
    datacenter: data!.datacenters.nodes[0]!.id,
    network: data!.networks.nodes[0]!.id,
    datastore: storage.find((s) => s.__typename === 'Datastore')!.id,
    storagePool: pool.id,
    storageVolume: pool.volumes!.nodes[0]!.id,
    platform: data!.platforms[0]!.id,
  });
});

afterAll(async () => {
  await gw?.close();
  await sim?.stop();
});

// ---------------------------------------------------------------- the tables

/** Who runs every query row: each tenant's caller, and callers of no tenant. */
const READERS = ['a-viewer', 'b-operator', 'nobody', 'auditor'] as const;

interface View {
  who: CallerName;
  tenant: Tenant | null;
  own: KnownVm[];
  foreign: KnownVm[];
}

const viewOf = (who: CallerName): View => {
  const tenant = TENANT_OF[who];
  return { who, tenant, own: vmsOf(tenant), foreign: [...known.values()].filter((v) => v.tenant !== tenant) };
};
const firstForeign = (v: View, platform: 'kvm' | 'vc') =>
  v.foreign.find((vm) => vm.platform === platform) ?? expect.fail('no foreign VM');
const foreignTasks = (v: View) =>
  v.tenant === 'a' ? tasksOf.b : v.tenant === 'b' ? tasksOf.a : [...tasksOf.a, ...tasksOf.b];
const ownTasks = (v: View) => (v.tenant ? tasksOf[v.tenant] : []);
const foreignPools = (v: View) =>
  v.tenant === 'a' ? poolsOf.b : v.tenant === 'b' ? poolsOf.a : [...poolsOf.a, ...poolsOf.b];
/** The names of the caller's declarations, sorted. */
const ownDeclarations = (v: View) => (v.tenant ? [...declarationsOf[v.tenant]].sort() : []);

interface QueryRow {
  /** The root field the row reaches VMs through. */
  field: string;
  title: string;
  query: string;
  variables?: (v: View) => Record<string, unknown>;
  /** Error codes expected, in order (none unless given). */
  errors?: (v: View) => string[];
  /** Callers that read everything through this row, by design (the audit trail for the auditor). */
  seesAll?: readonly CallerName[];
  check?: (data: Data, v: View) => void;
}

const namesPlatformIds = (v: View) => (v.tenant ? [] : ['UNKNOWN_PLATFORM']);

/** One or more documents per root query field, reaching VMs in every way the schema allows. */
/** One object of each infrastructure kind, by global ID (filled before the tests, as a-admin sees them). */
const infra: Record<string, string> = {};

/** A typed lookup of shared infrastructure: its VMs are filtered as everywhere, and a caller of no tenant finds nothing. */
function infraLookupRow(field: string, selection: string): QueryRow {
  return {
    field,
    title: `${field}(id:): the caller’s VMs on it only; null for a caller of no tenant`,
    query: `query($id: ID!) { found: ${field}(id: $id) { id ${selection} } }`,
    variables: () => ({ id: infra[field] ?? expect.fail(`no ${field} in the estate`) }),
    check: (d, v) => {
      if (v.tenant) expect(d['found']).not.toBeNull();
      else expect(d['found']).toBeNull();
    },
  };
}

const VMS = 'virtualMachines(first: 100) { totalCount nodes { id name } }';

const QUERY_ROWS: QueryRow[] = [
  {
    field: 'virtualMachine',
    title: 'typed: the other tenant’s VMs answer null, as made-up IDs do; the caller’s own answer',
    query: `query($own: ID!, $kvm: ID!, $vc: ID!, $fake: ID!) {
      own: virtualMachine(id: $own) { id name }
      kvm: virtualMachine(id: $kvm) { id name }
      vc: virtualMachine(id: $vc) { id name }
      fake: virtualMachine(id: $fake) { id }
    }`,
    variables: (v) => ({
      own: (v.own[0] ?? vmNamed('web-001')).id,
      kvm: firstForeign(v, 'kvm').id,
      vc: firstForeign(v, 'vc').id,
      fake: fakeVmId('kvm'),
    }),
    check: (d, v) => {
      const { own, ...rest } = d;
      if (v.tenant) expect(own).toMatchObject({ name: v.own[0]!.name });
      else expect(own).toBeNull();
      expect(rest).toEqual({ kvm: null, vc: null, fake: null });
    },
  },
  {
    field: 'snapshot',
    title: 'typed: the other tenant’s snapshot answers null, as a made-up one does',
    query: `query($theirs: ID!, $fake: ID!) {
      theirs: snapshot(id: $theirs) { id name vm { id name } }
      fake: snapshot(id: $fake) { id }
    }`,
    variables: (v) => ({ theirs: v.foreign.flatMap((vm) => vm.snapshotIds)[0], fake: fakeSnapshotId() }),
    check: (d) => expect(d).toEqual({ theirs: null, fake: null }),
  },
  infraLookupRow('host', VMS),
  infraLookupRow('cluster', `${VMS} hosts { nodes { name ${VMS} } }`),
  infraLookupRow('datacenter', `hosts { nodes { ${VMS} } } networks { nodes { ${VMS} } }`),
  infraLookupRow('network', VMS),
  infraLookupRow('datastore', VMS),
  infraLookupRow('storagePool', `volumes { nodes { name ${VMS} } }`),
  infraLookupRow('storageVolume', VMS),
  infraLookupRow('platform', `hosts { nodes { ${VMS} } }`),
  {
    field: 'virtualMachines',
    title: 'every VM, counted, with snapshots and placement',
    query: `{ virtualMachines(first: 100) {
      totalCount edges { cursor node { id } }
      nodes { id name platform { name } host { name } cluster { name } snapshots { id name vm { id name } } currentSnapshot { id } }
    } }`,
    check: (d, v) => {
      expect(valuesOf(d, 'totalCount')).toEqual([v.own.length]);
      expect(namesIn(d)).toEqual(namesOf(v.own));
    },
  },
  {
    field: 'virtualMachines',
    title: 'a page of one: the count and the next page are the caller’s',
    query: '{ virtualMachines(first: 1) { totalCount pageInfo { hasNextPage } nodes { name } } }',
    check: (d, v) =>
      expect(d['virtualMachines']).toMatchObject({
        totalCount: v.own.length,
        pageInfo: { hasNextPage: v.own.length > 1 },
      }),
  },
  {
    field: 'virtualMachines',
    title: 'filtered by the other tenant’s names',
    query: `query($kvm: String!, $vc: String!) {
      kvm: virtualMachines(filter: { nameContains: $kvm }) { totalCount nodes { id name } }
      vc: virtualMachines(filter: { nameContains: $vc }) { totalCount nodes { id name } }
    }`,
    variables: (v) => ({ kvm: firstForeign(v, 'kvm').name, vc: firstForeign(v, 'vc').name }),
    check: (d) => expect(valuesOf(d, 'totalCount')).toEqual([0, 0]),
  },
  {
    field: 'virtualMachines',
    title: 'filtered by platform, every host and every power state',
    query: `query($p: [ID!], $h: [ID!]) {
      virtualMachines(first: 100, filter: { platformIds: $p, hostIds: $h, powerStates: [ON, OFF, PAUSED, SUSPENDED] }) {
        totalCount nodes { id name }
      }
    }`,
    variables: () => ({ p: [PLATFORM.vc], h: vcHostIds }),
    errors: namesPlatformIds,
    check: (d, v) => expect(valuesOf(d, 'totalCount')).toEqual([v.own.filter((vm) => vm.platform === 'vc').length]),
  },
  {
    field: 'virtualMachines',
    title: 'ordered by memory, through disks, volumes, NICs, networks and storage',
    query: `{ virtualMachines(first: 100, orderBy: { field: MEMORY_MIB, direction: DESC }) {
      totalCount
      nodes {
        id name memoryMiB
        disks { source volume { name virtualMachines { nodes { id name } } } storage { name } }
        nics { network { name virtualMachines { nodes { id name } } } }
        networks { name virtualMachines { nodes { id name } } }
        storage { name ... on Datastore { virtualMachines { nodes { id name } } } ... on StoragePool { volumes { nodes { name virtualMachines { nodes { id name } } } } } }
      }
    } }`,
    check: (d, v) => {
      expect((d['virtualMachines'] as { totalCount: number }).totalCount).toBe(v.own.length);
      expect(namesIn(d)).toEqual(namesOf(v.own));
    },
  },
  {
    field: 'virtualMachines',
    title: 'with the latest metrics of each VM',
    query:
      '{ virtualMachines(first: 100) { totalCount nodes { id name metrics { latest { timestamp cpuUsagePercent } } } } }',
    check: (d, v) => expect(namesIn(d)).toEqual(namesOf(v.own)),
  },
  {
    field: 'node',
    title: 'the other tenant’s VMs, snapshot and task answer null, as made-up IDs of the same shape do',
    query: `query($own: ID!, $kvm: ID!, $vc: ID!, $snapshot: ID!, $task: ID!, $fakeKvm: ID!, $fakeVc: ID!, $fakeSnapshot: ID!, $fakeTask: ID!) {
      own: node(id: $own) { id ... on VirtualMachine { name } }
      kvm: node(id: $kvm) { id ... on VirtualMachine { name } }
      vc: node(id: $vc) { id ... on VirtualMachine { name } }
      snapshot: node(id: $snapshot) { id ... on Snapshot { name vm { name } } }
      task: node(id: $task) { id ... on Task { targetName } }
      fakeKvm: node(id: $fakeKvm) { id }
      fakeVc: node(id: $fakeVc) { id }
      fakeSnapshot: node(id: $fakeSnapshot) { id }
      fakeTask: node(id: $fakeTask) { id }
    }`,
    variables: (v) => ({
      own: (v.own[0] ?? vmNamed('web-001')).id,
      kvm: firstForeign(v, 'kvm').id,
      vc: firstForeign(v, 'vc').id,
      snapshot: v.foreign.flatMap((vm) => vm.snapshotIds)[0],
      task: foreignTasks(v)[0],
      fakeKvm: fakeVmId('kvm'),
      fakeVc: fakeVmId('vc'),
      fakeSnapshot: fakeSnapshotId(),
      fakeTask: fakeTaskId(),
    }),
    check: (d, v) => {
      const { own, ...rest } = d;
      if (v.tenant) expect(own).toMatchObject({ name: v.own[0]!.name });
      else expect(own).toBeNull();
      expect(rest).toEqual(Object.fromEntries(Object.keys(rest).map((k) => [k, null])));
    },
  },
  {
    field: 'nodes',
    title: 'every ID of the other tenant’s VMs, snapshots and tasks answers null; the caller’s own answer',
    query: `query($theirs: [ID!]!, $own: [ID!]!) {
      theirs: nodes(ids: $theirs) {
        id ... on VirtualMachine { name } ... on Snapshot { name vm { name } } ... on Task { targetName }
        ... on VmPool { name members { name } vms { name } }
      }
      own: nodes(ids: $own) { id ... on VirtualMachine { name } }
    }`,
    variables: (v) => ({
      theirs: [
        ...v.foreign.flatMap((vm) => [vm.id, ...vm.snapshotIds]),
        ...foreignTasks(v),
        ...foreignPools(v),
        fakeVmId('kvm'),
        fakeVmId('vc'),
        fakeSnapshotId(),
        fakeTaskId(),
        fakePoolId(),
      ],
      own: v.own.map((vm) => vm.id),
    }),
    check: (d, v) => {
      expect(
        (d['theirs'] as unknown[]).every((n) => n === null),
        JSON.stringify(d['theirs']),
      ).toBe(true);
      expect(namesIn(d['own'])).toEqual(namesOf(v.own));
    },
  },
  {
    field: 'platforms',
    title: 'platforms, their hosts and the VMs on them',
    query:
      '{ platforms { id name status hosts { nodes { name virtualMachines(first: 100) { totalCount nodes { id name } } } } } }',
    check: (d, v) => {
      expect(d['platforms']).toHaveLength(v.tenant ? 2 : 0);
      expect(vmTotals(d)).toBe(v.own.length);
    },
  },
  {
    field: 'hosts',
    title: 'every host and the VMs on it',
    query: `{ hosts(first: 100) {
      totalCount nodes { id name platform { name } cluster { name } datacenter { name } virtualMachines(first: 100) { totalCount nodes { id name } } }
    } }`,
    check: (d, v) => {
      expect(vmTotals(d)).toBe(v.own.length);
      expect(namesIn(d)).toEqual(namesOf(v.own));
      if (!v.tenant) expect(d['hosts']).toMatchObject({ totalCount: 0 });
    },
  },
  {
    field: 'datacenters',
    title: 'datacenters: their hosts, clusters, datastores and networks, and the VMs on each',
    query: `{ datacenters(first: 100) { totalCount nodes {
      name
      hosts { nodes { name virtualMachines(first: 100) { totalCount nodes { id name } } } }
      clusters { nodes { name virtualMachines(first: 100) { totalCount nodes { id name } } } }
      datastores { nodes { name ... on Datastore { virtualMachines { nodes { id name } } } } }
      networks { nodes { name virtualMachines { nodes { id name } } } }
    } } }`,
    check: (d, v) => {
      const ownVc = v.own.filter((vm) => vm.platform === 'vc');
      expect(
        valuesOf(d, 'hosts')
          .flatMap((hosts) => valuesOf(hosts, 'totalCount'))
          .reduce<number>((s, n) => s + (n as number), 0),
      ).toBe(ownVc.length);
      expect(namesIn(valuesOf(d, 'datastores'))).toEqual(namesOf(ownVc));
      if (!v.tenant) expect(d['datacenters']).toMatchObject({ totalCount: 0 });
    },
  },
  {
    field: 'clusters',
    title: 'clusters and the VMs in them and on their hosts',
    query: `{ clusters(first: 100) { totalCount nodes {
      name virtualMachines(first: 100) { totalCount nodes { id name } }
      hosts { nodes { name virtualMachines(first: 100) { totalCount nodes { id name } } } }
    } } }`,
    check: (d, v) => {
      const inCluster = v.own.filter((vm) => vm.name.startsWith('DC0_C0_')).length;
      // Each VM twice: in the cluster's connection and in its host's.
      expect(vmTotals(d)).toBe(2 * inCluster);
      if (!v.tenant) expect(d['clusters']).toMatchObject({ totalCount: 0 });
    },
  },
  {
    field: 'networks',
    title: 'networks and the VMs attached to them',
    query:
      '{ networks(first: 100) { totalCount nodes { id name platform { name } virtualMachines { nodes { id name networks { name } } } } } }',
    check: (d, v) => {
      // Every VM of the libvirt estate has a NIC on a network.
      const seen = namesIn(d);
      expect(seen.filter((n) => byName.get(n)?.platform === 'kvm')).toEqual(
        namesOf(v.own.filter((vm) => vm.platform === 'kvm')),
      );
      if (!v.tenant) expect(d['networks']).toMatchObject({ totalCount: 0 });
    },
  },
  {
    field: 'storage',
    title: 'pools with their volumes’ VMs, datastores with theirs',
    query: `{ storage(first: 100) { totalCount nodes {
      id name
      ... on StoragePool { volumes { nodes { id name virtualMachines { nodes { id name } } } } }
      ... on Datastore { virtualMachines { nodes { id name } } }
    } } }`,
    check: (d, v) => {
      // Every VM has its image in a pool, or its files on a datastore.
      expect(namesIn(d)).toEqual(namesOf(v.own));
      if (!v.tenant) expect(d['storage']).toMatchObject({ totalCount: 0 });
    },
  },
  {
    field: 'task',
    title: 'the caller’s task answers; the other tenant’s answers null, as a made-up one does',
    query: `query($own: ID!, $theirs: ID!, $fake: ID!) {
      own: task(id: $own) { id targetName target { id name } resultSnapshot { id name } }
      theirs: task(id: $theirs) { id targetName target { id name } }
      fake: task(id: $fake) { id }
    }`,
    variables: (v) => ({ own: ownTasks(v)[0] ?? tasksOf.a[0], theirs: foreignTasks(v)[0], fake: fakeTaskId() }),
    check: (d, v) => {
      expect(d['own'] === null).toBe(!v.tenant);
      expect([d['theirs'], d['fake']]).toEqual([null, null]);
    },
  },
  {
    field: 'tasks',
    title: 'every task, counted, with its target and result',
    query: `{ tasks(first: 100) { totalCount nodes {
      id operation state targetName caller target { id name } resultVm { id name } resultSnapshot { id name vm { id name } }
    } } }`,
    check: (d, v) => {
      const tasks = d['tasks'] as { totalCount: number; nodes: { id: string }[] };
      expect(tasks.totalCount).toBe(tasks.nodes.length);
      expect(tasks.nodes.map((t) => t.id)).toEqual(expect.arrayContaining(ownTasks(v)));
      if (!v.tenant) expect(tasks.totalCount).toBe(0);
    },
  },
  {
    field: 'tasks',
    title: 'tasks filtered to the other tenant’s VMs',
    query: 'query($t: [ID!]) { tasks(first: 100, filter: { targetIds: $t }) { totalCount nodes { id targetName } } }',
    variables: (v) => ({ t: v.foreign.map((vm) => vm.id) }),
    check: (d) => expect(d['tasks']).toEqual({ totalCount: 0, nodes: [] }),
  },
  {
    field: 'vmMigrations',
    title: 'migrations of the caller’s VMs only, counted; null by ID for the others',
    query: `query($a: ID!, $fake: ID!) {
      vmMigrations(first: 100) {
        totalCount nodes { id phase vm { id name } sourceHost { name } targetHost { name } task { id targetName } }
      }
      a: node(id: $a) { id ... on VmMigration { vm { name } } }
      fake: node(id: $fake) { id }
    }`,
    variables: () => ({ a: migrationsOf.a[0], fake: fakeMigrationId() }),
    check: (d, v) => {
      const migrations = d['vmMigrations'] as { totalCount: number; nodes: { id: string }[] };
      expect(migrations.totalCount).toBe(migrations.nodes.length);
      expect(migrations.nodes.map((m) => m.id)).toEqual(v.tenant === 'a' ? migrationsOf.a : []);
      expect(d['a'] === null).toBe(v.tenant !== 'a');
      expect(d['fake']).toBeNull();
    },
  },
  {
    field: 'vmDeclarations',
    title: 'the caller’s declarations only, counted: a made one with its VM, an unmade one by where it would be',
    query: `{ vmDeclarations(first: 100) {
      totalCount pageInfo { hasNextPage } nodes { name platform { name } vm { id name } spec { runStrategy } status { phase } }
    } }`,
    check: (d, v) => {
      const c = d['vmDeclarations'] as {
        totalCount: number;
        pageInfo: { hasNextPage: boolean };
        nodes: { name: string; vm: { name: string } | null }[];
      };
      expect(c.nodes.map((n) => n.name).sort()).toEqual(ownDeclarations(v));
      expect(c).toMatchObject({ totalCount: ownDeclarations(v).length, pageInfo: { hasNextPage: false } });
      // The libvirt ones have their VMs (known as a's); the vCenter one has none.
      expect(Object.fromEntries(c.nodes.map((n) => [n.name, n.vm?.name ?? null]))).toEqual(
        Object.fromEntries(ownDeclarations(v).map((n) => [n, byName.get(n)?.name ?? null])),
      );
    },
  },
  {
    field: 'vmDeclarations',
    title: 'a page of one: the count and the next page are the caller’s',
    query: '{ vmDeclarations(first: 1) { totalCount pageInfo { hasNextPage } nodes { name } } }',
    check: (d, v) =>
      expect(d['vmDeclarations']).toEqual({
        totalCount: ownDeclarations(v).length,
        pageInfo: { hasNextPage: ownDeclarations(v).length > 1 },
        nodes: ownDeclarations(v)
          .slice(0, 1)
          .map(() => ({ name: expect.any(String) })),
      }),
  },
  {
    field: 'vmDeclarations',
    title: 'by platform: the caller’s on each, and a platform it holds no role on is not configured',
    query: `query($kvm: ID, $vc: ID) {
      kvm: vmDeclarations(platformId: $kvm) { totalCount nodes { name vm { id name } } }
      vc: vmDeclarations(platformId: $vc) { totalCount nodes { name vm { id name } } }
    }`,
    variables: () => ({ kvm: PLATFORM.kvm, vc: PLATFORM.vc }),
    // The first refusal makes the whole answer null.
    errors: namesPlatformIds,
    check: (d, v) => {
      const on = (p: 'kvm' | 'vc') => (d[p] as { nodes: { name: string }[] }).nodes.map((n) => n.name).sort();
      expect(on('vc')).toEqual(ownDeclarations(v).filter((n) => n === DECLARED.vc));
      expect(on('kvm')).toEqual(ownDeclarations(v).filter((n) => n !== DECLARED.vc));
      expect(valuesOf(d, 'totalCount')).toEqual([on('kvm').length, on('vc').length]);
    },
  },
  {
    field: 'vmPools',
    title: 'the caller’s pools only, counted, with their source, members and VMs',
    query: `{ vmPools(first: 100) { totalCount pageInfo { hasNextPage } nodes {
      id name platform { name } replicas source { id name } namePattern
      members { name vm { id name } } vms { id name } standbys { name }
    } } }`,
    check: (d, v) => {
      const c = d['vmPools'] as { totalCount: number; nodes: { id: string }[] };
      const own = v.tenant ? poolsOf[v.tenant] : [];
      expect(c.nodes.map((p) => p.id)).toEqual(own);
      expect(c.totalCount).toBe(own.length);
      // a's pool: its source and its one member, a VM of a's.
      if (v.tenant === 'a') expect(namesIn(c)).toEqual(['web-005', 'web-pool-01']);
    },
  },
  {
    field: 'vmPools',
    title: 'by platform: a platform the caller holds no role on is not configured',
    query: 'query($p: ID) { vmPools(platformId: $p) { totalCount nodes { id name members { name } } } }',
    variables: () => ({ p: PLATFORM.kvm }),
    errors: namesPlatformIds,
    check: (d, v) =>
      expect((d['vmPools'] as { nodes: { id: string }[] }).nodes.map((p) => p.id)).toEqual(
        v.tenant ? poolsOf[v.tenant] : [],
      ),
  },
  {
    field: 'vmPool',
    title: 'typed and by node: a’s pool answers a’s callers only; a made-up ID answers null',
    query: `query($a: ID!, $fake: ID!) {
      a: vmPool(id: $a) { id name source { id name } members { name vm { id name } } vms { id name } }
      aNode: node(id: $a) { id ... on VmPool { name members { name } vms { id name } } }
      fake: vmPool(id: $fake) { id }
      fakeNode: node(id: $fake) { id }
    }`,
    variables: () => ({ a: poolsOf.a[0], fake: fakePoolId() }),
    check: (d, v) => {
      const { a, aNode, ...rest } = d;
      if (v.tenant === 'a') {
        expect(a).toMatchObject({ id: poolsOf.a[0], name: 'web-pool', vms: [{ name: 'web-pool-01' }] });
        expect(aNode).toMatchObject({ id: poolsOf.a[0], members: [{ name: 'web-pool-01' }] });
      } else expect([a, aNode]).toEqual([null, null]);
      expect(rest).toEqual({ fake: null, fakeNode: null });
    },
  },
  {
    field: 'taskAggregate',
    title: 'counts only the caller’s tasks',
    query: 'query($ids: [ID!]!) { taskAggregate(ids: $ids) { total succeeded } }',
    variables: (v) => ({ ids: [...ownTasks(v), ...foreignTasks(v), fakeTaskId()] }),
    check: (d, v) => expect(d['taskAggregate']).toEqual({ total: ownTasks(v).length, succeeded: ownTasks(v).length }),
  },
  {
    field: 'rateLimit',
    title: 'the caller’s own budget, which names no VM',
    query: '{ rateLimit { limit cost remaining used resetAt } }',
    check: (d) => expect(d['rateLimit']).toMatchObject({ limit: 1_000_000_000 }),
  },
  {
    field: 'auditLog',
    title: 'the audit trail: FORBIDDEN without the auditor or admin role',
    query: '{ auditLog(first: 100) { totalCount nodes { caller operation targetId input outcome } } }',
    errors: (v) => (v.who === 'auditor' ? [] : ['FORBIDDEN']),
    seesAll: ['auditor'],
  },
];

/**
 * List fields that take platformIds in their filter (or one platformId, as $one): naming a platform one may
 * not see is naming none.
 */
const PLATFORM_FILTERS: Record<string, string> = {
  virtualMachines: 'query($p: [ID!]) { virtualMachines(filter: { platformIds: $p }) { totalCount } }',
  hosts: 'query($p: [ID!]) { hosts(filter: { platformIds: $p }) { totalCount } }',
  datacenters: 'query($p: [ID!]) { datacenters(filter: { platformIds: $p }) { totalCount } }',
  clusters: 'query($p: [ID!]) { clusters(filter: { platformIds: $p }) { totalCount } }',
  networks: 'query($p: [ID!]) { networks(filter: { platformIds: $p }) { totalCount } }',
  storage: 'query($p: [ID!]) { storage(filter: { platformIds: $p }) { totalCount } }',
  tasks: 'query($p: [ID!]) { tasks(filter: { platformIds: $p }) { totalCount } }',
  vmDeclarations: 'query($one: ID) { vmDeclarations(platformId: $one) { totalCount } }',
  vmPools: 'query($one: ID) { vmPools(platformId: $one) { totalCount } }',
};

/**
 * What a mutation acts on: one tenant's VM, snapshot, task, platform, declaration or pool, and a name for a VM
 * to make.
 */
interface Target {
  vmId: string;
  snapshotId: string;
  taskId: string;
  platformId: string;
  name: string;
  hostId: string;
  migrationId: string;
  /** A VM declared on the platform, by name. */
  declared: string;
  poolId: string;
}

interface MutationRow {
  /** The least role that may run it. */
  role: 'operator' | 'admin';
  /**
   * What it names: a VM (or VMs; a pool's source), a snapshot, a task, a platform to make a VM on (or to
   * declare one), a declared VM by its platform and name, or a pool.
   */
  acts: 'vm' | 'snapshot' | 'task' | 'platform' | 'migration' | 'declaration' | 'pool';
  /** Its input type. */
  input: string;
  payload: 'vm' | 'batch' | 'cancel' | 'migration' | 'declaration' | 'forget' | 'pool';
  variables: (t: Target) => Record<string, unknown>;
  /** The operation its audit entries name (a batch's items are audited one by one under their own). */
  audited?: string;
  /** For the operator's run: the power states the VM must be in. */
  from?: readonly string[];
}

const PAYLOADS = {
  vm: '{ vm { id name } task { id } userErrors { code field message } }',
  batch:
    '{ items { vm { id name } task { id } userErrors { code field message } } tasks { id } userErrors { code field message } }',
  cancel: '{ task { id } userErrors { code field message } }',
  migration: '{ migration { id } userErrors { code field message } }',
  declaration:
    '{ declaration { name spec { generation } status { phase } vm { id } } userErrors { code field message } }',
  forget: '{ vm { id name } userErrors { code field message } }',
  pool: '{ pool { id name } userErrors { code field message } }',
};

const vmOp = (from: readonly string[]): MutationRow => ({
  role: 'operator',
  acts: 'vm',
  input: 'VmOperationInput',
  payload: 'vm',
  variables: (t) => ({ vmId: t.vmId }),
  from,
});

/** Every root mutation. */
const MUTATIONS: Record<string, MutationRow> = {
  startVm: vmOp(['OFF']),
  stopVm: { ...vmOp(['ON']), input: 'StopVmInput', variables: (t) => ({ vmId: t.vmId, force: true }) },
  pauseVm: vmOp(['ON']),
  unpauseVm: vmOp(['PAUSED']),
  rebootVm: vmOp(['ON']),
  resetVm: vmOp(['ON']),
  suspendVm: vmOp(['ON']),
  resumeVm: vmOp(['SUSPENDED']),
  createSnapshot: {
    ...vmOp([]),
    input: 'CreateSnapshotInput',
    variables: (t) => ({ vmId: t.vmId, name: 'acl-taken' }),
  },
  revertToSnapshot: {
    role: 'operator',
    acts: 'snapshot',
    input: 'SnapshotOperationInput',
    payload: 'vm',
    variables: (t) => ({ snapshotId: t.snapshotId }),
  },
  deleteSnapshot: {
    role: 'operator',
    acts: 'snapshot',
    input: 'DeleteSnapshotInput',
    payload: 'vm',
    variables: (t) => ({ snapshotId: t.snapshotId }),
  },
  powerVms: {
    role: 'operator',
    acts: 'vm',
    input: 'PowerVmsInput',
    payload: 'batch',
    variables: (t) => ({ vmIds: [t.vmId], action: 'START' }),
    audited: 'startVm',
    from: ['OFF'],
  },
  snapshotVms: {
    role: 'operator',
    acts: 'vm',
    input: 'SnapshotVmsInput',
    payload: 'batch',
    variables: (t) => ({ vmIds: [t.vmId], namePrefix: 'acl' }),
    from: [],
  },
  cancelTask: {
    role: 'operator',
    acts: 'task',
    input: 'CancelTaskInput',
    payload: 'cancel',
    variables: (t) => ({ taskId: t.taskId }),
  },
  cancelMigration: {
    role: 'admin',
    acts: 'migration',
    input: 'CancelMigrationInput',
    payload: 'migration',
    variables: (t) => ({ migrationId: t.migrationId }),
  },
  deleteVm: { role: 'admin', acts: 'vm', input: 'DeleteVmInput', payload: 'vm', variables: (t) => ({ vmId: t.vmId }) },
  cloneVm: {
    role: 'admin',
    acts: 'vm',
    input: 'CloneVmInput',
    payload: 'vm',
    variables: (t) => ({ vmId: t.vmId, name: t.name }),
  },
  reconfigureVm: {
    role: 'admin',
    acts: 'vm',
    input: 'ReconfigureVmInput',
    payload: 'vm',
    variables: (t) => ({ vmId: t.vmId, memoryMiB: 2048 }),
  },
  migrateVm: {
    role: 'admin',
    acts: 'vm',
    input: 'MigrateVmInput',
    payload: 'vm',
    variables: (t) => ({ vmId: t.vmId, hostId: t.hostId }),
  },
  createVm: {
    role: 'admin',
    acts: 'platform',
    input: 'CreateVmInput',
    payload: 'vm',
    variables: (t) => ({ platformId: t.platformId, name: t.name, memoryMiB: 256 }),
  },
  deployVms: {
    role: 'admin',
    acts: 'vm',
    input: 'DeployVmsInput',
    payload: 'batch',
    variables: (t) => ({ templateId: t.vmId, count: 1, namePattern: t.name, powerOn: false }),
  },
  applyVm: {
    role: 'admin',
    acts: 'platform',
    input: 'ApplyVmInput',
    payload: 'declaration',
    variables: (t) => ({
      platformId: t.platformId,
      name: t.name,
      spec: { vcpus: 1, memoryMiB: 64, runStrategy: 'MANUAL' },
    }),
  },
  forgetVm: {
    role: 'admin',
    acts: 'declaration',
    input: 'ForgetVmInput',
    payload: 'forget',
    variables: (t) => ({ platformId: t.platformId, name: t.declared }),
  },
  // Judged on the VMs it would make (named as t.name is, on the source's host), from a source the caller sees.
  applyVmPool: {
    role: 'admin',
    acts: 'vm',
    input: 'ApplyVmPoolInput',
    payload: 'pool',
    variables: (t) => ({
      platformId: platformOfVm(t.vmId),
      name: 'acl-pool',
      replicas: 0,
      sourceId: t.vmId,
      namePattern: `${t.name}-{n:2}`,
      spec: { runStrategy: 'MANUAL' },
    }),
  },
  scaleVmPool: {
    role: 'admin',
    acts: 'pool',
    input: 'ScaleVmPoolInput',
    payload: 'pool',
    variables: (t) => ({ poolId: t.poolId, replicas: 2 }),
  },
  deleteVmPool: {
    role: 'admin',
    acts: 'pool',
    input: 'DeleteVmPoolInput',
    payload: 'pool',
    variables: (t) => ({ poolId: t.poolId, deleteVms: true }),
  },
};

async function runMutation(who: CallerName, name: string, input: Record<string, unknown>): Promise<Payload> {
  const row = MUTATIONS[name] ?? expect.fail(`no row for ${name}`);
  const data = await ok<{ m: Payload }>(
    who,
    `mutation($input: ${row.input}!) { m: ${name}(input: $input) ${PAYLOADS[row.payload]} }`,
    { input },
  );
  return data.m;
}

const mutationCase = (name: string, t: Target) => (who: CallerName) =>
  runMutation(who, name, MUTATIONS[name]!.variables(t));

/** a's objects on the libvirt platform, as mutation targets. */
const aTarget = (): Target => ({
  vmId: vmNamed('web-001').id,
  snapshotId: vmNamed('web-001').snapshotIds[0]!,
  taskId: tasksOf.a[0]!,
  migrationId: migrationsOf.a[0]!,
  platformId: PLATFORM.kvm,
  name: 'web-800',
  hostId: kvmHostId,
  declared: DECLARED.kvm,
  poolId: poolsOf.a[0]!,
});
/** The same, where nothing exists: IDs of the same shape on the same platform. */
const fakeTarget = (): Target => ({
  ...aTarget(),
  vmId: fakeVmId('kvm'),
  snapshotId: fakeSnapshotId(),
  taskId: fakeTaskId(),
  migrationId: fakeMigrationId(),
  declared: 'web-799',
  poolId: fakePoolId(),
});

/** Every root subscription, and the document each test below opens it with. */
const SUBSCRIPTIONS: Record<string, string> = {
  vmChanged: `subscription($f: VmChangeFilter, $after: String) {
    vmChanged(filter: $f, after: $after) { cursor type vmId vm { id name } powerState }
  }`,
  inventoryChanged: `subscription { inventoryChanged {
    cursor type kind nodeId
    node { id ... on VirtualMachine { name } ... on Snapshot { name vm { name } } ... on Host { name virtualMachines(first: 50) { totalCount nodes { id name } } } }
  } }`,
  taskUpdated: `subscription { taskUpdated {
    cursor type
    task { id state targetName target { id name } }
    upstreamTask { state targetName target { id name } gatewayTask { id targetName } }
  } }`,
  platformStatusChanged: `subscription($p: [ID!]) { platformStatusChanged(platformIds: $p) { cursor platform { name } } }`,
  vmMetrics: 'subscription($ids: [ID!]!) { vmMetrics(ids: $ids) { vmId vm { name } sample { timestamp } } }',
  hostMetrics: 'subscription($ids: [ID!]!) { hostMetrics(ids: $ids) { hostId host { name } sample { timestamp } } }',
};

// ---------------------------------------------------------------- the tests

describe('the tables cover the schema', () => {
  it('has a row for every root query, mutation and subscription field', async () => {
    const data = await ok<{
      __schema: Record<'queryType' | 'mutationType' | 'subscriptionType', { fields: { name: string }[] }>;
    }>(
      'a-viewer',
      '{ __schema { queryType { fields { name } } mutationType { fields { name } } subscriptionType { fields { name } } } }',
    );
    const fields = (t: 'queryType' | 'mutationType' | 'subscriptionType') =>
      data.__schema[t].fields.map((f) => f.name).sort();
    const missing = (have: string[], rows: string[]) => have.filter((f) => !rows.includes(f));
    // A new field fails here until it has a row saying how it keeps tenants apart.
    expect(
      missing(
        fields('queryType'),
        QUERY_ROWS.map((r) => r.field),
      ),
      'queries without a row',
    ).toEqual([]);
    expect(missing(fields('mutationType'), Object.keys(MUTATIONS)), 'mutations without a row').toEqual([]);
    expect(missing(fields('subscriptionType'), Object.keys(SUBSCRIPTIONS)), 'subscriptions without a row').toEqual([]);
  });

  it('refuses a request without a credential', async () => {
    const res = await fetch(gw.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ platforms { id } }' }),
    });
    expect(res.status).toBe(401);
  });
});

describe('queries show each caller its own tenant’s VMs only', () => {
  const cases = QUERY_ROWS.flatMap((row) =>
    READERS.map((who) => ({ row, who, name: `${row.field}: ${row.title} (${who})` })),
  );

  it.each(cases)('$name', async ({ row, who }) => {
    const v = viewOf(who);
    const res = await as[who].http(row.query, row.variables?.(v));
    expect(codesOf(res), JSON.stringify(res.errors)).toEqual(row.errors?.(v) ?? []);
    if (!row.seesAll?.includes(who)) expect(leaks(res, v.tenant)).toEqual([]);
    if (res.data && !res.errors) row.check?.(res.data, v);
  });

  it.each(['nobody', 'auditor'] as const)(
    'a platform %s holds no role on is refused as one that is not configured',
    async (who) => {
      for (const [field, query] of Object.entries(PLATFORM_FILTERS)) {
        for (const platform of ['kvm', 'vc'] as const) {
          const real = await as[who].http(query, { p: [PLATFORM[platform]], one: PLATFORM[platform] });
          const ghost = await as[who].http(query, { p: [GHOST_PLATFORM], one: GHOST_PLATFORM });
          expect(codesOf(real), field).toEqual(['UNKNOWN_PLATFORM']);
          const said = (r: FormattedExecutionResult<unknown>, name: string) =>
            r.errors!.map((e) => ({
              ...e,
              message: e.message.replaceAll(name, 'P'),
              extensions: { ...e.extensions, platformId: 'P' },
            }));
          expect(said(real, platform), field).toEqual(said(ghost, 'ghost'));
        }
      }
      const nodes = await ok(who, 'query($ids: [ID!]!) { nodes(ids: $ids) { id } }', {
        ids: [PLATFORM.kvm, PLATFORM.vc, GHOST_PLATFORM],
      });
      expect(nodes).toEqual({ nodes: [null, null, null] });
    },
  );

  it('lets the auditor read the whole audit log; an admin of some tenants reads none of it, by list or by ID', async () => {
    const query = '{ auditLog(first: 200) { totalCount nodes { caller operation targetId input outcome } } }';
    const everything = await ok<{ auditLog: { totalCount: number } }>('auditor', query);
    // The auditor (on every tenant) reads b's entries too: those of beforeAll at least.
    expect(leaks(everything, 'a').length).toBeGreaterThan(0);
    // The log names every tenant's VMs: an admin of a alone may not read it.
    const admin = await as['a-admin'].http(query);
    expect(admin.errors?.[0]?.extensions?.['code']).toBe('FORBIDDEN');
    const { auditLog } = await ok<{ auditLog: { nodes: { id: string }[] } }>(
      'auditor',
      '{ auditLog(first: 100, filter: { callers: ["token:b-operator"] }) { nodes { id } } }',
    );
    expect(auditLog.nodes.length).toBeGreaterThan(0);
    const byId = await ok<{ nodes: unknown[] }>(
      'a-admin',
      'query($ids: [ID!]!) { nodes(ids: $ids) { id ... on AuditEntry { targetId input } } }',
      { ids: auditLog.nodes.map((n) => n.id) },
    );
    expect(byId.nodes.every((n) => n === null)).toBe(true);
  });
});

describe('mutations act only within the caller’s tenant and role', () => {
  const names = () => Object.keys(MUTATIONS);

  it.each(names())('%s: b-operator on a’s target is NOT_FOUND, as where nothing exists', async (name) => {
    const theirs = await mutationCase(name, aTarget())('b-operator');
    const errors = userErrorsOf(theirs);
    if (MUTATIONS[name]!.acts === 'platform') {
      // A VM to be made is no hidden one: b holds no role on a VM named as a's are.
      expect(errors.map((e) => e.code)).toEqual(['FORBIDDEN']);
      return;
    }
    expect(errors.map((e) => e.code)).toEqual(['NOT_FOUND']);
    expect(theirs.vm ?? null).toBeNull();
    expect(theirs.task ?? null).toBeNull();
    expect(theirs.pool ?? null).toBeNull();
    const nowhere = fakeTarget();
    const nothing = await mutationCase(name, nowhere)('b-operator');
    /** The errors with a declared name replaced by another: a message may repeat the name the caller gave. */
    const named = (e: UserError[], from: string, to: string) =>
      JSON.parse(JSON.stringify(e).replaceAll(from, to)) as UserError[];
    expect(named(errors, aTarget().declared, nowhere.declared)).toEqual(userErrorsOf(nothing));
    // On the vCenter too, for mutations that name a VM.
    if (MUTATIONS[name]!.acts === 'vm') {
      const vcTarget = { ...aTarget(), vmId: vmNamed('DC0_H0_VM0').id, name: 'DC0_H0_VM9' };
      const vc = userErrorsOf(await mutationCase(name, vcTarget)('b-operator'));
      const fake = userErrorsOf(await mutationCase(name, { ...vcTarget, vmId: fakeVmId('vc') })('b-operator'));
      expect(vc.map((e) => e.code)).toEqual(['NOT_FOUND']);
      expect(vc).toEqual(fake);
    }
    // On the vCenter too, for a declaration there (of a VM that a's host would hold).
    if (MUTATIONS[name]!.acts === 'declaration') {
      const vcTarget = { ...aTarget(), platformId: PLATFORM.vc, declared: DECLARED.vc };
      const vc = userErrorsOf(await mutationCase(name, vcTarget)('b-operator'));
      const none = userErrorsOf(await mutationCase(name, { ...vcTarget, declared: 'DC0_H0_VM799' })('b-operator'));
      expect(vc.map((e) => e.code)).toEqual(['NOT_FOUND']);
      expect(named(vc, DECLARED.vc, 'DC0_H0_VM799')).toEqual(none);
    }
  });

  it.each(names())('%s: a-viewer on a’s target is FORBIDDEN', async (name) => {
    const payload = await mutationCase(name, aTarget())('a-viewer');
    expect(userErrorsOf(payload).map((e) => e.code)).toEqual(['FORBIDDEN']);
    expect(payload.task ?? null).toBeNull();
  });

  it('audits each of a-viewer’s refusals with its caller', async () => {
    const { auditLog } = await ok<{
      auditLog: {
        nodes: {
          caller: string;
          operation: string;
          outcome: string;
          userErrorCodes: string[];
          grants: string[];
          sourceAddress: string | null;
        }[];
      };
    }>(
      'auditor',
      '{ auditLog(first: 500, filter: { callers: ["token:a-viewer"] }) { nodes { caller operation outcome userErrorCodes grants sourceAddress } } }',
    );
    const expected = new Map<string, number>();
    for (const [name, row] of Object.entries(MUTATIONS)) {
      const op = row.audited ?? name;
      expected.set(op, (expected.get(op) ?? 0) + 1);
    }
    for (const [op, count] of expected) {
      const entries = auditLog.nodes.filter((n) => n.operation === op);
      expect(entries.length, `${op} audited`).toBeGreaterThanOrEqual(count);
      for (const e of entries)
        expect(e).toEqual({
          caller: 'token:a-viewer',
          operation: op,
          outcome: 'REFUSED',
          userErrorCodes: ['FORBIDDEN'],
          // Who it was, by its roles and where it came from.
          grants: expect.arrayContaining(['viewer@a-kvm']),
          sourceAddress: expect.stringMatching(/127\.0\.0\.1$/),
        });
    }
  });

  it.each(names().filter((n) => MUTATIONS[n]!.role === 'admin'))('%s: a-operator is FORBIDDEN', async (name) => {
    const payload = await mutationCase(name, aTarget())('a-operator');
    expect(userErrorsOf(payload).map((e) => e.code)).toEqual(['FORBIDDEN']);
  });

  it('a-operator runs every operator mutation on a’s VMs', async () => {
    /** a's libvirt VMs in one of these power states. */
    const inState = async (from: readonly string[]) => {
      const { virtualMachines } = await ok<{
        virtualMachines: { nodes: { id: string; name: string; powerState: string }[] };
      }>(
        'a-operator',
        'query($p: [ID!]) { virtualMachines(first: 100, filter: { platformIds: $p }) { nodes { id name powerState } } }',
        { p: [PLATFORM.kvm] },
      );
      const vm = virtualMachines.nodes.find((n) => from.length === 0 || from.includes(n.powerState));
      return vm ?? expect.fail(`a has no VM in ${from.join(' or ')}: ${JSON.stringify(virtualMachines.nodes)}`);
    };
    let snapshotId = '';
    const order = ['startVm', 'stopVm', 'pauseVm', 'unpauseVm', 'rebootVm', 'resetVm', 'suspendVm', 'resumeVm'];
    order.push('createSnapshot', 'revertToSnapshot', 'deleteSnapshot', 'powerVms', 'snapshotVms');
    for (const name of order) {
      const row = MUTATIONS[name]!;
      const vm = await inState(row.from ?? []);
      const input = row.variables({ ...aTarget(), vmId: vm.id, snapshotId });
      if (name === 'createSnapshot') input['name'] = 'acl-operator';
      const payload = await runMutation('a-operator', name, input);
      expect(userErrorsOf(payload), `${name} on ${vm.name}`).toEqual([]);
      const taskId = payload.task?.id ?? payload.items?.[0]?.task?.id ?? expect.fail(`${name} started no task`);
      const task = await finished('a-operator', taskId);
      expect(task.state, `${name} on ${vm.name}: ${JSON.stringify(task.error)}`).toBe('SUCCEEDED');
      if (name === 'createSnapshot') snapshotId = gid('Snapshot', 'kvm', `${decodeId(vm.id).nativeId}/acl-operator`);
    }
    // A finished task of a's may not be cancelled, but not for want of the role.
    const cancel = await runMutation('a-operator', 'cancelTask', { taskId: tasksOf.a[0] });
    expect(cancel.userErrors.map((e) => e.code)).toEqual(['WRONG_STATE']);
  });

  it('a-admin creates a VM named as a’s are, and not one named as b’s are', async () => {
    const outside = await runMutation('a-admin', 'createVm', {
      platformId: PLATFORM.kvm,
      name: 'cache-800',
      memoryMiB: 256,
    });
    expect(outside.userErrors.map((e) => e.code)).toEqual(['FORBIDDEN']);
    const inside = await runMutation('a-admin', 'createVm', {
      platformId: PLATFORM.kvm,
      name: 'web-800',
      memoryMiB: 256,
    });
    expect(inside.userErrors).toEqual([]);
    expect((await finished('a-admin', inside.task!.id)).state).toBe('SUCCEEDED');
    const { task } = await ok<{ task: { resultVm: { id: string; name: string } } }>(
      'a-admin',
      'query($id: ID!) { task(id: $id) { resultVm { id name } } }',
      { id: inside.task!.id },
    );
    learn({ tenant: 'a', name: 'web-800', platform: 'kvm', nativeId: decodeId(task.resultVm.id).nativeId });
    // b does not see it.
    expect(await ok('b-operator', 'query($id: ID!) { node(id: $id) { id } }', { id: task.resultVm.id })).toEqual({
      node: null,
    });
    const deleted = await runMutation('a-admin', 'deleteVm', { vmId: task.resultVm.id, force: true });
    expect(deleted.userErrors).toEqual([]);
    expect((await finished('a-admin', deleted.task!.id)).state).toBe('SUCCEEDED');
  });

  it('a-admin cannot clone or deploy a VM into b’s names or b’s cluster', async () => {
    // Sources chosen so that, were the check missing, nothing would be made: a running libvirt
    // VM cannot be cloned (WRONG_STATE), and the vCenter names are taken (INVALID_INPUT).
    const { virtualMachines } = await ok<{ virtualMachines: { nodes: { id: string; name: string }[] } }>(
      'a-admin',
      'query($p: [ID!]) { virtualMachines(first: 100, filter: { platformIds: $p, powerStates: [ON] }) { nodes { id name } } }',
      { p: [PLATFORM.kvm] },
    );
    const running = (virtualMachines.nodes[0] ?? expect.fail('a has no running VM')).id;
    const { clusters, hosts } = sim.oracle;
    const clusterId = gid(
      'Cluster',
      'vc',
      Object.keys(clusters).find((c) => clusters[c]!.name === 'DC0_C0')!,
    );
    const clusterHostId = gid(
      'Host',
      'vc',
      Object.keys(hosts).find((h) => hosts[h]!.name === 'DC0_C0_H0')!,
    );
    const source = vmNamed('DC0_H0_VM0').id;
    const attempts: [string, string, Record<string, unknown>, string][] = [
      ['into b’s names', 'cloneVm', { vmId: running, name: 'cache-801' }, 'FORBIDDEN'],
      ['into b’s names', 'deployVms', { templateId: running, count: 2, namePattern: 'batch-8{n:2}' }, 'FORBIDDEN'],
      ['into b’s cluster', 'cloneVm', { vmId: source, name: 'DC0_H0_VM1', placement: { clusterId } }, 'FORBIDDEN'],
      [
        'into b’s cluster',
        'cloneVm',
        { vmId: source, name: 'DC0_H0_VM1', placement: { hostId: clusterHostId } },
        'FORBIDDEN',
      ],
      [
        'into b’s cluster',
        'deployVms',
        { templateId: source, count: 2, startIndex: 0, namePattern: 'DC0_H0_VM{n}', placement: { clusterId } },
        'FORBIDDEN',
      ],
      [
        'into b’s cluster',
        'createVm',
        { platformId: PLATFORM.vc, name: 'DC0_H0_VM1', memoryMiB: 256, placement: { clusterId } },
        'FORBIDDEN',
      ],
      // Within a's own names and host the check lets the copy through (to the refusal after it).
      ['within a’s names', 'cloneVm', { vmId: running, name: 'web-801' }, 'WRONG_STATE'],
      ['on a’s host', 'cloneVm', { vmId: source, name: 'DC0_H0_VM1' }, 'INVALID_INPUT'],
    ];
    const outcomes = [];
    for (const [where, name, input] of attempts) {
      const errors = userErrorsOf(await runMutation('a-admin', name, { ...input, powerOn: false }));
      outcomes.push(
        `${name} ${where} ${JSON.stringify(input['placement'] ?? {})}: ${[...new Set(errors.map((e) => e.code))]}`,
      );
    }
    expect(outcomes).toEqual(
      attempts.map(
        ([where, name, input, code]) => `${name} ${where} ${JSON.stringify(input['placement'] ?? {})}: ${code}`,
      ),
    );
  });

  it('a-admin cannot declare VMs or pools into b’s names or b’s cluster, nor from b’s VM', async () => {
    const { clusters } = sim.oracle;
    const clusterId = gid(
      'Cluster',
      'vc',
      Object.keys(clusters).find((c) => clusters[c]!.name === 'DC0_C0')!,
    );
    const spec = { vcpus: 1, memoryMiB: 64, runStrategy: 'MANUAL' };
    // a's pool as beforeAll applied it: applied again, it is accepted and nothing changes.
    const ownPool = {
      platformId: PLATFORM.kvm,
      name: 'web-pool',
      replicas: 1,
      sourceId: vmNamed('web-005').id,
      namePattern: 'web-pool-{n:2}',
      cloneMode: 'LINKED',
      spec: { runStrategy: 'MANUAL' },
    };
    const attempts: [string, string, Record<string, unknown>, string][] = [
      ['into b’s names', 'applyVm', { platformId: PLATFORM.kvm, name: 'cache-802', spec }, 'FORBIDDEN'],
      [
        'into b’s cluster',
        'applyVm',
        { platformId: PLATFORM.vc, name: 'DC0_H0_VM8', spec: { ...spec, placement: { clusterId } } },
        'FORBIDDEN',
      ],
      ['into b’s names', 'applyVmPool', { ...ownPool, name: 'acl-b', namePattern: 'batch-8{n:2}' }, 'FORBIDDEN'],
      ['from b’s VM', 'applyVmPool', { ...ownPool, name: 'acl-b', sourceId: vmNamed('cache-003').id }, 'NOT_FOUND'],
      [
        'from b’s VM',
        'applyVmPool',
        { ...ownPool, platformId: PLATFORM.vc, name: 'acl-b', sourceId: vmNamed('DC0_C0_RP0_VM0').id },
        'NOT_FOUND',
      ],
      // Within a's own names the check lets them through: as they are, they change nothing.
      ['within a’s names', 'applyVm', { platformId: PLATFORM.kvm, name: DECLARED.kvm, spec: declaredSpec }, ''],
      ['within a’s names', 'applyVmPool', ownPool, ''],
    ];
    const outcomes = [];
    for (const [where, name, input] of attempts) {
      const payload = await runMutation('a-admin', name, input);
      outcomes.push(`${name} ${where}: ${payload.userErrors.map((e) => e.code).join()}`);
      if (where !== 'within a’s names')
        expect([payload.declaration ?? null, payload.pool ?? null]).toEqual([null, null]);
      else if (name === 'applyVm')
        expect(payload.declaration).toMatchObject({ name: DECLARED.kvm, spec: { generation: 1 } });
      else expect(payload.pool).toEqual({ id: poolsOf.a[0], name: 'web-pool' });
    }
    expect(outcomes).toEqual(attempts.map(([where, name, , code]) => `${name} ${where}: ${code}`));
    // Nothing was declared beside a's own, in a's view or in b's; a's pool is as it was.
    const query = `query($pool: ID!) {
      vmDeclarations { nodes { name } } vmPools { nodes { id } } vmPool(id: $pool) { generation replicas }
    }`;
    const seen = async (who: CallerName) => {
      const d = await ok<{
        vmDeclarations: { nodes: { name: string }[] };
        vmPools: { nodes: { id: string }[] };
        vmPool: { generation: number; replicas: number } | null;
      }>(who, query, { pool: poolsOf.a[0] });
      return {
        declarations: d.vmDeclarations.nodes.map((n) => n.name).sort(),
        pools: d.vmPools.nodes.map((n) => n.id),
        pool: d.vmPool,
      };
    };
    expect(await seen('a-admin')).toEqual({
      declarations: [...declarationsOf.a].sort(),
      pools: poolsOf.a,
      pool: { generation: 1, replicas: 1 },
    });
    expect(await seen('b-operator')).toEqual({ declarations: [], pools: [], pool: null });
  });

  it('cancelTask of b’s task as a-operator is NOT_FOUND, as for a task that does not exist', async () => {
    const theirs = await runMutation('a-operator', 'cancelTask', { taskId: tasksOf.b[0] });
    const nothing = await runMutation('a-operator', 'cancelTask', { taskId: fakeTaskId() });
    expect(theirs.userErrors.map((e) => e.code)).toEqual(['NOT_FOUND']);
    expect(theirs.userErrors).toEqual(nothing.userErrors);
  });
});

describe('subscriptions deliver only events about the caller’s VMs', () => {
  it('a-viewer hears of a’s VMs changing, on both platforms, and of nothing of b’s, live or replayed', async () => {
    const viewer = as['a-viewer'];
    const vm = viewer.subscribe<{ vmChanged: { cursor: string; vmId: string | null } }>(SUBSCRIPTIONS['vmChanged']!);
    const inventory = viewer.subscribe(SUBSCRIPTIONS['inventoryChanged']!);
    const tasks = viewer.subscribe(SUBSCRIPTIONS['taskUpdated']!);
    const status = viewer.subscribe(SUBSCRIPTIONS['platformStatusChanged']!);
    const bOnly = viewer.subscribe(SUBSCRIPTIONS['vmChanged']!, {
      f: { vmIds: [vmNamed('cache-003').id, vmNamed('DC0_C0_RP0_VM0').id] },
    });
    const all = [vm, inventory, tasks, status, bOnly];
    try {
      await new Promise((r) => setTimeout(r, 300));
      const aKvm = vmNamed('db-010');
      const aVc = vmNamed('DC0_H0_VM0');
      await togglePower('a-operator', aKvm.id);
      await eventually(() => vm.events.some((e) => e.vmChanged.vmId === aKvm.id));
      const before = vm.events.find((e) => e.vmChanged.vmId === aKvm.id)!.vmChanged.cursor;

      // b's VMs change, then a's: were b's delivered, they would be in before a's.
      const bTasks = [
        await togglePower('b-operator', vmNamed('cache-003').id),
        await togglePower('b-operator', vmNamed('DC0_C0_RP0_VM0').id),
      ];
      const snapshot = await runMutation('b-operator', 'createSnapshot', {
        vmId: vmNamed('batch-008').id,
        name: 'acl-b-live',
      });
      expect(snapshot.userErrors).toEqual([]);
      bTasks.push((await finished('b-operator', snapshot.task!.id)).id);
      const aTask = await togglePower('a-operator', aVc.id);
      await eventually(() => vm.events.some((e) => e.vmChanged.vmId === aVc.id), 10_000);
      await eventually(() => JSON.stringify(tasks.events).includes(aTask), 10_000);
      await eventually(() => JSON.stringify(inventory.events).includes(aVc.id), 10_000);
      await new Promise((r) => setTimeout(r, 500));

      for (const s of all) expect(s.errors).toEqual([]);
      expect(leaks(vm.events, 'a')).toEqual([]);
      expect(leaks(inventory.events, 'a')).toEqual([]);
      expect(leaks(tasks.events, 'a')).toEqual([]);
      expect(JSON.stringify(tasks.events)).not.toMatch(new RegExp(bTasks.join('|')));
      expect(leaks(status.events, 'a')).toEqual([]);
      expect(bOnly.events).toEqual([]);

      // Resumed from before b's changes: the history is filtered as the live stream is.
      const replay = viewer.subscribe<{ vmChanged: { vmId: string | null } }>(SUBSCRIPTIONS['vmChanged']!, {
        after: before,
      });
      all.push(replay);
      await eventually(() => replay.events.some((e) => e.vmChanged.vmId === aVc.id), 10_000);
      await new Promise((r) => setTimeout(r, 200));
      expect(replay.errors).toEqual([]);
      expect(leaks(replay.events, 'a')).toEqual([]);
    } finally {
      await Promise.all(all.map((s) => s.close()));
    }
  });

  /** The errors a subscription is refused with. */
  async function refusal(who: CallerName, field: string, variables: Record<string, unknown>) {
    const sub = as[who].subscribe(SUBSCRIPTIONS[field]!, variables);
    try {
      await eventually(() => sub.errors.length > 0);
      return sub.errors as { message: string; extensions?: Record<string, unknown> }[];
    } finally {
      await sub.close();
    }
  }
  /** An error with one ID (or platform name) in it replaced, to compare two refusals. */
  const without = (errors: { message: string; extensions?: Record<string, unknown> }[], id: string) =>
    JSON.parse(JSON.stringify(errors).replaceAll(id, 'X')) as unknown;

  it('vmMetrics refuses b’s VM IDs as unknown, as IDs of no VM', async () => {
    for (const platform of ['kvm', 'vc'] as const) {
      const theirs = firstForeign(viewOf('a-viewer'), platform).id;
      const fake = fakeVmId(platform);
      const refused = await refusal('a-viewer', 'vmMetrics', { ids: [theirs] });
      expect(without(refused, theirs)).toEqual(without(await refusal('a-viewer', 'vmMetrics', { ids: [fake] }), fake));
      expect(JSON.stringify(refused)).toContain('BAD_USER_INPUT');
    }
  });

  it('hostMetrics refuses, for a caller of no tenant, a host as one that does not exist', async () => {
    const fake = gid('Host', 'kvm', 'no-such-host');
    const refused = await refusal('nobody', 'hostMetrics', { ids: [kvmHostId] });
    expect(without(refused, kvmHostId)).toEqual(without(await refusal('nobody', 'hostMetrics', { ids: [fake] }), fake));
  });

  it.each(['vmChanged', 'platformStatusChanged'])(
    '%s refuses, for a caller of no tenant, a platform as one that is not configured',
    async (field) => {
      const vars = (p: string) => (field === 'vmChanged' ? { f: { platformIds: [p] } } : { p: [p] });
      const refused = await refusal('nobody', field, vars(PLATFORM.kvm));
      expect(JSON.stringify(refused)).toContain('UNKNOWN_PLATFORM');
      expect(without(refused, 'kvm')).toEqual(without(await refusal('nobody', field, vars(GHOST_PLATFORM)), 'ghost'));
    },
  );
});

describe('the estate’s gauges for Prometheus', () => {
  it('show each caller the VMs of its own tenant only', async () => {
    const url = gw.url.replace(/\/graphql$/, '/metrics/estate');
    const scrape = async (who: CallerName) => {
      const res = await fetch(url, { headers: { authorization: `Bearer ${TOKENS[who].token}` } });
      // A caller of no tenant may as well be refused.
      if (res.status === 403 && !TENANT_OF[who]) return [];
      expect(res.status, who).toBe(200);
      const text = await res.text();
      return text.split('\n').filter((l) => l.startsWith('virtgraph_vm_'));
    };
    // Sampled on the estate's interval: wait for the gauges of a's running VM on the vCenter (libvirt's
    // test driver gives no VM samples).
    await eventually(async () => (await scrape('a-viewer')).some((l) => l.includes('vm="DC0_H0_VM1"')), 30_000);
    for (const who of ['a-viewer', 'b-operator', 'nobody', 'auditor'] as const) {
      const lines = await scrape(who);
      const names = [...new Set(lines.map((l) => /vm="([^"]+)"/.exec(l)?.[1] ?? '?'))].sort();
      expect(
        names.filter((n) => byName.get(n)?.tenant !== TENANT_OF[who]),
        `${who} scrapes`,
      ).toEqual([]);
    }
  }, 40_000);
});

describe('WebSocket answers as HTTP does', () => {
  // The first row of a few fields: lists, IDs, nesting, tasks, and a refusal.
  const rows = ['virtualMachines', 'node', 'nodes', 'hosts', 'tasks', 'auditLog'].map(
    (field) => QUERY_ROWS.find((r) => r.field === field) ?? expect.fail(`no row for ${field}`),
  );
  const cases = rows.flatMap((row) =>
    (['a-viewer', 'b-operator'] as const).map((who) => ({ row, who, name: `${row.field}: ${row.title} (${who})` })),
  );

  it.each(cases)('$name', async ({ row, who }) => {
    const v = viewOf(who);
    const variables = row.variables?.(v);
    const [http, ws] = await Promise.all([as[who].http(row.query, variables), as[who].ws(row.query, variables)]);
    expect(codesOf(ws)).toEqual(row.errors?.(v) ?? []);
    expect(leaks(ws, v.tenant)).toEqual([]);
    // Made-up IDs differ between the two; names and counts must not.
    expect(namesIn(ws.data)).toEqual(namesIn(http.data));
    expect(valuesOf(ws.data, 'totalCount')).toEqual(valuesOf(http.data, 'totalCount'));
  });
});

describe('moving a VM between tenants (last: it moves one)', () => {
  it('a-admin cannot migrate a’s VM onto a host of b’s cluster', async () => {
    const { hosts } = sim.oracle;
    const hostId = gid(
      'Host',
      'vc',
      Object.keys(hosts).find((h) => hosts[h]!.name === 'DC0_C0_H0')!,
    );
    const moved = await runMutation('a-admin', 'migrateVm', { vmId: vmNamed('DC0_H0_VM0').id, hostId });
    if (moved.task) await finished('a-admin', moved.task.id);
    expect(moved.userErrors.map((e) => e.code)).toEqual(['FORBIDDEN']);
  });
});

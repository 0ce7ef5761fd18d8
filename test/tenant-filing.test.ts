import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { invokeTask, invokeVoid } from '../src/datasources/vsphere/vim.js';
import { elementXml, moRefOf, moRefXml } from '../src/datasources/vsphere/xml.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { type CallerClient, apiToken, callerClient } from './helpers/callers.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { type Vcsim, adminSession, startVcsim, vspherePlatform } from './helpers/vcsim.js';

// Tenants that select VMs by where they are filed rather than by name or
// host: vSphere folders and resource pools (by inventory path, the VMs in
// them and below them) and libvirt tags (kept in a domain's metadata, as
// any libvirt tool can write them). Reads, creates and clones each follow
// the filing, and a VM moved into a folder behind the gateway's back joins
// the folder's tenant.

const CALLERS = ['root', 'a-admin', 'b-viewer', 'pool-viewer', 'folder-admin'] as const;
type CallerName = (typeof CALLERS)[number];
const TOKENS = Object.fromEntries(CALLERS.map((name) => [name, apiToken(name)])) as Record<
  CallerName,
  ReturnType<typeof apiToken>
>;

const RP1 = '/DC0/host/DC0_C0/Resources/DC0_C0_RP1';
const TEAM_FOLDER = '/DC0/vm/team';

/** Tags of the estate's VMs: a third team-a (two of them shut off), a third team-b, the rest none. */
const tagsOfEstateVm = (name: string): string[] => {
  const n = Number(name.slice(-3));
  return n % 3 === 2 ? ['team-a'] : n % 3 === 1 ? ['team-b', 'shared'] : [];
};

let sim: Vcsim;
let gw: TestGateway;
let as: Record<CallerName, CallerClient>;
const platformId = (id: 'kvm' | 'vc') => Buffer.from(`v1:Platform:${id}:${id}`).toString('base64url');

interface Vm {
  id: string;
  name: string;
  powerState: string;
  tags: string[];
  vsphere: { folderPath: string | null; resourcePoolPath: string | null } | null;
}
interface Payload {
  task: { id: string } | null;
  userErrors: { code: string; field: string[] | null; message: string }[];
}

async function ok<T>(who: CallerName, query: string, variables?: Record<string, unknown>): Promise<T> {
  const res = await as[who].http<T>(query, variables);
  expect(res.errors, `${who}: ${JSON.stringify(res.errors)}`).toBeUndefined();
  return res.data as T;
}

async function vmsSeenBy(who: CallerName, platform: 'kvm' | 'vc'): Promise<Vm[]> {
  const { virtualMachines } = await ok<{ virtualMachines: { totalCount: number; nodes: Vm[] } }>(
    who,
    `query($p: [ID!]) { virtualMachines(first: 1000, filter: { platformIds: $p }) {
      totalCount nodes { id name powerState tags vsphere { folderPath resourcePoolPath } }
    } }`,
    { p: [platformId(platform)] },
  );
  expect(virtualMachines.totalCount).toBe(virtualMachines.nodes.length);
  return virtualMachines.nodes;
}
const names = (vms: readonly { name: string }[]) => vms.map((v) => v.name).sort();

async function mutate(who: CallerName, mutation: string, inputType: string, input: Record<string, unknown>) {
  const data = await ok<{ m: Payload }>(
    who,
    `mutation($input: ${inputType}!) { m: ${mutation}(input: $input) { task { id } userErrors { code field message } } }`,
    { input },
  );
  return data.m;
}

/** Retries a check that asserts until it passes (or the time is up, with its last failure). */
async function until(check: () => Promise<void>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Waits for a task as a caller who may see it; returns its end state, error and the VM it made. */
async function finished(who: CallerName, taskId: string) {
  let task: { state: string; error: { message: string } | null; resultVm: Vm | null } | null = null;
  await until(async () => {
    ({ task } = await ok<{ task: typeof task }>(
      who,
      `query($id: ID!) { task(id: $id) { state error { message }
        resultVm { id name powerState tags vsphere { folderPath resourcePoolPath } } } }`,
      { id: taskId },
    ));
    expect(task?.state).toMatch(/SUCCEEDED|FAILED|CANCELLED/);
  }, 30_000);
  return task!;
}

beforeAll(async () => {
  const estate = writeEstate({ vms: 9, tags: tagsOfEstateVm });
  sim = await startVcsim({ pool: 1 });
  gw = await startTestGateway({
    platforms: [{ id: 'kvm', kind: 'libvirt', uri: estate.uri }, vspherePlatform(sim, { id: 'vc' })],
    auth: {
      apiTokens: CALLERS.map((name) => TOKENS[name].entry),
      tenants: {
        'a-tags': { platforms: ['kvm'], tags: ['team-a'] },
        'b-tags': { platforms: ['kvm'], tags: ['team-b'] },
        'batch-pool': { platforms: ['vc'], resourcePools: [RP1] },
        'team-folder': { platforms: ['vc'], folders: [TEAM_FOLDER] },
      },
      bindings: [
        { subjects: ['token:root'], roles: ['admin'], tenants: ['*'] },
        { subjects: ['token:a-admin'], roles: ['admin'], tenants: ['a-tags'] },
        { subjects: ['token:b-viewer'], roles: ['viewer'], tenants: ['b-tags'] },
        { subjects: ['token:pool-viewer'], roles: ['viewer'], tenants: ['batch-pool'] },
        { subjects: ['token:folder-admin'], roles: ['admin'], tenants: ['team-folder'] },
      ],
    },
  });
  as = Object.fromEntries(CALLERS.map((name) => [name, callerClient(gw.url, name, TOKENS[name].token)])) as Record<
    CallerName,
    CallerClient
  >;
}, 120_000);

afterAll(async () => {
  await gw?.close();
  await sim?.stop();
});

describe('vSphere folders and resource pools', () => {
  it('files every VM by the inventory paths of its folder and resource pool', async () => {
    const vms = await vmsSeenBy('root', 'vc');
    expect(vms.length).toBe(Object.keys(sim.oracle.vms).length);
    for (const vm of vms) {
      expect(vm.vsphere?.folderPath, vm.name).toBe('/DC0/vm');
      expect(vm.tags).toEqual([]);
    }
    const byName = new Map(vms.map((v) => [v.name, v]));
    expect(byName.get('DC0_H0_VM0')?.vsphere?.resourcePoolPath).toBe('/DC0/host/DC0_H0/Resources');
    expect(byName.get('DC0_C0_RP0_VM0')?.vsphere?.resourcePoolPath).toBe('/DC0/host/DC0_C0/Resources');
  });

  it('creates a VM into a resource pool by path, and shows the pool’s tenant exactly what govmomi places there', async () => {
    expect(await vmsSeenBy('pool-viewer', 'vc')).toEqual([]);
    // The pool names its cluster: no clusterId needed.
    const made = await mutate('root', 'createVm', 'CreateVmInput', {
      platformId: platformId('vc'),
      name: 'batch-1',
      memoryMiB: 256,
      placement: { resourcePool: RP1 },
    });
    expect(made.userErrors).toEqual([]);
    const task = await finished('root', made.task!.id);
    expect(task.state, JSON.stringify(task.error)).toBe('SUCCEEDED');
    expect(task.resultVm?.vsphere).toEqual({ folderPath: '/DC0/vm', resourcePoolPath: RP1 });

    const oracle = Object.values((await sim.refreshOracle()).vms);
    const pool = oracle.find((v) => v.name === 'batch-1')!.resourcePool;
    const expected = oracle.filter((v) => v.resourcePool === pool).map((v) => v.name);
    await until(async () => expect(names(await vmsSeenBy('pool-viewer', 'vc'))).toEqual(expected.sort()));
    const kvm = await as['pool-viewer'].http(
      'query($p: [ID!]) { virtualMachines(filter: { platformIds: $p }) { totalCount } }',
      {
        p: [platformId('kvm')],
      },
    );
    expect(kvm.errors?.map((e) => e.extensions?.['code'])).toEqual(['UNKNOWN_PLATFORM']);
    const outside = (await vmsSeenBy('root', 'vc')).find((v) => v.name === 'DC0_H0_VM0')!;
    expect(await ok('pool-viewer', 'query($id: ID!) { node(id: $id) { id } }', { id: outside.id })).toEqual({
      node: null,
    });
  });

  it('lets a VM moved into a folder behind the gateway’s back join the folder’s tenant', async () => {
    expect(await vmsSeenBy('folder-admin', 'vc')).toEqual([]);
    const admin = await adminSession(sim);
    try {
      const [dc] = await admin.retrieveAll([{ type: 'Datacenter', paths: ['vmFolder'] }]);
      const vmFolder = moRefOf(dc!.props.get('vmFolder'))!;
      await invokeVoid(admin.client, 'CreateFolder', vmFolder, elementXml('name', 'team'));
      const folders = await admin.retrieveAll([{ type: 'Folder', paths: ['name'] }]);
      const team = folders.find((f) => f.props.get('name')?.text === 'team')!.obj;
      const moref = Object.entries(sim.oracle.vms).find(([, v]) => v.name === 'DC0_H0_VM0')![0];
      await admin.tasks.wait(
        await invokeTask(
          admin.client,
          'MoveIntoFolder_Task',
          team,
          moRefXml('list', { type: 'VirtualMachine', value: moref }),
        ),
        { progress: () => {}, upstreamTask: () => {} },
      );
    } finally {
      await admin.close();
    }
    await until(async () => {
      const seen = await vmsSeenBy('folder-admin', 'vc');
      expect(seen.map((v) => [v.name, v.vsphere?.folderPath])).toEqual([['DC0_H0_VM0', TEAM_FOLDER]]);
    }, 20_000);
  });

  it('creates and clones into the folder’s tenant only what is filed there', async () => {
    const { clusters } = await ok<{ clusters: { nodes: { id: string }[] } }>(
      'folder-admin',
      '{ clusters(first: 1) { nodes { id } } }',
    );
    const create = (placement: Record<string, unknown>, name: string, extra: Record<string, unknown> = {}) =>
      mutate('folder-admin', 'createVm', 'CreateVmInput', {
        platformId: platformId('vc'),
        name,
        memoryMiB: 256,
        placement: { clusterId: clusters.nodes[0]!.id, ...placement },
        ...extra,
      });
    // Unfiled, or filed elsewhere: not a VM of the tenant's.
    expect((await create({}, 'team-loose')).userErrors.map((e) => e.code)).toEqual(['FORBIDDEN']);
    expect((await create({ folder: '/DC0/vm' }, 'team-loose')).userErrors.map((e) => e.code)).toEqual(['FORBIDDEN']);
    // vSphere has no tags here.
    const tagged = await create({ folder: TEAM_FOLDER }, 'team-tagged', { tags: ['x'] });
    expect(tagged.userErrors).toMatchObject([{ code: 'INVALID_INPUT', field: ['placement'] }]);
    // A folder below the tenant's that does not exist: the task says so.
    const missing = await create({ folder: `${TEAM_FOLDER}/nope` }, 'team-missing');
    expect(missing.userErrors).toEqual([]);
    const failed = await finished('folder-admin', missing.task!.id);
    expect(failed.state).toBe('FAILED');
    expect(failed.error?.message).toContain(`no folder at ${TEAM_FOLDER}/nope`);

    const made = await create({ folder: TEAM_FOLDER, resourcePool: '/DC0/host/DC0_C0/Resources' }, 'team-new');
    expect(made.userErrors).toEqual([]);
    const done = await finished('folder-admin', made.task!.id);
    expect(done.state, JSON.stringify(done.error)).toBe('SUCCEEDED');
    expect(done.resultVm?.vsphere).toEqual({ folderPath: TEAM_FOLDER, resourcePoolPath: '/DC0/host/DC0_C0/Resources' });

    // A copy stays in its source's folder unless told otherwise.
    const source = (await vmsSeenBy('folder-admin', 'vc')).find((v) => v.name === 'DC0_H0_VM0')!;
    const copied = await mutate('folder-admin', 'cloneVm', 'CloneVmInput', { vmId: source.id, name: 'team-copy' });
    expect(copied.userErrors).toEqual([]);
    const copy = await finished('folder-admin', copied.task!.id);
    expect(copy.state, JSON.stringify(copy.error)).toBe('SUCCEEDED');
    expect(copy.resultVm?.vsphere?.folderPath).toBe(TEAM_FOLDER);
    const away = await mutate('folder-admin', 'cloneVm', 'CloneVmInput', {
      vmId: source.id,
      name: 'team-away',
      placement: { folder: '/DC0/vm' },
    });
    expect(away.userErrors.map((e) => e.code)).toEqual(['FORBIDDEN']);
    await until(async () => {
      expect(names(await vmsSeenBy('folder-admin', 'vc'))).toEqual(['DC0_H0_VM0', 'team-copy', 'team-new']);
    }, 20_000);
  });
});

describe('libvirt tags', () => {
  it('reads tags written into the metadata by another tool, and shows each tenant its tagged VMs', async () => {
    const all = await vmsSeenBy('root', 'kvm');
    for (const vm of all) expect(vm.tags, vm.name).toEqual(tagsOfEstateVm(vm.name));
    const tagged = (tag: string) => names(all.filter((v) => v.tags.includes(tag)));
    expect(names(await vmsSeenBy('a-admin', 'kvm'))).toEqual(tagged('team-a'));
    expect(names(await vmsSeenBy('b-viewer', 'kvm'))).toEqual(tagged('team-b'));
  });

  it('creates a VM with tags into the tenant, and refuses one without them', async () => {
    const create = (name: string, extra: Record<string, unknown>) =>
      mutate('a-admin', 'createVm', 'CreateVmInput', { platformId: platformId('kvm'), name, memoryMiB: 64, ...extra });
    expect((await create('untagged-1', {})).userErrors.map((e) => e.code)).toEqual(['FORBIDDEN']);
    expect((await create('other-1', { tags: ['team-b'] })).userErrors.map((e) => e.code)).toEqual(['FORBIDDEN']);
    const bad = await create('bad-1', { tags: ['has space'] });
    expect(bad.userErrors).toMatchObject([{ code: 'INVALID_INPUT', field: ['tags'] }]);
    const foldered = await create('folder-1', { tags: ['team-a'], placement: { folder: '/DC0/vm' } });
    expect(foldered.userErrors).toMatchObject([{ code: 'INVALID_INPUT', field: ['placement'] }]);

    const made = await create('tagged-1', { tags: ['team-a', 'extra', 'team-a'] });
    expect(made.userErrors).toEqual([]);
    const task = await finished('a-admin', made.task!.id);
    expect(task.state, JSON.stringify(task.error)).toBe('SUCCEEDED');
    expect(task.resultVm?.tags).toEqual(['team-a', 'extra']);
    // Neither the VM nor the task that made it is b's to see.
    expect(await ok('b-viewer', 'query($id: ID!) { node(id: $id) { id } }', { id: task.resultVm!.id })).toEqual({
      node: null,
    });
    expect(await ok('b-viewer', 'query($id: ID!) { task(id: $id) { id } }', { id: made.task!.id })).toEqual({
      task: null,
    });
  });

  it('clones with the source’s tags unless given others, and only into the caller’s tenant', async () => {
    const source = (await vmsSeenBy('a-admin', 'kvm')).find((v) => v.powerState === 'OFF' && v.name !== 'tagged-1');
    expect(source, 'a stopped team-a VM to clone').toBeDefined();
    const elsewhere = await mutate('a-admin', 'cloneVm', 'CloneVmInput', {
      vmId: source!.id,
      name: 'copy-b',
      tags: ['team-b'],
    });
    expect(elsewhere.userErrors.map((e) => e.code)).toEqual(['FORBIDDEN']);
    const kept = await mutate('a-admin', 'cloneVm', 'CloneVmInput', { vmId: source!.id, name: 'copy-a' });
    expect(kept.userErrors).toEqual([]);
    const copy = await finished('a-admin', kept.task!.id);
    expect(copy.state, JSON.stringify(copy.error)).toBe('SUCCEEDED');
    expect(copy.resultVm?.tags).toEqual(['team-a']);
    const retagged = await mutate('a-admin', 'cloneVm', 'CloneVmInput', {
      vmId: source!.id,
      name: 'copy-a2',
      tags: ['team-a', 'pci'],
    });
    const second = await finished('a-admin', retagged.task!.id);
    expect(second.resultVm?.tags).toEqual(['team-a', 'pci']);
  });
});

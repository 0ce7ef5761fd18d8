import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { LibvirtProvider } from '../src/datasources/libvirt/provider.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { type Querier, declarations, holdsFor, until } from './helpers/declarations.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { type GatewayProcess, spawnGateway } from './helpers/gateway-process.js';
import { startSoapProxy } from './helpers/soap-proxy.js';
import { type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';
import {
  POOL_COUNTS,
  type PoolCounts,
  type PoolRow,
  accepted,
  applyVmPool,
  deleteVmPool,
  numbered,
  scaleVmPool,
  settled,
  vmPool,
  vmPools,
  vmsStartingWith,
} from './helpers/vm-pools.js';

// VM pools (applyVmPool, scaleVmPool, deleteVmPool): the reconciler keeps a
// pool's members as declared VMs cloned from its source. Checked against
// the platforms' own views: govmomi's oracle for VMware's simulator, and
// the volume XML libvirt's test driver keeps for a linked clone's disk.

/** Fast for tests: a resync every second, short backoffs, 8 clones at once. */
const RECONCILER = { resyncSeconds: 1, backoffInitialMs: 200, backoffMaxMs: 2_000, maxConcurrentActions: 8 };

/** The platforms' global IDs by their configured names. */
async function platformIds(gw: Querier): Promise<Record<string, string>> {
  const res = await gw.query<{ platforms: { id: string; name: string }[] }>('{ platforms { id name } }');
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return Object.fromEntries(res.data!.platforms.map((p) => [p.name, p.id]));
}

async function synced(gw: Querier): Promise<void> {
  await until(
    'every live inventory is SYNCED',
    async () =>
      (await gw.query<{ platforms: { inventoryState: string }[] }>('{ platforms { inventoryState } }')).data?.platforms,
    (ps) => ps !== undefined && ps.length > 0 && ps.every((p) => p.inventoryState === 'SYNCED'),
    20_000,
  );
}

/** The simulator's VMs whose names start with `prefix`, as govmomi reads them now: name -> [power state of each]. */
async function simVmsStartingWith(sim: Vcsim, prefix: string): Promise<Map<string, string[]>> {
  const oracle = await sim.refreshOracle();
  const byName = new Map<string, string[]>();
  for (const vm of Object.values(oracle.vms)) {
    if (vm.name.startsWith(prefix)) byName.set(vm.name, [...(byName.get(vm.name) ?? []), vm.powerState]);
  }
  return new Map([...byName].sort(([a], [b]) => a.localeCompare(b)));
}

/**
 * Waits for a pool with all its replicas and standbys ready; the whole pool
 * then. `pauseMs`: then waits that long (a resync or so, in which the
 * reconciler records each new member as made) and for it to be so again.
 */
async function settledPool(
  gw: Querier,
  id: string,
  warmStandbys: number,
  what: string,
  timeoutMs = 30_000,
  pauseMs = 0,
) {
  const probe = () => vmPool<PoolCounts>(gw, id, POOL_COUNTS);
  await until(what, probe, (p) => settled(p, warmStandbys), timeoutMs, 100);
  if (pauseMs > 0) {
    await new Promise((r) => setTimeout(r, pauseMs));
    await until(`${what} (again)`, probe, (p) => settled(p, warmStandbys), 5_000, 100);
  }
  return (await vmPool(gw, id))!;
}

const codes = (p: { userErrors: { code: string }[] }) => p.userErrors.map((e) => e.code);

/** The one VM of a platform named `name` (none or more fails the test). */
async function vmOf(gw: Querier, platformId: string, name: string) {
  const found = (await vmsStartingWith(gw, name, platformId)).filter((v) => v.name === name);
  expect(
    found.map((v) => v.name),
    `VMs named ${name}`,
  ).toEqual([name]);
  return found[0]!;
}

describe('VM pools on vSphere and libvirt', () => {
  let sim: Vcsim;
  let gw: TestGateway;
  let vc: string;
  let lab: string;
  /** The simulator's VM the vSphere pools clone. */
  let vcSource: { id: string; name: string };
  /** A VM of the simulator that nothing clones until the snapshot test. */
  let freshSource: { id: string; name: string };
  const estate = writeEstate({ vms: 8 });

  beforeAll(async () => {
    // Two VMs: the pools' source, and a second one with no snapshot yet. Snapshots take 300 ms, as on
    // a real vCenter they take a while: LINKED clones that start together all find their source without one.
    sim = await startVcsim({
      dc: 1,
      cluster: 1,
      clusterHost: 2,
      host: 0,
      vm: 2,
      ds: 1,
      pg: 1,
      methodDelay: { CreateSnapshot_Task: 300 },
    });
    gw = await startTestGateway({
      reconciler: { ...RECONCILER, maxPoolReplicas: 20 },
      inventory: { retryInitialMs: 100, retryMaxMs: 500 },
      platforms: [
        vspherePlatform(sim, { requestTimeoutMs: 5_000, retryInitialMs: 100, retryMaxMs: 500 }),
        { id: 'lab', kind: 'libvirt', uri: estate.uri },
      ],
    });
    await synced(gw);
    ({ vc, lab } = (await platformIds(gw)) as { vc: string; lab: string });
    const [first, second] = Object.values(sim.oracle.vms)
      .filter((v) => !v.template)
      .map((v) => v.name)
      .sort();
    vcSource = await vmOf(gw, vc, first!);
    freshSource = await vmOf(gw, vc, second!);
  });
  afterAll(async () => {
    await gw?.close();
    await sim?.stop();
  });

  it('makes 10 clones, scales down to 3 by retiring the newest, and up to 6 with new numbers', async () => {
    const applied = accepted(
      await applyVmPool(gw, { platformId: vc, name: 'web', replicas: 10, sourceId: vcSource.id }),
      'applyVmPool web',
    );
    expect(applied).toMatchObject({
      name: 'web',
      replicas: 10,
      warmStandbys: 0,
      namePattern: 'web-{n:3}',
      cloneMode: 'LINKED',
      generation: 1,
      source: { id: vcSource.id },
      spec: { vcpus: null, memoryMiB: null, runStrategy: 'ALWAYS' },
    });

    const ready = await settledPool(gw, applied.id, 0, 'web: 10 replicas ready', 45_000, 1_500);
    expect(ready).toMatchObject({ replicas: 10, readyReplicas: 10, status: { phase: 'READY' } });
    expect(ready.status.conditions).toEqual([
      expect.objectContaining({ type: 'Ready', status: 'TRUE', reason: 'AllReplicasReady' }),
    ]);
    expect(ready.members.map((m) => m.name)).toEqual(numbered('web', 1, 10));
    expect(ready.vms.map((v) => v.name)).toEqual(numbered('web', 1, 10));
    expect(ready.vms.every((v) => v.powerState === 'ON')).toBe(true);
    expect(ready.members.every((m) => m.status.phase === 'RUNNING' && m.vm !== null)).toBe(true);
    // govmomi sees the same ten, one VM to a name, each running.
    const made = await simVmsStartingWith(sim, 'web-');
    expect([...made.keys()]).toEqual(numbered('web', 1, 10));
    expect([...made.values()]).toEqual(Array.from({ length: 10 }, () => ['poweredOn']));
    // The members are declared VMs: listed with the others, each VM carrying its spec.
    const declared = (await declarations(gw, vc)).nodes.map((d) => d.name).filter((n) => n.startsWith('web-'));
    expect(declared.sort()).toEqual(numbered('web', 1, 10));
    expect((await vmOf(gw, vc, 'web-001')).spec).toMatchObject({ runStrategy: 'ALWAYS', generation: 1 });

    // Down to 3: the seven newest go, on the simulator too.
    const down = accepted(await scaleVmPool(gw, { poolId: applied.id, replicas: 3 }), 'scale web to 3');
    expect(down).toMatchObject({ replicas: 3, generation: 2 });
    await settledPool(gw, applied.id, 0, 'web: 3 replicas ready');
    await until(
      'web-004..010 deleted (govmomi)',
      async () => [...(await simVmsStartingWith(sim, 'web-')).keys()],
      (names) => names.length === 3,
      30_000,
      250,
    );
    expect([...(await simVmsStartingWith(sim, 'web-')).keys()]).toEqual(numbered('web', 1, 3));
    const three = (await vmPool(gw, applied.id))!;
    expect(three.members.map((m) => m.name)).toEqual(numbered('web', 1, 3));
    expect(three.vms.map((v) => v.id)).toEqual(ready.vms.slice(0, 3).map((v) => v.id));
    await until(
      'the retired declarations dropped',
      async () => (await declarations(gw, vc)).nodes.map((d) => d.name).filter((n) => n.startsWith('web-')),
      (names) => names.length === 3,
      10_000,
      250,
    );

    // Up to 6: three new members, numbered after every number the pool has used.
    accepted(await scaleVmPool(gw, { poolId: applied.id, replicas: 6 }), 'scale web to 6');
    const six = await settledPool(gw, applied.id, 0, 'web: 6 replicas ready');
    expect(six.vms.slice(0, 3).map((v) => v.id)).toEqual(ready.vms.slice(0, 3).map((v) => v.id));
    const now = await simVmsStartingWith(sim, 'web-');
    expect(now.size).toBe(6);
    expect([...now.values()].every((p) => p.length === 1 && p[0] === 'poweredOn')).toBe(true);
    expect([...now.keys()]).toEqual(six.members.map((m) => m.name));
    // Numbers only grow: web-004..010 were used, so the new three are web-011..013.
    const expected = [...numbered('web', 1, 3), ...numbered('web', 11, 13)];
    expect(
      six.members.map((m) => m.name),
      'members after 10 -> 3 -> 6 (numbers only grow)',
    ).toEqual(expected);
  }, 90_000);

  it('hands out the oldest warm standby at once on a scale up, and clones a new standby', async () => {
    const applied = accepted(
      await applyVmPool(gw, { platformId: vc, name: 'warm', replicas: 2, warmStandbys: 2, sourceId: vcSource.id }),
      'applyVmPool warm',
    );
    const ready = await settledPool(gw, applied.id, 2, 'warm: 2 replicas and 2 standbys ready');
    expect(ready).toMatchObject({ replicas: 2, readyReplicas: 2, warmStandbys: 2, readyStandbys: 2 });
    expect(ready.members.map((m) => m.name)).toEqual(numbered('warm', 1, 2));
    expect(ready.standbys.map((m) => m.name)).toEqual(numbered('warm', 3, 4));
    // Standbys wait running.
    expect(ready.standbys.map((m) => m.vm?.powerState)).toEqual(['ON', 'ON']);
    const sims = await simVmsStartingWith(sim, 'warm-');
    expect([...sims.keys()]).toEqual(numbered('warm', 1, 4));
    expect([...sims.values()]).toEqual(Array.from({ length: 4 }, () => ['poweredOn']));
    const oldestStandby = ready.standbys[0]!;

    const scaledAt = performance.now();
    accepted(await scaleVmPool(gw, { poolId: applied.id, replicas: 3 }), 'scale warm to 3');
    // The standby is a member at once, with the VM it had: nothing was cloned for it.
    const handed = await until(
      'warm-003 handed out, 3 replicas ready',
      () => vmPool<PoolCounts>(gw, applied.id, POOL_COUNTS),
      (p) => p !== null && p.readyReplicas === 3 && p.members.some((m) => m.name === 'warm-003'),
      5_000,
      20,
    );
    const handedMs = performance.now() - scaledAt;
    expect(handed!.members.map((m) => m.name)).toEqual(numbered('warm', 1, 3));
    expect(handedMs, 'ms from scaleVmPool to 3 ready replicas').toBeLessThan(1_500);
    const promoted = (await vmPool(gw, applied.id))!.members[2]!;
    expect(promoted).toMatchObject({ name: 'warm-003', vm: { id: oldestStandby.vm!.id, powerState: 'ON' } });
    expect(promoted.spec.generation).toBe(oldestStandby.spec.generation + 1);

    // A new standby takes its place.
    const after = await settledPool(gw, applied.id, 2, 'warm: 3 replicas and 2 standbys ready');
    expect(after.members.map((m) => m.name)).toEqual(numbered('warm', 1, 3));
    expect(after.standbys.map((m) => m.name)).toEqual(['warm-004', 'warm-005']);
    const simsAfter = await simVmsStartingWith(sim, 'warm-');
    expect([...simsAfter.keys()]).toEqual(numbered('warm', 1, 5));
    expect([...simsAfter.values()]).toEqual(Array.from({ length: 5 }, () => ['poweredOn']));
  }, 60_000);

  it('takes one snapshot of a source without one for LINKED clones made together', async () => {
    const snapshotsOf = async (name: string) =>
      Object.values((await sim.refreshOracle()).vms)
        .filter((v) => v.name === name)
        .map((v) => v.snapshots ?? []);
    expect(await snapshotsOf(freshSource.name)).toEqual([[]]);
    const applied = accepted(
      await applyVmPool(gw, { platformId: vc, name: 'snap', replicas: 4, sourceId: freshSource.id }),
      'applyVmPool snap',
    );
    await settledPool(gw, applied.id, 0, 'snap: 4 LINKED replicas ready');
    expect([...(await simVmsStartingWith(sim, 'snap-')).keys()]).toEqual(numbered('snap', 1, 4));
    // The clones share one base: the source's current snapshot, taken once.
    expect(await snapshotsOf(freshSource.name), `snapshots of ${freshSource.name}`).toEqual([['linked-clone base']]);
  }, 30_000);

  it('makes LINKED clones backed by the source volume and FULL copies on libvirt', async () => {
    const provider = gw.registry.get('lab') as LibvirtProvider;
    const source = estate.vms.find((v) => v.rawState === 'shutoff')!;
    const sourceVm = await vmOf(gw, lab, source.name);
    expect(sourceVm.powerState).toBe('OFF');

    const linked = accepted(
      await applyVmPool(gw, {
        platformId: lab,
        name: 'lk',
        replicas: 3,
        sourceId: sourceVm.id,
        namePattern: 'lk-{n}',
        cloneMode: 'LINKED',
      }),
      'applyVmPool lk',
    );
    const full = accepted(
      await applyVmPool(gw, {
        platformId: lab,
        name: 'fc',
        replicas: 2,
        sourceId: sourceVm.id,
        cloneMode: 'FULL',
        spec: { memoryMiB: 512 },
      }),
      'applyVmPool fc',
    );
    expect(full).toMatchObject({ cloneMode: 'FULL', spec: { memoryMiB: 512, vcpus: null } });
    const lk = await settledPool(gw, linked.id, 0, 'lk: 3 LINKED replicas ready');
    const fc = await settledPool(gw, full.id, 0, 'fc: 2 FULL replicas ready');
    expect(lk.members.map((m) => m.name)).toEqual(['lk-1', 'lk-2', 'lk-3']);
    expect(fc.members.map((m) => m.name)).toEqual(['fc-001', 'fc-002']);
    expect(lk.vms.map((v) => v.name)).toEqual(['lk-1', 'lk-2', 'lk-3']);
    expect(fc.vms.map((v) => v.name)).toEqual(['fc-001', 'fc-002']);
    expect([...lk.vms, ...fc.vms].every((v) => v.powerState === 'ON')).toBe(true);

    interface DiskRow {
      device: string;
      target: string;
      source: string | null;
      format: string | null;
      volume: { name: string; path: string; format: string | null; pool: { name: string } } | null;
    }
    const disksOf = async (vmId: string) => {
      const res = await gw.query<{ node: { name: string; memoryMiB: number; disks: DiskRow[] } }>(
        `query($id: ID!) { node(id: $id) { ... on VirtualMachine {
          name memoryMiB disks { device target source format volume { name path format pool { name } } } } } }`,
        { id: vmId },
      );
      expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
      return res.data!.node;
    };
    /** The volume XML libvirt keeps for a path, read over the gateway's own connection. */
    const volumeXml = async (path: string) =>
      provider.withClient(async (c) => {
        const pools = await c.call('listAllStoragePools', 0);
        const perPool = await c.call(
          'listStorageVolumes',
          pools.map((p) => p.uuid),
        );
        const found = perPool.flatMap((vols) => (vols instanceof Error ? [] : vols)).find((v) => v.key === path);
        return found?.xml ?? null;
      });

    const sourceDisk = (await disksOf(sourceVm.id)).disks.find((d) => d.device === 'DISK')!;
    expect(sourceDisk.source).toBe(source.imagePath);
    for (const vm of lk.vms) {
      const disk = (await disksOf(vm.id)).disks.find((d) => d.device === 'DISK')!;
      // A new qcow2 volume of the source's pool...
      expect(disk).toMatchObject({
        target: 'vda',
        format: 'qcow2',
        source: `/var/lib/virt-graph/images/${vm.name}-disk1.qcow2`,
        volume: { format: 'qcow2', pool: { name: 'images' } },
      });
      // ...whose backing store is the source's volume (the schema shows no backing store: libvirt's XML does).
      const xml = await volumeXml(disk.source!);
      expect(xml, `volume XML of ${disk.source}`).toMatch(
        new RegExp(
          `<backingStore>\\s*<path>${source.imagePath.replace(/\./g, '\\.')}</path>\\s*<format type='qcow2'/>`,
        ),
      );
    }
    for (const vm of fc.vms) {
      const node = await disksOf(vm.id);
      expect(node.memoryMiB).toBe(512);
      const disk = node.disks.find((d) => d.device === 'DISK')!;
      expect(disk).toMatchObject({ target: 'vda', source: `/var/lib/virt-graph/images/${vm.name}-disk1.qcow2` });
      const xml = await volumeXml(disk.source!);
      expect(xml, `volume XML of ${disk.source}`).not.toBeNull();
      // A copy stands alone.
      expect(xml).not.toContain('<backingStore>');
    }
  }, 60_000);

  it('scales a libvirt pool down and up again, its new members on new volumes', async () => {
    const lk = (await vmPools(gw, lab)).nodes.find((p) => p.name === 'lk')!;
    accepted(await scaleVmPool(gw, { poolId: lk.id, replicas: 1 }), 'scale lk to 1');
    await settledPool(gw, lk.id, 0, 'lk: 1 replica ready');
    await until(
      'lk-2 and lk-3 deleted',
      async () => (await vmsStartingWith(gw, 'lk-', lab)).map((v) => v.name),
      (names) => names.length === 1,
      10_000,
    );
    expect((await vmsStartingWith(gw, 'lk-', lab)).map((v) => v.name)).toEqual(['lk-1']);

    accepted(await scaleVmPool(gw, { poolId: lk.id, replicas: 3 }), 'scale lk to 3');
    await until(
      'lk: 3 replicas ready again',
      () => vmPool<PoolCounts>(gw, lk.id, POOL_COUNTS),
      (p) => settled(p, 0),
      6_000,
      250,
    ).catch(async (e: unknown) => {
      const p = await vmPool(gw, lk.id);
      throw new Error(
        `${(e as Error).message.split(';')[0]}; members: ${JSON.stringify(
          p?.members.map((m) => ({ name: m.name, converged: m.status.conditions.find((c) => c.type === 'Converged') })),
        )}`,
      );
    });
    // Numbers only grow: lk-2 and lk-3 are not made again (their disks, which deleteVm leaves, are still there).
    expect((await vmPool(gw, lk.id))!.members.map((m) => m.name)).toEqual(['lk-1', 'lk-4', 'lk-5']);
  }, 30_000);

  it('reports WrongState for LINKED clones of a running libvirt source, and deletes the pool it cannot fill', async () => {
    const running = estate.vms.find((v) => v.rawState === 'running')!;
    const sourceVm = await vmOf(gw, lab, running.name);
    expect(sourceVm.powerState).toBe('ON');
    const applied = accepted(
      await applyVmPool(gw, { platformId: lab, name: 'hot', replicas: 1, sourceId: sourceVm.id }),
      'applyVmPool hot',
    );
    await until(
      'hot-001 refused as WrongState',
      () => vmPool<Pick<PoolRow, 'members'>>(gw, applied.id, 'members { status { conditions { type reason } } }'),
      (p) => p?.members[0]?.status.conditions.some((c) => c.type === 'Converged' && c.reason === 'WrongState') === true,
      10_000,
    );
    const stuck = await vmPool(gw, applied.id);
    expect(stuck).toMatchObject({ readyReplicas: 0, status: { phase: 'SCALING' }, members: [{ vm: null }] });
    expect(stuck!.status.conditions).toEqual([expect.objectContaining({ type: 'Ready', status: 'FALSE' })]);
    expect(await vmsStartingWith(gw, 'hot-', lab)).toEqual([]);

    accepted(await deleteVmPool(gw, { poolId: applied.id, deleteVms: true }), 'deleteVmPool hot');
    await until(
      'pool hot gone',
      () => vmPool(gw, applied.id, 'id'),
      (p) => p === null,
      10_000,
    );
    expect((await declarations(gw, lab)).nodes.map((d) => d.name)).not.toContain('hot-001');
  }, 30_000);

  it('drops the declaration of a member retired while it was being cloned once its VM is gone', async () => {
    const applied = accepted(
      await applyVmPool(gw, { platformId: vc, name: 'brief', replicas: 2, sourceId: vcSource.id }),
      'applyVmPool brief',
    );
    // Scaled to 0 as soon as its members are declared: their clones are under way.
    await until(
      'brief-001 and brief-002 declared',
      () => vmPool<PoolCounts>(gw, applied.id, POOL_COUNTS),
      (p) => p !== null && p.members.length === 2,
      10_000,
      10,
    );
    accepted(await scaleVmPool(gw, { poolId: applied.id, replicas: 0 }), 'scale brief to 0');
    // The clones finish; the reconciler stops and deletes what they made.
    await until(
      'brief-* deleted (govmomi)',
      async () => (await simVmsStartingWith(sim, 'brief-')).size,
      (n) => n === 0,
      15_000,
      250,
    );
    // Their declarations go within a resync or two: nothing is left to wait for (the reconciler
    // gives a finished create 30 s to show in the inventory, but these VMs were shown, and deleted).
    await until(
      'the declarations of brief-001 and brief-002 dropped once their VMs are gone',
      async () => (await declarations(gw, vc)).nodes.filter((d) => d.name.startsWith('brief-')).map((d) => d.name),
      (names) => names.length === 0,
      5_000,
      250,
    );
    expect(await vmPool(gw, applied.id)).toMatchObject({ replicas: 0, members: [], status: { phase: 'READY' } });
  }, 60_000);

  it('refuses bad input with userErrors and stores nothing', async () => {
    const base = { platformId: vc, name: 'bad', replicas: 1, sourceId: vcSource.id };
    const refused = async (input: Record<string, unknown>, code: string, field: string[] | null) => {
      const res = await applyVmPool(gw, input);
      expect(res.pool, JSON.stringify(input)).toBeNull();
      expect(res.userErrors, JSON.stringify(input)).toEqual([expect.objectContaining({ code, field })]);
    };
    await refused({ ...base, replicas: -1 }, 'INVALID_INPUT', ['replicas']);
    // reconciler.maxPoolReplicas is 20 here.
    await refused({ ...base, replicas: 21 }, 'INVALID_INPUT', ['replicas']);
    await refused({ ...base, warmStandbys: -1 }, 'INVALID_INPUT', ['warmStandbys']);
    const missing = Buffer.from('v1:VirtualMachine:vc:vm-does-not-exist').toString('base64url');
    await refused({ ...base, sourceId: missing }, 'NOT_FOUND', ['sourceId']);
    await refused({ ...base, namePattern: 'bad-vm' }, 'INVALID_INPUT', ['namePattern']);
    const labVm = await vmOf(gw, lab, estate.vms[0]!.name);
    await refused({ ...base, sourceId: labVm.id }, 'INVALID_INPUT', ['sourceId']);
    expect((await vmPools(gw, null)).nodes.map((p) => p.name)).not.toContain('bad');

    // A stale resourceVersion: CONFLICT, the pool as the last accepted apply left it.
    const v1 = accepted(await applyVmPool(gw, { ...base, name: 'conf', replicas: 0 }), 'applyVmPool conf');
    const v2 = accepted(
      await applyVmPool(gw, {
        ...base,
        name: 'conf',
        replicas: 0,
        namePattern: 'conf-{n}',
        resourceVersion: v1.resourceVersion,
      }),
      'applyVmPool conf again',
    );
    expect(v2).toMatchObject({ generation: v1.generation + 1, namePattern: 'conf-{n}' });
    expect(v2.resourceVersion).not.toBe(v1.resourceVersion);
    await refused(
      { ...base, name: 'conf', replicas: 0, namePattern: 'other-{n}', resourceVersion: v1.resourceVersion },
      'CONFLICT',
      ['resourceVersion'],
    );
    expect(await vmPool(gw, v1.id)).toMatchObject({ namePattern: 'conf-{n}', resourceVersion: v2.resourceVersion });

    // scaleVmPool checks the same bounds.
    const tooMany = await scaleVmPool(gw, { poolId: v1.id, replicas: 21 });
    expect(codes(tooMany)).toEqual(['INVALID_INPUT']);
    const negative = await scaleVmPool(gw, { poolId: v1.id, replicas: -1 });
    expect(codes(negative)).toEqual(['INVALID_INPUT']);
    const nowhere = Buffer.from('v1:VmPool:vc:no-such-pool').toString('base64url');
    expect(codes(await scaleVmPool(gw, { poolId: nowhere, replicas: 1 }))).toEqual(['NOT_FOUND']);
    expect(await vmPool(gw, v1.id)).toMatchObject({ replicas: 0, resourceVersion: v2.resourceVersion });

    // The pool is a Node, and listed by platform.
    const node = await gw.query<{ node: { __typename: string; name: string } }>(
      'query($id: ID!) { node(id: $id) { __typename ... on VmPool { name } } }',
      { id: v1.id },
    );
    expect(node.data?.node).toEqual({ __typename: 'VmPool', name: 'conf' });
    const listed = await vmPools(gw, vc);
    expect(listed.nodes.map((p) => p.name)).toEqual(expect.arrayContaining(['conf', 'warm', 'web']));
    expect(listed.nodes.map((p) => p.name)).not.toContain('lk');
    expect(listed.totalCount).toBe(listed.nodes.length);
  }, 30_000);

  it('deletes a pool with its VMs, or forgets it and leaves them undeclared', async () => {
    const gone = accepted(
      await applyVmPool(gw, { platformId: vc, name: 'gone', replicas: 2, sourceId: vcSource.id, cloneMode: 'FULL' }),
      'applyVmPool gone',
    );
    const kept = accepted(
      await applyVmPool(gw, { platformId: vc, name: 'kept', replicas: 2, sourceId: vcSource.id }),
      'applyVmPool kept',
    );
    await settledPool(gw, gone.id, 0, 'gone: 2 replicas ready');
    const keptReady = await settledPool(gw, kept.id, 0, 'kept: 2 replicas ready', 30_000, 1_500);

    // With its VMs: the VMs go (stopped, deleted), then the pool and the declarations.
    const deleting = accepted(await deleteVmPool(gw, { poolId: gone.id, deleteVms: true }), 'deleteVmPool gone');
    expect(deleting.status.phase).toBe('DELETING');
    await until(
      'gone-001 and gone-002 deleted (govmomi)',
      async () => (await simVmsStartingWith(sim, 'gone-')).size,
      (n) => n === 0,
      10_000,
      250,
    );
    // Then the pool.
    await until(
      'pool gone deleted',
      () => vmPool(gw, gone.id, 'id'),
      (p) => p === null,
      10_000,
      250,
    );
    expect((await simVmsStartingWith(sim, 'gone-')).size).toBe(0);
    expect(await vmsStartingWith(gw, 'gone-', vc)).toEqual([]);
    expect((await declarations(gw, vc)).nodes.filter((d) => d.name.startsWith('gone-'))).toEqual([]);
    expect((await vmPools(gw, vc)).nodes.map((p) => p.name)).not.toContain('gone');

    // Without: the pool and declarations go, the VMs stay as they are, undeclared.
    accepted(await deleteVmPool(gw, { poolId: kept.id, deleteVms: false }), 'deleteVmPool kept');
    await until(
      'pool kept deleted',
      () => vmPool(gw, kept.id, 'id'),
      (p) => p === null,
      10_000,
    );
    expect((await declarations(gw, vc)).nodes.filter((d) => d.name.startsWith('kept-'))).toEqual([]);
    const left = await vmsStartingWith(gw, 'kept-', vc);
    expect(left.map((v) => ({ id: v.id, name: v.name, powerState: v.powerState, spec: v.spec }))).toEqual(
      keptReady.vms.map((v) => ({ id: v.id, name: v.name, powerState: 'ON', spec: null })),
    );
    // Nobody retires or remakes them, a few resyncs later.
    await holdsFor(
      'kept-001 and kept-002 stay, once each, running (govmomi)',
      async () => [...(await simVmsStartingWith(sim, 'kept-'))],
      (vms) =>
        JSON.stringify(vms) ===
        JSON.stringify([
          ['kept-001', ['poweredOn']],
          ['kept-002', ['poweredOn']],
        ]),
      2_500,
      250,
    );
  }, 60_000);
});

describe('a gateway killed while it scales a pool', () => {
  let sim: Vcsim;
  let proxy: Awaited<ReturnType<typeof startSoapProxy>>;
  const running: GatewayProcess[] = [];

  beforeAll(async () => {
    sim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 1, host: 0, vm: 1 });
    proxy = await startSoapProxy(sim.url, sim.certFile);
  });

  /** A gateway process on the simulator, through the proxy, with a state.dir of its own (shared by its restarts). */
  const gatewayConfig = () => ({
    state: { dir: mkdtempSync(join(tmpdir(), 'virt-graph-pools-kill-')) },
    reconciler: RECONCILER,
    platforms: [
      {
        id: 'vc',
        kind: 'vsphere',
        url: proxy.url,
        username: sim.username,
        password: sim.password,
        requestTimeoutMs: 5_000,
      },
    ],
  });

  /** A gateway on `config`, SYNCED: it, the platform's ID and the source VM's. */
  async function started(config: Record<string, unknown>) {
    const gw = await spawnGateway(config);
    running.push(gw);
    await synced(gw);
    const { vc } = await platformIds(gw);
    const source = Object.values(sim.oracle.vms).find((v) => !v.template)!;
    return { gw, vc: vc!, sourceId: (await vmOf(gw, vc!, source.name)).id };
  }

  /** The name a held CloneVM_Task asks for. */
  const cloneName = (body: string) => /<name>([^<]*)<\/name>/.exec(body)?.[1] ?? '?';
  afterAll(async () => {
    for (const g of running) await g.kill();
    proxy?.release();
    await proxy?.close();
    await sim?.stop();
  });

  it('makes no second VM of any name after a restart on the same state.dir, and reaches its replicas', async () => {
    const config = gatewayConfig();
    const { gw: first, vc, sourceId } = await started(config);

    // reconciler.maxPoolReplicas is 1000 by default.
    const over = await applyVmPool(first, { platformId: vc, name: 'crash', replicas: 1_001, sourceId });
    expect(codes(over)).toEqual(['INVALID_INPUT']);

    const pool = accepted(await applyVmPool(first, { platformId: vc, name: 'crash', replicas: 2, sourceId }), 'apply');
    await settledPool(first, pool.id, 0, 'crash: 2 replicas ready');

    // Scaled to 12, the gateway's CloneVM_Tasks are held at the proxy: it dies with members being cloned,
    // at most reconciler.maxConcurrentActions (8) of the 10 asked for, the others not yet.
    const held: string[] = [];
    proxy.hold((body) => {
      if (!body.includes('<CloneVM_Task ')) return false;
      const name = cloneName(body);
      if (!held.includes(name)) held.push(name);
      return true;
    });
    accepted(await scaleVmPool(first, { poolId: pool.id, replicas: 12 }), 'scale to 12');
    // As many as it runs at once, each name reserved before its request: wait for every one of them, since
    // a name reserved but not yet asked for when the gateway dies stays reserved (reservationSeconds).
    await until(
      'the reconciler asked vCenter for as many clones as it runs at once',
      async () => held.length,
      (n) => n === RECONCILER.maxConcurrentActions,
      20_000,
      25,
    );
    // The rest are never sent.
    await new Promise((r) => setTimeout(r, 300));
    const asked = [...held].sort();
    await first.kill();
    // vCenter gets the requests after all, and makes VMs the dead gateway never heard of.
    proxy.release();
    await until(
      `${asked.join(', ')} made by the dead gateway (govmomi)`,
      async () => [...(await simVmsStartingWith(sim, 'crash-')).keys()],
      (names) => asked.every((n) => names.includes(n)),
      15_000,
      250,
    );

    const clonesAfter: string[] = [];
    proxy.hold((body) => {
      if (body.includes('<CloneVM_Task ')) clonesAfter.push(cloneName(body));
      return false;
    });
    const { gw: second } = await started(config);
    // Generous: other test files run beside this one.
    const twelve = await settledPool(second, pool.id, 0, 'crash: 12 replicas ready under the new gateway', 60_000);
    expect(twelve.members.map((m) => m.name)).toEqual(numbered('crash', 1, 12));
    // One VM to a name, as govmomi sees it, and it stays so.
    await holdsFor(
      'crash-001..012, one VM each (govmomi)',
      async () => [...(await simVmsStartingWith(sim, 'crash-'))],
      (vms) => JSON.stringify(vms) === JSON.stringify(numbered('crash', 1, 12).map((n) => [n, ['poweredOn']])),
      2_500,
      250,
    );
    // The new gateway cloned only what the dead one had not asked for.
    expect(clonesAfter.filter((n) => asked.includes(n))).toEqual([]);
    expect(clonesAfter.sort()).toEqual(numbered('crash', 3, 12).filter((n) => !asked.includes(n)));
  }, 120_000);

  it('makes no second VM of a name whose clone the dead gateway asked for and vCenter had not yet made', async () => {
    const config = gatewayConfig();
    const { gw: first, vc, sourceId } = await started(config);
    const pool = accepted(await applyVmPool(first, { platformId: vc, name: 'late', replicas: 1, sourceId }), 'apply');
    await settledPool(first, pool.id, 0, 'late: 1 replica ready');

    // Every CloneVM_Task is held from now on, the dead gateway's and the new one's: vCenter is slow to take them.
    const asked: string[] = [];
    proxy.hold((body) => {
      if (!body.includes('<CloneVM_Task ')) return false;
      asked.push(cloneName(body));
      return true;
    });
    accepted(await scaleVmPool(first, { poolId: pool.id, replicas: 3 }), 'scale to 3');
    await until(
      'the dead gateway asked for late-002 and late-003',
      async () => asked.length,
      (n) => n >= 2,
      10_000,
      25,
    );
    await first.kill();
    const byTheDead = [...asked].sort();
    expect(byTheDead).toEqual(['late-002', 'late-003']);

    // The new gateway starts while vCenter has still to make them; then vCenter takes every request it was sent.
    const { gw: second } = await started(config);
    await new Promise((r) => setTimeout(r, 3_000));
    const byTheNew = asked.slice(byTheDead.length).sort();
    proxy.release();
    await settledPool(second, pool.id, 0, 'late: 3 replicas ready under the new gateway', 30_000);
    // One VM to a name: the new gateway does not ask again for a VM the dead one asked for.
    const sims = [...(await simVmsStartingWith(sim, 'late-'))];
    expect(
      sims,
      `the simulator's late-* VMs; CloneVM_Tasks sent by the dead gateway: ${byTheDead.join(', ')}, ` +
        `by the new one: ${byTheNew.join(', ') || 'none'}`,
    ).toEqual(numbered('late', 1, 3).map((n) => [n, ['poweredOn']]));
  }, 60_000);
});

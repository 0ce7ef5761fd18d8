import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { invokeTask } from '../src/datasources/vsphere/vim.js';
import {
  type DeclarationRow,
  applied,
  applyVm,
  declaration,
  declarations,
  holdsFor,
  until,
} from './helpers/declarations.js';
import { type GatewayProcess, spawnGateway } from './helpers/gateway-process.js';
import { type RedisServer, redisServer } from './helpers/redis-server.js';
import { startSoapProxy } from './helpers/soap-proxy.js';
import { type Vcsim, adminSession, startVcsim, vspherePlatform } from './helpers/vcsim.js';
import {
  POOL_COUNTS,
  type PoolCounts,
  accepted,
  applyVmPool,
  numbered,
  scaleVmPool,
  settled,
  vmPool,
} from './helpers/vm-pools.js';

// Declared VMs and pools with several gateway instances sharing a real
// redis-server, in front of one vCenter simulator: a declaration applied
// through any instance is every instance's within a second (Redis hashes,
// each instance caching its reads for a second), and only the instance
// holding the platform's lease reconciles. Each instance
// reaches the simulator through a SOAP proxy of its own, so the test counts
// which instance asked vCenter for what; govmomi's oracle, not the gateways,
// says how many VMs there are and whether they run. Power is changed behind
// the gateways' back over a SOAP session of the test's own.

const LEASE_TTL_MS = 1_500;
/** Fast for tests: a resync every second, short backoffs. */
const RECONCILER = { resyncSeconds: 1, maxConcurrentActions: 4, backoffInitialMs: 200, backoffMaxMs: 2_000 };
const KEY_PREFIX = 'virt-graph:';
const PLATFORM = 'vc';
const RECONCILER_CALLER = 'reconciler for anonymous';
const reporter = { progress: () => {}, upstreamTask: () => {} };

type Proxy = Awaited<ReturnType<typeof startSoapProxy>>;

/** One gateway instance, its own SOAP proxy to the simulator, and the vCenter calls it made through it. */
interface Instance {
  label: string;
  gw: GatewayProcess;
  proxy: Proxy;
  /** Request bodies of the calls that change something, in order. */
  calls: string[];
}

/** vCenter methods that make, change or power a VM. */
const CHANGING = /<(CreateVM_Task|CloneVM_Task|PowerOnVM_Task|PowerOffVM_Task|ReconfigVM_Task|Destroy_Task) /;

let redis: RedisServer;
let sim: Vcsim;
const instances: Instance[] = [];
let platformId: string;
let clusterId: string;
/** What the test measured, printed at the end. */
const figures: Record<string, number> = {};

function config(proxy: Proxy): Record<string, unknown> {
  return {
    redis: { url: redis.url, keyPrefix: KEY_PREFIX, leaseTtlMs: LEASE_TTL_MS, connectTimeoutMs: 2_000 },
    // Each instance its own state.dir: its own audit file and tasks journal.
    state: { dir: mkdtempSync(join(tmpdir(), 'virt-graph-state-')) },
    reconciler: RECONCILER,
    inventory: { resyncIntervalSeconds: 5, retryInitialMs: 50, retryMaxMs: 200 },
    platforms: [
      {
        ...vspherePlatform(sim, { requestTimeoutMs: 5_000, retryInitialMs: 100, retryMaxMs: 500 }),
        url: proxy.url,
        caFile: undefined,
      },
    ],
  };
}

async function startInstance(label: string): Promise<Instance> {
  const proxy = await startSoapProxy(sim.url, sim.certFile);
  const calls: string[] = [];
  // Holds nothing: only records what the instance asked vCenter to change.
  proxy.hold((body) => {
    if (CHANGING.test(body)) calls.push(body);
    return false;
  });
  const gw = await spawnGateway(config(proxy));
  return { label, gw, proxy, calls };
}

/** Calls of `method` an instance made, about a VM by moref or (CreateVM_Task) by name. */
const callsOf = (inst: Instance, method: string, about: string) =>
  inst.calls.filter(
    (b) => b.includes(`<${method} `) && (b.includes(`>${about}</_this>`) || b.includes(`<name>${about}</name>`)),
  ).length;

interface Watch {
  name: string;
  inventoryState: string;
  watch: { role: string; holder: string | null; instance: string } | null;
}

async function watchOf(inst: Instance): Promise<Watch> {
  const res = await inst.gw.query<{ platforms: Watch[] }>(
    '{ platforms { name inventoryState watch { role holder instance } } }',
  );
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return res.data!.platforms.find((p) => p.name === PLATFORM)!;
}

/** Waits until every running instance is SYNCED and exactly one holds the platform's lease: that one, and the rest. */
async function roles(timeoutMs = 20_000): Promise<{ holder: Instance; followers: Instance[] }> {
  const running = instances.filter((i) => i.gw.child.exitCode === null && i.gw.child.signalCode === null);
  const seen = await until(
    `one holder of ${PLATFORM} among ${running.map((i) => i.label).join(', ')}`,
    () => Promise.all(running.map(async (i) => ({ i, w: await watchOf(i) }))),
    (all) =>
      all.every(({ w }) => w.inventoryState === 'SYNCED') &&
      all.filter(({ w }) => w.watch?.role === 'HOLDER').length === 1,
    timeoutMs,
  );
  const holder = seen.find(({ w }) => w.watch?.role === 'HOLDER')!.i;
  return { holder, followers: running.filter((i) => i !== holder) };
}

/** The simulator's VMs named `name`, as govmomi reads them now: [moref, VM]. */
async function simVms(name: string) {
  const oracle = await sim.refreshOracle();
  return Object.entries(oracle.vms).filter(([, v]) => v.name === name);
}

/** The one simulator VM named `name` (fails on none or more). */
async function simVm(name: string) {
  const all = await simVms(name);
  expect(
    all.map(([moref]) => moref),
    `simulator VMs named ${name}`,
  ).toHaveLength(1);
  return { moref: all[0]![0], vm: all[0]![1] };
}

/** Powers a VM off over a SOAP session of the test's own, straight to the simulator: behind every gateway's back. */
async function powerOffBehindTheBack(moref: string): Promise<void> {
  const admin = await adminSession(sim);
  try {
    await admin.tasks.wait(
      await invokeTask(admin.client, 'PowerOffVM_Task', { type: 'VirtualMachine', value: moref }, ''),
      reporter,
    );
  } finally {
    await admin.close();
  }
}

interface AuditRow {
  caller: string;
  operation: string;
  targetId: string | null;
  input: string;
  outcome: string;
  taskId: string | null;
}

/** An instance's own audit log (its own file): entries of `operations`. */
async function audit(inst: Instance, operations: string[]): Promise<AuditRow[]> {
  const res = await inst.gw.query<{ auditLog: { nodes: AuditRow[] } }>(
    'query($f: AuditFilter) { auditLog(first: 1000, filter: $f) { nodes { caller operation targetId input outcome taskId } } }',
    { f: { operations } },
  );
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return res.data!.auditLog.nodes;
}

/**
 * What the reconciler asked for the VM named `name` (or with ID `vmId`), as
 * an instance's audit log has it: the ACCEPTED entries (a task's end is an
 * entry of its own, with the input left out).
 */
async function reconcilerEntries(inst: Instance, operations: string[], name: string, vmId?: string) {
  return (await audit(inst, operations)).filter(
    (e) =>
      e.caller === RECONCILER_CALLER &&
      e.outcome === 'ACCEPTED' &&
      ((vmId !== undefined && e.targetId === vmId) || e.input.includes(`"name":"${name}"`)),
  );
}

const specOf = (extra: Record<string, unknown> = {}) => ({
  vcpus: 1,
  memoryMiB: 64,
  placement: { clusterId },
  runStrategy: 'ALWAYS',
  ...extra,
});

/** Converged and running as declared, as an instance shows it. */
const running = (d: DeclarationRow | undefined) =>
  d !== undefined &&
  d.vm !== null &&
  d.vm.powerState === 'ON' &&
  d.status.phase === 'RUNNING' &&
  d.status.observedGeneration === d.spec.generation;

/** Waits until govmomi sees exactly one VM named `name`, powered on; its moref. */
async function oneRunning(name: string, timeoutMs: number): Promise<string> {
  const vms = await until(
    `one VM named ${name}, powered on (govmomi)`,
    () => simVms(name),
    (all) => all.length === 1 && all[0]![1].powerState === 'poweredOn',
    timeoutMs,
    200,
  );
  return vms[0]![0];
}

beforeAll(async () => {
  [redis, sim] = await Promise.all([
    redisServer(),
    startVcsim({ dc: 1, cluster: 1, clusterHost: 2, host: 0, vm: 1, ds: 1, pg: 1 }),
  ]);
  instances.push(...(await Promise.all([startInstance('a'), startInstance('b')])));
  await roles(30_000);
  const res = await instances[0]!.gw.query<{ platforms: { id: string }[]; clusters: { nodes: { id: string }[] } }>(
    '{ platforms { id } clusters(first: 5) { nodes { id } } }',
  );
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  platformId = res.data!.platforms[0]!.id;
  clusterId = res.data!.clusters.nodes[0]!.id;
}, 60_000);

afterAll(async () => {
  await Promise.all(instances.map((i) => i.gw.kill()));
  await Promise.all(instances.map((i) => i.proxy.close()));
  await Promise.all([sim?.stop(), redis?.kill()]);
  console.log(`declarations-redis figures (ms): ${JSON.stringify(figures)}`);
});

describe('declarations shared through Redis by several instances', () => {
  it('shows a declaration applied through either instance on the other within a second or two, and makes its VM once, running', async () => {
    const { holder, followers } = await roles();
    const follower = followers[0]!;
    const cases = [
      { via: follower, other: holder, name: 'decl-via-follower' },
      { via: holder, other: follower, name: 'decl-via-holder' },
    ];
    for (const { via, other, name } of cases) {
      const appliedAt = Date.now();
      const d = await applied(via.gw, { platformId, name, spec: specOf() });
      expect(d.spec).toMatchObject({ generation: 1, runStrategy: 'ALWAYS', appliedBy: 'anonymous' });
      // The other instance lists it, as written: same resourceVersion and generation.
      const seen = await until(
        `${name} listed by instance ${other.label}`,
        () => declaration(other.gw, platformId, name),
        (x) => x?.spec.resourceVersion === d.spec.resourceVersion,
        3_000,
        50,
      );
      figures[`visible on the other instance (${name})`] = Date.now() - appliedAt;
      expect(Date.now() - appliedAt).toBeLessThan(2_000);
      expect(seen!.spec).toEqual(d.spec);
      // Stored in Redis, in the hash every instance reads.
      const raw = await redis.command('HGET', `${KEY_PREFIX}{declarations}:declared`, `${PLATFORM}\u0000${name}`);
      expect(raw).toContain(d.spec.resourceVersion);

      await oneRunning(name, 20_000);
      for (const inst of [via, other]) {
        await until(
          `${name} converged, running, on ${inst.label}`,
          () => declaration(inst.gw, platformId, name),
          running,
          10_000,
        );
      }
      figures[`converged (${name})`] = Date.now() - appliedAt;
    }
    // Made once each, and not again a few resyncs later.
    await holdsFor(
      'one VM of each name (govmomi)',
      async () => Promise.all(cases.map(async (c) => (await simVms(c.name)).length)),
      (counts) => counts.every((n) => n === 1),
      2_500,
      250,
    );
    for (const { name } of cases) expect((await simVm(name)).vm.powerState).toBe('poweredOn');
    // Only the holder asked vCenter for them, once each.
    for (const { name } of cases) {
      expect(callsOf(holder, 'CreateVM_Task', name), `CreateVM_Task for ${name} by the holder`).toBe(1);
      expect(callsOf(follower, 'CreateVM_Task', name), `CreateVM_Task for ${name} by the follower`).toBe(0);
    }
  }, 60_000);

  it('refuses a stale resourceVersion through one instance after an apply through the other (CONFLICT)', async () => {
    const [a, b] = instances as [Instance, Instance];
    const name = 'decl-conflict';
    const v1 = await applied(a.gw, { platformId, name, spec: specOf({ runStrategy: 'HALTED', memoryMiB: 32 }) });
    const v2 = await applied(a.gw, {
      platformId,
      name,
      spec: specOf({ runStrategy: 'HALTED', memoryMiB: 48 }),
      resourceVersion: v1.spec.resourceVersion,
    });
    expect(v2.spec.generation).toBe(v1.spec.generation + 1);
    const stale = await applyVm(b.gw, {
      platformId,
      name,
      spec: specOf({ runStrategy: 'HALTED', memoryMiB: 96 }),
      resourceVersion: v1.spec.resourceVersion,
    });
    expect(stale.declaration).toBeNull();
    expect(stale.userErrors.map((e) => e.code)).toEqual(['CONFLICT']);
    // Both list the last accepted apply (b within its read cache's second).
    for (const inst of [a, b]) {
      const now = await until(
        `decl-conflict as last applied, on ${inst.label}`,
        () => declaration(inst.gw, platformId, name),
        (x) => x?.spec.resourceVersion === v2.spec.resourceVersion,
        2_000,
        50,
      );
      expect(now!.spec).toMatchObject({ memoryMiB: 48, generation: v2.spec.generation });
    }
  }, 30_000);

  it('accepts through one instance the resourceVersion the other has just answered', async () => {
    const [a, b] = instances as [Instance, Instance];
    const name = 'decl-conflict';
    const current = (await declaration(a.gw, platformId, name))!;
    // b has read the declarations a moment before: what it answers next must not be older than a's write.
    await declarations(b.gw, platformId);
    const fresh = await applied(a.gw, {
      platformId,
      name,
      spec: specOf({ runStrategy: 'HALTED', memoryMiB: 64 }),
      resourceVersion: current.spec.resourceVersion,
    });
    const over = await applyVm(b.gw, {
      platformId,
      name,
      spec: specOf({ runStrategy: 'HALTED', memoryMiB: 80 }),
      resourceVersion: fresh.spec.resourceVersion,
    });
    expect(over.userErrors, 'an apply through b over the resourceVersion a just answered').toEqual([]);
    expect(over.declaration!.spec).toMatchObject({ memoryMiB: 80, generation: fresh.spec.generation + 1 });
  }, 30_000);

  it('overwrites through one instance, given no resourceVersion, what the other has just applied', async () => {
    const [a, b] = instances as [Instance, Instance];
    const name = 'decl-overwrite';
    // A new name on a, while b's read of the declarations is a moment old: "left out, the apply creates, or overwrites".
    await declarations(b.gw, platformId);
    const first = await applied(a.gw, { platformId, name, spec: specOf({ runStrategy: 'HALTED', memoryMiB: 32 }) });
    const over = await applyVm(b.gw, { platformId, name, spec: specOf({ runStrategy: 'HALTED', memoryMiB: 48 }) });
    expect(over.userErrors, 'an apply through b, without a resourceVersion, over a new declaration of a').toEqual([]);
    expect(over.declaration!.spec).toMatchObject({ memoryMiB: 48, generation: first.spec.generation + 1 });
  }, 30_000);

  it('lets only the lease holder act: a VM powered off behind the back is started again by the holder alone', async () => {
    const { holder, followers } = await roles();
    const follower = followers[0]!;
    const name = 'decl-via-follower';
    const d = (await declaration(holder.gw, platformId, name))!;
    const vmId = d.vm!.id;
    const { moref } = await simVm(name);
    const before = {
      holder: callsOf(holder, 'PowerOnVM_Task', moref),
      follower: callsOf(follower, 'PowerOnVM_Task', moref),
    };

    await powerOffBehindTheBack(moref);
    const offAt = Date.now();
    await oneRunning(name, 10_000);
    figures['powered on again by the holder'] = Date.now() - offAt;
    expect(Date.now() - offAt).toBeLessThan(5_000);
    for (const inst of [holder, follower]) {
      await until(
        `${name} converged again, on ${inst.label}`,
        () => declaration(inst.gw, platformId, name),
        running,
        10_000,
      );
    }

    // The holder asked vCenter; the follower asked for nothing, for any declared VM.
    expect(callsOf(holder, 'PowerOnVM_Task', moref) - before.holder).toBeGreaterThanOrEqual(1);
    expect(callsOf(follower, 'PowerOnVM_Task', moref) - before.follower).toBe(0);
    expect(follower.calls.map((b) => CHANGING.exec(b)![1])).toEqual([]);
    // Each instance's own audit log: the reconciler's createVm and startVm on the holder's only, each accepted and then
    // its task's end (an entry of its own, by task ID).
    const holderEntries = await reconcilerEntries(holder, ['createVm', 'startVm'], name, vmId);
    expect(holderEntries.map((e) => e.operation).sort()).toEqual(['createVm', 'startVm']);
    // A task's end is audited just after the task finishes, which may be after the VM shows running.
    const ends = await until(
      'the reconciler tasks’ ends audited on the holder',
      async () =>
        (await audit(holder, ['createVm', 'startVm']))
          .filter((e) => e.outcome !== 'ACCEPTED' && holderEntries.some((h) => h.taskId === e.taskId))
          .map((e) => `${e.operation} ${e.outcome}`)
          .sort(),
      (found) => found.length >= 2,
      5_000,
    );
    expect(ends).toEqual(['createVm SUCCEEDED', 'startVm SUCCEEDED']);
    const followerEntries = (
      await audit(follower, ['createVm', 'startVm', 'stopVm', 'cloneVm', 'reconfigureVm'])
    ).filter((e) => e.caller === RECONCILER_CALLER);
    expect(followerEntries).toEqual([]);
  }, 30_000);

  it('converges a pool applied through one instance, and scales it through the other', async () => {
    const { holder, followers } = await roles();
    const follower = followers[0]!;
    const sourceName = Object.values(sim.oracle.vms).find((v) => !v.template)!.name;
    const res = await follower.gw.query<{ virtualMachines: { nodes: { id: string; name: string }[] } }>(
      'query($n: String) { virtualMachines(first: 10, filter: { nameContains: $n }) { nodes { id name } } }',
      { n: sourceName },
    );
    const sourceId = res.data!.virtualMachines.nodes.find((v) => v.name === sourceName)!.id;

    const appliedAt = Date.now();
    const pool = accepted(
      await applyVmPool(follower.gw, { platformId, name: 'rp', replicas: 2, sourceId }),
      'applyVmPool rp through the follower',
    );
    const probe = (inst: Instance) => () => vmPool<PoolCounts>(inst.gw, pool.id, POOL_COUNTS);
    for (const inst of [follower, holder]) {
      await until(`rp: 2 replicas ready, on ${inst.label}`, probe(inst), (p) => settled(p, 0), 30_000);
    }
    figures['pool of 2 ready'] = Date.now() - appliedAt;
    await until(
      'rp-001 and rp-002, powered on (govmomi)',
      async () => (await sim.refreshOracle()).vms,
      (vms) => {
        const made = Object.values(vms).filter((v) => v.name.startsWith('rp-'));
        return made.length === 2 && made.every((v) => v.powerState === 'poweredOn');
      },
      10_000,
      250,
    );
    expect(
      Object.values((await sim.refreshOracle()).vms)
        .map((v) => v.name)
        .filter((n) => n.startsWith('rp-'))
        .sort(),
    ).toEqual(numbered('rp', 1, 2));

    const scaledAt = Date.now();
    const scaled = accepted(
      await scaleVmPool(holder.gw, { poolId: pool.id, replicas: 3 }),
      'scale rp to 3 through the holder',
    );
    expect(scaled).toMatchObject({ replicas: 3, generation: pool.generation + 1 });
    for (const inst of [holder, follower]) {
      const p = await until(`rp: 3 replicas ready, on ${inst.label}`, probe(inst), (x) => settled(x, 0), 30_000);
      expect(p!.members.map((m) => m.name)).toEqual(numbered('rp', 1, 3));
    }
    figures['pool scaled to 3'] = Date.now() - scaledAt;
    await holdsFor(
      'one VM to each of rp-001..003, powered on (govmomi)',
      async () => Object.values((await sim.refreshOracle()).vms).filter((v) => v.name.startsWith('rp-')),
      (vms) =>
        vms.length === 3 &&
        new Set(vms.map((v) => v.name)).size === 3 &&
        vms.every((v) => v.powerState === 'poweredOn'),
      2_000,
      250,
    );
    // The clones were the holder's to make.
    expect(follower.calls.filter((b) => b.includes('<CloneVM_Task ')).length).toBe(0);
    expect(holder.calls.filter((b) => b.includes('<CloneVM_Task ')).length).toBe(3);
  }, 60_000);

  it('hands reconciling over when the holder stops: the other takes the lease and undoes the next power-off', async () => {
    const { holder, followers } = await roles();
    const survivor = followers[0]!;
    const stoppedAt = Date.now();
    holder.gw.child.kill('SIGTERM');
    await new Promise((r) => holder.gw.child.once('exit', r));
    const next = await roles(10_000);
    expect(next.holder).toBe(survivor);
    figures['lease handed over after SIGTERM'] = Date.now() - stoppedAt;

    const name = 'decl-via-holder';
    const d = (await declaration(survivor.gw, platformId, name))!;
    const { moref } = await simVm(name);
    const before = callsOf(survivor, 'PowerOnVM_Task', moref);
    await powerOffBehindTheBack(moref);
    const offAt = Date.now();
    await oneRunning(name, 10_000);
    figures['powered on again by the new holder'] = Date.now() - offAt;
    expect(Date.now() - offAt).toBeLessThan(5_000);
    expect(callsOf(survivor, 'PowerOnVM_Task', moref) - before).toBeGreaterThanOrEqual(1);
    const entries = await reconcilerEntries(survivor, ['startVm'], name, d.vm!.id);
    expect(entries.length).toBeGreaterThanOrEqual(1);
    await until(
      `${name} converged under the new holder`,
      () => declaration(survivor.gw, platformId, name),
      running,
      10_000,
    );
    // Everything declared is still one VM a name, running.
    for (const n of ['decl-via-follower', 'decl-via-holder', ...numbered('rp', 1, 3)]) {
      expect((await simVm(n)).vm.powerState, n).toBe('poweredOn');
    }
  }, 40_000);
});

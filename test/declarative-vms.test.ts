import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { invokeTask } from '../src/datasources/vsphere/vim.js';
import { elementXml } from '../src/datasources/vsphere/xml.js';
import {
  type DeclarationRow,
  type Querier,
  type StatusRow,
  applied,
  applyVm,
  condition,
  declaration,
  declarations,
  forgetVm,
  holdsFor,
  until,
  vmNamed,
  vmsNamed,
} from './helpers/declarations.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { type GatewayProcess, spawnGateway } from './helpers/gateway-process.js';
import { type Libvirtd, libvirtd } from './helpers/libvirtd.js';
import { mutate, succeed } from './helpers/mutations.js';
import { startSoapProxy } from './helpers/soap-proxy.js';
import { subscribe } from './helpers/subscriptions.js';
import { type Vcsim, adminSession, startVcsim, vspherePlatform } from './helpers/vcsim.js';

// Declared VMs (applyVm): the gateway's reconciler makes a declared VM, then
// keeps its power (by run strategy), vCPUs and memory as declared, whoever
// changes them: changes are made behind the gateway's back (SOAP straight to
// VMware's simulator, virsh against a real libvirtd) and checked by the
// platforms' own views (govmomi's oracle, virsh), not only by the gateway.

const run = promisify(execFile);
const reporter = { progress: () => {}, upstreamTask: () => {} };

/** Fast for tests: a resync every second, short backoffs. */
const RECONCILER = { resyncSeconds: 1, maxConcurrentActions: 4, backoffInitialMs: 200, backoffMaxMs: 2_000 };

const VM_CHANGED = `subscription($f: VmChangeFilter) {
  vmChanged(filter: $f) { type vmId changes previousPowerState powerState vm { name powerState vcpus memoryMiB } }
}`;

interface VmEvent {
  vmChanged: {
    type: string;
    vmId: string | null;
    changes: string[];
    previousPowerState: string | null;
    powerState: string | null;
    vm: { name: string; powerState: string; vcpus: number; memoryMiB: number } | null;
  };
}

interface Ids {
  platformId: string;
  clusterId: string | null;
}

async function ids(gw: Querier): Promise<Ids> {
  const res = await gw.query<{ platforms: { id: string }[]; clusters: { nodes: { id: string }[] } }>(
    '{ platforms { id } clusters(first: 5) { nodes { id } } }',
  );
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return { platformId: res.data!.platforms[0]!.id, clusterId: res.data!.clusters.nodes[0]?.id ?? null };
}

async function synced(gw: Querier): Promise<void> {
  await until(
    'the live inventory is SYNCED',
    async () =>
      (await gw.query<{ platforms: { inventoryState: string }[] }>('{ platforms { inventoryState } }')).data
        ?.platforms[0]?.inventoryState,
    (s) => s === 'SYNCED',
    20_000,
  );
}

/** The simulator's VMs named `name`, as govmomi reads them now: [moref, VM]. */
async function simVms(sim: Vcsim, name: string) {
  const oracle = await sim.refreshOracle();
  return Object.entries(oracle.vms).filter(([, v]) => v.name === name);
}

/** The one simulator VM named `name` (fails on none or more). */
async function simVm(sim: Vcsim, name: string) {
  const all = await simVms(sim, name);
  expect(
    all.map(([moref]) => moref),
    `simulator VMs named ${name}`,
  ).toHaveLength(1);
  return { moref: all[0]![0], vm: all[0]![1] };
}

/** Runs a VM method on the simulator over a session of the test's own: behind the gateway's back. */
async function behindTheBack(sim: Vcsim, method: string, moref: string, args = ''): Promise<void> {
  const admin = await adminSession(sim);
  try {
    await admin.tasks.wait(
      await invokeTask(admin.client, method, { type: 'VirtualMachine', value: moref }, args),
      reporter,
    );
  } finally {
    await admin.close();
  }
}

type WithVm = DeclarationRow & { vm: NonNullable<DeclarationRow['vm']> };

const isConverged = (d: DeclarationRow | undefined, phase: string, power: string): d is WithVm =>
  d !== undefined &&
  d.vm !== null &&
  d.vm.powerState === power &&
  d.status.phase === phase &&
  condition(d.status, 'Converged')?.status === 'TRUE' &&
  condition(d.status, 'Ready')?.status === 'TRUE' &&
  d.status.observedGeneration === d.spec.generation;

const conditionTypes = (s: StatusRow) => s.conditions.map((c) => c.type).sort();

describe('declared VMs on vSphere', () => {
  let sim: Vcsim;
  let gw: TestGateway;
  let platformId: string;
  let clusterId: string;

  beforeAll(async () => {
    sim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 2, host: 0, vm: 1, ds: 1, pg: 1 });
    gw = await startTestGateway({
      reconciler: RECONCILER,
      // A full read every 5 s: what the simulator does not stream (reconfigurations) is seen by then.
      inventory: { resyncIntervalSeconds: 5, retryInitialMs: 100, retryMaxMs: 500 },
      platforms: [vspherePlatform(sim, { requestTimeoutMs: 5_000, retryInitialMs: 100, retryMaxMs: 500 })],
    });
    await synced(gw);
    const found = await ids(gw);
    platformId = found.platformId;
    clusterId = found.clusterId!;
  });
  afterAll(async () => {
    await gw?.close();
    await sim?.stop();
  });

  const specOf = (extra: Record<string, unknown> = {}) => ({
    vcpus: 1,
    memoryMiB: 64,
    placement: { clusterId },
    runStrategy: 'ALWAYS',
    ...extra,
  });

  /** Applies an ALWAYS VM and waits until it runs as declared. */
  async function running(name: string, extra: Record<string, unknown> = {}): Promise<DeclarationRow> {
    await applied(gw, { platformId, name, spec: specOf(extra) });
    return until(
      `${name} converged, running`,
      () => declaration(gw, platformId, name),
      (d) => isConverged(d, 'RUNNING', 'ON'),
      20_000,
    ) as Promise<DeclarationRow>;
  }

  it('makes a declared ALWAYS VM and keeps it on, whoever stops it; HALTED stops it and keeps it off', async () => {
    const name = 'decl-web';
    const spec = specOf();
    const first = await applied(gw, { platformId, name, spec });
    expect(first).toMatchObject({
      platform: { id: platformId },
      name,
      spec: { runStrategy: 'ALWAYS', generation: 1, vcpus: 1, memoryMiB: 64, appliedBy: 'anonymous' },
    });
    expect(first.spec.resourceVersion).not.toBe('');

    const ready = (await until(
      'decl-web converged, running',
      () => declaration(gw, platformId, name),
      (d) => isConverged(d, 'RUNNING', 'ON'),
      20_000,
    )) as DeclarationRow;
    expect(ready.status.observedGeneration).toBe(ready.spec.generation);
    expect(ready.vm).toMatchObject({ name, powerState: 'ON', vcpus: 1, memoryMiB: 64 });
    // govmomi sees one VM of that name, running, with the declared hardware.
    const made = await simVm(sim, name);
    expect(made.vm).toMatchObject({ powerState: 'poweredOn', numCpu: 1, memoryMB: 64 });

    // The VM itself carries its spec and status.
    const vm = (await vmNamed(gw, name))!;
    expect(vm.id).toBe(ready.vm!.id);
    expect(vm.spec).toMatchObject({ runStrategy: 'ALWAYS', generation: 1, vcpus: 1, memoryMiB: 64 });
    expect(vm.status.phase).toBe('RUNNING');
    expect(vm.status.observedGeneration).toBe(1);
    expect(conditionTypes(vm.status)).toEqual(['Converged', 'PlatformReachable', 'Ready']);
    expect(condition(vm.status, 'PlatformReachable')!.status).toBe('TRUE');

    // The same spec again is no new generation.
    const again = await applied(gw, { platformId, name, spec });
    expect(again.spec.generation).toBe(1);

    // Powered off behind the gateway's back: on again within seconds, the correction streamed as STATUS.
    const sub = subscribe<VmEvent>(gw.url, VM_CHANGED, { f: { vmIds: [vm.id] } });
    try {
      await new Promise((r) => setTimeout(r, 300));
      await behindTheBack(sim, 'PowerOffVM_Task', made.moref);
      const offAt = Date.now();
      await until(
        'decl-web powered on again (govmomi)',
        async () => (await simVm(sim, name)).vm.powerState,
        (p) => p === 'poweredOn',
        10_000,
      );
      expect(Date.now() - offAt).toBeLessThan(5_000);
      await until(
        'a vmChanged event with STATUS',
        async () => sub.events,
        (events) => events.some((e) => e.vmChanged.changes.includes('STATUS')),
        5_000,
      );
      expect(sub.errors).toEqual([]);
      // The gateway saw it off (no coalescing it away), then on.
      expect(sub.events.some((e) => e.vmChanged.powerState === 'OFF')).toBe(true);
      await until(
        'the gateway shows it on',
        () => declaration(gw, platformId, name),
        (d) => isConverged(d, 'RUNNING', 'ON'),
        5_000,
      );
    } finally {
      await sub.close();
    }

    // HALTED: a new generation; the VM goes off and stays off.
    const halted = await applied(gw, {
      platformId,
      name,
      spec: { ...spec, runStrategy: 'HALTED' },
      resourceVersion: again.spec.resourceVersion,
    });
    expect(halted.spec).toMatchObject({ runStrategy: 'HALTED', generation: 2 });
    expect(halted.spec.resourceVersion).not.toBe(first.spec.resourceVersion);
    const stopped = (await until(
      'decl-web converged, stopped',
      () => declaration(gw, platformId, name),
      (d) => isConverged(d, 'STOPPED', 'OFF'),
      15_000,
    )) as DeclarationRow;
    expect(stopped.status.observedGeneration).toBe(2);
    expect((await simVm(sim, name)).vm.powerState).toBe('poweredOff');
    await holdsFor(
      'decl-web stays off (govmomi)',
      async () => (await simVm(sim, name)).vm.powerState,
      (p) => p === 'poweredOff',
      2_500,
      250,
    );

    // startVm of a HALTED VM is refused, pointing at the spec.
    const start = await mutate(gw, 'startVm', { vmId: vm.id });
    expect(start.userErrors).toEqual([
      expect.objectContaining({ code: 'MANAGED_BY_DECLARATION', message: expect.stringContaining('ALWAYS') }),
    ]);
    expect(start.task).toBeNull();
    await holdsFor(
      'decl-web stays off after a refused startVm',
      async () => (await simVm(sim, name)).vm.powerState,
      (p) => p === 'poweredOff',
      1_500,
      250,
    );
  }, 60_000);

  it("sets vCPUs and memory changed through the gateway's reconfigureVm or behind its back back to the spec", async () => {
    const name = 'decl-drift';
    const ready = await running(name, { vcpus: 1, memoryMiB: 64 });
    const vmId = ready.vm!.id;
    const { moref } = await simVm(sim, name);
    const drifted = (events: VmEvent[]) =>
      events.some((e) => e.vmChanged.vm?.vcpus === 2 && e.vmChanged.vm.memoryMiB === 128);
    const backToSpec = async (how: string) => {
      // As govmomi sees it...
      await until(
        `decl-drift back to 1 vCPU and 64 MiB after ${how} (govmomi)`,
        async () => (await simVm(sim, name)).vm,
        (v) => v.numCpu === 1 && v.memoryMB === 64,
        15_000,
      );
      // ...and as the gateway does: converged, no new generation (a correction is not an apply).
      const after = (await until(
        `decl-drift converged again after ${how}`,
        () => declaration(gw, platformId, name),
        (d) => isConverged(d, 'RUNNING', 'ON') && d.vm.vcpus === 1 && d.vm.memoryMiB === 64,
        5_000,
      )) as DeclarationRow;
      expect(after.spec.generation).toBe(ready.spec.generation);
      expect((await simVm(sim, name)).vm.powerState).toBe('poweredOn');
    };

    // Through the gateway's own reconfigureVm: accepted, then undone.
    let sub = subscribe<VmEvent>(gw.url, VM_CHANGED, { f: { vmIds: [vmId] } });
    try {
      await new Promise((r) => setTimeout(r, 300));
      await succeed(gw, 'reconfigureVm', { vmId, vcpus: 2, memoryMiB: 128 });
      await until('the drift streamed (reconfigureVm)', async () => sub.events, drifted, 5_000);
      await backToSpec('reconfigureVm');
      await until(
        'a vmChanged event with STATUS (reconfigureVm)',
        async () => sub.events,
        (events) => events.some((e) => e.vmChanged.changes.includes('STATUS')),
        5_000,
      );
    } finally {
      await sub.close();
    }

    // Behind its back (SOAP straight to the simulator). VMware's simulator
    // does not report ReconfigVM_Task's changes through WaitForUpdatesEx, so
    // the gateway sees them at its next full read (inventory.resyncIntervalSeconds: 5).
    sub = subscribe<VmEvent>(gw.url, VM_CHANGED, { f: { vmIds: [vmId] } });
    try {
      await new Promise((r) => setTimeout(r, 300));
      await behindTheBack(
        sim,
        'ReconfigVM_Task',
        moref,
        `<spec>${elementXml('numCPUs', 2)}${elementXml('memoryMB', 128)}</spec>`,
      );
      await until('the drift streamed (behind its back)', async () => sub.events, drifted, 12_000);
      await backToSpec('a change behind its back');
      await until(
        'a vmChanged event with STATUS (behind its back)',
        async () => sub.events,
        (events) => events.some((e) => e.vmChanged.changes.includes('STATUS')),
        5_000,
      );
    } finally {
      await sub.close();
    }
  }, 60_000);

  it('refuses a stale resourceVersion, a spec out of range and an unknown platform, changing nothing', async () => {
    // A stale resourceVersion: CONFLICT, the spec as the last accepted apply left it.
    const name = 'decl-conflict';
    const v1 = await applied(gw, { platformId, name, spec: specOf({ runStrategy: 'HALTED', memoryMiB: 32 }) });
    const v2 = await applied(gw, {
      platformId,
      name,
      spec: specOf({ runStrategy: 'HALTED', memoryMiB: 48 }),
      resourceVersion: v1.spec.resourceVersion,
    });
    expect(v2.spec).toMatchObject({ memoryMiB: 48, generation: v1.spec.generation + 1 });
    expect(v2.spec.resourceVersion).not.toBe(v1.spec.resourceVersion);
    const stale = await applyVm(gw, {
      platformId,
      name,
      spec: specOf({ runStrategy: 'HALTED', memoryMiB: 96 }),
      resourceVersion: v1.spec.resourceVersion,
    });
    expect(stale.declaration).toBeNull();
    expect(stale.userErrors.map((e) => e.code)).toEqual(['CONFLICT']);
    expect(await declaration(gw, platformId, name)).toMatchObject({
      spec: { memoryMiB: 48, generation: v2.spec.generation, resourceVersion: v2.spec.resourceVersion },
    });
    // Out of range on an existing declaration: refused, the spec unchanged.
    const zeroOnExisting = await applyVm(gw, { platformId, name, spec: specOf({ runStrategy: 'HALTED', vcpus: 0 }) });
    expect(zeroOnExisting.declaration).toBeNull();
    expect(zeroOnExisting.userErrors.map((e) => e.code)).toEqual(['INVALID_INPUT']);
    expect(await declaration(gw, platformId, name)).toMatchObject({
      spec: { vcpus: 1, memoryMiB: 48, generation: v2.spec.generation, resourceVersion: v2.spec.resourceVersion },
    });

    // Out of range on a new name: refused, nothing declared, nothing made.
    const before = (await declarations(gw, platformId)).totalCount;
    for (const bad of [{ vcpus: 0 }, { memoryMiB: 1 }]) {
      const res = await applyVm(gw, { platformId, name: 'decl-invalid', spec: specOf(bad) });
      expect(res.declaration, JSON.stringify(bad)).toBeNull();
      expect(
        res.userErrors.map((e) => e.code),
        JSON.stringify(bad),
      ).toEqual(['INVALID_INPUT']);
    }
    const listed = await declarations(gw, platformId);
    expect(listed.totalCount).toBe(before);
    expect(listed.nodes.map((d) => d.name)).not.toContain('decl-invalid');

    // An unknown platform: NOT_FOUND.
    const ghost = Buffer.from('v1:Platform:ghost:ghost').toString('base64url');
    const nowhere = await applyVm(gw, { platformId: ghost, name: 'decl-ghost', spec: specOf() });
    expect(nowhere.declaration).toBeNull();
    expect(nowhere.userErrors.map((e) => e.code)).toEqual(['NOT_FOUND']);
    expect((await declarations(gw)).nodes.map((d) => d.name)).not.toContain('decl-ghost');

    // Nothing was made for any of them, a resync later.
    await holdsFor(
      'no VM made for a refused apply',
      async () => [...(await simVms(sim, 'decl-invalid')), ...(await simVms(sim, 'decl-ghost'))],
      (vms) => vms.length === 0,
      1_500,
      250,
    );
  }, 40_000);

  it("refuses stopVm of an ALWAYS VM; once forgotten, the VM is the caller's and stays off", async () => {
    const name = 'decl-managed';
    const ready = await running(name);
    const vmId = ready.vm!.id;

    for (const force of [false, true]) {
      const stop = await mutate(gw, 'stopVm', { vmId, force });
      expect(stop.userErrors, `force: ${force}`).toEqual([
        expect.objectContaining({ code: 'MANAGED_BY_DECLARATION', message: expect.stringContaining('HALTED') }),
      ]);
      expect(stop.task).toBeNull();
    }
    await holdsFor(
      'decl-managed stays on after a refused stopVm',
      async () => (await simVm(sim, name)).vm.powerState,
      (p) => p === 'poweredOn',
      1_000,
      250,
    );

    const forgotten = await forgetVm(gw, { platformId, name });
    expect(forgotten.userErrors).toEqual([]);
    expect(forgotten.vm).toMatchObject({ id: vmId, name, powerState: 'ON' });
    expect(await declaration(gw, platformId, name)).toBeUndefined();
    const vm = (await vmNamed(gw, name))!;
    expect(vm.spec).toBeNull();
    expect(vm.status.observedGeneration).toBeNull();
    expect(conditionTypes(vm.status)).toEqual(['PlatformReachable', 'Ready']);

    await succeed(gw, 'stopVm', { vmId, force: true });
    expect((await simVm(sim, name)).vm.powerState).toBe('poweredOff');
    await holdsFor(
      'decl-managed stays off once forgotten (govmomi)',
      async () => (await simVm(sim, name)).vm.powerState,
      (p) => p === 'poweredOff',
      2_500,
      250,
    );
    expect((await vmNamed(gw, name))!.status.phase).toBe('STOPPED');
  }, 40_000);

  it('deletes a declared VM and its declaration with deleteVm, and does not make it again', async () => {
    const name = 'decl-delete';
    const ready = await running(name);
    await succeed(gw, 'deleteVm', { vmId: ready.vm!.id, force: true });
    await until(
      'decl-delete gone (govmomi)',
      () => simVms(sim, name),
      (vms) => vms.length === 0,
      10_000,
    );
    await until(
      'decl-delete declaration gone',
      () => declaration(gw, platformId, name),
      (d) => d === undefined,
      5_000,
    );
    // More than a resync interval later, still gone.
    await holdsFor(
      'decl-delete is not made again',
      async () => ({ sim: (await simVms(sim, name)).length, gateway: (await vmsNamed(gw, name)).length }),
      (n) => n.sim === 0 && n.gateway === 0,
      2_500,
      250,
    );
    expect(await declaration(gw, platformId, name)).toBeUndefined();
  }, 40_000);

  it('gives an undeclared VM no spec and a status from its power state', async () => {
    const name = Object.values(sim.oracle.vms).find((v) => v.powerState === 'poweredOn' && !v.template)!.name;
    const on = (await vmNamed(gw, name))!;
    expect(on.powerState).toBe('ON');
    expect(on.spec).toBeNull();
    expect(on.status.phase).toBe('RUNNING');
    expect(on.status.observedGeneration).toBeNull();
    expect(conditionTypes(on.status)).toEqual(['PlatformReachable', 'Ready']);
    expect(condition(on.status, 'Ready')).toMatchObject({ status: 'TRUE' });
    expect(condition(on.status, 'PlatformReachable')).toMatchObject({ status: 'TRUE' });
    expect(Number.isNaN(Date.parse(condition(on.status, 'Ready')!.lastTransitionTime))).toBe(false);
    expect((await declarations(gw, platformId)).nodes.map((d) => d.name)).not.toContain(name);

    await succeed(gw, 'stopVm', { vmId: on.id, force: true });
    const off = await until(
      'the undeclared VM shows STOPPED',
      async () => (await vmNamed(gw, name))!,
      (v) => v.status.phase === 'STOPPED',
      5_000,
    );
    expect(off.powerState).toBe('OFF');
    expect(off.spec).toBeNull();
    expect(condition(off.status, 'Ready')).toMatchObject({ status: 'FALSE' });
    // Nobody declared it: it is not started again.
    await holdsFor(
      'the undeclared VM stays off',
      async () => (await simVm(sim, name)).vm.powerState,
      (p) => p === 'poweredOff',
      1_500,
      250,
    );
  }, 30_000);

  it('lists declarations by platform with their status and VM', async () => {
    const listed = await declarations(gw, platformId);
    const names = listed.nodes.map((d) => d.name).sort();
    // decl-managed was forgotten and decl-delete deleted: they are not listed.
    expect(names).toEqual(['decl-conflict', 'decl-drift', 'decl-web']);
    expect(listed.totalCount).toBe(3);
    const web = listed.nodes.find((d) => d.name === 'decl-web')!;
    expect(web).toMatchObject({ spec: { runStrategy: 'HALTED' }, status: { phase: 'STOPPED' } });
    expect(web.vm).not.toBeNull();
    // Another page size gives the rest.
    const res = await gw.query<{ vmDeclarations: { totalCount: number; nodes: { name: string }[] } }>(
      'query($p: ID) { vmDeclarations(platformId: $p, first: 1) { totalCount nodes { name } } }',
      { p: platformId },
    );
    expect(res.errors).toBeUndefined();
    expect(res.data!.vmDeclarations).toMatchObject({ totalCount: 3 });
    expect(res.data!.vmDeclarations.nodes).toHaveLength(1);
  });
});

describe('a declaration that can never be met', () => {
  let sim: Vcsim;
  let gw: TestGateway;
  let proxy: Awaited<ReturnType<typeof startSoapProxy>>;
  let createCalls = 0;

  beforeAll(async () => {
    sim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 2, host: 0, vm: 1 });
    proxy = await startSoapProxy(sim.url, sim.certFile);
    // Counts every CreateVM_Task the gateway sends, holding none.
    proxy.hold((body) => {
      if (body.includes('CreateVM_Task')) createCalls += 1;
      return false;
    });
    gw = await startTestGateway({
      reconciler: { resyncSeconds: 1, maxConcurrentActions: 4, backoffInitialMs: 500, backoffMaxMs: 2_000 },
      inventory: { retryInitialMs: 100, retryMaxMs: 500 },
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
    await synced(gw);
  });
  afterAll(async () => {
    await gw?.close();
    await proxy?.close();
    await sim?.stop();
  });

  it('stays unconverged with InsufficientResources, makes no VM and does not retry in a loop', async () => {
    const { platformId, clusterId } = await ids(gw);
    const largestHostMiB = Math.max(...Object.values(sim.oracle.hosts).map((h) => h.memorySize / 2 ** 20));
    // 1 TiB: far more than any host (or the whole cluster) has, well within what an input may ask.
    const memoryMiB = 1_048_576;
    expect(memoryMiB).toBeGreaterThan(largestHostMiB * Object.keys(sim.oracle.hosts).length);
    const name = 'decl-huge';
    const first = await applied(gw, {
      platformId,
      name,
      spec: { vcpus: 1, memoryMiB, placement: { clusterId }, runStrategy: 'ALWAYS' },
    });
    expect(first.vm).toBeNull();

    const unmet = (await until(
      'decl-huge reported as unmeetable',
      () => declaration(gw, platformId, name),
      (d) => d !== undefined && condition(d.status, 'Converged')?.reason === 'InsufficientResources',
      10_000,
    )) as DeclarationRow;
    expect(['PROVISIONING', 'FAILED']).toContain(unmet.status.phase);
    expect(condition(unmet.status, 'Converged')).toMatchObject({ status: 'FALSE', reason: 'InsufficientResources' });
    expect(condition(unmet.status, 'Ready')!.status).toBe('FALSE');
    expect(unmet.vm).toBeNull();

    const tasksNow = async () => {
      const res = await gw.query<{ tasks: { nodes: { operation: string; targetName: string }[] } }>(
        '{ tasks(first: 1000) { nodes { operation targetName } } }',
      );
      expect(res.errors).toBeUndefined();
      return res.data!.tasks.nodes.filter((t) => t.operation === 'CREATE_VM').length;
    };
    const auditNow = async () => {
      const res = await gw.query<{ auditLog: { nodes: { operation: string }[] } }>(
        '{ auditLog(first: 1000) { nodes { operation } } }',
      );
      expect(res.errors).toBeUndefined();
      return res.data!.auditLog.nodes.filter((e) => e.operation === 'createVm').length;
    };
    const tasksBefore = await tasksNow();
    const auditBefore = await auditNow();
    const callsBefore = createCalls;

    // Three seconds (three resyncs) on: still unmet, still no VM, hardly any attempt.
    await holdsFor(
      'decl-huge stays unconverged with no VM',
      () => declaration(gw, platformId, name),
      (d) =>
        d !== undefined &&
        d.vm === null &&
        ['PROVISIONING', 'FAILED'].includes(d.status.phase) &&
        condition(d.status, 'Converged')?.status === 'FALSE',
      3_000,
      200,
    );
    expect(await simVms(sim, name)).toEqual([]);
    const attempts = {
      createVmTasks: (await tasksNow()) - tasksBefore,
      createVmAudit: (await auditNow()) - auditBefore,
      createVmCalls: createCalls - callsBefore,
    };
    expect(attempts.createVmTasks, JSON.stringify(attempts)).toBeLessThanOrEqual(3);
    expect(attempts.createVmAudit, JSON.stringify(attempts)).toBeLessThanOrEqual(3);
    expect(attempts.createVmCalls, JSON.stringify(attempts)).toBeLessThanOrEqual(3);
    // vCenter itself was never asked to make a VM it could not run.
    expect(createCalls).toBe(0);
  }, 40_000);
});

describe('declared VMs across a restart', () => {
  let sim: Vcsim;
  const gateways: TestGateway[] = [];

  beforeAll(async () => {
    sim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 1, host: 0, vm: 1 });
  });
  afterAll(async () => {
    for (const g of gateways) await g.close().catch(() => undefined);
    await sim?.stop();
  });

  it('keeps declarations in state.dir: a new gateway lists them and keeps their VMs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virt-graph-declarations-'));
    const config = {
      state: { dir },
      reconciler: RECONCILER,
      inventory: { retryInitialMs: 100, retryMaxMs: 500 },
      platforms: [vspherePlatform(sim, { requestTimeoutMs: 5_000, retryInitialMs: 100, retryMaxMs: 500 })],
    };
    const first = await startTestGateway(config);
    gateways.push(first);
    await synced(first);
    const { platformId, clusterId } = await ids(first);
    const name = 'decl-persist';
    await applied(first, {
      platformId,
      name,
      spec: { vcpus: 1, memoryMiB: 64, placement: { clusterId }, runStrategy: 'ALWAYS' },
    });
    const before = (await until(
      'decl-persist converged',
      () => declaration(first, platformId, name),
      (d) => isConverged(d, 'RUNNING', 'ON'),
      20_000,
    )) as DeclarationRow;
    await first.close();

    const second = await startTestGateway(config);
    gateways.push(second);
    await synced(second);
    const listed = await declarations(second, platformId);
    expect(listed.nodes.map((d) => d.name)).toEqual([name]);
    expect(listed.nodes[0]!.spec).toEqual(before.spec);
    await until(
      'decl-persist converged under the new gateway',
      () => declaration(second, platformId, name),
      (d) => isConverged(d, 'RUNNING', 'ON') && d.vm.id === before.vm!.id,
      10_000,
    );

    const { moref } = await simVm(sim, name);
    await behindTheBack(sim, 'PowerOffVM_Task', moref);
    await until(
      'decl-persist powered on again by the new gateway (govmomi)',
      async () => (await simVm(sim, name)).vm.powerState,
      (p) => p === 'poweredOn',
      10_000,
    );
    // Still one VM of that name.
    expect((await simVms(sim, name)).length).toBe(1);
  }, 60_000);
});

describe('a gateway killed while it makes a declared VM', () => {
  let sim: Vcsim;
  let proxy: Awaited<ReturnType<typeof startSoapProxy>>;
  const running: GatewayProcess[] = [];

  beforeAll(async () => {
    sim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 1, host: 0, vm: 1 });
    proxy = await startSoapProxy(sim.url, sim.certFile);
  });
  afterAll(async () => {
    for (const g of running) await g.kill();
    proxy?.release();
    await proxy?.close();
    await sim?.stop();
  });

  it('finds the VM the dead gateway asked for after a restart, instead of making a second', async () => {
    const config = {
      state: { dir: mkdtempSync(join(tmpdir(), 'virt-graph-declarations-kill-')) },
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
    };
    const first = await spawnGateway(config);
    running.push(first);
    await synced(first);
    const { platformId, clusterId } = await ids(first);
    const name = 'decl-crash';

    // The gateway's CreateVM_Task is held at the proxy: the gateway dies with the VM being made.
    let held = 0;
    proxy.hold((body) => {
      if (!body.includes('CreateVM_Task')) return false;
      held += 1;
      return true;
    });
    await applied(first, {
      platformId,
      name,
      spec: { vcpus: 1, memoryMiB: 64, placement: { clusterId }, runStrategy: 'ALWAYS' },
    });
    await until(
      'the reconciler asked vCenter to make the VM',
      async () => held,
      (n) => n > 0,
      10_000,
      25,
    );
    await first.kill();
    // vCenter gets the request after all, and makes the VM the dead gateway never heard of.
    proxy.release();
    await until(
      'decl-crash made by the dead gateway (govmomi)',
      () => simVms(sim, name),
      (vms) => vms.length === 1,
      10_000,
    );

    let createsAfterRestart = 0;
    proxy.hold((body) => {
      if (body.includes('CreateVM_Task')) createsAfterRestart += 1;
      return false;
    });
    const second = await spawnGateway(config);
    running.push(second);
    await synced(second);
    const d = (await until(
      'decl-crash converged under the new gateway',
      () => declaration(second, platformId, name),
      (x) => isConverged(x, 'RUNNING', 'ON'),
      20_000,
    )) as DeclarationRow;
    expect(d.spec.generation).toBe(1);
    await holdsFor(
      'one VM named decl-crash (govmomi)',
      async () => (await simVms(sim, name)).length,
      (n) => n === 1,
      2_500,
      250,
    );
    expect(createsAfterRestart).toBe(0);
    expect((await simVm(sim, name)).vm.powerState).toBe('poweredOn');
  }, 90_000);
});

describe('declared VMs on libvirt, through a real libvirtd', () => {
  let daemon: Libvirtd;
  let gw: TestGateway;
  let platformId: string;
  const virsh = async (...args: string[]) =>
    (await run('virsh', ['-c', daemon.uri, ...args], { encoding: 'utf8' })).stdout.trim();

  beforeAll(async () => {
    daemon = libvirtd();
    await daemon.start();
    gw = await startTestGateway({
      reconciler: RECONCILER,
      inventory: { retryInitialMs: 50, retryMaxMs: 200 },
      platforms: [
        {
          id: 'remote',
          kind: 'libvirt',
          uri: daemon.uri,
          retryInitialMs: 50,
          retryMaxMs: 200,
          livenessIntervalMs: 250,
          livenessTimeoutMs: 500,
        },
      ],
    });
    await synced(gw);
    platformId = (await ids(gw)).platformId;
  });
  afterAll(async () => {
    await gw?.close();
    await daemon?.stop();
  });

  it('makes a declared VM running and starts it again after virsh destroy', async () => {
    const name = 'decl-lv';
    const first = await applied(gw, {
      platformId,
      name,
      spec: { vcpus: 1, memoryMiB: 128, tags: ['web'], runStrategy: 'ALWAYS' },
    });
    expect(first.spec).toMatchObject({ runStrategy: 'ALWAYS', generation: 1, vcpus: 1, memoryMiB: 128, tags: ['web'] });
    const ready = (await until(
      'decl-lv converged, running',
      () => declaration(gw, platformId, name),
      (d) => isConverged(d, 'RUNNING', 'ON'),
      15_000,
    )) as DeclarationRow;
    expect(ready.vm).toMatchObject({ name, vcpus: 1, memoryMiB: 128 });
    // libvirt's own view.
    expect(await virsh('domstate', name)).toBe('running');
    expect(await virsh('dominfo', name)).toMatch(/^CPU\(s\):\s+1$/m);
    expect((await vmNamed(gw, name))!.tags).toContain('web');

    const sub = subscribe<VmEvent>(gw.url, VM_CHANGED, { f: { vmIds: [ready.vm!.id] } });
    try {
      await new Promise((r) => setTimeout(r, 300));
      await virsh('destroy', name);
      const at = Date.now();
      await until(
        'decl-lv running again (virsh)',
        () => virsh('domstate', name),
        (s) => s === 'running',
        10_000,
      );
      expect(Date.now() - at).toBeLessThan(5_000);
      await until(
        'a vmChanged event with STATUS',
        async () => sub.events,
        (events) => events.some((e) => e.vmChanged.changes.includes('STATUS')),
        5_000,
      );
      expect(sub.events.some((e) => e.vmChanged.powerState === 'OFF')).toBe(true);
    } finally {
      await sub.close();
    }
    await until(
      'decl-lv converged again',
      () => declaration(gw, platformId, name),
      (d) => isConverged(d, 'RUNNING', 'ON'),
      5_000,
    );
    // One domain of that name.
    expect((await virsh('list', '--all', '--name')).split('\n').filter((n) => n.trim() === name)).toHaveLength(1);
  }, 40_000);

  it('leaves the power of a MANUAL VM to its callers, and refuses startVm of a HALTED one', async () => {
    const name = 'decl-manual';
    await applied(gw, { platformId, name, spec: { vcpus: 1, memoryMiB: 128, runStrategy: 'MANUAL' } });
    const made = (await until(
      'decl-manual made and converged',
      () => declaration(gw, platformId, name),
      (d) =>
        d?.vm != null &&
        condition(d.status, 'Converged')?.status === 'TRUE' &&
        d.status.observedGeneration === d.spec.generation,
      15_000,
    )) as WithVm;
    const vmId = made.vm.id;
    // Whatever power it was made with, a change by anyone stands.
    if ((await virsh('domstate', name)) === 'running') await virsh('destroy', name);
    await holdsFor(
      'decl-manual stays shut off (virsh)',
      () => virsh('domstate', name),
      (s) => s === 'shut off',
      2_000,
    );
    await succeed(gw, 'startVm', { vmId });
    await holdsFor(
      'decl-manual stays running (virsh)',
      () => virsh('domstate', name),
      (s) => s === 'running',
      1_500,
    );
    await succeed(gw, 'stopVm', { vmId, force: true });
    await holdsFor(
      'decl-manual stays off again (virsh)',
      () => virsh('domstate', name),
      (s) => s === 'shut off',
      1_500,
    );

    // HALTED: startVm is refused, naming ALWAYS; the domain stays off.
    const halted = await applied(gw, {
      platformId,
      name,
      spec: { vcpus: 1, memoryMiB: 128, runStrategy: 'HALTED' },
      resourceVersion: made.spec.resourceVersion,
    });
    expect(halted.spec.generation).toBe(made.spec.generation + 1);
    await until(
      'decl-manual converged, stopped',
      () => declaration(gw, platformId, name),
      (d) => isConverged(d, 'STOPPED', 'OFF'),
      10_000,
    );
    const start = await mutate(gw, 'startVm', { vmId });
    expect(start.userErrors).toEqual([
      expect.objectContaining({ code: 'MANAGED_BY_DECLARATION', message: expect.stringContaining('ALWAYS') }),
    ]);
    expect(start.task).toBeNull();
    // Started behind its back: stopped again.
    await virsh('start', name);
    await until(
      'decl-manual shut off again (virsh)',
      () => virsh('domstate', name),
      (s) => s === 'shut off',
      10_000,
    );
  }, 40_000);

  it('gives the undeclared test domain no spec and a RUNNING status', async () => {
    const vm = (await vmNamed(gw, 'test'))!;
    expect(vm.powerState).toBe('ON');
    expect(vm.spec).toBeNull();
    expect(vm.status).toMatchObject({ phase: 'RUNNING', observedGeneration: null });
    expect(conditionTypes(vm.status)).toEqual(['PlatformReachable', 'Ready']);
    expect(condition(vm.status, 'Ready')!.status).toBe('TRUE');
  });
});

import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';

import { validateConfig } from '../src/config/load.js';
import type { VspherePlatformConfig } from '../src/config/schema.js';
import { readInventory } from '../src/datasources/full-read.js';
import type {
  FullReadReason,
  InventoryChange,
  InventoryState,
  VmState,
  WatchOptions,
  WatchSink,
} from '../src/datasources/watch.js';
import type { UpstreamTaskRecord } from '../src/model/upstream-task.js';
import { applyPropertyChange } from '../src/datasources/vsphere/property-changes.js';
import type { ObjectUpdate, UpdateSet } from '../src/datasources/vsphere/property-collector.js';
import { WatchedInventory } from '../src/datasources/vsphere/watch-inventory.js';
import { VsphereProvider } from '../src/datasources/vsphere/provider.js';
import { VsphereSession } from '../src/datasources/vsphere/session.js';
import type { VsphereInventoryWatch } from '../src/datasources/vsphere/watch.js';
import { invokeTask, terminateSession } from '../src/datasources/vsphere/vim.js';
import {
  type MoRef,
  type XNode,
  child,
  children,
  elementXml,
  moRefOf,
  moRefXml,
  parseXml,
  textOf,
} from '../src/datasources/vsphere/xml.js';
import { type Vcsim, type VcsimOptions, startVcsim, vspherePlatform, adminSession } from './helpers/vcsim.js';
import { eventually } from './helpers/subscriptions.js';

// The vSphere watch follows vCenter's change stream (a PropertyCollector
// filter over a container view, then WaitForUpdatesEx): its full read must be
// what the provider's own reads give, and every change made behind the
// gateway's back must arrive as the object, whole, within a second.

const silent = pino({ level: 'silent' });

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => undefined);
});

async function simulator(opts: VcsimOptions = {}): Promise<Vcsim> {
  const sim = await startVcsim(opts);
  cleanups.push(() => sim.stop());
  return sim;
}

async function provider(sim: Vcsim, extra: Record<string, unknown> = {}): Promise<VsphereProvider> {
  const config = validateConfig({
    platforms: [vspherePlatform(sim, { retryInitialMs: 50, retryMaxMs: 200, ...extra })],
  });
  const p = new VsphereProvider(config.platforms[0] as VspherePlatformConfig, silent);
  await p.start();
  cleanups.push(() => p.stop());
  expect(p.state().status).toBe('CONNECTED');
  return p;
}

/** A session of the test's own, for changes made behind the gateway's back. */
async function admin(sim: Vcsim): Promise<VsphereSession> {
  const s = await adminSession(sim);
  cleanups.push(() => s.close());
  return s;
}

const reporter = { progress: () => {}, upstreamTask: () => {} };

/** Runs a *_Task method and waits for it to succeed; its result. */
async function task(s: VsphereSession, method: string, target: MoRef, args = ''): Promise<XNode | undefined> {
  return s.tasks.wait(await invokeTask(s.client, method, target, args), reporter);
}

const vmRef = (value: string): MoRef => ({ type: 'VirtualMachine', value });

type Call =
  | { type: 'replace'; state: InventoryState; reason: FullReadReason; at: number }
  | { type: 'apply'; changes: readonly InventoryChange[]; at: number }
  | { type: 'interrupted'; reason: string; at: number };

/**
 * A sink that records every call, and a mirror of its own built from them.
 * vCenter's recent tasks are kept apart (`upstreamTasks`): calls hold the
 * inventory alone, as readInventory reads it.
 */
class RecordingSink implements WatchSink {
  readonly calls: Call[] = [];
  mirror: InventoryState | null = null;
  /** Every recent task reported, as last reported, by its ID. */
  readonly upstreamTasks = new Map<string, UpstreamTaskRecord>();

  replace(full: InventoryState, reason: FullReadReason): void {
    for (const t of full.upstreamTasks) this.upstreamTasks.set(t.nativeId, t);
    const state = { ...full, upstreamTasks: [] };
    this.calls.push({ type: 'replace', state, reason, at: Date.now() });
    this.mirror = { ...state, vms: [...state.vms] };
    for (const k of ['datacenters', 'clusters', 'hosts', 'networks', 'storage'] as const) {
      (this.mirror as unknown as Record<string, unknown[]>)[k] = [...state[k]];
    }
  }

  apply(all: readonly InventoryChange[]): void {
    for (const c of all) if (c.kind === 'UpstreamTask' && c.record) this.upstreamTasks.set(c.nativeId, c.record);
    const changes = all.filter((c) => c.kind !== 'UpstreamTask');
    if (changes.length === 0) return;
    this.calls.push({ type: 'apply', changes, at: Date.now() });
    const m = this.mirror!;
    for (const c of changes) {
      const put = <R>(list: R[], id: (r: R) => string, record: R | null) => {
        const i = list.findIndex((r) => id(r) === c.nativeId);
        if (record === null) {
          if (i >= 0) list.splice(i, 1);
        } else if (i >= 0) list[i] = record;
        else list.push(record);
      };
      if (c.kind === 'VirtualMachine') put<VmState>(m.vms, (v) => v.vm.nativeId, c.record);
      else if (c.kind === 'Datacenter') put(m.datacenters, (r) => r.nativeId, c.record);
      else if (c.kind === 'Cluster') put(m.clusters, (r) => r.nativeId, c.record);
      else if (c.kind === 'Host') put(m.hosts, (r) => r.nativeId, c.record);
      else if (c.kind === 'Network') put(m.networks, (r) => r.nativeId, c.record);
      else if (c.kind === 'Storage') put(m.storage, (r) => r.nativeId, c.record);
    }
  }

  interrupted(reason: string): void {
    this.calls.push({ type: 'interrupted', reason, at: Date.now() });
  }

  /** Waits for a call matching `match` among those after index `from`. */
  async next<T extends Call['type']>(
    type: T,
    match: (c: Extract<Call, { type: T }>) => boolean = () => true,
    ms = 5_000,
    from = 0,
  ): Promise<Extract<Call, { type: T }>> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.calls
        .slice(from)
        .find((c): c is Extract<Call, { type: T }> => c.type === type && match(c as Extract<Call, { type: T }>));
      if (found) return found;
      if (Date.now() > deadline) {
        throw new Error(`no ${type} call within ${ms} ms; calls: ${this.calls.map((c) => c.type).join(', ')}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** The VM change for `id` in an apply call after index `from`. */
  async vmChange(id: string, match: (r: VmState | null) => boolean, from: number, ms = 1_000) {
    const call = await this.next(
      'apply',
      (c) =>
        c.changes.some((x) => x.kind === 'VirtualMachine' && x.nativeId === id && match(x.record as VmState | null)),
      ms,
      from,
    );
    const change = call.changes.find((x) => x.kind === 'VirtualMachine' && x.nativeId === id)!;
    return { call, record: change.record as VmState | null };
  }
}

const OPTIONS: WatchOptions = { resyncIntervalMs: 600_000, retryInitialMs: 50, retryMaxMs: 200 };

function watch(p: VsphereProvider, sink: WatchSink, options: Partial<WatchOptions> = {}): VsphereInventoryWatch {
  const w = p.watch(sink, { ...OPTIONS, ...options });
  cleanups.push(() => w.stop());
  return w;
}

/** Lists sorted by native ID: a mirror keeps no order. */
function sorted(s: InventoryState): InventoryState {
  const by =
    <R>(id: (r: R) => string) =>
    (a: R, b: R) =>
      id(a).localeCompare(id(b));
  return {
    datacenters: [...s.datacenters].sort(by((r) => r.nativeId)),
    clusters: [...s.clusters].sort(by((r) => r.nativeId)),
    hosts: [...s.hosts].sort(by((r) => r.nativeId)),
    vms: [...s.vms].sort(by((v) => v.vm.nativeId)),
    networks: [...s.networks].sort(by((r) => r.nativeId)),
    storage: [...s.storage].sort(by((r) => r.nativeId)),
    volumes: s.volumes,
    upstreamTasks: s.upstreamTasks,
  };
}

function poweredOnVm(sim: Vcsim): string {
  return Object.entries(sim.oracle.vms).find(([, v]) => v.powerState === 'poweredOn' && !v.template)![0];
}

describe('vSphere watch: full read', () => {
  it.each<[string, VcsimOptions]>([
    ['a vCenter', { dc: 2, cluster: 2, clusterHost: 2, host: 1, vm: 2, ds: 2, pg: 2 }],
    ['a standalone ESXi host', { esx: true, vm: 3 }],
  ])('replaces the mirror with exactly what readInventory reads, from %s', async (_name, opts) => {
    const sim = await simulator(opts);
    const p = await provider(sim);
    const sink = new RecordingSink();
    const w = watch(p, sink);
    const first = await sink.next('replace');
    expect(first.reason).toBe('initial');
    const read = await readInventory(p);
    // Same records in the same order: the view walks the inventory as the provider's views do.
    expect(first.state).toEqual(read);
    expect(first.state.vms).toHaveLength(Object.keys(sim.oracle.vms).length);
    expect(first.state.hosts).toHaveLength(Object.keys(sim.oracle.hosts).length);
    expect(first.state.datacenters.length).toBeGreaterThan(0);
    // One filter over one view on a collector of the watch's own, one WaitForUpdatesEx for everything.
    expect(w.callCounts()).toMatchObject({
      CreatePropertyCollector: 1,
      CreateContainerView: 1,
      CreateFilter: 1,
      WaitForUpdatesEx: expect.any(Number),
    });
    expect(w.callCounts()['RetrievePropertiesEx'] ?? 0).toBe(0);
  });
});

describe('vSphere watch: changes', () => {
  it('reports changes made behind its back as whole objects within a second, without reading anything', async () => {
    const sim = await simulator({ dc: 1, cluster: 1, clusterHost: 2, host: 1, vm: 2, ds: 1, pg: 1 });
    const p = await provider(sim);
    const a = await admin(sim);
    const sink = new RecordingSink();
    const w = watch(p, sink);
    await sink.next('replace');
    const mainTotal = () => p.withClient(async (s) => s.client.callCounts().total);
    const mainCalls = await mainTotal();
    const latencies: Record<string, number> = {};

    // Power off: the VM, whole, with its new state; no RetrievePropertiesEx.
    const vm = poweredOnVm(sim);
    let before = w.callCounts();
    let from = sink.calls.length;
    let t0 = Date.now();
    await task(a, 'PowerOffVM_Task', vmRef(vm));
    const off = await sink.vmChange(vm, (r) => r?.vm.powerState === 'OFF', from);
    latencies['PowerOffVM_Task'] = off.call.at - t0;
    const after = w.callCounts();
    expect(await mainTotal()).toBe(mainCalls);
    expect(off.record).toEqual((await readInventory(p)).vms.find((v) => v.vm.nativeId === vm));
    const mainAfterRead = await mainTotal();
    expect((after['RetrievePropertiesEx'] ?? 0) - (before['RetrievePropertiesEx'] ?? 0)).toBe(0);
    expect((after['WaitForUpdatesEx'] ?? 0) - (before['WaitForUpdatesEx'] ?? 0)).toBeGreaterThanOrEqual(1);
    expect((after['WaitForUpdatesEx'] ?? 0) - (before['WaitForUpdatesEx'] ?? 0)).toBeLessThanOrEqual(2);

    // A snapshot: the VM's snapshot list.
    before = w.callCounts();
    from = sink.calls.length;
    t0 = Date.now();
    const snap = moRefOf(
      await task(
        a,
        'CreateSnapshot_Task',
        vmRef(vm),
        elementXml('name', 'before-upgrade') + elementXml('memory', false) + elementXml('quiesce', false),
      ),
    )!;
    const snapped = await sink.vmChange(vm, (r) => r?.snapshots.length === 1, from);
    latencies['CreateSnapshot_Task'] = snapped.call.at - t0;
    expect(snapped.record!.snapshots[0]).toMatchObject({
      name: 'before-upgrade',
      key: snap.value,
      isCurrent: true,
      rawState: 'poweredOff',
    });

    // A rename.
    from = sink.calls.length;
    t0 = Date.now();
    await task(a, 'Rename_Task', vmRef(vm), elementXml('newName', 'renamed-vm'));
    const renamed = await sink.vmChange(vm, (r) => r?.vm.name === 'renamed-vm', from);
    latencies['Rename_Task'] = renamed.call.at - t0;

    // A clone: a new VM, whole.
    const [parent] = await a.retrieveObjects([vmRef(vm)], [{ type: 'VirtualMachine', paths: ['parent'] }]);
    const folder = moRefOf(parent!.props.get('parent'))!;
    from = sink.calls.length;
    t0 = Date.now();
    const clone = moRefOf(
      await task(
        a,
        'CloneVM_Task',
        vmRef(vm),
        moRefXml('folder', folder) +
          elementXml('name', 'the-clone') +
          `<spec><location/>${elementXml('template', false)}${elementXml('powerOn', false)}</spec>`,
      ),
    )!;
    const cloned = await sink.vmChange(clone.value, (r) => r?.vm.name === 'the-clone', from);
    latencies['CloneVM_Task'] = cloned.call.at - t0;

    // A destroy: null.
    from = sink.calls.length;
    t0 = Date.now();
    await task(a, 'Destroy_Task', vmRef(vm));
    const destroyed = await sink.vmChange(vm, (r) => r === null, from);
    latencies['Destroy_Task'] = destroyed.call.at - t0;

    // None of it cost a read, on the watch's session or the platform's.
    const total = w.callCounts();
    expect(total['RetrievePropertiesEx'] ?? 0).toBe(before['RetrievePropertiesEx'] ?? 0);
    expect(await mainTotal()).toBe(mainAfterRead);

    // The mirror built from the full read and the changes is what a fresh read gives.
    expect(sorted(sink.mirror!)).toEqual(sorted(await readInventory(p)));
    for (const ms of Object.values(latencies)) expect(ms).toBeLessThan(1_000);
    console.log('vSphere watch: ms from task end to sink.apply', latencies, 'watch calls', total);
  });

  it('follows the tree: renamed and new datacenters, a renamed cluster, a compute resource moved to a folder', async () => {
    const sim = await simulator({ dc: 1, cluster: 1, clusterHost: 2, host: 1, vm: 2, ds: 1, pg: 1 });
    const p = await provider(sim);
    const a = await admin(sim);
    const sink = new RecordingSink();
    watch(p, sink);
    const { state } = await sink.next('replace');

    // A cluster and a datacenter renamed: their own records, and the VMs whose inventory paths name them.
    const cluster = state.clusters[0]!;
    const dc = state.datacenters[0]!;
    const pathsOf = (changes: readonly InventoryChange[], rename: (path: string) => string = (p) => p) =>
      changes
        .filter((ch) => ch.kind === 'VirtualMachine')
        .map((ch) => {
          const facts = (ch.record as VmState).details.vsphere;
          return [ch.nativeId, rename(facts?.folderPath ?? ''), rename(facts?.resourcePoolPath ?? '')];
        })
        .sort();
    const inCluster = state.vms.filter((v) =>
      v.details.vsphere?.resourcePoolPath?.startsWith(`/${dc.name}/host/${cluster.name}/`),
    );
    expect(inCluster.length).toBeGreaterThan(0);
    let from = sink.calls.length;
    await task(
      a,
      'Rename_Task',
      { type: 'ClusterComputeResource', value: cluster.nativeId },
      elementXml('newName', 'c-new'),
    );
    const c = await sink.next('apply', () => true, 1_000, from);
    expect(c.changes.filter((ch) => ch.kind !== 'VirtualMachine')).toEqual([
      { kind: 'Cluster', nativeId: cluster.nativeId, record: { ...cluster, name: 'c-new' } },
    ]);
    expect(pathsOf(c.changes)).toEqual(
      pathsOf(
        inCluster.map((v) => ({ kind: 'VirtualMachine', nativeId: v.vm.nativeId, record: v })),
        (p) => p.replace(`/host/${cluster.name}/`, '/host/c-new/'),
      ),
    );
    // The rename's own vCenter task came through the same filter, apart from the inventory.
    await eventually(() =>
      [...sink.upstreamTasks.values()].some((t) => t.description.endsWith('.rename') && t.state === 'SUCCEEDED'),
    );
    from = sink.calls.length;
    await task(a, 'Rename_Task', { type: 'Datacenter', value: dc.nativeId }, elementXml('newName', 'dc-new'));
    const d = await sink.next('apply', () => true, 1_000, from);
    expect(d.changes.filter((ch) => ch.kind !== 'VirtualMachine')).toEqual([
      { kind: 'Datacenter', nativeId: dc.nativeId, record: { ...dc, name: 'dc-new' } },
    ]);
    // Every VM's folder and pool are in the datacenter.
    expect(pathsOf(d.changes)).toEqual(
      pathsOf(
        state.vms.map((v) => ({ kind: 'VirtualMachine', nativeId: v.vm.nativeId, record: v })),
        (p) => p.replace(`/${dc.name}/`, '/dc-new/').replace(`/host/${cluster.name}/`, '/host/c-new/'),
      ),
    );

    // The standalone host's compute resource moved into a new folder: still in its datacenter.
    const standalone = state.hosts.find((h) => h.clusterNativeId === null)!;
    const [hostProps] = await a.retrieveObjects(
      [{ type: 'HostSystem', value: standalone.nativeId }],
      [{ type: 'HostSystem', paths: ['parent'] }],
    );
    const computeResource = moRefOf(hostProps!.props.get('parent'))!;
    const [crProps] = await a.retrieveObjects([computeResource], [{ type: 'ComputeResource', paths: ['parent'] }]);
    const hostFolder = moRefOf(crProps!.props.get('parent'))!;
    const folder = moRefOf(
      child(
        await a.client.invoke('CreateFolder', moRefXml('_this', hostFolder) + elementXml('name', 'rack-1')),
        'returnval',
      ),
    )!;
    await task(a, 'MoveIntoFolder_Task', folder, moRefXml('list', computeResource));
    await new Promise((r) => setTimeout(r, 800));
    expect(sorted(sink.mirror!)).toEqual(sorted(await readInventory(p)));
    expect(sink.mirror!.hosts.find((h) => h.nativeId === standalone.nativeId)).toEqual(standalone);

    // A new datacenter.
    from = sink.calls.length;
    const created = await a.client.invoke(
      'CreateDatacenter',
      moRefXml('_this', a.content.rootFolder) + elementXml('name', 'dc-2'),
    );
    const dc2 = moRefOf(child(created, 'returnval'))!;
    const added = await sink.next(
      'apply',
      (x) => x.changes.some((y) => y.kind === 'Datacenter' && y.nativeId === dc2.value && y.record?.name === 'dc-2'),
      1_000,
      from,
    );
    // vcsim gives a new datacenter a "VM Network" of its own. (vcsim 0.24 links the datacenter's folders
    // after adding them, so its container views miss them and the network is placed in no datacenter
    // until the next resync: no equality with a fresh read here.)
    expect(added.changes.filter((y) => y.kind !== 'Datacenter').map((y) => y.kind)).toEqual(['Network']);
  });

  it('reads everything again every resyncIntervalMs, on a fresh filter', async () => {
    const sim = await simulator({ vm: 2 });
    const p = await provider(sim);
    const sink = new RecordingSink();
    const w = watch(p, sink, { resyncIntervalMs: 1_500 });
    await sink.next('replace', (c) => c.reason === 'initial');
    const resync = await sink.next('replace', (c) => c.reason === 'resync', 5_000);
    expect(resync.state).toEqual(await readInventory(p));
    expect(w.callCounts()).toMatchObject({ CreatePropertyCollector: 1, CreateFilter: 2, DestroyPropertyFilter: 1 });
    expect(sink.calls.filter((c) => c.type === 'interrupted')).toEqual([]);
  });
});

describe('vSphere watch: faults and stop', () => {
  it('reports a silent server as interrupted, and reads everything again when it answers', async () => {
    const sim = await simulator({ vm: 2 });
    // Request timeout 1 s: each long poll waits 1 s, and a silent server is noticed within 2 s.
    const p = await provider(sim, { requestTimeoutMs: 1_000 });
    const sink = new RecordingSink();
    watch(p, sink);
    await sink.next('replace');
    const pausedAt = Date.now();
    sim.pause();
    const interrupted = await sink.next('interrupted', () => true, 10_000);
    expect(interrupted.at - pausedAt).toBeLessThan(4_000);
    sim.resume();
    const back = await sink.next('replace', (c) => c.reason === 'reconnect', 15_000);
    expect(back.state).toEqual(await readInventory(p));
    // The stream works again.
    const a = await admin(sim);
    const vm = poweredOnVm(sim);
    const from = sink.calls.length;
    await task(a, 'PowerOffVM_Task', vmRef(vm));
    await sink.vmChange(vm, (r) => r?.vm.powerState === 'OFF', from);
  }, 40_000);

  it('reconnects to a simulator restarted on the same port', async () => {
    const opts: VcsimOptions = { vm: 2 };
    const sim = await simulator(opts);
    // The simulator's shutdown waits for requests in flight: a 1 s long poll, not 30 s.
    const p = await provider(sim, { requestTimeoutMs: 1_000 });
    const sink = new RecordingSink();
    watch(p, sink);
    await sink.next('replace');
    await sim.stop();
    const interrupted = await sink.next('interrupted', () => true, 5_000);
    expect(interrupted.reason).toMatch(/cannot reach|unavailable/i);
    const again = await simulator({ ...opts, port: sim.port });
    const back = await sink.next('replace', (c) => c.reason === 'reconnect', 20_000);
    expect(back.state).toEqual(await readInventory(p));
    expect(back.state.vms).toHaveLength(Object.keys(again.oracle.vms).length);
  }, 40_000);

  it('starts again when its session is ended upstream (NotAuthenticated)', async () => {
    const sim = await simulator({ vm: 2 });
    const p = await provider(sim, { requestTimeoutMs: 1_000 });
    const sink = new RecordingSink();
    const w = watch(p, sink);
    await sink.next('replace');
    const a = await admin(sim);
    const mainKey = await p.withClient(async (s) => s.sessionKey);
    const [sm] = await a.retrieveObjects(
      [{ type: 'SessionManager', value: a.content.sessionManager.value }],
      [{ type: 'SessionManager', paths: ['sessionList'] }],
    );
    const keys = children(sm!.props.get('sessionList'), 'UserSession')
      .map((u) => textOf(child(u, 'key'))!)
      .filter((k) => k !== mainKey && k !== a.sessionKey);
    expect(keys).toHaveLength(1);
    await terminateSession(a.client, a.content, keys);
    const interrupted = await sink.next('interrupted', () => true, 5_000);
    expect(interrupted.reason).toBe('NotAuthenticated');
    const back = await sink.next('replace', (c) => c.reason === 'reconnect', 10_000);
    expect(back.state).toEqual(await readInventory(p));
    // Each of its sessions is a clone of the platform's: no password sent again.
    expect(w.callCounts()).toMatchObject({ CloneSession: 2 });
    expect(w.callCounts()['Login']).toBeUndefined();
  }, 30_000);

  it('stops promptly, cancels its long poll, cleans up upstream, and calls the sink no more', async () => {
    const sim = await simulator({ vm: 2 });
    const p = await provider(sim);
    const a = await admin(sim);
    const sink = new RecordingSink();
    const w = watch(p, sink);
    await sink.next('replace');
    // Into a long poll (30 s with the default request timeout).
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    await w.stop();
    const took = Date.now() - t0;
    expect(took).toBeLessThan(1_000);
    const calls = sink.calls.length;
    expect(w.callCounts()).toMatchObject({
      CancelWaitForUpdates: expect.any(Number),
      DestroyPropertyCollector: 1,
      DestroyView: 1,
      Logout: 1,
    });
    await task(a, 'PowerOffVM_Task', vmRef(poweredOnVm(sim)));
    await new Promise((r) => setTimeout(r, 1_000));
    expect(sink.calls).toHaveLength(calls);
    console.log(`vSphere watch: stop() took ${took} ms`);
  });

  it('stops within its grace time even when the server hangs', async () => {
    const sim = await simulator({ vm: 2 });
    const p = await provider(sim);
    const sink = new RecordingSink();
    const w = watch(p, sink);
    await sink.next('replace');
    sim.pause();
    cleanups.push(async () => sim.resume());
    const t0 = Date.now();
    await w.stop();
    expect(Date.now() - t0).toBeLessThan(3_000);
    const calls = sink.calls.length;
    sim.resume();
    await new Promise((r) => setTimeout(r, 500));
    expect(sink.calls).toHaveLength(calls);
  });
});

describe('applyPropertyChange', () => {
  const val = (xml: string) => parseXml(xml);
  const vmPaths = ['name', 'snapshot', 'config.hardware.device', 'summary', 'runtime.powerState'];
  const devices = () =>
    val(
      '<val xsi:type="ArrayOfVirtualDevice">' +
        '<VirtualDevice xsi:type="VirtualDisk"><key>2000</key><unitNumber>0</unitNumber></VirtualDevice>' +
        '<VirtualDevice xsi:type="VirtualE1000"><key>4000</key><macAddress>00:50:56:aa:bb:cc</macAddress></VirtualDevice>' +
        '</val>',
    );
  const keys = (n: XNode | undefined) => children(n, 'VirtualDevice').map((d) => textOf(child(d, 'key')));

  it('assigns, unsets and removes whole properties', () => {
    const props = new Map<string, XNode>();
    expect(applyPropertyChange(props, vmPaths, { name: 'name', op: 'assign', val: val('<val>a</val>') })).toBe(
      'applied',
    );
    expect(textOf(props.get('name'))).toBe('a');
    expect(applyPropertyChange(props, vmPaths, { name: 'name', op: 'assign', val: undefined })).toBe('applied');
    expect(props.has('name')).toBe(false);
    expect(applyPropertyChange(props, vmPaths, { name: 'guest.net', op: 'assign', val: val('<val/>') })).toBe(
      'ignored',
    );
    // An enclosing property: the object is read again.
    expect(applyPropertyChange(props, vmPaths, { name: 'config', op: 'assign', val: val('<val/>') })).toBe('refetch');
  });

  it('applies changes below a requested property: fields, and array items by key', () => {
    const props = new Map<string, XNode>([
      ['config.hardware.device', devices()],
      ['summary', val('<val><runtime><powerState>poweredOn</powerState></runtime><name>x</name></val>')],
      ['snapshot', val('<val><currentSnapshot type="VirtualMachineSnapshot">s-1</currentSnapshot></val>')],
    ]);
    const apply = (name: string, op: 'assign' | 'add' | 'remove', v?: string) =>
      applyPropertyChange(props, vmPaths, { name, op, val: v === undefined ? undefined : val(v) });

    expect(apply('summary.runtime.powerState', 'assign', '<val>poweredOff</val>')).toBe('applied');
    expect(textOf(child(child(props.get('summary'), 'runtime'), 'powerState'))).toBe('poweredOff');
    expect(textOf(child(props.get('summary'), 'name'))).toBe('x');

    expect(apply('snapshot.currentSnapshot', 'assign', '<val type="VirtualMachineSnapshot">s-2</val>')).toBe('applied');
    expect(moRefOf(child(props.get('snapshot'), 'currentSnapshot'))).toEqual({
      type: 'VirtualMachineSnapshot',
      value: 's-2',
    });
    expect(
      apply(
        'snapshot.rootSnapshotList',
        'assign',
        '<val xsi:type="ArrayOfVirtualMachineSnapshotTree"><VirtualMachineSnapshotTree><name>a</name></VirtualMachineSnapshotTree><VirtualMachineSnapshotTree><name>b</name></VirtualMachineSnapshotTree></val>',
      ),
    ).toBe('applied');
    expect(children(props.get('snapshot'), 'rootSnapshotList').map((t) => textOf(child(t, 'name')))).toEqual([
      'a',
      'b',
    ]);

    expect(
      apply(
        'config.hardware.device[4000]',
        'assign',
        '<val xsi:type="VirtualE1000"><key>4000</key><macAddress>00:50:56:00:00:01</macAddress></val>',
      ),
    ).toBe('applied');
    const nic = children(props.get('config.hardware.device'), 'VirtualDevice')[1]!;
    expect(textOf(child(nic, 'macAddress'))).toBe('00:50:56:00:00:01');
    expect(nic.attrs['xsi:type']).toBe('VirtualE1000');

    expect(apply('config.hardware.device[2000].unitNumber', 'assign', '<val>3</val>')).toBe('applied');
    expect(textOf(child(children(props.get('config.hardware.device'), 'VirtualDevice')[0], 'unitNumber'))).toBe('3');

    expect(apply('config.hardware.device[3002]', 'add', '<val xsi:type="VirtualCdrom"><key>3002</key></val>')).toBe(
      'applied',
    );
    expect(keys(props.get('config.hardware.device'))).toEqual(['2000', '4000', '3002']);
    expect(apply('config.hardware.device[2000]', 'remove')).toBe('applied');
    expect(keys(props.get('config.hardware.device'))).toEqual(['4000', '3002']);

    // Below a property the object does not have: read it again.
    props.delete('snapshot');
    expect(apply('snapshot.currentSnapshot', 'assign', '<val type="VirtualMachineSnapshot">s-3</val>')).toBe('refetch');
  });
});

describe('WatchedInventory', () => {
  // A small inventory as WaitForUpdatesEx reports it: every object entering with its properties.
  const filter: MoRef = { type: 'PropertyFilter', value: 'f-1' };
  const ref = (type: string, value: string) => `<val type="${type}">${value}</val>`;
  const update = (kind: ObjectUpdate['kind'], type: string, value: string, props: Record<string, string> = {}) => ({
    kind,
    obj: { type, value },
    changes: Object.entries(props).map(([name, v]) => ({
      name,
      op: 'assign' as const,
      val: parseXml(v.startsWith('<') ? v : `<val>${v}</val>`),
    })),
    missing: [],
  });
  const set = (...objects: ObjectUpdate[]): UpdateSet => ({
    version: '1',
    truncated: false,
    filters: [{ filter, objects }],
  });
  const full = () =>
    set(
      update('enter', 'Folder', 'root', { name: 'Datacenters' }),
      update('enter', 'Datacenter', 'dc-1', { name: 'DC1', parent: ref('Folder', 'root') }),
      update('enter', 'Datacenter', 'dc-2', { name: 'DC2', parent: ref('Folder', 'root') }),
      update('enter', 'Folder', 'hosts-1', { name: 'host', parent: ref('Datacenter', 'dc-1') }),
      update('enter', 'Folder', 'hosts-2', { name: 'host', parent: ref('Datacenter', 'dc-2') }),
      update('enter', 'ClusterComputeResource', 'c-1', {
        name: 'C1',
        parent: ref('Folder', 'hosts-1'),
        summary: '<val><numHosts>1</numHosts><totalCpu>1000</totalCpu></val>',
      }),
      update('enter', 'ResourcePool', 'rp-1', { name: 'Resources', parent: ref('ClusterComputeResource', 'c-1') }),
      update('enter', 'ResourcePool', 'rp-2', { name: 'Child', parent: ref('ResourcePool', 'rp-1') }),
      update('enter', 'HostSystem', 'host-1', { name: 'esx1', parent: ref('ClusterComputeResource', 'c-1') }),
      update('enter', 'VirtualMachine', 'vm-1', {
        name: 'a',
        'runtime.powerState': 'poweredOn',
        resourcePool: ref('ResourcePool', 'rp-1'),
      }),
      update('enter', 'VirtualMachine', 'vm-2', {
        name: 'b',
        'runtime.powerState': 'poweredOff',
        resourcePool: ref('ResourcePool', 'rp-2'),
      }),
    );

  it('reports only what a tree change changes: pool names and paths in VMs, datacenters of hosts, clusters themselves', () => {
    const inv = new WatchedInventory('vc');
    inv.apply(full(), filter);
    const state = inv.state();
    expect(state.vms.map((v) => v.details.vsphere?.resourcePoolName)).toEqual(['Resources', 'Child']);
    const poolPaths = (changes: readonly InventoryChange[]) =>
      changes.map((c) => [c.nativeId, (c.record as VmState | null)?.details.vsphere?.resourcePoolPath]);
    expect(poolPaths(state.vms.map((v) => ({ kind: 'VirtualMachine', nativeId: v.vm.nativeId, record: v })))).toEqual([
      ['vm-1', '/DC1/host/C1/Resources'],
      ['vm-2', '/DC1/host/C1/Resources/Child'],
    ]);
    expect(state.hosts[0]).toMatchObject({ nativeId: 'host-1', clusterNativeId: 'c-1', datacenterNativeId: 'dc-1' });

    // A pool renamed: the VMs in it and in the pools below it (whose paths name it), nothing else.
    let changes = inv.changes(inv.apply(set(update('modify', 'ResourcePool', 'rp-1', { name: 'Gold' })), filter));
    expect(poolPaths(changes)).toEqual([
      ['vm-1', '/DC1/host/C1/Gold'],
      ['vm-2', '/DC1/host/C1/Gold/Child'],
    ]);
    expect((changes[0]!.record as VmState).details.vsphere?.resourcePoolName).toBe('Gold');

    // A cluster's summary: the cluster, nothing else.
    changes = inv.changes(
      inv.apply(
        set(update('modify', 'ClusterComputeResource', 'c-1', { summary: '<val><numHosts>2</numHosts></val>' })),
        filter,
      ),
    );
    expect(changes).toEqual([
      {
        kind: 'Cluster',
        nativeId: 'c-1',
        record: expect.objectContaining({ numHosts: 2, datacenterNativeId: 'dc-1' }),
      },
    ]);

    // The cluster moved to the other datacenter: the cluster, its host, and the VMs in its pools.
    changes = inv.changes(
      inv.apply(set(update('modify', 'ClusterComputeResource', 'c-1', { parent: ref('Folder', 'hosts-2') })), filter),
    );
    const [vmChanges, others] = [
      changes.filter((c) => c.kind === 'VirtualMachine'),
      changes.filter((c) => c.kind !== 'VirtualMachine'),
    ];
    expect(
      others.map((c) => [c.kind, c.nativeId, (c.record as { datacenterNativeId: string }).datacenterNativeId]),
    ).toEqual([
      ['Cluster', 'c-1', 'dc-2'],
      ['Host', 'host-1', 'dc-2'],
    ]);
    expect(poolPaths(vmChanges)).toEqual([
      ['vm-1', '/DC2/host/C1/Gold'],
      ['vm-2', '/DC2/host/C1/Gold/Child'],
    ]);

    // A pool and a datacenter gone.
    changes = inv.changes(
      inv.apply(set(update('leave', 'ResourcePool', 'rp-2'), update('leave', 'Datacenter', 'dc-1')), filter),
    );
    expect(changes).toEqual([
      { kind: 'Datacenter', nativeId: 'dc-1', record: null },
      { kind: 'VirtualMachine', nativeId: 'vm-2', record: expect.anything() },
    ]);
    expect((changes[1]!.record as VmState).details.vsphere?.resourcePoolName).toBeNull();

    // The mirror's view of all this is a fresh mapping of what the watch holds.
    const vm = inv.changes(inv.apply(set(update('modify', 'VirtualMachine', 'vm-1', { name: 'a2' })), filter));
    expect(vm).toEqual([{ kind: 'VirtualMachine', nativeId: 'vm-1', record: inv.state().vms[0] }]);
    expect(inv.changes(inv.apply(set(update('leave', 'VirtualMachine', 'vm-1')), filter))).toEqual([
      { kind: 'VirtualMachine', nativeId: 'vm-1', record: null },
    ]);
  });

  it('keeps an object that entered again in the same answer as its leave (vcsim reports a move so)', () => {
    const inv = new WatchedInventory('vc');
    inv.apply(full(), filter);
    inv.state();
    const moved = set(
      update('enter', 'ClusterComputeResource', 'c-1', { name: 'C1', parent: ref('Folder', 'hosts-1') }),
      update('leave', 'ClusterComputeResource', 'c-1'),
    );
    expect(inv.changes(inv.apply(moved, filter))).toEqual([
      { kind: 'Cluster', nativeId: 'c-1', record: expect.objectContaining({ numHosts: null }) },
    ]);
    expect(inv.state().hosts[0]!.datacenterNativeId).toBe('dc-1');
  });

  it('asks for objects to be read again when a change cannot be applied, and ignores other filters', () => {
    const inv = new WatchedInventory('vc');
    inv.apply(full(), filter);
    const delta = inv.apply(
      {
        version: '2',
        truncated: false,
        filters: [
          { filter: { type: 'PropertyFilter', value: 'other' }, objects: [update('leave', 'VirtualMachine', 'vm-1')] },
          { filter, objects: [update('modify', 'VirtualMachine', 'vm-2', { config: '<val/>' })] },
        ],
      },
      filter,
    );
    expect([...delta.refetch.keys()]).toEqual(['VirtualMachine:vm-2']);
    inv.reload(delta, []);
    expect(inv.changes(delta)).toEqual([{ kind: 'VirtualMachine', nativeId: 'vm-2', record: null }]);
    expect(inv.state().vms.map((v) => v.vm.nativeId)).toEqual(['vm-1']);
  });
});

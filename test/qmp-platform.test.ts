import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type Server, createServer } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';

import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { validateConfig } from '../src/config/load.js';
import type { QmpPlatformConfig } from '../src/config/schema.js';
import { readInventory } from '../src/datasources/full-read.js';
import { QmpProvider } from '../src/datasources/qmp/provider.js';
import { expandGlob, segmentMatcher } from '../src/datasources/qmp/sockets.js';
import { createRequestScope } from '../src/datasources/request-scope.js';
import type { InventoryChange, InventoryState, WatchSink } from '../src/datasources/watch.js';
import { encodeId } from '../src/model/ids.js';
import { type TestGateway, closedPort, startTestGateway } from './helpers/gateway.js';
import { type Guest, bootGuest } from './helpers/guest.js';
import { holdGuestTurn } from './helpers/guest-turn.js';
import { finished, mutate, succeed } from './helpers/mutations.js';
import { type QemuProcess, killAllQemus, startQemu } from './helpers/qemu-process.js';
import { type Subscription, eventually, subscribe } from './helpers/subscriptions.js';

// The QMP platform against real QEMU 7.2 processes: pc machines without a
// guest OS (SeaBIOS, a qcow2 disk) found by a glob, each with a second QMP
// monitor through which the test changes the VM behind the gateway's back;
// a real Linux guest (test/helpers/guest.ts) that powers itself off on the
// ACPI power button; and sockets that are missing, refuse, or speak no QMP.

const base = mkdtempSync(join(tmpdir(), 'qmp-p-'));
const dirs = { vms: join(base, 'vms'), oob: join(base, 'oob'), disks: join(base, 'disks') };
for (const d of Object.values(dirs)) mkdirSync(d);

const ALPHA_UUID = randomUUID();
const BRAVO_SOCKET = join(dirs.vms, 'bravo.qmp');
const platformGid = (id: string) => encodeId({ kind: 'Platform', platformId: id, nativeId: id });

let gw: TestGateway;
let alpha: QemuProcess;
let bravo: QemuProcess;
let guest: Guest | null = null;
let garbage: Server;

function qemu(file: string, name: string | null, uuid: string | null): Promise<QemuProcess> {
  return startQemu({ file, name, uuid, socketDir: dirs.vms, oobDir: dirs.oob, diskDir: dirs.disks });
}

holdGuestTurn();

beforeAll(async () => {
  // A real guest boots meanwhile (about 4 s under TCG; not guestAccel(), whose first KVM probe may
  // take 15 s); its QMP socket exists at once.
  const booting = bootGuest({ accel: 'tcg' });
  [alpha, bravo] = await Promise.all([qemu('alpha', 'alpha', ALPHA_UUID), qemu('bravo', null, null)]);
  // A socket file a killed QEMU left in the glob's directory: nothing listens on it.
  const zombie = await startQemu({
    file: 'zombie',
    name: 'zombie',
    uuid: null,
    socketDir: dirs.vms,
    oobDir: dirs.oob,
    diskDir: null,
  });
  await zombie.kill();
  // The same, listed by path: a platform whose only QEMU is gone.
  const stale = await startQemu({
    file: 'stale',
    name: 'stale',
    uuid: null,
    socketDir: base,
    oobDir: dirs.oob,
    diskDir: null,
  });
  await stale.kill();
  // A socket that answers, but not in QMP.
  garbage = createServer((s) => s.end('SSH-2.0-OpenSSH_9.2\r\n'));
  await new Promise<void>((resolve) => garbage.listen(join(base, 'garbage.sock'), resolve));
  guest = await booting;

  gw = await startTestGateway({
    inventory: { retryInitialMs: 50, retryMaxMs: 200 },
    platforms: [
      {
        id: 'lab',
        kind: 'qmp',
        sockets: [join(dirs.vms, '*.qmp')],
        rescanIntervalMs: 200,
        gracefulStopTimeoutMs: 1_500,
        commandTimeoutMs: 5_000,
        retryInitialMs: 50,
        retryMaxMs: 500,
      },
      { id: 'missing', kind: 'qmp', sockets: [join(base, 'missing.qmp')], retryInitialMs: 200, retryMaxMs: 400 },
      { id: 'refused', kind: 'qmp', sockets: [join(base, 'stale.qmp')], retryInitialMs: 200 },
      { id: 'garbage', kind: 'qmp', sockets: [join(base, 'garbage.sock')], retryInitialMs: 200 },
      { id: 'guest', kind: 'qmp', sockets: [guest.qmpSocket], gracefulStopTimeoutMs: 60_000 },
    ],
  });
  await eventually(async () => (await platform('lab')).inventoryState === 'SYNCED', 10_000);
}, 30_000);

afterAll(async () => {
  await gw?.close();
  await guest?.kill();
  await killAllQemus();
  garbage?.close();
  rmSync(base, { recursive: true, force: true });
});

// ---------------------------------------------------------------- queries

interface PlatformRow {
  name: string;
  kind: string;
  uri: string;
  status: string;
  statusMessage: string | null;
  hypervisorType: string | null;
  hypervisorVersion: string | null;
  inventoryState: string;
}

async function platform(id: string): Promise<PlatformRow> {
  const res = await gw.query<{ platforms: PlatformRow[] }>(
    '{ platforms { name kind uri status statusMessage hypervisorType hypervisorVersion inventoryState } }',
  );
  return res.data!.platforms.find((p) => p.name === id)!;
}

interface VmRow {
  id: string;
  name: string;
  uuid: string;
  powerState: string;
  phase: string;
  rawState: string;
  persistent: boolean;
  vcpus: number;
  memoryMiB: number;
  guestArch: string | null;
  machineType: string | null;
  disks: {
    device: string;
    target: string;
    bus: string | null;
    source: string | null;
    format: string | null;
    capacityBytes: number | null;
    readOnly: boolean;
  }[];
  snapshots: { id: string; name: string; includesMemory: boolean }[];
  host: { name: string; hypervisorType: string | null } | null;
}

const VM_FIELDS = `id name uuid powerState phase rawState persistent vcpus memoryMiB guestArch machineType
  disks { device target bus source format capacityBytes readOnly }
  snapshots { id name includesMemory } host { name hypervisorType }`;

async function vms(platformId = 'lab'): Promise<VmRow[]> {
  const res = await gw.query<{ virtualMachines: { nodes: VmRow[] } }>(
    `query($p: [ID!]) { virtualMachines(first: 100, filter: { platformIds: $p }) { nodes { ${VM_FIELDS} } } }`,
    { p: [platformGid(platformId)] },
  );
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return res.data!.virtualMachines.nodes;
}

async function vm(name: string): Promise<VmRow | undefined> {
  return (await vms()).find((v) => v.name === name);
}

const VM_CHANGED = `subscription($f: VmChangeFilter) {
  vmChanged(filter: $f) { type changes previousPowerState powerState vm { name powerState } }
}`;
interface VmEvent {
  vmChanged: {
    type: string;
    changes: string[];
    previousPowerState: string | null;
    powerState: string | null;
    vm: { name: string; powerState: string } | null;
  };
}

function watchLab(): Subscription<VmEvent> {
  return subscribe<VmEvent>(gw.url, VM_CHANGED, { f: { platformIds: [platformGid('lab')] } });
}

// ---------------------------------------------------------------- tests

describe('configuration', () => {
  it('takes sockets, globs and TCP addresses with defaults, and refuses bad values naming the key', () => {
    const ok = validateConfig({
      platforms: [
        { id: 'q', kind: 'qmp', sockets: ['/run/qemu/*.qmp', 'tcp://qemu1.example:4444', 'unix:/run/vm.sock'] },
      ],
    });
    expect(ok.platforms[0]).toEqual({
      id: 'q',
      kind: 'qmp',
      sockets: ['/run/qemu/*.qmp', 'tcp://qemu1.example:4444', 'unix:/run/vm.sock'],
      commandTimeoutMs: 30_000,
      gracefulStopTimeoutMs: 300_000,
      rescanIntervalMs: 5_000,
      retryInitialMs: 1_000,
      retryMaxMs: 30_000,
    } satisfies QmpPlatformConfig);

    const refused = (platform: Record<string, unknown>) => {
      try {
        validateConfig({ platforms: [{ id: 'q', kind: 'qmp', ...platform }] });
      } catch (e) {
        return (e as Error).message;
      }
      return 'accepted';
    };
    expect(refused({ sockets: [] })).toMatch(/platforms\[0\]\.sockets: give at least one socket/);
    expect(refused({ sockets: ['/a.qmp', 'tcp://h'] })).toMatch(
      /platforms\[0\]\.sockets\[1\]: must be tcp:\/\/host:port/,
    );
    expect(refused({ sockets: ['tcp://h:70000'] })).toMatch(/sockets\[0\]: port 70000 is outside 1 to 65535/);
    expect(refused({ sockets: ['http://h:1'] })).toMatch(/sockets\[0\]: the scheme http is not supported/);
    expect(refused({ sockets: ['run/vm.qmp'] })).toMatch(/sockets\[0\]: must be an absolute unix socket path/);
    expect(refused({ sockets: ['/run/**/vm.qmp'] })).toMatch(/sockets\[0\]: recursive globs/);
    expect(refused({ sockets: [`/${'x'.repeat(120)}`] })).toMatch(
      /sockets\[0\]: a unix socket path has at most 107 bytes/,
    );
    expect(refused({ sockets: ['/a.qmp', '/a.qmp'] })).toMatch(/sockets\[1\]: listed twice/);
    expect(refused({ sockets: ['/a.qmp'], rescanIntervalMs: 0 })).toMatch(/platforms\[0\]\.rescanIntervalMs/);
    expect(refused({ sockets: ['/a.qmp'], gracefulStopTimeoutMs: 'soon' })).toMatch(/gracefulStopTimeoutMs/);
    expect(refused({ sockets: ['/a.qmp'], password: 'x' })).toMatch(/platforms\[0\]: Unrecognized key: "password"/);
    expect(refused({ sockets: ['/a.qmp'], uri: 'qemu:///system' })).toMatch(/Unrecognized key: "uri"/);
  });
});

describe('globs', () => {
  it('match sockets only, segment by segment, as a shell does', async () => {
    const root = mkdtempSync(join(base, 'g-'));
    mkdirSync(join(root, 'a1'));
    mkdirSync(join(root, 'b2'));
    const servers = await Promise.all(
      ['a1/x.qmp', 'a1/y.qmp', 'b2/z.qmp', 'a1/.hidden.qmp'].map(
        (f) =>
          new Promise<Server>((resolve) => {
            const srv = createServer();
            srv.listen(join(root, f), () => resolve(srv));
          }),
      ),
    );
    writeFileSync(join(root, 'a1', 'plain.qmp'), '');
    try {
      const paths = async (pattern: string) =>
        (await expandGlob(join(root, pattern))).map((f) => f.path.slice(root.length + 1));
      expect(await paths('*/*.qmp')).toEqual(['a1/x.qmp', 'a1/y.qmp', 'b2/z.qmp']);
      expect(await paths('a?/[!x]*.qmp')).toEqual(['a1/y.qmp']);
      expect(await paths('[ab]1/.*')).toEqual(['a1/.hidden.qmp']);
      expect(await paths('nothing/*.qmp')).toEqual([]);
      expect(segmentMatcher('vm-[0-9].sock').test('vm-7.sock')).toBe(true);
      expect(segmentMatcher('vm.(1)+').test('vm.(1)+')).toBe(true);
      expect(segmentMatcher('vm.(1)+').test('vmx(1)')).toBe(false);
      expect(segmentMatcher('[x').test('[x')).toBe(true);
    } finally {
      for (const srv of servers) srv.close();
    }
  });
});

describe('the inventory of QEMU processes', () => {
  it('lists one VM per QEMU with its identity, state, vCPUs, memory and disks, on the local host', async () => {
    const p = await platform('lab');
    expect(p).toMatchObject({
      kind: 'QMP',
      status: 'CONNECTED',
      // The socket file the killed QEMU left is no failure of the platform.
      statusMessage: null,
      hypervisorType: 'QEMU',
      inventoryState: 'SYNCED',
    });
    expect(p.hypervisorVersion).toMatch(/^7\.2\.\d+$/);
    const list = await vms();
    expect(list.map((v) => v.name).sort()).toEqual(['alpha', 'bravo']);
    const a = list.find((v) => v.name === 'alpha')!;
    expect(a).toMatchObject({
      uuid: ALPHA_UUID,
      powerState: 'ON',
      phase: 'RUNNING',
      rawState: 'running',
      persistent: false,
      vcpus: 1,
      memoryMiB: 64,
      guestArch: 'x86_64',
      machineType: 'pc-i440fx-7.2',
      snapshots: [],
      host: { name: hostname(), hypervisorType: 'QEMU' },
    });
    expect(a.disks).toEqual([
      {
        device: 'DISK',
        target: 'virtio0',
        bus: 'virtio',
        source: alpha.disk,
        format: 'qcow2',
        capacityBytes: 64 * 1024 * 1024,
        readOnly: false,
      },
    ]);
    // No -name, no -uuid: named after its socket, known by its socket's address.
    const b = list.find((v) => v.name === 'bravo')!;
    expect(b.uuid).toBe('00000000-0000-0000-0000-000000000000');
    expect(Buffer.from(b.id, 'base64url').toString()).toBe(
      `v1:VirtualMachine:lab:${encodeURIComponent(`unix:${BRAVO_SOCKET}`)}`,
    );

    const res = await gw.query<{
      hosts: { nodes: { name: string; connectionState: string; hypervisorVersion: string; cpuThreads: number }[] };
      networks: { totalCount: number };
    }>(
      `query($p: [ID!]) {
        hosts(first: 10, filter: { platformIds: $p }) { nodes { name connectionState hypervisorVersion cpuThreads } }
        networks(first: 10, filter: { platformIds: $p }) { totalCount }
      }`,
      { p: [platformGid('lab')] },
    );
    expect(res.errors).toBeUndefined();
    expect(res.data!.hosts.nodes).toEqual([
      {
        name: hostname(),
        connectionState: 'CONNECTED',
        hypervisorVersion: p.hypervisorVersion,
        cpuThreads: expect.any(Number),
      },
    ]);
    expect(res.data!.networks.totalCount).toBe(0);
  });

  it('follows a change made behind its back: stop on the second monitor -> vmChanged, PAUSED in the mirror', async () => {
    const sub = watchLab();
    try {
      await new Promise((r) => setTimeout(r, 200));
      const oob = await alpha.oob();
      const started = Date.now();
      await oob.execute('stop');
      const [paused] = await sub.until(1, 3_000);
      expect(Date.now() - started).toBeLessThan(1_000);
      expect(paused!.vmChanged).toMatchObject({
        type: 'MODIFIED',
        previousPowerState: 'ON',
        powerState: 'PAUSED',
        vm: { name: 'alpha', powerState: 'PAUSED' },
      });
      expect(paused!.vmChanged.changes).toContain('POWER_STATE');
      expect((await platform('lab')).inventoryState).toBe('SYNCED');
      expect(await vm('alpha')).toMatchObject({ powerState: 'PAUSED', phase: 'PAUSED', rawState: 'paused' });

      await oob.execute('cont');
      const [, resumed] = await sub.until(2, 3_000);
      expect(resumed!.vmChanged).toMatchObject({ previousPowerState: 'PAUSED', powerState: 'ON' });
    } finally {
      await sub.close();
    }
  });
});

describe('operations', () => {
  it('pauses, unpauses and resets through mutations', async () => {
    const oob = await alpha.oob();
    const { id } = (await vm('alpha'))!;
    await succeed(gw, 'pauseVm', { vmId: id });
    expect(await oob.execute('query-status')).toMatchObject({ status: 'paused', running: false });
    expect(await vm('alpha')).toMatchObject({ powerState: 'PAUSED' });
    const refused = await mutate(gw, 'pauseVm', { vmId: id });
    expect(refused.userErrors[0]).toMatchObject({ code: 'WRONG_STATE' });
    // A paused guest cannot answer the power button: said at once, not after the timeout.
    const stop = await finished(gw, (await mutate(gw, 'stopVm', { vmId: id })).task!.id);
    expect(stop.error).toMatchObject({
      code: 'WRONG_STATE',
      message: expect.stringMatching(/alpha is paused: .*unpause it first/),
    });

    await succeed(gw, 'unpauseVm', { vmId: id });
    expect(await oob.execute('query-status')).toMatchObject({ status: 'running' });
    expect(await vm('alpha')).toMatchObject({ powerState: 'ON' });

    const resets: unknown[] = [];
    const off = oob.onEvent('RESET', (e) => resets.push(e.data));
    await succeed(gw, 'resetVm', { vmId: id });
    off();
    // SeaBIOS, finding nothing to boot, may reset the machine itself afterwards (guest-reset).
    expect(resets[0]).toEqual({ guest: false, reason: 'host-qmp-system-reset' });

    // startVm runs a paused QEMU too.
    await succeed(gw, 'pauseVm', { vmId: id });
    await succeed(gw, 'startVm', { vmId: id });
    expect(await vm('alpha')).toMatchObject({ powerState: 'ON' });
  });

  it('takes a snapshot with memory, lists it, reverts to it (running after), deletes it', async () => {
    const { id } = (await vm('alpha'))!;
    const created = await succeed(gw, 'createSnapshot', { vmId: id, name: 'before', includeMemory: true });
    expect(created.resultSnapshot).toMatchObject({ name: 'before' });
    const [snap] = (await vm('alpha'))!.snapshots;
    expect(snap).toMatchObject({ name: 'before', includesMemory: true });
    const oob = await alpha.oob();
    const [drive] = await oob.execute('query-block');
    expect(drive?.inserted?.image.snapshots?.map((s) => s.name)).toEqual(['before']);

    await succeed(gw, 'revertToSnapshot', { snapshotId: snap!.id });
    expect(await oob.execute('query-status')).toMatchObject({ status: 'running', running: true });
    expect(await vm('alpha')).toMatchObject({ powerState: 'ON' });
    // QEMU leaves no job behind.
    expect(await oob.execute('query-jobs')).toEqual([]);

    await succeed(gw, 'deleteSnapshot', { snapshotId: snap!.id });
    expect((await vm('alpha'))!.snapshots).toEqual([]);
    expect((await oob.execute('query-block'))[0]?.inserted?.image.snapshots ?? []).toEqual([]);
  });

  it('takes a disk-only snapshot, and refuses to revert a running VM to it, leaving the VM running', async () => {
    const { id } = (await vm('alpha'))!;
    await succeed(gw, 'createSnapshot', { vmId: id, name: 'disks', includeMemory: false });
    const [snap] = (await vm('alpha'))!.snapshots;
    expect(snap).toMatchObject({ name: 'disks', includesMemory: false });

    const payload = await mutate(gw, 'revertToSnapshot', { snapshotId: snap!.id });
    const task = await finished(gw, payload.task!.id);
    expect(task).toMatchObject({ state: 'FAILED', error: { code: 'UNSUPPORTED' } });
    expect(task.error!.message).toMatch(/holds the disks only.*qemu-img snapshot -a/);
    expect(await (await alpha.oob()).execute('query-status')).toMatchObject({ status: 'running' });

    const dup = await mutate(gw, 'createSnapshot', { vmId: id, name: 'disks', includeMemory: true });
    const failed = await finished(gw, dup.task!.id);
    expect(failed).toMatchObject({ state: 'FAILED' });
    expect(failed.error!.message).toMatch(/QEMU: snapshot-save failed: Snapshot 'disks' already exists/);

    await succeed(gw, 'deleteSnapshot', { snapshotId: snap!.id });
    expect((await vm('alpha'))!.snapshots).toEqual([]);
  });

  it('refuses what QMP cannot do, each with its reason', async () => {
    const { id } = (await vm('alpha'))!;
    const expectations: [string, Record<string, unknown>, RegExp][] = [
      ['rebootVm', { vmId: id }, /cannot ask a guest to reboot.*resetVm/],
      ['suspendVm', { vmId: id }, /managed save ends the QEMU process/],
      ['resumeVm', { vmId: id }, /no managed save to resume/],
      ['deleteVm', { vmId: id, force: true }, /no definition to delete; stop it with force/],
      ['cloneVm', { vmId: id, name: 'copy' }, /cannot start a copy/],
      ['reconfigureVm', { vmId: id, vcpus: 2 }, /hardware is set by its command line/],
      [
        'migrateVm',
        { vmId: id, hostId: encodeId({ kind: 'Host', platformId: 'lab', nativeId: 'local' }) },
        /-incoming/,
      ],
    ];
    for (const [mutation, input, reason] of expectations) {
      const payload = await mutate(gw, mutation, input);
      expect(payload.task, mutation).toBeNull();
      expect(payload.userErrors, mutation).toEqual([
        { code: 'UNSUPPORTED', field: null, message: expect.stringMatching(reason) },
      ]);
    }
    // createVm has no UNSUPPORTED refusal in the mutation path: the platform refuses the placement.
    const create = await mutate(gw, 'createVm', { platformId: platformGid('lab'), name: 'new', memoryMiB: 64 });
    expect(create.userErrors).toEqual([
      { code: 'INVALID_INPUT', field: ['placement'], message: expect.stringMatching(/cannot create VMs/) },
    ]);
  });

  it('has no metrics: latest, history and subscriptions say so with METRICS_UNAVAILABLE', async () => {
    const { id } = (await vm('alpha'))!;
    const res = await gw.query(
      'query($id: ID!) { node(id: $id) { ... on VirtualMachine { metrics { latest { timestamp } } } } }',
      {
        id,
      },
    );
    expect(res.errors![0]!.extensions!['code']).toBe('METRICS_UNAVAILABLE');
    expect(res.errors![0]!.message).toContain('(QMP) has no metrics');
    const sub = await gw.wsQuery('subscription($ids: [ID!]!) { vmMetrics(ids: $ids) { vmId } }', { ids: [id] });
    expect(sub.errors![0]!.extensions!['code']).toBe('METRICS_UNAVAILABLE');
  });

  it('a guest that ignores the ACPI power button: graceful stop fails clearly and leaves the VM running', async () => {
    const { id } = (await vm('bravo'))!;
    const payload = await mutate(gw, 'stopVm', { vmId: id });
    const task = await finished(gw, payload.task!.id);
    expect(task).toMatchObject({ state: 'FAILED', error: { code: 'TIMEOUT' } });
    expect(task.error!.message).toMatch(/did not shut down within 1\.5 s of the ACPI power button.*stop it with force/);
    expect(await vm('bravo')).toMatchObject({ powerState: 'ON' });
    expect(bravo.child.exitCode).toBeNull();
  });

  it('force stop ends the QEMU: the VM is gone from the listing', async () => {
    const sub = watchLab();
    try {
      await new Promise((r) => setTimeout(r, 200));
      const { id } = (await vm('bravo'))!;
      await succeed(gw, 'stopVm', { vmId: id, force: true });
      expect(await bravo.exited).toEqual({ code: 0, signal: null });
      expect((await vms()).map((v) => v.name)).toEqual(['alpha']);
      const events = await sub.until(1, 3_000);
      expect(events.at(-1)!.vmChanged).toMatchObject({ type: 'REMOVED', vm: null });
      // QEMU removed its socket as it exited: the glob no longer finds it, and nothing failed.
      expect(await platform('lab')).toMatchObject({ status: 'CONNECTED', statusMessage: null });
    } finally {
      await sub.close();
    }
  });

  it('finds a QEMU started after the gateway at the next rescan', async () => {
    const sub = watchLab();
    try {
      await new Promise((r) => setTimeout(r, 200));
      const started = Date.now();
      await qemu('charlie', 'charlie', randomUUID());
      const [added] = await sub.until(1, 5_000);
      expect(added!.vmChanged).toMatchObject({ type: 'ADDED', vm: { name: 'charlie', powerState: 'ON' } });
      expect(Date.now() - started).toBeLessThan(2_000);
      expect((await vms()).map((v) => v.name).sort()).toEqual(['alpha', 'charlie']);
    } finally {
      await sub.close();
    }
  });
});

describe('sockets that cannot be used', () => {
  it.each([
    ['missing', /no socket at .*missing\.qmp \(ENOENT\)/],
    ['refused', /nothing listens on .*stale\.qmp \(ECONNREFUSED\)/],
    ['garbage', /garbage\.sock does not speak QMP: a line that is not JSON: "SSH-2\.0/],
  ])('%s: the platform is UNREACHABLE with the reason, queries say so, the rest serves', async (id, reason) => {
    const p = await platform(id);
    expect(p).toMatchObject({ kind: 'QMP', status: 'UNREACHABLE' });
    expect(p.statusMessage).toMatch(reason);
    const res = await gw.query<{ virtualMachines: { totalCount: number } }>(
      'query($p: [ID!]) { virtualMachines(first: 5, filter: { platformIds: $p }) { totalCount } }',
      { p: [platformGid(id)] },
    );
    expect(res.errors).toEqual([
      expect.objectContaining({
        message: expect.stringMatching(reason),
        extensions: expect.objectContaining({ code: 'PLATFORM_UNAVAILABLE', platformId: id }),
      }),
    ]);
    expect((await vms()).length).toBeGreaterThan(0);
  });

  it('a listed socket whose QEMU comes later: retried, then CONNECTED and read in full', async () => {
    expect((await platform('missing')).inventoryState).toBe('STALE');
    await startQemu({ file: 'missing', name: 'late', uuid: null, socketDir: base, oobDir: dirs.oob, diskDir: null });
    await eventually(async () => (await platform('missing')).inventoryState === 'SYNCED', 5_000);
    expect(await platform('missing')).toMatchObject({ status: 'CONNECTED', statusMessage: null });
    expect((await vms('missing')).map((v) => v.name)).toEqual(['late']);
  });
});

describe('a real guest', () => {
  it('graceful stop: the guest powers itself off on the ACPI power button; its VM is gone', async () => {
    await guest!.waitForReady(30_000);
    const [v] = await vms('guest');
    expect(v).toMatchObject({ name: 'virt-graph-guest', powerState: 'ON' });
    const task = await succeed(gw, 'stopVm', { vmId: v!.id });
    expect(task.state).toBe('SUCCEEDED');
    expect(await guest!.exited).toEqual({ code: 0, signal: null });
    // Its only socket is gone with it: nothing to read, the live inventory STALE until a QEMU listens there again.
    await eventually(async () => (await platform('guest')).inventoryState === 'STALE');
    expect((await platform('guest')).status).toBe('UNREACHABLE');
    // (The first attempt to connect again may meet the socket while QEMU exits: ECONNRESET.)
    await eventually(async () =>
      /no socket at .*qmp\.sock \(ENOENT\)/.test((await platform('guest')).statusMessage ?? ''),
    );
  }, 40_000);
});

describe('reads without the mirror', () => {
  it('the provider reads what its watch reports', async () => {
    const dir = mkdtempSync(join(base, 'd-'));
    mkdirSync(join(dir, 'oob'));
    const delta = await startQemu({
      file: 'delta',
      name: 'delta',
      uuid: randomUUID(),
      socketDir: dir,
      oobDir: join(dir, 'oob'),
      diskDir: dir,
      args: ['-S'],
    });
    // One more QEMU, on TCP: a host of its own.
    const echo = await startQemu({
      file: 'echo',
      name: 'echo',
      uuid: randomUUID(),
      socketDir: dir,
      oobDir: join(dir, 'oob'),
      diskDir: null,
      tcpPort: await closedPort(),
    });
    const absent = join(dir, 'absent.qmp');
    const config = validateConfig({
      platforms: [
        { id: 'direct', kind: 'qmp', sockets: [delta.qmpSocket, absent, echo.qmpSocket], commandTimeoutMs: 500 },
      ],
    }).platforms[0] as QmpPlatformConfig;
    const provider = new QmpProvider(config, pino({ level: 'silent' }));
    await provider.start();
    try {
      // Two QEMUs of three: CONNECTED, and the message names the third.
      expect(provider.state()).toMatchObject({
        status: 'CONNECTED',
        statusMessage: `2 QEMUs connected; no socket at ${absent} (ENOENT): is QEMU running with -qmp unix:${absent},server=on?`,
        hypervisorType: 'QEMU',
      });
      expect(
        (await provider.listHosts()).map((h) => [h.nativeId, h.name, h.connectionState, h.cpuThreads !== null]),
      ).toEqual([
        ['127.0.0.1', '127.0.0.1', 'CONNECTED', false],
        ['local', hostname(), 'CONNECTED', true],
      ]);
      const byName = new Map((await provider.listVms()).map((v) => [v.name, v]));
      expect(byName.get('echo')).toMatchObject({ hostNativeId: '127.0.0.1', powerState: 'ON' });
      const scope = createRequestScope();
      const record = byName.get('delta');
      expect(record).toMatchObject({
        hostNativeId: 'local',
        powerState: 'PAUSED',
        phase: 'STARTING',
        rawState: 'prelaunch',
      });
      const [details] = await provider.getVmDetails([record!.nativeId, 'nobody'], scope);
      expect(details).toMatchObject({ vcpus: 1, memoryMiB: 64, disks: [{ source: delta.disk, format: 'qcow2' }] });
      const missing = (await provider.getVmDetails(['nobody'], scope))[0];
      expect(missing).toBeInstanceOf(Error);
      expect((await provider.readVmStates(['nobody'], scope)).get('nobody')).toBeNull();
      const direct = await readInventory(provider);
      expect(direct.vms.map((v) => v.vm.name).sort()).toEqual(['delta', 'echo']);

      // A QEMU that does not answer shows as it was last seen, UNKNOWN, with the reason.
      delta.child.kill('SIGSTOP');
      try {
        expect((await provider.listVms()).find((v) => v.name === 'delta')).toMatchObject({
          powerState: 'PAUSED',
          phase: 'UNKNOWN',
          rawStateReason: 'QEMU did not answer query-status within 500 ms',
        });
      } finally {
        delta.child.kill('SIGCONT');
      }

      const replaced: InventoryState[] = [];
      const applied: InventoryChange[] = [];
      const sink: WatchSink = {
        replace: (s) => replaced.push(s),
        apply: (c) => applied.push(...c),
        interrupted: () => undefined,
      };
      const watch = provider.watch(sink, { resyncIntervalMs: 60_000, retryInitialMs: 50, retryMaxMs: 100 });
      await eventually(() => replaced.length === 1);
      expect(replaced[0]).toEqual(direct);

      // startVm of a prelaunch QEMU: cont.
      await provider.runOperation(
        record!.nativeId,
        { kind: 'START_VM' },
        { progress: () => undefined, upstreamTask: () => undefined },
      );
      await eventually(() => applied.some((c) => c.kind === 'VirtualMachine' && c.record?.vm.powerState === 'ON'));
      await watch.stop();
    } finally {
      await provider.stop();
      await Promise.all([delta.kill(), echo.kill()]);
    }
  });
});

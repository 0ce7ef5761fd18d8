// Time to one more ready VM in a pool (scaleVmPool +1 until the pool's
// readyReplicas counts it), three ways, against the FULL clone as the
// baseline, each measured in alternation in the same run:
//
// (a) a warm standby handed out: a pool of 1 replica and 1 warm standby
//     (LINKED), scaled to 2; the standby is promoted, already running;
// (b) a LINKED clone: a pool of 1 replica, no standby, scaled to 2;
// (c) a FULL clone (the baseline): the same with cloneMode FULL.
//
// On two platforms:
// 1. libvirt's qemu driver in a real libvirtd of the benchmark's own
//    (test/helpers/qemu-libvirtd.ts: a private daemon in its own namespaces,
//    needs root), where a FULL clone copies the source's disk and a LINKED
//    clone makes a qcow2 volume backed by it. The source is a stopped domain
//    (TCG, or KVM where /dev/kvm is) with one raw disk of POOL_DISK_MIB (512)
//    MiB of random data in a directory pool, so the copy cannot be sparse;
//    its clones boot into SeaBIOS and wait there, running.
// 2. VMware's simulator (vcsim), where a clone copies nothing whatever the
//    disk size: what is left is the gateway's and the reconciler's own work,
//    the simulator's task and the power-on.
//
// The gateway runs as its own process (bench/support.ts), with the
// reconciler as the tests run it (resync 1 s, 8 actions at once); this
// process polls the pool (readyReplicas, members) every POLL_MS (10) ms over
// HTTP from the scaleVmPool request on: the time includes the request, the
// reconciler's pass, the clone (or promotion), the power-on, the live
// inventory's seeing the VM running, and up to one poll. After each
// measurement, untimed: the pool settles (a new standby for (a)), is scaled
// back to 1, the retired VM is deleted, and on libvirt the retired member's
// volumes are deleted with virsh (deleteVm leaves disks, and a pool that
// scales up again may reuse the number). One warm-up of each, then
// POOL_RUNS (5) alternating rounds; medians, min and max. RSS: the
// gateway's VmRSS right after each measurement (median), and at the end.
//
// POOL_PARTS picks platforms (libvirt,vsphere); POOL_DISK_MIB, POOL_RUNS, POOL_POLL_MS.
import { randomFillSync } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

import type { Querier } from '../test/helpers/declarations.js';
import { type QemuLibvirtd, qemuLibvirtd } from '../test/helpers/qemu-libvirtd.js';
import { type Vcsim, startVcsim, vspherePlatform } from '../test/helpers/vcsim.js';
import {
  POOL_COUNTS,
  type PoolCounts,
  accepted,
  applyVmPool,
  scaleVmPool,
  settled,
  vmPool,
  vmsStartingWith,
} from '../test/helpers/vm-pools.js';
import {
  BENCH_AUTH,
  type GatewayProcess,
  machine,
  medianOf,
  memoryOf,
  mib,
  ms,
  printTable,
  ratio,
  settledRss,
  sleep,
  spawnGateway,
  timeAlternating,
} from './support.js';

const RUNS = Number(process.env['POOL_RUNS'] ?? 5);
const DISK_MIB = Number(process.env['POOL_DISK_MIB'] ?? 512);
const POLL_MS = Number(process.env['POOL_POLL_MS'] ?? 10);
const PARTS = new Set((process.env['POOL_PARTS'] ?? 'libvirt,vsphere').split(','));

/** The reconciler as the tests run it. */
const RECONCILER = { resyncSeconds: 1, backoffInitialMs: 200, backoffMaxMs: 2_000, maxConcurrentActions: 8 };

type Path = 'standby' | 'linked' | 'full';
const PATHS: Record<Path, { pool: string; label: string; input: Record<string, unknown>; standbys: number }> = {
  standby: {
    pool: 'warm',
    label: '(a) warm standby handed out',
    input: { warmStandbys: 1, cloneMode: 'LINKED' },
    standbys: 1,
  },
  linked: { pool: 'linked', label: '(b) LINKED clone', input: { cloneMode: 'LINKED' }, standbys: 0 },
  full: { pool: 'full', label: '(c) FULL clone (baseline)', input: { cloneMode: 'FULL' }, standbys: 0 },
};

interface Platform {
  label: string;
  gw: GatewayProcess;
  platformId: string;
  sourceId: string;
  /** Deletes what a retired member leaves behind (libvirt: its volumes). */
  cleanUp(member: string): Promise<void>;
}

const querier = (gw: GatewayProcess): Querier => ({ query: (q, v) => gw.post(q, v) });

async function waitFor<T>(what: string, probe: () => Promise<T>, done: (v: T) => boolean, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (done(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms; last seen ${JSON.stringify(v)}`);
    await sleep(POLL_MS);
  }
}

const counts = (p: Platform, id: string) => vmPool<PoolCounts>(querier(p.gw), id, POOL_COUNTS);

/** Waits for a pool with its replicas and standbys ready, and for it to be so again a resync later. */
async function settle(p: Platform, id: string, standbys: number, what: string): Promise<PoolCounts> {
  await waitFor(
    what,
    () => counts(p, id),
    (c) => settled(c, standbys),
    120_000,
  );
  // A resync: the reconciler records the members as made, so a retirement right after does not wait on them.
  await sleep(1_200);
  const pool = await waitFor(
    what,
    () => counts(p, id),
    (c) => settled(c, standbys),
    120_000,
  );
  return pool!;
}

/** Applies the three pools (1 replica each) and waits for them to settle: their IDs by path. */
async function pools(p: Platform): Promise<Record<Path, string>> {
  const ids = {} as Record<Path, string>;
  for (const [path, def] of Object.entries(PATHS) as [Path, (typeof PATHS)[Path]][]) {
    const pool = accepted(
      await applyVmPool(querier(p.gw), {
        platformId: p.platformId,
        name: def.pool,
        replicas: 1,
        sourceId: p.sourceId,
        ...def.input,
      }),
      `applyVmPool ${def.pool}`,
    );
    ids[path] = pool.id;
    await settle(p, pool.id, def.standbys, `${p.label}: pool ${def.pool} ready`);
  }
  return ids;
}

/** Measures every path on a platform: each run's time to ready (ms) and the gateway's RSS right after. */
async function measure(p: Platform) {
  const ids = await pools(p);
  const rss: Record<Path, number[]> = { standby: [], linked: [], full: [] };
  const one = (path: Path) => async () => {
    const id = ids[path];
    const { standbys, pool } = PATHS[path];
    const t = performance.now();
    accepted(await scaleVmPool(querier(p.gw), { poolId: id, replicas: 2 }), `scale ${pool} to 2`);
    await waitFor(
      `${p.label}: ${pool} has 2 ready replicas`,
      () => counts(p, id),
      (c) => c !== null && c.readyReplicas === 2 && c.members.length === 2,
      120_000,
    );
    const took = performance.now() - t;
    rss[path].push(memoryOf(p.gw.pid).rssMiB);
    // Untimed: back to one replica, the retired VM gone and its leftovers deleted.
    const two = await settle(p, id, standbys, `${p.label}: ${pool} settled at 2`);
    const retired = two.members[1]!.name;
    accepted(await scaleVmPool(querier(p.gw), { poolId: id, replicas: 1 }), `scale ${pool} to 1`);
    await settle(p, id, standbys, `${p.label}: ${pool} settled at 1`);
    await waitFor(
      `${p.label}: ${retired} deleted`,
      async () => (await vmsStartingWith(querier(p.gw), retired, p.platformId)).filter((v) => v.name === retired),
      (vms) => vms.length === 0,
      60_000,
    );
    await p.cleanUp(retired);
    return took;
  };
  const times = await timeAlternating({ standby: one('standby'), linked: one('linked'), full: one('full') }, RUNS);
  return { times, rss };
}

function report(p: Platform, result: Awaited<ReturnType<typeof measure>>, endRss: number, title: string): void {
  const base = result.times.full.median;
  printTable(
    title,
    ['path to one more ready VM', 'median', `min - max (${RUNS} runs)`, 'ratio to FULL', 'gateway RSS after'],
    (Object.keys(PATHS) as Path[]).map((path) => {
      const { median, samples } = result.times[path];
      return [
        PATHS[path].label,
        ms(median),
        `${ms(Math.min(...samples))} - ${ms(Math.max(...samples))}`,
        path === 'full' ? 'x1 (baseline)' : ratio(median, base),
        mib(medianOf(result.rss[path])),
      ];
    }),
  );
  const peak = memoryOf(p.gw.pid).peakMiB;
  console.log(`\ngateway RSS at the end (settled) ${mib(endRss)}, peak ${mib(peak)}`);
}

const gatewayConfig = (platforms: unknown[]) => ({ auth: BENCH_AUTH, reconciler: RECONCILER, platforms });

// --- libvirt, qemu driver ------------------------------------------------------

/** A stopped domain with one raw disk of DISK_MIB MiB of random data in a directory pool. */
async function libvirtSource(daemon: QemuLibvirtd): Promise<void> {
  const files = join(daemon.dir, 'files');
  mkdirSync(files, { recursive: true });
  await daemon.virsh('pool-define-as', 'vg-files', 'dir', '--target', files);
  await daemon.virsh('pool-start', 'vg-files');
  const disk = join(files, 'pool-src.raw');
  const fd = openSync(disk, 'w');
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < DISK_MIB; i++) writeSync(fd, randomFillSync(chunk));
  closeSync(fd);
  await daemon.virsh('pool-refresh', 'vg-files');
  const type = existsSync('/dev/kvm') ? 'kvm' : 'qemu';
  const xml = join(daemon.dir, 'pool-src.xml');
  writeFileSync(
    xml,
    `<domain type='${type}'>
  <name>pool-src</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='${disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>`,
  );
  await daemon.virsh('define', xml);
}

async function libvirtPart(): Promise<void> {
  const daemon = qemuLibvirtd('pool-bench');
  await daemon.start();
  let gw: GatewayProcess | null = null;
  try {
    await libvirtSource(daemon);
    gw = await spawnGateway(gatewayConfig([{ id: 'kvm', kind: 'libvirt', uri: daemon.uri }]));
    await gw.waitSynced(60_000);
    const platform = await describePlatform(gw, 'libvirt (qemu driver)', 'pool-src', async (member) => {
      const vols = (await daemon.virsh('vol-list', 'vg-files'))
        .split('\n')
        .map((l) => l.trim().split(/\s+/)[0] ?? '')
        .filter((v) => v.startsWith(`${member}-disk`));
      for (const v of vols) await daemon.virsh('vol-delete', '--pool', 'vg-files', v);
    });
    const result = await measure(platform);
    const endRss = await settledRss(gw.pid);
    // For scale: what the copy alone costs, libvirt asked directly (virsh vol-clone), median of 3.
    const copies: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      await daemon.virsh('vol-clone', '--pool', 'vg-files', 'pool-src.raw', 'copy-probe.raw');
      copies.push(performance.now() - t);
      await daemon.virsh('vol-delete', '--pool', 'vg-files', 'copy-probe.raw');
    }
    const accel = existsSync('/dev/kvm') ? 'KVM' : 'TCG';
    report(
      platform,
      result,
      endRss,
      `libvirt qemu driver (${accel}), source disk ${DISK_MIB} MiB raw of random data in a directory pool`,
    );
    console.log(`the copy alone (virsh vol-clone of the source's disk, median of 3): ${ms(medianOf(copies))}`);
  } finally {
    await gw?.stop();
    // The guests the pools started: destroyed before the daemon (and its namespaces) go.
    const names = (await daemon.virsh('list', '--name').catch(() => '')).split('\n').filter((n) => n.trim());
    for (const n of names) await daemon.virsh('destroy', n.trim()).catch(() => undefined);
    await daemon.destroy();
  }
}

// --- vSphere, VMware's simulator --------------------------------------------------

async function vspherePart(): Promise<void> {
  const sim: Vcsim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 2, host: 0, vm: 1 });
  let gw: GatewayProcess | null = null;
  try {
    gw = await spawnGateway(gatewayConfig([vspherePlatform(sim)]));
    await gw.waitSynced(60_000);
    const source = Object.values(sim.oracle.vms).find((v) => !v.template)!.name;
    const platform = await describePlatform(gw, 'vSphere (vcsim)', source, async () => {});
    const result = await measure(platform);
    const endRss = await settledRss(gw.pid);
    report(platform, result, endRss, `vSphere, VMware's simulator (source ${source}; clones copy no data)`);
  } finally {
    await gw?.stop();
    await sim.stop();
  }
}

/** The gateway's only platform and the source VM's global ID. */
async function describePlatform(
  gw: GatewayProcess,
  label: string,
  sourceName: string,
  cleanUp: Platform['cleanUp'],
): Promise<Platform> {
  const res = await gw.post<{ platforms: { id: string }[] }>('{ platforms { id } }');
  const platformId = res.data!.platforms[0]!.id;
  const [source] = (await vmsStartingWith(querier(gw), sourceName, platformId)).filter((v) => v.name === sourceName);
  if (!source) throw new Error(`${label}: no source VM ${sourceName}`);
  return { label, gw, platformId, sourceId: source.id, cleanUp };
}

console.log(`VM pool time to ready on ${machine()}`);
console.log(
  `Each path: scaleVmPool from 1 to 2 replicas, timed until readyReplicas is 2 (polled every ${POLL_MS} ms over ` +
    `HTTP); one warm-up each, then ${RUNS} rounds in alternation (a, b, c, a, b, c, ...); untimed between runs: ` +
    'the pool settles, is scaled back to 1, the retired VM is deleted (and its volumes, on libvirt).',
);
if (PARTS.has('libvirt')) await libvirtPart();
if (PARTS.has('vsphere')) await vspherePart();

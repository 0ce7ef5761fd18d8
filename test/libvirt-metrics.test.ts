import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { validateConfig } from '../src/config/load.js';
import type { LibvirtPlatformConfig } from '../src/config/schema.js';
import { DomainStats, type NativeDomainStats } from '../src/datasources/libvirt/addon.js';
import { LibvirtClient } from '../src/datasources/libvirt/client.js';
import { VirErr } from '../src/datasources/libvirt/errors.js';
import {
  type CounterReading,
  MEMORY_REPORT_MAX_AGE_SECONDS,
  domainSample,
  hostSample,
  resetReason,
  domainRateCounters,
} from '../src/datasources/libvirt/metric-rates.js';
import { LibvirtMetricsSource } from '../src/datasources/libvirt/metrics.js';
import { LibvirtProvider } from '../src/datasources/libvirt/provider.js';
import { ErrorCode, GatewayError } from '../src/model/errors.js';
import type { MetricSample } from '../src/model/metrics.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { GUEST, READY_MARKER, assertGuestBuilt, diskOverlay, guestAccel } from './helpers/guest.js';
import { holdGuestTurn } from './helpers/guest-turn.js';
import { type QemuLibvirtd, qemuLibvirtd } from './helpers/qemu-libvirtd.js';
import { rejection } from './helpers/rejection.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { redisServer } from './helpers/redis-server.js';
import { eventually, subscribe } from './helpers/subscriptions.js';

// libvirt's performance counters as the gateway's MetricsSource: the rate
// arithmetic in pure code; the source's bookkeeping (previous readings,
// windows, resets, calls per sampling) against a scripted client; the addon
// and provider on libvirt's test driver (which has no CPU, block or network
// counters); and the real thing on real guests under a real libvirtd and
// QEMU, one burning CPU and reading its disk, one idle.

const silent = pino({ level: 'silent' });
const ALL_STATS =
  DomainStats.STATE |
  DomainStats.CPU_TOTAL |
  DomainStats.BALLOON |
  DomainStats.VCPU |
  DomainStats.INTERFACE |
  DomainStats.BLOCK;

/** Longer than the least time rates are made over (500 ms), so the next sampling needs no window. */
const pause = () => new Promise((r) => setTimeout(r, 600));

const reading = (time: number, counters: Record<string, number>, run = 1): CounterReading => ({ time, run, counters });

describe('libvirt metric arithmetic', () => {
  const before = reading(10_000, {
    'cpu.time': 1e9,
    'vcpu.current': 2,
    'vcpu.maximum': 2,
    'vcpu.0.delay': 1e8,
    'vcpu.1.delay': 2e8,
    'block.count': 2,
    'block.0.rd.bytes': 1000,
    'block.0.wr.bytes': 0,
    'block.0.rd.reqs': 10,
    'block.0.wr.reqs': 0,
    'block.1.rd.bytes': 500,
    'block.1.wr.bytes': 100,
    'block.1.rd.reqs': 5,
    'block.1.wr.reqs': 1,
    'net.count': 1,
    'net.0.rx.bytes': 0,
    'net.0.tx.bytes': 0,
    'balloon.current': 262_144,
    'balloon.rss': 200_000,
  });
  const after = reading(12_000, {
    ...before.counters,
    'cpu.time': 3e9, // 2 s of CPU in 2 s on 2 vCPUs: 50 %
    'vcpu.0.delay': 1e8 + 2e8,
    'vcpu.1.delay': 2e8 + 2e8, // 0.4 s ready of 4 s of vCPU time: 10 %
    'block.0.rd.bytes': 1000 + 4096,
    'block.1.rd.bytes': 500 + 4096,
    'block.0.rd.reqs': 10 + 3,
    'block.1.rd.reqs': 5 + 1,
    'block.1.wr.bytes': 100 + 1000,
    'block.1.wr.reqs': 1 + 2,
    'net.0.rx.bytes': 300,
    'net.0.tx.bytes': 3000,
    'balloon.unused': 131_072,
    'balloon.last-update': 12,
  });

  it("makes a domain's rates from two readings: CPU of its own vCPUs, disks and NICs summed over devices", () => {
    const s = domainSample(before, after, 5);
    expect(s).toMatchObject({
      timestamp: 12_000,
      intervalSeconds: 2,
      cpuUsagePercent: 50,
      cpuReadyPercent: 10,
      diskReadBytesPerSecond: 4096,
      diskWriteBytesPerSecond: 500,
      diskReadIops: 2,
      diskWriteIops: 1,
      networkRxBytesPerSecond: 150,
      networkTxBytesPerSecond: 1500,
      // (current − unused) KiB, of current
      memoryUsedBytes: 131_072 * 1024,
      memoryUsagePercent: 50,
    });
    expect(s.raw).toEqual(after.counters);
  });

  it('gives gauges without rates when there is no previous reading', () => {
    const s = domainSample(null, after, 5);
    expect(s.intervalSeconds).toBe(5);
    expect(s.cpuUsagePercent).toBeNull();
    expect(s.diskReadBytesPerSecond).toBeNull();
    expect(s.memoryUsedBytes).toBe(131_072 * 1024);
  });

  it("leaves memory use unknown without the guest's report, or with one too old; raw keeps balloon.rss", () => {
    const s = domainSample(before, reading(12_000, { ...before.counters }), 1);
    expect(s.memoryUsedBytes).toBeNull();
    expect(s.memoryUsagePercent).toBeNull();
    expect(s.raw['balloon.rss']).toBe(200_000);
    const old = (MEMORY_REPORT_MAX_AGE_SECONDS + 1) * 1000;
    const stale = domainSample(null, reading(12_000 + old, { ...after.counters }), 1);
    expect(stale.memoryUsedBytes).toBeNull();
  });

  it('treats a restart, a counter that went down, or a reading not newer as no previous reading', () => {
    expect(resetReason(before, after, domainRateCounters)).toBeNull();
    expect(resetReason(before, { ...after, run: 2 }, domainRateCounters)).toBe('restarted');
    expect(resetReason(before, reading(12_000, { ...after.counters, 'cpu.time': 5e8 }), domainRateCounters)).toBe(
      'cpu.time went down',
    );
    // A disk removed: the sum over devices goes down.
    const unplugged = { ...after.counters, 'block.count': 1 };
    expect(resetReason(before, reading(12_000, unplugged), domainRateCounters)).toMatch(/went down/);
    expect(resetReason(after, before, domainRateCounters)).toBe('not newer');
  });

  it("makes a host's CPU use from its CPU times and its memory use as free does", () => {
    const h1 = reading(0, { 'cpu.kernel': 100, 'cpu.user': 200, 'cpu.idle': 1000, 'cpu.iowait': 0 }, 0);
    const h2 = reading(
      1_000,
      {
        'cpu.kernel': 200,
        'cpu.user': 400,
        'cpu.idle': 1400,
        'cpu.iowait': 100,
        'memory.total': 1000,
        'memory.free': 400,
        'memory.buffers': 50,
        'memory.cached': 150,
      },
      0,
    );
    const s = hostSample(h1, h2, 1);
    // busy 100 + 200 + 100 of all 800
    expect(s.cpuUsagePercent).toBe(50);
    expect(s.memoryUsedBytes).toBe(400 * 1024);
    expect(s.memoryUsagePercent).toBe(40);
    expect(s.diskReadBytesPerSecond).toBeNull();
    expect(s.networkTxBytesPerSecond).toBeNull();
  });
});

/** A client that answers the source's calls from scripted domains whose counters follow the clock. */
function scripted(options: { setStatsPeriod?: boolean } = {}) {
  const domains = new Map<string, { run: number; state: number; cpuPerMs: number; cpuBase: number }>();
  const calls: string[] = [];
  let clockOffset = 0;
  const now = () => Date.now() + clockOffset;
  // Counters count from the script's start: ns since 1970 would exceed 2^53.
  const start = now();
  const counters = (d: { cpuPerMs: number; cpuBase: number }, t: number): Record<string, number> => ({
    'cpu.time': d.cpuBase + d.cpuPerMs * (t - start),
    'vcpu.current': 1,
    'vcpu.maximum': 1,
    'balloon.current': 1024,
  });
  const client = {
    call: async (method: string, ...args: unknown[]): Promise<unknown> => {
      calls.push(method);
      const t = now();
      if (method === 'getDomainStats') {
        const uuids = args[0] as string[];
        return {
          time: t,
          domains: uuids.map((uuid): NativeDomainStats | Error => {
            const d = domains.get(uuid);
            if (!d) return Object.assign(new Error(`no domain ${uuid}`), { code: VirErr.NO_DOMAIN });
            return { name: uuid, uuid, id: d.run, params: { 'state.state': d.state, ...counters(d, t) } };
          }),
        };
      }
      if (method === 'getNodeStats') {
        // Busy a quarter of the time.
        return {
          time: t,
          cpu: { kernel: t - start, user: 0, idle: 3 * (t - start), iowait: 0 },
          memory: { total: 100, free: 50, buffers: 0, cached: 0 },
        };
      }
      if (method === 'setMemoryStatsPeriod') return (args[0] as string[]).map(() => true);
      throw new Error(`unexpected call ${method}`);
    },
  };
  const source = new LibvirtMetricsSource({
    use: (fn) => fn(client as unknown as LibvirtClient),
    hostName: () => 'host-a',
    setStatsPeriod: options.setStatsPeriod ?? true,
    logger: silent,
    windowMs: 100,
  });
  return {
    source,
    domains,
    calls,
    /** Moves the clock the counters follow (and the readings' times) forward. */
    advance: (ms: number) => (clockOffset += ms),
    /** ms since the script started, on its clock. */
    elapsed: () => now() - start,
  };
}

const sampleOf = (m: Map<string, MetricSample | Error>, id: string): MetricSample => {
  const s = m.get(id);
  if (!s || s instanceof Error) throw new Error(`no sample of ${id}: ${String(s)}`);
  return s;
};

describe('libvirt metrics source (scripted client)', () => {
  it('waits a short window for a first sample, then rates from its own previous reading in one read', async () => {
    const { source, domains, calls } = scripted();
    domains.set('a', { run: 1, state: 1, cpuPerMs: 250_000, cpuBase: 0 }); // 25 % of one vCPU
    const first = await source.sample({ vms: ['a'], hosts: ['host-a'] }, 1);
    expect(source.activity).toMatchObject({ samplings: 1, readings: 2, windows: 1 });
    const a1 = sampleOf(first.vms, 'a');
    expect(a1.intervalSeconds).toBeGreaterThanOrEqual(0.1);
    expect(a1.cpuUsagePercent).toBeCloseTo(25, 6);
    expect(sampleOf(first.hosts, 'host-a').cpuUsagePercent).toBeCloseTo(25, 6);
    expect(sampleOf(first.hosts, 'host-a').memoryUsedBytes).toBe(50 * 1024);

    await new Promise((r) => setTimeout(r, 600));
    calls.length = 0;
    const second = await source.sample({ vms: ['a'], hosts: ['host-a'] }, 1);
    expect(source.activity).toMatchObject({ samplings: 2, readings: 3, windows: 1 });
    expect(calls.sort()).toEqual(['getDomainStats', 'getNodeStats']);
    const a2 = sampleOf(second.vms, 'a');
    expect(a2.intervalSeconds).toBe((a2.timestamp - a1.timestamp) / 1000);
    expect(a2.cpuUsagePercent).toBeCloseTo(25, 6);
  });

  it('makes one stats call per sampling whatever the number of VMs', async () => {
    const { source, domains, calls } = scripted();
    const uuids = Array.from({ length: 300 }, (_, i) => `vm-${i}`);
    for (const u of uuids) domains.set(u, { run: 1, state: 1, cpuPerMs: 1000, cpuBase: 0 });
    await source.sample({ vms: uuids, hosts: ['host-a'] }, 1);
    await new Promise((r) => setTimeout(r, 600));
    for (const asked of [uuids.slice(0, 1), uuids]) {
      calls.length = 0;
      const out = await source.sample({ vms: asked, hosts: ['host-a'] }, 1);
      expect(out.vms.size).toBe(asked.length);
      expect(calls.sort()).toEqual(['getDomainStats', 'getNodeStats']);
    }
  });

  it('starts over after a restart (counters went down) instead of giving negative rates', async () => {
    const { source, domains, elapsed } = scripted();
    domains.set('a', { run: 1, state: 1, cpuPerMs: 500_000, cpuBase: 1e12 });
    await source.sample({ vms: ['a'], hosts: [] }, 1);
    // Same run ID (a driver that reuses them), counters from zero.
    domains.set('a', { run: 1, state: 1, cpuPerMs: 500_000, cpuBase: -elapsed() * 500_000 });
    await new Promise((r) => setTimeout(r, 600));
    const out = await source.sample({ vms: ['a'], hosts: [] }, 1);
    expect(source.activity.windows).toBe(2);
    expect(sampleOf(out.vms, 'a').cpuUsagePercent).toBeCloseTo(50, 6);
    // A new run ID alone is a restart too.
    domains.set('a', { run: 2, state: 1, cpuPerMs: 500_000, cpuBase: 1e15 });
    await new Promise((r) => setTimeout(r, 600));
    const again = await source.sample({ vms: ['a'], hosts: [] }, 1);
    expect(source.activity.windows).toBe(3);
    expect(sampleOf(again.vms, 'a').cpuUsagePercent).toBeCloseTo(50, 6);
  });

  it('reads again after a window when its previous reading is older than a few intervals', async () => {
    const { source, domains, advance } = scripted();
    domains.set('a', { run: 1, state: 1, cpuPerMs: 100_000, cpuBase: 0 });
    await source.sample({ vms: ['a'], hosts: [] }, 1);
    advance(10_000);
    const out = await source.sample({ vms: ['a'], hosts: [] }, 1);
    expect(source.activity.windows).toBe(2);
    expect(sampleOf(out.vms, 'a').intervalSeconds).toBeLessThan(5);
    // At a longer interval, 10 s is recent enough.
    advance(10_000);
    const slow = await source.sample({ vms: ['a'], hosts: [] }, 5);
    expect(source.activity.windows).toBe(2);
    expect(sampleOf(slow.vms, 'a').intervalSeconds).toBeGreaterThanOrEqual(10);
    expect(sampleOf(slow.vms, 'a').cpuUsagePercent).toBeCloseTo(10, 6);
  });

  it('gives no entry for a domain that is not running, an Error for one that is gone or a host not its own', async () => {
    const { source, domains } = scripted();
    domains.set('on', { run: 1, state: 1, cpuPerMs: 1, cpuBase: 0 });
    domains.set('paused', { run: 2, state: 3, cpuPerMs: 0, cpuBase: 5 });
    domains.set('off', { run: -1, state: 5, cpuPerMs: 0, cpuBase: 0 });
    const out = await source.sample({ vms: ['on', 'paused', 'off', 'gone'], hosts: ['host-a', 'host-b'] }, 1);
    expect([...out.vms.keys()].sort()).toEqual(['gone', 'on', 'paused']);
    expect(out.vms.get('gone')).toMatchObject({ code: VirErr.NO_DOMAIN });
    expect(sampleOf(out.vms, 'paused').cpuUsagePercent).toBe(0);
    expect(out.hosts.get('host-b')).toBeInstanceOf(Error);
    expect((out.hosts.get('host-b') as Error).message).toContain('host-a');
    expect(sampleOf(out.hosts, 'host-a')).toBeDefined();
  });

  it('asks each running guest for memory reports once per start, unless read-only; keeps no history', async () => {
    const { source, domains, calls } = scripted();
    domains.set('a', { run: 1, state: 1, cpuPerMs: 1, cpuBase: 0 });
    await source.sample({ vms: ['a'], hosts: [] }, 1);
    await source.sample({ vms: ['a'], hosts: [] }, 1);
    expect(calls.filter((c) => c === 'setMemoryStatsPeriod')).toHaveLength(1);
    domains.set('a', { run: 2, state: 1, cpuPerMs: 1, cpuBase: 0 });
    await source.sample({ vms: ['a'], hosts: [] }, 1);
    expect(calls.filter((c) => c === 'setMemoryStatsPeriod')).toHaveLength(2);
    expect(source.activity.statsPeriodsSet).toBe(2);

    const readOnly = scripted({ setStatsPeriod: false });
    readOnly.domains.set('a', { run: 1, state: 1, cpuPerMs: 1, cpuBase: 0 });
    await readOnly.source.sample({ vms: ['a'], hosts: [] }, 1);
    expect(readOnly.calls).not.toContain('setMemoryStatsPeriod');

    expect(source.minIntervalSeconds).toBe(1);
    expect(source.historyResolutions).toEqual([]);
    const e = await rejection(source.history('VM', ['a'], 0, Date.now(), 60));
    expect(e).toBeInstanceOf(GatewayError);
    expect((e as GatewayError).extensions['code']).toBe(ErrorCode.METRICS_UNAVAILABLE);
  });
});

describe('libvirt metrics on the test driver (no CPU, block or network counters)', () => {
  let provider: LibvirtProvider;
  const estate = writeEstate({ vms: 200 });

  beforeAll(async () => {
    const config = validateConfig({ platforms: [{ id: 'lv', kind: 'libvirt', uri: estate.uri }] });
    provider = new LibvirtProvider(config.platforms[0] as LibvirtPlatformConfig, silent);
    await provider.start();
    expect(provider.state().status).toBe('CONNECTED');
  });
  afterAll(() => provider?.stop());

  it('reads node counters, with a part the driver lacks as its error', async () => {
    const node = await provider.withClient((c) => c.call('getNodeStats'));
    expect(Object.keys(node.cpu).sort()).toEqual(['idle', 'iowait', 'kernel', 'user']);
    expect(node.memory).toMatchObject({ code: VirErr.NO_SUPPORT });
    expect(Math.abs(node.time - Date.now())).toBeLessThan(60_000);
  });

  it('reads bulk stats of the domains named, in order, with an error for a missing one only', async () => {
    const missing = '00000000-0000-0000-0000-00000000dead';
    const uuids = [estate.vms[3]!.uuid, missing, estate.vms[0]!.uuid];
    const { domains } = await provider.withClient((c) => c.call('getDomainStats', uuids, ALL_STATS, 0));
    expect(domains.map((d) => (d instanceof Error ? d : d.uuid))).toEqual([
      uuids[0],
      expect.objectContaining({ code: VirErr.NO_DOMAIN }),
      uuids[2],
    ]);
    expect((domains[2] as NativeDomainStats).params['state.state']).toBe(1);
  });

  it('samples running domains and the host; off ones have no entry, unknown ones an Error', async () => {
    const [host] = await provider.listHosts();
    const running = estate.vms.filter((v) => v.rawState === 'running').slice(0, 3);
    const off = estate.vms.find((v) => v.rawState === 'shutoff')!;
    const gone = '00000000-0000-0000-0000-00000000beef';
    const out = await provider.metrics.sample(
      { vms: [...running.map((v) => v.uuid), off.uuid, gone], hosts: [host!.nativeId, 'elsewhere'] },
      1,
    );
    for (const v of running) expect(sampleOf(out.vms, v.uuid).raw['state.state']).toBe(1);
    expect(out.vms.has(off.uuid)).toBe(false);
    expect(out.vms.get(gone)).toMatchObject({ code: VirErr.NO_DOMAIN });
    const h = sampleOf(out.hosts, host!.nativeId);
    expect(h.raw['cpu.kernel']).toBeGreaterThan(0);
    expect(out.hosts.get('elsewhere')).toBeInstanceOf(Error);
  });

  it('makes the same libvirt calls per sampling for 5, 50 and 200 domains: one bulk stats call', async () => {
    const [host] = await provider.listHosts();
    const all = estate.vms.map((v) => v.uuid);
    // Once, so that every guest has been asked for memory reports already.
    await provider.metrics.sample({ vms: all, hosts: [host!.nativeId] }, 1);
    const counts: { addon: Record<string, number>; libvirt: number }[] = [];
    for (const n of [5, 50, 200]) {
      await pause();
      const before = await provider.withClient(async (c) => ({
        addon: c.addonCalls().byMethod,
        libvirt: c.libvirtCalls(),
      }));
      await provider.metrics.sample({ vms: all.slice(0, n), hosts: [host!.nativeId] }, 1);
      const after = await provider.withClient(async (c) => ({
        addon: c.addonCalls().byMethod,
        libvirt: c.libvirtCalls(),
      }));
      const addon = Object.fromEntries(
        Object.entries(after.addon)
          .map(([m, k]) => [m, k - (before.addon[m] ?? 0)] as const)
          .filter(([, k]) => k > 0),
      );
      counts.push({ addon, libvirt: after.libvirt - before.libvirt });
    }
    for (const c of counts) expect(c.addon).toEqual({ getDomainStats: 1, getNodeStats: 1 });
    expect(new Set(counts.map((c) => c.libvirt)).size).toBe(1);
  });
});

// Real guests: a libvirtd of the test's own with the qemu driver.
const BUSY = 'vg-metrics-busy';
const IDLE = 'vg-metrics-idle';

function guestXml(type: string, name: string, disk: string, serial: string, cmdline: string): string {
  return `<domain type='${type}'>
  <name>${name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${GUEST.kernel}</kernel>
    <initrd>${GUEST.initramfs}</initrd>
    <cmdline>${cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <source network='vg-metrics-net'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='${serial}' append='on'/>
      <target port='0'/>
    </serial>
  </devices>
</domain>`;
}

/** Counters that only grow while a domain runs (the rest are gauges, or names and sizes). */
const MONOTONIC =
  /^(cpu\.(time|user|system)|vcpu\.\d+\.(time|delay|wait)|block\.\d+\.(rd|wr|fl)\.(reqs|bytes|times)|net\.\d+\.(rx|tx)\.(bytes|pkts|errs|drop))$/;

function sum(raw: Record<string, number>, group: 'block' | 'net', suffix: string): number {
  let total = 0;
  for (let i = 0; i < (raw[`${group}.count`] ?? 0); i++) total += raw[`${group}.${i}.${suffix}`] ?? NaN;
  return total;
}

function numericParams(d: NativeDomainStats | Error | undefined): Record<string, number> {
  if (!d || d instanceof Error) throw new Error(`no stats: ${String(d)}`);
  return Object.fromEntries(Object.entries(d.params).filter((e): e is [string, number] => typeof e[1] === 'number'));
}

describe('libvirt metrics of real QEMU guests', () => {
  let daemon: QemuLibvirtd;
  let provider: LibvirtProvider;
  let direct: LibvirtClient;
  let busy: string;
  let idle: string;
  let hostName: string;
  const serialOf = (name: string) => join(daemon.dir, `${name}.serial.log`);
  const readyCount = (name: string) => {
    try {
      return readFileSync(serialOf(name), 'utf8').split(READY_MARKER).length - 1;
    } catch {
      return 0;
    }
  };
  const metrics = () => provider.metrics;

  holdGuestTurn();

  beforeAll(async () => {
    assertGuestBuilt();
    const { domainType } = await guestAccel();
    daemon = qemuLibvirtd('metrics');
    await daemon.start();
    const files = join(daemon.dir, 'files');
    mkdirSync(files, { recursive: true });
    // NICs on a bridge of the daemon's own network namespace, with nothing else on it.
    writeFileSync(
      join(daemon.dir, 'net.xml'),
      "<network><name>vg-metrics-net</name><bridge name='vgmbr0' stp='off'/></network>",
    );
    await daemon.virsh('net-define', join(daemon.dir, 'net.xml'));
    await daemon.virsh('net-start', 'vg-metrics-net');
    for (const [name, load] of [
      [BUSY, ' vg.load=cpu,disk,net'],
      [IDLE, ''],
    ] as const) {
      const dir = join(files, name);
      mkdirSync(dir);
      const xml = join(daemon.dir, `${name}.xml`);
      writeFileSync(xml, guestXml(domainType, name, await diskOverlay(dir), serialOf(name), GUEST.cmdline + load));
      await daemon.virsh('define', xml);
      await daemon.virsh('start', name);
    }
    await eventually(() => readyCount(BUSY) >= 1 && readyCount(IDLE) >= 1, 90_000);
    expect(readFileSync(serialOf(BUSY), 'utf8')).toContain('load: cpu disk net');
    const config = validateConfig({ platforms: [{ id: 'qemu', kind: 'libvirt', uri: daemon.uri }] });
    provider = new LibvirtProvider(config.platforms[0] as LibvirtPlatformConfig, silent);
    await provider.start();
    expect(provider.state().status).toBe('CONNECTED');
    direct = await LibvirtClient.open(daemon.uri);
    busy = (await direct.call('lookupDomainByName', BUSY)).uuid;
    idle = (await direct.call('lookupDomainByName', IDLE)).uuid;
    hostName = (await provider.listHosts())[0]!.nativeId;
  }, 180_000);

  afterAll(async () => {
    await direct?.close();
    await provider?.stop();
    for (const name of [BUSY, IDLE]) await daemon?.virsh('destroy', name).catch(() => undefined);
    await daemon?.virsh('net-destroy', 'vg-metrics-net').catch(() => undefined);
    await daemon?.destroy();
  });

  it('gives a first sample over a short window: the busy guest well above the idle one, the host plausible', async () => {
    const windows = metrics().activity.windows;
    const out = await metrics().sample({ vms: [busy, idle], hosts: [hostName] }, 1);
    expect(metrics().activity.windows).toBe(windows + 1);
    const b = sampleOf(out.vms, busy);
    const i = sampleOf(out.vms, idle);
    expect(b.intervalSeconds).toBeGreaterThan(0.5);
    expect(b.cpuUsagePercent).toBeGreaterThan(20);
    expect(b.cpuUsagePercent!).toBeGreaterThan(3 * i.cpuUsagePercent!);
    expect(b.diskReadBytesPerSecond).toBeGreaterThan(100_000);
    expect(b.diskReadIops).toBeGreaterThan(1);
    expect(b.diskReadBytesPerSecond!).toBeGreaterThan(10 * i.diskReadBytesPerSecond!);
    expect(b.cpuReadyPercent).toBeGreaterThanOrEqual(0);
    for (const s of [b, i]) {
      for (const f of ['diskWriteBytesPerSecond', 'networkRxBytesPerSecond', 'networkTxBytesPerSecond'] as const) {
        expect(s[f]).toBeGreaterThanOrEqual(0);
      }
    }

    const h = sampleOf(out.hosts, hostName);
    expect(h.cpuUsagePercent).toBeGreaterThan(0);
    expect(h.cpuUsagePercent).toBeLessThanOrEqual(100);
    expect(h.diskReadBytesPerSecond).toBeNull();
    expect(h.networkRxBytesPerSecond).toBeNull();
    // virNodeGetMemoryStats over all cells reads the host's /proc/meminfo (the daemon runs in this kernel).
    const meminfo = Object.fromEntries(
      readFileSync('/proc/meminfo', 'utf8')
        .split('\n')
        .map((l) => /^(\w+):\s+(\d+) kB/.exec(l))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => [m[1]!, Number(m[2])]),
    );
    expect(h.raw['memory.total']).toBe(meminfo['MemTotal']);
    const usedNow = (meminfo['MemTotal']! - meminfo['MemFree']! - meminfo['Buffers']! - meminfo['Cached']!) * 1024;
    expect(Math.abs(h.memoryUsedBytes! - usedNow)).toBeLessThan(0.1 * meminfo['MemTotal']! * 1024);
    expect(h.memoryUsagePercent).toBeGreaterThan(0);
    expect(h.memoryUsagePercent).toBeLessThan(100);
  }, 60_000);

  it("shows the guest's own memory use once the source has set its balloon stats period", async () => {
    let b: MetricSample | undefined;
    await eventually(async () => {
      await pause();
      const out = await metrics().sample({ vms: [busy, idle], hosts: [] }, 1);
      b = sampleOf(out.vms, busy);
      const age = Date.now() / 1000 - (b.raw['balloon.last-update'] ?? 0);
      return metrics().activity.statsPeriodsSet >= 2 && b.memoryUsedBytes !== null && age < 5;
    }, 30_000);
    expect(b!.memoryUsedBytes).toBe((b!.raw['balloon.current']! - b!.raw['balloon.unused']!) * 1024);
    expect(b!.memoryUsagePercent).toBeGreaterThan(0);
    expect(b!.memoryUsagePercent).toBeLessThan(100);
    expect(b!.raw['balloon.rss']).toBeGreaterThan(0);
    expect(await daemon.virsh('dumpxml', BUSY)).toMatch(/<stats period='1'\/>/);
  }, 60_000);

  it('agrees with direct readings: raw counters between readings around it, rates from two samples exactly', async () => {
    const read = () => direct.call('getDomainStats', [busy, idle], ALL_STATS, 0);
    // Fresh previous readings, so neither sampling below waits a window (at
    // 2 s, readings up to 6 s old are recent: slack for a loaded machine).
    await metrics().sample({ vms: [busy, idle], hosts: [] }, 2);
    await pause();
    const windows = metrics().activity.windows;

    const before = await read();
    const first = await metrics().sample({ vms: [busy, idle], hosts: [] }, 2);
    const after = await read();
    for (const [k, uuid] of [busy, idle].entries()) {
      const s = sampleOf(first.vms, uuid);
      const lo = numericParams(before.domains[k]);
      const hi = numericParams(after.domains[k]);
      const monotonic = Object.keys(s.raw).filter((n) => MONOTONIC.test(n));
      expect(monotonic).toEqual(
        expect.arrayContaining(['cpu.time', 'block.0.rd.bytes', 'net.0.tx.bytes', 'vcpu.0.delay']),
      );
      for (const name of monotonic) {
        expect(s.raw[name], name).toBeGreaterThanOrEqual(lo[name]!);
        expect(s.raw[name], name).toBeLessThanOrEqual(hi[name]!);
      }
      expect(s.timestamp).toBeGreaterThanOrEqual(Math.floor(before.time));
      expect(s.timestamp).toBeLessThanOrEqual(Math.ceil(after.time));
    }

    await new Promise((r) => setTimeout(r, 1_200));
    const second = await metrics().sample({ vms: [busy, idle], hosts: [] }, 2);
    expect(metrics().activity.windows).toBe(windows);
    for (const uuid of [busy, idle]) {
      const s1 = sampleOf(first.vms, uuid);
      const s2 = sampleOf(second.vms, uuid);
      const r1 = s1.raw;
      const r2 = s2.raw;
      const seconds = (s2.timestamp - s1.timestamp) / 1000;
      expect(s2.intervalSeconds).toBe(seconds);
      const vcpus = r2['vcpu.current']!;
      expect(s2.cpuUsagePercent).toBe(((r2['cpu.time']! - r1['cpu.time']!) / (seconds * 1e9 * vcpus)) * 100);
      const delay = (r: Record<string, number>) => {
        let total = 0;
        for (let v = 0; v < r['vcpu.maximum']!; v++) total += r[`vcpu.${v}.delay`]!;
        return total;
      };
      expect(s2.cpuReadyPercent).toBe(((delay(r2) - delay(r1)) / (seconds * 1e9 * vcpus)) * 100);
      const rate = (group: 'block' | 'net', suffix: string) =>
        (sum(r2, group, suffix) - sum(r1, group, suffix)) / seconds;
      expect(s2.diskReadBytesPerSecond).toBe(rate('block', 'rd.bytes'));
      expect(s2.diskWriteBytesPerSecond).toBe(rate('block', 'wr.bytes'));
      expect(s2.diskReadIops).toBe(rate('block', 'rd.reqs'));
      expect(s2.diskWriteIops).toBe(rate('block', 'wr.reqs'));
      expect(s2.networkRxBytesPerSecond).toBe(rate('net', 'rx.bytes'));
      expect(s2.networkTxBytesPerSecond).toBe(rate('net', 'tx.bytes'));
    }
    // The busy guest pings a neighbour that is never there: its NIC sends.
    expect(sampleOf(second.vms, busy).networkTxBytesPerSecond).toBeGreaterThan(1000);
  }, 60_000);

  it('makes one bulk stats call per sampling, whatever the number of domains asked', async () => {
    const missing = Array.from({ length: 6 }, (_, i) => `00000000-0000-4000-8000-00000000000${i}`);
    await metrics().sample({ vms: [busy, idle], hosts: [hostName] }, 2);
    const counts: { addon: Record<string, number>; libvirt: number }[] = [];
    for (const vms of [[busy], [busy, idle], [busy, idle, ...missing]]) {
      const snapshot = () =>
        provider.withClient(async (c) => ({ addon: c.addonCalls().byMethod, libvirt: c.libvirtCalls() }));
      await pause();
      const before = await snapshot();
      const out = await metrics().sample({ vms, hosts: [hostName] }, 2);
      const after = await snapshot();
      for (const m of missing.filter((u) => vms.includes(u)))
        expect(out.vms.get(m)).toMatchObject({ code: VirErr.NO_DOMAIN });
      counts.push({
        addon: Object.fromEntries(
          Object.entries(after.addon)
            .map(([m, k]) => [m, k - (before.addon[m] ?? 0)] as const)
            .filter(([, k]) => k > 0),
        ),
        libvirt: after.libvirt - before.libvirt,
      });
    }
    // Printed for the benchmark notes.
    console.log(JSON.stringify({ metricsCallsPerSampling: counts }));
    for (const c of counts) {
      expect(c.addon).toEqual({ getDomainStats: 1, getNodeStats: 1 });
      // One virDomainListGetStats and four node calls (a count, then the
      // values, for CPU and memory), plus resolving the UUIDs: up to four
      // lookups, one listing beyond.
      expect(c.libvirt).toBeGreaterThanOrEqual(1 + 1 + 4);
      expect(c.libvirt).toBeLessThanOrEqual(4 + 1 + 4);
    }
    expect(counts[2]!.libvirt).toBe(1 + 1 + 4);
  }, 60_000);

  it('gives no entry for a stopped guest and no negative rates when it starts again', async () => {
    await daemon.virsh('destroy', IDLE);
    const stopped = await metrics().sample({ vms: [busy, idle], hosts: [] }, 1);
    expect(stopped.vms.has(idle)).toBe(false);
    expect(sampleOf(stopped.vms, busy).cpuUsagePercent).toBeGreaterThan(0);

    await daemon.virsh('start', IDLE);
    const windows = metrics().activity.windows;
    const restarted = await metrics().sample({ vms: [busy, idle], hosts: [] }, 1);
    expect(metrics().activity.windows).toBe(windows + 1);
    const s = sampleOf(restarted.vms, idle);
    for (const f of [
      'cpuUsagePercent',
      'diskReadBytesPerSecond',
      'diskWriteBytesPerSecond',
      'diskReadIops',
      'diskWriteIops',
      'networkRxBytesPerSecond',
      'networkTxBytesPerSecond',
    ] as const) {
      expect(s[f], f).toBeGreaterThanOrEqual(0);
    }
  }, 90_000);

  it('serves samples through the graph, and keeps recorded history across a gateway restart with Redis', async () => {
    const redis = await redisServer();
    const config = () => ({
      redis: { url: redis.url, leaseTtlMs: 1_500, connectTimeoutMs: 2_000 },
      platforms: [
        { id: 'qemu', kind: 'libvirt', uri: daemon.uri, metrics: { history: true, historyIntervalSeconds: 5 } },
      ],
    });
    let gw: TestGateway | null = await startTestGateway(config());
    const history = async (g: TestGateway, id: string) => {
      const res = await g.query<{
        node: {
          metrics: {
            source: string;
            resolutionSeconds: number;
            points: { timestamp: string; cpuUsagePercent: number | null }[];
          };
        };
      }>(
        `query($id: ID!, $from: DateTime!) { node(id: $id) { ... on VirtualMachine {
          metrics(from: $from) { source resolutionSeconds points { timestamp cpuUsagePercent } } } } }`,
        { id, from: new Date(Date.now() - 600_000).toISOString() },
      );
      expect(res.errors).toBeUndefined();
      return res.data!.node.metrics;
    };
    try {
      let id = '';
      await eventually(async () => {
        const res = await gw!.query<{ virtualMachines: { nodes: { id: string; name: string }[] } }>(
          '{ virtualMachines(first: 10) { nodes { id name } } }',
        );
        id = res.data?.virtualMachines.nodes.find((v) => v.name === BUSY)?.id ?? '';
        return id !== '';
      }, 20_000);
      const sub = subscribe<{
        vmMetrics: {
          sample: { intervalSeconds: number; cpuUsagePercent: number | null; diskReadBytesPerSecond: number | null };
        };
      }>(
        gw.url,
        'subscription($ids: [ID!]!) { vmMetrics(ids: $ids, intervalSeconds: 2) { sample { intervalSeconds cpuUsagePercent diskReadBytesPerSecond } } }',
        { ids: [id] },
      );
      try {
        const events = await sub.until(3, 30_000);
        for (const e of events) expect(e.vmMetrics.sample.cpuUsagePercent).toBeGreaterThan(20);
        // The time between two readings, served as it is (it was an Int the fraction failed to serialize as).
        for (const e of events) expect(e.vmMetrics.sample.intervalSeconds).toBeGreaterThan(0);
        // Block counters need the domain's job lock, which a loaded QEMU may hold when it is read
        // (the stats are read without waiting for it): such a sample's disk rates are unknown, not 0.
        const disk = events.map((e) => e.vmMetrics.sample.diskReadBytesPerSecond);
        expect(
          disk.some((d) => d !== null && d > 100_000),
          JSON.stringify(disk),
        ).toBe(true);
      } finally {
        await sub.close();
      }
      const host = await gw.query<{
        hosts: { nodes: { metrics: { latest: { memoryUsedBytes: number; cpuUsagePercent: number } | null } }[] };
      }>('{ hosts(first: 1) { nodes { metrics { latest { memoryUsedBytes cpuUsagePercent } } } } }');
      expect(host.data!.hosts.nodes[0]!.metrics.latest!.memoryUsedBytes).toBeGreaterThan(0);

      // The holder records every 5 s, into Redis.
      await eventually(async () => (await history(gw!, id)).points.length >= 2, 40_000);
      const before = await history(gw, id);
      expect(before.source).toBe('RECORDED');
      expect(before.resolutionSeconds).toBe(5);
      await gw.close();
      gw = null;

      // Another gateway, the same Redis: the history recorded before is there.
      gw = await startTestGateway(config());
      const after = await history(gw, id);
      expect(after.source).toBe('RECORDED');
      const kept = new Map(after.points.map((p) => [p.timestamp, p.cpuUsagePercent]));
      for (const p of before.points) {
        // Recorded with 7 significant digits.
        expect(kept.get(p.timestamp)).toBeCloseTo(p.cpuUsagePercent!, 3);
      }
    } finally {
      await gw?.close();
      await redis.stop();
    }
  }, 120_000);
});

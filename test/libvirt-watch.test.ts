import { spawn } from 'node:child_process';

import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { validateConfig } from '../src/config/load.js';
import type { LibvirtPlatformConfig } from '../src/config/schema.js';
import { readInventory } from '../src/datasources/full-read.js';
import { LibvirtClient } from '../src/datasources/libvirt/client.js';
import { readDomainStates } from '../src/datasources/libvirt/domain-read.js';
import { LibvirtProvider } from '../src/datasources/libvirt/provider.js';
import {
  type LibvirtInventoryWatch,
  type LibvirtWatchOptions,
  watchLibvirt,
} from '../src/datasources/libvirt/watch.js';
import type { FullReadReason, InventoryChange, InventoryState, WatchSink } from '../src/datasources/watch.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { type Libvirtd, libvirtd } from './helpers/libvirtd.js';

// The libvirt watch follows the addon's event callbacks: its full read must
// be what the provider's own reads give, and every change made behind the
// gateway's back (through another connection to the same daemon) must
// arrive as the object, whole, within a second, read again alone.

const silent = pino({ level: 'silent' });
const TEST_DOMAIN = '6695eb01-f6a4-8304-79aa-97f2502e193f'; // "test" of test:///default

type Call =
  | { at: number; kind: 'replace'; reason: FullReadReason; state: InventoryState }
  | { at: number; kind: 'apply'; changes: readonly InventoryChange[] }
  | { at: number; kind: 'interrupted'; reason: string };

/** A sink that keeps every call, with helpers to wait for one. */
class Recorder implements WatchSink {
  readonly calls: Call[] = [];
  replace(state: InventoryState, reason: FullReadReason): void {
    this.calls.push({ at: performance.now(), kind: 'replace', reason, state });
  }
  apply(changes: readonly InventoryChange[]): void {
    this.calls.push({ at: performance.now(), kind: 'apply', changes });
  }
  interrupted(reason: string): void {
    this.calls.push({ at: performance.now(), kind: 'interrupted', reason });
  }

  /** The first call from index `from` on that matches, waiting up to timeoutMs for it. */
  async next<K extends Call['kind']>(
    kind: K,
    pred: (c: Extract<Call, { kind: K }>) => boolean = () => true,
    from = 0,
    timeoutMs = 2_000,
  ): Promise<Extract<Call, { kind: K }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.calls
        .slice(from)
        .find((c): c is Extract<Call, { kind: K }> => c.kind === kind && pred(c as Extract<Call, { kind: K }>));
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no ${kind} call within ${timeoutMs} ms`);
      await sleep(2);
    }
  }

  /** The change of one object in an apply() from index `from` on. */
  async change(kind: InventoryChange['kind'], nativeId: string, from: number, timeoutMs = 1_000) {
    const call = await this.next(
      'apply',
      (c) => c.changes.some((ch) => ch.kind === kind && ch.nativeId === nativeId),
      from,
      timeoutMs,
    );
    return { at: call.at, change: call.changes.find((ch) => ch.kind === kind && ch.nativeId === nativeId)! };
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Calls per method between two counts, where there were any. */
function diff(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  return Object.fromEntries(
    Object.entries(after)
      .map(([m, n]) => [m, n - (before[m] ?? 0)] as const)
      .filter(([, n]) => n > 0),
  );
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => undefined);
});

async function provider(uri: string): Promise<LibvirtProvider> {
  const config = validateConfig({
    platforms: [{ id: 'lv', kind: 'libvirt', uri, retryInitialMs: 50, retryMaxMs: 200 }],
  });
  const p = new LibvirtProvider(config.platforms[0] as LibvirtPlatformConfig, silent);
  await p.start();
  cleanups.push(() => p.stop());
  expect(p.state().status).toBe('CONNECTED');
  return p;
}

function watch(p: LibvirtProvider, sink: WatchSink, extra: Partial<LibvirtWatchOptions> = {}): LibvirtInventoryWatch {
  const w = p.watch(sink, { resyncIntervalMs: 60_000, retryInitialMs: 50, retryMaxMs: 200, ...extra });
  cleanups.push(() => w.stop());
  return w;
}

/** A connection of the test's own: changes made behind the gateway's back. */
async function admin(uri: string): Promise<LibvirtClient> {
  const c = await LibvirtClient.open(uri);
  cleanups.push(() => c.close());
  return c;
}

/** One VM as the provider's batch reads (the full-read path) give it now. */
async function vmNow(p: LibvirtProvider, uuid: string) {
  return (await readInventory(p)).vms.find((s) => s.vm.nativeId === uuid) ?? null;
}

const domainXml = (name: string, uuid: string) =>
  `<domain type='test'><name>${name}</name><uuid>${uuid}</uuid><memory>1048576</memory><os><type>hvm</type></os></domain>`;

describe('the libvirt watch on the in-process test driver', () => {
  it('starts with a full read equal to the provider’s own, then follows changes made through its connection', async () => {
    const estate = writeEstate({ vms: 14 });
    const p = await provider(estate.uri);
    const sink = new Recorder();
    const w = watch(p, sink);
    const first = await sink.next('replace');
    expect(first.reason).toBe('initial');
    expect(first.state).toEqual(await readInventory(p));

    const vm = estate.vms[0]!;
    const from = sink.calls.length;
    const before = w.stats().reads.domains;
    await p.withClient((c) => c.call('domainLifecycle', vm.uuid, 'suspend'));
    const { change } = await sink.change('VirtualMachine', vm.uuid, from);
    expect(change.record).toEqual(await vmNow(p, vm.uuid));
    expect(change.record).toMatchObject({ vm: { powerState: 'PAUSED' } });
    expect(w.stats().reads.domains).toBe(before + 1);
  });

  it('reads a domain alone as the batch reads give it, for every domain of an estate', async () => {
    const estate = writeEstate({ vms: 21 });
    const p = await provider(estate.uri);
    const full = await readInventory(p);
    const host = (await p.listHosts())[0]!.nativeId;
    const ids = estate.vms.map((v) => v.uuid);
    const alone = await p.withClient((c) => readDomainStates(c, p.id, host, ids));
    expect(full.vms).toHaveLength(ids.length);
    for (const state of full.vms) expect(alone.get(state.vm.nativeId)).toEqual(state);
    // One domain: one call into the addon, no listing.
    const calls = await p.withClient(async (c) => {
      const before = c.addonCalls().total;
      await readDomainStates(c, p.id, host, [ids[3]!]);
      return c.addonCalls().total - before;
    });
    expect(calls).toBe(1);
  });
});

describe('the libvirt watch where libvirt gives no events', () => {
  it('reads everything at each resync instead, without reporting the stream down', async () => {
    const estate = writeEstate({ vms: 3 });
    const p = await provider(estate.uri);
    const sink = new Recorder();
    const unused = () => Promise.reject(new Error('no event, no targeted read'));
    const w = watchLibvirt(
      sink,
      { resyncIntervalMs: 100, retryInitialMs: 50, retryMaxMs: 200 },
      {
        platformId: p.id,
        logger: silent,
        readAll: () => readInventory(p),
        readDomains: unused,
        readNetworks: unused,
        readStorage: unused,
        probe: async () => true,
        subscribe: () =>
          Promise.reject(
            Object.assign(new Error('this function is not supported by the connection driver'), {
              name: 'LibvirtError',
              code: 3,
              domain: 0,
            }),
          ),
      },
    );
    cleanups.push(() => w.stop());
    expect((await sink.next('replace')).reason).toBe('initial');
    await sink.next('replace', (c) => c.reason === 'resync');
    expect(sink.calls.filter((c) => c.kind !== 'replace')).toEqual([]);
  });
});

describe('the libvirt watch on a real libvirtd', () => {
  let daemon: Libvirtd;
  beforeAll(async () => {
    daemon = libvirtd();
    await daemon.start();
  });
  afterAll(() => daemon?.stop());

  it('starts with a full read equal to the provider’s own', async () => {
    const p = await provider(daemon.uri);
    const sink = new Recorder();
    watch(p, sink);
    const first = await sink.next('replace');
    expect(first.reason).toBe('initial');
    expect(first.state).toEqual(await readInventory(p));
  });

  it('applies changes made through another connection within a second, each read again alone', async () => {
    const p = await provider(daemon.uri);
    const sink = new Recorder();
    const w = watch(p, sink);
    await sink.next('replace');
    const other = await admin(daemon.uri);
    const latencies: number[] = [];

    /** Does `act`, then waits for the object's change; checks it against a read of its own. */
    async function step<T>(
      act: () => Promise<unknown>,
      kind: InventoryChange['kind'],
      nativeId: string,
      expected: () => Promise<T>,
    ) {
      const from = sink.calls.length;
      const callsBefore = await p.withClient(async (c) => c.addonCalls().byMethod);
      const started = performance.now();
      await act();
      const { at, change } = await sink.change(kind, nativeId, from);
      const callsAfter = await p.withClient(async (c) => c.addonCalls().byMethod);
      latencies.push(at - started);
      expect(at - started).toBeLessThan(1_000);
      expect(change.record).toEqual(await expected());
      return { change, calls: diff(callsBefore, callsAfter) };
    }

    const suspended = await step(
      () => other.call('domainLifecycle', TEST_DOMAIN, 'suspend'),
      'VirtualMachine',
      TEST_DOMAIN,
      () => vmNow(p, TEST_DOMAIN),
    );
    // The event cost one call into the addon: readDomains, not a listing.
    expect(suspended.calls).toEqual({ readDomains: 1 });

    await step(
      () => other.call('domainLifecycle', TEST_DOMAIN, 'resume'),
      'VirtualMachine',
      TEST_DOMAIN,
      () => vmNow(p, TEST_DOMAIN),
    );
    await step(
      () => other.call('domainLifecycle', TEST_DOMAIN, 'destroy'),
      'VirtualMachine',
      TEST_DOMAIN,
      () => vmNow(p, TEST_DOMAIN),
    );
    await step(
      () => other.call('domainLifecycle', TEST_DOMAIN, 'create'),
      'VirtualMachine',
      TEST_DOMAIN,
      () => vmNow(p, TEST_DOMAIN),
    );

    const uuid = '5f0c0009-0000-4000-8000-0000000000a1';
    const defined = await step(
      () => other.call('defineXml', domainXml('watched-one', uuid)),
      'VirtualMachine',
      uuid,
      () => vmNow(p, uuid),
    );
    expect(defined.change.record).toMatchObject({ vm: { name: 'watched-one', powerState: 'OFF' }, snapshots: [] });

    // libvirt has no snapshot events: a snapshot shows with the domain's next event (or the next resync).
    await other.call('snapshotCreate', uuid, '<domainsnapshot><name>quiet</name></domainsnapshot>', 0);
    const started = await step(
      () => other.call('domainLifecycle', uuid, 'create'),
      'VirtualMachine',
      uuid,
      () => vmNow(p, uuid),
    );
    expect(started.change.record).toMatchObject({ vm: { powerState: 'ON' }, snapshots: [{ name: 'quiet' }] });

    await step(
      () => other.call('domainLifecycle', uuid, 'destroy'),
      'VirtualMachine',
      uuid,
      () => vmNow(p, uuid),
    );
    await step(
      () => other.call('domainLifecycle', uuid, 'undefine', 2 /* snapshots metadata */),
      'VirtualMachine',
      uuid,
      async () => null,
    );

    const [network] = await other.call('listAllNetworks', 0);
    expect(defined.calls).toEqual({ readDomains: 1 });

    const net = await step(
      () => other.call('networkLifecycle', network!.uuid, 'destroy'),
      'Network',
      network!.uuid,
      async () => (await p.listNetworks()).find((n) => n.nativeId === network!.uuid),
    );
    expect(net.change.record).toMatchObject({ name: network!.name, active: false });
    expect(net.calls).toEqual({ listAllNetworks: 1 });
    await step(
      () => other.call('networkLifecycle', network!.uuid, 'create'),
      'Network',
      network!.uuid,
      async () => (await p.listNetworks()).find((n) => n.nativeId === network!.uuid),
    );

    const [pool] = await other.call('listAllStoragePools', 0);
    const poolNow = async () => (await p.listStorage()).find((s) => s.nativeId === pool!.uuid);
    const stopped = await step(
      () => other.call('poolLifecycle', pool!.uuid, 'destroy'),
      'Storage',
      pool!.uuid,
      poolNow,
    );
    expect(stopped.change.record).toMatchObject({ state: 'INACTIVE', active: false });
    expect(stopped.calls).toEqual({ listAllStoragePools: 1, listStorageVolumes: 1 });
    const from = sink.calls.length;
    await step(() => other.call('poolLifecycle', pool!.uuid, 'create'), 'Storage', pool!.uuid, poolNow);
    const volumes = await sink.change('StorageVolumes', pool!.uuid, from);
    expect(volumes.change.record).toEqual((await p.getVolumes([pool!.uuid]))[0]);
    await step(() => other.call('poolLifecycle', pool!.uuid, 'refresh'), 'Storage', pool!.uuid, poolNow);

    expect(sink.calls.filter((c) => c.kind !== 'apply')).toHaveLength(1); // the initial replace alone
    const stats = w.stats();
    expect(stats.latencyMs.max).toBeLessThan(1_000);
    // One targeted read per change: 8 domain, 2 network and 3 pool events, none coalesced away here.
    expect(stats.reads).toEqual({ domains: 8, networks: 2, storage: 3 });
    expect(stats.fullReads).toBe(1);
    console.log(
      `libvirt watch: event to apply ${Math.min(...latencies).toFixed(1)}-${Math.max(...latencies).toFixed(1)} ms` +
        ` (mean ${(latencies.reduce((a, b) => a + b, 0) / latencies.length).toFixed(1)} ms over ${latencies.length} changes, op included);` +
        ` watch's own: mean ${stats.latencyMs.mean?.toFixed(1)} ms, max ${stats.latencyMs.max?.toFixed(1)} ms`,
    );
  });

  it('reads a burst of events for one domain once', async () => {
    const p = await provider(daemon.uri);
    const sink = new Recorder();
    const w = watch(p, sink, { coalesceMs: 50 });
    await sink.next('replace');
    const other = await admin(daemon.uri);
    const from = sink.calls.length;
    await other.call('domainLifecycle', TEST_DOMAIN, 'suspend');
    await other.call('domainLifecycle', TEST_DOMAIN, 'resume');
    await other.call('domainLifecycle', TEST_DOMAIN, 'suspend');
    await other.call('domainLifecycle', TEST_DOMAIN, 'resume');
    const { change } = await sink.change('VirtualMachine', TEST_DOMAIN, from);
    expect(change.record).toMatchObject({ vm: { powerState: 'ON' } });
    await sleep(100);
    expect(w.stats()).toMatchObject({ events: 4, reads: { domains: 1 }, applies: 1 });
  });

  it('heals what no event tells at each resync', async () => {
    const p = await provider(daemon.uri);
    const sink = new Recorder();
    watch(p, sink, { resyncIntervalMs: 300 });
    await sink.next('replace');
    const other = await admin(daemon.uri);
    const from = sink.calls.length;
    await other.call('snapshotCreate', TEST_DOMAIN, '<domainsnapshot><name>resynced</name></domainsnapshot>', 0);
    const resync = await sink.next(
      'replace',
      (c) => c.state.vms.some((v) => v.snapshots.some((s) => s.name === 'resynced')),
      from,
    );
    expect(resync.reason).toBe('resync');
    await other.call('snapshotDelete', TEST_DOMAIN, 'resynced', 0);
  });

  it('stops promptly, with no sink call after stop() resolved', async () => {
    const p = await provider(daemon.uri);
    const sink = new Recorder();
    const w = watch(p, sink);
    await sink.next('replace');
    const other = await admin(daemon.uri);
    const started = performance.now();
    await w.stop();
    expect(performance.now() - started).toBeLessThan(200);
    const calls = sink.calls.length;
    await other.call('domainLifecycle', TEST_DOMAIN, 'suspend');
    await other.call('domainLifecycle', TEST_DOMAIN, 'resume');
    await sleep(200);
    expect(sink.calls).toHaveLength(calls);
  });

  it('lets the process exit once the watch and the provider are stopped', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/libvirt-watch-exit.ts', daemon.uri], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => {
      const t = setTimeout(() => {
        child.kill('SIGKILL');
        resolve(null);
      }, 15_000);
      child.once('exit', (c) => {
        clearTimeout(t);
        resolve(c);
      });
    });
    expect({ code, out }).toMatchObject({ code: 0, out: expect.stringMatching(/^stopped in \d+\.\d ms\n$/) });
  });
});

describe('the libvirt watch across daemon restarts', () => {
  it('reports the stream down when the daemon stops, reads everything when it is back, and follows events again', async () => {
    const daemon = libvirtd();
    cleanups.push(() => daemon.stop());
    await daemon.start();
    const p = await provider(daemon.uri);
    const sink = new Recorder();
    watch(p, sink);
    await sink.next('replace');
    for (let cycle = 0; cycle < 3; cycle++) {
      let from = sink.calls.length;
      const stoppedAt = performance.now();
      await daemon.stop();
      const down = await sink.next('interrupted', () => true, from, 1_000);
      expect(down.at - stoppedAt).toBeLessThan(1_000);
      // Nothing but interruptions while it is down.
      await sleep(300);
      expect(sink.calls.slice(from).every((c) => c.kind === 'interrupted')).toBe(true);

      from = sink.calls.length;
      await daemon.start();
      const back = await sink.next('replace', () => true, from, 5_000);
      expect(back.reason).toBe('reconnect');
      expect(back.state).toEqual(await readInventory(p));

      const other = await LibvirtClient.open(daemon.uri);
      try {
        from = sink.calls.length;
        await other.call('domainLifecycle', TEST_DOMAIN, 'suspend');
        const { change } = await sink.change('VirtualMachine', TEST_DOMAIN, from);
        expect(change.record).toMatchObject({ vm: { powerState: 'PAUSED' } });
      } finally {
        await other.close();
      }
    }
  });
});

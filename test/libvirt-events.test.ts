import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import {
  CloseReason,
  DomainEventType,
  type NativeConnection,
  type NativeEvent,
  type NativeEventSubscription,
  nativeAddon,
} from '../src/datasources/libvirt/addon.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { type Libvirtd, libvirtd } from './helpers/libvirtd.js';

// The addon's event stream (native/libvirt/src/events.cc): libvirt's default
// event loop on a thread of its own, callbacks registered per connection and
// delivered to JS through a thread-safe function, deregistered on
// unsubscribe and on close.

const addon = nativeAddon();
const TEST_DOMAIN = '6695eb01-f6a4-8304-79aa-97f2502e193f'; // "test" of test:///default

// virNetworkEventLifecycleType and virStoragePoolEventLifecycleType
const NetworkEvent = { DEFINED: 0, UNDEFINED: 1, STARTED: 2, STOPPED: 3 } as const;
const PoolEvent = { DEFINED: 0, UNDEFINED: 1, STARTED: 2, STOPPED: 3 } as const;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 2_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** A connection with a subscription that records every event. */
async function listen(uri: string) {
  const conn = await addon.open(uri);
  const events: NativeEvent[] = [];
  const subscription = await conn.subscribeEvents((e) => events.push(e));
  return { conn, events, subscription };
}

const opened: NativeConnection[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((c) => c.close()));
});

describe('the event loop', () => {
  it('runs from the addon’s load, before any connection is opened', () => {
    expect(addon.eventLoop()).toMatchObject({ running: true, error: null });
  });
});

describe('events of the in-process test driver', () => {
  it('delivers lifecycle events of changes made through the same connection, and none after unsubscribe', async () => {
    const estate = writeEstate({ vms: 3 });
    const before = addon.eventLoop().registrations;
    const { conn, events, subscription } = await listen(estate.uri);
    opened.push(conn);
    expect(subscription.registered).toEqual([
      'close',
      'domain:lifecycle',
      'domain:reboot',
      'domain:device-added',
      'domain:device-removed',
      'domain:metadata-change',
      'domain:tunable',
      'domain:job-completed',
      'domain:balloon-change',
      'domain:disk-change',
      'domain:block-job',
      'network:lifecycle',
      'pool:lifecycle',
      'pool:refresh',
    ]);
    expect(addon.eventLoop().registrations).toBe(before + subscription.registered.length);

    const vm = estate.vms[0]!; // running
    await conn.domainLifecycle(vm.uuid, 'suspend');
    await conn.domainLifecycle(vm.uuid, 'resume');
    await conn.domainLifecycle(vm.uuid, 'destroy');
    await until('three events', () => (events.length >= 3 ? true : undefined));
    expect(events).toEqual([
      { type: 'domain', event: 'lifecycle', uuid: vm.uuid, name: vm.name, code: DomainEventType.SUSPENDED, detail: 0 },
      { type: 'domain', event: 'lifecycle', uuid: vm.uuid, name: vm.name, code: DomainEventType.RESUMED, detail: 0 },
      { type: 'domain', event: 'lifecycle', uuid: vm.uuid, name: vm.name, code: DomainEventType.STOPPED, detail: 1 },
    ]);

    await subscription.unsubscribe();
    expect(addon.eventLoop().registrations).toBe(before);
    await conn.domainLifecycle(vm.uuid, 'create');
    await sleep(50);
    expect(events).toHaveLength(3);
    // Twice is harmless.
    await subscription.unsubscribe();
  });

  it('reads a few domains whole without listing them: null for one that is gone', async () => {
    const estate = writeEstate({ vms: 6 });
    const conn = await addon.open(estate.uri);
    opened.push(conn);
    const vm = estate.vms[0]!;
    const [one, gone] = await conn.readDomains([vm.uuid, '00000000-0000-4000-8000-000000000000']);
    expect(gone).toBeNull();
    expect(one).toMatchObject({ name: vm.name, uuid: vm.uuid, state: 1, persistent: true, autostart: false });
    expect(one && !(one instanceof Error) && one.snapshots.map((s) => [s.name, s.current])).toEqual([
      ['installed', false],
      ['patched', true],
    ]);
  });
});

describe('events through a real libvirtd', () => {
  let daemon: Libvirtd;
  beforeAll(async () => {
    daemon = libvirtd();
    await daemon.start();
  });
  afterAll(() => daemon?.stop());

  it('delivers changes made through a second connection: domains, networks, pools', async () => {
    const { conn, events, subscription } = await listen(daemon.uri);
    const other = await addon.open(daemon.uri);
    opened.push(conn, other);
    const seen = (pred: (e: NativeEvent) => boolean, what: string) => until(what, () => events.find(pred), 1_000);

    await other.domainLifecycle(TEST_DOMAIN, 'suspend');
    await seen((e) => e.type === 'domain' && e.code === DomainEventType.SUSPENDED, 'suspended');
    await other.domainLifecycle(TEST_DOMAIN, 'resume');
    await seen((e) => e.type === 'domain' && e.code === DomainEventType.RESUMED, 'resumed');

    const uuid = '5f0c0009-0000-4000-8000-000000000001';
    await other.defineXml(
      `<domain type='test'><name>evt-one</name><uuid>${uuid}</uuid><memory>1048576</memory><os><type>hvm</type></os></domain>`,
    );
    await seen((e) => e.type === 'domain' && e.uuid === uuid && e.code === DomainEventType.DEFINED, 'defined');
    await other.domainLifecycle(uuid, 'undefine');
    await seen((e) => e.type === 'domain' && e.uuid === uuid && e.code === DomainEventType.UNDEFINED, 'undefined');

    const [network] = await other.listAllNetworks(0);
    await other.networkLifecycle(network!.uuid, 'destroy');
    await seen((e) => e.type === 'network' && e.code === NetworkEvent.STOPPED, 'network stopped');
    await other.networkLifecycle(network!.uuid, 'create');
    const started = await seen((e) => e.type === 'network' && e.code === NetworkEvent.STARTED, 'network started');
    expect(started).toMatchObject({ uuid: network!.uuid, name: network!.name });

    const [pool] = await other.listAllStoragePools(0);
    await other.poolLifecycle(pool!.uuid, 'refresh');
    expect(await seen((e) => e.type === 'pool' && e.event === 'refresh', 'pool refreshed')).toEqual({
      type: 'pool',
      event: 'refresh',
      uuid: pool!.uuid,
      name: pool!.name,
    });
    await other.poolLifecycle(pool!.uuid, 'destroy');
    await seen((e) => e.type === 'pool' && e.code === PoolEvent.STOPPED, 'pool stopped');
    await other.poolLifecycle(pool!.uuid, 'create');
    await seen((e) => e.type === 'pool' && e.code === PoolEvent.STARTED, 'pool started');
    await subscription.unsubscribe();
  });

  it('ends a subscription with a close event when the connection is closed under it, and frees its callbacks', async () => {
    const before = addon.eventLoop();
    const { conn, events } = await listen(daemon.uri);
    expect(addon.eventLoop().subscriptions).toBe(before.subscriptions + 1);
    await conn.close();
    expect(events).toEqual([{ type: 'close', event: 'close', reason: CloseReason.CLIENT }]);
    expect(addon.eventLoop()).toMatchObject({
      subscriptions: before.subscriptions,
      registrations: before.registrations,
    });
  });
});

describe('a daemon that goes away under registered callbacks', () => {
  it('reports the close and frees everything, cycle after cycle, with calls in flight', async () => {
    const daemon = libvirtd();
    try {
      const before = addon.eventLoop();
      for (let cycle = 0; cycle < 4; cycle++) {
        await daemon.start();
        const subs: { conn: NativeConnection; events: NativeEvent[]; subscription: NativeEventSubscription }[] = [];
        // Two connections, the second with two subscriptions (one close callback for both).
        const a = await listen(daemon.uri);
        const b = await listen(daemon.uri);
        const b2: NativeEvent[] = [];
        const second = await b.conn.subscribeEvents((e) => b2.push(e));
        subs.push(a, b);
        const inFlight = Promise.all([a.conn.listAllDomains(0), b.conn.getAllDomainStats(1, 0)]).catch(() => null);
        const stopped = Date.now();
        await daemon.stop();
        // Told by the socket closing, not found out at a keepalive timeout (30 s and more): libvirt says
        // EOF when it reads the end first, ERROR when a call in flight writes to the closed socket first.
        for (const events of [a.events, b.events, b2]) {
          const close = await until('close', () => events.find((e) => e.type === 'close'), 5_000);
          expect(close).toMatchObject({ type: 'close', event: 'close' });
          expect([CloseReason.EOF, CloseReason.ERROR]).toContain((close as { reason: number }).reason);
        }
        expect(Date.now() - stopped).toBeLessThan(5_000);
        await inFlight;
        // Unsubscribed or not, closing frees every callback (on the addon's event-loop thread, soon after).
        if (cycle % 2 === 0) await Promise.all([a.subscription.unsubscribe(), second.unsubscribe()]);
        await Promise.all(subs.map((s) => s.conn.close()));
        const freed = () => {
          const now = addon.eventLoop();
          return now.subscriptions === before.subscriptions && now.registrations === before.registrations
            ? now
            : undefined;
        };
        await until(`the callbacks of cycle ${cycle} freed (${JSON.stringify(addon.eventLoop())})`, freed, 5_000);
      }
    } finally {
      await daemon.stop();
    }
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { type Libvirtd, libvirtd } from './helpers/libvirtd.js';

// A remote libvirt connection (the test driver behind a real libvirtd) whose
// daemon dies under it and comes back.
let daemon: Libvirtd;
let gw: TestGateway;

beforeAll(async () => {
  daemon = libvirtd();
  await daemon.start();
  gw = await startTestGateway({
    // Faults of the direct read path (what serves a platform whose live inventory is down).
    inventory: { enabled: false },
    platforms: [{ id: 'remote', kind: 'libvirt', uri: daemon.uri, retryInitialMs: 50, retryMaxMs: 200 }],
  });
});
afterAll(async () => {
  await gw?.close();
  await daemon?.stop();
});

const count = () =>
  gw.query<{ virtualMachines: { totalCount: number } | null }>('{ virtualMachines(first: 0) { totalCount } }');
const status = async () =>
  (
    await gw.query<{ platforms: { status: string; statusMessage: string | null }[] }>(
      '{ platforms { status statusMessage } }',
    )
  ).data!.platforms[0]!;

describe('a remote libvirt daemon that dies and returns', () => {
  it('serves through libvirtd', async () => {
    expect((await count()).data!.virtualMachines!.totalCount).toBe(1);
    expect((await status()).status).toBe('CONNECTED');
  });

  it('marks the platform unreachable however the failing calls are worded, and reconnects when the daemon returns', async () => {
    await daemon.stop();
    // Several queries at once: libvirt words the later failures "client socket is closed".
    const results = await Promise.all([count(), count(), count()]);
    for (const r of results) {
      expect(r.data!.virtualMachines!.totalCount).toBe(0);
      expect(r.errors?.[0]?.extensions).toEqual({ code: 'PLATFORM_UNAVAILABLE', platformId: 'remote' });
    }
    expect((await status()).status).toBe('UNREACHABLE');

    await daemon.start();
    const deadline = Date.now() + 10_000;
    while ((await status()).status !== 'CONNECTED') {
      if (Date.now() > deadline) throw new Error('did not reconnect');
      await new Promise((r) => setTimeout(r, 50));
    }
    const healed = await count();
    expect(healed.errors).toBeUndefined();
    expect(healed.data!.virtualMachines!.totalCount).toBe(1);
  });
});

describe('a remote libvirt daemon that stops answering', () => {
  let silent: Libvirtd;
  let quiet: TestGateway;

  beforeAll(async () => {
    silent = libvirtd();
    await silent.start();
    quiet = await startTestGateway({
      limits: { operationTimeoutMs: 700 },
      platforms: [{ id: 'remote', kind: 'libvirt', uri: silent.uri }],
    });
  });
  afterAll(async () => {
    silent?.resume();
    await quiet?.close();
    await silent?.stop();
  });

  // libvirt's keepalive would notice the silence, but needs libvirt's event
  // loop, and libvirt 9.0's client can crash when keepalive closes a
  // connection under a waiting call: the deadline bounds the wait instead.
  it('answers within the deadline while the daemon is silent, and fully once it answers again', async () => {
    silent.pause();
    const started = Date.now();
    const res = await quiet.query<{ virtualMachines: { totalCount: number } }>(
      '{ virtualMachines(first: 0) { totalCount } }',
    );
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(res.errors?.[0]?.extensions).toEqual({ code: 'DEADLINE_EXCEEDED', platformId: 'remote' });
    silent.resume();
    const healed = await quiet.query<{ virtualMachines: { totalCount: number } }>(
      '{ virtualMachines(first: 0) { totalCount } }',
    );
    expect(healed.errors).toBeUndefined();
    expect(healed.data!.virtualMachines.totalCount).toBe(1);
  });
});

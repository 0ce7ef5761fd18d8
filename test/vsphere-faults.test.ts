import { afterAll, afterEach, describe, expect, it } from 'vitest';

import type { VsphereProvider } from '../src/datasources/vsphere/provider.js';
import { terminateSession } from '../src/datasources/vsphere/vim.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { startSoapProxy } from './helpers/soap-proxy.js';
import { type Vcsim, adminSession, startVcsim, vspherePlatform } from './helpers/vcsim.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});
afterAll(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function simulator(opts: Parameters<typeof startVcsim>[0] = {}): Promise<Vcsim> {
  const sim = await startVcsim(opts);
  cleanups.push(() => sim.stop());
  return sim;
}

async function gateway(platforms: Record<string, unknown>[]): Promise<TestGateway> {
  // Faults of the direct read path (what serves a platform whose live inventory is down).
  const gw = await startTestGateway({ inventory: { enabled: false }, platforms });
  cleanups.push(() => gw.close());
  return gw;
}

const vc = (sim: Vcsim, extra: Record<string, unknown> = {}) =>
  vspherePlatform(sim, { retryInitialMs: 50, retryMaxMs: 200, ...extra });

async function status(gw: TestGateway, name = 'vc'): Promise<{ status: string; statusMessage: string | null }> {
  const res = await gw.query<{ platforms: { name: string; status: string; statusMessage: string | null }[] }>(
    '{ platforms { name status statusMessage } }',
  );
  const p = res.data!.platforms.find((x) => x.name === name)!;
  return { status: p.status, statusMessage: p.statusMessage };
}

async function until(check: () => Promise<boolean>, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const loginsOf = (gw: TestGateway) =>
  (gw.registry.get('vc') as VsphereProvider).withClient(async (s) => s.client.callCounts().byMethod['Login'] ?? 0);

describe('vSphere faults', () => {
  it('shows refused credentials as AUTH_FAILED and does not retry them', async () => {
    const sim = await simulator();
    const gw = await gateway([vc(sim, { password: 'not-the-password' })]);
    expect(await status(gw)).toEqual({ status: 'AUTH_FAILED', statusMessage: 'Login failure' });
    await new Promise((r) => setTimeout(r, 400));
    const attempts = gw.logs().filter((l) => l['msg'] === 'platform connection failed').length;
    expect(attempts).toBe(1);
    expect(JSON.stringify(gw.logs())).not.toContain('not-the-password');
  });

  it('verifies certificates by default, trusts a configured CA, and can be told not to verify', async () => {
    const sim = await simulator();
    const gw = await gateway([
      vc(sim, { id: 'default-tls', caFile: undefined }),
      vc(sim, { id: 'with-ca' }),
      vc(sim, { id: 'insecure', caFile: undefined, insecure: true }),
    ]);
    const refused = await status(gw, 'default-tls');
    expect(refused.status).toBe('UNREACHABLE');
    expect(refused.statusMessage).toMatch(/certificate of 127\.0\.0\.1:\d+ refused/);
    expect((await status(gw, 'with-ca')).status).toBe('CONNECTED');
    expect((await status(gw, 'insecure')).status).toBe('CONNECTED');
  });

  it('serves the other platforms while vCenter is down, and reconnects when it returns', async () => {
    const sim = await simulator({ vm: 2 });
    const gw = await gateway([vc(sim), { id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 4 }).uri }]);
    const count = () =>
      gw.query<{ virtualMachines: { totalCount: number } }>('{ virtualMachines(first: 0) { totalCount } }');
    const vsphereVms = Object.keys(sim.oracle.vms).length;
    expect((await count()).data!.virtualMachines.totalCount).toBe(vsphereVms + 4);

    await sim.stop();
    const partial = await count();
    expect(partial.status).toBe(200);
    expect(partial.data!.virtualMachines.totalCount).toBe(4);
    expect(partial.errors).toEqual([
      expect.objectContaining({
        extensions: { code: 'PLATFORM_UNAVAILABLE', platformId: 'vc' },
        message: expect.stringMatching(/^Platform "vc" is unavailable: cannot reach 127\.0\.0\.1/),
      }),
    ]);
    expect((await status(gw)).status).toBe('UNREACHABLE');

    const back = await startVcsim({ port: sim.port, vm: 2 });
    cleanups.push(() => back.stop());
    await until(async () => (await status(gw)).status === 'CONNECTED', 'the platform to reconnect');
    const healed = await count();
    expect(healed.errors).toBeUndefined();
    expect(healed.data!.virtualMachines.totalCount).toBe(vsphereVms + 4);
  });

  it('logs in once more when the session is ended upstream, and the query still succeeds', async () => {
    const sim = await simulator();
    const gw = await gateway([vc(sim)]);
    expect(await loginsOf(gw)).toBe(1);
    const provider = gw.registry.get('vc') as VsphereProvider;
    const key = await provider.withClient(async (s) => s.sessionKey);
    const admin = await adminSession(sim);
    await terminateSession(admin.client, admin.content, [key]);
    await admin.close();

    const res = await gw.query<{ virtualMachines: { totalCount: number } }>(
      '{ virtualMachines(first: 0) { totalCount } }',
    );
    expect(res.errors).toBeUndefined();
    expect(res.data!.virtualMachines.totalCount).toBe(Object.keys(sim.oracle.vms).length);
    expect(await loginsOf(gw)).toBe(2);
    expect((await status(gw)).status).toBe('CONNECTED');
  });

  it('answers garbage and truncated SOAP with a typed upstream error, and recovers', async () => {
    const sim = await simulator();
    const proxy = await startSoapProxy(sim.url, sim.certFile);
    cleanups.push(() => proxy.close());
    const gw = await gateway([vc(sim, { url: proxy.url, caFile: undefined })]);
    expect((await status(gw)).status).toBe('CONNECTED');

    for (const mode of ['truncate', 'html'] as const) {
      proxy.setMode(mode, 'RetrievePropertiesEx');
      const res = await gw.query('{ virtualMachines(first: 1) { totalCount } }');
      expect(res.status).toBe(200);
      expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'UPSTREAM_ERROR', transport: 'PROTOCOL' });
    }
    proxy.setMode('pass');
    const ok = await gw.query<{ virtualMachines: { totalCount: number } }>(
      '{ virtualMachines(first: 1) { totalCount } }',
    );
    expect(ok.errors).toBeUndefined();
    expect(ok.data!.virtualMachines.totalCount).toBe(Object.keys(sim.oracle.vms).length);
  });

  it('refuses to connect to an endpoint that does not speak SOAP, naming why', async () => {
    const sim = await simulator();
    const proxy = await startSoapProxy(sim.url, sim.certFile);
    cleanups.push(() => proxy.close());
    proxy.setMode('html');
    const gw = await gateway([vc(sim, { url: proxy.url, caFile: undefined })]);
    expect(await status(gw)).toEqual({
      status: 'UNREACHABLE',
      statusMessage: 'RetrieveServiceContent: the response is not a SOAP envelope',
    });
  });

  it('gives up on a simulator that stops answering after the request timeout, and comes back', async () => {
    const sim = await simulator();
    const gw = await gateway([vc(sim, { requestTimeoutMs: 500 })]);
    sim.pause();
    const started = Date.now();
    const res = await gw.query('{ virtualMachines(first: 1) { totalCount } }');
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'PLATFORM_UNAVAILABLE', platformId: 'vc' });
    expect(res.errors?.[0]?.message).toMatch(/no answer from 127\.0\.0\.1:\d+ in time/);
    sim.resume();
    await until(async () => (await status(gw)).status === 'CONNECTED', 'the platform to reconnect');
  });

  it('answers without a platform that is slower than the operation deadline', async () => {
    const sim = await simulator();
    const gw = await startTestGateway({
      inventory: { enabled: false },
      limits: { operationTimeoutMs: 700 },
      platforms: [
        vc(sim, { requestTimeoutMs: 60_000 }),
        { id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 2 }).uri },
      ],
    });
    cleanups.push(() => gw.close());
    sim.pause();
    cleanups.push(async () => sim.resume());
    const started = Date.now();
    const res = await gw.query<{ virtualMachines: { totalCount: number } }>(
      '{ virtualMachines(first: 0) { totalCount } }',
    );
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(res.data!.virtualMachines.totalCount).toBe(2);
    expect(res.errors).toEqual([
      expect.objectContaining({
        message: 'Platform "vc" did not answer within 700 ms.',
        extensions: { code: 'DEADLINE_EXCEEDED', platformId: 'vc' },
      }),
    ]);
    sim.resume();
  });

  it('keeps the session alive with CurrentTime while idle', async () => {
    const sim = await simulator();
    const gw = await gateway([vc(sim, { keepAliveMs: 1_000 })]);
    const provider = gw.registry.get('vc') as VsphereProvider;
    await new Promise((r) => setTimeout(r, 2_300));
    const counts = await provider.withClient(async (s) => s.client.callCounts().byMethod);
    expect(counts['CurrentTime']).toBeGreaterThanOrEqual(2);
    expect(counts['Login']).toBe(1);
  });

  it('shares one session across requests and caps SOAP requests in flight without refusing any', async () => {
    const sim = await simulator({ vm: 3 });
    const gw = await gateway([vc(sim, { maxConcurrentRequests: 2 })]);
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        gw.query<{ virtualMachines: { totalCount: number } }>(
          `{ virtualMachines(first: ${i % 5}) { totalCount nodes { name memoryMiB host { name } } } }`,
        ),
      ),
    );
    expect(results.every((r) => r.errors === undefined)).toBe(true);
    const provider = gw.registry.get('vc') as VsphereProvider;
    const load = await provider.withClient(async (s) => s.client.load());
    expect(load.peak).toBe(2);
    expect(load.waiting).toBe(0);
    expect(await loginsOf(gw)).toBe(1);
  });
});

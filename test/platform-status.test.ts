import { copyFileSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import type { ReadinessConfig } from '../src/config/schema.js';
import { type PlatformReadiness, readinessProblems } from '../src/server/http.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, closedPort, startTestGateway } from './helpers/gateway.js';
import { eventually } from './helpers/subscriptions.js';
import { type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';

let gw: TestGateway;
let latePath: string;
const lateSource = writeEstate({ vms: 3 });

beforeAll(async () => {
  const healthy = writeEstate({ vms: 7 });
  const locked = writeEstate({ vms: 2, auth: { username: 'ops', password: 'right-password' } });
  latePath = join(mkdtempSync(join(tmpdir(), 'virt-graph-late-')), 'estate.xml');
  gw = await startTestGateway({
    platforms: [
      { id: 'healthy', kind: 'libvirt', uri: healthy.uri },
      {
        id: 'down',
        kind: 'libvirt',
        uri: `qemu+tcp://127.0.0.1:${await closedPort()}/system`,
        retryInitialMs: 50,
        retryMaxMs: 200,
      },
      {
        id: 'locked',
        kind: 'libvirt',
        uri: locked.uri,
        username: 'ops',
        password: 'wrong-password',
        retryInitialMs: 50,
      },
      { id: 'unlocked', kind: 'libvirt', uri: locked.uri, username: 'ops', password: 'right-password' },
      { id: 'late', kind: 'libvirt', uri: `test://${latePath}`, retryInitialMs: 50, retryMaxMs: 100 },
    ],
  });
});
afterAll(() => gw?.close());

type PlatformRow = { name: string; status: string; statusMessage: string | null };

async function platforms(): Promise<Record<string, PlatformRow>> {
  const res = await gw.query<{ platforms: PlatformRow[] }>('{ platforms { name status statusMessage } }');
  return Object.fromEntries(res.data!.platforms.map((p) => [p.name, p]));
}

describe('platforms that cannot be reached', () => {
  it('shows each platform with its own status and reason', async () => {
    const p = await platforms();
    expect(p['healthy']).toEqual({ name: 'healthy', status: 'CONNECTED', statusMessage: null });
    expect(p['unlocked']!.status).toBe('CONNECTED');
    expect(p['down']!.status).toBe('UNREACHABLE');
    expect(p['down']!.statusMessage).toMatch(/Connection refused/);
    expect(p['locked']!.status).toBe('AUTH_FAILED');
    expect(p['locked']!.statusMessage).toMatch(/authentication failed/);
    expect(p['late']!.status).toBe('UNREACHABLE');
  });

  it('answers from the healthy platforms and names the others in errors', async () => {
    const res = await gw.query<{ virtualMachines: { totalCount: number } }>(
      '{ virtualMachines(first: 0) { totalCount } }',
    );
    expect(res.status).toBe(200);
    expect(res.data!.virtualMachines.totalCount).toBe(7 + 2);
    const errors = res.errors ?? [];
    expect(errors.map((e) => e.extensions?.['code'])).toEqual([
      'PLATFORM_UNAVAILABLE',
      'PLATFORM_UNAVAILABLE',
      'PLATFORM_UNAVAILABLE',
    ]);
    expect(errors.map((e) => e.extensions?.['platformId']).sort()).toEqual(['down', 'late', 'locked']);
    expect(errors.find((e) => e.extensions?.['platformId'] === 'down')!.message).toMatch(
      /^Platform "down" is unavailable: .*Connection refused/,
    );
  });

  it('reports unavailable platforms over WebSocket too', async () => {
    const res = await gw.wsQuery<{ networks: { totalCount: number } }>('{ networks(first: 0) { totalCount } }');
    expect(res.data!.networks.totalCount).toBe(6);
    expect((res.errors ?? []).map((e) => e.extensions?.['platformId']).sort()).toEqual(['down', 'late', 'locked']);
  });

  it('retries an unreachable platform with backoff but never retries refused credentials', async () => {
    await new Promise((r) => setTimeout(r, 600));
    const failures = (id: string) =>
      gw.logs().filter((l) => l['msg'] === 'platform connection failed' && l['platform'] === id).length;
    expect(failures('locked')).toBe(1);
    expect(failures('down')).toBeGreaterThanOrEqual(3);
  });

  it('connects a platform by itself once it becomes reachable', async () => {
    copyFileSync(lateSource.path, latePath);
    const deadline = Date.now() + 10_000;
    while ((await platforms())['late']!.status !== 'CONNECTED') {
      if (Date.now() > deadline) throw new Error('platform "late" did not reconnect');
      await new Promise((r) => setTimeout(r, 50));
    }
    const res = await gw.query<{ virtualMachines: { totalCount: number } }>(
      '{ virtualMachines(first: 0) { totalCount } }',
    );
    expect(res.data!.virtualMachines.totalCount).toBe(7 + 2 + 3);
  });

  it('keeps readiness while some platforms are down', async () => {
    const { status, body } = await readyz(gw);
    expect(status).toBe(200);
    expect(body.platforms.find((p) => p.id === 'down')!.status).toBe('UNREACHABLE');
    expect(body.unready).toEqual([]);
  });
});

type ReadyBody = {
  status: string;
  platforms: { id: string; status: string }[];
  unready: { check: string; platform?: string; status?: string; message: string | null }[];
};

async function readyz(g: TestGateway): Promise<{ status: number; body: ReadyBody }> {
  const res = await fetch(g.url.replace(/\/graphql$/, '/readyz'));
  return { status: res.status, body: (await res.json()) as ReadyBody };
}

describe('the readiness policy', () => {
  const platformsNow: PlatformReadiness[] = [
    { id: 'vc', status: 'UNREACHABLE', statusMessage: 'change stream down: no answer in time' },
    { id: 'kvm', status: 'CONNECTED', statusMessage: null },
    { id: 'lab', status: 'AUTH_FAILED', statusMessage: 'authentication failed' },
  ];
  const policy = (p: Partial<ReadinessConfig>): ReadinessConfig => ({
    requirePlatforms: 'any',
    requireRedis: false,
    ...p,
  });
  const named = (p: Partial<ReadinessConfig>, redisUp: boolean | null = null) =>
    readinessProblems(policy(p), platformsNow, redisUp).map((r) => (r.check === 'platform' ? r.platform : r.check));

  it('names every platform that keeps the gateway unready, and only those the policy requires', () => {
    expect(named({ requirePlatforms: 'any' })).toEqual([]);
    expect(named({ requirePlatforms: 'all' })).toEqual(['vc', 'lab']);
    expect(named({ requirePlatforms: 'none' })).toEqual([]);
    expect(named({ requirePlatforms: ['kvm', 'vc'] })).toEqual(['vc']);
    expect(named({ requirePlatforms: ['kvm'] })).toEqual([]);
    // With none reachable, "any" names each of them: any one would do.
    const allDown = platformsNow.map((p) => ({ ...p, status: 'UNREACHABLE' as const }));
    expect(readinessProblems(policy({}), allDown, null).map((r) => r.check === 'platform' && r.platform)).toEqual([
      'vc',
      'kvm',
      'lab',
    ]);
    expect(readinessProblems(policy({}), platformsNow, null)).toEqual([]);
    expect(readinessProblems(policy({ requirePlatforms: ['vc'] }), platformsNow, null)).toEqual([
      { check: 'platform', platform: 'vc', status: 'UNREACHABLE', message: 'change stream down: no answer in time' },
    ]);
  });

  it('weighs Redis only when asked to and only when one is configured', () => {
    expect(named({}, false)).toEqual([]);
    expect(named({ requireRedis: true }, false)).toEqual(['redis']);
    expect(named({ requireRedis: true }, true)).toEqual([]);
    expect(named({ requireRedis: true }, null)).toEqual([]);
  });
});

// A vCenter that stalls (SIGSTOP: the kernel still accepts connections, nobody
// answers) or dies (SIGKILL: every connection is reset). While the live
// inventory answers reads, no call goes through the platform's connection;
// only the watch's long poll is always in flight. These gateways retry a
// failed watch after a minute, so within the tests' bounds nothing but the
// watch's own failure can tell them the vCenter is gone.

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => undefined);
});

async function simulator(): Promise<Vcsim> {
  const sim = await startVcsim({ vm: 2 });
  cleanups.push(() => sim.stop());
  return sim;
}

async function vcGateway(
  sim: Vcsim,
  readiness: Partial<ReadinessConfig>,
  others: Record<string, unknown>[] = [],
): Promise<TestGateway> {
  const g = await startTestGateway({
    server: { readiness },
    inventory: { retryInitialMs: 60_000, retryMaxMs: 60_000 },
    // A 2 s request timeout: each long poll waits 2 s, and one that is not answered fails 2 s later.
    platforms: [vspherePlatform(sim, { requestTimeoutMs: 2_000 }), ...others],
  });
  cleanups.push(() => g.close());
  await eventually(async () => {
    const vc = await vcPlatform(g);
    return vc.status === 'CONNECTED' && vc.inventoryState === 'SYNCED';
  }, 20_000);
  return g;
}

type VcRow = { name: string; status: string; statusMessage: string | null; inventoryState: string };

async function vcPlatform(g: TestGateway): Promise<VcRow> {
  const res = await g.query<{ platforms: VcRow[] }>('{ platforms { name status statusMessage inventoryState } }');
  return res.data!.platforms.find((p) => p.name === 'vc')!;
}

/** SIGKILL, which the helper does not send: found by its certificate file, which is this simulator's own. */
function killSimulator(sim: Vcsim): void {
  const pid = readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .find((entry) => {
      try {
        return readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').includes(`-cert=${sim.certFile}`);
      } catch {
        // A process that ended meanwhile, or another user's.
        return false;
      }
    });
  if (!pid) throw new Error(`no simulator process serves ${sim.url}`);
  process.kill(Number(pid), 'SIGKILL');
}

describe('a vCenter that stops answering or dies', () => {
  it('is not CONNECTED once its watch is overdue after a SIGSTOP, and /readyz follows the policy', async () => {
    const sim = await simulator();
    const kvm = { id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 1 }).uri };
    const strict = await vcGateway(sim, { requirePlatforms: ['vc'] }, [kvm]);
    const lenient = await vcGateway(sim, { requirePlatforms: 'any' }, [kvm]);
    expect((await readyz(strict)).status).toBe(200);

    sim.pause();
    cleanups.push(async () => sim.resume());
    // Overdue after 4 s (2 s of waiting plus the 2 s timeout); the bound is generous for a busy machine.
    for (const g of [strict, lenient]) {
      await eventually(async () => (await vcPlatform(g)).status !== 'CONNECTED', 20_000);
    }
    const vc = await vcPlatform(strict);
    expect(vc).toMatchObject({ status: 'UNREACHABLE', inventoryState: 'STALE' });
    expect(vc.statusMessage).toMatch(/^change stream down since .*: no answer from 127\.0\.0\.1:\d+ in time$/);

    const unready = await readyz(strict);
    expect(unready.status).toBe(503);
    expect(unready.body.status).toBe('not ready');
    expect(unready.body.unready).toEqual([
      { check: 'platform', platform: 'vc', status: 'UNREACHABLE', message: vc.statusMessage },
    ]);
    expect(unready.body.platforms).toEqual([
      { id: 'vc', status: 'UNREACHABLE' },
      { id: 'kvm', status: 'CONNECTED' },
    ]);
    // Under "any", the libvirt platform is enough.
    const ready = await readyz(lenient);
    expect(ready.status).toBe(200);
    expect(ready.body.unready).toEqual([]);
  }, 90_000);

  it('is never CONNECTED in a response that reports it unavailable after a SIGKILL, and /readyz follows the policy', async () => {
    const sim = await simulator();
    const byDefault = await vcGateway(sim, {});
    const permissive = await vcGateway(sim, { requirePlatforms: 'none' });
    expect((await readyz(byDefault)).status).toBe(200);

    killSimulator(sim);
    await eventually(async () => {
      const res = await byDefault.query<{ platforms: VcRow[] }>(
        '{ platforms { name status statusMessage inventoryState } virtualMachines(first: 0) { totalCount } }',
      );
      const vc = res.data!.platforms.find((p) => p.name === 'vc')!;
      const reported = (res.errors ?? []).some((e) => e.extensions?.['platformId'] === 'vc');
      // One response, one story: a platform named unavailable in errors is not CONNECTED in data.
      if (reported) expect(vc.status).not.toBe('CONNECTED');
      return reported && vc.status !== 'CONNECTED';
    }, 20_000);

    const unready = await readyz(byDefault);
    expect(unready.status).toBe(503);
    expect(unready.body.unready).toEqual([
      { check: 'platform', platform: 'vc', status: 'UNREACHABLE', message: expect.any(String) },
    ]);
    await eventually(async () => (await vcPlatform(permissive)).status !== 'CONNECTED', 20_000);
    const ready = await readyz(permissive);
    expect(ready.status).toBe(200);
    expect(ready.body.platforms).toEqual([{ id: 'vc', status: 'UNREACHABLE' }]);
  }, 90_000);
});

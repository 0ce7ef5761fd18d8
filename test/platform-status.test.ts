import { copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, closedPort, startTestGateway } from './helpers/gateway.js';

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
    const res = await fetch(gw.url.replace('/graphql', '/readyz'));
    expect(res.status).toBe(200);
    const body = (await res.json()) as { platforms: { id: string; status: string }[] };
    expect(body.platforms.find((p) => p.id === 'down')!.status).toBe('UNREACHABLE');
  });
});

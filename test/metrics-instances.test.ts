import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { VsphereProvider } from '../src/datasources/vsphere/provider.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { type RedisServer, redisServer } from './helpers/redis-server.js';
import { eventually, subscribe } from './helpers/subscriptions.js';
import { type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';

// Two gateway instances sharing a real redis-server in front of one vCenter
// simulator: only the platform's lease holder calls QueryPerf, whatever the
// instance a client subscribes on; the other relays the holder's samples;
// and when the holder goes, the new holder samples on the same schedule.

const LEASE_TTL_MS = 1_500;
let redis: RedisServer;
let sim: Vcsim;
const gateways: TestGateway[] = [];

const queryPerfCalls = (gw: TestGateway) =>
  (gw.registry.get('vc') as VsphereProvider).withClient(async (s) => s.client.callCounts().byMethod['QueryPerf'] ?? 0);

async function roleOf(gw: TestGateway): Promise<string | null> {
  const res = await gw.query<{ platforms: { watch: { role: string } | null }[] }>('{ platforms { watch { role } } }');
  return res.data!.platforms[0]!.watch?.role ?? null;
}

async function startInstance(): Promise<TestGateway> {
  const gw = await startTestGateway({
    redis: { url: redis.url, leaseTtlMs: LEASE_TTL_MS, connectTimeoutMs: 2_000 },
    inventory: { retryInitialMs: 50, retryMaxMs: 200 },
    platforms: [vspherePlatform(sim, { id: 'vc' })],
  });
  gateways.push(gw);
  return gw;
}

beforeAll(async () => {
  [redis, sim] = await Promise.all([redisServer(), startVcsim({ vm: 3 })]);
  await startInstance();
  await startInstance();
}, 60_000);

afterAll(async () => {
  await Promise.all(gateways.map((g) => g.close()));
  await Promise.all([redis?.stop(), sim?.stop()]);
});

describe('metrics across instances', () => {
  it('samples on the holder only, relays to subscribers on the other instance, and carries on after a takeover', async () => {
    let holder!: TestGateway;
    let follower!: TestGateway;
    await eventually(async () => {
      const roles = await Promise.all(gateways.map(roleOf));
      if (roles.filter((r) => r === 'HOLDER').length !== 1 || !roles.includes('FOLLOWER')) return false;
      holder = gateways[roles.indexOf('HOLDER')]!;
      follower = gateways[roles.indexOf('FOLLOWER')]!;
      return true;
    }, 20_000);

    const vms = await follower.query<{ virtualMachines: { nodes: { id: string }[] } }>(
      '{ virtualMachines(first: 3, filter: { powerStates: [ON] }) { nodes { id } } }',
    );
    const ids = vms.data!.virtualMachines.nodes.map((v) => v.id);
    const followerCallsBefore = await queryPerfCalls(follower);
    const sub = subscribe<{ vmMetrics: { vmId: string; sample: { timestamp: string; cpuUsagePercent: number } } }>(
      follower.url,
      'subscription($ids: [ID!]!) { vmMetrics(ids: $ids, intervalSeconds: 20) { vmId sample { timestamp cpuUsagePercent } } }',
      { ids },
    );
    try {
      // The follower tells the holder what its client watches; the holder samples at once and relays.
      await sub.until(ids.length, 15_000);
      expect(new Set(sub.events.map((e) => e.vmMetrics.vmId))).toEqual(new Set(ids));
      expect(await queryPerfCalls(follower)).toBe(followerCallsBefore);
      expect(holder.metrics.sampler('vc')!.samplings).toBeGreaterThan(0);
      expect(follower.metrics.sampler('vc')!.samplings).toBe(0);

      // `latest` on the follower comes from what the holder relayed.
      const latest = await follower.query<{ node: { metrics: { latest: { timestamp: string } | null } } }>(
        'query($id: ID!) { node(id: $id) { ... on VirtualMachine { metrics { latest { timestamp } } } } }',
        { id: ids[0] },
      );
      expect(latest.data!.node.metrics.latest).not.toBeNull();
      expect(await queryPerfCalls(follower)).toBe(followerCallsBefore);

      // What the follower's clients stop watching, the holder stops sampling (not when the entry lapses).
      const extra = subscribe(
        follower.url,
        'subscription($ids: [ID!]!) { vmMetrics(ids: $ids, intervalSeconds: 40) { vmId } }',
        { ids },
      );
      await eventually(() => holder.metrics.sampler('vc')!.activeIntervals().includes(40), 10_000);
      await extra.close();
      await eventually(() => !holder.metrics.sampler('vc')!.activeIntervals().includes(40), 3_000);

      // The holder goes; the follower takes the lease and samples for its own subscriber from then on.
      const seen = sub.events.length;
      await holder.close();
      gateways.splice(gateways.indexOf(holder), 1);
      await eventually(async () => (await roleOf(follower)) === 'HOLDER', 15_000);
      await sub.until(seen + ids.length, 30_000);
      expect(follower.metrics.sampler('vc')!.samplings).toBeGreaterThan(0);
      expect(await queryPerfCalls(follower)).toBeGreaterThan(followerCallsBefore);
      const last = Math.max(...sub.events.slice(0, seen).map((e) => Date.parse(e.vmMetrics.sample.timestamp)));
      const after = sub.events.slice(seen).map((e) => Date.parse(e.vmMetrics.sample.timestamp));
      expect(after.every((t) => t > last)).toBe(true);
    } finally {
      await sub.close();
    }
  }, 90_000);
});

import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type GatewayProcess, spawnGateway } from './helpers/gateway-process.js';
import { type Libvirtd, libvirtd } from './helpers/libvirtd.js';
import { redisCluster, redisSentinel } from './helpers/redis-topologies.js';
import { type Subscription, VM_CHANGED, type VmEvent, eventually, subscribe } from './helpers/subscriptions.js';

// Two real gateway processes sharing Redis through Sentinel, then through a
// Cluster (real redis-server processes), in front of a real libvirtd: one
// holder, both mirrors in sync, a change seen once by a follower's client,
// and an idempotency key honoured across instances. The keys of a platform
// share a hash tag, so the Lua scripts run on one cluster node.
const run = promisify(execFile);

interface Watch {
  name: string;
  inventoryState: string;
  watch: { role: string } | null;
}

interface Payload {
  userErrors: { message: string }[];
  task: { id: string } | null;
}

const topologies = [
  {
    name: 'Redis Cluster',
    async start() {
      const cluster = await redisCluster();
      return {
        redis: { cluster: cluster.nodes },
        // -c: redis-cli follows the MOVED redirection to the node serving the key's slot.
        exists: async (key: string) => (await cluster.command(cluster.nodes[0]!, '-c', 'EXISTS', key)) === '1',
        stop: () => cluster.stop(),
      };
    },
  },
  {
    name: 'Redis Sentinel',
    async start() {
      const sentinel = await redisSentinel();
      return {
        redis: { sentinels: sentinel.sentinels, sentinelName: sentinel.name },
        exists: async (key: string) => (await sentinel.command(sentinel.master, 'EXISTS', key)) === '1',
        stop: () => sentinel.stop(),
      };
    },
  },
];

describe.each(topologies)('two instances sharing $name', (topology) => {
  let daemon: Libvirtd;
  let shared: Awaited<ReturnType<(typeof topologies)[number]['start']>> | undefined;
  const gateways: GatewayProcess[] = [];
  const subscriptions: Subscription<VmEvent>[] = [];

  const virsh = (...args: string[]) => run('virsh', ['-c', daemon.uri, ...args]);

  const config = () => ({
    redis: { ...shared!.redis, leaseTtlMs: 1_500, connectTimeoutMs: 5_000 },
    state: { dir: mkdtempSync(join(tmpdir(), 'virt-graph-state-')) },
    inventory: { retryInitialMs: 50, retryMaxMs: 200 },
    platforms: [{ id: 'kvm', kind: 'libvirt', uri: daemon.uri, retryInitialMs: 50, retryMaxMs: 200 }],
  });

  /** Waits until both mirrors are SYNCED and exactly one gateway holds the platform; returns [holder, follower]. */
  async function settled(): Promise<[GatewayProcess, GatewayProcess]> {
    let holders: GatewayProcess[] = [];
    await eventually(async () => {
      holders = [];
      for (const gw of gateways) {
        const res = await gw.query<{ platforms: Watch[] }>('{ platforms { name inventoryState watch { role } } }');
        const [kvm] = res.data?.platforms ?? [];
        if (kvm?.inventoryState !== 'SYNCED') return false;
        if (kvm.watch?.role === 'HOLDER') holders.push(gw);
      }
      return holders.length === 1;
    }, 20_000);
    const holder = holders[0]!;
    return [holder, gateways.find((g) => g !== holder)!];
  }

  async function vmId(gw: GatewayProcess, name: string): Promise<string> {
    const res = await gw.query<{ virtualMachines: { nodes: { id: string; name: string }[] } }>(
      '{ virtualMachines(first: 100) { nodes { id name } } }',
    );
    const vm = res.data?.virtualMachines.nodes.find((n) => n.name === name);
    if (!vm) throw new Error(`no VM ${name}: ${JSON.stringify(res)}`);
    return vm.id;
  }

  async function powerState(gw: GatewayProcess, id: string): Promise<string | undefined> {
    const res = await gw.query<{ node: { powerState: string } | null }>(
      'query($id: ID!) { node(id: $id) { ... on VirtualMachine { powerState } } }',
      { id },
    );
    return res.data?.node?.powerState;
  }

  beforeAll(async () => {
    daemon = libvirtd();
    [, shared] = await Promise.all([daemon.start(), topology.start()]);
    // Both kept, even when one fails to start, so that afterAll stops whichever did.
    const spawned = await Promise.allSettled([spawnGateway(config()), spawnGateway(config())]);
    for (const s of spawned) if (s.status === 'fulfilled') gateways.push(s.value);
    for (const s of spawned) if (s.status === 'rejected') throw s.reason;
  }, 60_000);

  afterAll(async () => {
    await Promise.all(subscriptions.splice(0).map((s) => s.close()));
    await Promise.all(gateways.splice(0).map((g) => g.kill()));
    await Promise.all([daemon?.stop(), shared?.stop()]);
  });

  it('syncs both mirrors with exactly one holder of the platform', async () => {
    const [holder, follower] = await settled();
    expect(holder).not.toBe(follower);
    for (const gw of gateways) {
      const ready = (await (await fetch(gw.url.replace(/\/graphql$/, '/readyz'))).json()) as Record<string, unknown>;
      expect(ready).toMatchObject({ status: 'ready', subscriptions: 'OK', redis: { status: 'CONNECTED' } });
    }
    // The platform's lease, stream and snapshot are in this Redis (in a Cluster, on the node serving {kvm}).
    for (const key of ['lease', 'events', 'snapshot'])
      expect(await shared!.exists(`virt-graph:{kvm}:${key}`)).toBe(true);
    // The follower answers from its mirror, which the holder's stream filled.
    expect(await powerState(follower, await vmId(follower, 'test'))).toBe('ON');
  });

  it("delivers a change the holder watched to a follower's client exactly once", async () => {
    const [, follower] = await settled();
    const id = await vmId(follower, 'test');
    const client = subscribe<VmEvent>(follower.url, VM_CHANGED, { f: { vmIds: [id], aspects: ['POWER_STATE'] } });
    subscriptions.push(client);
    // graphql-ws connects lazily: let the subscription reach the server.
    await new Promise((r) => setTimeout(r, 500));
    await virsh('suspend', 'test');
    const [event] = await client.until(1, 10_000);
    expect(event!.vmChanged.powerState).toBe('PAUSED');
    expect(event!.vmChanged.vm?.name).toBe('test');
    await new Promise((r) => setTimeout(r, 1_000));
    expect(client.events.filter((e) => e.vmChanged.powerState === 'PAUSED')).toHaveLength(1);
    expect(client.errors).toEqual([]);
    await virsh('resume', 'test');
    const [, back] = await client.until(2, 10_000);
    expect(back!.vmChanged.powerState).toBe('ON');
    await new Promise((r) => setTimeout(r, 300));
    expect(client.events.map((e) => e.vmChanged.powerState)).toEqual(['PAUSED', 'ON']);
  });

  it('runs a mutation sent to both instances with one idempotency key once', async () => {
    const [a, b] = gateways as [GatewayProcess, GatewayProcess];
    const id = await vmId(a, 'test');
    for (const [mutation, key, expected] of [
      ['pauseVm', 'topology-pause-1', 'PAUSED'],
      ['unpauseVm', 'topology-unpause-1', 'ON'],
    ] as const) {
      const runs = await Promise.all(
        [a, b, a, b].map((gw) =>
          gw.query<Record<string, Payload>>(
            `mutation($id: ID!, $key: String) {
              ${mutation}(input: { vmId: $id, idempotencyKey: $key }) { userErrors { message } task { id } }
            }`,
            { id, key },
          ),
        ),
      );
      expect(runs.map((r) => r.errors ?? r.data![mutation]!.userErrors)).toEqual([[], [], [], []]);
      const taskIds = new Set(runs.map((r) => r.data![mutation]!.task?.id));
      expect(taskIds.size).toBe(1);
      const [taskId] = [...taskIds];
      expect(taskId).toBeTruthy();
      // The one task finishes, and both instances see its outcome.
      await eventually(async () => {
        for (const gw of gateways) {
          const res = await gw.query<{ task: { state: string } | null }>('query($t: ID!) { task(id: $t) { state } }', {
            t: taskId,
          });
          if (res.data?.task?.state !== 'SUCCEEDED') return false;
          if ((await powerState(gw, id)) !== expected) return false;
        }
        return true;
      }, 10_000);
    }
    // The key stays bound to its operation on the other instance too.
    const other = await b.query<{ unpauseVm: Payload }>(
      'mutation($id: ID!) { unpauseVm(input: { vmId: $id, idempotencyKey: "topology-pause-1" }) { userErrors { message } task { id } } }',
      { id },
    );
    expect(other.data!.unpauseVm.userErrors[0]?.message).toMatch(/was used for pauseVm/);
  });
});

import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { PlatformStream } from '../src/inventory/replication/platform-stream.js';
import { decodeIdOf } from '../src/model/ids.js';
import { decodeStreamCursor } from '../src/subscriptions/stream-cursor.js';
import { closedPort } from './helpers/gateway.js';
import { type GatewayProcess, spawnGateway } from './helpers/gateway-process.js';
import { type Libvirtd, libvirtd } from './helpers/libvirtd.js';
import { type RedisServer, redisServer } from './helpers/redis-server.js';
import { startSoapProxy } from './helpers/soap-proxy.js';
import { type Subscription, VM_CHANGED, type VmEvent, eventually, subscribe } from './helpers/subscriptions.js';
import { type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';

// Several real gateway processes sharing a real redis-server, in front of a
// real libvirtd (libvirt's test driver, shared by every connection) and a
// vCenter simulator: one watch per platform in total, every event to every
// client once, wherever it connects, through a holder's death and a Redis
// restart.
const run = promisify(execFile);
const LEASE_TTL_MS = 1_500;

let redis: RedisServer;
let daemon: Libvirtd;
let sim: Vcsim;
let proxy: Awaited<ReturnType<typeof startSoapProxy>>;
const gateways: GatewayProcess[] = [];
const subscriptions: Subscription<VmEvent>[] = [];

const virsh = (...args: string[]) => run('virsh', ['-c', daemon.uri, ...args]);

function config(): Record<string, unknown> {
  return {
    redis: { url: redis.url, leaseTtlMs: LEASE_TTL_MS, connectTimeoutMs: 2_000 },
    state: { dir: mkdtempSync(join(tmpdir(), 'virt-graph-state-')) },
    inventory: { retryInitialMs: 50, retryMaxMs: 200 },
    platforms: [
      { id: 'kvm', kind: 'libvirt', uri: daemon.uri, retryInitialMs: 50, retryMaxMs: 200 },
      { ...vspherePlatform(sim), url: proxy.url, caFile: undefined },
    ],
  };
}

interface Watch {
  name: string;
  watch: { role: string; holder: string | null; instance: string } | null;
  inventoryState: string;
}

async function watches(gw: GatewayProcess): Promise<Watch[]> {
  const res = await gw.query<{ platforms: Watch[] }>(
    '{ platforms { name inventoryState watch { role holder instance } } }',
  );
  return res.data!.platforms;
}

/** Waits until every gateway's mirrors are SYNCED and each platform has exactly one holder among them. */
async function settled(gws: GatewayProcess[], timeoutMs = 30_000): Promise<Map<string, GatewayProcess>> {
  const holders = new Map<string, GatewayProcess>();
  await eventually(async () => {
    holders.clear();
    for (const gw of gws) {
      for (const p of await watches(gw)) {
        if (p.inventoryState !== 'SYNCED') return false;
        if (p.watch?.role === 'HOLDER') {
          if (holders.has(p.name)) return false;
          holders.set(p.name, gw);
        }
      }
    }
    return holders.size === 2;
  }, timeoutMs);
  return holders;
}

async function vmId(gw: GatewayProcess, platform: string, name: string): Promise<string> {
  const res = await gw.query<{
    virtualMachines: { nodes: { id: string; name: string; platform: { name: string } }[] };
  }>('{ virtualMachines(first: 1000) { nodes { id name platform { name } } } }');
  const vm = res.data!.virtualMachines.nodes.find((n) => n.platform.name === platform && n.name === name);
  if (!vm) throw new Error(`no VM ${name} on ${platform}`);
  return vm.id;
}

/**
 * A client of one gateway for power state changes: one per suspend or
 * resume (a change of the state's reason alone, which libvirt may report
 * separately, is another event).
 */
function listen(gw: GatewayProcess, variables: { f: Record<string, unknown>; after?: string }): Subscription<VmEvent> {
  const s = subscribe<VmEvent>(gw.url, VM_CHANGED, { ...variables, f: { aspects: ['POWER_STATE'], ...variables.f } });
  subscriptions.push(s);
  return s;
}

/**
 * Changes the test domain through virsh and waits until `witness`, a live
 * client, has seen it. The gateway reads a domain again after libvirt's event
 * for it, and changes made faster than that read show as one, the latest: a
 * test that counts changes makes each one after the last was seen.
 */
async function changeSeen(
  witness: Subscription<VmEvent>,
  command: 'suspend' | 'resume',
  powerState: 'PAUSED' | 'ON',
): Promise<void> {
  await virsh(command, 'test');
  await eventually(() => witness.events.at(-1)?.vmChanged.powerState === powerState, 10_000);
}

/** Lets the subscriptions reach the server (graphql-ws connects lazily). */
const subscribed = () => new Promise((r) => setTimeout(r, 500));

/**
 * Where each event sits in the libvirt platform's stream (a cursor also
 * names how far its instance had read the other platforms' streams, which
 * differs between instances).
 */
const cursors = (s: Subscription<VmEvent>, platform = 'kvm') =>
  s.events.map((e) => {
    const p = decodeStreamCursor(e.vmChanged.cursor)?.get(platform);
    return p ? `${p.id}.${p.index}` : null;
  });

/** Resumes the domain the clients saw paused; each then holds exactly [PAUSED, ON], at the same places in the stream. */
async function resumeAndSeeEverything(clients: Subscription<VmEvent>[]): Promise<void> {
  await virsh('resume', 'test');
  for (const c of clients) await c.until(2, 10_000);
  await new Promise((r) => setTimeout(r, 500));
  for (const c of clients) {
    expect(c.events.map((e) => e.vmChanged.powerState)).toEqual(['PAUSED', 'ON']);
    expect(cursors(c)).toEqual(cursors(clients[0]!));
  }
}

beforeAll(async () => {
  [redis, sim] = await Promise.all([redisServer({ persistent: true }), startVcsim()]);
  daemon = libvirtd();
  await daemon.start();
  proxy = await startSoapProxy(sim.url, sim.certFile);
  gateways.push(...(await Promise.all([spawnGateway(config()), spawnGateway(config())])));
  await settled(gateways);
}, 90_000);

afterAll(async () => {
  await Promise.all(subscriptions.map((s) => s.close()));
  await Promise.all(gateways.map((g) => g.kill()));
  await proxy?.close();
  await Promise.all([sim?.stop(), daemon?.stop(), redis?.kill()]);
});

describe('several instances sharing Redis', () => {
  it('watch each platform from one instance: vCenter sees one property-collector filter however many run', async () => {
    const third = await spawnGateway(config());
    gateways.push(third);
    const holders = await settled(gateways);
    expect([...holders.keys()].sort()).toEqual(['kvm', 'vc']);
    const filters = proxy.responses().filter((r) => r.includes('CreateFilterResponse')).length;
    expect(filters).toBe(1);
    // Every instance answers the same inventory from its own mirror, without asking the platforms.
    const LISTING = `{ virtualMachines(first: 1000) { totalCount nodes { id name powerState memoryMiB vcpus
      host { name } storage { name } networks { name } snapshots { name } } }
      hosts(first: 100) { nodes { id name } } networks(first: 100) { nodes { id name } } }`;
    const reads = () => proxy.responses().filter((r) => r.includes('RetrievePropertiesExResponse')).length;
    const readsBefore = reads();
    const answers = await Promise.all(gateways.map((gw) => gw.query(LISTING)));
    expect(reads()).toBe(readsBefore);
    for (const a of answers) {
      expect(a.errors).toBeUndefined();
      expect(a.data).toEqual(answers[0]!.data);
    }
  }, 60_000);

  it('deliver a change made through a follower, exactly once, to clients of every instance (libvirt and vSphere)', async () => {
    const holders = await settled(gateways);
    for (const [platform, vm, mutation, expected] of [
      ['kvm', 'test', 'pauseVm', 'PAUSED'],
      ['vc', 'DC0_H0_VM0', 'stopVm', 'OFF'],
    ] as const) {
      const holder = holders.get(platform)!;
      const follower = gateways.find((g) => g !== holder)!;
      const id = await vmId(follower, platform, vm);
      const clients = gateways.map((gw) => listen(gw, { f: { vmIds: [id] } }));
      await subscribed();
      const res = await follower.query<{ [m: string]: { userErrors: unknown[]; task: { id: string } } }>(
        `mutation($id: ID!) { ${mutation}(input: { vmId: $id${mutation === 'stopVm' ? ', force: true' : ''} }) { userErrors { message } task { id } } }`,
        { id },
      );
      expect(res.data![mutation]!.userErrors).toEqual([]);
      const taskId = res.data![mutation]!.task.id;
      for (const c of clients) await c.until(1, 10_000);
      await new Promise((r) => setTimeout(r, 1_000));
      for (const c of clients) {
        expect(c.events.filter((e) => e.vmChanged.powerState === expected)).toHaveLength(1);
        expect(cursors(c, platform)).toEqual(cursors(clients[0]!, platform));
      }
      // Read your writes on the instance that ran it; the task is known on every instance.
      for (const gw of gateways) {
        const seen = await gw.query<{ node: { powerState: string }; task: { state: string } | null }>(
          'query($id: ID!, $t: ID!) { node(id: $id) { ... on VirtualMachine { powerState } } task(id: $t) { state } }',
          { id, t: taskId },
        );
        expect(seen.data!.node.powerState).toBe(expected);
        expect(seen.data!.task?.state).toBe('SUCCEEDED');
      }
    }
    await virsh('resume', 'test');
  }, 60_000);

  it("keep a newer state when a follower's older reading reaches the holder after it", async () => {
    await settled(gateways);
    const id = await vmId(gateways[0]!, 'kvm', 'test');
    const { nativeId } = decodeIdOf(id, 'VirtualMachine');
    const powerStates = () =>
      Promise.all(
        gateways.map(async (gw) => {
          const res = await gw.query<{ node: { powerState: string } }>(
            'query($id: ID!) { node(id: $id) { ... on VirtualMachine { powerState } } }',
            { id },
          );
          return res.data!.node.powerState;
        }),
      );
    // Resumed by the test before: every instance has it running, so the stream carries it so.
    await eventually(async () => (await powerStates()).every((p) => p === 'ON'), 10_000);
    const writer = new Redis(redis.url);
    try {
      const stream = new PlatformStream(writer, 'kvm', 'virt-graph:', 10_000);
      // The domain whole, running, as the stream last carried it: what a follower reads after its mutation.
      const older = (await stream.range('-', '+', 100_000, true))
        .flatMap((r) => r.entry.changes ?? [])
        .filter((c) => c.kind === 'VirtualMachine' && c.nativeId === nativeId)
        .at(-1);
      expect(older?.kind === 'VirtualMachine' && older.record?.vm.powerState).toBe('ON');
      const clients = gateways.map((gw) => listen(gw, { f: { vmIds: [id] } }));
      await subscribed();
      await virsh('suspend', 'test');
      for (const c of clients) await c.until(1, 10_000);
      // That reading reaches the stream only now, after the holder has seen the suspend: a follower slow
      // to write it, or one whose write was retried. The holder reads the domain again instead.
      await stream.append({ v: 1, by: 'a-slow-follower', observed: [older!], events: [] });
      await new Promise((r) => setTimeout(r, 1_500));
      for (const c of clients) expect(c.events.map((e) => e.vmChanged.powerState)).toEqual(['PAUSED']);
      expect(await powerStates()).toEqual(gateways.map(() => 'PAUSED'));
    } finally {
      writer.disconnect();
      await virsh('resume', 'test');
    }
  }, 30_000);

  it('run a mutation retried on another instance with the same idempotency key once', async () => {
    const [a, b] = gateways as [GatewayProcess, GatewayProcess];
    // Stopped by the test before.
    const id = await vmId(a, 'vc', 'DC0_H0_VM0');
    const START = `mutation($id: ID!, $key: String) {
      startVm(input: { vmId: $id, idempotencyKey: $key }) { userErrors { message } task { id } }
    }`;
    const runs = await Promise.all(
      [a, b, a, b].map((gw) =>
        gw.query<{ startVm: { userErrors: unknown[]; task: { id: string } | null } }>(START, { id, key: 'once-1' }),
      ),
    );
    expect(runs.map((r) => r.errors ?? r.data!.startVm.userErrors)).toEqual([[], [], [], []]);
    const taskIds = new Set(runs.map((r) => r.data?.startVm.task?.id));
    expect(taskIds.size).toBe(1);
    expect([...taskIds][0]).toBeTruthy();
    const other = await b.query<{ stopVm: { userErrors: { message: string }[] } }>(
      'mutation($id: ID!) { stopVm(input: { vmId: $id, idempotencyKey: "once-1" }) { userErrors { message } } }',
      { id },
    );
    expect(other.data!.stopVm.userErrors[0]!.message).toMatch(/was used for startVm/);
  }, 30_000);

  it('resume a client on another instance with its cursor: exactly the events it missed, then live ones', async () => {
    const [a, b] = gateways as [GatewayProcess, GatewayProcess];
    const id = await vmId(a, 'kvm', 'test');
    const first = listen(a, { f: { vmIds: [id] } });
    const witness = listen(a, { f: { vmIds: [id] } });
    await subscribed();
    await virsh('suspend', 'test');
    // The suspend's event, whatever a change of the test before it (its startVm) may still bring first.
    for (const client of [first, witness])
      await eventually(() => client.events.some((e) => e.vmChanged.powerState === 'PAUSED'), 10_000);
    const seen = first.events.find((e) => e.vmChanged.powerState === 'PAUSED');
    await first.close();
    await changeSeen(witness, 'resume', 'ON');
    await changeSeen(witness, 'suspend', 'PAUSED');
    await changeSeen(witness, 'resume', 'ON');
    // The three changes reach a client that stayed, so the resumed one's count can be compared.
    const stayed = listen(a, { f: { vmIds: [id] }, after: seen!.vmChanged.cursor });
    await stayed.until(3, 10_000);
    const resumed = listen(b, { f: { vmIds: [id] }, after: seen!.vmChanged.cursor });
    const missed = await resumed.until(3, 10_000);
    expect(missed.map((e) => e.vmChanged.powerState)).toEqual(['ON', 'PAUSED', 'ON']);
    expect(cursors(resumed)).toEqual(cursors(stayed));
    await virsh('suspend', 'test');
    const [, , , live] = await resumed.until(4, 10_000);
    expect(live!.vmChanged.powerState).toBe('PAUSED');
    await new Promise((r) => setTimeout(r, 500));
    expect(resumed.events).toHaveLength(4);
    await virsh('resume', 'test');
  }, 30_000);

  it('resume a client on an instance that started after the events it missed', async () => {
    const [a] = gateways as [GatewayProcess];
    const id = await vmId(a, 'kvm', 'test');
    const first = listen(a, { f: { vmIds: [id] } });
    await subscribed();
    await virsh('suspend', 'test');
    // The suspend's event, whatever a change of the test before it may still bring first.
    await eventually(() => first.events.some((e) => e.vmChanged.powerState === 'PAUSED'), 10_000);
    const at = first.events.findIndex((e) => e.vmChanged.powerState === 'PAUSED');
    const seen = first.events[at];
    await changeSeen(first, 'resume', 'ON');
    await changeSeen(first, 'suspend', 'PAUSED');
    await changeSeen(first, 'resume', 'ON');
    const late = await spawnGateway(config());
    gateways.push(late);
    await settled(gateways);
    const resumed = listen(late, { f: { vmIds: [id] }, after: seen!.vmChanged.cursor });
    const missed = await resumed.until(3, 10_000);
    expect(missed.map((e) => e.vmChanged.powerState)).toEqual(['ON', 'PAUSED', 'ON']);
    expect(cursors(resumed)).toEqual(cursors(first).slice(at + 1));
    await expect(listen(late, { f: {}, after: 's1.garbage!' }).until(1, 5_000)).rejects.toThrow(
      /INVALID_CURSOR|not an event cursor/,
    );
  }, 60_000);

  it('hand a platform over within the lease time when its holder is killed, losing no change', async () => {
    const holders = await settled(gateways);
    const dead = holders.get('kvm')!;
    const survivors = gateways.filter((g) => g !== dead);
    const id = await vmId(survivors[0]!, 'kvm', 'test');
    const clients = survivors.map((gw) => listen(gw, { f: { vmIds: [id] } }));
    await subscribed();
    const killedAt = Date.now();
    await dead.kill();
    gateways.splice(gateways.indexOf(dead), 1);
    // Changed out of band while nobody watches: the next holder's first read finds it.
    await virsh('suspend', 'test');
    let takenAt = 0;
    await eventually(async () => {
      for (const gw of survivors) {
        if ((await watches(gw)).some((p) => p.name === 'kvm' && p.watch?.role === 'HOLDER')) takenAt = Date.now();
      }
      return takenAt > 0;
    }, 20_000);
    // The lease runs out, and a follower tries for it every third of it.
    expect(takenAt - killedAt).toBeLessThan(LEASE_TTL_MS + LEASE_TTL_MS / 3 + 1_000);
    const next = await settled(gateways, 20_000);
    expect(survivors).toContain(next.get('kvm'));
    for (const c of clients) {
      const [event] = await c.until(1, 10_000);
      expect(event!.vmChanged.powerState).toBe('PAUSED');
    }
    await resumeAndSeeEverything(clients);
  }, 60_000);

  it('lose no event when Redis restarts mid-stream, and keep every client connected', async () => {
    const [a, b] = gateways as [GatewayProcess, GatewayProcess];
    const id = await vmId(a, 'kvm', 'test');
    const clients = [listen(a, { f: { vmIds: [id] } }), listen(b, { f: { vmIds: [id] } })];
    await subscribed();
    await redis.kill();
    // Seen by the holder while Redis is away: written once Redis is back.
    await virsh('suspend', 'test');
    await new Promise((r) => setTimeout(r, 500));
    await redis.start();
    for (const c of clients) {
      const [event] = await c.until(1, 15_000);
      expect(event!.vmChanged.powerState).toBe('PAUSED');
    }
    await resumeAndSeeEverything(clients);
    for (const c of clients) expect(c.closeCode()).toBeNull();
    await settled(gateways, 20_000);
  }, 60_000);

  it('hand a platform over at once when its holder stops (SIGTERM gives the lease back)', async () => {
    const spare = await spawnGateway(config());
    gateways.push(spare);
    const holders = await settled(gateways);
    const leaving = holders.get('kvm')!;
    const stoppedAt = Date.now();
    leaving.child.kill('SIGTERM');
    await new Promise((r) => leaving.child.once('exit', r));
    gateways.splice(gateways.indexOf(leaving), 1);
    const next = await settled(gateways, 20_000);
    expect(gateways).toContain(next.get('kvm'));
    // Well inside the lease time: nobody waited for it to run out.
    expect(Date.now() - stoppedAt).toBeLessThan(LEASE_TTL_MS);
  }, 60_000);

  it('show the tasks other instances ran to an instance that starts later, beyond what the stream still holds', async () => {
    const before = await gateways[0]!.query<{ tasks: { nodes: { id: string; operation: string; state: string }[] } }>(
      '{ tasks(first: 100) { nodes { id operation state } } }',
    );
    const ran = before.data!.tasks.nodes;
    expect(ran.map((t) => t.operation)).toEqual(expect.arrayContaining(['PAUSE_VM', 'STOP_VM', 'START_VM']));
    for (const key of ['virt-graph:{kvm}:events', 'virt-graph:{vc}:events'])
      await redis.command('XTRIM', key, 'MAXLEN', '0');
    const late = await spawnGateway(config());
    gateways.push(late);
    const after = await late.query<{ tasks: { nodes: { id: string; operation: string; state: string }[] } }>(
      '{ tasks(first: 100) { nodes { id operation state } } }',
    );
    expect(after.data!.tasks.nodes).toEqual(ran);
  }, 60_000);

  it('start alone, and say so, when Redis does not answer', async () => {
    const cfg = config();
    const alone = await spawnGateway({
      ...cfg,
      redis: { url: `redis://127.0.0.1:${await closedPort()}`, connectTimeoutMs: 500 },
    });
    try {
      const ready = (await (await fetch(alone.url.replace('/graphql', '/readyz'))).json()) as Record<string, unknown>;
      expect(ready).toMatchObject({ status: 'ready', subscriptions: 'DEGRADED', redis: { status: 'UNAVAILABLE' } });
      expect(alone.output()).toMatch(/Redis is unreachable: this instance runs alone/);
      await eventually(
        async () => (await watches(alone)).every((p) => p.inventoryState === 'SYNCED' && p.watch === null),
        20_000,
      );
    } finally {
      await alone.kill();
    }
  }, 60_000);
});

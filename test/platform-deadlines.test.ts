import type { FormattedExecutionResult } from 'graphql';
import { afterEach, describe, expect, it } from 'vitest';

import type { VsphereProvider } from '../src/datasources/vsphere/provider.js';
import { platformDeadlines } from '../src/inventory/loaders.js';
import { DeadlineExceededError } from '../src/model/errors.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { eventually } from './helpers/subscriptions.js';
import { type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';

// Two vCenters, one of them stalled (SIGSTOP: it accepts connections and never
// answers). The healthy one's VMs are listed while the stalled one is still
// awaited, but their hosts and datastores are asked for only once the stalled
// one was given up on: each platform must have a budget of its own, so those
// nested reads still answer and the errors name the stalled platform alone.

/** `limits.operationTimeoutMs`: each platform's budget in one request. */
const BUDGET_MS = 2_000;

const QUERY = `{
  virtualMachines(first: 100) { nodes { name platform { name } host { name } storage { name } } }
}`;

interface VmNode {
  name: string;
  platform: { name: string };
  host: { name: string } | null;
  storage: { name: string }[];
}

type VmsResult = FormattedExecutionResult<{ virtualMachines: { nodes: VmNode[] } }>;

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function simulators(): Promise<{ stalled: Vcsim; healthy: Vcsim }> {
  // One after the other, so that one that fails to start leaves no other running.
  const stalled = await startVcsim();
  cleanups.push(() => stalled.stop());
  const healthy = await startVcsim();
  cleanups.push(() => healthy.stop());
  return { stalled, healthy };
}

async function gateway(raw: Record<string, unknown>): Promise<TestGateway> {
  const gw = await startTestGateway(raw);
  cleanups.push(() => gw.close());
  return gw;
}

/** Pauses a simulator until the test ends, resumed before the gateway closes (a hung vCenter holds its Logout). */
function stall(sim: Vcsim): void {
  sim.pause();
  cleanups.push(async () => sim.resume());
}

/** Each VM of a simulator as the query shows it, from govmomi's view of the inventory. */
function expectedNodes(sim: Vcsim, platform: string): VmNode[] {
  return Object.values(sim.oracle.vms)
    .map((vm) => ({
      name: vm.name,
      platform: { name: platform },
      host: { name: sim.oracle.hosts[vm.host]!.name },
      storage: vm.datastores.map((ds) => ({ name: sim.oracle.datastores[ds]!.name })).sort(byName),
    }))
    .sort(byName);
}

const byName = (a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name);

const sorted = (nodes: VmNode[]): VmNode[] =>
  nodes.map((n) => ({ ...n, storage: [...n.storage].sort(byName) })).sort(byName);

/** The platforms a response's errors name, each once. */
const blamed = (res: VmsResult): unknown[] => [...new Set(res.errors?.map((e) => e.extensions?.['platformId']))];

/** SOAP calls a platform made while `run` ran, by method. */
async function callsDuring(gw: TestGateway, platformId: string, run: () => Promise<unknown>) {
  const provider = gw.registry.get(platformId) as VsphereProvider;
  const counts = () => provider.withClient(async (s) => s.client.callCounts().byMethod);
  const before = await counts();
  await run();
  const after = await counts();
  return Object.fromEntries(
    Object.entries(after)
      .map(([method, n]) => [method, n - (before[method] ?? 0)] as const)
      .filter(([, n]) => n !== 0),
  );
}

async function inventoryStates(gw: TestGateway): Promise<Record<string, string>> {
  const res = await gw.query<{ platforms: { name: string; inventoryState: string }[] }>(
    '{ platforms { name inventoryState } }',
  );
  return Object.fromEntries(res.data!.platforms.map((p) => [p.name, p.inventoryState]));
}

describe('each platform has a deadline of its own', () => {
  it('answers a healthy vCenter in full, hosts and datastores included, while another is stalled', async () => {
    const { stalled, healthy } = await simulators();
    const gw = await gateway({
      // Every read goes to the platforms, as it does for a platform whose live inventory is down.
      inventory: { enabled: false },
      limits: { operationTimeoutMs: BUDGET_MS },
      platforms: [
        // Its own SOAP timeout is longer than the budget: the budget is what gives up on it.
        vspherePlatform(stalled, { id: 'stalled', requestTimeoutMs: 60_000 }),
        vspherePlatform(healthy, { id: 'healthy' }),
      ],
    });

    // The healthy vCenter's calls with both answering (the first query opens its container views).
    await gw.query(QUERY);
    let calm: VmsResult | undefined;
    const callsCalm = await callsDuring(gw, 'healthy', async () => {
      calm = await gw.query(QUERY);
    });
    expect(calm!.errors).toBeUndefined();

    stall(stalled);
    let res: VmsResult | undefined;
    const started = Date.now();
    const callsStalled = await callsDuring(gw, 'healthy', async () => {
      res = await gw.query(QUERY);
    });
    const took = Date.now() - started;

    expect(blamed(res!)).toEqual(['stalled']);
    for (const error of res!.errors!) {
      expect(error).toMatchObject({
        message: `Platform "stalled" did not answer within ${BUDGET_MS} ms.`,
        extensions: { code: 'DEADLINE_EXCEEDED', platformId: 'stalled' },
      });
    }
    expect(sorted(res!.data!.virtualMachines.nodes)).toEqual(expectedNodes(healthy, 'healthy'));
    // Two platforms: at most two budgets of waiting (the documented bound), here about one.
    expect(took).toBeGreaterThanOrEqual(BUDGET_MS - 50);
    expect(took).toBeLessThan(2 * BUDGET_MS + 1_000);
    // Still one batched read per kind of object: the stall changes when the healthy platform is asked, not how.
    expect(callsStalled).toEqual(callsCalm);
  }, 60_000);

  it('answers the same with the live inventory on, once the stalled vCenter is STALE and read directly', async () => {
    const { stalled, healthy } = await simulators();
    const gw = await gateway({
      inventory: { retryInitialMs: 100, retryMaxMs: 500 },
      limits: { operationTimeoutMs: BUDGET_MS },
      platforms: [
        // A short SOAP timeout makes its change stream (a long poll of 3 s plus 3 s) notice the stall soon;
        // it is still longer than the budget, which is what gives up on the direct reads.
        vspherePlatform(stalled, { id: 'stalled', requestTimeoutMs: 3_000, retryInitialMs: 100, retryMaxMs: 500 }),
        vspherePlatform(healthy, { id: 'healthy' }),
      ],
    });
    await eventually(async () => {
      const states = await inventoryStates(gw);
      return states['stalled'] === 'SYNCED' && states['healthy'] === 'SYNCED';
    }, 30_000);

    stall(stalled);
    await eventually(async () => (await inventoryStates(gw))['stalled'] === 'STALE', 30_000);
    const started = Date.now();
    const res: VmsResult = await gw.query(QUERY);
    const took = Date.now() - started;

    expect(blamed(res)).toEqual(['stalled']);
    for (const error of res.errors!) {
      expect(error).toMatchObject({
        message: `Platform "stalled" did not answer within ${BUDGET_MS} ms.`,
        extensions: { code: 'DEADLINE_EXCEEDED', platformId: 'stalled' },
      });
    }
    expect(sorted(res.data!.virtualMachines.nodes)).toEqual(expectedNodes(healthy, 'healthy'));
    const { directReads } = (res as { extensions?: { directReads?: { platformId: string }[] } }).extensions ?? {};
    expect(directReads?.map((d) => d.platformId)).toEqual(['stalled']);
    expect(took).toBeLessThan(2 * BUDGET_MS + 1_000);
  }, 90_000);
});

describe('the budgets of one request', () => {
  const after = <T>(ms: number, value: T) => new Promise<T>((resolve) => setTimeout(() => resolve(value), ms));
  const never = () => new Promise<never>(() => {});

  it('charges a platform only while the request waits on it, and reads side by side once', async () => {
    const budgets = platformDeadlines(1_000);
    // 2 x 200 ms side by side, a pause of 1 s on no read, then 200 ms: 400 ms of waiting in all.
    const side = await Promise.all([
      budgets.within('a', () => after(200, 1)),
      budgets.within('a', () => after(200, 2)),
    ]);
    expect(side).toEqual([1, 2]);
    await after(1_000, null);
    expect(await budgets.within('a', () => after(200, 3))).toBe(3);
    // What is left (about 600 ms) is too little for another 900 ms.
    await expect(budgets.within('a', () => after(900, 4))).rejects.toThrow(
      new DeadlineExceededError('a', 1_000).message,
    );
  });

  it('keeps a stalled platform to its own budget, and asks it nothing more once it is spent', async () => {
    const budgets = platformDeadlines(300);
    const started = Date.now();
    await expect(budgets.within('stalled', never)).rejects.toBeInstanceOf(DeadlineExceededError);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    // The healthy platform's nested read, started after the stalled one was given up on, has its whole budget.
    expect(await budgets.within('healthy', () => after(200, 'host'))).toBe('host');
    let asked = false;
    await expect(
      budgets.within('stalled', () => {
        asked = true;
        return after(10, 'late');
      }),
    ).rejects.toThrow('Platform "stalled" did not answer within 300 ms.');
    expect(asked).toBe(false);
  });

  it('stops the clock of a read that fails at once', async () => {
    const budgets = platformDeadlines(200);
    await expect(
      budgets.within('a', () => {
        throw new Error('refused');
      }),
    ).rejects.toThrow('refused');
    await after(250, null);
    expect(await budgets.within('a', () => after(100, 'ok'))).toBe('ok');
  });
});

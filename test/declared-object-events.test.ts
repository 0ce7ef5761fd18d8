import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { eventually, subscribe } from './helpers/subscriptions.js';

// Pools reach subscribers as inventoryChanged events of kind VM_POOL: when
// applied, when their members change, and when they are gone; each event's
// node is the pool as it is then.

const PLATFORM = Buffer.from('v1:Platform:lab:lab').toString('base64url');

interface PoolEvent {
  inventoryChanged: {
    type: string;
    kind: string;
    nodeId: string | null;
    node: { name?: string; replicas?: number } | null;
  };
}

let gw: TestGateway;

beforeAll(async () => {
  gw = await startTestGateway({
    platforms: [{ id: 'lab', kind: 'libvirt', uri: writeEstate({ vms: 4 }).uri }],
    reconciler: { resyncSeconds: 1, backoffInitialMs: 100, backoffMaxMs: 1000 },
  });
});
afterAll(async () => {
  await gw?.close();
});

describe('events of declared objects', () => {
  it('tells subscribers of a pool applied, filled and deleted, as VM_POOL changes with the pool as their node', async () => {
    const sub = subscribe<PoolEvent>(
      gw.url,
      `subscription { inventoryChanged(filter: { kinds: [VM_POOL] }) {
        type kind nodeId node { ... on VmPool { name replicas } }
      } }`,
    );
    try {
      await new Promise((r) => setTimeout(r, 200));
      const { data } = await gw.query<{ virtualMachines: { nodes: { id: string; powerState: string }[] } }>(
        '{ virtualMachines { nodes { id powerState } } }',
      );
      // libvirt clones a stopped source.
      const source = data!.virtualMachines.nodes.find((v) => v.powerState === 'OFF') ?? { id: '' };
      expect(source.id).not.toBe('');
      const applied = await gw.query<{ applyVmPool: { pool: { id: string } | null; userErrors: unknown[] } }>(
        `mutation($p: ID!, $s: ID!) { applyVmPool(input: {
          platformId: $p, name: "evt", sourceId: $s, replicas: 1, cloneMode: FULL, spec: { runStrategy: MANUAL }
        }) { pool { id } userErrors { code message } } }`,
        { p: PLATFORM, s: source.id },
      );
      expect(applied.data!.applyVmPool.userErrors).toEqual([]);
      const poolId = applied.data!.applyVmPool.pool!.id;
      const [added] = await sub.until(1);
      expect(added!.inventoryChanged).toEqual({
        type: 'ADDED',
        kind: 'VM_POOL',
        nodeId: poolId,
        node: { name: 'evt', replicas: 1 },
      });
      // Its member declared (and then ready): a MODIFIED of the same pool.
      await sub.until(2);
      expect(sub.events[1]!.inventoryChanged).toMatchObject({ type: 'MODIFIED', kind: 'VM_POOL', nodeId: poolId });
      await gw.query(
        'mutation($id: ID!) { deleteVmPool(input: { poolId: $id, deleteVms: true }) { userErrors { code } } }',
        {
          id: poolId,
        },
      );
      await eventually(() => sub.events.some((e) => e.inventoryChanged.type === 'REMOVED'), 10_000).catch(
        async (e: unknown) => {
          const left = await gw.query(
            '{ vmPools { nodes { name status { phase conditions { reason message } } } } vmDeclarations { nodes { name status { phase conditions { type status reason message } } } } }',
          );
          throw new Error(`${(e as Error).message}: ${JSON.stringify(left)} ${JSON.stringify(sub.events)}`);
        },
      );
      const removed = sub.events.find((e) => e.inventoryChanged.type === 'REMOVED')!;
      expect(removed.inventoryChanged).toEqual({ type: 'REMOVED', kind: 'VM_POOL', nodeId: poolId, node: null });
      expect(sub.events.every((e) => e.inventoryChanged.nodeId === poolId)).toBe(true);
    } finally {
      await sub.close();
    }
  });
});

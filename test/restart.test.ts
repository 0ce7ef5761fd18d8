import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type GatewayProcess, spawnGateway } from './helpers/gateway-process.js';
import { startSoapProxy } from './helpers/soap-proxy.js';
import { type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';

interface TaskRow {
  id: string;
  state: string;
  targetName: string;
  error: { code: string; message: string } | null;
}

const DEPLOY = `mutation($input: DeployVmsInput!) {
  deployVms(input: $input) { tasks { id state } userErrors { code message } }
}`;
const TASKS = `query($ids: [ID!]!) { nodes(ids: $ids) { ... on Task { id state targetName error { code message } } } }`;

// The gateway killed (SIGKILL: no draining) right after it answered, then
// started again on the same state directory.
describe('a gateway killed and started again', () => {
  let sim: Vcsim;
  const running: GatewayProcess[] = [];
  const stateDir = mkdtempSync(join(tmpdir(), 'virt-graph-restart-'));
  let config: Record<string, unknown>;

  beforeAll(async () => {
    // Clones that take long enough to be in flight when the gateway dies.
    sim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 1, host: 0, vm: 1, methodDelay: { CloneVM_Task: 4000 } });
    // A short request timeout keeps the live inventory's long polls short, so the
    // simulator (which waits for requests in flight) stops quickly.
    config = {
      state: { dir: stateDir },
      tasks: { maxPerHost: 1 },
      platforms: [vspherePlatform(sim, { requestTimeoutMs: 5_000 })],
    };
  });
  afterAll(async () => {
    for (const g of running) await g.kill();
    await sim?.stop();
  });

  const start = async () => {
    const g = await spawnGateway(config);
    running.push(g);
    return g;
  };

  it('keeps its tasks and idempotency keys: the same deployVms replays its first answer instead of starting again', async () => {
    const first = await start();
    const vms = await first.query<{ virtualMachines: { nodes: { id: string }[] } }>(
      '{ virtualMachines(first: 1) { nodes { id } } }',
    );
    const input = {
      templateId: vms.data!.virtualMachines.nodes[0]!.id,
      count: 3,
      namePattern: 'web-{n}',
      powerOn: false,
      idempotencyKey: 'deploy-web-1',
    };
    const answered = await first.query<{ deployVms: { tasks: TaskRow[] } }>(DEPLOY, { input });
    const taskIds = answered.data!.deployVms.tasks.map((t) => t.id);
    expect(taskIds).toHaveLength(3);
    await first.kill();

    const second = await start();
    // What was in flight is shown as such: the running clone had not reached
    // vSphere's own task (its outcome is unknown), the queued ones never started.
    const after = await second.query<{ nodes: TaskRow[] }>(TASKS, { ids: taskIds });
    expect(after.data!.nodes.map((t) => [t.targetName, t.state, t.error?.code])).toEqual([
      [expect.any(String), 'FAILED', 'INTERRUPTED'],
      [expect.any(String), 'CANCELLED', 'INTERRUPTED'],
      [expect.any(String), 'CANCELLED', 'INTERRUPTED'],
    ]);
    const retried = await second.query<{ deployVms: { tasks: TaskRow[]; userErrors: unknown[] } }>(DEPLOY, { input });
    expect(retried.data!.deployVms.userErrors).toEqual([]);
    expect(retried.data!.deployVms.tasks.map((t) => t.id)).toEqual(taskIds);
    const all = await second.query<{ tasks: { totalCount: number } }>('{ tasks(first: 0) { totalCount } }');
    expect(all.data!.tasks.totalCount).toBe(3);

    // The trail says how each ended.
    const audit = await second.query<{ auditLog: { nodes: { outcome: string; errorCode: string | null }[] } }>(
      '{ auditLog(first: 20, filter: { operations: ["deployVms"] }) { nodes { outcome errorCode } } }',
    );
    const outcomes = audit.data!.auditLog.nodes.map((e) => `${e.outcome}${e.errorCode ? `:${e.errorCode}` : ''}`);
    expect(outcomes.sort()).toEqual(
      [
        'ACCEPTED',
        'ACCEPTED',
        'ACCEPTED',
        'CANCELLED:INTERRUPTED',
        'CANCELLED:INTERRUPTED',
        'FAILED:INTERRUPTED',
        'REPLAYED',
      ].sort(),
    );
  }, 60_000);

  it('re-attaches a task that was waiting on its vSphere task, and finishes it with its result', async () => {
    const plain = await startVcsim({ dc: 1, cluster: 0, host: 1, vm: 1 });
    const proxy = await startSoapProxy(plain.url, plain.certFile);
    try {
      const cfg = {
        state: { dir: mkdtempSync(join(tmpdir(), 'virt-graph-restart-')) },
        platforms: [
          {
            id: 'vc',
            kind: 'vsphere',
            url: proxy.url,
            username: plain.username,
            password: plain.password,
            requestTimeoutMs: 5_000,
          },
        ],
      };
      const first = await spawnGateway(cfg);
      running.push(first);
      const vms = await first.query<{ virtualMachines: { nodes: { id: string }[] } }>(
        '{ virtualMachines(first: 1) { nodes { id } } }',
      );
      // vCenter finishes the task, but the gateway never hears how it ended.
      proxy.hold((body) => body.includes('RetrievePropertiesEx') && body.includes('<type>Task</type>'));
      const started = await first.query<{ createSnapshot: { task: { id: string } } }>(
        'mutation($i: CreateSnapshotInput!) { createSnapshot(input: $i) { task { id } } }',
        { i: { vmId: vms.data!.virtualMachines.nodes[0]!.id, name: 'before-upgrade' } },
      );
      const taskId = started.data!.createSnapshot.task.id;
      const upstream = async (g: GatewayProcess) =>
        (
          await g.query<{
            task: { state: string; upstreamTaskId: string | null; resultSnapshot: { name: string } | null };
          }>('query($id: ID!) { task(id: $id) { state upstreamTaskId resultSnapshot { name } } }', { id: taskId })
        ).data!.task;
      for (let i = 0; (await upstream(first)).upstreamTaskId === null; i++) {
        if (i > 200) throw new Error('the task never reached vSphere');
        await new Promise((r) => setTimeout(r, 25));
      }
      expect((await upstream(first)).state).toBe('RUNNING');
      await first.kill();
      proxy.release();

      const second = await spawnGateway(cfg);
      running.push(second);
      for (let i = 0; (await upstream(second)).state === 'RUNNING'; i++) {
        if (i > 200) throw new Error('the re-attached task did not finish');
        await new Promise((r) => setTimeout(r, 25));
      }
      expect(await upstream(second)).toMatchObject({ state: 'SUCCEEDED', resultSnapshot: { name: 'before-upgrade' } });
      expect(second.output()).toContain('re-attached to an upstream task');
      // Followed, not done again.
      const oracle = await plain.refreshOracle();
      expect(Object.values(oracle.vms).flatMap((v) => v.snapshots ?? [])).toEqual(['before-upgrade']);
    } finally {
      await proxy.close();
      await plain.stop();
    }
  }, 60_000);
});

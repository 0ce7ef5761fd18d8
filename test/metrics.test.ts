import { type Client, createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';

import { VsphereProvider } from '../src/datasources/vsphere/provider.js';
import { decodeId } from '../src/model/ids.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { succeed } from './helpers/mutations.js';
import { eventually } from './helpers/subscriptions.js';
import { type Vcsim, govmomiPerf, startVcsim, vspherePlatform } from './helpers/vcsim.js';

// Metrics through the graph, end to end: a vCenter simulator whose
// QueryPerf is deterministic per (entity, counter, time), so the numbers the
// graph serves can be compared with what govmomi reads for the same samples;
// real graphql-ws clients; the simulator's own count of QueryPerf calls.

let sim: Vcsim;
let gw: TestGateway;

const SAMPLE = 'timestamp intervalSeconds cpuUsagePercent memoryUsedBytes memoryUsagePercent networkRxBytesPerSecond';

async function queryPerfCalls(): Promise<number> {
  const provider = gw.registry.get('vc') as VsphereProvider;
  return provider.withClient(async (s) => s.client.callCounts().byMethod['QueryPerf'] ?? 0);
}

async function runningVms(): Promise<{ id: string; name: string }[]> {
  const res = await gw.query<{ virtualMachines: { nodes: { id: string; name: string; powerState: string }[] } }>(
    '{ virtualMachines(first: 1000, filter: { powerStates: [ON] }) { nodes { id name powerState } } }',
  );
  return res.data!.virtualMachines.nodes.filter((v) => v.powerState === 'ON');
}

beforeAll(async () => {
  sim = await startVcsim({ vm: 50 });
  gw = await startTestGateway({ platforms: [vspherePlatform(sim, { id: 'vc' })] });
  await eventually(async () => {
    const res = await gw.query<{ platforms: { inventoryState: string }[] }>('{ platforms { inventoryState } }');
    return res.data!.platforms.every((p) => p.inventoryState === 'SYNCED');
  }, 30_000);
}, 60_000);

afterAll(async () => {
  await gw?.close();
  await sim?.stop();
});

describe('metrics through the graph', () => {
  it("serves a VM's and a host's latest sample as govmomi reads it for the same time", async () => {
    const [vm] = await runningVms();
    const hosts = await gw.query<{ hosts: { nodes: { id: string }[] } }>('{ hosts(first: 1) { nodes { id } } }');
    const hostId = hosts.data!.hosts.nodes[0]!.id;
    const res = await gw.query<{
      vm: { metrics: { latest: Record<string, number | string> | null } };
      host: { metrics: { latest: Record<string, number | string> | null } };
    }>(
      `query($vm: ID!, $host: ID!) {
        vm: node(id: $vm) { ... on VirtualMachine { metrics { latest { ${SAMPLE} } } } }
        host: node(id: $host) { ... on Host { metrics { latest { ${SAMPLE} } } } }
      }`,
      { vm: vm!.id, host: hostId },
    );
    expect(res.errors).toBeUndefined();
    for (const [id, type, latest] of [
      [vm!.id, 'VirtualMachine', res.data!.vm.metrics.latest],
      [hostId, 'HostSystem', res.data!.host.metrics.latest],
    ] as const) {
      expect(latest).not.toBeNull();
      const end = new Date(latest!['timestamp'] as string);
      const moref = decodeId(id).nativeId;
      const direct = await govmomiPerf(sim, {
        entities: [{ type, value: moref }],
        counters: ['cpu.usage.average', 'mem.consumed.average', 'mem.usage.average', 'net.received.average'],
        intervalId: 20,
        start: new Date(end.getTime() - 20_000),
        end,
      });
      const series = direct[moref]!.series;
      expect(latest!['intervalSeconds']).toBe(20);
      expect(latest!['cpuUsagePercent']).toBe(series['cpu.usage.average']![0]! / 100);
      expect(latest!['memoryUsedBytes']).toBe(series['mem.consumed.average']![0]! * 1024);
      expect(latest!['memoryUsagePercent']).toBe(series['mem.usage.average']![0]! / 100);
      expect(latest!['networkRxBytesPerSecond']).toBe(series['net.received.average']![0]! * 1024);
    }
    // Asked again, it is answered from memory: the first ask keeps the VM sampled for a while.
    const before = await queryPerfCalls();
    await gw.query(`query($vm: ID!) { node(id: $vm) { ... on VirtualMachine { metrics { latest { timestamp } } } } }`, {
      vm: vm!.id,
    });
    expect(await queryPerfCalls()).toBe(before);
  });

  it('answers null at once for a VM that is off, without asking the platform', async () => {
    const [, , vm] = await runningVms();
    await succeed(gw, 'stopVm', { vmId: vm!.id, force: true });
    const before = await queryPerfCalls();
    const res = await gw.query<{ node: { powerState: string; metrics: { latest: unknown } } }>(
      'query($id: ID!) { node(id: $id) { ... on VirtualMachine { powerState metrics { latest { timestamp } } } } }',
      { id: vm!.id },
    );
    expect(res.data!.node).toEqual({ powerState: 'OFF', metrics: { latest: null } });
    expect(await queryPerfCalls()).toBe(before);
    await succeed(gw, 'startVm', { vmId: vm!.id });
  });

  it('serves 500 subscribers to the same 100 VMs with one QueryPerf per interval', async () => {
    const vms = (await runningVms()).slice(0, 100);
    expect(vms.length).toBe(100);
    const ids = vms.map((v) => v.id);
    const clients: Client[] = [];
    const counts: number[] = [];
    const timestamps = new Set<string>();
    const sampler = gw.metrics.sampler('vc')!;
    const watched = () => sampler.localInterest().find((i) => i.intervalSeconds === 20)?.targets.length ?? 0;
    const watchedBefore = watched();
    const callsBefore = await queryPerfCalls();
    const samplingsBefore = sampler.samplings;
    // Five WebSockets of 100 subscriptions each, every one to the same 100 VMs.
    for (let c = 0; c < 5; c++) {
      const client = createClient({ url: gw.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, retryAttempts: 0 });
      clients.push(client);
      for (let s = 0; s < 100; s++) {
        const n = counts.push(0) - 1;
        client.subscribe<{ vmMetrics: { vmId: string; sample: { timestamp: string } } }>(
          {
            query:
              'subscription($ids: [ID!]!) { vmMetrics(ids: $ids, intervalSeconds: 20) { vmId sample { timestamp } } }',
            variables: { ids },
          },
          {
            next: (v) => {
              counts[n]! += 1;
              if (v.data) timestamps.add(v.data.vmMetrics.sample.timestamp);
            },
            error: (e) => {
              throw new Error(JSON.stringify(e));
            },
            complete: () => {},
          },
        );
      }
    }
    try {
      // Two samplings of all 100 VMs reach every subscriber: the first at once (for VMs without a
      // recent sample) or at the next tick, the second at the tick after.
      await eventually(() => counts.every((n) => n >= 200), 70_000);
      const samplings = sampler.samplings - samplingsBefore;
      const calls = (await queryPerfCalls()) - callsBefore;
      expect(calls).toBe(samplings);
      // One QueryPerf per interval whatever the subscribers: the samplings are the intervals that passed.
      expect(samplings).toBeGreaterThanOrEqual(2);
      expect(samplings).toBeLessThanOrEqual(3);
    } finally {
      await Promise.all(clients.map((c) => c.dispose()));
    }
    // Nobody watches them any more: what is sampled at 20 s is what was before (the `latest` linger of the first test).
    await eventually(() => watched() === watchedBefore);
  }, 90_000);

  it('answers history at 300 s from vSphere, as govmomi reads it', async () => {
    const [vm] = await runningVms();
    const from = new Date(Date.now() - 2 * 3_600_000);
    const res = await gw.query<{
      node: {
        metrics: {
          resolutionSeconds: number;
          source: string;
          points: { timestamp: string; cpuUsagePercent: number | null }[];
        };
      };
    }>(
      `query($id: ID!, $from: DateTime!) { node(id: $id) { ... on VirtualMachine {
        metrics(from: $from) { resolutionSeconds source aggregate points { timestamp cpuUsagePercent } } } } }`,
      { id: vm!.id, from: from.toISOString() },
    );
    expect(res.errors).toBeUndefined();
    const series = res.data!.node.metrics;
    expect(series.resolutionSeconds).toBe(300);
    expect(series.source).toBe('PLATFORM');
    expect(series.points.length).toBeGreaterThanOrEqual(23);
    const moref = decodeId(vm!.id).nativeId;
    const direct = await govmomiPerf(sim, {
      entities: [{ type: 'VirtualMachine', value: moref }],
      counters: ['cpu.usage.average'],
      intervalId: 300,
      start: new Date(from.getTime() - 1000),
      end: new Date(series.points.at(-1)!.timestamp),
    });
    const byTime = new Map(
      direct[moref]!.samples!.map((s, i) => [
        new Date(s.timestamp).getTime(),
        direct[moref]!.series['cpu.usage.average']![i]!,
      ]),
    );
    for (const p of series.points) expect(p.cpuUsagePercent).toBe(byTime.get(new Date(p.timestamp).getTime())! / 100);
  });

  it('refuses what the platform cannot give, with a code and what is possible', async () => {
    const [vm] = await runningVms();
    const ask = (args: string) =>
      gw.query(
        `query($id: ID!) { node(id: $id) { ... on VirtualMachine { metrics(${args}) { resolutionSeconds points { timestamp } } } } }`,
        {
          id: vm!.id,
        },
      );
    const now = Date.now();
    const iso = (ms: number) => JSON.stringify(new Date(ms).toISOString());
    const reversed = await ask(`from: ${iso(now - 60_000)}, to: ${iso(now - 3_600_000)}`);
    expect(reversed.errors![0]!.extensions!['code']).toBe('INVALID_METRICS_REQUEST');
    const resolution = await ask(`from: ${iso(now - 3_600_000)}, resolutionSeconds: 60`);
    expect(resolution.errors![0]!.extensions!['code']).toBe('INVALID_METRICS_REQUEST');
    expect(resolution.errors![0]!.message).toContain('300 s (kept 1 d)');
    const tooOld = await ask(`from: ${iso(now - 3 * 86_400_000)}, resolutionSeconds: 300`);
    expect(tooOld.errors![0]!.message).toContain('reaches back 1 d');
    const maximum = await ask(`from: ${iso(now - 3_600_000)}, aggregate: MAXIMUM`);
    expect(maximum.errors![0]!.extensions!['code']).toBe('INVALID_METRICS_REQUEST');
    const noFrom = await ask(`resolutionSeconds: 300`);
    expect(noFrom.errors![0]!.extensions!['code']).toBe('BAD_USER_INPUT');

    const sub = (query: string, variables: Record<string, unknown>) => gw.wsQuery(query, variables);
    const below = await sub('subscription($ids: [ID!]!) { vmMetrics(ids: $ids, intervalSeconds: 10) { vmId } }', {
      ids: [vm!.id],
    });
    expect(below.errors![0]!.extensions!['code']).toBe('INVALID_METRICS_REQUEST');
    expect(below.errors![0]!.message).toContain('every 20 s or a multiple of it');
    const gone = vm!.id.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'));
    const unknown = await sub('subscription($ids: [ID!]!) { vmMetrics(ids: $ids) { vmId } }', { ids: [gone] });
    expect(unknown.errors![0]!.extensions!['code']).toMatch(/BAD_USER_INPUT|INVALID_ID/);
    const none = await sub('subscription { vmMetrics(ids: []) { vmId } }', {});
    expect(none.errors![0]!.extensions!['code']).toBe('BAD_USER_INPUT');
  });

  it('prices a series by the points it asks for', async () => {
    const from = JSON.stringify(new Date(Date.now() - 86_400_000 + 60_000).toISOString());
    const res = await gw.query(
      `{ virtualMachines(first: 100) { nodes { metrics(from: ${from}, resolutionSeconds: 300) { points { timestamp cpuUsagePercent } } } } }`,
    );
    expect(res.errors![0]!.extensions!['code']).toBe('QUERY_TOO_COSTLY');
    const small = await gw.query(
      `{ virtualMachines(first: 2) { nodes { metrics(from: ${from}, resolutionSeconds: 1800) { points { timestamp } } } } }`,
    );
    expect(small.errors).toBeUndefined();
  });
});

describe('the estate for Prometheus', () => {
  it('serves every running VM and host as gauges, labelled, when enabled', async () => {
    const estate = await startTestGateway({
      platforms: [vspherePlatform(sim, { id: 'vc' })],
      metrics: { estate: { enabled: true, intervalSeconds: 20 } },
    });
    try {
      const url = estate.url.replace(/\/graphql$/, '/metrics/estate');
      let text = '';
      await eventually(async () => {
        text = await (await fetch(url)).text();
        return text.includes('virtgraph_vm_cpu_usage_percent{') && text.includes('virtgraph_host_cpu_usage_percent{');
      }, 30_000);
      expect(text).toContain('# TYPE virtgraph_vm_cpu_usage_percent gauge');
      const vmLines = text.split('\n').filter((l) => l.startsWith('virtgraph_vm_cpu_usage_percent{'));
      expect(vmLines.length).toBe((await runningVms()).length);
      expect(vmLines[0]).toMatch(
        /^virtgraph_vm_cpu_usage_percent\{platform="vc",vm="[^"]+",host="[^"]+",id="vm-\d+"\} [\d.]+ \d+$/,
      );
    } finally {
      await estate.close();
    }
    // Off by default: nothing there.
    expect((await fetch(gw.url.replace(/\/graphql$/, '/metrics/estate'))).status).toBe(404);
  }, 60_000);
});

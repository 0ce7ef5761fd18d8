import { mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { PlatformStatusEvent } from '../src/model/events.js';
import { meteredEventSource } from '../src/observability/event-metering.js';
import { documentHash } from '../src/server/trusted-documents.js';
import { MemoryEventLog } from '../src/subscriptions/event-log.js';
import { type Estate, writeEstate } from './fixtures/libvirt-estate.js';
import { apiToken } from './helpers/callers.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { eventually, subscribe } from './helpers/subscriptions.js';

// GET /metrics read the way Prometheus reads it: Prometheus text, parsed by a
// parser of that format (parse-prometheus-text-format), not by asking
// prom-client's registry. The series move after queries, mutations and
// subscriptions; label values stay bounded; the scraper needs a credential
// that sees everything.

interface Sample {
  value?: string;
  labels?: Record<string, string>;
  buckets?: Record<string, string>;
  count?: string;
  sum?: string;
}
interface Family {
  name: string;
  help: string;
  type: 'COUNTER' | 'GAUGE' | 'HISTOGRAM' | 'SUMMARY' | 'UNTYPED';
  metrics: Sample[];
}
const parsePrometheus = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => Family[];

/** One scrape: the families by name, and the text for the histogram series the parser cannot tell apart. */
class Scrape {
  readonly families: Map<string, Family>;

  constructor(readonly text: string) {
    this.families = new Map(parsePrometheus(text).map((f) => [f.name, f]));
  }

  family(name: string): Family {
    const f = this.families.get(name);
    if (!f) throw new Error(`no ${name} in the scrape`);
    return f;
  }

  /** A counter's or gauge's value with exactly these labels; 0 when the series is not there (yet). */
  value(name: string, labels: Record<string, string> = {}): number {
    const sample = this.family(name).metrics.find((m) => sameLabels(m.labels ?? {}, labels));
    return sample ? Number(sample.value) : 0;
  }

  /** Every value a label takes in a family. */
  labelValues(name: string, label: string): Set<string> {
    return new Set(this.family(name).metrics.flatMap((m) => m.labels?.[label] ?? []));
  }

  /**
   * One series of a histogram: the parser merges a family's labelled series
   * into one, so it is handed this series alone, its labels (simple values
   * here) taken off each line.
   */
  histogram(name: string, labels: Record<string, string>): { count: number; sum: number } {
    const pairs = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
    const ofSeries = (l: string) => {
      const inner = /^\w+\{(.*)\} /.exec(l)?.[1];
      if (!l.startsWith(name) || inner === undefined) return false;
      const present = inner.split(',').filter((p) => !p.startsWith('le='));
      return present.length === pairs.length && pairs.every((p) => present.includes(p));
    };
    const lines = this.text
      .split('\n')
      .filter((l) => l.startsWith(`# HELP ${name} `) || l.startsWith(`# TYPE ${name} `) || ofSeries(l))
      .map((l) => {
        if (l.startsWith('#')) return l;
        const inner = /^\w+\{(.*)\} /.exec(l)![1]!;
        const le = inner.split(',').filter((p) => p.startsWith('le='));
        return l.replace(`{${inner}}`, le.length > 0 ? `{${le.join(',')}}` : '');
      });
    if (lines.length <= 2) return { count: 0, sum: 0 };
    const [family] = parsePrometheus(`${lines.join('\n')}\n`);
    const series = family?.metrics[0];
    expect(family?.type).toBe('HISTOGRAM');
    expect(series?.buckets?.['+Inf']).toBe(series?.count);
    return { count: Number(series?.count ?? 0), sum: Number(series?.sum ?? 0) };
  }
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

const prometheus = apiToken('prometheus');
const ops = apiToken('ops');
const tenant = apiToken('tenant-a');
const AUTH = {
  apiTokens: [prometheus.entry, ops.entry, tenant.entry],
  tenants: { 'a-kvm': { platforms: ['kvm'], namePatterns: ['web-*'] } },
  bindings: [
    { subjects: ['token:prometheus'], roles: ['viewer'], tenants: ['*'] },
    { subjects: ['token:ops'], roles: ['admin'], tenants: ['*'] },
    { subjects: ['token:tenant-a'], roles: ['viewer'], tenants: ['a-kvm'] },
  ],
};

async function scrape(gw: TestGateway, token = prometheus.token): Promise<Scrape> {
  const res = await fetch(new URL('/metrics', gw.url), { headers: { authorization: `Bearer ${token}` } });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return new Scrape(await res.text());
}

async function graphql<T = Record<string, unknown>>(
  gw: TestGateway,
  query: string,
  variables: Record<string, unknown> = {},
): Promise<{ status: number; data?: T; errors?: { extensions?: { code?: string } }[] }> {
  const res = await fetch(gw.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ops.token}` },
    body: JSON.stringify({ query, variables }),
  });
  return { status: res.status, ...((await res.json()) as { data?: T }) };
}

/** Polls a task (as the admin) until it has finished; its final state. */
async function finished(gw: TestGateway, taskId: string): Promise<string> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const res = await graphql<{ task: { state: string } }>(gw, 'query($id: ID!) { task(id: $id) { state } }', {
      id: taskId,
    });
    const state = res.data!.task.state;
    if (['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(state)) return state;
    if (Date.now() > deadline) throw new Error(`task ${taskId} still ${state}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let gw: TestGateway;
let estate: Estate;

beforeAll(async () => {
  estate = writeEstate({ vms: 6 });
  gw = await startTestGateway({
    platforms: [{ id: 'kvm', kind: 'libvirt', uri: estate.uri }],
    auth: AUTH,
    metrics: { estate: { enabled: true, intervalSeconds: 20 } },
  });
  await eventually(async () => {
    const res = await graphql<{ platforms: { inventoryState: string }[] }>(gw, '{ platforms { inventoryState } }');
    return res.data?.platforms.every((p) => p.inventoryState === 'SYNCED') ?? false;
  });
});
afterAll(() => gw?.close());

describe('GET /metrics', () => {
  it('answers a scraper whose credential sees every platform; refuses others as GraphQL would', async () => {
    const url = new URL('/metrics', gw.url);
    const none = await fetch(url);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toContain('Bearer');
    const limited = await fetch(url, { headers: { authorization: `Bearer ${tenant.token}` } });
    expect(limited.status).toBe(403);
    await scrape(gw);
    // The estate's own endpoint is where it was.
    const estateRes = await fetch(new URL('/metrics/estate', gw.url), {
      headers: { authorization: `Bearer ${prometheus.token}` },
    });
    expect(estateRes.status).toBe(200);
  });

  it('is Prometheus text a parser reads whole: every family the gateway promises, and the Node process', async () => {
    const s = await scrape(gw);
    const types: Record<string, Family['type']> = {
      virtgraph_graphql_requests_total: 'COUNTER',
      virtgraph_graphql_request_duration_seconds: 'HISTOGRAM',
      virtgraph_graphql_errors_total: 'COUNTER',
      virtgraph_upstream_calls_total: 'COUNTER',
      virtgraph_upstream_call_duration_seconds: 'HISTOGRAM',
      virtgraph_upstream_calls_in_flight: 'GAUGE',
      virtgraph_upstream_sessions: 'GAUGE',
      virtgraph_platform_status: 'GAUGE',
      virtgraph_tasks_in_flight: 'GAUGE',
      virtgraph_websocket_connections: 'GAUGE',
      virtgraph_subscriptions_active: 'GAUGE',
      virtgraph_subscription_events_delivered_total: 'COUNTER',
      virtgraph_subscription_events_dropped_total: 'COUNTER',
      virtgraph_subscription_event_lag_seconds: 'HISTOGRAM',
      process_cpu_user_seconds_total: 'COUNTER',
      process_resident_memory_bytes: 'GAUGE',
      nodejs_heap_size_used_bytes: 'GAUGE',
      nodejs_eventloop_lag_seconds: 'GAUGE',
    };
    for (const [name, type] of Object.entries(types)) expect(s.family(name).type, name).toBe(type);
    for (const f of s.families.values()) expect(f.help, f.name).not.toBe('');
  });

  it('shows each platform’s status, its sessions, and its (empty) task queue', async () => {
    const s = await scrape(gw);
    expect(s.value('virtgraph_platform_status', { platform: 'kvm', status: 'CONNECTED' })).toBe(1);
    for (const status of ['CONNECTING', 'UNREACHABLE', 'AUTH_FAILED']) {
      expect(s.value('virtgraph_platform_status', { platform: 'kvm', status })).toBe(0);
    }
    expect(s.value('virtgraph_upstream_sessions', { platform: 'kvm' })).toBeGreaterThanOrEqual(1);
    expect(s.family('virtgraph_tasks_in_flight').metrics.map((m) => m.labels)).toEqual(
      expect.arrayContaining([
        { platform: 'kvm', state: 'QUEUED' },
        { platform: 'kvm', state: 'RUNNING' },
      ]),
    );
    // The live inventory's first full read went to the platform, and is counted under its ID.
    const calls = s.family('virtgraph_upstream_calls_total').metrics;
    expect(
      calls.filter((m) => m.labels?.['platform'] === 'kvm').reduce((n, m) => n + Number(m.value), 0),
    ).toBeGreaterThan(0);
    expect(s.labelValues('virtgraph_upstream_calls_total', 'platform')).toEqual(new Set(['kvm']));
  });

  it('counts and times queries by name, type and outcome, and errors by code', async () => {
    const labels = { operation: 'ListVms', type: 'query' };
    const before = await scrape(gw);
    const res = await graphql(gw, 'query ListVms { virtualMachines(first: 10) { nodes { name powerState } } }');
    expect(res.errors).toBeUndefined();
    expect((await graphql(gw, 'query Broken { noSuchField }')).status).toBe(400);
    const unauthenticated = await fetch(gw.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ platforms { id } }' }),
    });
    expect(unauthenticated.status).toBe(401);
    const after = await scrape(gw);

    const moved = (name: string, l: Record<string, string>) => after.value(name, l) - before.value(name, l);
    expect(moved('virtgraph_graphql_requests_total', { ...labels, outcome: 'ok' })).toBe(1);
    expect(after.histogram('virtgraph_graphql_request_duration_seconds', labels).count).toBe(
      before.histogram('virtgraph_graphql_request_duration_seconds', labels).count + 1,
    );
    expect(after.histogram('virtgraph_graphql_request_duration_seconds', labels).sum).toBeGreaterThan(0);
    // A document that does not validate is no operation yet: its name is not a label.
    expect(moved('virtgraph_graphql_requests_total', { operation: 'unknown', type: 'unknown', outcome: 'error' })).toBe(
      2,
    );
    expect(after.labelValues('virtgraph_graphql_requests_total', 'operation')).not.toContain('Broken');
    expect(moved('virtgraph_graphql_errors_total', { code: 'GRAPHQL_VALIDATION_FAILED' })).toBe(1);
    expect(moved('virtgraph_graphql_errors_total', { code: 'UNAUTHENTICATED' })).toBe(1);
  });

  it('counts a mutation, and the upstream call its task made, timed by platform and method', async () => {
    const vm = estate.vms.find((v) => v.rawState === 'running')!;
    const list = await graphql<{ virtualMachines: { nodes: { id: string; name: string }[] } }>(
      gw,
      'query($n: String) { virtualMachines(first: 5, filter: { nameContains: $n }) { nodes { id name } } }',
      { n: vm.name },
    );
    const id = list.data!.virtualMachines.nodes.find((n) => n.name === vm.name)!.id;
    const call = { platform: 'kvm', method: 'domainLifecycle' };
    const before = await scrape(gw);
    for (const name of ['Suspend', 'Resume']) {
      const field = name === 'Suspend' ? 'suspendVm' : 'resumeVm';
      const res = await graphql<Record<string, { task: { id: string } }>>(
        gw,
        `mutation ${name}($id: ID!) { ${field}(input: { vmId: $id }) { task { id } userErrors { code } } }`,
        { id },
      );
      expect(res.errors).toBeUndefined();
      expect(await finished(gw, res.data![field]!.task.id)).toBe('SUCCEEDED');
    }
    const after = await scrape(gw);
    const moved = (name: string, l: Record<string, string>) => after.value(name, l) - before.value(name, l);
    expect(moved('virtgraph_graphql_requests_total', { operation: 'Suspend', type: 'mutation', outcome: 'ok' })).toBe(
      1,
    );
    expect(moved('virtgraph_graphql_requests_total', { operation: 'Resume', type: 'mutation', outcome: 'ok' })).toBe(1);
    expect(moved('virtgraph_upstream_calls_total', { ...call, outcome: 'ok' })).toBe(2);
    expect(
      after.histogram('virtgraph_upstream_call_duration_seconds', call).count -
        before.histogram('virtgraph_upstream_call_duration_seconds', call).count,
    ).toBe(2);
    expect(after.value('virtgraph_upstream_calls_in_flight', { platform: 'kvm' })).toBe(0);
    expect(after.value('virtgraph_tasks_in_flight', { platform: 'kvm', state: 'RUNNING' })).toBe(0);
  });

  it('follows subscriptions: connections, running subscriptions, events delivered and their lag', async () => {
    const vm = estate.vms.find((v) => v.rawState === 'running' && v.name !== estate.vms[0]!.name)!;
    const list = await graphql<{ virtualMachines: { nodes: { id: string; name: string }[] } }>(
      gw,
      'query($n: String) { virtualMachines(first: 5, filter: { nameContains: $n }) { nodes { id name } } }',
      { n: vm.name },
    );
    const id = list.data!.virtualMachines.nodes.find((n) => n.name === vm.name)!.id;
    const before = await scrape(gw);
    const sub = subscribe<{ vmChanged: { type: string } }>(
      gw.url,
      'subscription Watch($ids: [ID!]) { vmChanged(filter: { vmIds: $ids }) { type } }',
      { ids: [id] },
      { authorization: `Bearer ${ops.token}` },
    );
    await eventually(async () => (await scrape(gw)).value('virtgraph_subscriptions_active') > 0);
    const open = await scrape(gw);
    expect(open.value('virtgraph_websocket_connections')).toBeGreaterThanOrEqual(1);
    expect(open.value('virtgraph_subscriptions_active')).toBe(1);

    const res = await graphql<{ suspendVm: { task: { id: string } } }>(
      gw,
      'mutation($id: ID!) { suspendVm(input: { vmId: $id }) { task { id } } }',
      { id },
    );
    await finished(gw, res.data!.suspendVm.task.id);
    await sub.until(1);
    await sub.close();
    await eventually(async () => (await scrape(gw)).value('virtgraph_subscriptions_active') === 0);
    const after = await scrape(gw);
    const moved = (name: string, l: Record<string, string> = {}) => after.value(name, l) - before.value(name, l);
    expect(moved('virtgraph_subscription_events_delivered_total')).toBeGreaterThanOrEqual(sub.events.length);
    expect(after.family('virtgraph_subscription_event_lag_seconds').metrics[0]!.count).toBeDefined();
    expect(
      Number(after.family('virtgraph_subscription_event_lag_seconds').metrics[0]!.count) -
        Number(before.family('virtgraph_subscription_event_lag_seconds').metrics[0]!.count),
    ).toBeGreaterThanOrEqual(1);
    expect(moved('virtgraph_graphql_requests_total', { operation: 'Watch', type: 'subscription', outcome: 'ok' })).toBe(
      1,
    );
    expect(after.value('virtgraph_subscription_events_dropped_total')).toBe(0);
  });

  it('counts the events a too-slow subscriber’s queue discards, and the lag of each event taken', async () => {
    // The gateway's own event source, driven directly: a queue overflows at maxQueuedEvents (10 at least).
    const before = await scrape(gw);
    const log = new MemoryEventLog();
    const source = meteredEventSource(log);
    let overflowed = 0;
    const slow = source.subscribe({ filter: () => true, maxQueue: 10, onOverflow: (e) => (overflowed = e.queued) });
    const reader = source.subscribe({ filter: () => true, maxQueue: 100 });
    const event: PlatformStatusEvent = {
      type: 'PLATFORM_STATUS',
      platformId: 'kvm',
      status: 'CONNECTED',
      inventory: 'SYNCED',
      message: null,
    };
    for (let i = 0; i < 11; i += 1) log.publish(event);
    expect(overflowed).toBe(10);
    await reader.next();
    await reader.next();
    await Promise.all([slow.return?.(), reader.return?.()]);
    const after = await scrape(gw);
    const moved = (name: string) => after.value(name) - before.value(name);
    expect(moved('virtgraph_subscription_events_dropped_total')).toBe(10);
    const lag = (s: Scrape) => Number(s.family('virtgraph_subscription_event_lag_seconds').metrics[0]!.count);
    expect(lag(after) - lag(before)).toBe(2);
  });

  it('keeps labels bounded: client-chosen names past the cap share `other`, and no VM name is a label', async () => {
    for (let i = 0; i < 240; i += 1) {
      const res = await graphql(gw, `query Probe${i} { __typename }`);
      expect(res.status).toBe(200);
    }
    const s = await scrape(gw);
    const names = s.labelValues('virtgraph_graphql_requests_total', 'operation');
    expect(names.size).toBeLessThanOrEqual(200 + 3);
    expect(names).toContain('other');
    expect(s.value('virtgraph_graphql_requests_total', { operation: 'other', type: 'query', outcome: 'ok' })).toBe(
      240 - [...names].filter((n) => n.startsWith('Probe')).length,
    );
    const labels = [...s.families.values()].flatMap((f) => f.metrics.flatMap((m) => Object.values(m.labels ?? {})));
    for (const vm of estate.vms) expect(labels).not.toContain(vm.name);
    expect(s.text).not.toContain('__typename');
  });
});

describe('operation names with trusted documents enforced', () => {
  it('labels only the names of the manifest’s documents', async () => {
    const doc = 'query Registered { platforms { id } }';
    const dir = mkdtempSync(join(tmpdir(), 'virt-graph-manifest-'));
    const file = join(dir, 'persisted-documents.json');
    writeFileSync(file, JSON.stringify({ [documentHash(doc)]: doc }));
    const trusted = await startTestGateway({
      platforms: [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }],
      server: { trustedDocuments: { manifestFile: file, enforce: true } },
    });
    try {
      const post = (body: Record<string, unknown>) =>
        fetch(trusted.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
      expect((await post({ documentId: `sha256:${documentHash(doc)}` })).status).toBe(200);
      expect((await post({ query: 'query Unregistered { platforms { id } }' })).status).toBe(403);
      const res = await fetch(new URL('/metrics', trusted.url));
      const s = new Scrape(await res.text());
      const names = s.labelValues('virtgraph_graphql_requests_total', 'operation');
      expect(names).toContain('Registered');
      expect(names).not.toContain('Unregistered');
      expect(s.value('virtgraph_graphql_errors_total', { code: 'OPERATION_NOT_TRUSTED' })).toBeGreaterThanOrEqual(1);
    } finally {
      await trusted.close();
    }
  });
});

describe('observability.metrics.enabled: false', () => {
  it('serves no /metrics', async () => {
    const off = await startTestGateway({
      platforms: [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }],
      observability: { metrics: { enabled: false } },
    });
    try {
      expect((await fetch(new URL('/metrics', off.url))).status).toBe(404);
    } finally {
      await off.close();
    }
  });
});

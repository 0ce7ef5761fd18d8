import { randomBytes } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';

import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';

// OpenTelemetry traces reach a collector: a span per operation, child spans
// per DataLoader batch that goes to a platform and per upstream call, the
// W3C trace context of the request followed. The collector here is a plain
// HTTP server taking OTLP/HTTP JSON on POST /v1/traces, as a real one does.

interface OtlpValue {
  stringValue?: string;
  intValue?: number | string;
  boolValue?: boolean;
  arrayValue?: { values: OtlpValue[] };
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: { key: string; value: OtlpValue }[];
  status?: { code?: number };
}
interface OtlpRequest {
  resourceSpans: {
    resource: { attributes: { key: string; value: OtlpValue }[] };
    scopeSpans: { spans: OtlpSpan[] }[];
  }[];
}

const SPAN_KIND = { INTERNAL: 1, SERVER: 2, CLIENT: 3 } as const;

/** An OTLP/HTTP receiver on a free loopback port, keeping what it was sent. */
class OtlpReceiver {
  readonly requests: OtlpRequest[] = [];
  readonly contentTypes: string[] = [];
  private server: Server | null = null;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.method !== 'POST' || req.url !== '/v1/traces') {
          res.writeHead(404).end();
          return;
        }
        this.contentTypes.push(req.headers['content-type'] ?? '');
        this.requests.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as OtlpRequest);
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1/traces`;
  }

  spans(): OtlpSpan[] {
    return this.requests.flatMap((r) => r.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans)));
  }

  serviceNames(): string[] {
    return this.requests.flatMap((r) =>
      r.resourceSpans.flatMap(
        (rs) => rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue ?? [],
      ),
    );
  }

  clear(): void {
    this.requests.length = 0;
  }

  close(): Promise<void> {
    return new Promise((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

const attr = (span: OtlpSpan, key: string): unknown => {
  const v = span.attributes.find((a) => a.key === key)?.value;
  return v?.stringValue ?? (v?.intValue !== undefined ? Number(v.intValue) : v?.boolValue);
};

/** The chain of parents of a span, up to the root of what was exported. */
function ancestors(span: OtlpSpan, all: readonly OtlpSpan[]): OtlpSpan[] {
  const byId = new Map(all.map((s) => [s.spanId, s]));
  const chain: OtlpSpan[] = [];
  let parent = span.parentSpanId ? byId.get(span.parentSpanId) : undefined;
  while (parent && chain.length < 20) {
    chain.push(parent);
    parent = parent.parentSpanId ? byId.get(parent.parentSpanId) : undefined;
  }
  return chain;
}

const hex = (bytes: number) => randomBytes(bytes).toString('hex');
const LIST_VMS = 'query ListVms { virtualMachines(first: 5) { nodes { id name powerState } } }';

const root = join(import.meta.dirname, '..');
const loaded = createRequire(import.meta.url).cache;
const sdkLoaded = () =>
  Object.keys(loaded).some((path) => path.startsWith(join(root, 'node_modules/@opentelemetry/sdk-trace-base/')));

const receiver = new OtlpReceiver();
beforeAll(() => receiver.start());
afterAll(() => receiver.close());

describe('tracing off (no otlpEndpoint)', () => {
  it('loads no OpenTelemetry SDK and sends nothing, answering as usual', async () => {
    const gw = await startTestGateway({ platforms: [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }] });
    try {
      const res = await fetch(gw.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', traceparent: `00-${hex(16)}-${hex(8)}-01` },
        body: JSON.stringify({ query: LIST_VMS }),
      });
      expect(res.status).toBe(200);
      const line = gw.logs().find((l) => l['msg'] === 'operation');
      expect(line).toBeDefined();
      expect(line).not.toHaveProperty('traceId');
    } finally {
      await gw.close();
    }
    expect(sdkLoaded()).toBe(false);
    expect(receiver.requests).toHaveLength(0);
  });
});

describe('tracing on, every root span kept', () => {
  let gw: TestGateway;
  const traceId = hex(16);
  const callerSpanId = hex(8);
  const wsTraceId = hex(16);

  beforeAll(async () => {
    receiver.clear();
    gw = await startTestGateway({
      // Reads go to the platform itself (no live inventory): the query's batches make upstream calls.
      inventory: { enabled: false },
      platforms: [{ id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 8 }).uri }],
      observability: { tracing: { otlpEndpoint: receiver.url, serviceName: 'virt-graph-test', sampleRatio: 1 } },
    });
    const res = await fetch(gw.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', traceparent: `00-${traceId}-${callerSpanId}-01` },
      body: JSON.stringify({ query: LIST_VMS }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { data?: { virtualMachines: { nodes: unknown[] } } };
    expect(body.data?.virtualMachines.nodes).toHaveLength(5);

    // Over WebSocket the context comes in the subscribe message's extensions.
    const client = createClient({
      url: gw.url.replace(/^http/, 'ws'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      lazy: true,
    });
    await new Promise<void>((resolve, reject) => {
      client.subscribe(
        {
          query: 'query WsPlatforms { platforms { id status } }',
          extensions: { traceparent: `00-${wsTraceId}-${hex(8)}-01` },
        },
        { next: () => undefined, error: reject, complete: resolve },
      );
    });
    // A subscription's span is its setup: it ends before the subscription does.
    await new Promise<void>((resolve, reject) => {
      const stop = client.subscribe(
        {
          query: 'subscription WsWatch { platformStatusChanged { type } }',
          extensions: { traceparent: `00-${wsTraceId}-${hex(8)}-01` },
        },
        { next: () => undefined, error: reject, complete: resolve },
      );
      setTimeout(() => {
        stop();
        resolve();
      }, 300);
    });
    await client.dispose();
    // Closing sends what the batch processor holds.
    await gw.close();
  });

  it('loads the SDK and sends OTLP/HTTP JSON under the configured service name', () => {
    expect(sdkLoaded()).toBe(true);
    expect(receiver.contentTypes.every((t) => t.startsWith('application/json'))).toBe(true);
    expect(new Set(receiver.serviceNames())).toEqual(new Set(['virt-graph-test']));
  });

  it('makes a server span for the operation, the child of the caller’s traceparent', () => {
    const spans = receiver.spans();
    const operation = spans.find((s) => s.name === 'query ListVms');
    expect(operation, JSON.stringify(spans.map((s) => s.name))).toBeDefined();
    expect(operation!.kind).toBe(SPAN_KIND.SERVER);
    expect(operation!.traceId).toBe(traceId);
    expect(operation!.parentSpanId).toBe(callerSpanId);
    expect(attr(operation!, 'graphql.operation.type')).toBe('query');
    expect(attr(operation!, 'graphql.operation.name')).toBe('ListVms');
    expect(attr(operation!, 'virtgraph.outcome')).toBe('ok');
    expect(attr(operation!, 'http.response.status_code')).toBe(200);
  });

  it('puts the upstream calls (libvirt) under the operation, through the batches that made them', () => {
    const spans = receiver.spans();
    const operation = spans.find((s) => s.name === 'query ListVms')!;
    const upstream = spans.filter((s) => s.traceId === traceId && s.name.startsWith('libvirt '));
    expect(upstream.length).toBeGreaterThan(0);
    for (const call of upstream) {
      expect(call.kind).toBe(SPAN_KIND.CLIENT);
      expect(attr(call, 'rpc.system')).toBe('libvirt');
      expect(attr(call, 'virtgraph.platform')).toBe('kvm');
      expect(call.name).toBe(`libvirt ${String(attr(call, 'rpc.method'))}`);
      const chain = ancestors(call, spans);
      expect(chain.map((s) => s.spanId)).toContain(operation.spanId);
      expect(chain[0]!.name).toBe('inventory batch');
      expect(attr(chain[0]!, 'virtgraph.platform')).toBe('kvm');
    }
    const batches = spans.filter((s) => s.name === 'inventory batch' && s.traceId === traceId);
    expect(batches.length).toBeGreaterThan(0);
    for (const batch of batches) expect(ancestors(batch, spans)[0]!.spanId).toBe(operation.spanId);
  });

  it('follows the trace context a WebSocket operation carries', () => {
    const spans = receiver.spans();
    const ws = spans.find((s) => s.name === 'query WsPlatforms');
    expect(ws).toBeDefined();
    expect(ws!.traceId).toBe(wsTraceId);
    expect(ws!.kind).toBe(SPAN_KIND.SERVER);
    const subscription = spans.find((s) => s.name === 'subscription WsWatch');
    expect(subscription?.traceId).toBe(wsTraceId);
    expect(attr(subscription!, 'virtgraph.outcome')).toBe('ok');
  });

  it('names the trace in the access log, and puts no query text in a span', () => {
    const line = gw.logs().find((l) => l['msg'] === 'operation' && l['operationName'] === 'ListVms');
    expect(line?.['traceId']).toBe(traceId);
    const exported = JSON.stringify(receiver.requests);
    expect(exported).not.toContain('virtualMachines(first');
    expect(exported).not.toContain('powerState }');
  });

  it('makes no span for the background work nothing traced asked for (watch, keep-alives)', () => {
    const spans = receiver.spans();
    const traces = new Set(spans.map((s) => s.traceId));
    expect(traces).toEqual(new Set([traceId, wsTraceId]));
  });
});

describe('sampling', () => {
  it('keeps a share of root spans (here none) but always follows a sampled caller', async () => {
    receiver.clear();
    const gw = await startTestGateway({
      platforms: [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }],
      observability: { tracing: { otlpEndpoint: receiver.url, sampleRatio: 0 } },
    });
    const followed = hex(16);
    try {
      await gw.query('query NotSampled { platforms { id } }');
      const res = await fetch(gw.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', traceparent: `00-${followed}-${hex(8)}-01` },
        body: JSON.stringify({ query: 'query Sampled { platforms { id } }' }),
      });
      expect(res.status).toBe(200);
    } finally {
      await gw.close();
    }
    const names = receiver.spans().map((s) => s.name);
    expect(names).toContain('query Sampled');
    expect(names).not.toContain('query NotSampled');
    expect(new Set(receiver.spans().map((s) => s.traceId))).toEqual(new Set([followed]));
    expect(receiver.serviceNames()).toContain('virt-graph');
  });
});

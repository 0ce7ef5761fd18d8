import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

import type { PlatformStatus } from '../model/platform.js';

// The gateway's own metrics (GET /metrics), one set per process: Prometheus
// scrapes a process, and the hooks in the protocol clients have no gateway
// to ask. Every label value is bounded by the configuration or the code:
// platform IDs, method names, error codes, operation names through
// OperationNames; never a VM name, a query text or an ID from a request.

const STATUSES: readonly PlatformStatus[] = ['CONNECTING', 'CONNECTED', 'UNREACHABLE', 'AUTH_FAILED'];

/** Seconds; an operation or upstream call slower than 30 s is counted in +Inf. */
const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Seconds from an event's publication to its subscriber's turn; past a minute a subscriber is far behind. */
const LAG_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60];

/** What one gateway in the process reports at each scrape (several run in one test process). */
export interface GatewaySources {
  /** Every platform with its status, as `platforms { status }` shows it. */
  platforms(): readonly { id: string; status: PlatformStatus }[];
  /** This instance's own tasks waiting and running, by platform ID. */
  tasks(): ReadonlyMap<string, { queued: number; running: number }>;
  /** The WebSocket transport: open connections, running subscriptions, and payloads sent to subscribers so far. */
  transport(): { connections: number; subscriptions: number; delivered: number };
}

/** Upstream sessions open, per platform; counted even while metrics are off (opening one is rare, and a gauge must not start wrong). */
const sessions = new Map<string, number>();

export function sessionOpened(platformId: string): void {
  sessions.set(platformId, (sessions.get(platformId) ?? 0) + 1);
}

export function sessionClosed(platformId: string): void {
  sessions.set(platformId, Math.max(0, (sessions.get(platformId) ?? 0) - 1));
}

/** The registry and every metric of the gateway itself. */
export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly sources = new Set<GatewaySources>();
  /** Payloads delivered per source as last seen, so that the counter only ever adds. */
  private readonly deliveredSeen = new Map<GatewaySources, number>();

  readonly requests = new Counter({
    name: 'virtgraph_graphql_requests_total',
    help: 'GraphQL operations answered (subscriptions: ended), by operation name, type and outcome (ok, partial, error)',
    labelNames: ['operation', 'type', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly requestDuration = new Histogram({
    name: 'virtgraph_graphql_request_duration_seconds',
    help: 'Time to answer a query or mutation, from its arrival to its answer, by operation name and type',
    labelNames: ['operation', 'type'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly errors = new Counter({
    name: 'virtgraph_graphql_errors_total',
    help: 'GraphQL errors sent to clients, by extensions.code',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });
  readonly upstreamCalls = new Counter({
    name: 'virtgraph_upstream_calls_total',
    help: 'Calls to platforms (vSphere SOAP methods, libvirt calls), by platform, method and outcome (ok, error)',
    labelNames: ['platform', 'method', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly upstreamDuration = new Histogram({
    name: 'virtgraph_upstream_call_duration_seconds',
    help: 'Time a platform took to answer one call (a long poll waits by design), by platform and method',
    labelNames: ['platform', 'method'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly upstreamInFlight = new Gauge({
    name: 'virtgraph_upstream_calls_in_flight',
    help: 'Calls to a platform sent and not yet answered',
    labelNames: ['platform'] as const,
    registers: [this.registry],
  });
  readonly upstreamSessions = new Gauge({
    name: 'virtgraph_upstream_sessions',
    help: 'Sessions open to a platform (vSphere SOAP sessions, the watch one included; libvirt connections)',
    labelNames: ['platform'] as const,
    registers: [this.registry],
    collect() {
      for (const [platform, open] of sessions) this.set({ platform }, open);
    },
  });
  readonly eventsDropped = new Counter({
    name: 'virtgraph_subscription_events_dropped_total',
    help: 'Events discarded from the queue of a subscriber that fell too far behind (it is disconnected with 4008)',
    registers: [this.registry],
  });
  readonly eventLag = new Histogram({
    name: 'virtgraph_subscription_event_lag_seconds',
    help: 'Time from an event being published to a subscription taking it from its queue',
    buckets: LAG_BUCKETS,
    registers: [this.registry],
  });

  constructor() {
    // Closures over `this` class fields: prom-client calls collect() with the metric as `this`.
    const sources = this.sources;
    const deliveredSeen = this.deliveredSeen;
    new Gauge({
      name: 'virtgraph_platform_status',
      help: "1 for each platform's current status (CONNECTING, CONNECTED, UNREACHABLE, AUTH_FAILED), 0 for the others",
      labelNames: ['platform', 'status'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const source of sources) {
          for (const p of source.platforms()) {
            for (const status of STATUSES) this.set({ platform: p.id, status }, p.status === status ? 1 : 0);
          }
        }
      },
    });
    new Gauge({
      name: 'virtgraph_tasks_in_flight',
      help: "This instance's tasks by platform and state: QUEUED (waiting for a slot) or RUNNING",
      labelNames: ['platform', 'state'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const source of sources) {
          const tasks = source.tasks();
          for (const p of source.platforms()) {
            const counts = tasks.get(p.id);
            this.set({ platform: p.id, state: 'QUEUED' }, counts?.queued ?? 0);
            this.set({ platform: p.id, state: 'RUNNING' }, counts?.running ?? 0);
          }
        }
      },
    });
    new Gauge({
      name: 'virtgraph_websocket_connections',
      help: 'WebSocket connections open',
      registers: [this.registry],
      collect() {
        let open = 0;
        for (const source of sources) open += source.transport().connections;
        this.set(open);
      },
    });
    new Gauge({
      name: 'virtgraph_subscriptions_active',
      help: 'Subscriptions running over WebSocket',
      registers: [this.registry],
      collect() {
        let running = 0;
        for (const source of sources) running += source.transport().subscriptions;
        this.set(running);
      },
    });
    const catchUp = (counter: Counter, source: GatewaySources) => {
      const now = source.transport().delivered;
      counter.inc(Math.max(0, now - (deliveredSeen.get(source) ?? 0)));
      deliveredSeen.set(source, now);
    };
    this.delivered = new Counter({
      name: 'virtgraph_subscription_events_delivered_total',
      help: 'Subscription payloads sent to clients (one per event per subscriber)',
      registers: [this.registry],
      collect() {
        // Counted by the transport without a call per payload; added here as the difference since the last scrape.
        for (const source of sources) catchUp(this, source);
      },
    });
    this.catchUp = (source) => catchUp(this.delivered, source);
    collectDefaultMetrics({ register: this.registry });
  }

  private readonly delivered: Counter;
  private readonly catchUp: (source: GatewaySources) => void;

  /** Reports a gateway's platforms, tasks and transport at each scrape until `removeSource`. */
  addSource(source: GatewaySources): void {
    this.sources.add(source);
  }

  removeSource(source: GatewaySources): void {
    // What it delivered since the last scrape still counts.
    if (this.sources.has(source)) this.catchUp(source);
    this.sources.delete(source);
    this.deliveredSeen.delete(source);
  }

  /** The exposition in Prometheus text format. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

let instance: GatewayMetrics | null = null;
let users = 0;
let active: GatewayMetrics | null = null;

/** The process's metrics, on until every gateway that acquired them has released them. */
export function acquireMetrics(): GatewayMetrics {
  instance ??= new GatewayMetrics();
  users += 1;
  active = instance;
  return instance;
}

export function releaseMetrics(): void {
  users = Math.max(0, users - 1);
  if (users === 0) active = null;
}

/** The metrics to record into, or null while no gateway has them on (the hooks then do nothing). */
export function activeMetrics(): GatewayMetrics | null {
  return active;
}

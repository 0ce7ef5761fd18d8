import type {
  HostMetricsEventResolvers,
  HostResolvers,
  MetricSampleResolvers,
  MetricSeriesResolvers,
  SubscriptionResolvers,
  VirtualMachineResolvers,
  VmMetricsEventResolvers,
} from '../generated/graphql.js';
import type { MetricHistory } from '../metrics/metrics-service.js';
import { ErrorCode, GatewayError } from '../model/errors.js';
import { type NodeKind, decodeIdOf, encodeId } from '../model/ids.js';
import type { MetricEntityKind } from '../model/metrics.js';
import { type MetricDelivery, subscribeMetrics } from '../subscriptions/metric-subscription.js';
import type { GatewayContext } from './context.js';
import { findHost, findVm } from './lookups.js';
import { loadNode } from './node.js';
import type { MetricSeriesParent } from './parents.js';

const NODE_KIND: Record<MetricEntityKind, NodeKind> = { VM: 'VirtualMachine', HOST: 'Host' };

function toMs(value: unknown): number {
  const ms = value instanceof Date ? value.getTime() : Date.parse(String(value));
  if (Number.isNaN(ms))
    throw new GatewayError(ErrorCode.BAD_USER_INPUT, 'DateTime must be an ISO 8601 timestamp string.');
  return ms;
}

interface MetricsArgs {
  from?: unknown;
  to?: unknown;
  resolutionSeconds?: number | null;
  aggregate?: 'AVERAGE' | 'MAXIMUM' | null;
}

function seriesOf(
  kind: MetricEntityKind,
  o: { platformId: string; nativeId: string },
  args: MetricsArgs,
): MetricSeriesParent {
  const from = args.from == null ? null : toMs(args.from);
  if (from === null && (args.to != null || args.resolutionSeconds != null)) {
    throw new GatewayError(
      ErrorCode.BAD_USER_INPUT,
      '`to` and `resolutionSeconds` need `from`: the start of the range.',
    );
  }
  return {
    platformId: o.platformId,
    kind,
    nativeId: o.nativeId,
    from,
    to: args.to == null ? Date.now() : toMs(args.to),
    resolutionSeconds: args.resolutionSeconds ?? null,
    aggregate: args.aggregate ?? 'AVERAGE',
  };
}

// A series' fields share one history read.
const histories = new WeakMap<MetricSeriesParent, Promise<MetricHistory | null>>();
function historyOf(s: MetricSeriesParent, ctx: GatewayContext): Promise<MetricHistory | null> {
  let h = histories.get(s);
  if (!h) {
    h =
      s.from === null
        ? Promise.resolve(null)
        : ctx.metrics.history(
            s.platformId,
            s.kind,
            s.nativeId,
            { from: s.from, to: s.to },
            s.resolutionSeconds,
            s.aggregate,
          );
    histories.set(s, h);
  }
  return h;
}

export const vmMetricsField: Pick<VirtualMachineResolvers, 'metrics'> = {
  metrics: (vm, args) => seriesOf('VM', vm, args),
};

export const hostMetricsField: Pick<HostResolvers, 'metrics'> = {
  metrics: (host, args) => seriesOf('HOST', host, args),
};

export const MetricSeries: MetricSeriesResolvers = {
  latest: (s, _a, ctx) => ctx.metrics.latest(s.platformId, s.kind, s.nativeId),
  resolutionSeconds: async (s, _a, ctx) => (await historyOf(s, ctx))?.resolutionSeconds ?? null,
  aggregate: async (s, _a, ctx) => (await historyOf(s, ctx))?.aggregate ?? null,
  source: async (s, _a, ctx) => (await historyOf(s, ctx))?.source ?? null,
  points: async (s, _a, ctx) => (await historyOf(s, ctx))?.points ?? [],
};

export const MetricSample: MetricSampleResolvers = {
  timestamp: (s) => new Date(s.timestamp),
  memoryUsedBytes: (s) => (s.memoryUsedBytes === null ? null : Math.round(s.memoryUsedBytes)),
  raw: (s) => Object.entries(s.raw).map(([name, value]) => ({ name, value })),
};

/**
 * The objects a metrics subscription names, by platform; refused as a
 * whole when one is malformed, unknown or on a platform without metrics.
 */
async function targetsOf(ctx: GatewayContext, kind: MetricEntityKind, ids: readonly string[], intervalSeconds: number) {
  const max = ctx.metricsLimits.maxObjectsPerSubscription;
  if (ids.length === 0 || ids.length > max) {
    throw new GatewayError(ErrorCode.BAD_USER_INPUT, `Give 1 to ${max} IDs; ${ids.length} were given.`, { max });
  }
  const refs = ids.map((id) => decodeIdOf(id, NODE_KIND[kind]));
  const found = await Promise.all(refs.map((r) => loadNode(ctx, r)));
  const unknown = ids.filter((_, i) => !found[i]);
  if (unknown.length > 0) {
    throw new GatewayError(
      ErrorCode.BAD_USER_INPUT,
      `No ${kind === 'VM' ? 'VM' : 'host'} has the ID ${unknown.join(', ')}.`,
      {
        unknownIds: unknown,
      },
    );
  }
  const byPlatform = new Map<string, string[]>();
  for (const r of refs) {
    const list = byPlatform.get(r.platformId) ?? [];
    if (!list.includes(r.nativeId)) list.push(r.nativeId);
    byPlatform.set(r.platformId, list);
  }
  for (const platformId of byPlatform.keys()) ctx.metrics.checkInterval(platformId, intervalSeconds);
  return byPlatform;
}

function metricsSubscription(kind: MetricEntityKind) {
  return async (
    _r: unknown,
    args: { ids: readonly string[]; intervalSeconds?: number | null },
    ctx: GatewayContext,
  ) => {
    const interval = args.intervalSeconds ?? 20;
    const byPlatform = await targetsOf(ctx, kind, args.ids, interval);
    return subscribeMetrics(ctx.metrics, kind, byPlatform, interval, {
      maxQueue: ctx.subscriptionLimits.maxQueuedEvents,
      onOverflow: (error) => ctx.connection?.close(4008, error.message),
    });
  };
}

// Each sample is resolved with fresh reads, as a request of its own.
const fresh = (d: MetricDelivery, _a: unknown, ctx: GatewayContext) => {
  ctx.freshReads();
  return d;
};

export const metricSubscriptions: Pick<SubscriptionResolvers, 'vmMetrics' | 'hostMetrics'> = {
  vmMetrics: { subscribe: metricsSubscription('VM'), resolve: fresh },
  hostMetrics: { subscribe: metricsSubscription('HOST'), resolve: fresh },
};

const idOf = (d: MetricDelivery) =>
  encodeId({ kind: NODE_KIND[d.update.kind], platformId: d.update.platformId, nativeId: d.update.nativeId });

export const VmMetricsEvent: VmMetricsEventResolvers = {
  vmId: idOf,
  vm: (d, _a, ctx) => findVm(ctx, d.update.platformId, d.update.nativeId),
  sample: (d) => d.update.sample,
};

export const HostMetricsEvent: HostMetricsEventResolvers = {
  hostId: idOf,
  host: (d, _a, ctx) => findHost(ctx, d.update.platformId, d.update.nativeId),
  sample: (d) => d.update.sample,
};

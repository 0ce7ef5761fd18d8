import type {
  InventoryChangedEventResolvers,
  InventoryObjectKind,
  PlatformStatusChangedEventResolvers,
  SubscriptionResolvers,
  TaskUpdatedEventResolvers,
  VmChangedEventResolvers,
} from '../generated/graphql.js';
import type { GatewayEvent, InventoryEvent, InventoryEventKind } from '../model/events.js';
import { type NodeKind, decodeIdOf, encodeId } from '../model/ids.js';
import type { Delivery } from '../subscriptions/event-log.js';
import { eventVisibility } from '../subscriptions/visibility.js';
import {
  inventoryChangeFilter,
  platformStatusFilter,
  taskUpdateFilter,
  vmChangeFilter,
} from '../subscriptions/filters.js';
import type { GatewayContext } from './context.js';
import { loadNode } from './node.js';
import { platformsInScope } from './scope.js';

const KIND_NAMES: Record<InventoryEventKind, InventoryObjectKind> = {
  Datacenter: 'DATACENTER',
  Cluster: 'CLUSTER',
  Host: 'HOST',
  VirtualMachine: 'VIRTUAL_MACHINE',
  Network: 'NETWORK',
  Storage: 'STORAGE',
  StorageVolume: 'STORAGE_VOLUME',
  Snapshot: 'SNAPSHOT',
  VmPool: 'VM_POOL',
  VmMigration: 'VM_MIGRATION',
};
const KINDS_BY_NAME = new Map(Object.entries(KIND_NAMES).map(([k, v]) => [v, k as InventoryEventKind]));

function event<E extends GatewayEvent['type']>(d: Delivery, type: E): Extract<GatewayEvent, { type: E }> | null {
  return d.type === 'EVENT' && d.envelope.event.type === type
    ? (d.envelope.event as Extract<GatewayEvent, { type: E }>)
    : null;
}

const inventoryEvent = (d: Delivery): InventoryEvent | null => event(d, 'INVENTORY');

const common = {
  cursor: (d: Delivery) => (d.type === 'EVENT' ? d.envelope.cursor : d.cursor),
  at: (d: Delivery) => (d.type === 'EVENT' ? d.envelope.at : d.at),
};

/** The global ID kind of an inventory object (storage: its own kind, pool or datastore). */
function nodeKindOf(ctx: GatewayContext, e: InventoryEvent): NodeKind {
  if (e.kind !== 'Storage') return e.kind;
  return ctx.inventory.mirror(e.platformId)?.storage(e.nativeId)?.storageKind ?? 'StoragePool';
}

/**
 * A subscription's deliveries. Each event is resolved with fresh reads of
 * the live inventory (a subscription's context lives as long as it does).
 */
function deliveries(ctx: GatewayContext, filter: (e: GatewayEvent) => boolean, after: string | null | undefined) {
  const visible = eventVisibility(ctx.access, ctx.inventory, (id) => ctx.tasks.get(id));
  return ctx.events.subscribe({
    filter: visible ? (e) => filter(e) && visible(e) : filter,
    after,
    maxQueue: ctx.subscriptionLimits.maxQueuedEvents,
    onOverflow: (error) => ctx.connection?.close(4008, error.message),
  });
}

const fresh = (d: Delivery, _a: unknown, ctx: GatewayContext) => {
  ctx.freshReads();
  return d;
};

const refsOf = (ids: readonly string[] | null | undefined, ...kinds: NodeKind[]) =>
  ids?.map((id) => decodeIdOf(id, ...kinds));

export const subscriptionResolvers: SubscriptionResolvers = {
  vmChanged: {
    subscribe: (_r, { filter, after }, ctx) =>
      deliveries(
        ctx,
        vmChangeFilter({
          platformIds: filter?.platformIds ? platformsInScope(ctx, filter.platformIds) : null,
          vms: refsOf(filter?.vmIds, 'VirtualMachine'),
          aspects: filter?.aspects,
          powerStates: filter?.powerStates,
        }),
        after,
      ),
    resolve: fresh,
  },
  inventoryChanged: {
    subscribe: (_r, { filter, after }, ctx) =>
      deliveries(
        ctx,
        inventoryChangeFilter({
          platformIds: filter?.platformIds ? platformsInScope(ctx, filter.platformIds) : null,
          objects: refsOf(
            filter?.ids,
            'VirtualMachine',
            'Host',
            'Cluster',
            'Datacenter',
            'Network',
            'StoragePool',
            'Datastore',
            'Snapshot',
            'StorageVolume',
          ),
          kinds: filter?.kinds?.map((k) => KINDS_BY_NAME.get(k) as InventoryEventKind),
          changes: filter?.types?.filter((t) => t !== 'RESYNC_REQUIRED'),
        }),
        after,
      ),
    resolve: fresh,
  },
  taskUpdated: {
    subscribe: (_r, { filter, after }, ctx) =>
      deliveries(
        ctx,
        taskUpdateFilter(
          {
            platformIds: filter?.platformIds ? platformsInScope(ctx, filter.platformIds) : null,
            taskIds: refsOf(filter?.taskIds, 'Task')?.map((r) => r.nativeId),
            targets: refsOf(filter?.targetIds, 'VirtualMachine'),
            states: filter?.states,
            includeUpstream: filter?.includeUpstream,
          },
          (id) => ctx.tasks.get(id),
        ),
        after,
      ),
    resolve: fresh,
  },
  platformStatusChanged: {
    subscribe: (_r, { platformIds, after }, ctx) =>
      deliveries(ctx, platformStatusFilter(platformIds ? platformsInScope(ctx, platformIds) : null), after),
    resolve: fresh,
  },
};

export const VmChangedEvent: VmChangedEventResolvers = {
  ...common,
  type: (d) => inventoryEvent(d)?.change ?? 'RESYNC_REQUIRED',
  vmId: (d) => {
    const e = inventoryEvent(d);
    return e ? encodeId({ kind: 'VirtualMachine', platformId: e.platformId, nativeId: e.nativeId }) : null;
  },
  vm: (d, _a, ctx) => {
    const e = inventoryEvent(d);
    return e ? (ctx.inventory.mirror(e.platformId)?.vm(e.nativeId)?.vm ?? null) : null;
  },
  changes: (d) => inventoryEvent(d)?.aspects ?? [],
  previousPowerState: (d) => inventoryEvent(d)?.previousPowerState ?? null,
  powerState: (d) => inventoryEvent(d)?.powerState ?? null,
};

export const InventoryChangedEvent: InventoryChangedEventResolvers = {
  ...common,
  type: (d) => inventoryEvent(d)?.change ?? 'RESYNC_REQUIRED',
  kind: (d) => {
    const e = inventoryEvent(d);
    return e ? KIND_NAMES[e.kind] : null;
  },
  nodeId: (d, _a, ctx) => {
    const e = inventoryEvent(d);
    return e ? encodeId({ kind: nodeKindOf(ctx, e), platformId: e.platformId, nativeId: e.nativeId }) : null;
  },
  node: (d, _a, ctx) => {
    const e = inventoryEvent(d);
    if (!e || e.change === 'REMOVED') return null;
    return loadNode(ctx, { kind: nodeKindOf(ctx, e), platformId: e.platformId, nativeId: e.nativeId });
  },
  platform: (d, _a, ctx) => {
    const e = inventoryEvent(d);
    return e ? (ctx.registry.record(e.platformId) ?? null) : null;
  },
};

export const TaskUpdatedEvent: TaskUpdatedEventResolvers = {
  ...common,
  type: (d) => (d.type === 'EVENT' ? 'MODIFIED' : 'RESYNC_REQUIRED'),
  task: (d, _a, ctx) => {
    const e = event(d, 'TASK');
    return e && !e.upstream ? (ctx.tasks.get(e.taskId) ?? null) : null;
  },
  upstreamTask: (d, _a, ctx) => {
    const e = event(d, 'TASK');
    return e?.upstream ? (ctx.inventory.mirror(e.platformId)?.upstreamTask(e.taskId) ?? null) : null;
  },
};

export const PlatformStatusChangedEvent: PlatformStatusChangedEventResolvers = {
  ...common,
  type: (d) => (d.type === 'EVENT' ? 'MODIFIED' : 'RESYNC_REQUIRED'),
  platform: (d, _a, ctx) => {
    const e = event(d, 'PLATFORM_STATUS');
    return e ? (ctx.registry.record(e.platformId) ?? null) : null;
  },
};

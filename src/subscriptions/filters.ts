import type { GatewayEvent, InventoryEventKind, VmChangeAspect } from '../model/events.js';
import type { PowerState } from '../model/vm.js';
import type { TaskState } from '../model/upstream-task.js';

// Which events a subscription receives, over neutral events: the GraphQL
// layer decodes the client's filter (global IDs) into these. Every given
// condition must hold; an absent one holds for all.

const within = <T>(set: ReadonlySet<T> | null, value: T) => set === null || set.has(value);
const setOf = <T>(values: readonly T[] | null | undefined): ReadonlySet<T> | null => (values ? new Set(values) : null);
const refKey = (platformId: string, nativeId: string) => `${platformId}\u0000${nativeId}`;

export interface ObjectRef {
  platformId: string;
  nativeId: string;
}

export function vmChangeFilter(f: {
  platformIds?: readonly string[] | null;
  vms?: readonly ObjectRef[] | null;
  aspects?: readonly VmChangeAspect[] | null;
  powerStates?: readonly PowerState[] | null;
}): (e: GatewayEvent) => boolean {
  const platforms = setOf(f.platformIds);
  const vms = setOf(f.vms?.map((r) => refKey(r.platformId, r.nativeId)));
  const aspects = setOf(f.aspects);
  const states = setOf(f.powerStates);
  return (e) =>
    e.type === 'INVENTORY' &&
    e.kind === 'VirtualMachine' &&
    within(platforms, e.platformId) &&
    (vms === null || vms.has(refKey(e.platformId, e.nativeId))) &&
    (aspects === null || e.aspects.some((a) => aspects.has(a))) &&
    (states === null || states.has((e.powerState ?? e.previousPowerState) as PowerState));
}

export function inventoryChangeFilter(f: {
  platformIds?: readonly string[] | null;
  objects?: readonly ObjectRef[] | null;
  kinds?: readonly InventoryEventKind[] | null;
  changes?: readonly string[] | null;
}): (e: GatewayEvent) => boolean {
  const platforms = setOf(f.platformIds);
  const objects = setOf(f.objects?.map((r) => refKey(r.platformId, r.nativeId)));
  const kinds = setOf(f.kinds);
  const changes = setOf(f.changes);
  // A snapshot or volume counts as part of its VM or pool (`parent/child`).
  const parentOf = (nativeId: string) => nativeId.slice(0, Math.max(0, nativeId.indexOf('/')));
  return (e) =>
    e.type === 'INVENTORY' &&
    within(platforms, e.platformId) &&
    within(kinds, e.kind) &&
    within(changes, e.change) &&
    (objects === null ||
      objects.has(refKey(e.platformId, e.nativeId)) ||
      objects.has(refKey(e.platformId, parentOf(e.nativeId))));
}

export function taskUpdateFilter(
  f: {
    platformIds?: readonly string[] | null;
    taskIds?: readonly string[] | null;
    targets?: readonly ObjectRef[] | null;
    states?: readonly TaskState[] | null;
    includeUpstream?: boolean | null;
  },
  task: (id: string) => { targetNativeId: string; state: TaskState } | undefined,
): (e: GatewayEvent) => boolean {
  const platforms = setOf(f.platformIds);
  const ids = setOf(f.taskIds);
  const targets = setOf(f.targets?.map((r) => refKey(r.platformId, r.nativeId)));
  const states = setOf(f.states);
  const upstream = f.includeUpstream !== false && ids === null;
  return (e) => {
    if (e.type !== 'TASK' || !within(platforms, e.platformId)) return false;
    if (e.upstream) {
      const target = e.upstream.targetVmNativeId;
      return (
        upstream &&
        (targets === null || (target !== null && targets.has(refKey(e.platformId, target)))) &&
        within(states, e.upstream.state)
      );
    }
    if (!within(ids, e.taskId)) return false;
    if (targets === null && states === null) return true;
    const t = task(e.taskId);
    return !!t && within(targets, refKey(e.platformId, t.targetNativeId)) && within(states, t.state);
  };
}

export function platformStatusFilter(platformIds: readonly string[] | null | undefined): (e: GatewayEvent) => boolean {
  const platforms = setOf(platformIds);
  return (e) => e.type === 'PLATFORM_STATUS' && within(platforms, e.platformId);
}

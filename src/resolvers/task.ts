import type {
  BatchPayloadResolvers,
  QueryResolvers,
  TaskResolvers,
  UpstreamTaskResolvers,
} from '../generated/graphql.js';
import { decodeIdOf, encodeId } from '../model/ids.js';
import type { TaskRecord } from '../mutations/task-manager.js';
import type { Awaitable } from './awaitable.js';
import { findVm, snapshotsOf } from './lookups.js';
import { paginate } from './pagination.js';
import { platformOf, platformsInScope, visibleTask, visibleTasks } from './scope.js';

export const taskId = (t: TaskRecord) => encodeId({ kind: 'Task', platformId: t.platformId, nativeId: t.id });

export const Task: TaskResolvers = {
  id: (t) => taskId(t),
  platform: (t, _a, ctx) => platformOf(ctx, t.platformId),
  queuePosition: (t, _a, ctx) => ctx.tasks.queuePosition(t),
  target: (t, _a, ctx) => unlessDown(() => findVm(ctx, t.platformId, t.targetNativeId), null),
  resultVm: (t, _a, ctx) =>
    t.resultVmNativeId
      ? unlessDown(() => findVm(ctx, t.resultVmPlatformId ?? t.platformId, t.resultVmNativeId as string), null)
      : null,
  resultSnapshot: async (t, _a, ctx) => {
    if (!t.resultSnapshotKey) return null;
    const snaps = await unlessDown(
      () => snapshotsOf(ctx, { platformId: t.platformId, nativeId: t.targetNativeId }),
      [],
    );
    return snaps.find((s) => s.key === t.resultSnapshotKey) ?? null;
  },
};

export const UpstreamTask: UpstreamTaskResolvers = {
  upstreamTaskId: (t) => t.nativeId,
  platform: (t, _a, ctx) => platformOf(ctx, t.platformId),
  target: (t, _a, ctx) =>
    t.targetVmNativeId ? unlessDown(() => findVm(ctx, t.platformId, t.targetVmNativeId as string), null) : null,
  gatewayTask: (t, _a, ctx) => ctx.tasks.byUpstreamTask(t.platformId, t.nativeId) ?? null,
};

/** A read about a task's objects; the task still answers when their platform is down. */
async function unlessDown<T>(read: () => Awaitable<T>, fallback: T): Promise<T> {
  try {
    return await read();
  } catch {
    return fallback;
  }
}

/** Counts by state; a batch is RUNNING until every task has finished. */
export function aggregate(tasks: readonly TaskRecord[]) {
  const count = (s: TaskRecord['state']) => tasks.filter((t) => t.state === s).length;
  const counts = {
    total: tasks.length,
    queued: count('QUEUED'),
    running: count('RUNNING'),
    succeeded: count('SUCCEEDED'),
    failed: count('FAILED'),
    cancelled: count('CANCELLED'),
  };
  const state: TaskRecord['state'] =
    counts.queued + counts.running > 0 ? 'RUNNING' : counts.succeeded === counts.total ? 'SUCCEEDED' : 'FAILED';
  return { ...counts, state };
}

export const BatchPayload: BatchPayloadResolvers = {
  aggregate: (p) => aggregate(p.tasks),
};

export const taskQueries: Pick<QueryResolvers, 'task' | 'tasks' | 'taskAggregate'> = {
  taskAggregate: async (_root, { ids }, ctx) =>
    aggregate(
      await visibleTasks(
        ctx,
        ids.flatMap((id) => {
          const t = ctx.tasks.get(decodeIdOf(id, 'Task').nativeId);
          return t ? [t] : [];
        }),
      ),
    ),
  task: (_root, { id }, ctx) => visibleTask(ctx, ctx.tasks.get(decodeIdOf(id, 'Task').nativeId)),
  tasks: async (_root, args, ctx) => {
    const filter = args.filter ?? {};
    const platforms = new Set(platformsInScope(ctx, filter.platformIds));
    const states = filter.states ? new Set(filter.states) : null;
    const targets = filter.targetIds
      ? new Set(
          filter.targetIds.map((id) => {
            const r = decodeIdOf(id, 'VirtualMachine');
            return `${r.platformId}\u0000${r.nativeId}`;
          }),
        )
      : null;
    const tasks = (await visibleTasks(ctx, ctx.tasks.list()))
      .filter((t) => platforms.has(t.platformId))
      .filter((t) => !states || states.has(t.state))
      .filter((t) => !targets || targets.has(`${t.platformId}\u0000${t.targetNativeId}`));
    return paginate(
      tasks,
      args,
      {
        name: 'task:CREATED',
        direction: args.orderBy?.direction ?? 'DESC',
        value: (t) => t.createdAt.getTime(),
        id: taskId,
      },
      ctx.limits,
    );
  },
};

import type {
  MutationResolvers,
  QueryResolvers,
  VmMigrationResolvers,
  VmOperationPayloadResolvers,
} from '../generated/graphql.js';
import { decodeIdOf, encodeId } from '../model/ids.js';
import type { MigrationRecord } from '../model/migration.js';
import type { TaskRecord } from '../mutations/task-manager.js';
import type { Awaitable } from './awaitable.js';
import type { GatewayContext } from './context.js';
import { findHost, findVm } from './lookups.js';
import { paginate } from './pagination.js';
import { visibleTask, visibleTasks } from './scope.js';

export const migrationId = (m: MigrationRecord): string =>
  encodeId({ kind: 'VmMigration', platformId: m.platformId, nativeId: m.id });

/** Of some migrations, those the caller may see: a migration is as visible as its task, which is as its VM. */
export async function visibleMigrations(
  ctx: GatewayContext,
  migrations: readonly MigrationRecord[],
): Promise<MigrationRecord[]> {
  const withTasks = migrations.flatMap((m): [MigrationRecord, TaskRecord][] => {
    const task = ctx.tasks.get(m.id);
    return task ? [[m, task]] : [];
  });
  const seen = new Set(
    (
      await visibleTasks(
        ctx,
        withTasks.map(([, t]) => t),
      )
    ).map((t) => t.id),
  );
  return withTasks.flatMap(([m]) => (seen.has(m.id) ? [m] : []));
}

/** A migration by its native ID (its task's), when the caller may see it. */
export async function visibleMigration(ctx: GatewayContext, id: string): Promise<MigrationRecord | null> {
  const migration = ctx.migrations.get(id);
  return migration ? ((await visibleMigrations(ctx, [migration]))[0] ?? null) : null;
}

/** A read about a migration's objects; the migration still answers when their platform is down. */
async function unlessDown<T>(read: () => Awaitable<T | null>): Promise<T | null> {
  try {
    return await read();
  } catch {
    return null;
  }
}

export const VmMigration: VmMigrationResolvers = {
  id: (m) => migrationId(m),
  vm: async (m, _a, ctx) => {
    const source = () => unlessDown(() => findVm(ctx, m.platformId, m.vmNativeId));
    const target = () => unlessDown(() => findVm(ctx, m.targetPlatformId, m.vmNativeId));
    // Where it should be first; the other side while the live inventory has not caught up yet.
    return m.phase === 'SUCCEEDED' ? ((await target()) ?? source()) : ((await source()) ?? target());
  },
  sourceHost: (m, _a, ctx) => {
    const host = m.sourceHostNativeId;
    return host === null ? null : unlessDown(() => findHost(ctx, m.platformId, host));
  },
  targetHost: (m, _a, ctx) => unlessDown(() => findHost(ctx, m.targetPlatformId, m.targetHostNativeId)),
  bytesTransferred: (m) => m.bytesProcessed,
  bandwidthLimitMiBps: (m) => m.limits.bandwidthMiBps,
  completionTimeoutSeconds: (m) => m.limits.completionTimeoutSeconds,
  progressTimeoutSeconds: (m) => m.limits.progressTimeoutSeconds,
  error: (m) => m.error?.message ?? null,
  task: (m, _a, ctx) => visibleTask(ctx, ctx.tasks.get(m.id)),
};

/** `migration` on every VM mutation's payload: the one its task runs, for a migrateVm. */
export const migrationPayloadField: Pick<VmOperationPayloadResolvers, 'migration'> = {
  migration: (p, _a, ctx) => (p.task?.operation === 'MIGRATE_VM' ? (ctx.migrations.get(p.task.id) ?? null) : null),
};

export const migrationQueries: Pick<QueryResolvers, 'vmMigrations'> = {
  vmMigrations: async (_root, args, ctx) => {
    let migrations = ctx.migrations.list();
    if (args.vmId) {
      // A libvirt VM that moved has the same UUID on the platform it moved to, so either ID finds it.
      const vm = decodeIdOf(args.vmId, 'VirtualMachine');
      migrations = migrations.filter(
        (m) => m.vmNativeId === vm.nativeId && (m.platformId === vm.platformId || m.targetPlatformId === vm.platformId),
      );
    }
    return paginate(
      await visibleMigrations(ctx, migrations),
      { first: args.first, after: args.after },
      { name: 'migration:CREATED', direction: 'DESC', value: (m) => m.createdAt.getTime(), id: migrationId },
      ctx.limits,
    );
  },
};

export const migrationMutations: Pick<MutationResolvers, 'cancelMigration'> = {
  cancelMigration: (_r, { input }, ctx) => ctx.migrations.cancel(ctx, input),
};

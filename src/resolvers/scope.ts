import type DataLoader from 'dataloader';

import { GraphQLError } from 'graphql';

import { UNFILED } from '../access/policy.js';
import { ErrorCode, GatewayError } from '../model/errors.js';
import { decodeIdOf } from '../model/ids.js';
import { type Direction, type Page, type PageArgs, paginate } from './pagination.js';
import type { PlatformRecord } from '../model/platform.js';
import type { TaskRecord } from '../mutations/task-manager.js';
import type { GatewayContext } from './context.js';

/**
 * The platform IDs a list query covers: all configured platforms, or the ones
 * named by `platformIds` (Platform global IDs), each of which must exist.
 */
export function platformsInScope(ctx: GatewayContext, platformIds: readonly string[] | null | undefined): string[] {
  if (!platformIds) return ctx.registry.providers.map((p) => p.id).filter((id) => ctx.access.seesPlatform(id));
  return platformIds.map((gid) => {
    const ref = decodeIdOf(gid, 'Platform');
    // A platform the caller has no role on is one that does not exist, for it.
    if (!ctx.registry.get(ref.platformId) || !ctx.access.seesPlatform(ref.platformId)) {
      throw new GatewayError(ErrorCode.UNKNOWN_PLATFORM, `No platform "${ref.platformId}" is configured.`, {
        platformId: ref.platformId,
      });
    }
    return ref.platformId;
  });
}

/** Of some tasks, those the caller may see: a task is as visible as the VM it acts on (or makes). */
export async function visibleTasks(ctx: GatewayContext, tasks: readonly TaskRecord[]): Promise<TaskRecord[]> {
  if (!ctx.loaders.access) return [...tasks];
  const seen = await Promise.all(
    tasks.map(async (t) =>
      ctx.access.seesVm(
        await ctx.loaders.placementOf(
          { platformId: t.platformId, name: t.targetName, hostNativeId: t.hostNativeId },
          t.targetFiling ?? UNFILED,
        ),
      ),
    ),
  );
  return tasks.filter((_, i) => seen[i]);
}

/** A task, when the caller may see it. */
export async function visibleTask(ctx: GatewayContext, task: TaskRecord | undefined): Promise<TaskRecord | null> {
  return task ? ((await visibleTasks(ctx, [task]))[0] ?? null) : null;
}

/** Refuses a caller that may not read the audit log. */
export function assertReadsAudit(ctx: GatewayContext): void {
  if (!ctx.access.readsAudit) {
    throw new GatewayError(ErrorCode.FORBIDDEN, 'Reading the audit log needs the auditor or admin role.');
  }
}

/**
 * Records that a platform could not answer, once per platform and request.
 * The entry keeps its cause's code (PLATFORM_UNAVAILABLE, UPSTREAM_ERROR, ...)
 * and names the platform in `extensions.platformId`.
 */
export function reportUnavailable(ctx: GatewayContext, platformId: string, error: unknown): void {
  const already = ctx.partialErrors.some((e) => e.extensions['platformId'] === platformId);
  if (already) return;
  ctx.logger.warn({ platform: platformId, err: error }, 'platform left out of a response');
  const cause = error instanceof Error ? error : new Error(String(error));
  ctx.partialErrors.push(new GraphQLError(cause.message, { originalError: cause, extensions: { platformId } }));
}

/**
 * Loads a per-platform listing for each platform in scope and concatenates
 * them. A platform that fails is left out and reported as a partial error;
 * the others still answer.
 */
export async function loadFromPlatforms<T>(
  ctx: GatewayContext,
  loader: DataLoader<string, readonly T[]>,
  platformIds: readonly string[],
): Promise<readonly T[]> {
  const results = await Promise.all(
    platformIds.map(async (id) => {
      try {
        return await loader.load(id);
      } catch (e) {
        reportUnavailable(ctx, id, e);
        return [];
      }
    }),
  );
  // One platform's listing is passed on as it is: the live inventory keeps it
  // until something changes, so its sorted order can be kept too (paginate).
  return results.length === 1 ? (results[0] as readonly T[]) : results.flat();
}

/** The record of a platform that an object belongs to (always configured). */
export function platformOf(ctx: GatewayContext, platformId: string): PlatformRecord {
  const record = ctx.registry.record(platformId);
  if (!record) throw new Error(`object refers to unconfigured platform "${platformId}"`);
  return record;
}

/**
 * One page of a per-platform listing, filtered by platform and name
 * substring and ordered by name: what the hosts, networks and storage
 * connections have in common.
 */
export async function pageByName<T extends { name: string }>(
  ctx: GatewayContext,
  loader: DataLoader<string, readonly T[]>,
  args: PageArgs & {
    filter?: { platformIds?: readonly string[] | null; nameContains?: string | null } | null;
    orderBy?: { direction?: Direction | null } | null;
  },
  ordering: { name: string; id: (item: T) => string },
): Promise<Page<T>> {
  const filter = args.filter ?? {};
  let items = await loadFromPlatforms(ctx, loader, platformsInScope(ctx, filter.platformIds));
  if (filter.nameContains) {
    const needle = filter.nameContains.toLowerCase();
    items = items.filter((i) => i.name.toLowerCase().includes(needle));
  }
  return pageNamed(ctx, items, args, ordering, args.orderBy?.direction ?? 'ASC');
}

/** One page of some named objects (a relation's), ordered by name; cursors as the root connection of their kind makes them. */
export function pageNamed<T extends { name: string }>(
  ctx: GatewayContext,
  items: readonly T[],
  args: PageArgs,
  ordering: { name: string; id: (item: T) => string },
  direction: Direction = 'ASC',
): Page<T> {
  return paginate(items, args, { ...ordering, direction, value: (i) => i.name }, ctx.limits);
}

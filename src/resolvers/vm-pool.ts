import type { MutationResolvers, QueryResolvers, VmPoolResolvers } from '../generated/graphql.js';
import type { DeclarationRecord, DeclaredPool } from '../model/declaration.js';
import { declarationVisible } from './declarative.js';
import { decodeIdOf, encodeId } from '../model/ids.js';
import type { VmRecord } from '../model/vm.js';
import type { GatewayContext } from './context.js';
import { findVm } from './lookups.js';
import { paginate } from './pagination.js';
import { platformOf, platformsInScope } from './scope.js';

const poolId = (p: DeclaredPool) => encodeId({ kind: 'VmPool', platformId: p.platformId, nativeId: p.name });

/** The VMs of some declarations that exist and the caller may see, in order. */
async function vmsOf(ctx: GatewayContext, ids: readonly (string | null)[], platformId: string): Promise<VmRecord[]> {
  const vms = await Promise.all(ids.map((id) => (id ? findVm(ctx, platformId, id) : null)));
  return vms.filter((vm): vm is VmRecord => vm !== null);
}

/** Of some declarations, those the caller may see, in order. */
async function visibleOnes(ctx: GatewayContext, ds: readonly DeclarationRecord[]): Promise<DeclarationRecord[]> {
  const seen = await Promise.all(ds.map((d) => declarationVisible(ctx, d)));
  return ds.filter((_d, i) => seen[i]);
}

export const VmPool: VmPoolResolvers = {
  id: poolId,
  platform: (p, _a, ctx) => platformOf(ctx, p.platformId),
  source: (p, _a, ctx) => findVm(ctx, p.platformId, p.sourceNativeId),
  readyReplicas: async (p, _a, ctx) => (await ctx.declarations.pools.status(p)).readyReplicas,
  readyStandbys: async (p, _a, ctx) => (await ctx.declarations.pools.status(p)).readyStandbys,
  status: (p, _a, ctx) => ctx.declarations.pools.status(p),
  members: async (p, _a, ctx) => visibleOnes(ctx, (await ctx.declarations.pools.members(p)).replicas),
  standbys: async (p, _a, ctx) => visibleOnes(ctx, (await ctx.declarations.pools.members(p)).standbys),
  vms: async (p, _a, ctx) =>
    vmsOf(
      ctx,
      (await ctx.declarations.pools.members(p)).replicas.map((d) => d.state.nativeId),
      p.platformId,
    ),
};

export const vmPoolQueries: Pick<QueryResolvers, 'vmPools' | 'vmPool'> = {
  vmPools: async (_r, args, ctx) => {
    const platforms = new Set(platformsInScope(ctx, args.platformId ? [args.platformId] : null));
    const listed = (await ctx.declarations.pools.list()).filter((p) => platforms.has(p.platformId));
    const seen = await Promise.all(listed.map((p) => ctx.declarations.pools.visible(ctx, p)));
    const pools = listed.filter((_p, i) => seen[i]);
    return paginate(
      pools,
      args,
      { name: 'pool-name', direction: 'ASC', value: (p) => `${p.platformId}/${p.name}`, id: poolId },
      ctx.limits,
    );
  },
  vmPool: async (_r, { id }, ctx) => {
    const ref = decodeIdOf(id, 'VmPool');
    if (!ctx.access.seesPlatform(ref.platformId)) return null;
    const pool = await ctx.declarations.pools.get(ref.platformId, ref.nativeId);
    return pool && (await ctx.declarations.pools.visible(ctx, pool)) ? pool : null;
  },
};

export const vmPoolMutations: Pick<MutationResolvers, 'applyVmPool' | 'scaleVmPool' | 'deleteVmPool'> = {
  applyVmPool: (_r, { input }, ctx) =>
    ctx.declarations.pools.apply(ctx, {
      platformId: input.platformId,
      name: input.name,
      replicas: input.replicas,
      sourceId: input.sourceId,
      spec: {
        vcpus: input.spec?.vcpus ?? null,
        memoryMiB: input.spec?.memoryMiB ?? null,
        runStrategy: input.spec?.runStrategy ?? 'ALWAYS',
      },
      namePattern: input.namePattern ?? null,
      warmStandbys: input.warmStandbys ?? 0,
      cloneMode: input.cloneMode ?? 'LINKED',
      resourceVersion: input.resourceVersion,
      clientMutationId: input.clientMutationId,
    }),
  scaleVmPool: (_r, { input }, ctx) => ctx.declarations.pools.scale(ctx, input),
  deleteVmPool: (_r, { input }, ctx) => ctx.declarations.pools.delete(ctx, input),
};

import type {
  MutationResolvers,
  QueryResolvers,
  VirtualMachineResolvers,
  VmDeclarationResolvers,
  VmSpecInput,
  VmSpecResolvers,
} from '../generated/graphql.js';
import type { DeclarationRecord, DeclaredSpec } from '../model/declaration.js';
import { type NodeKind, encodeId } from '../model/ids.js';
import type { GatewayContext } from './context.js';
import { findVm } from './lookups.js';
import { paginate } from './pagination.js';
import { checkShape } from './mutation.js';
import { nativeIdOn, placementOn, tagsOf } from './placement.js';
import { platformOf, platformsInScope } from './scope.js';

/** A spec as applied, checked as createVm checks its input. */
function declaredSpec(platformId: string, input: VmSpecInput): DeclaredSpec {
  checkShape({ ...input, disks: input.disks }, 'disks');
  return {
    vcpus: input.vcpus ?? 1,
    coresPerSocket: input.coresPerSocket ?? null,
    memoryMiB: input.memoryMiB,
    guestOs: input.guestOs ?? null,
    disks: (input.disks ?? []).map((d) => ({
      capacityBytes: d.capacityBytes,
      storageNativeId: d.storageId
        ? nativeIdOn(platformId, d.storageId, ['spec', 'disks'], 'Datastore', 'StoragePool')
        : null,
    })),
    nics: (input.nics ?? []).map((n) => ({
      networkNativeId: nativeIdOn(platformId, n.networkId, ['spec', 'nics'], 'Network'),
    })),
    placement: placementOn(platformId, input.placement),
    tags: tagsOf(input.tags) ?? [],
    runStrategy: input.runStrategy ?? 'ALWAYS',
  };
}

/** The kind of storage a platform's IDs name. */
const storageKind = (ctx: GatewayContext, platformId: string): NodeKind =>
  ctx.registry.get(platformId)?.kind === 'VSPHERE' ? 'Datastore' : 'StoragePool';

const idOn = (platformId: string, kind: NodeKind, nativeId: string | null) =>
  nativeId === null ? null : encodeId({ kind, platformId, nativeId });

export const VmSpec: VmSpecResolvers = {
  vcpus: (d) => d.spec.vcpus,
  coresPerSocket: (d) => d.spec.coresPerSocket,
  memoryMiB: (d) => d.spec.memoryMiB,
  guestOs: (d) => d.spec.guestOs,
  disks: (d, _a, ctx) =>
    d.spec.disks.map((disk) => ({
      capacityBytes: disk.capacityBytes,
      storageId: idOn(d.platformId, storageKind(ctx, d.platformId), disk.storageNativeId),
    })),
  nics: (d) =>
    d.spec.nics.map((n) => ({
      networkId: encodeId({ kind: 'Network', platformId: d.platformId, nativeId: n.networkNativeId }),
    })),
  placement: (d, _a, ctx) => {
    const p = d.spec.placement;
    return {
      hostId: idOn(d.platformId, 'Host', p.hostNativeId),
      clusterId: idOn(d.platformId, 'Cluster', p.clusterNativeId),
      storageId: idOn(d.platformId, storageKind(ctx, d.platformId), p.storageNativeId),
      folder: p.folderPath,
      resourcePool: p.resourcePoolPath,
    };
  },
  tags: (d) => d.spec.tags,
  runStrategy: (d) => d.spec.runStrategy,
  appliedBy: (d) => d.appliedBy.id,
};

/** The declaration's VM as the caller may see it; null until it exists. */
async function vmOf(ctx: GatewayContext, d: DeclarationRecord) {
  const nativeId = d.state.nativeId;
  return nativeId ? await findVm(ctx, d.declared.platformId, nativeId) : null;
}

export const VmDeclaration: VmDeclarationResolvers = {
  platform: (d, _a, ctx) => platformOf(ctx, d.declared.platformId),
  name: (d) => d.declared.name,
  spec: (d) => d.declared,
  status: async (d, _a, ctx) => ctx.declarations.statusOfDeclaration(d, await vmOf(ctx, d)),
  vm: (d, _a, ctx) => vmOf(ctx, d),
};

export const declaredVmFields: Pick<VirtualMachineResolvers, 'spec' | 'status'> = {
  spec: async (vm, _a, ctx) => (await ctx.declarations.declarationOf(vm))?.declared ?? null,
  status: (vm, _a, ctx) => ctx.declarations.statusOf(vm),
};

/** Whether the caller may see a declared VM: as it may see the VM, where it is or would be. */
export const declarationVisible = (ctx: GatewayContext, d: DeclarationRecord): Promise<boolean> =>
  ctx.declarations.visible(ctx, d);

export const declarationQueries: Pick<QueryResolvers, 'vmDeclarations'> = {
  vmDeclarations: async (_r, args, ctx) => {
    const platforms = new Set(platformsInScope(ctx, args.platformId ? [args.platformId] : null));
    const all = (await ctx.declarations.list()).filter((d) => platforms.has(d.declared.platformId));
    const shown = await Promise.all(all.map(async (d) => ((await declarationVisible(ctx, d)) ? d : null)));
    return paginate(
      shown.filter((d): d is DeclarationRecord => d !== null),
      args,
      {
        name: 'declaration-name',
        direction: 'ASC',
        value: (d) => `${d.declared.platformId}/${d.declared.name}`,
        id: (d) => `${d.declared.platformId}/${d.declared.name}`,
      },
      ctx.limits,
    );
  },
};

export const declarationMutations: Pick<MutationResolvers, 'applyVm' | 'forgetVm'> = {
  applyVm: (_r, { input }, ctx) =>
    ctx.declarations.applyVm(ctx, {
      platformId: input.platformId,
      name: input.name,
      build: (platformId) => declaredSpec(platformId, input.spec),
      resourceVersion: input.resourceVersion,
      clientMutationId: input.clientMutationId,
    }),
  forgetVm: (_r, { input }, ctx) => ctx.declarations.forgetVm(ctx, input),
};

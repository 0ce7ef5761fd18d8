import type { NodeResolvers, QueryResolvers, ResolversParentTypes } from '../generated/graphql.js';
import { ErrorCode, GatewayError, UnreachableCaseError } from '../model/errors.js';
import { type NodeKind, type NodeRef, decodeId, decodeIdOf, splitChildNativeId } from '../model/ids.js';
import { visibleTask } from './scope.js';
import { visibleMigration } from './migration.js';
import type { GatewayContext } from './context.js';
import { findCluster, findDatacenter, findHost, findNetwork, findStorage, findVm, snapshotsOf } from './lookups.js';

// Records carry no type tag of their own; node() remembers what it fetched so
// that Node.__resolveType can answer without guessing from the shape.
type AnyNode = ResolversParentTypes['Node'];

const kinds = new WeakMap<object, NodeKind>();

function tagged<T extends AnyNode>(value: T | null | undefined, kind: NodeKind): T | null {
  if (!value) return null;
  kinds.set(value, kind);
  return value;
}

export async function loadNode(ctx: GatewayContext, ref: NodeRef): Promise<AnyNode | null> {
  const { platformId, nativeId } = ref;
  if (ref.kind === 'AuditEntry') return ctx.access.readsAudit ? tagged(ctx.audit.get(nativeId), 'AuditEntry') : null;
  if (ref.kind === 'Task') return tagged(await visibleTask(ctx, ctx.tasks.get(nativeId)), 'Task');
  if (ref.kind === 'VmMigration') return tagged(await visibleMigration(ctx, nativeId), 'VmMigration');
  if (!ctx.registry.get(platformId) || !ctx.access.seesPlatform(platformId)) return null;
  switch (ref.kind) {
    case 'Platform':
      return nativeId === platformId ? tagged(ctx.registry.record(platformId), 'Platform') : null;
    case 'Host':
      return tagged(await findHost(ctx, platformId, nativeId), 'Host');
    case 'VirtualMachine':
      return tagged(await findVm(ctx, platformId, nativeId), 'VirtualMachine');
    case 'Network':
      return tagged(await findNetwork(ctx, platformId, nativeId), 'Network');
    case 'StoragePool':
    case 'Datastore': {
      const storage = await findStorage(ctx, platformId, nativeId);
      return storage?.storageKind === ref.kind ? tagged(storage, ref.kind) : null;
    }
    case 'Datacenter':
      return tagged(await findDatacenter(ctx, platformId, nativeId), 'Datacenter');
    case 'Cluster':
      return tagged(await findCluster(ctx, platformId, nativeId), 'Cluster');
    case 'Snapshot': {
      const parts = splitChildNativeId(nativeId);
      if (!parts || !(await findVm(ctx, platformId, parts.parent))) return null;
      const snaps = await snapshotsOf(ctx, { platformId, nativeId: parts.parent });
      return tagged(
        snaps.find((s) => s.key === parts.child),
        'Snapshot',
      );
    }
    case 'StorageVolume': {
      const parts = splitChildNativeId(nativeId);
      if (!parts || !(await findStorage(ctx, platformId, parts.parent))) return null;
      const vols = await ctx.loaders.volumes.load({ platformId, nativeId: parts.parent });
      return tagged(
        vols.find((v) => v.name === parts.child),
        'StorageVolume',
      );
    }
    case 'VmPool': {
      const pool = await ctx.declarations.pools.get(platformId, nativeId);
      return pool && (await ctx.declarations.pools.visible(ctx, pool)) ? tagged(pool, 'VmPool') : null;
    }
    default:
      throw new UnreachableCaseError(ref.kind);
  }
}

export const Node: NodeResolvers = {
  __resolveType: (obj) => {
    const kind = kinds.get(obj);
    if (!kind) throw new Error('node of unknown kind');
    return kind;
  },
};

/** A lookup by ID of one kind of object: the ID must name that kind (INVALID_ID otherwise). */
function lookup<K extends NodeKind & keyof ResolversParentTypes>(kind: K) {
  return async (_root: unknown, { id }: { id: string }, ctx: GatewayContext) =>
    // loadNode answers a ref of kind K with a record of kind K.
    (await loadNode(ctx, decodeIdOf(id, kind))) as ResolversParentTypes[K] | null;
}

export const typedLookups: Pick<
  QueryResolvers,
  | 'virtualMachine'
  | 'host'
  | 'cluster'
  | 'datacenter'
  | 'network'
  | 'datastore'
  | 'storagePool'
  | 'storageVolume'
  | 'snapshot'
  | 'platform'
> = {
  virtualMachine: lookup('VirtualMachine'),
  host: lookup('Host'),
  cluster: lookup('Cluster'),
  datacenter: lookup('Datacenter'),
  network: lookup('Network'),
  datastore: lookup('Datastore'),
  storagePool: lookup('StoragePool'),
  storageVolume: lookup('StorageVolume'),
  snapshot: lookup('Snapshot'),
  platform: lookup('Platform'),
};

export const nodeQueries: Pick<QueryResolvers, 'node' | 'nodes'> = {
  node: (_root, { id }, ctx) => loadNode(ctx, decodeId(id)),
  nodes: (_root, { ids }, ctx) => {
    if (ids.length > ctx.limits.maxNodeIds) {
      throw new GatewayError(
        ErrorCode.INVALID_PAGINATION,
        `"ids" takes at most ${ctx.limits.maxNodeIds} IDs; got ${ids.length}.`,
      );
    }
    // Decode all first, so one malformed ID fails the field before any upstream call.
    const refs = ids.map((id) => decodeId(id));
    return Promise.all(refs.map((ref) => loadNode(ctx, ref)));
  },
};

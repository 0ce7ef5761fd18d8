import type { PlatformResolvers, QueryResolvers } from '../generated/graphql.js';
import { encodeId } from '../model/ids.js';
import type { HostRecord } from '../model/host.js';
import { hostsByName } from './host.js';
import { pageNamed, reportUnavailable } from './scope.js';

export const Platform: PlatformResolvers = {
  id: (p) => encodeId({ kind: 'Platform', platformId: p.id, nativeId: p.id }),
  name: (p) => p.id,
  // The record holds what the connection knows; the live watch may know worse (see Inventory.platformState).
  status: (p, _a, ctx) => ctx.inventory.platformState(p.id, p).status,
  statusMessage: (p, _a, ctx) => ctx.inventory.platformState(p.id, p).statusMessage,
  connectedAt: (p, _a, ctx) => ctx.inventory.platformState(p.id, p).connectedAt,
  inventoryState: (p, _a, ctx) => ctx.inventory.mirror(p.id)?.state.state ?? 'SYNCING',
  syncedAt: (p, _a, ctx) => ctx.inventory.mirror(p.id)?.state.syncedAt ?? null,
  staleSince: (p, _a, ctx) => ctx.inventory.mirror(p.id)?.state.staleSince ?? null,
  watch: (p, _a, ctx) => {
    const lease = ctx.inventory.lease(p.id);
    return lease
      ? { role: lease.role, holder: lease.holder, instance: lease.instanceId, heldSince: lease.heldSince }
      : null;
  },
  hosts: async (p, args, ctx) => {
    let hosts: readonly HostRecord[] = [];
    if (p.status === 'CONNECTED') {
      try {
        hosts = await ctx.loaders.hosts.load(p.id);
      } catch (e) {
        reportUnavailable(ctx, p.id, e);
      }
    }
    return pageNamed(ctx, hosts, args, hostsByName);
  },
};

export const platformQueries: Pick<QueryResolvers, 'platforms'> = {
  platforms: (_root, _args, ctx) => ctx.registry.records().filter((p) => ctx.access.seesPlatform(p.id)),
};

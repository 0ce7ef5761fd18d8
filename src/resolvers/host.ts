import type { HostResolvers, QueryResolvers } from '../generated/graphql.js';
import type { HostRecord } from '../model/host.js';
import { encodeId } from '../model/ids.js';
import { paginate } from './pagination.js';
import { loadFromPlatforms, platformOf, platformsInScope } from './scope.js';
import { listVms } from './virtual-machine.js';

export function hostId(h: HostRecord): string {
  return encodeId({ kind: 'Host', platformId: h.platformId, nativeId: h.nativeId });
}

export const Host: HostResolvers = {
  id: (h) => hostId(h),
  platform: (h, _a, ctx) => platformOf(ctx, h.platformId),
  virtualMachines: (h, args, ctx) => listVms(ctx, args, { platformId: h.platformId, nativeId: h.nativeId }),
};

export const hostQueries: Pick<QueryResolvers, 'hosts'> = {
  hosts: async (_root, args, ctx) => {
    const filter = args.filter ?? {};
    let hosts = await loadFromPlatforms(ctx, ctx.loaders.hosts, platformsInScope(ctx, filter.platformIds));
    if (filter.nameContains) {
      const needle = filter.nameContains.toLowerCase();
      hosts = hosts.filter((h) => h.name.toLowerCase().includes(needle));
    }
    return paginate(hosts, args, { name: 'host:NAME', direction: 'ASC', value: (h) => h.name, id: hostId }, ctx.limits);
  },
};

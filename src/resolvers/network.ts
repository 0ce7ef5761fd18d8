import type { NetworkResolvers, QueryResolvers } from '../generated/graphql.js';
import { encodeId } from '../model/ids.js';
import type { NetworkRecord } from '../model/network.js';
import { vmsWithDetails } from './lookups.js';
import { paginate } from './pagination.js';
import { loadFromPlatforms, platformOf, platformsInScope } from './scope.js';

export function networkId(n: NetworkRecord): string {
  return encodeId({ kind: 'Network', platformId: n.platformId, nativeId: n.nativeId });
}

export const Network: NetworkResolvers = {
  id: (n) => networkId(n),
  platform: (n, _a, ctx) => platformOf(ctx, n.platformId),
  attachedVms: async (n, _a, ctx) =>
    (await vmsWithDetails(ctx, n.platformId))
      .filter(({ details }) => details.nics.some((nic) => nic.networkName === n.name))
      .map(({ vm }) => vm),
};

export const networkQueries: Pick<QueryResolvers, 'networks'> = {
  networks: async (_root, args, ctx) => {
    const filter = args.filter ?? {};
    let nets = await loadFromPlatforms(ctx, ctx.loaders.networks, platformsInScope(ctx, filter.platformIds));
    if (filter.nameContains) {
      const needle = filter.nameContains.toLowerCase();
      nets = nets.filter((n) => n.name.toLowerCase().includes(needle));
    }
    return paginate(nets, args, { name: 'network:NAME', direction: 'ASC', value: (n) => n.name, id: networkId }, ctx.limits);
  },
};

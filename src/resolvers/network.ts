import type { NetworkResolvers, QueryResolvers } from '../generated/graphql.js';
import { encodeId } from '../model/ids.js';
import type { NetworkRecord } from '../model/network.js';
import { findDatacenter, vmsRelatedTo } from './lookups.js';
import { pageByName, platformOf } from './scope.js';

export function networkId(n: NetworkRecord): string {
  return encodeId({ kind: 'Network', platformId: n.platformId, nativeId: n.nativeId });
}

export const Network: NetworkResolvers = {
  id: (n) => networkId(n),
  platform: (n, _a, ctx) => platformOf(ctx, n.platformId),
  datacenter: (n, _a, ctx) => findDatacenter(ctx, n.platformId, n.datacenterNativeId),
  attachedVms: (n, _a, ctx) =>
    vmsRelatedTo(
      ctx,
      n.platformId,
      (m) => m.vmsOnNetwork(n),
      (details) =>
        details.nics.some((nic) =>
          nic.networkNativeId ? nic.networkNativeId === n.nativeId : nic.networkName === n.name,
        ),
    ),
};

export const networkQueries: Pick<QueryResolvers, 'networks'> = {
  networks: (_root, args, ctx) => pageByName(ctx, ctx.loaders.networks, args, { name: 'network:NAME', id: networkId }),
};

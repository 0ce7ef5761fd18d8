import type { NetworkResolvers, QueryResolvers } from '../generated/graphql.js';
import { encodeId } from '../model/ids.js';
import type { NetworkRecord } from '../model/network.js';
import { findDatacenter, vmsOnNetwork } from './lookups.js';
import { pageByName, platformOf } from './scope.js';
import { listVms } from './virtual-machine.js';

export function networkId(n: NetworkRecord): string {
  return encodeId({ kind: 'Network', platformId: n.platformId, nativeId: n.nativeId });
}

export const Network: NetworkResolvers = {
  id: (n) => networkId(n),
  platform: (n, _a, ctx) => platformOf(ctx, n.platformId),
  datacenter: (n, _a, ctx) => findDatacenter(ctx, n.platformId, n.datacenterNativeId),
  virtualMachines: async (n, args, ctx) =>
    listVms(ctx, args, { platformId: n.platformId, vms: await vmsOnNetwork(ctx, n) }),
};

/** Networks by name: the order of every networks connection, so their cursors are alike. */
export const networksByName = { name: 'network:NAME', id: networkId };

export const networkQueries: Pick<QueryResolvers, 'networks'> = {
  networks: (_root, args, ctx) => pageByName(ctx, ctx.loaders.networks, args, networksByName),
};

import type { HostResolvers, QueryResolvers } from '../generated/graphql.js';
import type { HostRecord } from '../model/host.js';
import { encodeId } from '../model/ids.js';
import { findCluster, findDatacenter, vmsOnHosts } from './lookups.js';
import { pageByName, platformOf } from './scope.js';
import { listVms } from './virtual-machine.js';

export function hostId(h: HostRecord): string {
  return encodeId({ kind: 'Host', platformId: h.platformId, nativeId: h.nativeId });
}

export const Host: HostResolvers = {
  id: (h) => hostId(h),
  platform: (h, _a, ctx) => platformOf(ctx, h.platformId),
  virtualMachines: async (h, args, ctx) =>
    listVms(ctx, args, { platformId: h.platformId, vms: await vmsOnHosts(ctx, h.platformId, [h.nativeId]) }),
  cluster: (h, _a, ctx) => findCluster(ctx, h.platformId, h.clusterNativeId),
  datacenter: (h, _a, ctx) => findDatacenter(ctx, h.platformId, h.datacenterNativeId),
};

/** Hosts by name: the order of every hosts connection, so their cursors are alike. */
export const hostsByName = { name: 'host:NAME', id: hostId };

export const hostQueries: Pick<QueryResolvers, 'hosts'> = {
  hosts: (_root, args, ctx) => pageByName(ctx, ctx.loaders.hosts, args, hostsByName),
};

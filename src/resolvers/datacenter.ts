import type { ClusterResolvers, DatacenterResolvers, QueryResolvers } from '../generated/graphql.js';
import { encodeId } from '../model/ids.js';
import type { ClusterRecord, DatacenterRecord } from '../model/inventory.js';
import type { DatastoreRecord } from '../model/storage.js';
import { findDatacenter } from './lookups.js';
import { pageByName, platformOf } from './scope.js';
import { listVms } from './virtual-machine.js';

export const datacenterId = (d: DatacenterRecord) =>
  encodeId({ kind: 'Datacenter', platformId: d.platformId, nativeId: d.nativeId });
export const clusterId = (c: ClusterRecord) =>
  encodeId({ kind: 'Cluster', platformId: c.platformId, nativeId: c.nativeId });

export const Datacenter: DatacenterResolvers = {
  id: (d) => datacenterId(d),
  platform: (d, _a, ctx) => platformOf(ctx, d.platformId),
  clusters: async (d, _a, ctx) =>
    (await ctx.loaders.clusters.load(d.platformId)).filter((c) => c.datacenterNativeId === d.nativeId),
  hosts: async (d, _a, ctx) =>
    (await ctx.loaders.hosts.load(d.platformId)).filter((h) => h.datacenterNativeId === d.nativeId),
  datastores: async (d, _a, ctx) =>
    (await ctx.loaders.storage.load(d.platformId)).filter(
      (s): s is DatastoreRecord => s.storageKind === 'Datastore' && s.datacenterNativeId === d.nativeId,
    ),
  networks: async (d, _a, ctx) =>
    (await ctx.loaders.networks.load(d.platformId)).filter((n) => n.datacenterNativeId === d.nativeId),
};

export const Cluster: ClusterResolvers = {
  id: (c) => clusterId(c),
  platform: (c, _a, ctx) => platformOf(ctx, c.platformId),
  datacenter: (c, _a, ctx) => findDatacenter(ctx, c.platformId, c.datacenterNativeId),
  hosts: async (c, _a, ctx) =>
    (await ctx.loaders.hosts.load(c.platformId)).filter((h) => h.clusterNativeId === c.nativeId),
  virtualMachines: async (c, args, ctx) => {
    const hosts = (await ctx.loaders.hosts.load(c.platformId)).filter((h) => h.clusterNativeId === c.nativeId);
    return listVms(ctx, args, { platformId: c.platformId, hostNativeIds: hosts.map((h) => h.nativeId) });
  },
};

export const datacenterQueries: Pick<QueryResolvers, 'datacenters' | 'clusters'> = {
  datacenters: (_root, args, ctx) =>
    pageByName(ctx, ctx.loaders.datacenters, args, { name: 'datacenter:NAME', id: datacenterId }),
  clusters: (_root, args, ctx) => pageByName(ctx, ctx.loaders.clusters, args, { name: 'cluster:NAME', id: clusterId }),
};

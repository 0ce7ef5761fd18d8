import type { ClusterResolvers, DatacenterResolvers, QueryResolvers } from '../generated/graphql.js';
import { encodeId } from '../model/ids.js';
import type { ClusterRecord, DatacenterRecord } from '../model/inventory.js';
import type { DatastoreRecord } from '../model/storage.js';
import { hostsByName } from './host.js';
import { findDatacenter, vmsOnHosts } from './lookups.js';
import { networksByName } from './network.js';
import { pageByName, pageNamed, platformOf } from './scope.js';
import { storageByName } from './storage.js';
import { listVms } from './virtual-machine.js';

export const datacenterId = (d: DatacenterRecord) =>
  encodeId({ kind: 'Datacenter', platformId: d.platformId, nativeId: d.nativeId });
export const clusterId = (c: ClusterRecord) =>
  encodeId({ kind: 'Cluster', platformId: c.platformId, nativeId: c.nativeId });

/** Clusters by name: the order of every clusters connection, so their cursors are alike. */
const clustersByName = { name: 'cluster:NAME', id: clusterId };

export const Datacenter: DatacenterResolvers = {
  id: (d) => datacenterId(d),
  platform: (d, _a, ctx) => platformOf(ctx, d.platformId),
  clusters: async (d, args, ctx) =>
    pageNamed(
      ctx,
      (await ctx.loaders.clusters.load(d.platformId)).filter((c) => c.datacenterNativeId === d.nativeId),
      args,
      clustersByName,
    ),
  hosts: async (d, args, ctx) =>
    pageNamed(
      ctx,
      (await ctx.loaders.hosts.load(d.platformId)).filter((h) => h.datacenterNativeId === d.nativeId),
      args,
      hostsByName,
    ),
  datastores: async (d, args, ctx) =>
    pageNamed(
      ctx,
      (await ctx.loaders.storage.load(d.platformId)).filter(
        (s): s is DatastoreRecord => s.storageKind === 'Datastore' && s.datacenterNativeId === d.nativeId,
      ),
      args,
      storageByName,
    ),
  networks: async (d, args, ctx) =>
    pageNamed(
      ctx,
      (await ctx.loaders.networks.load(d.platformId)).filter((n) => n.datacenterNativeId === d.nativeId),
      args,
      networksByName,
    ),
};

export const Cluster: ClusterResolvers = {
  id: (c) => clusterId(c),
  platform: (c, _a, ctx) => platformOf(ctx, c.platformId),
  datacenter: (c, _a, ctx) => findDatacenter(ctx, c.platformId, c.datacenterNativeId),
  hosts: async (c, args, ctx) =>
    pageNamed(
      ctx,
      (await ctx.loaders.hosts.load(c.platformId)).filter((h) => h.clusterNativeId === c.nativeId),
      args,
      hostsByName,
    ),
  virtualMachines: async (c, args, ctx) => {
    const hosts = (await ctx.loaders.hosts.load(c.platformId)).filter((h) => h.clusterNativeId === c.nativeId);
    return listVms(ctx, args, {
      platformId: c.platformId,
      vms: await vmsOnHosts(
        ctx,
        c.platformId,
        hosts.map((h) => h.nativeId),
      ),
    });
  },
};

export const datacenterQueries: Pick<QueryResolvers, 'datacenters' | 'clusters'> = {
  datacenters: (_root, args, ctx) =>
    pageByName(ctx, ctx.loaders.datacenters, args, { name: 'datacenter:NAME', id: datacenterId }),
  clusters: (_root, args, ctx) => pageByName(ctx, ctx.loaders.clusters, args, clustersByName),
};

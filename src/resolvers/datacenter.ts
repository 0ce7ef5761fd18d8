import type { ClusterResolvers, DatacenterResolvers, QueryResolvers } from '../generated/graphql.js';
import { encodeId } from '../model/ids.js';
import type { ClusterRecord, DatacenterRecord } from '../model/inventory.js';
import type { DatastoreRecord } from '../model/storage.js';
import { hostId } from './host.js';
import { findDatacenter, vmsOnHosts } from './lookups.js';
import { networkId } from './network.js';
import { pageByName, pageNamed, platformOf } from './scope.js';
import { storageId } from './storage.js';
import { listVms } from './virtual-machine.js';

export const datacenterId = (d: DatacenterRecord) =>
  encodeId({ kind: 'Datacenter', platformId: d.platformId, nativeId: d.nativeId });
export const clusterId = (c: ClusterRecord) =>
  encodeId({ kind: 'Cluster', platformId: c.platformId, nativeId: c.nativeId });

export const Datacenter: DatacenterResolvers = {
  id: (d) => datacenterId(d),
  platform: (d, _a, ctx) => platformOf(ctx, d.platformId),
  clusters: async (d, args, ctx) =>
    pageNamed(
      ctx,
      (await ctx.loaders.clusters.load(d.platformId)).filter((c) => c.datacenterNativeId === d.nativeId),
      args,
      { name: 'cluster:NAME', id: clusterId },
    ),
  hosts: async (d, args, ctx) =>
    pageNamed(
      ctx,
      (await ctx.loaders.hosts.load(d.platformId)).filter((h) => h.datacenterNativeId === d.nativeId),
      args,
      { name: 'host:NAME', id: hostId },
    ),
  datastores: async (d, args, ctx) =>
    pageNamed(
      ctx,
      (await ctx.loaders.storage.load(d.platformId)).filter(
        (s): s is DatastoreRecord => s.storageKind === 'Datastore' && s.datacenterNativeId === d.nativeId,
      ),
      args,
      { name: 'storage:NAME', id: storageId },
    ),
  networks: async (d, args, ctx) =>
    pageNamed(
      ctx,
      (await ctx.loaders.networks.load(d.platformId)).filter((n) => n.datacenterNativeId === d.nativeId),
      args,
      { name: 'network:NAME', id: networkId },
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
      { name: 'host:NAME', id: hostId },
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
  clusters: (_root, args, ctx) => pageByName(ctx, ctx.loaders.clusters, args, { name: 'cluster:NAME', id: clusterId }),
};

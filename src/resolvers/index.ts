import type { Resolvers } from '../generated/graphql.js';
import { AuditEntry, auditQueries } from './audit.js';
import { Cluster, Datacenter, datacenterQueries } from './datacenter.js';
import { Host, hostQueries } from './host.js';
import { Network, networkQueries } from './network.js';
import {
  HostMetricsEvent,
  MetricSample,
  MetricSeries,
  VmMetricsEvent,
  hostMetricsField,
  metricSubscriptions,
  vmMetricsField,
} from './metrics.js';
import { Node, nodeQueries, typedLookups } from './node.js';
import { Platform, platformQueries } from './platform.js';
import { rateLimitQueries } from './rate-limit.js';
import { DateTime, SafeInt } from './scalars.js';
import { Snapshot } from './snapshot.js';
import { Datastore, Storage, StoragePool, StorageVolume, storageQueries } from './storage.js';
import { BatchPayload, Task, UpstreamTask, taskQueries } from './task.js';
import { batchMutations, vmMutations } from './mutation.js';
import { VirtualMachine, virtualMachineQueries } from './virtual-machine.js';
import {
  InventoryChangedEvent,
  PlatformStatusChangedEvent,
  TaskUpdatedEvent,
  VmChangedEvent,
  subscriptionResolvers,
} from './subscription.js';
import { VmDisk, VmNic } from './vm-devices.js';
import { VmMigration, migrationMutations, migrationPayloadField, migrationQueries } from './migration.js';
import { VmDeclaration, VmSpec, declarationMutations, declarationQueries, declaredVmFields } from './declarative.js';
import { VmPool, vmPoolMutations, vmPoolQueries } from './vm-pool.js';

export const resolvers: Resolvers = {
  DateTime,
  SafeInt,
  Query: {
    ...nodeQueries,
    ...typedLookups,
    ...platformQueries,
    ...datacenterQueries,
    ...hostQueries,
    ...virtualMachineQueries,
    ...networkQueries,
    ...storageQueries,
    ...taskQueries,
    ...auditQueries,
    ...rateLimitQueries,
    ...declarationQueries,
    ...vmPoolQueries,
    ...migrationQueries,
  },
  Mutation: { ...vmMutations, ...batchMutations, ...declarationMutations, ...vmPoolMutations, ...migrationMutations },
  Subscription: { ...subscriptionResolvers, ...metricSubscriptions },
  VmMetricsEvent,
  HostMetricsEvent,
  MetricSeries,
  MetricSample,
  VmChangedEvent,
  InventoryChangedEvent,
  TaskUpdatedEvent,
  PlatformStatusChangedEvent,
  BatchPayload,
  VmOperationPayload: migrationPayloadField,
  VmMigration,
  TaskAggregate: {},
  Task,
  UpstreamTask,
  AuditEntry,
  Node,
  Platform,
  Datacenter,
  Cluster,
  Host: { ...Host, ...hostMetricsField },
  VirtualMachine: { ...VirtualMachine, ...vmMetricsField, ...declaredVmFields },
  VmSpec,
  VmDeclaration,
  VmPool,
  VmDisk,
  VmNic,
  Snapshot,
  Network,
  Storage,
  StoragePool,
  Datastore,
  StorageVolume,
};

import type { CodegenConfig } from '@graphql-codegen/cli';

// Resolver types are generated from the schema files (the contract) and
// mapped onto the model types that loaders return.
const config: CodegenConfig = {
  schema: 'schema/*.graphql',
  generates: {
    'src/generated/graphql.ts': {
      plugins: ['typescript', 'typescript-resolvers'],
      config: {
        contextType: '../resolvers/context.js#GatewayContext',
        useTypeImports: true,
        enumsAsTypes: true,
        strictScalars: true,
        scalars: {
          DateTime: { input: 'string', output: 'Date | string' },
          SafeInt: 'number',
        },
        mappers: {
          Platform: '../model/platform.js#PlatformRecord',
          Host: '../model/host.js#HostRecord',
          VirtualMachine: '../model/vm.js#VmRecord',
          VmDisk: '../resolvers/parents.js#VmDiskParent',
          VmNic: '../resolvers/parents.js#VmNicParent',
          Snapshot: '../model/snapshot.js#SnapshotRecord',
          Network: '../model/network.js#NetworkRecord',
          Storage: '../model/storage.js#StorageRecord',
          Datastore: '../model/storage.js#DatastoreRecord',
          Datacenter: '../model/inventory.js#DatacenterRecord',
          Cluster: '../model/inventory.js#ClusterRecord',
          StoragePool: '../model/storage.js#StoragePoolRecord',
          StorageVolume: '../model/storage.js#StorageVolumeRecord',
          Task: '../mutations/task-manager.js#TaskRecord',
          UpstreamTask: '../model/upstream-task.js#UpstreamTaskRecord',
          AuditEntry: '../mutations/audit-log.js#AuditRecord',
          VmOperationPayload: '../mutations/pipeline.js#OperationPayload',
          BatchPayload: '../mutations/pipeline.js#BatchOutcome',
          MetricSample: '../model/metrics.js#MetricSampleRecord',
          MetricSeries: '../resolvers/parents.js#MetricSeriesParent',
          VmMetricsEvent: '../subscriptions/metric-subscription.js#MetricDelivery',
          HostMetricsEvent: '../subscriptions/metric-subscription.js#MetricDelivery',
          VmChangedEvent: '../subscriptions/event-log.js#Delivery',
          InventoryChangedEvent: '../subscriptions/event-log.js#Delivery',
          TaskUpdatedEvent: '../subscriptions/event-log.js#Delivery',
          PlatformStatusChangedEvent: '../subscriptions/event-log.js#Delivery',
          VmSpec: '../model/declaration.js#DeclaredVm',
          VmStatus: '../model/declaration.js#VmStatusRecord',
          VmCondition: '../model/declaration.js#Condition',
          VmDeclaration: '../model/declaration.js#DeclarationRecord',
          ApplyVmPayload: '../declarations/declarations.js#ApplyVmOutcome',
          ForgetVmPayload: '../declarations/declarations.js#ForgetVmOutcome',
          VmMigration: '../model/migration.js#MigrationRecord',
          CancelMigrationPayload: '../mutations/migrations.js#CancelMigrationOutcome',
          VmPool: '../model/declaration.js#DeclaredPool',
          VmPoolSpec: '../model/declaration.js#PoolSpec',
          VmPoolStatus: '../declarations/vm-pools.js#VmPoolStatusRecord',
          VmPoolPayload: '../declarations/vm-pools.js#VmPoolOutcome',
        },
      },
    },
  },
};

export default config;

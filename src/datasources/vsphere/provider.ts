import type { Logger } from 'pino';

import type { VspherePlatformConfig } from '../../config/schema.js';
import type { HostRecord } from '../../model/host.js';
import type { ClusterRecord, DatacenterRecord } from '../../model/inventory.js';
import type { NetworkRecord } from '../../model/network.js';
import type { SnapshotRecord } from '../../model/snapshot.js';
import type { StorageRecord, StorageVolumeRecord } from '../../model/storage.js';
import type { VmDetails, VmRecord } from '../../model/vm.js';
import { ConnectedProvider, PlatformConnection } from '../platform-connection.js';
import type { Provider } from '../provider.js';
import type { VmState, WatchOptions, WatchSink } from '../watch.js';
import type { RequestScope } from '../request-scope.js';
import { describeVsphereError, isVsphereAuthFailure, isVsphereConnectionFailure } from './errors.js';
import {
  DATASTORE_SPEC,
  HOST_SPEC,
  InventoryTree,
  NETWORK_SPECS,
  TREE_SPECS,
  VM_DETAIL_SPEC,
  VM_LIST_SPEC,
  VM_SNAPSHOT_SPEC,
  VM_STATE_PATHS,
  datastoreRecord,
  hostRecord,
  networkRecord,
  snapshots,
  vmDetails,
  vmRecord,
  vmState,
} from './mapping.js';
import { VsphereMetrics } from './metrics.js';
import { createVirtualMachine, followTask, runVmOperation } from './operations.js';
import { VsphereSession } from './session.js';
import { type VsphereInventoryWatch, watchVsphere } from './watch.js';
import type { ObjectContent } from './vim.js';
import type { UpstreamErrorDescription } from '../../model/errors.js';
import type {
  MigrationLimits,
  MigrationTarget,
  OperationReporter,
  OperationResult,
  TaskOperation,
  Unsupported,
  VmOperation,
  Placement,
  VmSpec,
} from '../../model/operations.js';
import { planVsphereMigration } from './migration.js';

/** A vCenter or standalone ESXi host, through the vim25 SOAP API. */
export class VsphereProvider extends ConnectedProvider<VsphereSession> implements Provider {
  readonly kind = 'VSPHERE' as const;
  readonly id: string;
  readonly uri: string;
  protected readonly connection: PlatformConnection<VsphereSession>;

  constructor(
    config: VspherePlatformConfig,
    private readonly logger: Logger,
  ) {
    super();
    this.id = config.id;
    this.uri = config.url;
    this.gracefulStopTimeoutMs = config.gracefulStopTimeoutMs;
    this.metrics = new VsphereMetrics((fn) => this.connection.use(fn), {
      maxQueryMetrics: config.perfMaxQueryMetrics,
    });
    this.connection = new PlatformConnection({
      platformId: config.id,
      logger,
      connect: async () => {
        const session = await VsphereSession.open({
          url: config.url,
          username: config.username,
          password: config.password,
          insecure: config.insecure,
          caFile: config.caFile,
          maxConcurrentRequests: config.maxConcurrentRequests,
          requestTimeoutMs: config.requestTimeoutMs,
          pageSize: config.pageSize,
          keepAliveMs: config.keepAliveMs,
          logger,
        });
        return {
          client: session,
          hypervisorType: session.content.about.apiType,
          hypervisorVersion: session.content.about.version,
        };
      },
      disconnect: (session) => session.close(),
      isAuthFailure: isVsphereAuthFailure,
      isConnectionFailure: isVsphereConnectionFailure,
      retryInitialMs: config.retryInitialMs,
      retryMaxMs: config.retryMaxMs,
    });
  }

  /** Folders, datacenters, clusters and resource pools with their parents: read once per request. */
  private tree(scope: RequestScope): Promise<InventoryTree> {
    return scope.memo(`${this.id}:tree`, () =>
      this.connection.use(async (s) => new InventoryTree(this.id, await s.retrieveAll(TREE_SPECS))),
    );
  }

  async listDatacenters(scope: RequestScope): Promise<DatacenterRecord[]> {
    return (await this.tree(scope)).datacenters;
  }

  async listClusters(scope: RequestScope): Promise<ClusterRecord[]> {
    return (await this.tree(scope)).clusters;
  }

  async listHosts(scope: RequestScope): Promise<HostRecord[]> {
    const [hosts, tree] = await Promise.all([this.connection.use((s) => s.retrieveAll([HOST_SPEC])), this.tree(scope)]);
    return hosts.map((h) => hostRecord(this.id, h, tree));
  }

  listVms(): Promise<VmRecord[]> {
    return this.connection.use(async (s) => (await s.retrieveAll([VM_LIST_SPEC])).map((o) => vmRecord(this.id, o)));
  }

  async getVmDetails(ids: readonly string[], scope: RequestScope): Promise<(VmDetails | Error)[]> {
    const [objects, tree] = await Promise.all([this.vmObjects(ids, VM_DETAIL_SPEC.paths), this.tree(scope)]);
    return ids.map((id) => {
      const o = objects.get(id);
      return o ? vmDetails(o, tree) : notFound(id);
    });
  }

  async getSnapshots(ids: readonly string[]): Promise<(SnapshotRecord[] | Error)[]> {
    const objects = await this.vmObjects(ids, VM_SNAPSHOT_SPEC.paths);
    return ids.map((id) => {
      const o = objects.get(id);
      return o ? snapshots(this.id, o) : notFound(id);
    });
  }

  async readVmStates(ids: readonly string[], scope: RequestScope): Promise<Map<string, VmState | null | Error>> {
    const [objects, tree] = await Promise.all([this.vmObjects(ids, VM_STATE_PATHS), this.tree(scope)]);
    return new Map(
      ids.map((id) => {
        const o = objects.get(id);
        return [id, o ? vmState(this.id, o, tree) : null];
      }),
    );
  }

  /** Chosen properties of many VMs in one request; a VM that is gone is simply absent. */
  private async vmObjects(ids: readonly string[], paths: readonly string[]): Promise<Map<string, ObjectContent>> {
    const objects = await this.connection.use((s) =>
      s.retrieveObjects(
        ids.map((value) => ({ type: 'VirtualMachine', value })),
        [{ type: 'VirtualMachine', paths }],
      ),
    );
    return new Map(
      objects.filter((o) => !o.missing.some((m) => m.fault === 'ManagedObjectNotFound')).map((o) => [o.obj.value, o]),
    );
  }

  async listNetworks(scope: RequestScope): Promise<NetworkRecord[]> {
    const [nets, tree] = await Promise.all([
      this.connection.use((s) => s.retrieveAll(NETWORK_SPECS)),
      this.tree(scope),
    ]);
    return nets.map((n) => networkRecord(this.id, n, tree));
  }

  async listStorage(scope: RequestScope): Promise<StorageRecord[]> {
    const [stores, tree] = await Promise.all([
      this.connection.use((s) => s.retrieveAll([DATASTORE_SPEC])),
      this.tree(scope),
    ]);
    return stores.map((d) => datastoreRecord(this.id, d, tree));
  }

  /** PerformanceManager's counters, read through the platform's session (see metrics.ts). */
  readonly metrics: VsphereMetrics;
  readonly unsupported: Unsupported = {
    PAUSE_VM: 'vSphere cannot pause a VM with its memory kept in place; use suspendVm.',
    UNPAUSE_VM: 'vSphere cannot pause a VM with its memory kept in place; use resumeVm.',
  };

  private readonly gracefulStopTimeoutMs: number;

  runOperation(vmId: string, op: VmOperation, reporter: OperationReporter): Promise<OperationResult> {
    return this.connection.use((s) => runVmOperation(s, vmId, op, reporter, this.gracefulStopTimeoutMs));
  }

  createVm(spec: VmSpec, reporter: OperationReporter): Promise<OperationResult> {
    return this.connection.use((s) => createVirtualMachine(s, this.id, spec, reporter));
  }

  resumeTask(
    task: { operation: TaskOperation; upstreamTaskId: string | null },
    reporter: OperationReporter,
  ): Promise<OperationResult> | null {
    const { upstreamTaskId } = task;
    if (!upstreamTaskId) return null;
    return this.connection.use((s) => followTask(s, upstreamTaskId, task.operation, reporter));
  }

  /**
   * Follows vCenter's own change stream (a PropertyCollector filter and
   * WaitForUpdatesEx, in a session of the watch's own beside the platform's):
   * see watch.ts.
   */
  watch(sink: WatchSink, options: WatchOptions): VsphereInventoryWatch {
    return watchVsphere(sink, options, {
      platformId: this.id,
      logger: this.logger,
      useSession: (fn) => this.connection.use(fn),
    });
  }

  planMigration(vm: VmRecord, target: MigrationTarget): VmOperation {
    return planVsphereMigration(vm, target);
  }

  /**
   * vSphere's API takes no bandwidth for a vMotion (the vmkernel NIC and
   * vCenter's own concurrency limits set it), so a cap is refused rather
   * than quietly not kept. The timeouts hold: the gateway cancels the task.
   */
  migrationLimitsProblem(limits: MigrationLimits): { field: string; message: string } | null {
    return limits.bandwidthMiBps === null
      ? null
      : {
          field: 'bandwidthLimitMiBps',
          message: "vSphere's API has no bandwidth limit for a migration; leave bandwidthLimitMiBps out.",
        };
  }

  describeError(error: unknown): UpstreamErrorDescription | null {
    return describeVsphereError(error);
  }

  placementProblem(placement: Placement, tags: readonly string[] | null, made: 'new' | 'copy'): string | null {
    if (tags && tags.length > 0) return 'vSphere VMs carry no tags here; file them with placement.folder instead.';
    if (made === 'copy' || placement.clusterNativeId || placement.hostNativeId || placement.resourcePoolPath)
      return null;
    return 'vSphere needs placement.clusterId, placement.hostId or placement.resourcePool for a new VM.';
  }

  /** Datastores hold files, not volumes; VMs' disks name their datastore directly. */
  async getVolumes(ids: readonly string[]): Promise<(StorageVolumeRecord[] | Error)[]> {
    return ids.map(() => []);
  }
}

function notFound(id: string): Error {
  return new Error(`no VM ${id}`);
}

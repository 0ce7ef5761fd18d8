import type { HostRecord } from '../model/host.js';
import type { ClusterRecord, DatacenterRecord } from '../model/inventory.js';
import type { NetworkRecord } from '../model/network.js';
import type { PlatformKind, PlatformState } from '../model/platform.js';
import type { SnapshotRecord } from '../model/snapshot.js';
import type { StorageRecord, StorageVolumeRecord } from '../model/storage.js';
import type { PowerState, VmDetails, VmRecord } from '../model/vm.js';
import type { UpstreamErrorDescription } from '../model/errors.js';
import type { MetricsSource } from '../model/metrics.js';
import type {
  MigrationLimits,
  MigrationTarget,
  OperationReporter,
  OperationResult,
  TaskOperation,
  Unsupported,
  VmOperation,
  VmOperationKind,
  Placement,
  VmSpec,
} from '../model/operations.js';
import type { RequestScope } from './request-scope.js';
import type { InventoryWatch, VmState, WatchOptions, WatchSink } from './watch.js';

/**
 * What every platform implements. Methods that take a list of native IDs are
 * batch functions in DataLoader's sense: they return one entry per ID, in
 * order, with an Error at the index of an ID that failed (only that ID fails).
 * List methods return the whole inventory of the platform in a number of
 * upstream calls that does not depend on its size. `scope` lets the reads of
 * one request share intermediate results.
 */
export interface Provider {
  readonly id: string;
  readonly kind: PlatformKind;
  /** The endpoint without credentials. */
  readonly uri: string;

  /** Connects in the background; never throws: failures show in state(). */
  start(): Promise<void>;
  stop(): Promise<void>;
  state(): PlatformState;
  /** Calls `listener` whenever the connection's status changes. */
  onStatusChange(listener: (state: PlatformState) => void): void;

  /** Datacenters and clusters: vSphere's; empty elsewhere. */
  listDatacenters(scope: RequestScope): Promise<DatacenterRecord[]>;
  listClusters(scope: RequestScope): Promise<ClusterRecord[]>;
  listHosts(scope: RequestScope): Promise<HostRecord[]>;
  listVms(scope: RequestScope): Promise<VmRecord[]>;
  getVmDetails(vmNativeIds: readonly string[], scope: RequestScope): Promise<(VmDetails | Error)[]>;
  getSnapshots(vmNativeIds: readonly string[], scope: RequestScope): Promise<(SnapshotRecord[] | Error)[]>;
  /**
   * A few VMs whole (listing record, details, snapshots) as they are now,
   * without listing every VM: null for one that is gone, an Error for one
   * that could not be read.
   */
  readVmStates(vmNativeIds: readonly string[], scope: RequestScope): Promise<Map<string, VmState | null | Error>>;
  listNetworks(scope: RequestScope): Promise<NetworkRecord[]>;
  listStorage(scope: RequestScope): Promise<StorageRecord[]>;
  getVolumes(poolNativeIds: readonly string[], scope: RequestScope): Promise<(StorageVolumeRecord[] | Error)[]>;

  /** Operations this platform cannot do, each with the reason. */
  readonly unsupported: Unsupported;
  /** Power states an operation needs on this platform, where they differ from the usual ones. */
  readonly allowedStates?: Partial<Record<VmOperationKind, readonly PowerState[]>>;
  /**
   * Does one operation on one VM and resolves when it is done (throws when it
   * failed). State checks happen before; this only acts.
   */
  runOperation(vmNativeId: string, op: VmOperation, reporter: OperationReporter): Promise<OperationResult>;
  /**
   * Why a VM cannot be made (`new`) or copied (`copy`) where and as filed as
   * asked on this platform (vSphere needs a cluster or host for a new VM and
   * has no tags; libvirt has no clusters, folders or pools), or null.
   */
  placementProblem(placement: Placement, tags: readonly string[] | null, made: 'new' | 'copy'): string | null;
  /** Creates a VM; resolves with its native ID once it exists (and runs, when asked). */
  createVm(spec: VmSpec, reporter: OperationReporter): Promise<OperationResult>;
  /**
   * The operation that moves one of this platform's VMs to the target, by
   * this platform's rules; throws a GatewayError naming the field when the
   * VM cannot go there.
   */
  planMigration(vm: VmRecord, target: MigrationTarget): VmOperation;
  /**
   * Why this platform cannot keep a migration's limits as asked (vSphere has
   * no bandwidth cap), naming the input field: refused as UNSUPPORTED before
   * anything starts. Absent, or null: it keeps them (the gateway itself
   * enforces the timeouts through the operation's abort signal).
   */
  migrationLimitsProblem?(limits: MigrationLimits): { field: string; message: string } | null;
  /**
   * Follows, to its end, the platform's own task that a gateway task was
   * waiting on when the gateway stopped (vSphere `task-123`); null where the
   * platform keeps no tasks of its own to follow.
   */
  resumeTask(
    task: { operation: TaskOperation; upstreamTaskId: string | null },
    reporter: OperationReporter,
  ): Promise<OperationResult> | null;
  /**
   * Feeds the live inventory: reads everything, then reports each change
   * (from the platform's change stream where it has one), until stopped.
   */
  watch(sink: WatchSink, options: WatchOptions): InventoryWatch;
  /** How this platform words one of its own errors for clients; null when the error is not its. */
  describeError(error: unknown): UpstreamErrorDescription | null;
  /** Performance counters of VMs and hosts; null where the platform has none the gateway can read. */
  readonly metrics: MetricsSource | null;
}

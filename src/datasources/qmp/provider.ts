import { cpus, totalmem } from 'node:os';

import type { Logger } from 'pino';

import type { QmpPlatformConfig } from '../../config/schema.js';
import { type UpstreamErrorDescription, errorMessage } from '../../model/errors.js';
import type { HostRecord } from '../../model/host.js';
import type { ClusterRecord, DatacenterRecord } from '../../model/inventory.js';
import type { NetworkRecord } from '../../model/network.js';
import {
  OperationFailedError,
  type MigrationTarget,
  type OperationReporter,
  type OperationResult,
  type VmOperation,
} from '../../model/operations.js';
import type { PlatformState } from '../../model/platform.js';
import type { SnapshotRecord } from '../../model/snapshot.js';
import type { StorageRecord, StorageVolumeRecord } from '../../model/storage.js';
import type { VmDetails, VmRecord } from '../../model/vm.js';
import { readInventory } from '../full-read.js';
import type { Provider } from '../provider.js';
import type { RequestScope } from '../request-scope.js';
import { createRequestScope } from '../request-scope.js';
import type { InventoryWatch, VmState, WatchOptions, WatchSink } from '../watch.js';
import { type FleetHost, type QmpMonitor, QmpFleet, formatVersion } from './fleet.js';
import { QMP_CANNOT_CREATE, QMP_UNSUPPORTED, runQmpOperation } from './operations.js';
import { QmpVmNotConnectedError, describeQmpPlatformError } from './errors.js';
import { readBlocks, readVmDetails, readVmRecord, readVmState, snapshotsOf } from './read.js';
import { LOCAL_HOST, hostName, parseSocketEntry } from './sockets.js';
import { watchQmp } from './watch.js';

/**
 * QEMU processes reached by their QMP monitors as a platform: one VM per
 * QEMU, one host per machine they run on (the gateway's own for unix
 * sockets, each TCP host otherwise), no networks, storage, datacenters or
 * clusters. The gateway holds the one QMP connection each QEMU serves (see
 * fleet.ts); reads ask the QEMUs in parallel, one command of each kind per
 * QEMU, so a read's upstream calls grow with the number of QEMUs (there is
 * no bulk QMP). Operations are in operations.ts: a QMP VM that the
 * gateway stops (its QEMU ends) cannot be started again by the gateway.
 */
export class QmpProvider implements Provider {
  readonly kind = 'QMP' as const;
  readonly id: string;
  /** The configured sockets, as given. */
  readonly uri: string;
  /** QEMU's monitor has no CPU or memory usage counters. */
  readonly metrics = null;
  readonly unsupported = QMP_UNSUPPORTED;
  /**
   * startVm runs a QEMU that is paused or was started with -S (prelaunch),
   * and a -no-shutdown QEMU whose guest shut down (OFF).
   */
  readonly allowedStates = { START_VM: ['PAUSED', 'OFF'] } as const;
  private readonly fleet: QmpFleet;

  constructor(
    private readonly config: QmpPlatformConfig,
    private readonly logger: Logger,
  ) {
    this.id = config.id;
    this.uri = config.sockets.join(',');
    this.fleet = new QmpFleet({
      platformId: config.id,
      logger,
      entries: config.sockets.map(parseSocketEntry),
      commandTimeoutMs: config.commandTimeoutMs,
      rescanIntervalMs: config.rescanIntervalMs,
      retryInitialMs: config.retryInitialMs,
      retryMaxMs: config.retryMaxMs,
    });
  }

  start(): Promise<void> {
    return this.fleet.start();
  }

  stop(): Promise<void> {
    return this.fleet.stop();
  }

  state(): PlatformState {
    return this.fleet.state();
  }

  onStatusChange(listener: (state: PlatformState) => void): void {
    this.fleet.onStatusChange(listener);
  }

  /** The connected QEMUs, for tests. */
  monitors(): readonly QmpMonitor[] {
    return this.fleet.monitors();
  }

  // ---------------------------------------------------------------- reads

  async listDatacenters(): Promise<DatacenterRecord[]> {
    return [];
  }

  async listClusters(): Promise<ClusterRecord[]> {
    return [];
  }

  async listNetworks(): Promise<NetworkRecord[]> {
    return [];
  }

  async listStorage(): Promise<StorageRecord[]> {
    return [];
  }

  async getVolumes(poolIds: readonly string[]): Promise<(StorageVolumeRecord[] | Error)[]> {
    return poolIds.map(() => []);
  }

  async listHosts(): Promise<HostRecord[]> {
    this.fleet.assertConnected();
    return this.fleet.hosts().map((h) => this.hostRecord(h));
  }

  /** Every connected QEMU's VM; one that closed its connection meanwhile is left out. */
  async listVms(): Promise<VmRecord[]> {
    this.fleet.assertConnected();
    const monitors = this.fleet.monitors();
    const read = await Promise.allSettled(monitors.map((m) => readVmRecord(this.id, m)));
    return read.flatMap((r, i) => {
      if (r.status === 'fulfilled') return [r.value];
      if (!this.gone(monitors[i] as QmpMonitor))
        this.logger.warn({ vm: monitors[i]?.name, err: errorMessage(r.reason) }, 'could not read a QEMU');
      return [];
    });
  }

  async getVmDetails(ids: readonly string[], scope: RequestScope): Promise<(VmDetails | Error)[]> {
    this.fleet.assertConnected();
    return Promise.all(ids.map((id) => this.perVm(id, (m) => readVmDetails(m, scope))));
  }

  async getSnapshots(ids: readonly string[], scope: RequestScope): Promise<(SnapshotRecord[] | Error)[]> {
    this.fleet.assertConnected();
    return Promise.all(
      ids.map((id) => this.perVm(id, async (m) => snapshotsOf(this.id, m.vmNativeId, await readBlocks(m, scope)))),
    );
  }

  async readVmStates(ids: readonly string[], scope: RequestScope): Promise<Map<string, VmState | null | Error>> {
    this.fleet.assertConnected();
    const states = await Promise.all(
      ids.map(async (id): Promise<VmState | null | Error> => {
        const m = this.fleet.monitor(id);
        if (!m) return null;
        try {
          return await readVmState(this.id, m, scope);
        } catch (e) {
          return this.gone(m) ? null : toError(e);
        }
      }),
    );
    return new Map(ids.map((id, i) => [id, states[i] as VmState | null | Error]));
  }

  /** One VM's read, or an Error for a VM no connected QEMU holds (or whose read failed). */
  private async perVm<T>(id: string, read: (m: QmpMonitor) => Promise<T>): Promise<T | Error> {
    const m = this.fleet.monitor(id);
    if (!m) return new QmpVmNotConnectedError(id);
    try {
      return await read(m);
    } catch (e) {
      return toError(e);
    }
  }

  /** Whether a QEMU's connection has closed (it exited): its VM is gone rather than unreadable. */
  private gone(m: QmpMonitor): boolean {
    // A command that failed with the connection may settle before the fleet has heard of the close.
    return this.fleet.monitor(m.vmNativeId) !== m || m.client.state === 'closing' || m.client.state === 'closed';
  }

  private hostRecord(h: FleetHost): HostRecord {
    const local = h.nativeId === LOCAL_HOST;
    const cpuList = local ? cpus() : [];
    const versions = [...new Set(h.monitors.map((m) => formatVersion(m.version)))].sort();
    const builds = [...new Set(h.monitors.map((m) => m.version.package).filter((p) => p !== ''))].sort();
    const reachable = h.monitors.length > 0 || !h.failed;
    return {
      platformId: this.id,
      nativeId: h.nativeId,
      name: hostName(h.nativeId),
      // The gateway's own machine is known; a TCP host says nothing of itself over QMP.
      cpuModel: cpuList[0]?.model.trim() ?? null,
      cpuMhz: cpuList[0]?.speed || null,
      cpuSockets: null,
      cpuCoresPerSocket: null,
      cpuThreadsPerCore: null,
      cpuThreads: local ? cpuList.length : null,
      numaNodes: null,
      memoryMiB: local ? Math.floor(totalmem() / (1024 * 1024)) : null,
      hypervisorType: 'QEMU',
      rawHypervisorType: 'QEMU',
      hypervisorVersion: versions.length > 0 ? versions.join(', ') : null,
      hypervisorBuild: builds.length > 0 ? builds.join(', ') : null,
      libvirtVersion: null,
      uuid: null,
      connectionState: reachable ? 'CONNECTED' : 'DISCONNECTED',
      powerState: reachable ? 'ON' : 'UNKNOWN',
      inMaintenanceMode: false,
      clusterNativeId: null,
      datacenterNativeId: null,
      vsphere: null,
    };
  }

  // ---------------------------------------------------------------- operations

  runOperation(vmNativeId: string, op: VmOperation, reporter: OperationReporter): Promise<OperationResult> {
    this.fleet.assertConnected();
    const m = this.fleet.monitor(vmNativeId);
    if (!m) {
      return Promise.reject(
        new OperationFailedError('the VM has gone: its QEMU is no longer connected (it has exited?)', 'NOT_FOUND'),
      );
    }
    return runQmpOperation(m, op, reporter, { gracefulStopTimeoutMs: this.config.gracefulStopTimeoutMs });
  }

  /** Refuses every new VM before a task starts (the mutation path has no other place to say so). */
  placementProblem(): string {
    return QMP_CANNOT_CREATE;
  }

  createVm(): Promise<OperationResult> {
    return Promise.reject(new OperationFailedError(QMP_CANNOT_CREATE, 'UNSUPPORTED'));
  }

  /** A MIGRATE_VM, which the mutation path refuses as UNSUPPORTED with its reason (Provider.unsupported). */
  planMigration(_vm: VmRecord, target: MigrationTarget): VmOperation {
    return { kind: 'MIGRATE_VM', hostNativeId: target.hostNativeId, storageNativeId: null, destination: null };
  }

  /** QEMU jobs are followed while the gateway runs; a task cut short by a restart is not resumed. */
  resumeTask(): null {
    return null;
  }

  watch(sink: WatchSink, options: WatchOptions): InventoryWatch {
    return watchQmp(sink, options, {
      platformId: this.id,
      logger: this.logger,
      subscribe: (listener) => this.fleet.subscribe(listener),
      state: () => this.fleet.state(),
      readAll: () => readInventory(this),
      readVms: (ids) => this.readVmStates(ids, createRequestScope()),
      readHosts: () => this.listHosts(),
    });
  }

  describeError(error: unknown): UpstreamErrorDescription | null {
    return describeQmpPlatformError(error);
  }
}

function toError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

import type { Logger } from 'pino';

import type { LibvirtPlatformConfig } from '../../config/schema.js';
import type { HostRecord } from '../../model/host.js';
import type { ClusterRecord, DatacenterRecord } from '../../model/inventory.js';
import { childNativeId } from '../../model/ids.js';
import type { NetworkRecord } from '../../model/network.js';
import type { SnapshotRecord } from '../../model/snapshot.js';
import type { StoragePoolRecord, StorageVolumeRecord } from '../../model/storage.js';
import type { VmDetails, VmRecord } from '../../model/vm.js';
import { ConnectedProvider, PlatformConnection } from '../platform-connection.js';
import { readInventory } from '../full-read.js';
import type { Provider } from '../provider.js';
import type { VmState, WatchOptions, WatchSink } from '../watch.js';
import type { UpstreamErrorDescription } from '../../model/errors.js';
import type {
  MigrationTarget,
  OperationReporter,
  OperationResult,
  Unsupported,
  VmOperation,
  Placement,
  VmSpec,
} from '../../model/operations.js';
import { DomainStats, ListDomainsFlags } from './addon.js';
import { LibvirtClient } from './client.js';
import { LibvirtMetricsSource } from './metrics.js';
import { parseOrError, readDomainStates, snapshotRecords, vmRecordOf } from './domain-read.js';
import { createDomain, runDomainOperation } from './operations.js';
import { type LibvirtInventoryWatch, watchLibvirt } from './watch.js';
import { migrateDomain, planLibvirtMigration } from './migration.js';
import {
  VirErr,
  describeLibvirtError,
  isAuthFailure,
  isConnectionFailure,
  isLibvirtCode,
  isLibvirtError,
} from './errors.js';
import { formatVersion, poolState, volumeType } from './states.js';
import { hypervisorTypeOf, parseDomainXml, parseNetworkXml, parsePoolXml, parseVolumeXml } from './xml.js';

/** One libvirt connection (one host) as a platform. */
export class LibvirtProvider extends ConnectedProvider<LibvirtClient> implements Provider {
  readonly kind = 'LIBVIRT' as const;
  readonly id: string;
  readonly uri: string;
  protected readonly connection: PlatformConnection<LibvirtClient>;
  /** Bulk domain stats and the host's counters; see metrics.ts. */
  readonly metrics: LibvirtMetricsSource;
  /** The host's name as read at connect; the native ID of the platform's single host. */
  private hostName = '';

  constructor(
    private readonly config: LibvirtPlatformConfig,
    private readonly logger: Logger,
  ) {
    super();
    this.id = config.id;
    this.uri = config.uri;
    this.connection = new PlatformConnection({
      platformId: config.id,
      logger,
      connect: async () => {
        const client = await LibvirtClient.open(config.uri, {
          readOnly: config.readOnly,
          username: config.username,
          password: config.password,
        });
        try {
          const info = await client.call('getHostInfo');
          this.hostName = info.hostname;
          return {
            client,
            hypervisorType: info.hypervisorType,
            hypervisorVersion: formatVersion(info.hypervisorVersion),
          };
        } catch (e) {
          await client.close();
          throw e;
        }
      },
      disconnect: (client) => client.close(),
      isAuthFailure,
      // A dead remote connection reports some calls as internal errors
      // ("client socket is closed"): libvirt's own liveness check decides.
      isConnectionFailure: async (e, client) => {
        if (isConnectionFailure(e)) return true;
        if (!isLibvirtError(e)) return false;
        try {
          return !(await client.call('isAlive'));
        } catch {
          return true; // closed already, by a call that failed before this one
        }
      },
      retryInitialMs: config.retryInitialMs,
      retryMaxMs: config.retryMaxMs,
    });
    this.metrics = new LibvirtMetricsSource({
      use: (fn) => this.connection.use(fn),
      hostName: () => this.hostName,
      setStatsPeriod: !config.readOnly,
      logger,
    });
  }

  /** Every operation maps to a libvirt call; a driver that lacks one fails the task with libvirt's reason. */
  /** The test driver cannot migrate; other drivers say so themselves when they cannot. */
  get unsupported(): Unsupported {
    return this.state().hypervisorType === 'TEST'
      ? { MIGRATE_VM: "libvirt's test driver cannot migrate domains." }
      : {};
  }
  /** Copying the disks of a running domain would copy them mid-write. */
  readonly allowedStates = { CLONE_VM: ['OFF'] } as const;

  runOperation(uuid: string, op: VmOperation, reporter: OperationReporter): Promise<OperationResult> {
    if (op.kind === 'MIGRATE_VM') {
      return migrateDomain(
        {
          use: (fn) => this.connection.use(fn),
          open: () =>
            LibvirtClient.open(this.config.uri, {
              readOnly: this.config.readOnly,
              username: this.config.username,
              password: this.config.password,
            }),
        },
        uuid,
        op,
        reporter,
      );
    }
    return this.connection.use((c) => runDomainOperation(c, uuid, op, reporter, this.config.gracefulStopTimeoutMs));
  }

  createVm(spec: VmSpec, reporter: OperationReporter): Promise<OperationResult> {
    return this.connection.use((c) => createDomain(c, spec, reporter));
  }

  /** libvirt runs operations as calls, with no task of its own to follow after a restart. */
  resumeTask(): null {
    return null;
  }

  /**
   * Follows libvirt's events on the platform's connection (see watch.ts):
   * a full read, then a targeted read of each object an event names.
   */
  watch(sink: WatchSink, options: WatchOptions): LibvirtInventoryWatch {
    const liveness = {
      livenessIntervalMs: this.config.livenessIntervalMs,
      livenessTimeoutMs: this.config.livenessTimeoutMs,
    };
    return watchLibvirt(
      sink,
      { ...options, ...liveness },
      {
        platformId: this.id,
        logger: this.logger,
        readAll: () => readInventory(this),
        readDomains: (uuids) => this.readVmStates(uuids),
        readNetworks: () => this.listNetworks(),
        readStorage: async (pools) => {
          const [storage, volumes] = await Promise.all([this.listStorage(), this.getVolumes(pools)]);
          return { storage, volumes };
        },
        subscribe: (listener) => this.connection.use((c) => c.call('subscribeEvents', listener)),
        // A round trip to the daemon: virConnectIsAlive only looks at the client's own socket.
        probe: () => this.connection.use((c) => c.call('getHostInfo')),
      },
    );
  }

  planMigration(vm: VmRecord, target: MigrationTarget): VmOperation {
    return planLibvirtMigration(vm, target);
  }

  describeError(error: unknown): UpstreamErrorDescription | null {
    return describeLibvirtError(error);
  }

  /** libvirt places a VM on the host of its connection; nothing to choose. */
  placementProblem(placement: Placement): string | null {
    if (placement.clusterNativeId) return 'libvirt has no clusters; leave clusterId out.';
    if (placement.folderPath || placement.resourcePoolPath)
      return 'libvirt has no folders or resource pools; file the VM with tags instead.';
    return null;
  }

  /** libvirt has no datacenters or clusters. */
  async listDatacenters(): Promise<DatacenterRecord[]> {
    return [];
  }

  async listClusters(): Promise<ClusterRecord[]> {
    return [];
  }

  listHosts(): Promise<HostRecord[]> {
    return this.connection.use(async (c) => {
      const [info, caps] = await Promise.all([c.call('getHostInfo'), c.call('getCapabilities')]);
      this.hostName = info.hostname;
      const cpuModel = hostCpuModel(caps) ?? info.node.model;
      const n = info.node;
      return [
        {
          platformId: this.id,
          nativeId: info.hostname,
          name: info.hostname,
          cpuModel,
          cpuMhz: n.mhz,
          cpuSockets: n.sockets * n.numaNodes,
          cpuCoresPerSocket: n.cores,
          cpuThreadsPerCore: n.threads,
          cpuThreads: n.cpus,
          numaNodes: n.numaNodes,
          memoryMiB: Math.floor(n.memoryKiB / 1024),
          hypervisorType: hypervisorTypeOf(info.hypervisorType),
          rawHypervisorType: info.hypervisorType,
          hypervisorVersion: formatVersion(info.hypervisorVersion),
          hypervisorBuild: null,
          libvirtVersion: formatVersion(info.libvirtVersion),
          uuid: hostUuid(caps),
          connectionState: 'CONNECTED' as const,
          powerState: 'ON' as const,
          inMaintenanceMode: false,
          clusterNativeId: null,
          datacenterNativeId: null,
          vsphere: null,
        },
      ];
    });
  }

  /**
   * Every domain, active or not, in three calls: one bulk stats call for
   * names, UUIDs and states, and two filtered listings for the persistent
   * and autostart sets (cheaper than asking each domain).
   */
  listVms(): Promise<VmRecord[]> {
    return this.connection.use(async (c) => {
      const [stats, persistent, autostart] = await Promise.all([
        c.call('getAllDomainStats', DomainStats.STATE, 0),
        c.call('listAllDomains', ListDomainsFlags.PERSISTENT),
        c.call('listAllDomains', ListDomainsFlags.AUTOSTART),
      ]);
      const persistentSet = new Set(persistent.map((d) => d.uuid));
      const autostartSet = new Set(autostart.map((d) => d.uuid));
      return stats.map((d) =>
        vmRecordOf(this.id, this.hostName || null, {
          uuid: d.uuid,
          name: d.name,
          id: d.id,
          state: num(d.params['state.state']),
          reason: num(d.params['state.reason']),
          persistent: persistentSet.has(d.uuid),
          autostart: autostartSet.has(d.uuid),
        }),
      );
    });
  }

  getVmDetails(uuids: readonly string[]): Promise<(VmDetails | Error)[]> {
    return this.connection.use(async (c) => {
      const xmls = await c.call('getDomainXmlDescs', uuids, 0);
      return xmls.map((x) => (x instanceof Error ? x : parseOrError(() => parseDomainXml(x))));
    });
  }

  readVmStates(uuids: readonly string[]): Promise<Map<string, VmState | null | Error>> {
    return this.connection.use((c) => readDomainStates(c, this.id, this.hostName || null, uuids));
  }

  /** Reads snapshots only of the domains that have any (one filtered listing finds them). */
  getSnapshots(uuids: readonly string[]): Promise<(SnapshotRecord[] | Error)[]> {
    return this.connection.use(async (c) => {
      const withSnapshots = new Set((await c.call('listAllDomains', ListDomainsFlags.HAS_SNAPSHOT)).map((d) => d.uuid));
      const toRead = uuids.filter((u) => withSnapshots.has(u));
      const read = toRead.length > 0 ? await c.call('listDomainSnapshots', toRead) : [];
      const byUuid = new Map(toRead.map((u, i) => [u, read[i]]));
      return uuids.map((vmUuid) => {
        const snaps = byUuid.get(vmUuid) ?? [];
        if (snaps instanceof Error) return snaps;
        return parseOrError(() => snapshotRecords(this.id, vmUuid, snaps));
      });
    });
  }

  listNetworks(): Promise<NetworkRecord[]> {
    return this.connection.use(async (c) => {
      const nets = await c.call('listAllNetworks', 0);
      return nets.map((n) => ({
        platformId: this.id,
        nativeId: n.uuid,
        name: n.name,
        kind: 'LIBVIRT_NETWORK' as const,
        datacenterNativeId: null,
        uuid: n.uuid,
        active: n.active,
        persistent: n.persistent,
        autostart: n.autostart,
        ...parseNetworkXml(n.xml),
      }));
    });
  }

  listStorage(): Promise<StoragePoolRecord[]> {
    return this.connection.use(async (c) => {
      const pools = await c.call('listAllStoragePools', 0);
      return pools.map((p) => {
        const state = poolState(p.state);
        return {
          storageKind: 'StoragePool' as const,
          platformId: this.id,
          nativeId: p.uuid,
          uuid: p.uuid,
          name: p.name,
          capacityBytes: p.capacity,
          allocationBytes: p.allocation,
          availableBytes: availableBytes(p.capacity, p.allocation, p.available),
          accessible: state === 'RUNNING' || state === 'DEGRADED',
          state,
          active: state !== 'INACTIVE',
          persistent: p.persistent,
          autostart: p.autostart,
          ...parsePoolXml(p.xml),
        };
      });
    });
  }

  getVolumes(poolUuids: readonly string[]): Promise<(StorageVolumeRecord[] | Error)[]> {
    return this.connection.use(async (c) => {
      const perPool = await c.call('listStorageVolumes', poolUuids);
      return perPool.map((vols, i) => {
        // An inactive pool has no volume list; that is an empty list, not an error.
        if (vols instanceof Error) return isLibvirtCode(vols, VirErr.OPERATION_INVALID) ? [] : vols;
        const poolUuid = poolUuids[i] as string;
        return parseOrError(() =>
          vols.map((v) => {
            const parsed = parseVolumeXml(v.xml);
            return {
              platformId: this.id,
              nativeId: childNativeId(poolUuid, v.name),
              poolNativeId: poolUuid,
              name: v.name,
              key: v.key,
              path: parsed.path ?? v.key,
              type: volumeType(parsed.type),
              format: parsed.format,
              capacityBytes: parsed.capacityBytes,
              allocationBytes: parsed.allocationBytes,
            };
          }),
        );
      });
    });
  }
}

/**
 * Free bytes of a pool. Drivers compute it as an unsigned capacity minus
 * allocation, which wraps around to ~2^64 when a pool is over-allocated;
 * such a value is replaced by what can be derived from the other two.
 */
export function availableBytes(capacity: number, allocation: number, available: number): number {
  return available <= capacity ? available : Math.max(0, capacity - allocation);
}

/** The host's UUID from capabilities XML (`<host><uuid>`), absent on some drivers. */
function hostUuid(capabilities: string): string | null {
  return /<host>\s*<uuid>([^<]+)<\/uuid>/.exec(capabilities)?.[1] ?? null;
}

/** The host CPU model from capabilities XML (`<host><cpu><model>`), absent on some drivers. */
function hostCpuModel(capabilities: string): string | null {
  const hostCpu = /<host>\s*(?:<uuid>[^<]*<\/uuid>\s*)?<cpu>([\s\S]*?)<\/cpu>/.exec(capabilities)?.[1];
  return hostCpu ? (/<model[^>]*>([^<]+)<\/model>/.exec(hostCpu)?.[1] ?? null) : null;
}

function num(v: number | string | boolean | undefined): number | undefined {
  return typeof v === 'number' ? v : undefined;
}

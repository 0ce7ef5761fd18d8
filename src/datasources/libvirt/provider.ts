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
import type { Provider } from '../provider.js';
import type { OperationReporter, OperationResult, Reconfiguration, Unsupported, VmOperation, VmSpec } from '../operations.js';
import { editDomainXml } from './domain-edit.js';
import { OperationFailedError } from '../operations.js';
import {
  type DomainOperation,
  DomainStats,
  DomainXmlFlags,
  ListDomainsFlags,
  MigrateFlags,
  SnapshotCreateFlags,
  SnapshotDeleteFlags,
  UndefineFlags,
} from './addon.js';
import { LibvirtClient } from './client.js';
import { VirErr, isAuthFailure, isConnectionFailure, isLibvirtCode } from './errors.js';
import { domainState, formatVersion, poolState, snapshotPowerState, volumeType } from './states.js';
import { parseDomainXml, parseNetworkXml, parsePoolXml, parseSnapshotXml, parseVolumeXml } from './xml.js';

/** One libvirt connection (one host) as a platform. */
export class LibvirtProvider extends ConnectedProvider<LibvirtClient> implements Provider {
  readonly kind = 'LIBVIRT' as const;
  readonly id: string;
  readonly uri: string;
  protected readonly connection: PlatformConnection<LibvirtClient>;
  /** The host's name as read at connect; the native ID of the platform's single host. */
  private hostName = '';

  constructor(config: LibvirtPlatformConfig, logger: Logger) {
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
      isConnectionFailure,
      retryInitialMs: config.retryInitialMs,
      retryMaxMs: config.retryMaxMs,
    });
  }



  /** Every operation maps to a libvirt call; a driver that lacks one fails the task with libvirt's reason. */
  /** The test driver cannot migrate; other drivers say so themselves when they cannot. */
  get unsupported(): Unsupported {
    return this.state().hypervisorType === 'TEST' ? { MIGRATE_VM: "libvirt's test driver cannot migrate domains." } : {};
  }
  /** Copying the disks of a running domain would copy them mid-write. */
  readonly allowedStates = { CLONE_VM: ['OFF'] } as const;

  runOperation(uuid: string, op: VmOperation, reporter: OperationReporter): Promise<OperationResult> {
    return this.connection.use(async (c) => {
      const lifecycle = (operation: DomainOperation, flags = 0) => c.call('domainLifecycle', uuid, operation, flags);
      switch (op.kind) {
        case 'START_VM':
        case 'RESUME_VM': // a managed save is restored by starting the domain
          await lifecycle('create');
          return {};
        case 'STOP_VM':
          if (op.force) {
            await lifecycle('destroy');
          } else {
            await lifecycle('shutdown');
            await this.waitUntilOff(c, uuid, reporter);
          }
          return {};
        case 'REBOOT_VM':
          await lifecycle('reboot');
          return {};
        case 'RESET_VM':
          await lifecycle('reset');
          return {};
        case 'SUSPEND_VM':
          await lifecycle('managedSave');
          return {};
        case 'PAUSE_VM':
          await lifecycle('suspend');
          return {};
        case 'UNPAUSE_VM':
          await lifecycle('resume');
          return {};
        case 'DELETE_VM': {
          const [state] = (await c.call('getAllDomainStats', DomainStats.STATE, 0)).filter((d) => d.uuid === uuid);
          if (state && state.id >= 0) await lifecycle('destroy');
          const persistent = (await c.call('listAllDomains', ListDomainsFlags.PERSISTENT)).some((d) => d.uuid === uuid);
          // A transient domain is gone once destroyed; a persistent one is undefined with everything it owns.
          if (persistent) await this.undefineAll(c, uuid);
          return {};
        }
        case 'CREATE_SNAPSHOT': {
          const flags = SnapshotCreateFlags.ATOMIC | (op.quiesce ? SnapshotCreateFlags.QUIESCE : 0);
          return { snapshotKey: await c.call('snapshotCreate', uuid, snapshotXml(op), flags) };
        }
        case 'REVERT_TO_SNAPSHOT':
          await c.call('snapshotRevert', uuid, op.snapshotKey, 0);
          return {};
        case 'DELETE_SNAPSHOT':
          await c.call('snapshotDelete', uuid, op.snapshotKey, op.withChildren ? SnapshotDeleteFlags.CHILDREN : 0);
          return {};
        case 'CLONE_VM':
          return this.clone(c, uuid, op, reporter);
        case 'RECONFIGURE_VM':
          await this.reconfigure(c, uuid, op);
          return {};
        case 'MIGRATE_VM': {
          if (!op.destination) throw new OperationFailedError('a libvirt VM moves to another libvirt platform (host)', 'INVALID_INPUT');
          const running = (await c.call('getAllDomainStats', DomainStats.STATE, 0)).some((d) => d.uuid === uuid && d.id >= 0);
          const flags =
            MigrateFlags.PEER2PEER | MigrateFlags.PERSIST_DEST | MigrateFlags.UNDEFINE_SOURCE | (running ? MigrateFlags.LIVE : MigrateFlags.OFFLINE);
          await c.call('migrateToUri', uuid, op.destination.uri, flags);
          return { vmNativeId: uuid, vmPlatformId: op.destination.platformId };
        }
      }
    });
  }

  /**
   * A clone is the source's inactive definition under a new name, without
   * its UUID and MAC addresses (libvirt makes new ones), with every disk
   * image copied into a new volume of the same pool; CD-ROMs stay shared.
   */
  private async clone(
    c: LibvirtClient,
    uuid: string,
    op: Extract<VmOperation, { kind: 'CLONE_VM' }>,
    reporter: OperationReporter,
  ): Promise<OperationResult> {
    if (op.placement.storageNativeId) {
      throw new OperationFailedError('libvirt clones copy disks within their own pool; leave storage out of the placement', 'UNSUPPORTED');
    }
    const [source] = await c.call('getDomainXmlDescs', [uuid], DomainXmlFlags.INACTIVE | DomainXmlFlags.SECURE);
    if (source === undefined || source instanceof Error) throw source ?? new OperationFailedError('the source VM has gone');
    let xml = source
      .replace(/<test:[a-z]+[\s\S]*?<\/test:[a-z]+>|<test:[a-z]+[^>]*\/>/g, '') // test-driver metadata (run state, snapshots)
      .replace(/<uuid>[^<]*<\/uuid>\s*/, '')
      .replace(/<mac address=['"][^'"]*['"]\s*\/>\s*/g, '')
      .replace(/<name>[^<]*<\/name>/, `<name>${escapeXml(op.name)}</name>`);
    const disks = [...xml.matchAll(/<disk type=['"](file|volume)['"] device=['"]disk['"][\s\S]*?<\/disk>/g)];
    const volumes = await this.volumeIndex(c);
    for (const [i, [disk]] of disks.entries()) {
      const file = /<source file=['"]([^'"]+)['"]/.exec(disk)?.[1];
      const poolVolume = /<source pool=['"]([^'"]+)['"] volume=['"]([^'"]+)['"]/.exec(disk);
      const sourcePath = file ?? (poolVolume ? volumes.byPoolAndName.get(`${poolVolume[1]}/${poolVolume[2]}`) : undefined);
      if (!sourcePath) throw new OperationFailedError(`disk ${i + 1} of the source is not a volume of a storage pool; the gateway cannot copy it`, 'UNSUPPORTED');
      const extension = /\.[a-z0-9]+$/i.exec(sourcePath)?.[0] ?? '';
      const newPath = await c.call('cloneVolume', sourcePath, `${op.name}-disk${i + 1}${extension}`);
      const newName = newPath.slice(newPath.lastIndexOf('/') + 1);
      const copied = file
        ? disk.replace(/<source file=['"][^'"]+['"]/, `<source file='${escapeXml(newPath)}'`)
        : disk.replace(/volume=['"][^'"]+['"]/, `volume='${escapeXml(newName)}'`);
      xml = xml.replace(disk, copied);
      reporter.progress(10 + ((i + 1) / disks.length) * 70);
    }
    const created = await c.call('defineXml', xml);
    if (op.powerOn) await c.call('domainLifecycle', created.uuid, 'create', 0);
    return { vmNativeId: created.uuid };
  }

  /**
   * Changes the persistent definition: a running domain takes the changes
   * at its next start. New disks are new qcow2 volumes in the named pool, or
   * in the pool of the VM's first disk.
   */
  private async reconfigure(c: LibvirtClient, uuid: string, change: Reconfiguration): Promise<void> {
    const [source] = await c.call('getDomainXmlDescs', [uuid], DomainXmlFlags.INACTIVE | DomainXmlFlags.SECURE);
    if (source === undefined || source instanceof Error) throw source ?? new OperationFailedError('the VM has gone');
    const networks = await c.call('listAllNetworks', 0);
    const addNetworks = change.addNics.map((n) => {
      const net = networks.find((x) => x.uuid === n.networkNativeId);
      if (!net) throw new OperationFailedError(`no network ${n.networkNativeId} on this platform`, 'INVALID_INPUT');
      return net.name;
    });
    const addDiskPaths: { path: string; format: string }[] = [];
    if (change.addDisks.length > 0) {
      const pools = await c.call('listAllStoragePools', 0);
      const firstDisk = /<source file=['"]([^'"]+)['"]/.exec(source)?.[1];
      const home = pools.find((p) => firstDisk && parsePoolXml(p.xml).targetPath && firstDisk.startsWith(`${parsePoolXml(p.xml).targetPath}/`));
      const name = /<name>([^<]+)<\/name>/.exec(source)?.[1] ?? uuid;
      for (const [i, disk] of change.addDisks.entries()) {
        const pool = disk.storageNativeId ? pools.find((p) => p.uuid === disk.storageNativeId) : home;
        if (!pool) throw new OperationFailedError('name the storage pool for the new disk (the VM has no disk in a pool)', 'INVALID_INPUT');
        const volume = `<volume><name>${escapeXml(`${name}-${Date.now().toString(36)}-${i + 1}.qcow2`)}</name><capacity unit='bytes'>${disk.capacityBytes}</capacity><target><format type='qcow2'/></target></volume>`;
        addDiskPaths.push({ path: await c.call('createVolume', pool.uuid, volume), format: 'qcow2' });
      }
    }
    const xml = editDomainXml(source, {
      vcpus: change.vcpus,
      coresPerSocket: change.coresPerSocket,
      memoryMiB: change.memoryMiB,
      addDiskPaths,
      removeDiskTargets: change.removeDiskTargets,
      addNetworks,
      removeNicMacs: change.removeNicMacs,
    });
    await c.call('defineXml', xml);
  }

  /** libvirt places a VM on the host of its connection; nothing to choose. */
  placementProblem(spec: VmSpec): string | null {
    if (spec.placement.clusterNativeId) return 'libvirt has no clusters; leave clusterId out.';
    return null;
  }

  /**
   * Defines a domain of the connection's preferred guest type (kvm where
   * available), with new qcow2 volumes for its disks and virtio devices.
   */
  createVm(spec: VmSpec, reporter: OperationReporter): Promise<OperationResult> {
    return this.connection.use(async (c) => {
      const caps = await c.call('getCapabilities');
      const guest = preferredGuest(caps);
      if (!guest) throw new OperationFailedError('the hypervisor offers no hvm guest type', 'UNSUPPORTED');
      const [pools, networks] = await Promise.all([c.call('listAllStoragePools', 0), c.call('listAllNetworks', 0)]);
      const nets = spec.nics.map((n) => {
        const net = networks.find((x) => x.uuid === n.networkNativeId);
        if (!net) throw new OperationFailedError(`no network ${n.networkNativeId} on this platform`, 'INVALID_INPUT');
        return net.name;
      });
      const disks: { path: string; format: string }[] = [];
      for (const [i, disk] of spec.disks.entries()) {
        const pool = pools.find((p) => p.uuid === (disk.storageNativeId ?? spec.placement.storageNativeId)) ?? pools.find((p) => p.state === 2);
        if (!pool) throw new OperationFailedError('no running storage pool for the new disks', 'INVALID_INPUT');
        const volume = `<volume><name>${escapeXml(`${spec.name}-disk${i + 1}.qcow2`)}</name><capacity unit='bytes'>${disk.capacityBytes}</capacity><target><format type='qcow2'/></target></volume>`;
        disks.push({ path: await c.call('createVolume', pool.uuid, volume), format: 'qcow2' });
        reporter.progress(10 + ((i + 1) / spec.disks.length) * 60);
      }
      const skeleton =
        `<domain type='${guest.domainType}'><name>${escapeXml(spec.name)}</name>` +
        (spec.guestOs
          ? `<metadata><libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0"><libosinfo:os id="${escapeXml(spec.guestOs)}"/></libosinfo:libosinfo></metadata>`
          : '') +
        `<memory unit='KiB'>0</memory><currentMemory unit='KiB'>0</currentMemory><vcpu placement='static'>1</vcpu>` +
        `<os><type arch='${guest.arch}'>hvm</type><boot dev='hd'/></os>` +
        `<devices><graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/></devices></domain>`;
      const xml = editDomainXml(skeleton, {
        vcpus: spec.vcpus,
        coresPerSocket: spec.coresPerSocket,
        memoryMiB: spec.memoryMiB,
        addDiskPaths: disks,
        removeDiskTargets: [],
        addNetworks: nets,
        removeNicMacs: [],
      });
      const created = await c.call('defineXml', xml);
      if (spec.powerOn) await c.call('domainLifecycle', created.uuid, 'create', 0);
      return { vmNativeId: created.uuid };
    });
  }

  /** Paths of every volume by `pool/name`, for disks that name a pool volume. */
  private async volumeIndex(c: LibvirtClient): Promise<{ byPoolAndName: Map<string, string> }> {
    const pools = await c.call('listAllStoragePools', 0);
    const perPool = await c.call('listStorageVolumes', pools.map((p) => p.uuid));
    const byPoolAndName = new Map<string, string>();
    perPool.forEach((vols, i) => {
      if (vols instanceof Error) return;
      for (const v of vols) byPoolAndName.set(`${pools[i]!.name}/${v.name}`, parseVolumeXml(v.xml).path ?? v.key);
    });
    return { byPoolAndName };
  }

  /**
   * Undefines a domain with its managed save, snapshot and checkpoint
   * metadata and NVRAM. Drivers refuse flags they do not know (the test
   * driver refuses NVRAM), so fewer are tried in turn.
   */
  private async undefineAll(c: LibvirtClient, uuid: string): Promise<void> {
    const attempts = [
      UndefineFlags.MANAGED_SAVE | UndefineFlags.SNAPSHOTS_METADATA | UndefineFlags.NVRAM | UndefineFlags.CHECKPOINTS_METADATA,
      UndefineFlags.MANAGED_SAVE | UndefineFlags.SNAPSHOTS_METADATA,
      0,
    ];
    for (const [i, flags] of attempts.entries()) {
      try {
        await c.call('domainLifecycle', uuid, 'undefine', flags);
        return;
      } catch (e) {
        if (!isLibvirtCode(e, VirErr.INVALID_ARG) || i === attempts.length - 1) throw e;
      }
    }
  }

  /** A graceful shutdown returns at once; the task lasts until the guest is off. */
  private async waitUntilOff(c: LibvirtClient, uuid: string, reporter: OperationReporter): Promise<void> {
    const started = Date.now();
    for (;;) {
      const stats = (await c.call('getAllDomainStats', DomainStats.STATE, 0)).find((d) => d.uuid === uuid);
      if (!stats || stats.id < 0) return;
      const elapsed = Date.now() - started;
      if (elapsed > SHUTDOWN_TIMEOUT_MS) throw new OperationFailedError('the guest did not shut down in time; stop it with force', 'TIMEOUT');
      reporter.progress(10 + Math.floor((elapsed / SHUTDOWN_TIMEOUT_MS) * 80));
      await new Promise((r) => setTimeout(r, STATE_POLL_MS));
    }
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
          hypervisorType: info.hypervisorType,
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
      return stats.map((d) => {
        const state = domainState(num(d.params['state.state']), num(d.params['state.reason']));
        return {
          platformId: this.id,
          nativeId: d.uuid,
          name: d.name,
          uuid: d.uuid,
          ...state,
          runtimeId: d.id >= 0 ? d.id : null,
          persistent: persistentSet.has(d.uuid),
          autostart: autostartSet.has(d.uuid),
          isTemplate: false,
          hostNativeId: this.hostName || null,
        };
      });
    });
  }

  getVmDetails(uuids: readonly string[]): Promise<(VmDetails | Error)[]> {
    return this.connection.use(async (c) => {
      const xmls = await c.call('getDomainXmlDescs', uuids, 0);
      return xmls.map((x) => (x instanceof Error ? x : parseOrError(() => parseDomainXml(x))));
    });
  }

  /** Reads snapshots only of the domains that have any (one filtered listing finds them). */
  getSnapshots(uuids: readonly string[]): Promise<(SnapshotRecord[] | Error)[]> {
    return this.connection.use(async (c) => {
      const withSnapshots = new Set(
        (await c.call('listAllDomains', ListDomainsFlags.HAS_SNAPSHOT)).map((d) => d.uuid),
      );
      const toRead = uuids.filter((u) => withSnapshots.has(u));
      const read = toRead.length > 0 ? await c.call('listDomainSnapshots', toRead) : [];
      const byUuid = new Map(toRead.map((u, i) => [u, read[i]]));
      return uuids.map((vmUuid) => {
        const snaps = byUuid.get(vmUuid) ?? [];
        if (snaps instanceof Error) return snaps;
        return parseOrError(() =>
          snaps.map((s): SnapshotRecord => {
            const parsed = parseSnapshotXml(s.xml);
            return {
              platformId: this.id,
              nativeId: childNativeId(vmUuid, s.name),
              vmNativeId: vmUuid,
              name: s.name,
              description: parsed.description,
              createdAt: parsed.createdAt,
              rawState: parsed.state,
              powerState: snapshotPowerState(parsed.state),
              includesMemory: parsed.memory === 'internal' || parsed.memory === 'external'
                ? true
                : parsed.memory === null && (parsed.state === 'running' || parsed.state === 'paused'),
              isCurrent: s.current,
              quiesced: null,
              key: s.name,
              parentKey: parsed.parentName,
            };
          }),
        );
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

/** The hvm guest to create: the host's own architecture first, kvm before other domain types. */
export function preferredGuest(capabilities: string): { arch: string; domainType: string } | null {
  const hostArch = /<host>[\s\S]*?<arch>([^<]+)<\/arch>/.exec(capabilities)?.[1];
  const guests = [...capabilities.matchAll(/<guest>([\s\S]*?)<\/guest>/g)].flatMap(([, g]) => {
    if (!/<os_type>hvm<\/os_type>/.test(g ?? '')) return [];
    const arch = /<arch name=['"]([^'"]+)['"]/.exec(g ?? '')?.[1];
    const types = [...(g ?? '').matchAll(/<domain type=['"]([^'"]+)['"]/g)].map((m) => m[1] as string);
    return arch && types.length > 0 ? [{ arch, domainType: types.includes('kvm') ? 'kvm' : (types[0] as string) }] : [];
  });
  return guests.find((g) => g.arch === hostArch) ?? guests[0] ?? null;
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

/** How long a graceful shutdown may take before its task fails. @default 300_000 // 5 minutes */
const SHUTDOWN_TIMEOUT_MS = 300_000;
const STATE_POLL_MS = 250;

const escapeXml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function snapshotXml(op: Extract<VmOperation, { kind: 'CREATE_SNAPSHOT' }>): string {
  const description = op.description ? `<description>${escapeXml(op.description)}</description>` : '';
  const memory = op.includeMemory ? '' : "<memory snapshot='no'/>";
  return `<domainsnapshot><name>${escapeXml(op.name)}</name>${description}${memory}</domainsnapshot>`;
}

function num(v: number | string | boolean | undefined): number | undefined {
  return typeof v === 'number' ? v : undefined;
}

function parseOrError<T>(fn: () => T): T | Error {
  try {
    return fn();
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e));
  }
}

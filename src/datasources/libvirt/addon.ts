import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** Shapes returned by the native addon (native/libvirt/src/*_ops.cc). */
export interface NativeDomainRef {
  name: string;
  uuid: string;
  /** Runtime ID; -1 when the domain is not running. */
  id: number;
}
export interface NativeDomainStats extends NativeDomainRef {
  params: Record<string, number | string | boolean>;
}
/** What getDomainStats read: one entry per UUID asked, in order. */
export interface NativeDomainStatsReading {
  /** When libvirt read the counters: the middle of its stats call, in ms since the epoch (with a fraction). */
  time: number;
  /** The domain's record (an inactive one has little more than `state.*`), or an Error for a UUID with no domain. */
  domains: (NativeDomainStats | Error)[];
}
/** The host's counters by libvirt's field names; a part the driver does not support is its Error (VIR_ERR_NO_SUPPORT). */
export interface NativeNodeStats {
  /** When the CPU counters were read: the middle of that call, in ms since the epoch (with a fraction). */
  time: number;
  /** virNodeGetCPUStats over all CPUs, in ns: `kernel`, `user`, `idle`, `iowait` on Linux. */
  cpu: Record<string, number> | Error;
  /** virNodeGetMemoryStats over all NUMA cells, in KiB: `total`, `free`, `buffers`, `cached` on Linux. */
  memory: Record<string, number> | Error;
}
export interface NativeNodeInfo {
  model: string;
  memoryKiB: number;
  cpus: number;
  mhz: number;
  numaNodes: number;
  sockets: number;
  cores: number;
  threads: number;
}
export interface NativeHostInfo {
  hostname: string;
  hypervisorType: string;
  hypervisorVersion: number;
  libvirtVersion: number;
  node: NativeNodeInfo;
  uri: string;
}
export interface NativeSnapshot {
  name: string;
  xml: string;
  current: boolean;
}
export interface NativeNetwork {
  name: string;
  uuid: string;
  active: boolean;
  persistent: boolean;
  autostart: boolean;
  xml: string;
}
export interface NativeStoragePool {
  name: string;
  uuid: string;
  /** virStoragePoolState: 0 inactive, 1 building, 2 running, 3 degraded, 4 inaccessible. */
  state: number;
  capacity: number;
  allocation: number;
  available: number;
  persistent: boolean;
  autostart: boolean;
  xml: string;
}
export interface NativeStorageVolume {
  name: string;
  key: string;
  /** Path, type, sizes and format are read from here. */
  xml: string;
}

/** One domain as readDomains gives it: what listVms, getVmDetails and getSnapshots read of it. */
export interface NativeDomainRecord extends NativeDomainRef {
  /** virDomainState and its reason, as virDomainGetState gives them. */
  state: number;
  reason: number;
  persistent: boolean;
  autostart: boolean;
  /** The live definition (flags 0). */
  xml: string;
  /** Parents first. */
  snapshots: NativeSnapshot[];
}

/** Domain events the addon registers (virDomainEventID), by the name it reports them with. */
export type NativeDomainEventName =
  | 'lifecycle'
  | 'reboot'
  | 'device-added'
  | 'device-removed'
  | 'metadata-change'
  | 'tunable'
  | 'job-completed'
  | 'balloon-change'
  | 'disk-change'
  | 'block-job';

/** A libvirt event, as the addon's event loop thread saw it (native/libvirt/src/events.cc). */
export type NativeEvent =
  | {
      type: 'domain';
      event: NativeDomainEventName;
      uuid: string;
      name: string;
      /** lifecycle: virDomainEventType; metadata-change: virDomainMetadataType; disk-change: reason; block-job: type. */
      code?: number;
      /** lifecycle: the event's detail; block-job: its status. */
      detail?: number;
      /** device-added, device-removed, disk-change: the device alias. */
      alias?: string;
      nsuri?: string;
      /** tunable, job-completed: the names of the parameters. */
      params?: string[];
      actualKiB?: number;
      disk?: string;
    }
  | { type: 'network'; event: 'lifecycle'; uuid: string; name: string; code: number; detail: number }
  | { type: 'pool'; event: 'lifecycle' | 'refresh'; uuid: string; name: string; code?: number; detail?: number }
  /** The connection closed: virConnectCloseReason (0 error, 1 end of file, 2 keepalive, 3 closed by the client). */
  | { type: 'close'; event: 'close'; reason: number };

/** A live event subscription on one connection. */
export interface NativeEventSubscription {
  /** Deregisters every callback; the listener is not called once this returns. */
  unsubscribe(): Promise<void>;
  /** What was registered: 'close', 'domain:lifecycle', ..., 'network:lifecycle', 'pool:lifecycle', 'pool:refresh'. */
  registered: string[];
}

/** The addon's event loop thread and what is registered on it, process-wide. */
export interface NativeEventLoop {
  running: boolean;
  /** Why libvirt's event loop could not start; connections then work without events. */
  error: string | null;
  /** Subscriptions attached to a connection. */
  subscriptions: number;
  /** libvirt callbacks registered and not yet freed. */
  registrations: number;
}

/**
 * The native Connection class. Every method but isOpen/libvirtCalls runs on
 * the addon's own worker threads (see {@link NativeAddon.setThreadPoolSize}),
 * never on libuv's pool.
 */
export interface NativeConnection {
  close(): Promise<void>;
  isOpen(): boolean;
  /** libvirt API calls made through this connection so far. */
  libvirtCalls(): number;
  getHostInfo(): Promise<NativeHostInfo>;
  getCapabilities(): Promise<string>;
  isAlive(): Promise<boolean>;
  listAllDomains(flags?: number): Promise<NativeDomainRef[]>;
  getAllDomainStats(stats?: number, flags?: number): Promise<NativeDomainStats[]>;
  /**
   * Bulk stats (virDomainListGetStats) of the domains named, without asking
   * for every domain's: resolved like the other batches (a few by lookup,
   * more with one listing), then one stats call for all of them.
   */
  getDomainStats(uuids: readonly string[], stats?: number, flags?: number): Promise<NativeDomainStatsReading>;
  /** virDomainSetMemoryStatsPeriod on each domain: how often its guest reports memory use (0: never). */
  setMemoryStatsPeriod(uuids: readonly string[], periodSeconds: number, flags?: number): Promise<(true | Error)[]>;
  /** The host's CPU times and memory (virNodeGetCPUStats, virNodeGetMemoryStats), two calls each. */
  getNodeStats(): Promise<NativeNodeStats>;
  lookupDomainByUuid(uuid: string): Promise<NativeDomainRef>;
  lookupDomainByName(name: string): Promise<NativeDomainRef>;
  getDomainXmlDescs(uuids: readonly string[], flags?: number): Promise<(string | Error)[]>;
  listDomainSnapshots(uuids: readonly string[]): Promise<(NativeSnapshot[] | Error)[]>;
  listAllNetworks(flags?: number): Promise<NativeNetwork[]>;
  listAllStoragePools(flags?: number): Promise<NativeStoragePool[]>;
  listStorageVolumes(poolUuids: readonly string[]): Promise<(NativeStorageVolume[] | Error)[]>;
  domainLifecycle(uuid: string, operation: DomainOperation, flags?: number): Promise<true>;
  /** virDomainSetVcpusFlags (`vcpus`) or virDomainSetMemoryFlags (`memory`, in KiB). */
  domainSetResource(uuid: string, resource: 'vcpus' | 'memory', value: number, flags?: number): Promise<true>;
  /** Resolves with the new snapshot's name. */
  snapshotCreate(uuid: string, xml: string, flags?: number): Promise<string>;
  snapshotRevert(uuid: string, name: string, flags?: number): Promise<true>;
  snapshotDelete(uuid: string, name: string, flags?: number): Promise<true>;
  /**
   * Peer-to-peer migration to another libvirt URI (virDomainMigrateToURI3);
   * resolves once the migration job has ended. Its worker is held meanwhile,
   * so getJobStats and abortJob run on others.
   */
  migrateToUri(uuid: string, destUri: string, flags?: number, params?: NativeMigrateParams): Promise<true>;
  /** The domain's current job (virDomainGetJobStats); with JobStatsFlags.COMPLETED the last one that ended. */
  getJobStats(uuid: string, flags?: number): Promise<NativeJobStats>;
  /** virDomainAbortJob: stops the domain's current job (a migration: the guest stays on the source). */
  abortJob(uuid: string): Promise<true>;
  /** Defines (or redefines) a persistent domain. */
  defineXml(xml: string): Promise<NativeDomainRef>;
  /** Copies the volume at sourcePath into a new volume of the same pool; resolves with the copy's path. */
  cloneVolume(sourcePath: string, newName: string): Promise<string>;
  /** Creates a volume in a pool from its XML; resolves with its path. */
  createVolume(poolUuid: string, xml: string): Promise<string>;
  /** Deletes the volume at a path, data and all. */
  deleteVolume(path: string): Promise<true>;
  /** virNetworkCreate, virNetworkDestroy or virNetworkUndefine. */
  networkLifecycle(uuid: string, operation: 'create' | 'destroy' | 'undefine'): Promise<true>;
  /** virStoragePoolCreate, virStoragePoolDestroy or virStoragePoolRefresh. */
  poolLifecycle(uuid: string, operation: 'create' | 'destroy' | 'refresh'): Promise<true>;
  /** A few domains read whole without listing them all: null for a UUID with no domain. */
  readDomains(uuids: readonly string[]): Promise<(NativeDomainRecord | null | Error)[]>;
  /**
   * Registers for this connection's domain, network and storage pool events
   * and its close; the listener runs on the JS thread. Unsubscribe, or close
   * the connection (the listener then gets a last close event, reason 3).
   */
  subscribeEvents(listener: (event: NativeEvent) => void): Promise<NativeEventSubscription>;
}

/** Limits of one migration (virDomainMigrateToURI3's typed parameters); left out: none. */
export interface NativeMigrateParams {
  /** VIR_MIGRATE_PARAM_BANDWIDTH: at most this many MiB/s, a whole number from 1. */
  bandwidthMiBps?: number;
}

/** A domain job as virDomainGetJobStats reads it. */
export interface NativeJobStats {
  /** virDomainJobType: see {@link JobType}. */
  type: number;
  /** By libvirt's field names (VIR_DOMAIN_JOB_*): `data_total`, `data_processed`, `data_remaining`, `time_elapsed`, ... */
  params: Record<string, number | string | boolean>;
}

/** The libvirt call behind each name: virDomainCreateWithFlags, virDomainShutdownFlags, ... */
export type DomainOperation =
  'create' | 'shutdown' | 'destroy' | 'reboot' | 'reset' | 'suspend' | 'resume' | 'managedSave' | 'undefine';

export interface OpenOptions {
  readOnly?: boolean;
  username?: string;
  password?: string;
}

/** The addon's worker threads, as counted when asked. */
export interface NativeThreadPool {
  /** Most calls in flight at once; more wait in the queue. @default 16 */
  size: number;
  /** Threads started so far (they are started on demand, up to size). */
  threads: number;
  /** Threads running a libvirt call. */
  busy: number;
  /** Calls waiting for a thread. */
  queued: number;
}

interface NativeAddon {
  libvirtVersion: number;
  open(uri: string, options?: OpenOptions): Promise<NativeConnection>;
  /**
   * How many libvirt calls (across all connections) may block at once, 1 to
   * 1024. Each slow host holds one thread per call in flight, so this bounds
   * how many slow hosts can be waited on without delaying the others. Can be
   * changed at any time; surplus threads leave after their current call.
   */
  setThreadPoolSize(size: number): void;
  threadPool(): NativeThreadPool;
  eventLoop(): NativeEventLoop;
}

const ADDON_PATH = fileURLToPath(
  new URL('../../../native/libvirt/build/Release/virt_graph_libvirt.node', import.meta.url),
);

let loaded: NativeAddon | undefined;

/** Loads the addon on first use, with a message that says how to build it when it is missing. */
export function nativeAddon(): NativeAddon {
  if (loaded) return loaded;
  if (!existsSync(ADDON_PATH)) {
    throw new Error(
      `The libvirt addon is not built (${ADDON_PATH} is missing). Run "npm run build:native" (needs libvirt-dev and g++).`,
    );
  }
  loaded = createRequire(import.meta.url)(ADDON_PATH) as NativeAddon;
  return loaded;
}

// Flags from libvirt-domain.h / libvirt-network.h / libvirt-storage.h.
export const ListDomainsFlags = {
  ACTIVE: 1,
  INACTIVE: 2,
  PERSISTENT: 4,
  TRANSIENT: 8,
  AUTOSTART: 256,
  HAS_SNAPSHOT: 4096,
} as const;
// virDomainUndefineFlagsValues: also drop managed save, snapshot metadata, NVRAM.
export const UndefineFlags = { MANAGED_SAVE: 1, SNAPSHOTS_METADATA: 2, NVRAM: 4, CHECKPOINTS_METADATA: 16 } as const;
export const SnapshotCreateFlags = { DISK_ONLY: 16, QUIESCE: 64, ATOMIC: 128 } as const;
export const SnapshotDeleteFlags = { CHILDREN: 1 } as const;
export const DomainXmlFlags = { SECURE: 1, INACTIVE: 2 } as const;
// virDomainModificationImpact
export const ModificationImpact = { CURRENT: 0, LIVE: 1, CONFIG: 2 } as const;
// virDomainMigrateFlags
export const MigrateFlags = {
  LIVE: 1,
  PEER2PEER: 2,
  PERSIST_DEST: 8,
  UNDEFINE_SOURCE: 16,
  NON_SHARED_DISK: 64,
  OFFLINE: 1024,
} as const;
// virDomainJobType
export const JobType = { NONE: 0, BOUNDED: 1, UNBOUNDED: 2, COMPLETED: 3, FAILED: 4, CANCELLED: 5 } as const;
// virDomainGetJobStatsFlags
export const JobStatsFlags = { COMPLETED: 1, KEEP_COMPLETED: 2 } as const;
export const DomainStats = { STATE: 1, CPU_TOTAL: 2, BALLOON: 4, VCPU: 8, INTERFACE: 16, BLOCK: 32 } as const;
// virConnectGetAllDomainStatsFlags (also virDomainListGetStats')
export const DomainStatsFlags = { NOWAIT: 2 ** 29, BACKING: 2 ** 30, ENFORCE_STATS: 2 ** 31 } as const;
// virDomainEventType, the code of a domain lifecycle event.
export const DomainEventType = {
  DEFINED: 0,
  UNDEFINED: 1,
  STARTED: 2,
  SUSPENDED: 3,
  RESUMED: 4,
  STOPPED: 5,
  SHUTDOWN: 6,
  PMSUSPENDED: 7,
  CRASHED: 8,
} as const;
// virConnectCloseReason
export const CloseReason = { ERROR: 0, EOF: 1, KEEPALIVE: 2, CLIENT: 3 } as const;

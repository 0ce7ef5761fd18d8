import { type VmFiling, type VmPlacement, filingOf, filingPart } from '../access/policy.js';
import type { Logger } from 'pino';

import type {
  FullReadReason,
  InventoryChange,
  InventoryKind,
  InventoryState,
  VmState,
  WatchSink,
} from '../datasources/watch.js';
import type {
  EventPublisher,
  InventoryChangeType,
  InventoryEventKind,
  InventorySyncState,
  VmChangeAspect,
} from '../model/events.js';
import type { HostRecord } from '../model/host.js';
import type { ClusterRecord, DatacenterRecord } from '../model/inventory.js';
import type { NetworkRecord } from '../model/network.js';
import type { SnapshotRecord } from '../model/snapshot.js';
import type { StorageRecord, StorageVolumeRecord } from '../model/storage.js';
import type { UpstreamTaskRecord } from '../model/upstream-task.js';
import type { VmDetails, VmRecord } from '../model/vm.js';
import { type VolumeIndex, indexVolumes } from '../datasources/volume-index.js';
import { ReadWitness } from './read-witness.js';
import { vmAspects } from './vm-diff.js';

/**
 * A keyed set of records, with its list (and, for named records, a by-name
 * map) kept until the next change: reads are many, changes few.
 */
class Table<R> {
  readonly byId = new Map<string, R>();
  private list: R[] | null = null;
  private names: Map<string, R> | null = null;

  constructor(private readonly nameOf?: (record: R) => string) {}

  get(id: string): R | undefined {
    return this.byId.get(id);
  }

  all(): readonly R[] {
    this.list ??= [...this.byId.values()];
    return this.list;
  }

  /** The first record with this name (in listing order), for tables made with a name. */
  named(name: string): R | undefined {
    const nameOf = this.nameOf;
    if (!nameOf) return undefined;
    if (!this.names) {
      this.names = new Map();
      for (const r of this.all()) if (!this.names.has(nameOf(r))) this.names.set(nameOf(r), r);
    }
    return this.names.get(name);
  }

  set(id: string, record: R): void {
    this.byId.set(id, record);
    this.list = null;
    this.names = null;
  }

  delete(id: string): void {
    if (!this.byId.delete(id)) return;
    this.list = null;
    this.names = null;
  }
}

/** A many-to-many index: VMs by host, network, storage. */
class Index {
  private readonly byKey = new Map<string, Set<string>>();
  private readonly keysOf = new Map<string, string[]>();

  put(id: string, keys: readonly string[]): void {
    this.remove(id);
    if (keys.length === 0) return;
    this.keysOf.set(id, [...keys]);
    for (const k of keys) {
      let ids = this.byKey.get(k);
      if (!ids) this.byKey.set(k, (ids = new Set()));
      ids.add(id);
    }
  }

  remove(id: string): void {
    for (const k of this.keysOf.get(id) ?? []) {
      const ids = this.byKey.get(k);
      ids?.delete(id);
      if (ids?.size === 0) this.byKey.delete(k);
    }
    this.keysOf.delete(id);
  }

  lookup(key: string): ReadonlySet<string> {
    return this.byKey.get(key) ?? EMPTY;
  }
}
const EMPTY: ReadonlySet<string> = new Set();

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** How the mirror of one platform stands. */
export interface MirrorState {
  state: InventorySyncState;
  /** When the mirror last matched the platform (its last full read or change). */
  syncedAt: Date | null;
  /** Since when the change stream has been down, while STALE. */
  staleSince: Date | null;
  /** Why it is STALE. */
  reason: string | null;
}

/**
 * The live copy of one platform's inventory. Its watch fills it with full
 * reads and keeps it current with changes; it tells every difference it sees
 * as an event, and answers reads from memory, with indexes for the
 * relations the schema serves (VMs by host, network and storage).
 */
export class PlatformMirror implements WatchSink {
  private readonly datacenters = new Table<DatacenterRecord>();
  private readonly clusters = new Table<ClusterRecord>();
  private readonly hostTable = new Table<HostRecord>();
  private readonly vmTable = new Table<VmState>();
  private readonly networkTable = new Table<NetworkRecord>((n) => n.name);
  private readonly storageTable = new Table<StorageRecord>();
  private readonly volumeTable = new Map<string, StorageVolumeRecord[]>();
  /** The platform's recent tasks (not inventory: they change nothing here but are streamed as task updates). */
  private readonly upstreamTasks = new Map<string, UpstreamTaskRecord>();
  private vmRecordList: VmRecord[] | null = null;
  private volumeIndexCache: VolumeIndex | null = null;
  private readonly vmsByHost = new Index();
  private readonly vmsByNetwork = new Index();
  private readonly vmsByStorage = new Index();
  private readonly vmsByDiskSource = new Index();
  private status: MirrorState = { state: 'SYNCING', syncedAt: null, staleSince: null, reason: null };
  private readonly statusListeners: ((s: MirrorState) => void)[] = [];
  private readonly changeListeners: ((c: InventoryChange) => void)[] = [];
  private readonly readsInFlight = new Set<ReadWitness>();

  constructor(
    readonly platformId: string,
    private readonly events: EventPublisher,
    private readonly logger: Logger,
  ) {}

  // --- fed by the watch -------------------------------------------------

  replace(state: InventoryState, reason: FullReadReason): void {
    for (const w of this.readsInFlight) w.noteAll();
    const corrected = [
      this.replaceTable('Datacenter', this.datacenters, state.datacenters),
      this.replaceTable('Cluster', this.clusters, state.clusters),
      this.replaceTable('Host', this.hostTable, state.hosts),
      this.replaceTable(
        'VirtualMachine',
        this.vmTable,
        state.vms.map((v) => ({ ...v, nativeId: v.vm.nativeId })),
      ),
      this.replaceTable('Network', this.networkTable, state.networks),
      this.replaceTable('Storage', this.storageTable, state.storage),
      this.replaceVolumes(state.volumes),
    ].reduce((a, b) => a + b, 0);
    const listed = new Set(state.upstreamTasks.map((t) => t.nativeId));
    for (const t of state.upstreamTasks) this.putUpstreamTask(t.nativeId, t);
    for (const id of [...this.upstreamTasks.keys()]) if (!listed.has(id)) this.putUpstreamTask(id, null);
    if (reason !== 'initial' && corrected > 0) {
      this.logger.info({ platform: this.platformId, reason, corrected }, 'full read corrected the live inventory');
    }
    this.setStatus({ state: 'SYNCED', syncedAt: new Date(), staleSince: null, reason: null });
  }

  apply(changes: readonly InventoryChange[]): void {
    for (const c of changes) {
      for (const w of this.readsInFlight) w.note(c.kind, c.nativeId);
      this.applyOne(c);
    }
    if (this.status.state === 'SYNCED') this.status = { ...this.status, syncedAt: new Date() };
  }

  interrupted(reason: string): void {
    if (this.status.state === 'STALE') return;
    this.setStatus({ ...this.status, state: 'STALE', staleSince: new Date(), reason });
  }

  /** Takes the state another instance's mirror of the same platform reports (a follower mirrors the lease holder's). */
  follow(state: MirrorState): void {
    this.setStatus(state);
  }

  /** Everything the mirror holds, as a full read would give it (for an instance that starts from it). */
  exportState(): InventoryState {
    return {
      datacenters: [...this.datacenters.all()],
      clusters: [...this.clusters.all()],
      hosts: [...this.hostTable.all()],
      vms: this.vmTable.all().map((s) => ({ vm: s.vm, details: s.details, snapshots: s.snapshots })),
      networks: [...this.networkTable.all()],
      storage: [...this.storageTable.all()],
      volumes: new Map(this.volumeTable),
      upstreamTasks: [...this.upstreamTasks.values()],
    };
  }

  /**
   * Begins a read made outside the watch (a read-back after an operation):
   * until `end()`, the witness notes every object whose record reaches the
   * mirror, so that the reader never puts back an older record than the
   * watch's.
   */
  beginRead(): ReadWitness {
    const witness = new ReadWitness((w) => this.readsInFlight.delete(w));
    this.readsInFlight.add(witness);
    return witness;
  }

  /** Calls `listener` with each object that really changed, as it is now (what another instance needs to apply). */
  onChange(listener: (c: InventoryChange) => void): void {
    this.changeListeners.push(listener);
  }

  // --- reads ------------------------------------------------------------

  get state(): MirrorState {
    return this.status;
  }

  /** Whether reads may be answered from memory: filled, and its change stream up. */
  get serving(): boolean {
    return this.status.state === 'SYNCED';
  }

  onStatus(listener: (s: MirrorState) => void): void {
    this.statusListeners.push(listener);
  }

  datacenter(nativeId: string): DatacenterRecord | undefined {
    return this.datacenters.get(nativeId);
  }

  cluster(nativeId: string): ClusterRecord | undefined {
    return this.clusters.get(nativeId);
  }

  /**
   * Where a VM is, by what tenants select on: its host's and that host's
   * cluster's names, and where it is filed (a VM of the mirror's, by its
   * details; one to be made, as `filing` says).
   */
  placementOf(vm: Pick<VmRecord, 'name' | 'hostNativeId'> & { nativeId?: string }, filing?: VmFiling): VmPlacement {
    const host = vm.hostNativeId ? this.host(vm.hostNativeId) : undefined;
    const cluster = host?.clusterNativeId ? this.cluster(host.clusterNativeId) : undefined;
    return {
      platformId: this.platformId,
      name: vm.name,
      hostName: host?.name ?? null,
      clusterName: cluster?.name ?? null,
      ...filingPart(filing ?? filingOf(vm.nativeId === undefined ? undefined : this.details(vm.nativeId))),
    };
  }

  host(nativeId: string): HostRecord | undefined {
    return this.hostTable.get(nativeId);
  }

  network(nativeId: string): NetworkRecord | undefined {
    return this.networkTable.get(nativeId);
  }

  /** The first network with this name, as a scan of the listing would find it. */
  networkNamed(name: string): NetworkRecord | undefined {
    return this.networkTable.named(name);
  }

  storage(nativeId: string): StorageRecord | undefined {
    return this.storageTable.get(nativeId);
  }

  /** A recent task of the platform, while it lists it. */
  upstreamTask(nativeId: string): UpstreamTaskRecord | undefined {
    return this.upstreamTasks.get(nativeId);
  }

  listDatacenters(): readonly DatacenterRecord[] {
    return this.datacenters.all();
  }

  listClusters(): readonly ClusterRecord[] {
    return this.clusters.all();
  }

  listHosts(): readonly HostRecord[] {
    return this.hostTable.all();
  }

  listVms(): readonly VmRecord[] {
    this.vmRecordList ??= this.vmTable.all().map((s) => s.vm);
    return this.vmRecordList;
  }

  vm(nativeId: string): VmState | undefined {
    return this.vmTable.get(nativeId);
  }

  details(nativeId: string): VmDetails | undefined {
    return this.vmTable.get(nativeId)?.details;
  }

  snapshots(nativeId: string): readonly SnapshotRecord[] | undefined {
    return this.vmTable.get(nativeId)?.snapshots;
  }

  listNetworks(): readonly NetworkRecord[] {
    return this.networkTable.all();
  }

  listStorage(): readonly StorageRecord[] {
    return this.storageTable.all();
  }

  volumes(poolNativeId: string): readonly StorageVolumeRecord[] | undefined {
    return this.volumeTable.get(poolNativeId);
  }

  /** Every volume, indexed the ways disks name them; kept until storage or a volume changes. */
  volumeIndex(): VolumeIndex {
    this.volumeIndexCache ??= indexVolumes(this.storageTable.all(), [...this.volumeTable.values()]);
    return this.volumeIndexCache;
  }

  /** Native IDs of the VMs placed on a host. */
  vmsOnHost(hostNativeId: string): ReadonlySet<string> {
    return this.vmsByHost.lookup(hostNativeId);
  }

  /** Native IDs of the VMs with a NIC on a network, by the network's native ID or name. */
  vmsOnNetwork(network: { nativeId: string; name: string }): ReadonlySet<string> {
    const byId = this.vmsByNetwork.lookup(`id:${network.nativeId}`);
    const byName = this.vmsByNetwork.lookup(`name:${network.name}`);
    return byName.size === 0 ? byId : byId.size === 0 ? byName : new Set([...byId, ...byName]);
  }

  /** Native IDs of the VMs with a disk backed by a volume (by its path, key, or pool and name). */
  vmsOnVolume(volume: StorageVolumeRecord): ReadonlySet<string> {
    const pool = this.storageTable.get(volume.poolNativeId)?.name;
    const keys = [`path:${volume.path}`, `path:${volume.key}`, ...(pool ? [`pv:${pool}/${volume.name}`] : [])];
    const ids = new Set<string>();
    for (const k of keys) for (const id of this.vmsByDiskSource.lookup(k)) ids.add(id);
    return ids;
  }

  /** The VM records of a set of native IDs (those still present). */
  vmRecords(ids: Iterable<string>): VmRecord[] {
    const out: VmRecord[] = [];
    for (const id of ids) {
      const s = this.vmTable.get(id);
      if (s) out.push(s.vm);
    }
    return out;
  }

  /** Native IDs of the VMs with a disk on a storage (datastore), by its native ID. */
  vmsOnStorage(storageNativeId: string): ReadonlySet<string> {
    return this.vmsByStorage.lookup(storageNativeId);
  }

  // --- internals --------------------------------------------------------

  private setStatus(next: MirrorState): void {
    const changed = next.state !== this.status.state;
    this.status = next;
    if (!changed) return;
    for (const listener of this.statusListeners) listener(next);
  }

  private replaceTable<R extends { nativeId: string }>(
    kind: Exclude<InventoryKind, 'StorageVolumes' | 'UpstreamTask'>,
    table: Table<R> | Table<VmState>,
    records: readonly R[],
  ): number {
    const seen = new Set<string>();
    let corrected = 0;
    for (const r of records) {
      seen.add(r.nativeId);
      if (this.put(kind, r.nativeId, r as never)) corrected += 1;
    }
    for (const id of [...table.byId.keys()]) {
      if (seen.has(id)) continue;
      this.put(kind, id, null);
      corrected += 1;
    }
    return corrected;
  }

  private replaceVolumes(volumes: Map<string, StorageVolumeRecord[]>): number {
    let corrected = 0;
    for (const [pool, list] of volumes) if (this.putVolumes(pool, list)) corrected += 1;
    for (const pool of [...this.volumeTable.keys()]) {
      if (!volumes.has(pool) && this.putVolumes(pool, [])) corrected += 1;
    }
    return corrected;
  }

  private applyOne(c: InventoryChange): void {
    if (c.kind === 'StorageVolumes') this.putVolumes(c.nativeId, c.record);
    else if (c.kind === 'UpstreamTask') this.putUpstreamTask(c.nativeId, c.record);
    else if (c.kind === 'VirtualMachine')
      this.put(c.kind, c.nativeId, c.record ? { ...c.record, nativeId: c.nativeId } : null);
    else this.put(c.kind, c.nativeId, c.record);
  }

  /** Stores one object (null: removes it) and tells what changed; whether anything did. */
  private put(kind: Exclude<InventoryKind, 'StorageVolumes' | 'UpstreamTask'>, id: string, record: unknown): boolean {
    if (kind === 'VirtualMachine') return this.putVm(id, record as (VmState & { nativeId: string }) | null);
    const table = this.tableOf(kind);
    const before = table.get(id);
    if (record === null) {
      if (before === undefined) return false;
      table.delete(id);
      if (kind === 'Storage') this.volumeIndexCache = null;
      this.changed({ kind, nativeId: id, record: null } as InventoryChange);
      this.publish(kind, 'REMOVED', id);
      return true;
    }
    if (before !== undefined && same(before, record)) return false;
    table.set(id, record);
    if (kind === 'Storage') this.volumeIndexCache = null;
    this.changed({ kind, nativeId: id, record } as InventoryChange);
    this.publish(kind, before === undefined ? 'ADDED' : 'MODIFIED', id);
    return true;
  }

  private tableOf(kind: 'Datacenter' | 'Cluster' | 'Host' | 'Network' | 'Storage'): Table<unknown> {
    switch (kind) {
      case 'Datacenter':
        return this.datacenters as Table<unknown>;
      case 'Cluster':
        return this.clusters as Table<unknown>;
      case 'Host':
        return this.hostTable as Table<unknown>;
      case 'Network':
        return this.networkTable as Table<unknown>;
      case 'Storage':
        return this.storageTable as Table<unknown>;
    }
  }

  private putVm(id: string, next: (VmState & { nativeId: string }) | null): boolean {
    const before = this.vmTable.get(id);
    if (next === null) {
      if (!before) return false;
      this.vmTable.delete(id);
      this.vmRecordList = null;
      this.unindexVm(id);
      this.changed({ kind: 'VirtualMachine', nativeId: id, record: null });
      this.publishVm('REMOVED', id, before, null, ALL_ASPECTS);
      this.publishChildren('Snapshot', before.snapshots, []);
      return true;
    }
    const state: VmState = { vm: next.vm, details: next.details, snapshots: next.snapshots };
    const aspects = before ? vmAspects(before, state) : ALL_ASPECTS;
    if (aspects.length === 0) return false;
    this.vmTable.set(id, state);
    this.vmRecordList = null;
    this.indexVm(id, state);
    this.changed({ kind: 'VirtualMachine', nativeId: id, record: state });
    this.publishVm(before ? 'MODIFIED' : 'ADDED', id, before ?? null, state, aspects);
    if (aspects.includes('SNAPSHOTS')) this.publishChildren('Snapshot', before?.snapshots ?? [], state.snapshots);
    return true;
  }

  private indexVm(id: string, s: VmState): void {
    this.vmsByHost.put(id, s.vm.hostNativeId ? [s.vm.hostNativeId] : []);
    this.vmsByNetwork.put(
      id,
      // A NIC names its network by ID where the platform gives one (vSphere), else by name (libvirt).
      s.details.nics.flatMap((n) =>
        n.networkNativeId ? [`id:${n.networkNativeId}`] : n.networkName ? [`name:${n.networkName}`] : [],
      ),
    );
    this.vmsByStorage.put(
      id,
      s.details.disks.flatMap((d) => (d.storageNativeId ? [d.storageNativeId] : [])),
    );
    this.vmsByDiskSource.put(
      id,
      s.details.disks.flatMap((d) =>
        d.sourcePool && d.sourceVolume
          ? [`pv:${d.sourcePool}/${d.sourceVolume}`]
          : d.source
            ? [`path:${d.source}`]
            : [],
      ),
    );
  }

  private unindexVm(id: string): void {
    this.vmsByHost.remove(id);
    this.vmsByNetwork.remove(id);
    this.vmsByStorage.remove(id);
    this.vmsByDiskSource.remove(id);
  }

  private putVolumes(pool: string, next: StorageVolumeRecord[]): boolean {
    const before = this.volumeTable.get(pool) ?? [];
    if (same(before, next)) return false;
    this.volumeIndexCache = null;
    if (next.length === 0) this.volumeTable.delete(pool);
    else this.volumeTable.set(pool, next);
    this.changed({ kind: 'StorageVolumes', nativeId: pool, record: next });
    this.publishChildren('StorageVolume', before, next);
    return true;
  }

  /** Events for the children of one object (a pool's volumes, a VM's snapshots) that differ between two lists. */
  private publishChildren(
    kind: 'StorageVolume' | 'Snapshot',
    before: readonly { nativeId: string }[],
    after: readonly { nativeId: string }[],
  ): void {
    const old = new Map(before.map((c) => [c.nativeId, c]));
    const now = new Map(after.map((c) => [c.nativeId, c]));
    for (const [id, c] of now) {
      const was = old.get(id);
      if (!was) this.publish(kind, 'ADDED', id);
      else if (!same(was, c)) this.publish(kind, 'MODIFIED', id);
    }
    for (const id of old.keys()) if (!now.has(id)) this.publish(kind, 'REMOVED', id);
  }

  /** Keeps a recent task as the platform reports it and streams each change of it; one it stopped listing is dropped quietly. */
  private putUpstreamTask(id: string, record: UpstreamTaskRecord | null): void {
    const before = this.upstreamTasks.get(id);
    if (record === null) {
      if (this.upstreamTasks.delete(id)) this.changed({ kind: 'UpstreamTask', nativeId: id, record: null });
      return;
    }
    if (before !== undefined && same(before, record)) return;
    this.upstreamTasks.set(id, record);
    this.changed({ kind: 'UpstreamTask', nativeId: id, record });
    this.events.publish({
      type: 'TASK',
      platformId: this.platformId,
      taskId: id,
      upstream: { targetVmNativeId: record.targetVmNativeId, state: record.state },
    });
  }

  private changed(change: InventoryChange): void {
    for (const listener of this.changeListeners) listener(change);
  }

  private publish(kind: InventoryEventKind, change: InventoryChangeType, nativeId: string): void {
    this.events.publish({
      type: 'INVENTORY',
      platformId: this.platformId,
      kind,
      change,
      nativeId,
      aspects: [],
      previousPowerState: null,
      powerState: null,
    });
  }

  private publishVm(
    change: InventoryChangeType,
    nativeId: string,
    before: VmState | null,
    after: VmState | null,
    aspects: VmChangeAspect[],
  ): void {
    this.events.publish({
      type: 'INVENTORY',
      platformId: this.platformId,
      kind: 'VirtualMachine',
      change,
      nativeId,
      aspects,
      previousPowerState: before?.vm.powerState ?? null,
      powerState: after?.vm.powerState ?? null,
      vm: { name: (after ?? before)?.vm.name ?? nativeId, hostNativeId: (after ?? before)?.vm.hostNativeId ?? null },
    });
  }
}

const ALL_ASPECTS: VmChangeAspect[] = ['POWER_STATE', 'STATE', 'NAME', 'HOST', 'CONFIG', 'GUEST', 'SNAPSHOTS', 'OTHER'];

import type { HostRecord } from '../model/host.js';
import type { ClusterRecord, DatacenterRecord } from '../model/inventory.js';
import type { NetworkRecord } from '../model/network.js';
import type { SnapshotRecord } from '../model/snapshot.js';
import type { StorageRecord, StorageVolumeRecord } from '../model/storage.js';
import type { VmDetails, VmRecord } from '../model/vm.js';
import type { UpstreamTaskRecord } from '../model/upstream-task.js';

// How a platform feeds the live inventory: it reads everything once, then
// follows the platform's own change stream (vSphere WaitForUpdatesEx, libvirt
// event callbacks) and reports each object that changed, whole. The
// inventory (the mirror) works out what differs and tells subscribers.

/** Everything the graph serves of one VM. */
export interface VmState {
  vm: VmRecord;
  details: VmDetails;
  snapshots: SnapshotRecord[];
}

/** Everything one platform holds, as read in full (at start, after a reconnect, at each resync). */
export interface InventoryState {
  datacenters: DatacenterRecord[];
  clusters: ClusterRecord[];
  hosts: HostRecord[];
  vms: VmState[];
  networks: NetworkRecord[];
  storage: StorageRecord[];
  /** Volumes by their pool's native ID (libvirt); empty where storage has no volumes. */
  volumes: Map<string, StorageVolumeRecord[]>;
  /** The platform's recent tasks (vSphere's TaskManager.recentTask); empty where it keeps none. */
  upstreamTasks: UpstreamTaskRecord[];
}

/** One object as it is now; null when it is gone. */
export type InventoryChange =
  | { kind: 'Datacenter'; nativeId: string; record: DatacenterRecord | null }
  | { kind: 'Cluster'; nativeId: string; record: ClusterRecord | null }
  | { kind: 'Host'; nativeId: string; record: HostRecord | null }
  | { kind: 'VirtualMachine'; nativeId: string; record: VmState | null }
  | { kind: 'Network'; nativeId: string; record: NetworkRecord | null }
  | { kind: 'Storage'; nativeId: string; record: StorageRecord | null }
  /** Every volume of one pool, as it is now (empty when the pool is gone). */
  | { kind: 'StorageVolumes'; nativeId: string; record: StorageVolumeRecord[] }
  /** A recent task of the platform; null once the platform no longer lists it. */
  | { kind: 'UpstreamTask'; nativeId: string; record: UpstreamTaskRecord | null };

export type InventoryKind = InventoryChange['kind'];

/** Why the whole inventory was read again. */
export type FullReadReason = 'initial' | 'reconnect' | 'resync';

/** What a platform's watch reports to the mirror. Calls never throw. */
export interface WatchSink {
  /** The whole inventory: the mirror becomes it, and reports what differed from before. */
  replace(state: InventoryState, reason: FullReadReason): void;
  /** Objects that changed, each as it is now. */
  apply(changes: readonly InventoryChange[]): void;
  /** The change stream stopped (connection lost, upstream error); the mirror is stale until the next replace(). */
  interrupted(reason: string): void;
}

export interface WatchOptions {
  /** How often the whole inventory is read again, to heal missed changes. */
  resyncIntervalMs: number;
  /** First delay before the watch restarts after a failure; doubles up to retryMaxMs. */
  retryInitialMs: number;
  retryMaxMs: number;
}

/** A running watch. */
export interface InventoryWatch {
  /** Stops following changes; resolves when no more sink calls will come. */
  stop(): Promise<void>;
}

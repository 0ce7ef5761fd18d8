import type { PlatformStatus } from './platform.js';
import type { TaskState } from './upstream-task.js';
import type { PowerState } from './vm.js';

/** The kinds of inventory object an event can be about. */
export type InventoryEventKind =
  | 'Datacenter'
  | 'Cluster'
  | 'Host'
  | 'VirtualMachine'
  | 'Network'
  | 'Storage'
  | 'StorageVolume'
  | 'Snapshot'
  /** Declared objects of the gateway's own: seen as the VMs they make or move (`vm`). */
  | 'VmPool'
  | 'VmMigration';

export type InventoryChangeType = 'ADDED' | 'MODIFIED' | 'REMOVED';

/** What changed about a VM. */
export type VmChangeAspect =
  /** ON, OFF, SUSPENDED, PAUSED. */
  | 'POWER_STATE'
  /** The finer phase, raw state or its reason. */
  | 'STATE'
  | 'NAME'
  /** Moved to another host. */
  | 'HOST'
  /** Hardware: vCPUs, memory, disks, NICs, devices. */
  | 'CONFIG'
  /** What the guest reports: IP addresses, host name, tools. */
  | 'GUEST'
  | 'SNAPSHOTS'
  /** Anything else the graph shows (autostart, template, persistence). */
  | 'OTHER'
  /** Its declaration's status: a condition changed. */
  | 'STATUS';

/** A change the live inventory saw, whoever made it. */
export interface InventoryEvent {
  type: 'INVENTORY';
  platformId: string;
  kind: InventoryEventKind;
  change: InventoryChangeType;
  /** The object's native ID on its platform (for snapshots and volumes: parent/child). */
  nativeId: string;
  /** VMs only: what changed (every aspect, for ADDED and REMOVED). */
  aspects: VmChangeAspect[];
  /** VMs only: the power state before and after (null when it did not exist). */
  previousPowerState: PowerState | null;
  powerState: PowerState | null;
  /**
   * VMs (and the pools and migrations that make or move them): its name and
   * host (after the change, or before it when it was removed), so that who
   * may see it can be decided once it is gone too.
   */
  vm?: { name: string; hostNativeId: string | null };
}

export interface PlatformStatusEvent {
  type: 'PLATFORM_STATUS';
  platformId: string;
  status: PlatformStatus;
  /** The live inventory's state: SYNCING, SYNCED or STALE. */
  inventory: InventorySyncState;
  message: string | null;
}

export interface TaskEvent {
  type: 'TASK';
  platformId: string;
  /** The gateway's task ID, or for an upstream task the platform's (`task-123`). */
  taskId: string;
  /** For a task the platform reported (vSphere's recent tasks): what a filter needs to know of it. */
  upstream?: { targetVmNativeId: string | null; state: TaskState };
}

export type GatewayEvent = InventoryEvent | PlatformStatusEvent | TaskEvent;

/** The live inventory of a platform: filling, serving, or behind (its change stream is down). */
export type InventorySyncState = 'SYNCING' | 'SYNCED' | 'STALE';

/** An event as delivered: versioned, with the cursor a client resumes after. */
export interface EventEnvelope<E extends GatewayEvent = GatewayEvent> {
  version: 1;
  /** Opaque, ordered within one gateway's event log. */
  cursor: string;
  at: Date;
  event: E;
}

/** Where events go; the transport (in memory, Redis) decides how they reach subscribers. */
export interface EventPublisher {
  publish(event: GatewayEvent): void;
}

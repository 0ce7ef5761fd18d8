import type { InventoryChange, InventoryKind, InventoryState } from '../watch.js';
import {
  DATASTORE_SPEC,
  HOST_SPEC,
  InventoryTree,
  NETWORK_SPECS,
  TREE_SPECS,
  VM_STATE_PATHS,
  datastoreRecord,
  hostRecord,
  networkRecord,
  vmDetails,
  vmState,
} from './mapping.js';
import { packTrees, unpackTrees } from '../xml/packed.js';
import { applyPropertyChange } from './property-changes.js';
import { TASK_SPEC, upstreamTaskRecord } from './upstream-tasks.js';
import type { ObjectUpdate, UpdateSet } from './property-collector.js';
import type { ObjectContent, PropertySpec } from './vim.js';
import type { MoRef } from './xml.js';

// The watch's copy of the properties of every watched object, kept current
// from the PropertyCollector's updates and mapped with the same functions
// (and the same property paths) as the provider's reads.

/** Exactly what the provider's reads ask for, per type: a VM's listing, details and snapshots at once. */
export const WATCH_SPECS: readonly PropertySpec[] = [
  { type: 'VirtualMachine', paths: VM_STATE_PATHS },
  HOST_SPEC,
  ...TREE_SPECS,
  DATASTORE_SPEC,
  ...NETWORK_SPECS,
];

/**
 * The types the container view holds. A view of a type holds its subtypes
 * too, as the provider's own views do: Network brings OpaqueNetwork,
 * ComputeResource brings ClusterComputeResource, ResourcePool VirtualApp,
 * Folder StoragePod.
 */
export const WATCH_TYPES: readonly string[] = [...new Set(WATCH_SPECS.map((s) => s.type))].sort();

/** What the filter asks for: the container view's objects, and the recent tasks (reached from the TaskManager). */
export const FILTER_SPECS: readonly PropertySpec[] = [...WATCH_SPECS, TASK_SPEC];

type Category = 'vm' | 'host' | 'datastore' | 'network' | 'tree' | 'task';

const CATEGORY: Record<string, Category> = {
  VirtualMachine: 'vm',
  HostSystem: 'host',
  Datastore: 'datastore',
  Network: 'network',
  DistributedVirtualPortgroup: 'network',
  OpaqueNetwork: 'network',
  Folder: 'tree',
  StoragePod: 'tree',
  Datacenter: 'tree',
  ComputeResource: 'tree',
  ClusterComputeResource: 'tree',
  ResourcePool: 'tree',
  VirtualApp: 'tree',
  Task: 'task',
};

/** vim25 supertypes whose property specs apply to a subtype's objects. */
const SUPERTYPES: Record<string, readonly string[]> = {
  ClusterComputeResource: ['ComputeResource'],
  VirtualApp: ['ResourcePool'],
  StoragePod: ['Folder'],
  DistributedVirtualPortgroup: ['Network'],
  OpaqueNetwork: ['Network'],
};

const requestedCache = new Map<string, readonly string[]>();
function requestedPaths(type: string): readonly string[] {
  let paths = requestedCache.get(type);
  if (!paths) {
    const types = new Set([type, ...(SUPERTYPES[type] ?? [])]);
    paths = [...new Set(FILTER_SPECS.filter((s) => types.has(s.type)).flatMap((s) => s.paths))];
    requestedCache.set(type, paths);
  }
  return paths;
}

/**
 * The tree (InventoryTree) is built from `name` and `parent` of folders,
 * datacenters, compute resources and resource pools; a change to anything
 * else of theirs (a cluster's summary) changes only clusters' own records.
 */
const STRUCTURAL = new Set(['name', 'parent']);

const key = (ref: MoRef) => `${ref.type}:${ref.value}`;
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** What one answer changed, before it is mapped. */
export interface WatchDelta {
  /** Objects (not of the tree) that entered, changed or left, by key. */
  touched: Map<string, MoRef>;
  /** Tree objects changed: datacenters and clusters are mapped again. */
  treeTouched: boolean;
  /** A tree object entered, left, or changed name or parent: everything placed by the tree is checked. */
  structural: boolean;
  /** Objects whose changes could not be applied: their properties must be read again. */
  refetch: Map<string, MoRef>;
}

const KIND_ORDER: InventoryKind[] = [
  'Datacenter',
  'Cluster',
  'Host',
  'Network',
  'Storage',
  'VirtualMachine',
  'UpstreamTask',
];

/** A watched object as kept between answers: its properties packed into one string. */
interface StoredObject {
  obj: MoRef;
  props: string;
  missing: ObjectContent['missing'];
}

const pack = (o: ObjectContent): StoredObject => ({ obj: o.obj, props: packTrees(o.props), missing: o.missing });
const unpack = (s: StoredObject): ObjectContent => ({ obj: s.obj, props: unpackTrees(s.props), missing: s.missing });

export class WatchedInventory {
  /** Every watched object, in the order the server first reported it (the container view's order). */
  private readonly objects = new Map<string, StoredObject>();
  private treeCache: InventoryTree | null = null;

  constructor(private readonly platformId: string) {}

  /** Applies one WaitForUpdatesEx answer (the updates of `filter` only). */
  apply(set: UpdateSet, filter: MoRef): WatchDelta {
    const delta: WatchDelta = { touched: new Map(), treeTouched: false, structural: false, refetch: new Map() };
    const entered = new Set<string>();
    for (const fs of set.filters) {
      if (fs.filter.value !== filter.value) continue;
      for (const update of fs.objects) this.applyOne(update, delta, entered);
    }
    return delta;
  }

  /** Applies one object's update; the object is unpacked only while it is (a first answer holds every object). */
  private applyOne(update: ObjectUpdate, delta: WatchDelta, entered: Set<string>): void {
    const category = CATEGORY[update.obj.type];
    if (!category) return;
    const k = key(update.obj);
    const tree = category === 'tree';
    if (update.kind === 'enter') entered.add(k);
    // An object that entered in this answer is there: a leave of it in the same answer came before
    // (vcsim sends the enter of an object moved to another folder before its leave).
    if (update.kind === 'leave' && entered.has(k)) return;
    if (update.kind === 'leave') {
      this.objects.delete(k);
      delta.refetch.delete(k);
      if (tree) delta.treeTouched = delta.structural = true;
      else delta.touched.set(k, update.obj);
      return;
    }
    const stored = update.kind === 'modify' ? this.objects.get(k) : undefined;
    let o = stored && unpack(stored);
    if (!o) {
      if (update.kind === 'modify') delta.refetch.set(k, update.obj);
      o = { obj: update.obj, props: new Map(), missing: update.missing };
      if (tree) delta.structural = true;
    }
    const requested = requestedPaths(update.obj.type);
    for (const change of update.changes) {
      const outcome = applyPropertyChange(o.props, requested, change);
      if (outcome === 'refetch') delta.refetch.set(k, update.obj);
      if (tree && outcome !== 'ignored' && STRUCTURAL.has(change.name.split(/[.[]/)[0] ?? '')) delta.structural = true;
    }
    this.objects.set(k, pack(o));
    if (tree) delta.treeTouched = true;
    else delta.touched.set(k, update.obj);
  }

  /**
   * Puts properties read again (RetrievePropertiesEx) in place of those
   * `delta.refetch` named; an object the read did not return is gone.
   */
  reload(delta: WatchDelta, contents: readonly ObjectContent[]): void {
    const found = new Map(contents.map((c) => [key(c.obj), c]));
    for (const [k, ref] of delta.refetch) {
      const c = found.get(k);
      const gone = !c || c.missing.some((m) => m.fault === 'ManagedObjectNotFound');
      if (gone) this.objects.delete(k);
      else this.objects.set(k, pack({ obj: ref, props: c.props, missing: c.missing }));
      if (CATEGORY[ref.type] === 'tree') delta.treeTouched = delta.structural = true;
      else delta.touched.set(k, ref);
    }
    delta.refetch.clear();
  }

  /** Each object of a category, unpacked and mapped one at a time (never all of them unpacked at once). */
  private mapCategory<R>(category: Category, map: (o: ObjectContent) => R): R[] {
    const out: R[] = [];
    for (const o of this.objects.values()) if (CATEGORY[o.obj.type] === category) out.push(map(unpack(o)));
    return out;
  }

  /** The tree as the objects stand now; also what the next changes() compares against. */
  private freshTree(): InventoryTree {
    this.treeCache = new InventoryTree(
      this.platformId,
      this.mapCategory('tree', (o) => o),
    );
    return this.treeCache;
  }

  /** Everything, as `readInventory` reads it. */
  state(): InventoryState {
    const tree = this.freshTree();
    return {
      datacenters: [...tree.datacenters],
      clusters: [...tree.clusters],
      hosts: this.mapCategory('host', (o) => hostRecord(this.platformId, o, tree)),
      vms: this.mapCategory('vm', (o) => vmState(this.platformId, o, tree)),
      networks: this.mapCategory('network', (o) => networkRecord(this.platformId, o, tree)),
      storage: this.mapCategory('datastore', (o) => datastoreRecord(this.platformId, o, tree)),
      volumes: new Map(),
      upstreamTasks: this.mapCategory('task', (o) => upstreamTaskRecord(this.platformId, o)),
    };
  }

  /**
   * The objects `delta` changed, each whole (null when gone): the objects
   * themselves, datacenters and clusters whose records differ after a tree
   * change, and, after a structural one, every host, VM, datastore and
   * network whose record the new tree places differently.
   */
  changes(delta: WatchDelta): InventoryChange[] {
    // The tree as last mapped (state() or changes() before), against the tree now.
    const before = this.treeCache ?? this.freshTree();
    const after = delta.treeTouched ? this.freshTree() : before;
    const out: InventoryChange[] = [];

    if (delta.treeTouched) {
      const diff = <R extends { nativeId: string }>(
        old: readonly R[],
        now: readonly R[],
        push: (id: string, r: R | null) => void,
      ) => {
        const oldById = new Map(old.map((r) => [r.nativeId, r]));
        for (const r of now) {
          if (!same(oldById.get(r.nativeId), r)) push(r.nativeId, r);
          oldById.delete(r.nativeId);
        }
        for (const id of oldById.keys()) push(id, null);
      };
      diff(before.datacenters, after.datacenters, (nativeId, record) =>
        out.push({ kind: 'Datacenter', nativeId, record }),
      );
      diff(before.clusters, after.clusters, (nativeId, record) => out.push({ kind: 'Cluster', nativeId, record }));
    }

    const touched = new Map(delta.touched);
    if (delta.structural) {
      for (const [k, stored] of this.objects) {
        if (touched.has(k) || CATEGORY[stored.obj.type] === 'tree') continue;
        const o = unpack(stored);
        const placedDifferently =
          CATEGORY[o.obj.type] === 'host'
            ? !same(hostRecord(this.platformId, o, before), hostRecord(this.platformId, o, after))
            : CATEGORY[o.obj.type] === 'datastore'
              ? !same(datastoreRecord(this.platformId, o, before), datastoreRecord(this.platformId, o, after))
              : CATEGORY[o.obj.type] === 'network'
                ? !same(networkRecord(this.platformId, o, before), networkRecord(this.platformId, o, after))
                : CATEGORY[o.obj.type] === 'vm'
                  ? !same(vmDetails(o, before), vmDetails(o, after))
                  : false;
        if (placedDifferently) touched.set(k, o.obj);
      }
    }

    for (const [k, ref] of touched) {
      const stored = this.objects.get(k);
      const o = stored && unpack(stored);
      const nativeId = ref.value;
      switch (CATEGORY[ref.type]) {
        case 'vm':
          out.push({ kind: 'VirtualMachine', nativeId, record: o ? vmState(this.platformId, o, after) : null });
          break;
        case 'host':
          out.push({ kind: 'Host', nativeId, record: o ? hostRecord(this.platformId, o, after) : null });
          break;
        case 'datastore':
          out.push({ kind: 'Storage', nativeId, record: o ? datastoreRecord(this.platformId, o, after) : null });
          break;
        case 'network':
          out.push({ kind: 'Network', nativeId, record: o ? networkRecord(this.platformId, o, after) : null });
          break;
        case 'task':
          out.push({ kind: 'UpstreamTask', nativeId, record: o ? upstreamTaskRecord(this.platformId, o) : null });
          break;
        default:
          break;
      }
    }
    // Stable: places before what they hold.
    return out
      .map((c, i) => ({ c, i }))
      .sort((a, b) => KIND_ORDER.indexOf(a.c.kind) - KIND_ORDER.indexOf(b.c.kind) || a.i - b.i)
      .map(({ c }) => c);
  }
}

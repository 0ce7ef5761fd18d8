import type { HostRecord, HypervisorType } from '../../model/host.js';
import type { ClusterRecord, DatacenterRecord } from '../../model/inventory.js';
import type { NetworkKind, NetworkRecord } from '../../model/network.js';
import type { SnapshotRecord } from '../../model/snapshot.js';
import type { DatastoreMaintenanceMode, DatastoreRecord, StorageType } from '../../model/storage.js';
import type {
  DiskDevice,
  PowerState,
  VmDetails,
  VmDiskRecord,
  VmNicRecord,
  VmPhase,
  VmRecord,
  VsphereVmFacts,
} from '../../model/vm.js';
import { childNativeId } from '../../model/ids.js';
import type { VmState } from '../watch.js';
import type { ObjectContent, PropertySpec } from './vim.js';
import { type MoRef, type XNode, boolOf, child, children, intOf, moRefOf, path, textOf, xsiType } from './xml.js';

// What the gateway reads of each managed object type, and how it becomes the
// neutral model. Property paths are vSphere's own.

export const VM_LIST_SPEC: PropertySpec = {
  type: 'VirtualMachine',
  paths: ['name', 'config.uuid', 'config.template', 'runtime.powerState', 'runtime.connectionState', 'runtime.host'],
};

export const VM_DETAIL_SPEC: PropertySpec = {
  type: 'VirtualMachine',
  paths: [
    'config.hardware.numCPU',
    'config.hardware.numCoresPerSocket',
    'config.hardware.memoryMB',
    'config.hardware.device',
    'config.hotPlugMemoryLimit',
    'config.memoryHotAddEnabled',
    'config.guestId',
    'config.guestFullName',
    'config.version',
    'config.annotation',
    'config.instanceUuid',
    'guest.toolsStatus',
    'guest.toolsRunningStatus',
    'guest.ipAddress',
    'guest.hostName',
    'guest.net',
    'resourcePool',
    'parent',
    'summary.config.vmPathName',
  ],
};

export const VM_SNAPSHOT_SPEC: PropertySpec = { type: 'VirtualMachine', paths: ['snapshot'] };

export const HOST_SPEC: PropertySpec = {
  type: 'HostSystem',
  paths: [
    'name',
    'parent',
    'summary.hardware',
    'config.product',
    'runtime.connectionState',
    'runtime.powerState',
    'runtime.inMaintenanceMode',
  ],
};

/** Everything needed to place objects in datacenters and clusters, in one retrieval. */
export const TREE_SPECS: PropertySpec[] = [
  { type: 'Folder', paths: ['name', 'parent'] },
  { type: 'Datacenter', paths: ['name', 'parent'] },
  { type: 'ComputeResource', paths: ['name', 'parent'] },
  {
    type: 'ClusterComputeResource',
    paths: ['name', 'parent', 'summary', 'configurationEx'],
  },
  { type: 'ResourcePool', paths: ['name', 'parent'] },
];

export const DATASTORE_SPEC: PropertySpec = { type: 'Datastore', paths: ['summary', 'parent'] };

export const NETWORK_SPECS: PropertySpec[] = [
  { type: 'Network', paths: ['name', 'parent', 'summary.accessible'] },
  { type: 'DistributedVirtualPortgroup', paths: ['name', 'parent', 'summary.accessible', 'config.key'] },
];

const prop = (o: ObjectContent, name: string): XNode | undefined => o.props.get(name);
const str = (o: ObjectContent, name: string): string | null => textOf(prop(o, name)) || null;

/** Parents of inventory objects, for finding an object's datacenter and cluster. */
export class InventoryTree {
  private readonly parents = new Map<string, MoRef>();
  readonly datacenters: DatacenterRecord[] = [];
  readonly clusters: ClusterRecord[] = [];
  private readonly names = new Map<string, string>();
  private readonly refs = new Map<string, MoRef>();
  private byPath: Map<string, MoRef> | null = null;

  constructor(platformId: string, objects: ObjectContent[]) {
    for (const o of objects) {
      this.refs.set(key(o.obj), o.obj);
      const parent = moRefOf(prop(o, 'parent'));
      if (parent) this.parents.set(key(o.obj), parent);
      const name = str(o, 'name');
      if (name) this.names.set(key(o.obj), name);
    }
    for (const o of objects) {
      if (o.obj.type === 'Datacenter') {
        this.datacenters.push({ platformId, nativeId: o.obj.value, name: str(o, 'name') ?? o.obj.value });
      } else if (o.obj.type === 'ClusterComputeResource') {
        const summary = prop(o, 'summary');
        const totalMemory = intOf(child(summary, 'totalMemory'));
        this.clusters.push({
          platformId,
          nativeId: o.obj.value,
          name: str(o, 'name') ?? o.obj.value,
          datacenterNativeId: this.datacenterOf(o.obj),
          numHosts: intOf(child(summary, 'numHosts')),
          numEffectiveHosts: intOf(child(summary, 'numEffectiveHosts')),
          totalCpuMhz: intOf(child(summary, 'totalCpu')),
          totalMemoryMiB: totalMemory === null ? null : Math.floor(totalMemory / 1024 ** 2),
          // configurationEx (ClusterConfigInfoEx) is current; `configuration` is deprecated.
          drsEnabled: boolOf(path(prop(o, 'configurationEx'), 'drsConfig', 'enabled')),
          haEnabled: boolOf(path(prop(o, 'configurationEx'), 'dasConfig', 'enabled')),
        });
      }
    }
  }

  /** The datacenter above an object, walking its parents. */
  datacenterOf(ref: MoRef | null): string | null {
    return this.above(ref, ['Datacenter'])?.value ?? null;
  }

  /** The object itself or the first above it of one of `types`. */
  above(ref: MoRef | null, types: readonly string[]): MoRef | null {
    let current: MoRef | undefined = ref ?? undefined;
    for (let depth = 0; current && depth < 64; depth++) {
      if (types.includes(current.type)) return current;
      current = this.parents.get(key(current));
    }
    return null;
  }

  nameOf(ref: MoRef | null): string | null {
    return ref ? (this.names.get(key(ref)) ?? null) : null;
  }

  /**
   * An object's inventory path, as vSphere's tools print it (`/DC0/vm/web`):
   * the names from below the root folder down to it. vSphere itself escapes
   * `/` in names (`%2f`), so the names join unambiguously.
   */
  pathOf(ref: MoRef | null): string | null {
    const names: string[] = [];
    let current: MoRef | undefined = ref ?? undefined;
    for (let depth = 0; current && depth < 64; depth++) {
      const parent = this.parents.get(key(current));
      if (!parent) break; // the root folder, which paths leave out
      const name = this.names.get(key(current));
      if (name === undefined) return null;
      names.push(name);
      current = parent;
    }
    return names.length > 0 ? `/${names.reverse().join('/')}` : null;
  }

  /** The object at an inventory path, among the tree's (folders, datacenters, compute resources, pools). */
  at(path: string): MoRef | null {
    this.byPath ??= new Map(
      [...this.refs.values()].flatMap((ref) => {
        const p = this.pathOf(ref);
        return p ? [[p, ref] as const] : [];
      }),
    );
    return this.byPath.get(path.replace(/\/+$/, '')) ?? null;
  }
}

const key = (r: MoRef) => `${r.type}:${r.value}`;

const POWER: Record<string, PowerState> = { poweredOn: 'ON', poweredOff: 'OFF', suspended: 'SUSPENDED' };
const PHASE: Record<string, VmPhase> = { poweredOn: 'RUNNING', poweredOff: 'STOPPED', suspended: 'PAUSED' };

export function vmRecord(platformId: string, o: ObjectContent): VmRecord {
  const rawState = str(o, 'runtime.powerState') ?? 'unknown';
  const connection = str(o, 'runtime.connectionState') ?? 'connected';
  const reachable = connection === 'connected';
  return {
    platformId,
    nativeId: o.obj.value,
    name: str(o, 'name') ?? o.obj.value,
    uuid: str(o, 'config.uuid') ?? '',
    powerState: POWER[rawState] ?? 'OFF',
    // A VM vCenter cannot reach (orphaned, inaccessible, ...) has no state to trust.
    phase: reachable ? (PHASE[rawState] ?? 'UNKNOWN') : 'UNKNOWN',
    rawState,
    rawStateReason: reachable ? null : connection,
    runtimeId: null,
    persistent: true,
    autostart: null,
    isTemplate: boolOf(prop(o, 'config.template')) ?? false,
    hostNativeId: moRefOf(prop(o, 'runtime.host'))?.value ?? null,
  };
}

/** Disk controllers by vSphere type, named as a VM's .vmx file names their slots (`scsi0:1.fileName`). */
const CONTROLLER_BUS: Record<string, string> = {
  VirtualLsiLogicController: 'scsi',
  VirtualLsiLogicSASController: 'scsi',
  ParaVirtualSCSIController: 'scsi',
  VirtualBusLogicController: 'scsi',
  VirtualSCSIController: 'scsi',
  VirtualIDEController: 'ide',
  VirtualAHCIController: 'sata',
  VirtualSATAController: 'sata',
  VirtualNVMEController: 'nvme',
};

const NIC_TYPES = new Set([
  'VirtualE1000',
  'VirtualE1000e',
  'VirtualPCNet32',
  'VirtualVmxnet',
  'VirtualVmxnet2',
  'VirtualVmxnet3',
  'VirtualVmxnet3Vrdma',
  'VirtualSriovEthernetCard',
]);

/** Disk-like devices, in the order they keep a shared slot's name (see diskTargets). */
const DISK_DEVICES: Record<string, DiskDevice> = {
  VirtualDisk: 'DISK',
  VirtualCdrom: 'CDROM',
  VirtualFloppy: 'FLOPPY',
};
const SLOT_ORDER = Object.keys(DISK_DEVICES);

export interface DiskTarget {
  /** `scsi0:1`, unique within the VM: what VmDisk.target shows and removeDiskTargets takes. */
  name: string;
  /** The controller's kind (`scsi`, `ide`, `sata`, `nvme`); null for a device on another controller. */
  bus: string | null;
}

/**
 * The name of each disk-like device (disks, CD-ROMs, floppies), unique
 * within the VM: `<bus><busNumber>:<unit>` as vSphere names the slot
 * (`scsi0:1`, `ide1:0`), or the device's label when it sits on no disk
 * controller (a floppy on the SIO controller). vSphere gives a slot to one
 * device, but vcsim 0.24 puts its default VMs' CD-ROM on the disk's slot
 * (both were made for controllers with the same temporary key); the disk
 * keeps the slot's name and the other gets `#<device key>` (unique per VM)
 * after it, so a name never stands for two devices.
 */
export function diskTargets(all: XNode[]): Map<XNode, DiskTarget> {
  const controllers = new Map(
    all.flatMap((d) => {
      const bus = CONTROLLER_BUS[xsiType(d) ?? ''];
      return bus ? [[textOf(child(d, 'key')) ?? '', { bus, number: intOf(child(d, 'busNumber')) ?? 0 }] as const] : [];
    }),
  );
  const rank = (d: XNode) => SLOT_ORDER.indexOf(xsiType(d) ?? '');
  const deviceKey = (d: XNode) => intOf(child(d, 'key')) ?? 0;
  const disks = all.filter((d) => rank(d) >= 0).sort((a, b) => rank(a) - rank(b) || deviceKey(a) - deviceKey(b));
  const targets = new Map<XNode, DiskTarget>();
  const taken = new Set<string>();
  for (const d of disks) {
    const controller = controllers.get(textOf(child(d, 'controllerKey')) ?? '');
    const slot = controller
      ? `${controller.bus}${controller.number}:${intOf(child(d, 'unitNumber')) ?? 0}`
      : (textOf(path(d, 'deviceInfo', 'label')) ?? `#${deviceKey(d)}`);
    const name = taken.has(slot) ? `${slot}#${deviceKey(d)}` : slot;
    taken.add(name);
    targets.set(d, { name, bus: controller?.bus ?? null });
  }
  return targets;
}

type DiskSourceType = 'file' | 'block' | 'network';

/**
 * vSphere's device backings in libvirt's words for a disk's source. Every
 * VMDK flavour (flat, sparse, SE sparse, PMem) is a file on a datastore, as
 * is a backing the gateway does not know.
 */
const BACKING_SOURCE: Record<string, DiskSourceType> = {
  VirtualCdromIsoBackingInfo: 'file',
  VirtualFloppyImageBackingInfo: 'file',
  // Raw device mappings and host devices passed through: the data is a device of the host.
  VirtualDiskRawDiskMappingVer1BackingInfo: 'block',
  VirtualDiskRawDiskVer2BackingInfo: 'block',
  VirtualDiskPartitionedRawDiskVer2BackingInfo: 'block',
  VirtualCdromAtapiBackingInfo: 'block',
  VirtualCdromPassthroughBackingInfo: 'block',
  VirtualFloppyDeviceBackingInfo: 'block',
  // "Client devices": a drive of the machine running the remote console, reached over the network.
  VirtualCdromRemoteAtapiBackingInfo: 'network',
  VirtualCdromRemotePassthroughBackingInfo: 'network',
  VirtualFloppyRemoteDeviceBackingInfo: 'network',
};

function diskSource(backing: XNode | undefined): { sourceType: DiskSourceType; source: string | null } {
  const sourceType = BACKING_SOURCE[xsiType(backing) ?? ''] ?? 'file';
  const fileName = textOf(child(backing, 'fileName')) || null;
  const deviceName = textOf(child(backing, 'deviceName')) || null;
  // A raw device mapping is reached through its mapping file on a datastore, as vSphere shows it.
  if (fileName) return { sourceType, source: fileName };
  // A client device's name is the remote console's, which says nothing of where the data is.
  return { sourceType, source: sourceType === 'block' ? deviceName : null };
}

function devices(o: ObjectContent): { disks: VmDiskRecord[]; nics: VmNicRecord[] } {
  const all = children(prop(o, 'config.hardware.device'), 'VirtualDevice');
  const targets = diskTargets(all);
  const disks: VmDiskRecord[] = [];
  const nics: VmNicRecord[] = [];
  for (const d of all) {
    const type = xsiType(d) ?? '';
    const backing = child(d, 'backing');
    const device = DISK_DEVICES[type];
    if (device) {
      const capacity = intOf(child(d, 'capacityInBytes')) ?? ((intOf(child(d, 'capacityInKB')) ?? 0) * 1024 || null);
      const { sourceType, source } = diskSource(backing);
      const target = targets.get(d);
      disks.push({
        device,
        target: target?.name ?? '',
        bus: target?.bus ?? null,
        sourceType,
        source,
        sourcePool: null,
        sourceVolume: null,
        storageNativeId: moRefOf(child(backing, 'datastore'))?.value ?? null,
        format:
          device === 'DISK' ? 'vmdk' : sourceType === 'file' && source?.toLowerCase().endsWith('.iso') ? 'iso' : null,
        capacityBytes: device === 'DISK' ? capacity : null,
        readOnly: device === 'CDROM',
      });
    } else if (NIC_TYPES.has(type)) {
      const backingType = xsiType(backing) ?? '';
      const portgroupKey = textOf(path(backing, 'port', 'portgroupKey')) || null;
      const network = moRefOf(child(backing, 'network'));
      const opaqueId = textOf(child(backing, 'opaqueNetworkId')) || null;
      nics.push({
        mac: textOf(child(d, 'macAddress'))?.toLowerCase() || null,
        model: type.replace(/^Virtual/, '').toLowerCase(),
        type: backingType.includes('DistributedVirtualPort')
          ? 'distributed-portgroup'
          : backingType.includes('OpaqueNetwork')
            ? 'opaque-network'
            : 'portgroup',
        source: textOf(child(backing, 'deviceName')) || portgroupKey || opaqueId,
        networkName: textOf(child(backing, 'deviceName')) || null,
        networkNativeId: portgroupKey ?? network?.value ?? null,
        targetDevice: null,
      });
    }
  }
  return { disks, nics };
}

/**
 * The most memory the VM can have without a restart. vSphere reports
 * hotPlugMemoryLimit (MB) only with memory hot-add on, and reports it as 0
 * (as vcsim does) or leaves it out otherwise: then it is the memory the VM has.
 */
function hotPlugCeilingMiB(o: ObjectContent, memoryMiB: number): number {
  if (boolOf(prop(o, 'config.memoryHotAddEnabled')) !== true) return memoryMiB;
  return Math.max(memoryMiB, intOf(prop(o, 'config.hotPlugMemoryLimit')) ?? 0);
}

const TOOLS: Record<string, VsphereVmFacts['toolsStatus']> = {
  toolsNotInstalled: 'NOT_INSTALLED',
  toolsNotRunning: 'NOT_RUNNING',
  toolsOld: 'OLD',
  toolsOk: 'OK',
};

export function vmDetails(o: ObjectContent, tree: InventoryTree | null): VmDetails {
  const numCpu = intOf(prop(o, 'config.hardware.numCPU')) ?? 0;
  const memoryMiB = intOf(prop(o, 'config.hardware.memoryMB')) ?? 0;
  const { disks, nics } = devices(o);
  const guestNet = children(prop(o, 'guest.net'), 'GuestNicInfo');
  const ips = guestNet.flatMap((n) => children(n, 'ipAddress').map((a) => a.text)).filter(Boolean);
  const primaryIp = str(o, 'guest.ipAddress');
  const toolsStatus = str(o, 'guest.toolsStatus');
  return {
    vcpus: numCpu,
    vcpusMax: numCpu,
    coresPerSocket: intOf(prop(o, 'config.hardware.numCoresPerSocket')),
    memoryMiB,
    maxMemoryMiB: hotPlugCeilingMiB(o, memoryMiB),
    guestOs: str(o, 'config.guestId'),
    guestOsFullName: str(o, 'config.guestFullName'),
    osType: null,
    guestArch: null,
    machineType: null,
    hardwareVersion: str(o, 'config.version'),
    description: str(o, 'config.annotation'),
    ipAddresses: ips.length > 0 ? [...new Set(ips)] : primaryIp ? [primaryIp] : [],
    guestHostName: str(o, 'guest.hostName'),
    disks,
    nics,
    graphics: [],
    tags: [],
    vsphere: {
      managedObjectId: o.obj.value,
      instanceUuid: str(o, 'config.instanceUuid'),
      toolsStatus: toolsStatus ? (TOOLS[toolsStatus] ?? null) : null,
      toolsRunningStatus: str(o, 'guest.toolsRunningStatus'),
      resourcePoolName: tree?.nameOf(moRefOf(prop(o, 'resourcePool'))) ?? null,
      resourcePoolPath: tree?.pathOf(moRefOf(prop(o, 'resourcePool'))) ?? null,
      folderPath: tree?.pathOf(moRefOf(prop(o, 'parent'))) ?? null,
      vmPathName: str(o, 'summary.config.vmPathName'),
    },
  };
}

export function snapshots(platformId: string, o: ObjectContent): SnapshotRecord[] {
  const info = prop(o, 'snapshot');
  if (!info) return [];
  const current = moRefOf(child(info, 'currentSnapshot'))?.value ?? null;
  const out: SnapshotRecord[] = [];
  const walk = (trees: XNode[], parentKey: string | null) => {
    for (const t of trees) {
      const snapKey = moRefOf(child(t, 'snapshot'))?.value ?? textOf(child(t, 'id')) ?? '';
      const state = textOf(child(t, 'state'));
      const created = textOf(child(t, 'createTime'));
      out.push({
        platformId,
        nativeId: childNativeId(o.obj.value, snapKey),
        vmNativeId: o.obj.value,
        key: snapKey,
        name: textOf(child(t, 'name')) ?? snapKey,
        description: textOf(child(t, 'description')) || null,
        createdAt: created ? new Date(created) : null,
        rawState: state,
        powerState: state ? (POWER[state] ?? null) : null,
        // A snapshot of a running VM that recorded it as running holds its memory.
        includesMemory: state === 'poweredOn',
        isCurrent: snapKey === current,
        quiesced: boolOf(child(t, 'quiesced')),
        parentKey,
      });
      walk(children(t, 'childSnapshotList'), snapKey);
    }
  };
  walk(children(info, 'rootSnapshotList'), null);
  return out;
}

const HOST_POWER: Record<string, HostRecord['powerState']> = { poweredOn: 'ON', standBy: 'STANDBY', poweredOff: 'OFF' };
const HOST_CONNECTION: Record<string, HostRecord['connectionState']> = {
  connected: 'CONNECTED',
  disconnected: 'DISCONNECTED',
  notResponding: 'NOT_RESPONDING',
};

/** ESXi's product name; ESX was its predecessor (a vCenter of old may still list one). */
function hypervisorType(productName: string | null): HypervisorType | null {
  if (productName === null) return null;
  return /^VMware ESXi?$/i.test(productName) ? 'ESXI' : 'OTHER';
}

export function hostRecord(platformId: string, o: ObjectContent, tree: InventoryTree): HostRecord {
  const hw = prop(o, 'summary.hardware');
  const product = prop(o, 'config.product');
  const cores = intOf(child(hw, 'numCpuCores'));
  const threads = intOf(child(hw, 'numCpuThreads'));
  const packages = intOf(child(hw, 'numCpuPkgs'));
  const memory = intOf(child(hw, 'memorySize'));
  const parent = moRefOf(prop(o, 'parent'));
  const productName = textOf(child(product, 'name'));
  return {
    platformId,
    nativeId: o.obj.value,
    name: str(o, 'name') ?? o.obj.value,
    cpuModel: textOf(child(hw, 'cpuModel')),
    cpuMhz: intOf(child(hw, 'cpuMhz')),
    cpuSockets: packages,
    cpuCoresPerSocket: cores !== null && packages ? Math.floor(cores / packages) : null,
    cpuThreadsPerCore: threads !== null && cores ? Math.floor(threads / cores) : null,
    cpuThreads: threads,
    numaNodes: null,
    memoryMiB: memory === null ? null : Math.floor(memory / 1024 ** 2),
    hypervisorType: hypervisorType(productName),
    rawHypervisorType: productName,
    hypervisorVersion: textOf(child(product, 'version')),
    hypervisorBuild: textOf(child(product, 'build')),
    libvirtVersion: null,
    uuid: textOf(child(hw, 'uuid')),
    connectionState: HOST_CONNECTION[str(o, 'runtime.connectionState') ?? ''] ?? 'DISCONNECTED',
    powerState: HOST_POWER[str(o, 'runtime.powerState') ?? ''] ?? 'UNKNOWN',
    inMaintenanceMode: boolOf(prop(o, 'runtime.inMaintenanceMode')) ?? false,
    clusterNativeId: parent?.type === 'ClusterComputeResource' ? parent.value : null,
    datacenterNativeId: tree.datacenterOf(parent),
    vsphere: { managedObjectId: o.obj.value, productName },
  };
}

/**
 * summary.type's values (HostFileSystemVolumeFileSystemType), compared
 * without case: vSphere spells vSAN `vsan` and most others in capitals.
 */
const DATASTORE_TYPES: Record<string, StorageType> = {
  VMFS: 'VMFS',
  NFS: 'NFS',
  NFS41: 'NFS',
  CIFS: 'CIFS',
  VSAN: 'VSAN',
  VSAND: 'VSAN',
  VVOL: 'VVOL',
  PMEM: 'PMEM',
};

const MAINTENANCE: Record<string, DatastoreMaintenanceMode> = {
  normal: 'NORMAL',
  enteringMaintenance: 'ENTERING_MAINTENANCE',
  inMaintenance: 'IN_MAINTENANCE',
};

export function datastoreRecord(platformId: string, o: ObjectContent, tree: InventoryTree): DatastoreRecord {
  const s = prop(o, 'summary');
  const capacity = intOf(child(s, 'capacity')) ?? 0;
  const free = intOf(child(s, 'freeSpace')) ?? 0;
  const rawType = textOf(child(s, 'type')) ?? 'OTHER';
  const maintenanceMode = textOf(child(s, 'maintenanceMode')) || null;
  return {
    storageKind: 'Datastore',
    platformId,
    nativeId: o.obj.value,
    name: textOf(child(s, 'name')) ?? o.obj.value,
    type: DATASTORE_TYPES[rawType.toUpperCase()] ?? 'OTHER',
    rawType,
    capacityBytes: capacity,
    availableBytes: free,
    allocationBytes: Math.max(0, capacity - free),
    uncommittedBytes: intOf(child(s, 'uncommitted')) ?? 0,
    accessible: boolOf(child(s, 'accessible')) ?? false,
    url: textOf(child(s, 'url')) || null,
    maintenanceMode: maintenanceMode === null ? null : (MAINTENANCE[maintenanceMode] ?? 'OTHER'),
    rawMaintenanceMode: maintenanceMode,
    datacenterNativeId: tree.datacenterOf(moRefOf(prop(o, 'parent'))),
  };
}

const NETWORK_KINDS: Record<string, NetworkKind> = {
  Network: 'STANDARD_PORTGROUP',
  DistributedVirtualPortgroup: 'DISTRIBUTED_PORTGROUP',
  OpaqueNetwork: 'OPAQUE_NETWORK',
};

export function networkRecord(platformId: string, o: ObjectContent, tree: InventoryTree): NetworkRecord {
  return {
    platformId,
    nativeId: o.obj.value,
    name: str(o, 'name') ?? o.obj.value,
    kind: NETWORK_KINDS[o.obj.type] ?? 'STANDARD_PORTGROUP',
    datacenterNativeId: tree.datacenterOf(moRefOf(prop(o, 'parent'))),
    uuid: str(o, 'config.key'),
    bridge: null,
    forwardMode: null,
    active: boolOf(prop(o, 'summary.accessible')) ?? true,
    persistent: null,
    autostart: null,
    addresses: [],
    dhcpRanges: [],
  };
}

/** Every property a VM's whole state is mapped from: its listing, details and snapshots at once. */
export const VM_STATE_PATHS: readonly string[] = [
  ...new Set([...VM_LIST_SPEC.paths, ...VM_DETAIL_SPEC.paths, ...VM_SNAPSHOT_SPEC.paths]),
];

/** A VM whole, from an object read with VM_STATE_PATHS. */
export function vmState(platformId: string, o: ObjectContent, tree: InventoryTree | null): VmState {
  return { vm: vmRecord(platformId, o), details: vmDetails(o, tree), snapshots: snapshots(platformId, o) };
}

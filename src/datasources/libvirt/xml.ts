import type { HypervisorType } from '../../model/host.js';
import type { NetworkAddressRecord } from '../../model/network.js';
import type { StorageType } from '../../model/storage.js';
import type { DiskDevice, VmDetails, VmDiskRecord, VmGraphicsRecord, VmNicRecord } from '../../model/vm.js';
import { type XNode, attrOf, child, children, parseXml } from '../xml/tree.js';
import { tagsOf } from './tags.js';

/** Text content of an element, trimmed; null when empty or absent. */
function text(node: XNode | undefined): string | null {
  const t = node?.text.trim();
  return t ? t : null;
}

const attr = attrOf;

function int(s: string | null): number | null {
  if (s === null) return null;
  const n = Number.parseInt(s, 10);
  return Number.isFinite(n) ? n : null;
}

function parseRoot(xml: string, root: string): XNode {
  const top = parseXml(xml);
  if (top.name !== root) throw new Error(`expected a <${root}> document from libvirt`);
  return top;
}

const UNIT_BYTES: Record<string, number> = {
  b: 1,
  bytes: 1,
  k: 1024,
  kib: 1024,
  kb: 1000,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1000 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1000 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  tb: 1000 ** 4,
};

/** A libvirt scaled integer (`<memory unit='KiB'>`) in MiB; libvirt's default unit is KiB. */
function mib(v: XNode | undefined): number | null {
  const amount = int(text(v));
  if (amount === null) return null;
  const unit = (attr(v, 'unit') ?? 'KiB').toLowerCase();
  const factor = UNIT_BYTES[unit] ?? 1024;
  return Math.floor((amount * factor) / 1024 ** 2);
}

const DISK_DEVICES: Record<string, DiskDevice> = { disk: 'DISK', cdrom: 'CDROM', floppy: 'FLOPPY', lun: 'LUN' };

function parseDisk(d: XNode): VmDiskRecord {
  const sourceType = attr(d, 'type') ?? 'file';
  const src = child(d, 'source');
  const pool = attr(src, 'pool');
  const volume = attr(src, 'volume');
  let source: string | null;
  switch (sourceType) {
    case 'file':
      source = attr(src, 'file');
      break;
    case 'block':
      source = attr(src, 'dev');
      break;
    case 'dir':
      source = attr(src, 'dir');
      break;
    case 'volume':
      source = pool && volume ? `${pool}/${volume}` : null;
      break;
    case 'network': {
      const protocol = attr(src, 'protocol');
      const name = attr(src, 'name');
      source = protocol && name ? `${protocol}://${name}` : name;
      break;
    }
    default:
      source = attr(src, 'file') ?? attr(src, 'dev') ?? attr(src, 'name');
  }
  return {
    device: DISK_DEVICES[attr(d, 'device') ?? 'disk'] ?? 'DISK',
    target: attr(child(d, 'target'), 'dev') ?? '',
    bus: attr(child(d, 'target'), 'bus'),
    sourceType,
    source,
    sourcePool: pool,
    sourceVolume: volume,
    storageNativeId: null,
    format: attr(child(d, 'driver'), 'type'),
    capacityBytes: null,
    readOnly: child(d, 'readonly') !== undefined,
  };
}

function parseNic(i: XNode): VmNicRecord {
  const type = attr(i, 'type') ?? 'network';
  const src = child(i, 'source');
  const networkName = type === 'network' ? attr(src, 'network') : null;
  return {
    mac: attr(child(i, 'mac'), 'address')?.toLowerCase() ?? null,
    model: attr(child(i, 'model'), 'type'),
    type,
    source: networkName ?? attr(src, 'bridge') ?? attr(src, 'dev') ?? attr(src, 'path'),
    networkName,
    networkNativeId: null,
    targetDevice: attr(child(i, 'target'), 'dev'),
  };
}

function parseGraphics(g: XNode): VmGraphicsRecord {
  return {
    type: attr(g, 'type') ?? 'unknown',
    port: int(attr(g, 'port')),
    autoport: attr(g, 'autoport') === 'yes',
    listen: attr(g, 'listen') ?? attr(child(g, 'listen'), 'address'),
  };
}

/** Reads the libosinfo OS ID that virt-install and virt-manager write into the metadata. */
function guestOsId(metadata: XNode | undefined): string | null {
  return attr(child(child(metadata, 'libosinfo'), 'os'), 'id');
}

export function parseDomainXml(xml: string): VmDetails {
  const d = parseRoot(xml, 'domain');
  const vcpuNode = child(d, 'vcpu');
  const vcpusMax = int(text(vcpuNode)) ?? 1;
  const maxMemoryMiB = mib(child(d, 'memory')) ?? 0;
  const osType = child(child(d, 'os'), 'type');
  const topology = child(child(d, 'cpu'), 'topology');
  const devices = child(d, 'devices');
  return {
    vcpus: int(attr(vcpuNode, 'current')) ?? vcpusMax,
    vcpusMax,
    coresPerSocket: int(attr(topology, 'cores')),
    memoryMiB: mib(child(d, 'currentMemory')) ?? maxMemoryMiB,
    maxMemoryMiB,
    guestOs: guestOsId(child(d, 'metadata')),
    guestOsFullName: null,
    hardwareVersion: null,
    ipAddresses: [],
    guestHostName: null,
    osType: text(osType),
    guestArch: attr(osType, 'arch'),
    machineType: attr(osType, 'machine'),
    description: text(child(d, 'description')) ?? text(child(d, 'title')),
    disks: children(devices, 'disk').map(parseDisk),
    nics: children(devices, 'interface').map(parseNic),
    graphics: children(devices, 'graphics').map(parseGraphics),
    tags: tagsOf(child(d, 'metadata')),
    vsphere: null,
  };
}

export interface ParsedSnapshot {
  description: string | null;
  createdAt: Date | null;
  state: string | null;
  memory: string | null;
  parentName: string | null;
}

// A snapshot's XML embeds the whole domain definition; only the header is
// read, so the embedded definitions are cut out before parsing.
const EMBEDDED_DOMAINS = /<(domain|inactiveDomain)[\s>][\s\S]*?<\/\1>/g;

export function parseSnapshotXml(xml: string): ParsedSnapshot {
  const s = parseRoot(xml.replace(EMBEDDED_DOMAINS, ''), 'domainsnapshot');
  const created = int(text(child(s, 'creationTime')));
  return {
    description: text(child(s, 'description')),
    createdAt: created === null ? null : new Date(created * 1000),
    state: text(child(s, 'state')),
    memory: attr(child(s, 'memory'), 'snapshot'),
    parentName: text(child(child(s, 'parent'), 'name')),
  };
}

export interface ParsedNetwork {
  bridge: string | null;
  forwardMode: string | null;
  addresses: NetworkAddressRecord[];
  dhcpRanges: { start: string; end: string }[];
}

function prefixFromNetmask(mask: string): number | null {
  const parts = mask.split('.').map((p) => Number.parseInt(p, 10));
  if (parts.length !== 4 || parts.some((p) => !(p >= 0 && p <= 255))) return null;
  return parts.reduce((bits, p) => bits + (p >>> 0).toString(2).replace(/0/g, '').length, 0);
}

export function parseNetworkXml(xml: string): ParsedNetwork {
  const n = parseRoot(xml, 'network');
  const forward = child(n, 'forward');
  // <forward/> without a mode means NAT; no <forward> at all means isolated.
  const forwardMode = forward === undefined ? 'isolated' : (attr(forward, 'mode') ?? 'nat');
  const ips = children(n, 'ip');
  return {
    bridge: attr(child(n, 'bridge'), 'name'),
    forwardMode,
    addresses: ips.flatMap((ip) => {
      const address = attr(ip, 'address');
      if (!address) return [];
      const family = attr(ip, 'family') ?? (address.includes(':') ? 'ipv6' : 'ipv4');
      const netmask = attr(ip, 'netmask');
      const prefix = int(attr(ip, 'prefix')) ?? (netmask ? prefixFromNetmask(netmask) : null);
      return [{ family, address, prefix }];
    }),
    dhcpRanges: ips.flatMap((ip) =>
      children(child(ip, 'dhcp'), 'range').flatMap((r) => {
        const start = attr(r, 'start');
        const end = attr(r, 'end');
        return start && end ? [{ start, end }] : [];
      }),
    ),
  };
}

/** libvirt's pool types (virStoragePoolType); those left out (`sheepdog`, `vstorage`) are OTHER. */
const POOL_TYPES: Record<string, StorageType> = {
  dir: 'DIRECTORY',
  fs: 'FILESYSTEM',
  netfs: 'NFS',
  logical: 'LVM',
  disk: 'DISK',
  iscsi: 'ISCSI',
  'iscsi-direct': 'ISCSI',
  scsi: 'SCSI',
  mpath: 'MULTIPATH',
  rbd: 'RBD',
  gluster: 'GLUSTER',
  zfs: 'ZFS',
};

/** What a `netfs` pool mounts, by its source format; `auto` is NFS, which mount tries first. */
const NETFS_FORMATS: Record<string, StorageType> = { auto: 'NFS', nfs: 'NFS', cifs: 'CIFS', glusterfs: 'GLUSTER' };

export function parsePoolXml(xml: string): { type: StorageType; rawType: string; targetPath: string | null } {
  const p = parseRoot(xml, 'pool');
  const rawType = attr(p, 'type') ?? 'unknown';
  const netfsFormat = rawType === 'netfs' ? (attr(child(child(p, 'source'), 'format'), 'type') ?? 'auto') : null;
  return {
    type: (netfsFormat === null ? POOL_TYPES[rawType] : NETFS_FORMATS[netfsFormat]) ?? 'OTHER',
    rawType,
    targetPath: text(child(child(p, 'target'), 'path')),
  };
}

/** libvirt's driver types (virConnectGetType), compared without case: `QEMU`, `Xen`, `LXC`, `TEST`, ... */
const HYPERVISOR_TYPES: Record<string, HypervisorType> = {
  qemu: 'QEMU',
  xen: 'XEN',
  lxc: 'LXC',
  esx: 'ESXI',
  'hyper-v': 'HYPERV',
  vbox: 'VIRTUALBOX',
  test: 'TEST',
};

export function hypervisorTypeOf(driverType: string): HypervisorType {
  return HYPERVISOR_TYPES[driverType.toLowerCase()] ?? 'OTHER';
}

export interface ParsedVolume {
  /** libvirt's volume type name: file, block, dir, network, netdir, ploop. */
  type: string;
  path: string | null;
  format: string | null;
  capacityBytes: number;
  allocationBytes: number;
}

/** A scaled integer in bytes; volume sizes default to bytes. */
function bytes(v: XNode | undefined): number {
  const amount = int(text(v)) ?? 0;
  return amount * (UNIT_BYTES[(attr(v, 'unit') ?? 'bytes').toLowerCase()] ?? 1);
}

export function parseVolumeXml(xml: string): ParsedVolume {
  const v = parseRoot(xml, 'volume');
  const target = child(v, 'target');
  return {
    type: attr(v, 'type') ?? 'file',
    path: text(child(target, 'path')),
    format: attr(child(target, 'format'), 'type'),
    capacityBytes: bytes(child(v, 'capacity')),
    allocationBytes: bytes(child(v, 'allocation')),
  };
}

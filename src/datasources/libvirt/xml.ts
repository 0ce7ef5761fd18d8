import { XMLParser } from 'fast-xml-parser';

import type { NetworkAddressRecord } from '../../model/network.js';
import type { DiskDevice, VmDetails, VmDiskRecord, VmGraphicsRecord, VmNicRecord } from '../../model/vm.js';

/** Elements that may repeat, by path; everything else parses as a single node. */
const REPEATED = new Set([
  'domain.devices.disk',
  'domain.devices.interface',
  'domain.devices.graphics',
  'network.ip',
  'network.ip.dhcp.range',
]);

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@',
  textNodeName: '#text',
  parseTagValue: false,
  parseAttributeValue: false,
  isArray: (_name, jpath) => REPEATED.has(String(jpath)),
});

type XmlNode = Record<string, unknown>;

function node(v: unknown): XmlNode | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as XmlNode) : undefined;
}

function list(v: unknown): XmlNode[] {
  if (Array.isArray(v)) return v.map((x) => node(x) ?? {});
  const n = node(v);
  return n ? [n] : [];
}

/** Text content of an element, whether it parsed as a string or as a node with attributes. */
function text(v: unknown): string | null {
  if (typeof v === 'string') return v.trim() === '' ? null : v.trim();
  const n = node(v);
  const t = n?.['#text'];
  return typeof t === 'string' && t.trim() !== '' ? t.trim() : null;
}

function attr(v: unknown, name: string): string | null {
  const a = node(v)?.[`@${name}`];
  return typeof a === 'string' ? a : null;
}

function int(s: string | null): number | null {
  if (s === null) return null;
  const n = Number.parseInt(s, 10);
  return Number.isFinite(n) ? n : null;
}

function parseRoot(xml: string, root: string): XmlNode {
  const doc = node(parser.parse(xml));
  const top = node(doc?.[root]);
  if (!top) throw new Error(`expected a <${root}> document from libvirt`);
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
function mib(v: unknown): number | null {
  const amount = int(text(v));
  if (amount === null) return null;
  const unit = (attr(v, 'unit') ?? 'KiB').toLowerCase();
  const factor = UNIT_BYTES[unit] ?? 1024;
  return Math.floor((amount * factor) / 1024 ** 2);
}

const DISK_DEVICES: Record<string, DiskDevice> = { disk: 'DISK', cdrom: 'CDROM', floppy: 'FLOPPY', lun: 'LUN' };

function parseDisk(d: XmlNode): VmDiskRecord {
  const sourceType = attr(d, 'type') ?? 'file';
  const src = d['source'];
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
    target: attr(d['target'], 'dev') ?? '',
    bus: attr(d['target'], 'bus'),
    sourceType,
    source,
    sourcePool: pool,
    sourceVolume: volume,
    storageNativeId: null,
    format: attr(d['driver'], 'type'),
    capacityBytes: null,
    readOnly: d['readonly'] !== undefined,
  };
}

function parseNic(i: XmlNode): VmNicRecord {
  const type = attr(i, 'type') ?? 'network';
  const src = i['source'];
  const networkName = type === 'network' ? attr(src, 'network') : null;
  return {
    mac: attr(i['mac'], 'address')?.toLowerCase() ?? null,
    model: attr(i['model'], 'type'),
    type,
    source: networkName ?? attr(src, 'bridge') ?? attr(src, 'dev') ?? attr(src, 'path'),
    networkName,
    networkNativeId: null,
    targetDevice: attr(i['target'], 'dev'),
  };
}

function parseGraphics(g: XmlNode): VmGraphicsRecord {
  return {
    type: attr(g, 'type') ?? 'unknown',
    port: int(attr(g, 'port')),
    autoport: attr(g, 'autoport') === 'yes',
    listen: attr(g, 'listen') ?? attr(g['listen'], 'address'),
  };
}

/** Reads the libosinfo OS ID that virt-install and virt-manager write into the metadata. */
function guestOsId(metadata: unknown): string | null {
  const md = node(metadata);
  if (!md) return null;
  for (const [key, value] of Object.entries(md)) {
    if (!key.endsWith('libosinfo')) continue;
    for (const [k, os] of Object.entries(node(value) ?? {})) {
      if (k.endsWith(':os') || k === 'os') return attr(os, 'id');
    }
  }
  return null;
}

export function parseDomainXml(xml: string): VmDetails {
  const d = parseRoot(xml, 'domain');
  const vcpuNode = d['vcpu'];
  const vcpusMax = int(text(vcpuNode)) ?? 1;
  const maxMemoryMiB = mib(d['memory']) ?? 0;
  const os = node(d['os']);
  const topology = node(node(d['cpu'])?.['topology']);
  const devices = node(d['devices']) ?? {};
  return {
    vcpus: int(attr(vcpuNode, 'current')) ?? vcpusMax,
    vcpusMax,
    coresPerSocket: int(attr(topology, 'cores')),
    memoryMiB: mib(d['currentMemory']) ?? maxMemoryMiB,
    maxMemoryMiB,
    guestOs: guestOsId(d['metadata']),
    guestOsFullName: null,
    hardwareVersion: null,
    ipAddresses: [],
    guestHostName: null,
    osType: text(os?.['type']),
    guestArch: attr(os?.['type'], 'arch'),
    machineType: attr(os?.['type'], 'machine'),
    description: text(d['description']) ?? text(d['title']),
    disks: list(devices['disk']).map(parseDisk),
    nics: list(devices['interface']).map(parseNic),
    graphics: list(devices['graphics']).map(parseGraphics),
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
  const created = int(text(s['creationTime']));
  return {
    description: text(s['description']),
    createdAt: created === null ? null : new Date(created * 1000),
    state: text(s['state']),
    memory: attr(s['memory'], 'snapshot'),
    parentName: text(node(s['parent'])?.['name']),
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
  const forward = n['forward'];
  // <forward/> without a mode means NAT; no <forward> at all means isolated.
  const forwardMode = forward === undefined ? 'isolated' : (attr(forward, 'mode') ?? 'nat');
  const ips = list(n['ip']);
  return {
    bridge: attr(n['bridge'], 'name'),
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
      list(node(ip['dhcp'])?.['range']).flatMap((r) => {
        const start = attr(r, 'start');
        const end = attr(r, 'end');
        return start && end ? [{ start, end }] : [];
      }),
    ),
  };
}

export function parsePoolXml(xml: string): { type: string; targetPath: string | null } {
  const p = parseRoot(xml, 'pool');
  return { type: attr(p, 'type') ?? 'unknown', targetPath: text(node(p['target'])?.['path']) };
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
function bytes(v: unknown): number {
  const amount = int(text(v)) ?? 0;
  return amount * (UNIT_BYTES[(attr(v, 'unit') ?? 'bytes').toLowerCase()] ?? 1);
}

export function parseVolumeXml(xml: string): ParsedVolume {
  const v = parseRoot(xml, 'volume');
  const target = node(v['target']);
  return {
    type: attr(v, 'type') ?? 'file',
    path: text(target?.['path']),
    format: attr(target?.['format'], 'type'),
    capacityBytes: bytes(v['capacity']),
    allocationBytes: bytes(v['allocation']),
  };
}

import { childNativeId } from '../../model/ids.js';
import type { SnapshotRecord } from '../../model/snapshot.js';
import type { DiskDevice, VmDetails, VmDiskRecord, VmRecord } from '../../model/vm.js';
import type { RequestScope } from '../request-scope.js';
import type { VmState } from '../watch.js';
import type { QmpMonitor } from './fleet.js';
import {
  type QmpBlockInfo,
  type QmpCpuInfoFast,
  type QmpMemorySizeSummary,
  type QmpStatusInfo,
  QmpTimeoutError,
} from './protocol.js';
import { runStateOf } from './states.js';

// A QEMU's VM in the neutral records, from what QMP answers: query-status
// (the listing record), query-cpus-fast, query-memory-size-summary and
// query-block (details), and the internal snapshots of the images that
// query-block lists. Each QEMU is its own upstream: a listing asks every
// QEMU once, in parallel; details and snapshots of one request share one
// query-block per QEMU (through the request's scope).

const MiB = 1024 * 1024;

/** The listing record of a QEMU's VM. A QEMU that does not answer in time shows its last known state, UNKNOWN. */
export async function readVmRecord(platformId: string, m: QmpMonitor): Promise<VmRecord> {
  try {
    m.lastStatus = await m.client.execute('query-status');
    return vmRecordOf(platformId, m, m.lastStatus, null);
  } catch (e) {
    if (!(e instanceof QmpTimeoutError)) throw e;
    return vmRecordOf(platformId, m, m.lastStatus, `QEMU did not answer query-status within ${e.timeoutMs} ms`);
  }
}

export function vmRecordOf(
  platformId: string,
  m: QmpMonitor,
  status: QmpStatusInfo,
  unresponsive: string | null,
): VmRecord {
  const state = runStateOf(status.status, status.running);
  return {
    platformId,
    nativeId: m.vmNativeId,
    name: m.name,
    uuid: m.uuid,
    powerState: state.powerState,
    phase: unresponsive ? 'UNKNOWN' : state.phase,
    rawState: status.status,
    rawStateReason: unresponsive,
    // QMP does not tell QEMU's process ID.
    runtimeId: null,
    // A QEMU process is its VM: nothing of it remains when it ends.
    persistent: false,
    autostart: null,
    isTemplate: false,
    hostNativeId: m.hostNativeId,
  };
}

/** query-block of one QEMU, once per request. */
export function readBlocks(m: QmpMonitor, scope: RequestScope): Promise<QmpBlockInfo[]> {
  // The connection is part of the key: a QEMU connected again within the request is asked again.
  return scope.memo(`qmp:query-block:${m.key}#${connectionNumber(m)}`, () => m.client.execute('query-block'));
}

const connectionNumbers = new WeakMap<QmpMonitor, number>();
let nextConnectionNumber = 1;
function connectionNumber(m: QmpMonitor): number {
  let n = connectionNumbers.get(m);
  if (n === undefined) connectionNumbers.set(m, (n = nextConnectionNumber++));
  return n;
}

export async function readVmDetails(m: QmpMonitor, scope: RequestScope): Promise<VmDetails> {
  const [cpus, memory, blocks] = await Promise.all([
    m.client.execute('query-cpus-fast'),
    m.client.execute('query-memory-size-summary'),
    readBlocks(m, scope),
  ]);
  return vmDetailsOf(m, cpus, memory, blocks);
}

export function vmDetailsOf(
  m: QmpMonitor,
  cpus: readonly QmpCpuInfoFast[],
  memory: QmpMemorySizeSummary,
  blocks: readonly QmpBlockInfo[],
): VmDetails {
  const memoryMiB = Math.floor((memory['base-memory'] + (memory['plugged-memory'] ?? 0)) / MiB);
  return {
    vcpus: cpus.length,
    vcpusMax: cpus.length,
    coresPerSocket: coresPerSocket(cpus),
    memoryMiB,
    maxMemoryMiB: memoryMiB,
    guestOs: null,
    guestOsFullName: null,
    hardwareVersion: null,
    ipAddresses: [],
    guestHostName: null,
    osType: null,
    guestArch: m.arch,
    machineType: m.machineType,
    description: null,
    disks: disksOf(blocks),
    nics: [],
    graphics: [],
    tags: [],
    vsphere: null,
  };
}

/** Cores of the first socket, when the machine says where its vCPUs sit. */
function coresPerSocket(cpus: readonly QmpCpuInfoFast[]): number | null {
  const socket = cpus[0]?.props?.['socket-id'];
  if (socket === undefined) return null;
  const cores = new Set(
    cpus.filter((c) => c.props?.['socket-id'] === socket).map((c) => c.props?.['core-id'] ?? c['cpu-index']),
  );
  return cores.size;
}

/** The drives of query-block as disks: the image file and its format, what the drive's name tells of its bus. */
export function disksOf(blocks: readonly QmpBlockInfo[]): VmDiskRecord[] {
  return blocks.map((b) => {
    const inserted = b.inserted;
    const file = inserted?.image.filename ?? inserted?.file ?? null;
    return {
      device: deviceOf(b),
      target: b.device || b.qdev || inserted?.['node-name'] || '',
      bus: busOf(b),
      sourceType: file === null ? 'file' : /^[a-z][a-z0-9+.-]*:\/\/|^json:/.test(file) ? 'network' : 'file',
      source: file,
      sourcePool: null,
      sourceVolume: null,
      storageNativeId: null,
      format: inserted?.image.format ?? null,
      capacityBytes: inserted?.image['virtual-size'] ?? null,
      readOnly: inserted?.ro ?? false,
    };
  });
}

/**
 * QMP does not say which kind of device a drive serves; a removable drive
 * is a CD-ROM (a floppy when its name says so), any other a disk.
 */
function deviceOf(b: QmpBlockInfo): DiskDevice {
  if (!b.removable) return 'DISK';
  return /floppy|^fd\d/.test(b.device) ? 'FLOPPY' : 'CDROM';
}

/** The bus, as QEMU names `-drive if=...` drives (`virtio0`, `ide0-hd0`, `scsi0-hd0`, `floppy0`), or the qdev path. */
function busOf(b: QmpBlockInfo): string | null {
  const name = `${b.device} ${b.qdev ?? ''}`;
  for (const bus of ['virtio', 'ide', 'scsi', 'sata', 'floppy', 'nvme', 'usb', 'pflash', 'sd']) {
    if (new RegExp(`\\b${bus}`).test(name)) return bus;
  }
  return null;
}

/**
 * The internal snapshots of a QEMU's images, one per name (a snapshot
 * saved with snapshot-save is in every image, the memory in one of them),
 * oldest first. qcow2 keeps no tree and no "current" snapshot: every
 * snapshot is a root, none is current.
 */
export function snapshotsOf(platformId: string, vmNativeId: string, blocks: readonly QmpBlockInfo[]): SnapshotRecord[] {
  const byKey = new Map<string, { name: string; at: number; memory: boolean }>();
  for (const b of blocks) {
    for (const s of b.inserted?.image.snapshots ?? []) {
      const key = s.name || s.id;
      const at = s['date-sec'] * 1000 + Math.floor(s['date-nsec'] / 1e6);
      const seen = byKey.get(key);
      byKey.set(key, {
        name: key,
        at: seen ? Math.min(seen.at, at) : at,
        memory: (seen?.memory ?? false) || s['vm-state-size'] > 0,
      });
    }
  }
  return [...byKey.entries()]
    .sort(([, a], [, b]) => a.at - b.at)
    .map(([key, s]): SnapshotRecord => ({
      platformId,
      nativeId: childNativeId(vmNativeId, key),
      vmNativeId,
      key,
      name: s.name,
      description: null,
      createdAt: new Date(s.at),
      // QEMU records no run state with a snapshot.
      rawState: null,
      powerState: null,
      includesMemory: s.memory,
      isCurrent: false,
      quiesced: null,
      parentKey: null,
    }));
}

/** A QEMU's VM whole. */
export async function readVmState(platformId: string, m: QmpMonitor, scope: RequestScope): Promise<VmState> {
  const [vm, details, blocks] = await Promise.all([
    readVmRecord(platformId, m),
    readVmDetails(m, scope),
    readBlocks(m, scope),
  ]);
  return { vm, details, snapshots: snapshotsOf(platformId, m.vmNativeId, blocks) };
}

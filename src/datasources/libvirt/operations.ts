// What libvirt does for each VM operation: lifecycle calls, snapshots,
// clones, reconfiguration and new domains. The provider runs these with its
// live connection.

import {
  OperationFailedError,
  type OperationReporter,
  type OperationResult,
  type Reconfiguration,
  type VmOperation,
  type VmSpec,
} from '../../model/operations.js';
import { waitUntilGuestOff } from '../guest-shutdown.js';
import {
  type DomainOperation,
  DomainStats,
  DomainXmlFlags,
  ListDomainsFlags,
  ModificationImpact,
  SnapshotCreateFlags,
  SnapshotDeleteFlags,
  UndefineFlags,
} from './addon.js';
import type { LibvirtClient } from './client.js';
import { editDomainXml } from './domain-edit.js';
import { withTags } from './tags.js';
import { VirErr, isLibvirtCode } from './errors.js';
import { parsePoolXml, parseVolumeXml } from './xml.js';
import { escapeXml } from '../xml/tree.js';
import { assertLinkable, backedVolume, volumesByPath } from './linked-clone.js';

function snapshotXml(op: Extract<VmOperation, { kind: 'CREATE_SNAPSHOT' }>): string {
  const description = op.description ? `<description>${escapeXml(op.description)}</description>` : '';
  const memory = op.includeMemory ? '' : "<memory snapshot='no'/>";
  return `<domainsnapshot><name>${escapeXml(op.name)}</name>${description}${memory}</domainsnapshot>`;
}

/** Does one operation on one domain. */
export async function runDomainOperation(
  c: LibvirtClient,
  uuid: string,
  op: VmOperation,
  reporter: OperationReporter,
  gracefulStopTimeoutMs: number,
): Promise<OperationResult> {
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
        await waitUntilGuestOff(() => isOff(c, uuid), reporter, gracefulStopTimeoutMs);
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
      const volumes = op.deleteStorage ? await diskVolumePaths(c, uuid) : [];
      // A transient domain is gone once destroyed; a persistent one is undefined with everything it owns.
      if (persistent) await undefineAll(c, uuid);
      for (const path of volumes) await c.call('deleteVolume', path);
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
      return clone(c, uuid, op, reporter);
    case 'RECONFIGURE_VM':
      await reconfigure(c, uuid, op);
      await reconfigureLive(c, uuid, op);
      return {};
    case 'MIGRATE_VM':
      // It needs a connection of its own beside this one: LibvirtProvider.runOperation runs it (migration.ts).
      throw new OperationFailedError('a migration runs through migrateDomain, not on one connection', 'UNSUPPORTED');
  }
}

/**
 * Defines a domain of the connection's preferred guest type (kvm where
 * available), with new qcow2 volumes for its disks and virtio devices.
 */
export async function createDomain(
  c: LibvirtClient,
  spec: VmSpec,
  reporter: OperationReporter,
): Promise<OperationResult> {
  const caps = await c.call('getCapabilities');
  const guest = preferredGuest(caps);
  if (!guest) throw new OperationFailedError('the hypervisor offers no hvm guest type', 'UNSUPPORTED');
  const [pools, nets] = await Promise.all([
    c.call('listAllStoragePools', 0),
    networkNames(
      c,
      spec.nics.map((n) => n.networkNativeId),
    ),
  ]);
  const disks: { path: string; format: string }[] = [];
  for (const [i, disk] of spec.disks.entries()) {
    const pool =
      pools.find((p) => p.uuid === (disk.storageNativeId ?? spec.placement.storageNativeId)) ??
      pools.find((p) => p.state === 2);
    if (!pool) throw new OperationFailedError('no running storage pool for the new disks', 'INVALID_INPUT');
    disks.push(await newQcow2Volume(c, pool.uuid, `${spec.name}-disk${i + 1}.qcow2`, disk.capacityBytes));
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
  const xml = editDomainXml(withTags(skeleton, spec.tags), {
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

/**
 * A clone is the source's inactive definition under a new name, without
 * its UUID and MAC addresses (libvirt makes new ones), with every disk
 * image copied into a new volume of the same pool; CD-ROMs stay shared.
 */
async function clone(
  c: LibvirtClient,
  uuid: string,
  op: Extract<VmOperation, { kind: 'CLONE_VM' }>,
  reporter: OperationReporter,
): Promise<OperationResult> {
  if (op.placement.storageNativeId) {
    throw new OperationFailedError(
      'libvirt clones copy disks within their own pool; leave storage out of the placement',
      'UNSUPPORTED',
    );
  }
  const [source] = await c.call('getDomainXmlDescs', [uuid], DomainXmlFlags.INACTIVE | DomainXmlFlags.SECURE);
  if (source === undefined || source instanceof Error)
    throw source ?? new OperationFailedError('the source VM has gone');
  let xml = source
    .replace(/<test:[a-z]+[\s\S]*?<\/test:[a-z]+>|<test:[a-z]+[^>]*\/>/g, '') // test-driver metadata (run state, snapshots)
    .replace(/<uuid>[^<]*<\/uuid>\s*/, '')
    .replace(/<mac address=['"][^'"]*['"]\s*\/>\s*/g, '')
    .replace(/<name>[^<]*<\/name>/, `<name>${escapeXml(op.name)}</name>`);
  const disks = [...xml.matchAll(/<disk type=['"](file|volume)['"] device=['"]disk['"][\s\S]*?<\/disk>/g)];
  const volumes = await volumeIndex(c);
  if (op.linked) await assertLinkable(c, uuid);
  const backing = op.linked ? await volumesByPath(c) : null;
  for (const [i, [disk]] of disks.entries()) {
    const file = /<source file=['"]([^'"]+)['"]/.exec(disk)?.[1];
    const poolVolume = /<source pool=['"]([^'"]+)['"] volume=['"]([^'"]+)['"]/.exec(disk);
    const sourcePath =
      file ?? (poolVolume ? volumes.byPoolAndName.get(`${poolVolume[1]}/${poolVolume[2]}`) : undefined);
    if (!sourcePath)
      throw new OperationFailedError(
        `disk ${i + 1} of the source is not a volume of a storage pool; the gateway cannot copy it`,
        'UNSUPPORTED',
      );
    const extension = /\.[a-z0-9]+$/i.exec(sourcePath)?.[0] ?? '';
    const base = backing?.get(sourcePath);
    if (backing && !base)
      throw new OperationFailedError(
        `disk ${i + 1} of the source is in no storage pool; it cannot back a linked clone`,
      );
    const newPath = base
      ? await backedVolume(c, base, sourcePath, `${op.name}-disk${i + 1}.qcow2`)
      : await c.call('cloneVolume', sourcePath, `${op.name}-disk${i + 1}${extension}`);
    const newName = newPath.slice(newPath.lastIndexOf('/') + 1);
    let copied = file
      ? disk.replace(/<source file=['"][^'"]+['"]/, `<source file='${escapeXml(newPath)}'`)
      : disk.replace(/volume=['"][^'"]+['"]/, `volume='${escapeXml(newName)}'`);
    // A backed volume is qcow2 whatever its base is.
    if (base) copied = copied.replace(/(<driver[^>]*\btype=)['"][^'"]+['"]/, "$1'qcow2'");
    xml = xml.replace(disk, copied);
    reporter.progress(10 + ((i + 1) / disks.length) * 70);
  }
  if (op.tags) xml = withTags(xml, op.tags);
  const created = await c.call('defineXml', xml);
  if (op.powerOn) await c.call('domainLifecycle', created.uuid, 'create', 0);
  return { vmNativeId: created.uuid };
}

/**
 * Changes the persistent definition: a running domain takes the changes
 * at its next start. New disks are new qcow2 volumes in the named pool, or
 * in the pool of the VM's first disk.
 */
async function reconfigure(c: LibvirtClient, uuid: string, change: Reconfiguration): Promise<void> {
  const [source] = await c.call('getDomainXmlDescs', [uuid], DomainXmlFlags.INACTIVE | DomainXmlFlags.SECURE);
  if (source === undefined || source instanceof Error) throw source ?? new OperationFailedError('the VM has gone');
  const addNetworks = await networkNames(
    c,
    change.addNics.map((n) => n.networkNativeId),
  );
  const addDiskPaths: { path: string; format: string }[] = [];
  if (change.addDisks.length > 0) {
    const pools = await c.call('listAllStoragePools', 0);
    const firstDisk = /<source file=['"]([^'"]+)['"]/.exec(source)?.[1];
    const home = pools.find((p) => {
      const target = parsePoolXml(p.xml).targetPath;
      return firstDisk !== undefined && target !== null && firstDisk.startsWith(`${target}/`);
    });
    const name = /<name>([^<]+)<\/name>/.exec(source)?.[1] ?? uuid;
    for (const [i, disk] of change.addDisks.entries()) {
      const pool = disk.storageNativeId ? pools.find((p) => p.uuid === disk.storageNativeId) : home;
      if (!pool)
        throw new OperationFailedError(
          'name the storage pool for the new disk (the VM has no disk in a pool)',
          'INVALID_INPUT',
        );
      addDiskPaths.push(
        await newQcow2Volume(c, pool.uuid, `${name}-${Date.now().toString(36)}-${i + 1}.qcow2`, disk.capacityBytes),
      );
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

/**
 * A running domain takes new vCPU and memory counts at once where it can:
 * up to the maximums of its definition, when the guest accepts them (CPU
 * hot-plug, a balloon). Where it cannot, the change waits for its next
 * start, as the definition already says.
 */
async function reconfigureLive(c: LibvirtClient, uuid: string, change: Reconfiguration): Promise<void> {
  const running = (await c.call('getAllDomainStats', DomainStats.STATE, 0)).some((d) => d.uuid === uuid && d.id >= 0);
  if (!running) return;
  const live: [resource: 'vcpus' | 'memory', value: number | null][] = [
    ['vcpus', change.vcpus],
    ['memory', change.memoryMiB === null ? null : change.memoryMiB * 1024],
  ];
  for (const [resource, value] of live) {
    if (value === null) continue;
    await c.call('domainSetResource', uuid, resource, value, ModificationImpact.LIVE).catch(() => undefined);
  }
}

/** Paths of every volume by `pool/name`, for disks that name a pool volume. */
/** The paths of the storage-pool volumes a domain's disks are (not CD-ROMs, not files outside any pool). */
async function diskVolumePaths(c: LibvirtClient, uuid: string): Promise<string[]> {
  const [xml] = await c.call('getDomainXmlDescs', [uuid], DomainXmlFlags.INACTIVE | DomainXmlFlags.SECURE);
  if (xml === undefined || xml instanceof Error) return [];
  const volumes = await volumeIndex(c);
  const inPools = new Set(volumes.byPoolAndName.values());
  const paths: string[] = [];
  for (const [disk] of xml.matchAll(/<disk type=['"](file|volume)['"] device=['"]disk['"][\s\S]*?<\/disk>/g)) {
    const file = /<source file=['"]([^'"]+)['"]/.exec(disk)?.[1];
    const poolVolume = /<source pool=['"]([^'"]+)['"] volume=['"]([^'"]+)['"]/.exec(disk);
    const path = file ?? (poolVolume ? volumes.byPoolAndName.get(`${poolVolume[1]}/${poolVolume[2]}`) : undefined);
    if (path && inPools.has(path)) paths.push(path);
  }
  return paths;
}

async function volumeIndex(c: LibvirtClient): Promise<{ byPoolAndName: Map<string, string> }> {
  const pools = await c.call('listAllStoragePools', 0);
  const perPool = await c.call(
    'listStorageVolumes',
    pools.map((p) => p.uuid),
  );
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
async function undefineAll(c: LibvirtClient, uuid: string): Promise<void> {
  const attempts = [
    UndefineFlags.MANAGED_SAVE |
      UndefineFlags.SNAPSHOTS_METADATA |
      UndefineFlags.NVRAM |
      UndefineFlags.CHECKPOINTS_METADATA,
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

/** Whether the domain has stopped (or is gone). */
async function isOff(c: LibvirtClient, uuid: string): Promise<boolean> {
  const stats = (await c.call('getAllDomainStats', DomainStats.STATE, 0)).find((d) => d.uuid === uuid);
  return !stats || stats.id < 0;
}

/** The names of the networks with these UUIDs (no call when there are none); an unknown one is INVALID_INPUT. */
async function networkNames(c: LibvirtClient, uuids: string[]): Promise<string[]> {
  if (uuids.length === 0) return [];
  const networks = await c.call('listAllNetworks', 0);
  return uuids.map((uuid) => {
    const net = networks.find((n) => n.uuid === uuid);
    if (!net) throw new OperationFailedError(`no network ${uuid} on this platform`, 'INVALID_INPUT');
    return net.name;
  });
}

/** Creates an empty qcow2 volume in a pool. */
async function newQcow2Volume(
  c: LibvirtClient,
  poolUuid: string,
  name: string,
  capacityBytes: number,
): Promise<{ path: string; format: string }> {
  const xml = `<volume><name>${escapeXml(name)}</name><capacity unit='bytes'>${capacityBytes}</capacity><target><format type='qcow2'/></target></volume>`;
  return { path: await c.call('createVolume', poolUuid, xml), format: 'qcow2' };
}

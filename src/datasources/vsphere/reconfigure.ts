import { OperationFailedError, type Reconfiguration } from '../../model/operations.js';
import { NETWORK_SPECS, diskTargets } from './mapping.js';
import type { VsphereSession } from './session.js';
import {
  type MoRef,
  type XNode,
  child,
  children,
  elementXml,
  intOf,
  moRefOf,
  moRefXml,
  nodeXml,
  textOf,
  xsiType,
} from './xml.js';

// ReconfigVM_Task's spec for a neutral Reconfiguration: CPU and memory
// fields, then one deviceChange per disk or NIC added or removed. Element
// order follows the vim25 schema, which vCenter enforces.

const SCSI_RESERVED_UNIT = 7;

function change(operation: 'add' | 'remove', device: string, fileOperation?: 'create'): string {
  return `<deviceChange>${elementXml('operation', operation)}${fileOperation ? elementXml('fileOperation', fileOperation) : ''}${device}</deviceChange>`;
}

export async function reconfigureSpec(s: VsphereSession, vm: MoRef, c: Reconfiguration): Promise<string> {
  const [o] = await s.retrieveObjects(
    [vm],
    [{ type: 'VirtualMachine', paths: ['config.hardware.device', 'datastore'] }],
  );
  if (!o) throw new OperationFailedError('the VM has gone');
  const devices = children(o.props.get('config.hardware.device'), 'VirtualDevice');
  const targets = diskTargets(devices);
  const changes: string[] = [];

  // The names VmDisk.target shows, CD-ROMs and floppies included, as libvirt's removal takes any <disk>.
  for (const target of c.removeDiskTargets) {
    const disk = devices.find((d) => targets.get(d)?.name === target);
    if (!disk) throw new OperationFailedError(`the VM has no disk ${target}`, 'INVALID_INPUT');
    changes.push(change('remove', nodeXml(disk, 'device')));
  }
  for (const mac of c.removeNicMacs) {
    const nic = devices.find((d) => textOf(child(d, 'macAddress'))?.toLowerCase() === mac.toLowerCase());
    if (!nic) throw new OperationFailedError(`the VM has no NIC with MAC ${mac}`, 'INVALID_INPUT');
    changes.push(change('remove', nodeXml(nic, 'device')));
  }

  const keys = newKeys();
  if (c.addDisks.length > 0) {
    const controller = devices.find((d) => /SCSIController|LsiLogic|BusLogic/.test(xsiType(d) ?? ''));
    if (!controller) throw new OperationFailedError('the VM has no SCSI controller to attach a disk to', 'UNSUPPORTED');
    const controllerKey = textOf(child(controller, 'key')) ?? '';
    const used = new Set(
      devices
        .filter((d) => textOf(child(d, 'controllerKey')) === controllerKey)
        .map((d) => intOf(child(d, 'unitNumber'))),
    );
    const vmStores = children(o.props.get('datastore'), 'ManagedObjectReference').map((r) => r.text);
    for (const disk of c.addDisks) {
      const store = disk.storageNativeId ?? vmStores[0];
      if (!store)
        throw new OperationFailedError('name the datastore for the new disk (the VM has none)', 'INVALID_INPUT');
      changes.push(await newDiskChange(s, keys(), controllerKey, freeUnit(used), store, disk.capacityBytes));
    }
  }
  changes.push(
    ...(await newNicChanges(
      s,
      keys,
      c.addNics.map((n) => n.networkNativeId),
    )),
  );
  return (
    '<spec>' +
    (c.vcpus !== null ? elementXml('numCPUs', c.vcpus) : '') +
    (c.coresPerSocket !== null ? elementXml('numCoresPerSocket', c.coresPerSocket) : '') +
    (c.memoryMiB !== null ? elementXml('memoryMB', c.memoryMiB) : '') +
    changes.join('') +
    '</spec>'
  );
}

/** Negative keys for devices being added, as vSphere asks. */
export function newKeys(): () => number {
  let key = -100;
  return () => key--;
}

/** The lowest free unit number on a SCSI controller (7 is the controller's own). */
export function freeUnit(used: Set<number | null>): number {
  let unit = 0;
  while (used.has(unit) || unit === SCSI_RESERVED_UNIT) unit += 1;
  used.add(unit);
  return unit;
}

async function datastoreName(s: VsphereSession, store: string): Promise<string> {
  const [ds] = await s.retrieveObjects(
    [{ type: 'Datastore', value: store }],
    [{ type: 'Datastore', paths: ['summary.name'] }],
  );
  const name = ds?.props.get('summary.name')?.text;
  if (!name) throw new OperationFailedError(`no datastore ${store}`, 'INVALID_INPUT');
  return name;
}

/** A deviceChange creating a thin disk on a datastore. */
export async function newDiskChange(
  s: VsphereSession,
  key: number,
  controllerKey: string | number,
  unit: number,
  store: string,
  capacityBytes: number,
): Promise<string> {
  const device =
    `<device xsi:type="VirtualDisk">${elementXml('key', key)}` +
    `<backing xsi:type="VirtualDiskFlatVer2BackingInfo">${elementXml('fileName', `[${await datastoreName(s, store)}]`)}` +
    `${moRefXml('datastore', { type: 'Datastore', value: store })}${elementXml('diskMode', 'persistent')}${elementXml('thinProvisioned', true)}</backing>` +
    `${elementXml('controllerKey', controllerKey)}${elementXml('unitNumber', unit)}${elementXml('capacityInKB', Math.ceil(capacityBytes / 1024))}</device>`;
  return change('add', device, 'create');
}

/** deviceChanges adding a VMXNET3 NIC on each network (standard or distributed port group). */
export async function newNicChanges(s: VsphereSession, keys: () => number, networkIds: string[]): Promise<string[]> {
  if (networkIds.length === 0) return [];
  const networks = await s.retrieveAll(NETWORK_SPECS);
  const out: string[] = [];
  for (const id of networkIds) {
    const net = networks.find((n) => n.obj.value === id);
    if (!net) throw new OperationFailedError(`no network ${id} on this platform`, 'INVALID_INPUT');
    const backing =
      net.obj.type === 'DistributedVirtualPortgroup'
        ? await dvPortBacking(s, net.obj)
        : networkBacking(net.obj, net.props.get('name'));
    out.push(
      change(
        'add',
        `<device xsi:type="VirtualVmxnet3">${elementXml('key', keys())}${backing}${elementXml('addressType', 'generated')}</device>`,
      ),
    );
  }
  return out;
}

/** A deviceChange adding a paravirtual SCSI controller on bus 0. */
export function newScsiControllerChange(key: number): string {
  return change(
    'add',
    `<device xsi:type="ParaVirtualSCSIController">${elementXml('key', key)}${elementXml('busNumber', 0)}${elementXml('sharedBus', 'noSharing')}</device>`,
  );
}

function networkBacking(net: MoRef, name: XNode | undefined): string {
  return `<backing xsi:type="VirtualEthernetCardNetworkBackingInfo">${elementXml('deviceName', name?.text ?? '')}${moRefXml('network', net)}</backing>`;
}

async function dvPortBacking(s: VsphereSession, portgroup: MoRef): Promise<string> {
  const [pg] = await s.retrieveObjects(
    [portgroup],
    [{ type: 'DistributedVirtualPortgroup', paths: ['config.distributedVirtualSwitch', 'key'] }],
  );
  const dvs = moRefOf(pg?.props.get('config.distributedVirtualSwitch'));
  const [sw] = dvs ? await s.retrieveObjects([dvs], [{ type: dvs.type, paths: ['uuid'] }]) : [];
  const uuid = sw?.props.get('uuid')?.text;
  if (!uuid) throw new OperationFailedError(`cannot find the distributed switch of ${portgroup.value}`);
  return (
    `<backing xsi:type="VirtualEthernetCardDistributedVirtualPortBackingInfo"><port>${elementXml('switchUuid', uuid)}` +
    `${elementXml('portgroupKey', pg?.props.get('key')?.text ?? portgroup.value)}</port></backing>`
  );
}

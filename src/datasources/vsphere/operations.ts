// What vSphere does for each VM operation: the *_Task method, its spec, and
// following the upstream task to its end. The provider runs these with its
// live session.

import {
  OperationFailedError,
  type OperationReporter,
  type OperationResult,
  type Placement,
  type TaskOperation,
  type VmOperation,
  type VmSpec,
} from '../../model/operations.js';
import { waitUntilGuestOff } from '../guest-shutdown.js';
import type { XNode } from '../xml/tokenizer.js';
import { InventoryTree, TREE_SPECS } from './mapping.js';
import {
  freeUnit,
  newDiskChange,
  newKeys,
  newNicChanges,
  newScsiControllerChange,
  reconfigureSpec,
} from './reconfigure.js';
import type { VsphereSession } from './session.js';
import { resultRef } from './task-watcher.js';
import { invokeTask, invokeVoid } from './vim.js';
import { type MoRef, children, elementXml, moRefOf, moRefXml } from './xml.js';

/**
 * Follows a task started before the gateway restarted to its end, and reads
 * its result as the operation that started it would have: the new VM of a
 * clone or create, the new snapshot. Steps the operation meant to take after
 * that task (a clone's power-on) are not taken.
 */
export async function followTask(
  s: VsphereSession,
  taskId: string,
  operation: TaskOperation,
  reporter: OperationReporter,
): Promise<OperationResult> {
  const created = resultRef(await s.tasks.wait({ type: 'Task', value: taskId }, reporter));
  if (!created) return {};
  if (operation === 'CLONE_VM' || operation === 'CREATE_VM') return { vmNativeId: created.value };
  if (operation === 'CREATE_SNAPSHOT') return { snapshotKey: created.value };
  return {};
}

/** Does one operation on one VM, following the upstream tasks it starts. */
export async function runVmOperation(
  s: VsphereSession,
  vmId: string,
  op: VmOperation,
  reporter: OperationReporter,
  gracefulStopTimeoutMs: number,
): Promise<OperationResult> {
  const vm: MoRef = { type: 'VirtualMachine', value: vmId };
  const task = async (method: string, target: MoRef = vm, args = '') =>
    s.tasks.wait(await s.call(() => invokeTask(s.client, method, target, args)), reporter);
  const snapshot = (key: string): MoRef => ({ type: 'VirtualMachineSnapshot', value: key });
  switch (op.kind) {
    case 'START_VM':
    case 'RESUME_VM':
      await task('PowerOnVM_Task');
      return {};
    case 'STOP_VM':
      if (op.force) {
        await task('PowerOffVM_Task');
      } else {
        await s.call(() => invokeVoid(s.client, 'ShutdownGuest', vm));
        await waitUntilGuestOff(
          async () => (await powerState(s, vm)) !== 'poweredOn',
          reporter,
          gracefulStopTimeoutMs,
          300,
        );
      }
      return {};
    case 'REBOOT_VM':
      await s.call(() => invokeVoid(s.client, 'RebootGuest', vm));
      return {};
    case 'RESET_VM':
      await task('ResetVM_Task');
      return {};
    case 'SUSPEND_VM':
      await task('SuspendVM_Task');
      return {};
    case 'DELETE_VM':
      if (op.force && (await powerState(s, vm)) !== 'poweredOff') await task('PowerOffVM_Task');
      await task('Destroy_Task');
      return {};
    case 'CREATE_SNAPSHOT': {
      const args =
        elementXml('name', op.name) +
        (op.description ? elementXml('description', op.description) : '') +
        elementXml('memory', op.includeMemory) +
        elementXml('quiesce', op.quiesce);
      const created = resultRef(await task('CreateSnapshot_Task', vm, args));
      return created ? { snapshotKey: created.value } : {};
    }
    case 'REVERT_TO_SNAPSHOT':
      await task('RevertToSnapshot_Task', snapshot(op.snapshotKey));
      return {};
    case 'DELETE_SNAPSHOT':
      await task('RemoveSnapshot_Task', snapshot(op.snapshotKey), elementXml('removeChildren', op.withChildren));
      return {};
    case 'CLONE_VM': {
      const base = op.linked ? await linkedCloneBase(s, vm, (args) => task('CreateSnapshot_Task', vm, args)) : null;
      const spec = await cloneSpec(s, vm, op, base);
      const created = resultRef(await task('CloneVM_Task', vm, spec));
      if (!created) throw new OperationFailedError('CloneVM_Task succeeded without naming the new VM');
      // spec.powerOn is a request some servers ignore (vcsim does): the task ends with the VM running.
      if (op.powerOn && (await powerState(s, created)) !== 'poweredOn') await task('PowerOnVM_Task', created);
      return { vmNativeId: created.value };
    }
    case 'MIGRATE_VM': {
      const target = await placementTarget(s, { hostNativeId: op.hostNativeId });
      // Stopped before it started: nothing was done.
      reporter.signal?.throwIfAborted();
      const spec = `<spec>${relocationXml(op.storageNativeId, target?.pool ?? null, op.hostNativeId)}</spec>`;
      await waitCancellable(s, await s.call(() => invokeTask(s.client, 'RelocateVM_Task', vm, spec)), reporter);
      return {};
    }
    case 'RECONFIGURE_VM':
      await task('ReconfigVM_Task', vm, await reconfigureSpec(s, vm, op));
      return {};
    case 'PAUSE_VM':
    case 'UNPAUSE_VM':
      throw new OperationFailedError('vSphere cannot pause a VM with its memory kept in place', 'UNSUPPORTED');
  }
}

/**
 * Follows a task that the reporter's signal may stop (a migration's cancel
 * or timeout): on abort, CancelTask asks vCenter to stop it, and the
 * signal's reason is thrown once it has ended other than in success. A task
 * vCenter will not cancel (a vMotion past its switch-over, a server without
 * CancelTask) runs on and ends as it ends.
 */
async function waitCancellable(s: VsphereSession, task: MoRef, reporter: OperationReporter): Promise<void> {
  const signal = reporter.signal;
  const cancel = () => {
    // Refused or not: the task's own end says what happened, and is what the caller gets.
    s.call(() => invokeVoid(s.client, 'CancelTask', task)).catch(() => undefined);
  };
  signal?.addEventListener('abort', cancel, { once: true });
  if (signal?.aborted) cancel();
  try {
    await s.tasks.wait(task, reporter);
  } catch (e) {
    throw signal?.aborted ? signal.reason : e;
  } finally {
    signal?.removeEventListener('abort', cancel);
  }
}

/**
 * CreateVM_Task in the datacenter's VM folder, in the resource pool of the
 * chosen cluster or host, with a paravirtual SCSI controller, thin disks
 * and VMXNET3 NICs.
 */
export async function createVirtualMachine(
  s: VsphereSession,
  platformId: string,
  spec: VmSpec,
  reporter: OperationReporter,
): Promise<OperationResult> {
  const { hostNativeId } = spec.placement;
  const tree = new InventoryTree(platformId, await s.retrieveAll(TREE_SPECS));
  const target = await placementTarget(s, spec.placement, tree);
  if (!target?.pool)
    throw new OperationFailedError('the placement names no cluster or host this platform has', 'INVALID_INPUT');
  const { compute, pool } = target;
  const datacenter = tree.datacenterOf(compute);
  const [dc] = datacenter
    ? await s.retrieveObjects(
        [{ type: 'Datacenter', value: datacenter }],
        [{ type: 'Datacenter', paths: ['vmFolder'] }],
      )
    : [];
  const folder = folderAt(tree, spec.placement, compute) ?? moRefOf(dc?.props.get('vmFolder'));
  if (!folder) throw new OperationFailedError('cannot find the datacenter VM folder of the placement');
  const store =
    spec.placement.storageNativeId ??
    spec.disks.find((d) => d.storageNativeId)?.storageNativeId ??
    target.datastores[0];
  if (!store)
    throw new OperationFailedError('the placement has no datastore; give placement.storageId', 'INVALID_INPUT');

  const keys = newKeys();
  const controllerKey = keys();
  const units = new Set<number | null>();
  const changes = [newScsiControllerChange(controllerKey)];
  for (const disk of spec.disks) {
    changes.push(
      await newDiskChange(s, keys(), controllerKey, freeUnit(units), disk.storageNativeId ?? store, disk.capacityBytes),
    );
  }
  changes.push(
    ...(await newNicChanges(
      s,
      keys,
      spec.nics.map((n) => n.networkNativeId),
    )),
  );
  const [ds] = await s.retrieveObjects(
    [{ type: 'Datastore', value: store }],
    [{ type: 'Datastore', paths: ['summary.name'] }],
  );
  const config =
    `<config>${elementXml('name', spec.name)}${elementXml('guestId', spec.guestOs ?? 'otherGuest64')}` +
    `<files>${elementXml('vmPathName', `[${ds?.props.get('summary.name')?.text ?? ''}]`)}</files>` +
    `${elementXml('numCPUs', spec.vcpus)}${spec.coresPerSocket ? elementXml('numCoresPerSocket', spec.coresPerSocket) : ''}` +
    `${elementXml('memoryMB', spec.memoryMiB)}${changes.join('')}</config>`;
  const args =
    config +
    moRefXml('pool', pool) +
    (hostNativeId ? moRefXml('host', { type: 'HostSystem', value: hostNativeId }) : '');
  const created = resultRef(
    await s.tasks.wait(await s.call(() => invokeTask(s.client, 'CreateVM_Task', folder, args)), reporter),
  );
  if (!created) throw new OperationFailedError('CreateVM_Task succeeded without naming the new VM');
  if (spec.powerOn) await s.tasks.wait(await s.call(() => invokeTask(s.client, 'PowerOnVM_Task', created)), reporter);
  return { vmNativeId: created.value };
}

/** CloneVM_Task's folder, name and spec: into the source's folder, placed as asked. */
async function cloneSpec(
  s: VsphereSession,
  vm: MoRef,
  op: Extract<VmOperation, { kind: 'CLONE_VM' }>,
  /** A linked clone's snapshot: its disks become the clone's parents. */
  linkedTo: MoRef | null,
): Promise<string> {
  const { hostNativeId, storageNativeId, folderPath, resourcePoolPath } = op.placement;
  const tree = folderPath || resourcePoolPath ? new InventoryTree('', await s.retrieveAll(TREE_SPECS)) : null;
  const target = await placementTarget(s, op.placement, tree);
  const sourceFolder = await parentOf(s, vm);
  const folder = (tree && folderAt(tree, op.placement, target?.compute ?? sourceFolder)) ?? sourceFolder;
  if (!folder)
    throw new OperationFailedError(
      'the source VM is not in a folder (vApp members cannot be cloned here); give placement.folder',
      'UNSUPPORTED',
    );
  const location = relocationXml(
    storageNativeId,
    target?.pool ?? null,
    hostNativeId,
    linkedTo ? 'createNewChildDiskBacking' : null,
  );
  return (
    moRefXml('folder', folder) +
    elementXml('name', op.name) +
    `<spec><location>${location}</location>${elementXml('template', false)}${elementXml('powerOn', op.powerOn)}` +
    `${linkedTo ? moRefXml('snapshot', linkedTo) : ''}</spec>`
  );
}

/**
 * The snapshot a linked clone shares its disks from: the source's current
 * one, or one taken now when it has none (vSphere clones linked only from
 * a snapshot, whose disks no longer change).
 */
async function linkedCloneBase(
  s: VsphereSession,
  vm: MoRef,
  snapshot: (args: string) => Promise<XNode | undefined>,
): Promise<MoRef> {
  // Clones of one source run side by side: the first takes the snapshot, the others wait for it.
  let inFlight = basesInFlight.get(s);
  if (!inFlight) basesInFlight.set(s, (inFlight = new Map()));
  const pending = inFlight.get(vm.value);
  if (pending) return pending;
  const base = currentOrNewBase(s, vm, snapshot).finally(() => inFlight.delete(vm.value));
  inFlight.set(vm.value, base);
  return base;
}

/** Per session (one vCenter), the linked-clone base snapshot being found or taken, by source VM. */
const basesInFlight = new WeakMap<VsphereSession, Map<string, Promise<MoRef>>>();

async function currentOrNewBase(
  s: VsphereSession,
  vm: MoRef,
  snapshot: (args: string) => Promise<XNode | undefined>,
): Promise<MoRef> {
  const [o] = await s.retrieveObjects([vm], [{ type: 'VirtualMachine', paths: ['snapshot.currentSnapshot'] }]);
  const current = moRefOf(o?.props.get('snapshot.currentSnapshot'));
  if (current) return current;
  const args =
    elementXml('name', 'linked-clone base') +
    elementXml('description', 'Taken by the gateway: linked clones share their disks from it.') +
    elementXml('memory', false) +
    elementXml('quiesce', false);
  const taken = resultRef(await snapshot(args));
  if (!taken) throw new OperationFailedError('CreateSnapshot_Task succeeded without naming the snapshot');
  return taken;
}

const COMPUTE_TYPES = ['ComputeResource', 'ClusterComputeResource'];

/**
 * The compute resource a placement names (the cluster, the host's own
 * compute resource, or the owner of the resource pool it names by path)
 * with the pool to run in (the named one, else the top one) and its
 * datastores; null when the placement names none of them.
 */
async function placementTarget(
  s: VsphereSession,
  placement: Partial<Pick<Placement, 'clusterNativeId' | 'hostNativeId' | 'resourcePoolPath'>>,
  tree: InventoryTree | null = null,
): Promise<{ compute: MoRef; pool: MoRef | null; datastores: string[] } | null> {
  const named = placement.resourcePoolPath && tree ? tree.at(placement.resourcePoolPath) : null;
  if (placement.resourcePoolPath && named?.type !== 'ResourcePool')
    throw new OperationFailedError(
      `placement.resourcePool: no resource pool at ${placement.resourcePoolPath}`,
      'INVALID_INPUT',
    );
  const compute = placement.clusterNativeId
    ? { type: 'ClusterComputeResource', value: placement.clusterNativeId }
    : placement.hostNativeId
      ? await parentOf(s, { type: 'HostSystem', value: placement.hostNativeId })
      : (tree?.above(named, COMPUTE_TYPES) ?? null);
  if (!compute) return null;
  if (named && tree?.above(named, COMPUTE_TYPES)?.value !== compute.value)
    throw new OperationFailedError(
      `placement.resourcePool ${placement.resourcePoolPath} is not in the cluster or host the placement names`,
      'INVALID_INPUT',
    );
  const [cr] = await s.retrieveObjects([compute], [{ type: compute.type, paths: ['resourcePool', 'datastore'] }]);
  return {
    compute,
    pool: named ?? moRefOf(cr?.props.get('resourcePool')),
    datastores: children(cr?.props.get('datastore'), 'ManagedObjectReference').map((r) => r.text),
  };
}

/** The VM folder a placement names by path, in the datacenter of `near`; null when it names none. */
function folderAt(tree: InventoryTree, placement: Pick<Placement, 'folderPath'>, near: MoRef | null): MoRef | null {
  if (!placement.folderPath) return null;
  const folder = tree.at(placement.folderPath);
  if (folder?.type !== 'Folder')
    throw new OperationFailedError(`placement.folder: no folder at ${placement.folderPath}`, 'INVALID_INPUT');
  if (near && tree.datacenterOf(folder) !== tree.datacenterOf(near))
    throw new OperationFailedError(
      `placement.folder ${placement.folderPath} is in another datacenter than the VM's compute resource`,
      'INVALID_INPUT',
    );
  return folder;
}

/** The placement part of a RelocateSpec (datastore, pool, host, in the schema's order). */
function relocationXml(
  storageNativeId: string | null,
  pool: MoRef | null,
  hostNativeId: string | null,
  diskMoveType: string | null = null,
): string {
  return (
    (storageNativeId ? moRefXml('datastore', { type: 'Datastore', value: storageNativeId }) : '') +
    (diskMoveType ? elementXml('diskMoveType', diskMoveType) : '') +
    (pool ? moRefXml('pool', pool) : '') +
    (hostNativeId ? moRefXml('host', { type: 'HostSystem', value: hostNativeId }) : '')
  );
}

async function parentOf(s: VsphereSession, ref: MoRef): Promise<MoRef | null> {
  const [o] = await s.retrieveObjects([ref], [{ type: ref.type, paths: ['parent'] }]);
  return moRefOf(o?.props.get('parent'));
}

async function powerState(s: VsphereSession, vm: MoRef): Promise<string | null> {
  const [o] = await s.retrieveObjects([vm], [{ type: 'VirtualMachine', paths: ['runtime.powerState'] }]);
  return o?.props.get('runtime.powerState')?.text ?? null;
}

import type { Logger } from 'pino';

import type { VspherePlatformConfig } from '../../config/schema.js';
import type { HostRecord } from '../../model/host.js';
import type { ClusterRecord, DatacenterRecord } from '../../model/inventory.js';
import type { NetworkRecord } from '../../model/network.js';
import type { SnapshotRecord } from '../../model/snapshot.js';
import type { StorageRecord, StorageVolumeRecord } from '../../model/storage.js';
import type { VmDetails, VmRecord } from '../../model/vm.js';
import { ConnectedProvider, PlatformConnection } from '../platform-connection.js';
import type { Provider } from '../provider.js';
import type { RequestScope } from '../request-scope.js';
import { isVsphereAuthFailure, isVsphereConnectionFailure } from './errors.js';
import {
  DATASTORE_SPEC,
  HOST_SPEC,
  InventoryTree,
  NETWORK_SPECS,
  TREE_SPECS,
  VM_DETAIL_SPEC,
  VM_LIST_SPEC,
  VM_SNAPSHOT_SPEC,
  datastoreRecord,
  hostRecord,
  networkRecord,
  snapshots,
  vmDetails,
  vmRecord,
} from './mapping.js';
import { freeUnit, newDiskChange, newKeys, newNicChanges, newScsiControllerChange, reconfigureSpec } from './reconfigure.js';
import { VsphereSession } from './session.js';
import { resultRef } from './task-watcher.js';
import { type ObjectContent, invokeTask, invokeVoid } from './vim.js';
import { type MoRef, children, elementXml, moRefOf, moRefXml } from './xml.js';
import {
  OperationFailedError,
  type OperationReporter,
  type OperationResult,
  type Unsupported,
  type VmOperation,
  type VmSpec,
} from '../operations.js';

/** A vCenter or standalone ESXi host, through the vim25 SOAP API. */
export class VsphereProvider extends ConnectedProvider<VsphereSession> implements Provider {
  readonly kind = 'VSPHERE' as const;
  readonly id: string;
  readonly uri: string;
  protected readonly connection: PlatformConnection<VsphereSession>;

  constructor(config: VspherePlatformConfig, logger: Logger) {
    super();
    this.id = config.id;
    this.uri = config.url;
    this.connection = new PlatformConnection({
      platformId: config.id,
      logger,
      connect: async () => {
        const session = await VsphereSession.open({
          url: config.url,
          username: config.username,
          password: config.password,
          insecure: config.insecure,
          caFile: config.caFile,
          maxConcurrentRequests: config.maxConcurrentRequests,
          requestTimeoutMs: config.requestTimeoutMs,
          pageSize: config.pageSize,
          keepAliveMs: config.keepAliveMs,
          logger,
        });
        return {
          client: session,
          hypervisorType: session.content.about.apiType,
          hypervisorVersion: session.content.about.version,
        };
      },
      disconnect: (session) => session.close(),
      isAuthFailure: isVsphereAuthFailure,
      isConnectionFailure: isVsphereConnectionFailure,
      retryInitialMs: config.retryInitialMs,
      retryMaxMs: config.retryMaxMs,
    });
  }



  /** Folders, datacenters, clusters and resource pools with their parents: read once per request. */
  private tree(scope: RequestScope): Promise<InventoryTree> {
    return scope.memo(`${this.id}:tree`, () =>
      this.connection.use(async (s) => new InventoryTree(this.id, await s.retrieveAll(TREE_SPECS))),
    );
  }

  async listDatacenters(scope: RequestScope): Promise<DatacenterRecord[]> {
    return (await this.tree(scope)).datacenters;
  }

  async listClusters(scope: RequestScope): Promise<ClusterRecord[]> {
    return (await this.tree(scope)).clusters;
  }

  async listHosts(scope: RequestScope): Promise<HostRecord[]> {
    const [hosts, tree] = await Promise.all([this.connection.use((s) => s.retrieveAll([HOST_SPEC])), this.tree(scope)]);
    return hosts.map((h) => hostRecord(this.id, h, tree));
  }

  listVms(): Promise<VmRecord[]> {
    return this.connection.use(async (s) => (await s.retrieveAll([VM_LIST_SPEC])).map((o) => vmRecord(this.id, o)));
  }

  async getVmDetails(ids: readonly string[], scope: RequestScope): Promise<(VmDetails | Error)[]> {
    const [objects, tree] = await Promise.all([this.vmObjects(ids, VM_DETAIL_SPEC.paths), this.tree(scope)]);
    return ids.map((id) => {
      const o = objects.get(id);
      return o ? vmDetails(o, tree) : notFound(id);
    });
  }

  async getSnapshots(ids: readonly string[]): Promise<(SnapshotRecord[] | Error)[]> {
    const objects = await this.vmObjects(ids, VM_SNAPSHOT_SPEC.paths);
    return ids.map((id) => {
      const o = objects.get(id);
      return o ? snapshots(this.id, o) : notFound(id);
    });
  }

  /** Chosen properties of many VMs in one request; a VM that is gone is simply absent. */
  private async vmObjects(ids: readonly string[], paths: readonly string[]): Promise<Map<string, ObjectContent>> {
    const objects = await this.connection.use((s) =>
      s.retrieveObjects(
        ids.map((value) => ({ type: 'VirtualMachine', value })),
        [{ type: 'VirtualMachine', paths }],
      ),
    );
    return new Map(objects.filter((o) => !o.missing.some((m) => m.fault === 'ManagedObjectNotFound')).map((o) => [o.obj.value, o]));
  }

  async listNetworks(scope: RequestScope): Promise<NetworkRecord[]> {
    const [nets, tree] = await Promise.all([this.connection.use((s) => s.retrieveAll(NETWORK_SPECS)), this.tree(scope)]);
    return nets.map((n) => networkRecord(this.id, n, tree));
  }

  async listStorage(scope: RequestScope): Promise<StorageRecord[]> {
    const [stores, tree] = await Promise.all([this.connection.use((s) => s.retrieveAll([DATASTORE_SPEC])), this.tree(scope)]);
    return stores.map((d) => datastoreRecord(this.id, d, tree));
  }

  readonly unsupported: Unsupported = {
    PAUSE_VM: 'vSphere cannot pause a VM with its memory kept in place; use suspendVm.',
    UNPAUSE_VM: 'vSphere cannot pause a VM with its memory kept in place; use resumeVm.',
  };

  runOperation(vmId: string, op: VmOperation, reporter: OperationReporter): Promise<OperationResult> {
    const vm: MoRef = { type: 'VirtualMachine', value: vmId };
    return this.connection.use(async (s) => {
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
            await this.waitUntilOff(s, vm, reporter);
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
          if (op.force && (await this.powerState(s, vm)) !== 'poweredOff') await task('PowerOffVM_Task');
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
          const spec = await this.cloneSpec(s, vm, op);
          const created = resultRef(await task('CloneVM_Task', vm, spec));
          if (!created) throw new OperationFailedError('CloneVM_Task succeeded without naming the new VM');
          // spec.powerOn is a request some servers ignore (vcsim does): the task ends with the VM running.
          if (op.powerOn && (await this.powerState(s, created)) !== 'poweredOn') await task('PowerOnVM_Task', created);
          return { vmNativeId: created.value };
        }
        case 'MIGRATE_VM': {
          const host: MoRef = { type: 'HostSystem', value: op.hostNativeId };
          const compute = await this.parentOf(s, host);
          const [cr] = compute ? await s.retrieveObjects([compute], [{ type: compute.type, paths: ['resourcePool'] }]) : [];
          const pool = moRefOf(cr?.props.get('resourcePool'));
          const spec =
            '<spec>' +
            (op.storageNativeId ? moRefXml('datastore', { type: 'Datastore', value: op.storageNativeId }) : '') +
            (pool ? moRefXml('pool', pool) : '') +
            moRefXml('host', host) +
            '</spec>';
          await task('RelocateVM_Task', vm, spec);
          return {};
        }
        case 'RECONFIGURE_VM':
          await task('ReconfigVM_Task', vm, await reconfigureSpec(s, vm, op));
          return {};
        case 'PAUSE_VM':
        case 'UNPAUSE_VM':
          throw new OperationFailedError(this.unsupported[op.kind] ?? 'unsupported', 'UNSUPPORTED');
      }
    });
  }

  /** CloneVM_Task's folder, name and spec: into the source's folder, placed as asked. */
  private async cloneSpec(s: VsphereSession, vm: MoRef, op: Extract<VmOperation, { kind: 'CLONE_VM' }>): Promise<string> {
    const [source] = await s.retrieveObjects([vm], [{ type: 'VirtualMachine', paths: ['parent', 'resourcePool'] }]);
    const folder = moRefOf(source?.props.get('parent'));
    if (!folder) throw new OperationFailedError('the source VM is not in a folder (vApp members cannot be cloned here)', 'UNSUPPORTED');
    const { hostNativeId, clusterNativeId, storageNativeId } = op.placement;
    let pool: MoRef | null = null;
    if (clusterNativeId) {
      const [cluster] = await s.retrieveObjects([{ type: 'ClusterComputeResource', value: clusterNativeId }], [{ type: 'ClusterComputeResource', paths: ['resourcePool'] }]);
      pool = moRefOf(cluster?.props.get('resourcePool'));
    } else if (hostNativeId) {
      const [host] = await s.retrieveObjects([{ type: 'HostSystem', value: hostNativeId }], [{ type: 'HostSystem', paths: ['parent'] }]);
      const compute = moRefOf(host?.props.get('parent'));
      const [cr] = compute ? await s.retrieveObjects([compute], [{ type: compute.type, paths: ['resourcePool'] }]) : [];
      pool = moRefOf(cr?.props.get('resourcePool'));
    }
    const location =
      (storageNativeId ? moRefXml('datastore', { type: 'Datastore', value: storageNativeId }) : '') +
      (pool ? moRefXml('pool', pool) : '') +
      (hostNativeId ? moRefXml('host', { type: 'HostSystem', value: hostNativeId }) : '');
    return (
      moRefXml('folder', folder) +
      elementXml('name', op.name) +
      `<spec><location>${location}</location>${elementXml('template', false)}${elementXml('powerOn', op.powerOn)}</spec>`
    );
  }

  placementProblem(spec: VmSpec): string | null {
    return spec.placement.clusterNativeId || spec.placement.hostNativeId
      ? null
      : 'vSphere needs placement.clusterId or placement.hostId for a new VM.';
  }

  /**
   * CreateVM_Task in the datacenter's VM folder, in the resource pool of the
   * chosen cluster or host, with a paravirtual SCSI controller, thin disks
   * and VMXNET3 NICs.
   */
  createVm(spec: VmSpec, reporter: OperationReporter): Promise<OperationResult> {
    return this.connection.use(async (s) => {
      const { clusterNativeId, hostNativeId } = spec.placement;
      const compute = clusterNativeId
        ? ({ type: 'ClusterComputeResource', value: clusterNativeId } as MoRef)
        : await this.parentOf(s, { type: 'HostSystem', value: hostNativeId ?? '' });
      const [cr] = compute ? await s.retrieveObjects([compute], [{ type: compute.type, paths: ['resourcePool', 'datastore'] }]) : [];
      const pool = moRefOf(cr?.props.get('resourcePool'));
      if (!compute || !pool) throw new OperationFailedError('the placement names no cluster or host this platform has', 'INVALID_INPUT');
      const tree = new InventoryTree(this.id, await s.retrieveAll(TREE_SPECS));
      const datacenter = tree.datacenterOf(compute);
      const [dc] = datacenter ? await s.retrieveObjects([{ type: 'Datacenter', value: datacenter }], [{ type: 'Datacenter', paths: ['vmFolder'] }]) : [];
      const folder = moRefOf(dc?.props.get('vmFolder'));
      if (!folder) throw new OperationFailedError('cannot find the datacenter VM folder of the placement');
      const store =
        spec.placement.storageNativeId ??
        spec.disks.find((d) => d.storageNativeId)?.storageNativeId ??
        children(cr?.props.get('datastore'), 'ManagedObjectReference')[0]?.text;
      if (!store) throw new OperationFailedError('the placement has no datastore; give placement.storageId', 'INVALID_INPUT');

      const keys = newKeys();
      const controllerKey = keys();
      const units = new Set<number | null>();
      const changes = [newScsiControllerChange(controllerKey)];
      for (const disk of spec.disks) {
        changes.push(await newDiskChange(s, keys(), controllerKey, freeUnit(units), disk.storageNativeId ?? store, disk.capacityBytes));
      }
      changes.push(...(await newNicChanges(s, keys, spec.nics.map((n) => n.networkNativeId))));
      const [ds] = await s.retrieveObjects([{ type: 'Datastore', value: store }], [{ type: 'Datastore', paths: ['summary.name'] }]);
      const config =
        `<config>${elementXml('name', spec.name)}${elementXml('guestId', spec.guestOs ?? 'otherGuest64')}` +
        `<files>${elementXml('vmPathName', `[${ds?.props.get('summary.name')?.text ?? ''}]`)}</files>` +
        `${elementXml('numCPUs', spec.vcpus)}${spec.coresPerSocket ? elementXml('numCoresPerSocket', spec.coresPerSocket) : ''}` +
        `${elementXml('memoryMB', spec.memoryMiB)}${changes.join('')}</config>`;
      const args = config + moRefXml('pool', pool) + (hostNativeId ? moRefXml('host', { type: 'HostSystem', value: hostNativeId }) : '');
      const created = resultRef(await s.tasks.wait(await s.call(() => invokeTask(s.client, 'CreateVM_Task', folder, args)), reporter));
      if (!created) throw new OperationFailedError('CreateVM_Task succeeded without naming the new VM');
      if (spec.powerOn) await s.tasks.wait(await s.call(() => invokeTask(s.client, 'PowerOnVM_Task', created)), reporter);
      return { vmNativeId: created.value };
    });
  }

  private async parentOf(s: VsphereSession, ref: MoRef): Promise<MoRef | null> {
    const [o] = await s.retrieveObjects([ref], [{ type: ref.type, paths: ['parent'] }]);
    return moRefOf(o?.props.get('parent'));
  }

  private async powerState(s: VsphereSession, vm: MoRef): Promise<string | null> {
    const [o] = await s.retrieveObjects([vm], [{ type: 'VirtualMachine', paths: ['runtime.powerState'] }]);
    return o?.props.get('runtime.powerState')?.text ?? null;
  }

  /** ShutdownGuest only asks the guest; the task lasts until the VM is off. */
  private async waitUntilOff(s: VsphereSession, vm: MoRef, reporter: OperationReporter): Promise<void> {
    const started = Date.now();
    while ((await this.powerState(s, vm)) === 'poweredOn') {
      const elapsed = Date.now() - started;
      if (elapsed > SHUTDOWN_TIMEOUT_MS) throw new OperationFailedError('the guest did not shut down in time; stop it with force', 'TIMEOUT');
      reporter.progress(10 + Math.floor((elapsed / SHUTDOWN_TIMEOUT_MS) * 80));
      await new Promise((r) => setTimeout(r, 300));
    }
  }

  /** Datastores hold files, not volumes; VMs' disks name their datastore directly. */
  async getVolumes(ids: readonly string[]): Promise<(StorageVolumeRecord[] | Error)[]> {
    return ids.map(() => []);
  }
}

/** How long a guest shutdown may take before its task fails. @default 300_000 // 5 minutes */
const SHUTDOWN_TIMEOUT_MS = 300_000;

function notFound(id: string): Error {
  return new Error(`no VM ${id}`);
}

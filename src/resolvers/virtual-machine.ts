import type {
  QueryResolvers,
  VirtualMachineFilter,
  VirtualMachineOrder,
  VirtualMachineResolvers,
} from '../generated/graphql.js';
import { encodeId } from '../model/ids.js';
import type { StorageRecord } from '../model/storage.js';
import type { VmDetails, VmRecord } from '../model/vm.js';
import type { GatewayContext } from './context.js';
import { all, andThen } from './awaitable.js';
import {
  detailsOf,
  findCluster,
  findDatacenter,
  findHost,
  findNetwork,
  findNetworkByName,
  findStorage,
  findVolumeForDisk,
  snapshotsOf,
} from './lookups.js';
import { type Ordering, type SortValue, paginate } from './pagination.js';
import { loadFromPlatforms, platformOf, platformsInScope } from './scope.js';
import { filterVms } from './vm-filter.js';

/** A resolver of one field of a VM's details. */
function detail<K extends keyof VmDetails>(key: K) {
  return (vm: VmRecord, _args: unknown, ctx: GatewayContext) => andThen(detailsOf(ctx, vm), (d) => d[key]);
}

const POWER_ORDER: Record<VmRecord['powerState'], number> = { ON: 0, PAUSED: 1, SUSPENDED: 2, OFF: 3 };

/**
 * Filters, orders and pages VMs of the platforms in scope. Ordering by a
 * detail (memory, vCPUs) reads the details of every candidate in one batch
 * per platform.
 */
export async function listVms(
  ctx: GatewayContext,
  args: {
    first?: number | null;
    after?: string | null;
    filter?: VirtualMachineFilter | null;
    orderBy?: VirtualMachineOrder | null;
  },
  /** A relation's VMs (a host's, a network's, ...), already cut to what the caller may see; every VM in scope when absent. */
  within?: { platformId: string; vms: readonly VmRecord[] },
) {
  const filter = args.filter ?? {};
  const listed = within
    ? within.vms
    : await loadFromPlatforms(ctx, ctx.loaders.vms, platformsInScope(ctx, filter.platformIds));
  // Unfiltered, the listing itself: the live inventory's array keeps its sorted order across requests.
  const { platformIds: _chosenAbove, ...conditions } = filter;
  const vms = Object.values(conditions).some((v) => v !== null && v !== undefined)
    ? await filterVms(ctx, listed, filter)
    : listed;

  const field = args.orderBy?.field ?? 'NAME';
  const direction = args.orderBy?.direction ?? 'ASC';
  let value: (vm: VmRecord) => SortValue;
  switch (field) {
    case 'NAME':
      value = (vm) => vm.name;
      break;
    case 'POWER_STATE':
      value = (vm) => POWER_ORDER[vm.powerState];
      break;
    case 'MEMORY_MIB':
    case 'VCPUS': {
      const all = await ctx.loaders.vmDetails.loadMany(
        vms.map((v) => ({ platformId: v.platformId, nativeId: v.nativeId })),
      );
      const byVm = new Map(vms.map((v, i) => [v, all[i]]));
      value = (vm) => {
        const d = byVm.get(vm);
        if (!d || d instanceof Error) return -1;
        return field === 'VCPUS' ? d.vcpus : d.memoryMiB;
      };
      break;
    }
  }
  const ordering: Ordering<VmRecord> = { name: `vm:${field}`, direction, value, id: vmId };
  return paginate(vms, args, ordering, ctx.limits);
}

function uniqueBy<T>(items: T[], key: (item: T) => string): T[] {
  const seen = new Set<string>();
  return items.filter((i) => !seen.has(key(i)) && seen.add(key(i)));
}

export function vmId(vm: { platformId: string; nativeId: string }): string {
  return encodeId({ kind: 'VirtualMachine', platformId: vm.platformId, nativeId: vm.nativeId });
}

export const VirtualMachine: VirtualMachineResolvers = {
  id: (vm) => vmId(vm),
  platform: (vm, _args, ctx) => platformOf(ctx, vm.platformId),
  vcpus: detail('vcpus'),
  vcpusMax: detail('vcpusMax'),
  coresPerSocket: detail('coresPerSocket'),
  memoryMiB: detail('memoryMiB'),
  maxMemoryMiB: detail('maxMemoryMiB'),
  guestOs: detail('guestOs'),
  osType: detail('osType'),
  guestArch: detail('guestArch'),
  machineType: detail('machineType'),
  description: detail('description'),
  tags: detail('tags'),
  guestOsFullName: detail('guestOsFullName'),
  hardwareVersion: detail('hardwareVersion'),
  ipAddresses: detail('ipAddresses'),
  guestHostName: detail('guestHostName'),
  vsphere: detail('vsphere'),
  graphics: detail('graphics'),
  disks: (vm, _a, ctx) =>
    andThen(detailsOf(ctx, vm), (d) => d.disks.map((disk) => ({ ...disk, platformId: vm.platformId }))),
  nics: (vm, _a, ctx) =>
    andThen(detailsOf(ctx, vm), (d) => d.nics.map((nic) => ({ ...nic, platformId: vm.platformId }))),
  snapshots: (vm, _a, ctx) => andThen(snapshotsOf(ctx, vm), (snaps) => [...snaps]),
  currentSnapshot: (vm, _a, ctx) => andThen(snapshotsOf(ctx, vm), (snaps) => snaps.find((s) => s.isCurrent) ?? null),
  host: (vm, _a, ctx) => findHost(ctx, vm.platformId, vm.hostNativeId),
  cluster: (vm, _a, ctx) =>
    andThen(findHost(ctx, vm.platformId, vm.hostNativeId), (h) =>
      findCluster(ctx, vm.platformId, h?.clusterNativeId ?? null),
    ),
  datacenter: (vm, _a, ctx) =>
    andThen(findHost(ctx, vm.platformId, vm.hostNativeId), (h) =>
      findDatacenter(ctx, vm.platformId, h?.datacenterNativeId ?? null),
    ),
  networks: (vm, _a, ctx) =>
    andThen(detailsOf(ctx, vm), (d) =>
      andThen(
        all(
          d.nics.map((n) =>
            n.networkNativeId
              ? findNetwork(ctx, vm.platformId, n.networkNativeId)
              : n.networkName
                ? findNetworkByName(ctx, vm.platformId, n.networkName)
                : null,
          ),
        ),
        (nets) =>
          uniqueBy(
            nets.filter((n) => n !== null),
            (n) => n.nativeId,
          ),
      ),
    ),
  storage: (vm, _a, ctx) =>
    andThen(detailsOf(ctx, vm), (d) =>
      andThen(
        all(
          d.disks.map((disk) =>
            disk.storageNativeId
              ? disk.storageNativeId
              : andThen(findVolumeForDisk(ctx, vm.platformId, disk), (v) => v?.poolNativeId ?? null),
          ),
        ),
        (ids) =>
          andThen(
            all([...new Set(ids.filter((i) => i !== null))].map((id) => findStorage(ctx, vm.platformId, id))),
            (storage) => storage.filter((s): s is StorageRecord => s !== null),
          ),
      ),
    ),
};

export const virtualMachineQueries: Pick<QueryResolvers, 'virtualMachines'> = {
  virtualMachines: (_root, args, ctx) => listVms(ctx, args),
};

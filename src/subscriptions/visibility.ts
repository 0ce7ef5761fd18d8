import { type CallerAccess, type VmFiling, type VmPlacement, UNFILED, filingPart } from '../access/policy.js';
import type { Inventory } from '../inventory/inventory.js';
import type { GatewayEvent } from '../model/events.js';
import type { TaskRecord } from '../mutations/task-manager.js';

/**
 * Which events a caller may receive: those about VMs it may see (their
 * snapshots and tasks too), and about the infrastructure and status of
 * platforms it holds a role on. Decided when the event is delivered, from
 * the live inventory, so a VM that moves into or out of a caller's tenant is
 * followed from then on. Null: the caller sees everything.
 */
export function eventVisibility(
  access: CallerAccess,
  inventory: Inventory,
  taskOf: (taskId: string) => TaskRecord | undefined,
): ((e: GatewayEvent) => boolean) | null {
  if (access.seesEverything) return null;
  const placement = (
    platformId: string,
    vm: { name: string; hostNativeId: string | null; nativeId?: string },
    filing?: VmFiling,
  ): VmPlacement =>
    inventory.mirror(platformId)?.placementOf(vm, filing) ?? {
      platformId,
      name: vm.name,
      hostName: null,
      clusterName: null,
      ...filingPart(filing ?? UNFILED),
    };
  const vmVisible = (platformId: string, nativeId: string): boolean => {
    const vm = inventory.mirror(platformId)?.vm(nativeId)?.vm;
    return vm ? access.seesVm(placement(platformId, vm)) : false;
  };
  return (e) => {
    if (!access.seesPlatform(e.platformId)) return false;
    switch (e.type) {
      case 'PLATFORM_STATUS':
        return true;
      case 'TASK': {
        if (e.upstream)
          return e.upstream.targetVmNativeId !== null && vmVisible(e.platformId, e.upstream.targetVmNativeId);
        const task = taskOf(e.taskId);
        return task
          ? access.seesVm(
              placement(
                task.platformId,
                { name: task.targetName, hostNativeId: task.hostNativeId },
                task.targetFiling ?? UNFILED,
              ),
            )
          : false;
      }
      case 'INVENTORY':
        if (e.kind === 'VirtualMachine') {
          return e.vm ? access.seesVm(placement(e.platformId, e.vm)) : vmVisible(e.platformId, e.nativeId);
        }
        // Pools and migrations are as visible as the VMs they make or move, which their events name.
        if (e.kind === 'VmPool' || e.kind === 'VmMigration')
          return e.vm ? access.seesVm(placement(e.platformId, e.vm)) : false;
        // A snapshot is as visible as its VM (`vm/snapshot`); a snapshot of a VM that is gone, to nobody limited.
        if (e.kind === 'Snapshot') return vmVisible(e.platformId, e.nativeId.slice(0, e.nativeId.indexOf('/')));
        return true;
    }
  };
}

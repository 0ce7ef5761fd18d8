import type { VmState } from '../datasources/watch.js';
import type { VmChangeAspect } from '../model/events.js';
import type { VmDetails } from '../model/vm.js';

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** What the guest reports, as opposed to the VM's configuration. */
function guest(d: VmDetails) {
  return [d.ipAddresses, d.guestHostName, d.vsphere?.toolsStatus ?? null, d.vsphere?.toolsRunningStatus ?? null];
}

function config(d: VmDetails): VmDetails {
  return {
    ...d,
    ipAddresses: [],
    guestHostName: null,
    vsphere: d.vsphere ? { ...d.vsphere, toolsStatus: null, toolsRunningStatus: null } : null,
  };
}

/** The aspects in which a VM differs between two states; empty when it does not. */
export function vmAspects(before: VmState, after: VmState): VmChangeAspect[] {
  const a = before.vm;
  const b = after.vm;
  const out: VmChangeAspect[] = [];
  if (a.powerState !== b.powerState) out.push('POWER_STATE');
  if (
    a.phase !== b.phase ||
    a.rawState !== b.rawState ||
    a.rawStateReason !== b.rawStateReason ||
    a.runtimeId !== b.runtimeId
  ) {
    out.push('STATE');
  }
  if (a.name !== b.name) out.push('NAME');
  if (a.hostNativeId !== b.hostNativeId) out.push('HOST');
  if (!same(config(before.details), config(after.details))) out.push('CONFIG');
  if (!same(guest(before.details), guest(after.details))) out.push('GUEST');
  if (!same(before.snapshots, after.snapshots)) out.push('SNAPSHOTS');
  if (
    a.persistent !== b.persistent ||
    a.autostart !== b.autostart ||
    a.isTemplate !== b.isTemplate ||
    a.uuid !== b.uuid
  ) {
    out.push('OTHER');
  }
  return out;
}

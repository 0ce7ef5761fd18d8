import type { VmDiskRecord, VmNicRecord } from '../model/vm.js';

/** A disk with the platform it lives on, so its storage can be resolved. */
export type VmDiskParent = VmDiskRecord & { platformId: string };
/** A NIC with the platform it lives on, so its network can be resolved. */
export type VmNicParent = VmNicRecord & { platformId: string };

import type { PowerState } from './vm.js';

export interface SnapshotRecord {
  platformId: string;
  /** `vmNativeId/key`. */
  nativeId: string;
  vmNativeId: string;
  /** Unique within the VM: the name on libvirt, the snapshot's moref on vSphere. */
  key: string;
  name: string;
  description: string | null;
  createdAt: Date | null;
  rawState: string | null;
  powerState: PowerState | null;
  includesMemory: boolean;
  isCurrent: boolean;
  quiesced: boolean | null;
  parentKey: string | null;
}

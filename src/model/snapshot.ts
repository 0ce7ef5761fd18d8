import type { PowerState } from './vm.js';

export interface SnapshotRecord {
  platformId: string;
  /** `vmNativeId/name`. */
  nativeId: string;
  vmNativeId: string;
  name: string;
  description: string | null;
  createdAt: Date | null;
  rawState: string | null;
  powerState: PowerState | null;
  includesMemory: boolean;
  isCurrent: boolean;
  parentName: string | null;
}

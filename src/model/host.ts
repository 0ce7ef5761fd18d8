export interface HostRecord {
  platformId: string;
  nativeId: string;
  name: string;
  cpuModel: string | null;
  cpuMhz: number | null;
  cpuSockets: number | null;
  cpuCoresPerSocket: number | null;
  cpuThreadsPerCore: number | null;
  cpuThreads: number | null;
  numaNodes: number | null;
  memoryMiB: number | null;
  hypervisorType: string | null;
  hypervisorVersion: string | null;
  hypervisorBuild: string | null;
  libvirtVersion: string | null;
  uuid: string | null;
  connectionState: 'CONNECTED' | 'DISCONNECTED' | 'NOT_RESPONDING';
  powerState: 'ON' | 'STANDBY' | 'OFF' | 'UNKNOWN';
  inMaintenanceMode: boolean;
  clusterNativeId: string | null;
  datacenterNativeId: string | null;
  /** vSphere-only facts; null elsewhere. */
  vsphere: { managedObjectId: string; productName: string | null } | null;
}

/**
 * The hypervisor a host runs, in one vocabulary for every platform. QEMU
 * covers KVM too: libvirt and QMP choose KVM or emulation per VM, not per host.
 */
export type HypervisorType = 'ESXI' | 'QEMU' | 'XEN' | 'LXC' | 'HYPERV' | 'VIRTUALBOX' | 'TEST' | 'OTHER';

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
  /** Null when the platform does not say (a vSphere host that never connected). */
  hypervisorType: HypervisorType | null;
  /** The platform's own name of it (vSphere's product name, libvirt's driver type, QMP's QEMU). */
  rawHypervisorType: string | null;
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

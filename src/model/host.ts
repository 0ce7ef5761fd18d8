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
  libvirtVersion: string | null;
}

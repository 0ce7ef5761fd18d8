export interface DatacenterRecord {
  platformId: string;
  nativeId: string;
  name: string;
}

export interface ClusterRecord {
  platformId: string;
  nativeId: string;
  name: string;
  datacenterNativeId: string | null;
  numHosts: number | null;
  numEffectiveHosts: number | null;
  totalCpuMhz: number | null;
  totalMemoryMiB: number | null;
  drsEnabled: boolean | null;
  haEnabled: boolean | null;
}

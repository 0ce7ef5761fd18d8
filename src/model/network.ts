export interface NetworkAddressRecord {
  family: string;
  address: string;
  prefix: number | null;
}

export interface NetworkRecord {
  platformId: string;
  nativeId: string;
  name: string;
  uuid: string | null;
  bridge: string | null;
  forwardMode: string | null;
  active: boolean;
  persistent: boolean;
  autostart: boolean;
  addresses: NetworkAddressRecord[];
  dhcpRanges: { start: string; end: string }[];
}

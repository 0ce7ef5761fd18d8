export interface NetworkAddressRecord {
  family: string;
  address: string;
  prefix: number | null;
}

export type NetworkKind = 'LIBVIRT_NETWORK' | 'STANDARD_PORTGROUP' | 'DISTRIBUTED_PORTGROUP' | 'OPAQUE_NETWORK';

export interface NetworkRecord {
  platformId: string;
  nativeId: string;
  name: string;
  kind: NetworkKind;
  datacenterNativeId: string | null;
  uuid: string | null;
  bridge: string | null;
  forwardMode: string | null;
  active: boolean;
  persistent: boolean | null;
  autostart: boolean | null;
  addresses: NetworkAddressRecord[];
  dhcpRanges: { start: string; end: string }[];
}

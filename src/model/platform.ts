export type PlatformKind = 'LIBVIRT' | 'VSPHERE' | 'QMP';
export type PlatformStatus = 'CONNECTING' | 'CONNECTED' | 'UNREACHABLE' | 'AUTH_FAILED';

/** A platform's connection state as shown in the graph. */
export interface PlatformState {
  status: PlatformStatus;
  /** Why it is not connected; null while connected. */
  statusMessage: string | null;
  connectedAt: Date | null;
  hypervisorType: string | null;
  hypervisorVersion: string | null;
}

/** What resolvers see of a platform: its identity plus its current state. */
export interface PlatformRecord extends PlatformState {
  id: string;
  kind: PlatformKind;
  uri: string;
}

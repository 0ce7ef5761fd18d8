import type { PowerState, VmPhase } from '../../model/vm.js';
import type { StoragePoolState, StorageVolumeType } from '../../model/storage.js';

// virDomainState and its per-state reason enums, from libvirt-domain.h.
const STATE_NAMES = ['nostate', 'running', 'blocked', 'paused', 'shutdown', 'shutoff', 'crashed', 'pmsuspended'];
const REASONS: Record<string, readonly string[]> = {
  nostate: ['unknown'],
  running: [
    'unknown',
    'booted',
    'migrated',
    'restored',
    'from-snapshot',
    'unpaused',
    'migration-canceled',
    'save-canceled',
    'wakeup',
    'crashed',
    'postcopy',
    'postcopy-failed',
  ],
  blocked: ['unknown'],
  paused: [
    'unknown',
    'user',
    'migration',
    'save',
    'dump',
    'ioerror',
    'watchdog',
    'from-snapshot',
    'shutting-down',
    'snapshot',
    'crashed',
    'starting-up',
    'postcopy',
    'postcopy-failed',
    'api-error',
  ],
  shutdown: ['unknown', 'user'],
  shutoff: ['unknown', 'shutdown', 'destroyed', 'crashed', 'migrated', 'saved', 'failed', 'from-snapshot', 'daemon'],
  crashed: ['unknown', 'panicked'],
  pmsuspended: ['unknown'],
};

export interface DomainState {
  rawState: string;
  rawStateReason: string | null;
  powerState: PowerState;
  phase: VmPhase;
}

export function domainState(state: number | undefined, reason: number | undefined): DomainState {
  const rawState = state !== undefined ? (STATE_NAMES[state] ?? `state-${state}`) : 'nostate';
  const reasons = REASONS[rawState];
  const rawStateReason = reason === undefined ? null : (reasons?.[reason] ?? `reason-${reason}`);
  // A managed save (suspendVm) leaves the domain shut off with reason "saved":
  // it resumes where it was, so it reads as suspended.
  if (rawState === 'shutoff' && rawStateReason === 'saved') {
    return { rawState, rawStateReason, powerState: 'SUSPENDED', phase: 'PAUSED' };
  }
  return { rawState, rawStateReason, powerState: powerStateOf(rawState), phase: phaseOf(rawState, rawStateReason) };
}

export function powerStateOf(rawState: string): PowerState {
  switch (rawState) {
    case 'running':
    case 'blocked':
    case 'shutdown': // still running while the guest shuts down
      return 'ON';
    case 'paused':
      return 'PAUSED';
    case 'pmsuspended':
      return 'SUSPENDED';
    default:
      return 'OFF';
  }
}

function phaseOf(rawState: string, reason: string | null): VmPhase {
  switch (rawState) {
    case 'running':
    case 'blocked':
      return reason === 'postcopy' ? 'MIGRATING' : 'RUNNING';
    case 'paused':
      if (reason === 'migration' || reason === 'postcopy') return 'MIGRATING';
      if (reason === 'starting-up') return 'STARTING';
      if (reason === 'shutting-down') return 'STOPPING';
      if (reason === 'crashed') return 'CRASHED';
      return 'PAUSED';
    case 'shutdown':
      return 'STOPPING';
    case 'shutoff':
      return reason === 'crashed' || reason === 'failed' ? 'CRASHED' : 'STOPPED';
    case 'crashed':
      return 'CRASHED';
    case 'pmsuspended':
      return 'PAUSED';
    default:
      return 'UNKNOWN';
  }
}

/** Power state recorded in a snapshot (`<state>` of domainsnapshot XML). */
export function snapshotPowerState(state: string | null): PowerState | null {
  if (state === null) return null;
  if (state === 'disk-snapshot') return 'OFF';
  return powerStateOf(state);
}

const POOL_STATES: readonly StoragePoolState[] = ['INACTIVE', 'BUILDING', 'RUNNING', 'DEGRADED', 'INACCESSIBLE'];
export function poolState(state: number): StoragePoolState {
  return POOL_STATES[state] ?? 'INACCESSIBLE';
}

const VOLUME_TYPES: Record<string, StorageVolumeType> = {
  file: 'FILE',
  block: 'BLOCK',
  dir: 'DIR',
  network: 'NETWORK',
  netdir: 'NETDIR',
  ploop: 'PLOOP',
};
export function volumeType(type: string): StorageVolumeType {
  return VOLUME_TYPES[type] ?? 'FILE';
}

/** libvirt encodes versions as major * 1,000,000 + minor * 1,000 + release. */
export function formatVersion(v: number): string {
  return `${Math.floor(v / 1_000_000)}.${Math.floor(v / 1000) % 1000}.${v % 1000}`;
}

import { ErrorCode, GatewayError } from './errors.js';

/** Every kind of object that has a global ID. */
export const NODE_KINDS = [
  'Platform',
  'Host',
  'VirtualMachine',
  'Snapshot',
  'Network',
  'StoragePool',
  'StorageVolume',
  'Datacenter',
  'Cluster',
  'Datastore',
  'Task',
  'AuditEntry',
  /** Native ID: the ID of the task that runs it. */
  'VmMigration',
  'VmPool',
] as const;
export type NodeKind = (typeof NODE_KINDS)[number];

/** What a global ID stands for. */
export interface NodeRef {
  kind: NodeKind;
  platformId: string;
  /** The platform's own identifier: a libvirt UUID, a vSphere moref, or `parent/child` for nested objects. */
  nativeId: string;
}

const VERSION = 'v1';
const KINDS: ReadonlySet<string> = new Set(NODE_KINDS);
/** Platform IDs may not contain the separator, so the native ID can. */
export const PLATFORM_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/**
 * Global IDs are base64url of `v1:Kind:platformId:nativeId`: opaque to
 * clients, stable across restarts (they depend only on configuration and
 * upstream identity), and distinct across platforms even when two platforms
 * hold objects with the same native ID.
 */
export function encodeId(ref: NodeRef): string {
  return Buffer.from(`${VERSION}:${ref.kind}:${ref.platformId}:${ref.nativeId}`, 'utf8').toString('base64url');
}

export function decodeId(id: string): NodeRef {
  const invalid = () => new GatewayError(ErrorCode.INVALID_ID, `"${truncate(id)}" is not a valid ID.`);
  if (id.length === 0 || id.length > 2048 || !/^[A-Za-z0-9_-]+$/.test(id)) throw invalid();
  const text = Buffer.from(id, 'base64url').toString('utf8');
  const [version, kind, platformId, ...rest] = text.split(':');
  const nativeId = rest.join(':');
  if (version !== VERSION || kind === undefined || !KINDS.has(kind) || platformId === undefined) throw invalid();
  if (!PLATFORM_ID_PATTERN.test(platformId) || nativeId.length === 0) throw invalid();
  return { kind: kind as NodeKind, platformId, nativeId };
}

/** Decodes an ID that must be of one of the given kinds (for typed arguments such as `hostIds`). */
export function decodeIdOf<K extends NodeKind>(id: string, ...kinds: K[]): NodeRef & { kind: K } {
  const ref = decodeId(id);
  if (!(kinds as NodeKind[]).includes(ref.kind)) {
    throw new GatewayError(
      ErrorCode.INVALID_ID,
      `Expected the ID of a ${kinds.join(' or ')}, got the ID of a ${ref.kind}.`,
    );
  }
  return ref as NodeRef & { kind: K };
}

/** Joins a parent's and a child's native IDs (snapshot of a VM, volume of a pool). */
export function childNativeId(parentNativeId: string, childName: string): string {
  return `${parentNativeId}/${childName}`;
}

export function splitChildNativeId(nativeId: string): { parent: string; child: string } | null {
  const slash = nativeId.indexOf('/');
  if (slash <= 0 || slash === nativeId.length - 1) return null;
  return { parent: nativeId.slice(0, slash), child: nativeId.slice(slash + 1) };
}

function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

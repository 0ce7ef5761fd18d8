import type { UpstreamErrorDescription } from '../../model/errors.js';

/** A libvirt error as the addon raises it: libvirt's own code, domain and message. */
export interface LibvirtError extends Error {
  name: 'LibvirtError';
  code: number;
  domain: number;
}

// virErrorNumber values the gateway acts on (libvirt/virterror.h).
export const VirErr = {
  NO_SUPPORT: 3,
  NO_CONNECT: 5,
  INVALID_CONN: 6,
  INVALID_ARG: 8,
  OPERATION_DENIED: 29,
  SYSTEM_ERROR: 38,
  RPC: 39,
  NO_DOMAIN: 42,
  NO_NETWORK: 43,
  AUTH_FAILED: 45,
  NO_STORAGE_POOL: 49,
  NO_STORAGE_VOL: 50,
  OPERATION_INVALID: 55,
  OPERATION_TIMEOUT: 68,
  NO_DOMAIN_SNAPSHOT: 72,
  /** A domain job aborted (virDomainAbortJob): "operation aborted: job 'migration out' canceled by client". */
  OPERATION_ABORTED: 78,
  AUTH_CANCELLED: 79,
  MIGRATE_UNSAFE: 81,
  OPERATION_UNSUPPORTED: 84,
  AUTH_UNAVAILABLE: 94,
} as const;

export function isLibvirtError(e: unknown): e is LibvirtError {
  return e instanceof Error && e.name === 'LibvirtError' && typeof (e as LibvirtError).code === 'number';
}

export function isLibvirtCode(e: unknown, code: number): boolean {
  return isLibvirtError(e) && e.code === code;
}

const AUTH_CODES: ReadonlySet<number> = new Set([VirErr.AUTH_FAILED, VirErr.AUTH_CANCELLED, VirErr.AUTH_UNAVAILABLE]);
const CONNECTION_CODES: ReadonlySet<number> = new Set([
  VirErr.NO_CONNECT,
  VirErr.INVALID_CONN,
  VirErr.SYSTEM_ERROR,
  VirErr.RPC,
  VirErr.OPERATION_TIMEOUT,
]);

export function isAuthFailure(e: unknown): boolean {
  return isLibvirtError(e) && AUTH_CODES.has(e.code);
}

/** Errors that mean the connection itself is gone, not that one object failed. */
export function isConnectionFailure(e: unknown): boolean {
  return isLibvirtError(e) && CONNECTION_CODES.has(e.code);
}

/** A libvirt error as clients see it: libvirt's own message and code. */
export function describeLibvirtError(e: unknown): UpstreamErrorDescription | null {
  return isLibvirtError(e) ? { message: `libvirt: ${e.message}`, extensions: { libvirtCode: e.code } } : null;
}

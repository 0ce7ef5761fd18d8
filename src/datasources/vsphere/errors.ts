import type { UpstreamErrorDescription } from '../../model/errors.js';

/**
 * A vSphere fault (`<soapenv:Fault>` with a typed detail): InvalidLogin,
 * NotAuthenticated, ManagedObjectNotFound, InvalidState, InvalidArgument, ...
 */
export class VimFault extends Error {
  constructor(
    /** The fault's vim25 type name, without the `Fault` suffix of its element. */
    readonly faultType: string,
    message: string,
  ) {
    super(message);
    this.name = 'VimFault';
  }

  is(type: string): boolean {
    return this.faultType === type;
  }
}

export type TransportFailure =
  /** Refused, reset, DNS: nothing answered. */
  | 'UNREACHABLE'
  /** Connected, but no answer within the request timeout. */
  | 'TIMEOUT'
  /** The server's certificate was refused. */
  | 'TLS'
  /** An answer that is not a vim25 SOAP response (garbage, truncated, HTML, wrong status). */
  | 'PROTOCOL';

/** The SOAP endpoint could not be talked to, or answered with something that is not SOAP. */
export class VsphereTransportError extends Error {
  constructor(
    readonly failure: TransportFailure,
    message: string,
  ) {
    super(message);
    this.name = 'VsphereTransportError';
  }
}

export function isVimFault(e: unknown, type?: string): e is VimFault {
  return e instanceof VimFault && (type === undefined || e.faultType === type);
}

export function isVsphereAuthFailure(e: unknown): boolean {
  return isVimFault(e, 'InvalidLogin') || isVimFault(e, 'NoPermission');
}

/** Failures that mean the endpoint is gone, as opposed to one request failing. */
export function isVsphereConnectionFailure(e: unknown): boolean {
  return e instanceof VsphereTransportError && e.failure !== 'PROTOCOL';
}

/** A vSphere fault or transport failure as clients see it: the fault type or the kind of failure. */
export function describeVsphereError(e: unknown): UpstreamErrorDescription | null {
  if (e instanceof VimFault) return { message: `vSphere: ${e.message}`, extensions: { vimFault: e.faultType } };
  if (e instanceof VsphereTransportError)
    return { message: `vSphere: ${e.message}`, extensions: { transport: e.failure } };
  return null;
}

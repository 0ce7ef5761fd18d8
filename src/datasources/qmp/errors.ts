import type { UpstreamErrorDescription } from '../../model/errors.js';
import { describeQmpError } from './protocol.js';

/** A VM that no connected QEMU holds: its QEMU has exited (or is not connected yet). */
export class QmpVmNotConnectedError extends Error {
  constructor(readonly vmNativeId: string) {
    super(`no connected QEMU holds the VM ${decodeURIComponent(vmNativeId)} (has its QEMU exited?)`);
    this.name = 'QmpVmNotConnectedError';
  }
}

/** A QMP platform's error as clients see it: QEMU's own words, or what became of the connection. */
export function describeQmpPlatformError(e: unknown): UpstreamErrorDescription | null {
  if (e instanceof QmpVmNotConnectedError)
    return { message: `QEMU: ${e.message}`, extensions: { transport: 'CLOSED' } };
  return describeQmpError(e);
}

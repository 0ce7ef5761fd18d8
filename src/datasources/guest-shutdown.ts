import { OperationFailedError, type OperationReporter } from '../model/operations.js';

/** How long a guest's own shutdown may take before its task fails. @default 300_000 // 5 minutes */
export const GUEST_SHUTDOWN_TIMEOUT_MS = 300_000;

/**
 * Polls until `isOff` says the guest has stopped: a graceful shutdown only
 * asks the guest, so the task lasts until it is off. Progress runs from 10
 * to 90 over the timeout; past it the task fails with TIMEOUT.
 */
export async function waitUntilGuestOff(
  isOff: () => Promise<boolean>,
  reporter: OperationReporter,
  pollMs = 250,
): Promise<void> {
  const started = Date.now();
  while (!(await isOff())) {
    const elapsed = Date.now() - started;
    if (elapsed > GUEST_SHUTDOWN_TIMEOUT_MS) {
      throw new OperationFailedError('the guest did not shut down in time; stop it with force', 'TIMEOUT');
    }
    reporter.progress(10 + Math.floor((elapsed / GUEST_SHUTDOWN_TIMEOUT_MS) * 80));
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

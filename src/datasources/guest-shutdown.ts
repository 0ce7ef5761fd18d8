import { OperationFailedError, type OperationReporter } from '../model/operations.js';

/**
 * Polls until `isOff` says the guest has stopped: a graceful shutdown only
 * asks the guest, so the task lasts until it is off. Progress runs from 10
 * to 90 over `timeoutMs` (the platform's `gracefulStopTimeoutMs`); past it
 * the task fails with TIMEOUT and the VM is left as it is.
 */
export async function waitUntilGuestOff(
  isOff: () => Promise<boolean>,
  reporter: OperationReporter,
  timeoutMs: number,
  pollMs = 250,
): Promise<void> {
  const started = Date.now();
  while (!(await isOff())) {
    const elapsed = Date.now() - started;
    if (elapsed > timeoutMs) {
      throw new OperationFailedError(
        `the guest did not shut down within ${Math.round(timeoutMs / 1000)} s (it may ignore the power button); it was left running: stop it with force`,
        'TIMEOUT',
      );
    }
    reporter.progress(10 + Math.floor((elapsed / timeoutMs) * 80));
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

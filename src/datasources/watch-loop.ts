import type { Logger } from 'pino';

import { errorMessage } from '../model/errors.js';
import type { WatchSink } from './watch.js';

/**
 * What every platform's watch loop needs besides its protocol: sink calls
 * that never throw out of the loop and stop once it is stopped, and a sleep
 * that an event, a loss or stop() cuts short.
 */
export abstract class WatchLoop {
  protected stopped = false;
  private wake: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    protected readonly sink: WatchSink,
    private readonly sinkLogger: Logger,
  ) {}

  /** Sink calls never throw by contract; none is made once stopped. */
  protected emit(call: (sink: WatchSink) => void): void {
    if (this.stopped) return;
    try {
      call(this.sink);
    } catch (e) {
      this.sinkLogger.error({ err: errorMessage(e) }, 'inventory sink failed');
    }
  }

  /** Waits until `at` (performance.now() time), or until wakeUp(). */
  protected sleepUntil(at: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.wake = resolve;
      this.timer = setTimeout(resolve, Math.min(2 ** 31 - 1, Math.max(0, at - performance.now())));
    }).finally(() => {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      this.wake = null;
    });
  }

  protected wakeUp(): void {
    this.wake?.();
  }
}

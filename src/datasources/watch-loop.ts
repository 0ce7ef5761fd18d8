import type { Logger } from 'pino';

import { errorMessage } from '../model/errors.js';
import type { FullReadReason, InventoryState, WatchSink } from './watch.js';

/** One connection's following of a platform: what its events named, and whether it was lost. */
export interface FollowedSession {
  /** Why the session's connection was lost; the loop throws it. */
  lost: string | null;
  /** When the changes its events named are due to be read (performance.now() time). */
  dueAt: number | null;
  /** Takes what the events named so far (a full read covers it). */
  take(): unknown;
}

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

  /** An event named something to read: read it `coalesceMs` from the first such event, with what follows meanwhile. */
  protected readSoon(session: FollowedSession, coalesceMs: number): void {
    if (session.dueAt !== null) return;
    session.dueAt = performance.now() + coalesceMs;
    this.wakeUp();
  }

  /**
   * Reads everything now and every `resyncIntervalMs` (telling the sink to
   * replace its state), and what the session's events named whenever it is
   * due, until stopped; throws when the session is lost.
   */
  protected async followChanges(
    session: FollowedSession,
    reason: FullReadReason,
    resyncIntervalMs: number,
    read: { all(): Promise<InventoryState>; changed(): Promise<void> },
    synced: () => void,
  ): Promise<void> {
    let fullReason: FullReadReason | null = reason;
    let resyncAt = performance.now();
    for (;;) {
      if (this.stopped) return;
      if (session.lost) throw new Error(session.lost);
      const now = performance.now();
      if (now >= resyncAt) {
        // Whatever changed before this read is in it.
        session.take();
        const state = await read.all();
        if (this.stopped) return;
        if (session.lost) throw new Error(session.lost);
        const why: FullReadReason = fullReason ?? 'resync';
        this.emit((s) => s.replace(state, why));
        if (fullReason !== null) synced();
        fullReason = null;
        resyncAt = performance.now() + resyncIntervalMs;
        continue;
      }
      if (session.dueAt !== null && now >= session.dueAt) {
        await read.changed();
        continue;
      }
      await this.sleepUntil(session.dueAt === null ? resyncAt : Math.min(resyncAt, session.dueAt));
    }
  }
}

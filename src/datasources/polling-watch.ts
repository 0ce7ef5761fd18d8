import type { Logger } from 'pino';

import { errorMessage } from '../model/errors.js';
import { readInventory } from './full-read.js';
import type { Provider } from './provider.js';
import type { FullReadReason, InventoryWatch, WatchOptions, WatchSink } from './watch.js';

/**
 * A watch for a platform without a change stream of its own: the whole
 * inventory is read at start and then every `resyncIntervalMs`; the mirror
 * works out what changed between two reads. A failed read marks the mirror
 * stale and is retried with backoff.
 */
export function pollingWatch(
  provider: Provider,
  sink: WatchSink,
  options: WatchOptions,
  logger: Logger,
): InventoryWatch {
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let wake: (() => void) | null = null;
  let delay = options.retryInitialMs;

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      wake = resolve;
      timer = setTimeout(resolve, ms);
    }).finally(() => {
      wake = null;
      timer = null;
    });

  const loop = async () => {
    let reason: FullReadReason = 'initial';
    while (!stopped) {
      try {
        const state = await readInventory(provider);
        if (stopped) return;
        sink.replace(state, reason);
        delay = options.retryInitialMs;
        reason = 'resync';
        await sleep(options.resyncIntervalMs);
      } catch (e) {
        if (stopped) return;
        logger.warn({ err: e, retryInMs: delay }, 'inventory watch interrupted');
        sink.interrupted(errorMessage(e));
        reason = 'reconnect';
        await sleep(delay);
        delay = Math.min(delay * 2, options.retryMaxMs);
      }
    }
  };
  const running = loop();

  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      wake?.();
      await running;
    },
  };
}

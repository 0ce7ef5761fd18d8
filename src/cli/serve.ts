import { parseArgs } from 'node:util';

import type { Logger } from 'pino';

import { loadConfig } from '../config/load.js';
import { createLogger } from '../config/logger.js';
import { type RunningGateway, startGateway } from '../server/gateway.js';
import { tuneHeapGrowth } from '../server/heap-tuning.js';
import { parseOrUsage } from './args.js';
import { ExitCode } from './exit-codes.js';

export const SERVE_USAGE = `Usage: virt-graph serve [--config FILE]

Serves one GraphQL graph over the configured platforms until SIGTERM or
SIGINT, then stops accepting, lets requests in flight finish (up to
server.shutdownGraceMs) and exits 0.

  -c, --config FILE   the configuration (default: VIRT_GRAPH_CONFIG, else the
                      embedded default: libvirt's test driver and a local
                      vCenter simulator)
  -h, --help          this text

PORT, HOST and LOG_LEVEL override the file. Logs are JSON lines on stdout.`;

/**
 * A signal this soon after the first is the same request to stop arriving
 * again, not an operator insisting: npm passes on to its script a signal that
 * the script got already (Ctrl-C in a terminal, or systemd's control-group
 * kill, signal every process of the group), so one stop comes twice.
 * @default 1_000 // 1 second
 */
const REPEAT_WINDOW_MS = 1_000;

/** How long closing may run past the HTTP grace period (platforms, Redis, the store) before the process gives up on it. */
const CLOSE_OVERRUN_MS = 15_000;

/** `virt-graph serve`: serves until a signal; resolves with the exit code once drained. */
export async function serve(args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<ExitCode> {
  const { values } = parseOrUsage(SERVE_USAGE, () =>
    parseArgs({
      args: [...args],
      options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    }),
  );
  if (values.help) {
    process.stdout.write(`${SERVE_USAGE}\n`);
    return ExitCode.OK;
  }
  // Before the start, so a stop asked for while platforms and Redis are still being reached is not lost.
  const signals = watchSignals();
  let gateway: RunningGateway;
  let graceMs: number;
  try {
    tuneHeapGrowth();
    const { config, source } = loadConfig({ path: values.config, env });
    const logger = createLogger(config.logging.level);
    logger.info({ config: source }, 'configuration loaded');
    signals.logTo(logger);
    graceMs = config.server.shutdownGraceMs;
    gateway = await startGateway(config, logger);
  } catch (e) {
    signals.dispose();
    throw e;
  }
  // The handlers stay until the process exits: a repeat of the signal that
  // came after them would meet the default action and end the process by
  // that signal instead of with the drain's exit code.
  return signals.stop(gateway, graceMs);
}

interface SignalWatch {
  logTo(logger: Logger): void;
  /** Resolves with the exit code once a signal has stopped the gateway (or a second one cut the stop short). */
  stop(gateway: RunningGateway, graceMs: number): Promise<ExitCode>;
  /** Gives the signals their default action back, for a start that failed. */
  dispose(): void;
}

function watchSignals(): SignalWatch {
  let logger: Logger | null = null;
  let firstAt: number | null = null;
  let gateway: RunningGateway | null = null;
  let graceMs = 0;
  let finish: (code: ExitCode) => void = () => undefined;
  const finished = new Promise<ExitCode>((resolve) => (finish = resolve));
  let closing = false;

  const close = () => {
    if (!gateway || closing) return;
    closing = true;
    // Not unref'd: with every other handle gone, the process must still not leave before close settles.
    const overrun = setTimeout(() => {
      logger?.error({ timeoutMs: graceMs + CLOSE_OVERRUN_MS }, 'shutdown did not finish in time; exiting');
      finish(ExitCode.FAILURE);
    }, graceMs + CLOSE_OVERRUN_MS);
    gateway.close().then(
      () => {
        clearTimeout(overrun);
        finish(ExitCode.OK);
      },
      (e: unknown) => {
        clearTimeout(overrun);
        logger?.error({ err: e }, 'shutdown failed');
        finish(ExitCode.FAILURE);
      },
    );
  };

  const onSignal = (signal: NodeJS.Signals) => {
    const now = Date.now();
    if (firstAt === null) {
      firstAt = now;
      logger?.info({ signal }, 'stopping');
      if (!gateway) logger?.info('the gateway is still starting; it stops once started');
      close();
      return;
    }
    if (now - firstAt < REPEAT_WINDOW_MS) {
      logger?.debug({ signal }, 'signal repeated within a second; already stopping');
      return;
    }
    logger?.warn({ signal }, 'second signal; exiting at once');
    // Before the start settles there is nothing to resolve through: leave now.
    if (!gateway) process.exit(ExitCode.FAILURE);
    finish(ExitCode.FAILURE);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  return {
    logTo(l) {
      logger = l;
    },
    stop(g, grace) {
      gateway = g;
      graceMs = grace;
      if (firstAt !== null) close();
      return finished;
    },
    dispose() {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    },
  };
}

import { parseArgs } from 'node:util';

import { ConfigError, loadConfig } from './config/load.js';
import { createLogger } from './config/logger.js';
import { startGateway } from './server/gateway.js';
import { tuneHeapGrowth } from './server/heap-tuning.js';

const USAGE = `Usage: virt-graph [--config FILE]

Serves one GraphQL graph over the configured virtualization platforms.
Without --config (or VIRT_GRAPH_CONFIG) it serves the embedded default: the
libvirt test driver. PORT, HOST and LOG_LEVEL override the file.`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  tuneHeapGrowth();
  const { config, source } = loadConfig({ path: values.config });
  const logger = createLogger(config.logging.level);
  logger.info({ config: source }, 'configuration loaded');
  const gateway = await startGateway(config, logger);

  let signals = 0;
  const stop = (signal: string) => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal; exiting at once');
      process.exit(1);
    }
    logger.info({ signal }, 'stopping');
    gateway.close().then(
      () => process.exit(0),
      (e: unknown) => {
        logger.error({ err: e }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((e: unknown) => {
  if (e instanceof ConfigError) {
    console.error(`virt-graph: ${e.message}`);
    process.exit(2);
  }
  console.error('virt-graph: failed to start:', e);
  process.exit(1);
});

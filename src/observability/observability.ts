import type { Logger } from 'pino';

import type { Config } from '../config/schema.js';
import { type GatewaySources, acquireMetrics, releaseMetrics } from './metrics.js';
import { BoundedLabels, DEFAULT_NAME_CAP, operationNamesOf } from './operation-names.js';
import { Operations } from './operations.js';
import { Tracing } from './tracing.js';

/** Error codes given a label of their own; the gateway's own are about 40. */
const CODE_CAP = 100;

/** The documents of `server.trustedDocuments`, whose operation names bound the operation label. */
export interface TrustedOperations {
  documents: Iterable<string>;
  /** Only these documents may run: no other name ever gets a label. */
  enforced: boolean;
}

/** One gateway's observability: operations (access log, request metrics, spans), GET /metrics, and tracing. */
export interface Observability {
  readonly operations: Operations;
  /** What GET /metrics serves; null when `observability.metrics.enabled` is off. */
  readonly exposition: { render(): Promise<string>; readonly contentType: string } | null;
  /** Counts an error sent to a client by its code (the error formatter calls it). */
  countError(code: unknown): void;
  /** Reports the gateway's platforms, tasks and WebSocket transport at each scrape, until close. */
  report(sources: GatewaySources): void;
  /** Stops reporting, and sends the spans still buffered. */
  close(): Promise<void>;
}

export async function openObservability(
  config: Pick<Config, 'logging' | 'observability'>,
  logger: Logger,
  trusted: TrustedOperations | null,
): Promise<Observability> {
  const metrics = config.observability.metrics.enabled ? acquireMetrics() : null;
  const tracing = await Tracing.start(config.observability.tracing);
  if (tracing) {
    logger.info(
      { endpoint: config.observability.tracing.otlpEndpoint, sampleRatio: config.observability.tracing.sampleRatio },
      'tracing on',
    );
  }
  const names = new BoundedLabels(
    trusted ? operationNamesOf(trusted.documents) : new Set(),
    trusted?.enforced ? 0 : DEFAULT_NAME_CAP,
  );
  const operations = new Operations({
    accessLog: config.logging.accessLog ? logger : null,
    metrics,
    tracing,
    names,
    codes: new BoundedLabels(new Set(), CODE_CAP),
  });
  const reported: GatewaySources[] = [];
  let closed = false;
  return {
    operations,
    exposition: metrics && { render: () => metrics.render(), contentType: metrics.contentType },
    countError: (code) => operations.countError(code),
    report(sources) {
      if (!metrics) return;
      metrics.addSource(sources);
      reported.push(sources);
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const sources of reported.splice(0)) metrics?.removeSource(sources);
      if (metrics) releaseMetrics();
      await tracing?.close();
    },
  };
}

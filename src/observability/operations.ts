import { type Span, SpanStatusCode } from '@opentelemetry/api';
import type { Logger } from 'pino';

import { type AccessRecord, type OperationType, type Outcome, writeAccessLine } from './access-log.js';
import type { GatewayMetrics } from './metrics.js';
import { type BoundedLabels, UNKNOWN_OPERATION } from './operation-names.js';
import type { TraceCarrier, Tracing } from './tracing.js';

/** An operation name as the access log and span attributes carry it. */
const MAX_LOGGED_NAME = 128;

export interface OperationsOptions {
  /** Where access lines go; null when `logging.accessLog` is off. */
  accessLog: Logger | null;
  /** Null when `observability.metrics.enabled` is off. */
  metrics: GatewayMetrics | null;
  /** Null when tracing is off. */
  tracing: Tracing | null;
  /** Operation names as labels (and span names), bounded. */
  names: BoundedLabels;
  /** Error codes as labels, bounded (they come from code, but a platform may word its own). */
  codes: BoundedLabels;
}

/** Where an operation came from: its transport, its request ID, and the trace context it carries. */
export interface OperationStart {
  transport: 'http' | 'websocket';
  requestId: string;
  carrier: TraceCarrier;
}

/**
 * What the gateway records of each GraphQL operation, whichever transport
 * brought it: one access log line, the request metrics, and its span.
 */
export class Operations {
  private readonly bound = new WeakMap<object, OperationObservation>();

  constructor(private readonly opts: OperationsOptions) {}

  begin(start: OperationStart): OperationObservation {
    return new OperationObservation(start, this.opts);
  }

  /** Ties an operation to an object that goes along with it (the request Apollo hands its plugins). */
  bind(carrier: object, operation: OperationObservation): void {
    this.bound.set(carrier, operation);
  }

  of(carrier: object): OperationObservation | undefined {
    return this.bound.get(carrier);
  }

  /** Counts one error sent to a client, by its `extensions.code`. */
  countError(code: unknown): void {
    this.opts.metrics?.errors.inc({ code: this.opts.codes.label(typeof code === 'string' ? code : 'NONE') });
  }
}

/** One operation from its arrival until it is answered (a subscription: until it ends). */
export class OperationObservation {
  readonly requestId: string;
  readonly transport: OperationStart['transport'];
  private readonly started = performance.now();
  /** Until it ends: a subscription's ends once it is set up. */
  private span: Span | null;
  private readonly traceId: string | null;
  private type: OperationType | null = null;
  private name: string | null = null;
  private outcome: Outcome | null = null;
  private codes: string[] = [];
  private caller: string | null = null;
  private finished = false;

  constructor(
    start: OperationStart,
    private readonly opts: OperationsOptions,
  ) {
    this.requestId = start.requestId;
    this.transport = start.transport;
    this.span = opts.tracing?.startOperation(start.carrier) ?? null;
    // Only a kept trace is worth quoting: the ID of one sampled out leads nowhere.
    this.traceId = this.span?.isRecording() ? this.span.spanContext().traceId : null;
  }

  /** Who asked, once the credential is checked (`token:<name>`: the name, never the token). */
  callerIs(id: string): void {
    this.caller = id;
  }

  /** The operation, once its document is parsed and validated: `query`, `mutation` or `subscription`, and its name. */
  identify(type: string, name: string | null | undefined): void {
    if (type !== 'query' && type !== 'mutation' && type !== 'subscription') return;
    this.type = type;
    this.name = name ? name.slice(0, MAX_LOGGED_NAME) : null;
  }

  /** How it was answered, with the codes of the errors sent (already counted as they were formatted). */
  answered(outcome: Outcome, codes: Iterable<string>): void {
    this.outcome = outcome;
    this.codes = [...new Set(codes)];
  }

  /** Refused before a GraphQL error went through the formatter (401, 413, a document not trusted): counted here. */
  refused(code: string): void {
    this.answered('error', [code]);
    this.opts.metrics?.errors.inc({ code: this.opts.codes.label(code) });
  }

  /**
   * A subscription is set up and streams: its span ends here (a span open for
   * a subscription's whole life would reach the collector only once it
   * ends); its access line and its count wait for its end.
   */
  subscribed(): void {
    this.answered('ok', []);
    this.endSpan('ok', undefined);
  }

  /** Runs fn as this operation: inside its span, so that what fn causes is traced under it. */
  run<T>(fn: () => T): T {
    return this.span && this.opts.tracing ? this.opts.tracing.within(this.span, fn) : fn();
  }

  /** Records the operation once: the metrics, the access line, the span's end. */
  finish(detail: { status?: number; events?: number } = {}): void {
    if (this.finished) return;
    this.finished = true;
    const outcome = this.outcome ?? (detail.status !== undefined && detail.status >= 400 ? 'error' : 'ok');
    const seconds = (performance.now() - this.started) / 1000;
    const { metrics, accessLog } = this.opts;
    const type = this.type ?? 'unknown';
    const label = this.type ? this.opts.names.operation(this.name) : UNKNOWN_OPERATION;
    if (metrics) {
      metrics.requests.inc({ operation: label, type, outcome });
      // A subscription's life is not a latency: it is in the access line, not in the histogram.
      if (this.type !== 'subscription') metrics.requestDuration.observe({ operation: label, type }, seconds);
    }
    if (accessLog) {
      const record: AccessRecord = {
        requestId: this.requestId,
        transport: this.transport,
        operationType: this.type,
        operationName: this.name,
        outcome,
        durationMs: Math.round(seconds * 10_000) / 10,
      };
      if (detail.status !== undefined) record.status = detail.status;
      if (detail.events !== undefined) record.events = detail.events;
      if (this.codes.length > 0) record.errorCodes = this.codes;
      if (this.caller !== null) record.caller = this.caller;
      if (this.traceId !== null) record.traceId = this.traceId;
      writeAccessLine(accessLog, record);
    }
    this.endSpan(outcome, detail.status);
  }

  private endSpan(outcome: Outcome, status: number | undefined): void {
    const span = this.span;
    if (!span) return;
    this.span = null;
    // Span names stay few (the bounded label); the name as sent is an attribute.
    if (this.type) span.updateName(`${this.type} ${this.opts.names.operation(this.name)}`);
    span.setAttributes({
      'graphql.operation.type': this.type ?? 'unknown',
      'virtgraph.request_id': this.requestId,
      'virtgraph.outcome': outcome,
      ...(this.name !== null ? { 'graphql.operation.name': this.name } : {}),
      ...(status !== undefined ? { 'http.response.status_code': status } : {}),
      ...(this.codes.length > 0 ? { 'virtgraph.error_codes': this.codes } : {}),
    });
    if (outcome === 'error') span.setStatus({ code: SpanStatusCode.ERROR, message: this.codes.join(', ') });
    span.end();
  }
}

/** An outcome from a result: errors without data failed the operation; errors beside data made it partial. */
export function outcomeOf(data: unknown, errorCount: number): Outcome {
  if (errorCount === 0) return 'ok';
  return data === null || data === undefined ? 'error' : 'partial';
}

/** The distinct `extensions.code` of formatted errors, in order. */
export function codesOf(errors: readonly { extensions?: Record<string, unknown> }[] | undefined): string[] {
  const codes = new Set<string>();
  for (const e of errors ?? []) {
    const code = e.extensions?.['code'];
    if (typeof code === 'string') codes.add(code);
  }
  return [...codes];
}

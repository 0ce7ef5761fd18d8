import {
  type Attributes,
  type Context,
  type ContextManager,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapPropagator,
  type Tracer,
  defaultTextMapGetter,
  trace,
} from '@opentelemetry/api';

// OpenTelemetry traces, off unless an OTLP endpoint is configured. The SDK
// is imported only then: with tracing off nothing but the API (a few
// functions) is loaded, and every hook below is one null check. Nothing is
// registered globally (no global tracer provider, context manager or
// propagator): the gateway's spans are its own, and gateways started and
// stopped one after another in one process (tests) do not meet.

export interface TracingConfig {
  /** The collector's OTLP/HTTP traces URL; tracing is off without it. */
  otlpEndpoint?: string | undefined;
  serviceName: string;
  /** Share of root spans kept; a caller's sampled trace context is always followed. */
  sampleRatio: number;
}

/** Headers, or header-like fields, that may carry W3C trace context (`traceparent`, `tracestate`). */
export type TraceCarrier = Readonly<Record<string, string | string[] | undefined>>;

/** The tracing of the gateway started last, which the hooks of the lower rooms use; null while off. */
let current: Tracing | null = null;

export class Tracing {
  private constructor(
    private readonly tracer: Tracer,
    private readonly contexts: ContextManager,
    private readonly propagator: TextMapPropagator,
    private readonly provider: { shutdown(): Promise<void> },
  ) {}

  /**
   * Starts tracing as configured: spans batched and sent over OTLP/HTTP
   * (JSON), parent-based sampling at `sampleRatio`, W3C trace context read
   * from requests, and the async context that makes a batch or an upstream
   * call a child of the operation it serves. Null when no endpoint is set.
   */
  static async start(config: TracingConfig): Promise<Tracing | null> {
    if (!config.otlpEndpoint) return null;
    const [base, otlp, hooks, core, resources, semconv] = await Promise.all([
      import('@opentelemetry/sdk-trace-base'),
      import('@opentelemetry/exporter-trace-otlp-http'),
      import('@opentelemetry/context-async-hooks'),
      import('@opentelemetry/core'),
      import('@opentelemetry/resources'),
      import('@opentelemetry/semantic-conventions'),
    ]);
    const provider = new base.BasicTracerProvider({
      resource: resources.resourceFromAttributes({ [semconv.ATTR_SERVICE_NAME]: config.serviceName }),
      sampler: new base.ParentBasedSampler({ root: new base.TraceIdRatioBasedSampler(config.sampleRatio) }),
      spanProcessors: [new base.BatchSpanProcessor(new otlp.OTLPTraceExporter({ url: config.otlpEndpoint }))],
    });
    const contexts = new hooks.AsyncLocalStorageContextManager().enable();
    const tracing = new Tracing(
      provider.getTracer('virt-graph'),
      contexts,
      new core.W3CTraceContextPropagator(),
      provider,
    );
    current = tracing;
    return tracing;
  }

  /** A server span for one operation, the child of the trace context the request carries when it carries one. */
  startOperation(carrier: TraceCarrier): Span {
    const parent = this.propagator.extract(ROOT_CONTEXT, carrier, defaultTextMapGetter);
    return this.tracer.startSpan('graphql', { kind: SpanKind.SERVER }, parent);
  }

  /** Runs fn with `span` current: the batches and upstream calls it causes become the span's children. */
  within<T>(span: Span, fn: () => T): T {
    return this.contexts.with(trace.setSpan(ROOT_CONTEXT, span), fn);
  }

  /** A child of the current span, or null outside a recorded one (background work: watches, sampling, keep-alives). */
  child(name: string, kind: SpanKind, attributes: Attributes): { span: Span; context: Context } | null {
    const parent = this.contexts.active();
    if (!trace.getSpan(parent)?.isRecording()) return null;
    const span = this.tracer.startSpan(name, { kind, attributes }, parent);
    return { span, context: trace.setSpan(parent, span) };
  }

  /** Runs fn in `context` (one `child` returned). */
  run<T>(context: Context, fn: () => T): T {
    return this.contexts.with(context, fn);
  }

  /** Sends what is buffered and stops; the hooks are off again unless another gateway traces. */
  async close(): Promise<void> {
    if (current === this) current = null;
    await this.provider.shutdown();
    this.contexts.disable();
  }
}

/** Ends a span when its work settles, marked as failed (with the error) when it rejects. */
export function endWith<T>(span: Span, work: Promise<T>): Promise<T> {
  return work.then(
    (value) => {
      span.end();
      return value;
    },
    (e: unknown) => {
      span.recordException(e instanceof Error ? e : String(e));
      span.setStatus({ code: SpanStatusCode.ERROR, message: e instanceof Error ? e.message : String(e) });
      span.end();
      throw e;
    },
  );
}

/** A promise of fn's result, also when fn throws at once. */
function attempt<T>(fn: () => Promise<T>): Promise<T> {
  return new Promise<T>((resolve) => resolve(fn()));
}

/**
 * An upstream call's span (`libvirt listAllDomains`, `vsphere RetrievePropertiesEx`),
 * a child of the batch or operation that made it; the call itself when
 * tracing is off or nothing traced made it.
 */
export function traceUpstreamCall<T>(
  upstream: { platformId: string; system: string },
  method: string,
  call: () => Promise<T>,
): Promise<T> {
  const child = current?.child(`${upstream.system} ${method}`, SpanKind.CLIENT, {
    'rpc.system': upstream.system,
    'rpc.method': method,
    'virtgraph.platform': upstream.platformId,
  });
  return child ? endWith(child.span, attempt(call)) : call();
}

/**
 * A span around one DataLoader batch that goes to a platform (`keys` objects,
 * or one listing), so that the upstream calls it makes are its children;
 * the read itself when nothing traced asked for it.
 */
export function traceBatch<T>(platformId: string, keys: number, read: () => Promise<T>): Promise<T> {
  const tracing = current;
  const child = tracing?.child('inventory batch', SpanKind.INTERNAL, {
    'virtgraph.platform': platformId,
    'virtgraph.batch.keys': keys,
  });
  if (!tracing || !child) return read();
  return endWith(
    child.span,
    tracing.run(child.context, () => attempt(read)),
  );
}

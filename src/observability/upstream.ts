import { activeMetrics, sessionClosed, sessionOpened } from './metrics.js';
import { traceUpstreamCall } from './tracing.js';

// The hooks the protocol clients call: each upstream call is counted, timed
// and (inside a traced operation) given a span, without the datasources
// knowing prom-client or OpenTelemetry. With metrics and tracing both off a
// hook is one null check.

/** The protocol an upstream call speaks, as span attributes name it. */
export type UpstreamSystem = 'vsphere' | 'libvirt';

/** Whose calls a client makes: the platform's ID (the metric label) and its protocol. */
export interface UpstreamLabel {
  readonly platformId: string;
  readonly system: UpstreamSystem;
}

/** The label of a client opened outside any platform's connection (a test, a tool). */
const UNATTRIBUTED = 'unknown';

/** The platform whose connection is being opened right now (synchronously); null otherwise. */
let connecting: string | null = null;
/** The platform each endpoint was last opened for, so that a client opened later (a second session) is labelled too. */
const platformByEndpoint = new Map<string, string>();

/**
 * Runs a platform's `connect`, so that the clients it constructs before its
 * first `await` learn which platform they serve. The clients do not know it
 * (their options carry an endpoint, not an ID), and an AsyncLocalStorage
 * would tax every promise of the process to pass one string down.
 */
export function connectingPlatform<T>(platformId: string, connect: () => T): T {
  const outer = connecting;
  connecting = platformId;
  try {
    return connect();
  } finally {
    connecting = outer;
  }
}

/**
 * The label a client constructed now carries: the platform being connected,
 * or the one its endpoint was last opened for (the vSphere watch's own
 * session is cloned from the platform's after an await). Two platforms on
 * one endpoint are told apart only for clients opened by `connect`.
 */
export function upstreamLabel(system: UpstreamSystem, endpoint: string): UpstreamLabel {
  const key = `${system} ${endpoint}`;
  if (connecting !== null) platformByEndpoint.set(key, connecting);
  return { platformId: connecting ?? platformByEndpoint.get(key) ?? UNATTRIBUTED, system };
}

/**
 * Runs one upstream call (a SOAP method, a libvirt addon call): counted by
 * platform, method and outcome, timed, and a child span of the traced
 * operation that caused it. `method` must come from code, never from a
 * request: it is a metric label.
 */
export function instrumentUpstream<T>(upstream: UpstreamLabel, method: string, call: () => Promise<T>): Promise<T> {
  const metrics = activeMetrics();
  const traced = traceUpstreamCall(upstream, method, call);
  if (!metrics) return traced;
  const started = performance.now();
  const labels = { platform: upstream.platformId, method };
  metrics.upstreamInFlight.inc({ platform: upstream.platformId });
  const done = (outcome: 'ok' | 'error') => {
    metrics.upstreamInFlight.dec({ platform: upstream.platformId });
    metrics.upstreamCalls.inc({ ...labels, outcome });
    metrics.upstreamDuration.observe(labels, (performance.now() - started) / 1000);
  };
  return traced.then(
    (value) => {
      done('ok');
      return value;
    },
    (e: unknown) => {
      done('error');
      throw e;
    },
  );
}

/** A session (a vSphere SOAP session, a libvirt connection) was opened for a platform. */
export function upstreamSessionOpened(upstream: UpstreamLabel): void {
  sessionOpened(upstream.platformId);
}

/** A session opened with upstreamSessionOpened was closed; call once per session. */
export function upstreamSessionClosed(upstream: UpstreamLabel): void {
  sessionClosed(upstream.platformId);
}

import { randomUUID } from 'node:crypto';

import type { Logger } from 'pino';

/** What kind of GraphQL operation ran; null until the document was parsed and validated. */
export type OperationType = 'query' | 'mutation' | 'subscription';

/**
 * How an operation ended: `ok` without errors, `partial` with data and
 * errors (a platform that could not answer), `error` with errors and no
 * data (refused, or failed as a whole).
 */
export type Outcome = 'ok' | 'partial' | 'error';

/** One access log line: what operators need to find an operation, and nothing a client sent beyond its name. */
export interface AccessRecord {
  requestId: string;
  transport: 'http' | 'websocket';
  operationType: OperationType | null;
  /** The operation's name as its document gives it (cut at 128 characters); null when anonymous or unknown. */
  operationName: string | null;
  outcome: Outcome;
  /** From arrival to answer; a subscription's whole life. */
  durationMs: number;
  /** HTTP: the response status. */
  status?: number;
  /** A subscription: payloads sent to its client. */
  events?: number;
  /** The `extensions.code` of each error sent, once each. */
  errorCodes?: string[];
  /** `anonymous`, `user:<subject>` or `token:<name>`: never the credential. */
  caller?: string;
  /** The operation's trace, while tracing is on. */
  traceId?: string;
}

/**
 * Writes one info line per operation (`"msg":"operation"`). The query text,
 * the variables and credentials are never written: literals and variables
 * carry secrets (a guest password in a createVm input), and a token is one.
 */
export function writeAccessLine(logger: Logger, record: AccessRecord): void {
  logger.info(record, 'operation');
}

/** What a client may choose as a request ID: short, and nothing that needs escaping in a header or a log query. */
const REQUEST_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

/** A request ID a client sent (`x-request-id`, or `requestId` in connection_init), when it is one; null otherwise. */
export function acceptRequestId(value: unknown): string | null {
  const first = Array.isArray(value) ? (value as unknown[])[0] : value;
  return typeof first === 'string' && REQUEST_ID.test(first) ? first : null;
}

/** A request ID of the gateway's own, for a request that came without one. */
export function newRequestId(): string {
  return randomUUID();
}

/** A client-chosen WebSocket operation ID as it may appear in a request ID. */
export function operationIdPart(id: string): string {
  return id.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64);
}

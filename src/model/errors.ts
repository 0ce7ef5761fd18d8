import { GraphQLError } from 'graphql';

/**
 * Stable error codes sent in `extensions.code`. Clients switch on these;
 * the messages are for people and may change.
 */
export const ErrorCode = {
  /** An argument value that is malformed or out of range. */
  BAD_USER_INPUT: 'BAD_USER_INPUT',
  /** An ID that is not one of ours, or of the wrong kind for the argument. */
  INVALID_ID: 'INVALID_ID',
  /** A cursor that is malformed or was made for another ordering. */
  INVALID_CURSOR: 'INVALID_CURSOR',
  /** `first` outside 0..maxPageSize, or too many IDs in `nodes`. */
  INVALID_PAGINATION: 'INVALID_PAGINATION',
  /** A filter names a platform that is not configured. */
  UNKNOWN_PLATFORM: 'UNKNOWN_PLATFORM',
  /** The document nests selections deeper than `limits.maxDepth`. */
  QUERY_TOO_DEEP: 'QUERY_TOO_DEEP',
  /** The document uses more aliases than `limits.maxAliases`. */
  TOO_MANY_ALIASES: 'TOO_MANY_ALIASES',
  /** The document uses more directives than `limits.maxDirectives`. */
  TOO_MANY_DIRECTIVES: 'TOO_MANY_DIRECTIVES',
  /** The document has more tokens than `limits.maxTokens`. */
  TOO_MANY_TOKENS: 'TOO_MANY_TOKENS',
  /**
   * The estimated cost exceeds `limits.maxCost`, or the caller's whole budget
   * per window (`auth.rateLimit.pointsPerWindow`), so that it could never run.
   */
  QUERY_TOO_COSTLY: 'QUERY_TOO_COSTLY',
  /**
   * The caller has fewer points left in the current rate-limit window than
   * the operation costs (`auth.rateLimit`); nothing ran and nothing was
   * charged. HTTP status 429 with `Retry-After`; on a WebSocket an error for
   * that operation, the connection stays open. Extensions: `cost`,
   * `remaining`, `resetAt` (ISO 8601) and `retryAfterSeconds`.
   */
  RATE_LIMITED: 'RATE_LIMITED',
  /** A WebSocket connection holds `subscriptions.maxPerConnection` operations already. */
  TOO_MANY_SUBSCRIPTIONS: 'TOO_MANY_SUBSCRIPTIONS',
  /** The HTTP body is larger than `limits.maxBodyBytes`. */
  REQUEST_TOO_LARGE: 'REQUEST_TOO_LARGE',
  /** A platform did not answer within `limits.operationTimeoutMs`; the rest of the response is still valid. */
  DEADLINE_EXCEEDED: 'DEADLINE_EXCEEDED',
  /** A platform could not answer; the rest of the response is still valid. */
  PLATFORM_UNAVAILABLE: 'PLATFORM_UNAVAILABLE',
  /**
   * Redis, through which gateway instances share idempotency keys, did not
   * answer: a mutation with an idempotency key is refused rather than risk
   * running twice. Retry with the same key.
   */
  SHARED_STATE_UNAVAILABLE: 'SHARED_STATE_UNAVAILABLE',
  /** The platform has no metrics the gateway can read, or no history for the range asked. */
  METRICS_UNAVAILABLE: 'METRICS_UNAVAILABLE',
  /**
   * A metrics request the platform cannot answer as asked: an interval below
   * its minimum, a resolution it does not keep, `from` after `to`, more
   * points than `limits.maxSeriesPoints`. The error's extensions say what is possible.
   */
  INVALID_METRICS_REQUEST: 'INVALID_METRICS_REQUEST',
  /**
   * The request's credential was refused: malformed, unknown, expired, not
   * yet valid, for another issuer or audience, signed with an algorithm or
   * key the gateway does not accept, or unsigned; or it carried none where
   * anonymous callers are not allowed. Never served as anonymous instead.
   * On HTTP with status 401 and `WWW-Authenticate: Bearer`; a WebSocket is
   * closed with 4403 instead. Send a valid token and retry.
   */
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  /** The caller's roles do not allow this read (the audit log without the auditor or admin role). */
  FORBIDDEN: 'FORBIDDEN',
  /**
   * A browser page from an origin not in `server.corsOrigins` called the
   * gateway (HTTP status 403; a WebSocket upgrade is refused with 403 too).
   */
  ORIGIN_NOT_ALLOWED: 'ORIGIN_NOT_ALLOWED',
  /**
   * The request names its document by hash (`documentId`, or Apollo's
   * `extensions.persistedQuery.sha256Hash`) and the trusted-document
   * manifest (`server.trustedDocuments`) holds none by that hash, the hash is
   * malformed, or the gateway has no manifest and was sent a `documentId`.
   * Nothing ran. HTTP status 400 (Apollo Server answers a miss of its
   * automatic persisted queries with 200; here a request that cannot run is
   * a client error like any other); on a WebSocket an error for that
   * operation, the connection stays open.
   */
  PERSISTED_QUERY_NOT_FOUND: 'PERSISTED_QUERY_NOT_FOUND',
  /**
   * With `server.trustedDocuments` enforced, a document sent as text whose
   * SHA-256 is not in the manifest: refused before it is parsed, HTTP status
   * 403 (on a WebSocket an error for that operation). Send a registered
   * `documentId` instead.
   */
  OPERATION_NOT_TRUSTED: 'OPERATION_NOT_TRUSTED',
  /** The upstream answered with an error the gateway did not expect. */
  UPSTREAM_ERROR: 'UPSTREAM_ERROR',
  /** Anything else; details are in the server log only. */
  INTERNAL_SERVER_ERROR: 'INTERNAL_SERVER_ERROR',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Codes whose messages are safe and useful to show to clients as they are. */
const CLIENT_FACING: ReadonlySet<string> = new Set<string>([
  ...Object.values(ErrorCode).filter((c) => c !== ErrorCode.INTERNAL_SERVER_ERROR),
  // Apollo Server's own codes for bad requests.
  'GRAPHQL_PARSE_FAILED',
  'GRAPHQL_VALIDATION_FAILED',
  'BAD_REQUEST',
  'OPERATION_RESOLUTION_FAILURE',
  'PERSISTED_QUERY_NOT_SUPPORTED',
]);

export function isClientFacingCode(code: unknown): boolean {
  return typeof code === 'string' && CLIENT_FACING.has(code);
}

/** An expected failure whose message and code go to the client unchanged. */
export class GatewayError extends GraphQLError {
  constructor(code: ErrorCode, message: string, extensions: Record<string, unknown> = {}) {
    super(message, { extensions: { ...extensions, code } });
    this.name = 'GatewayError';
  }
}

/** Raised when a platform cannot answer; the response carries the rest, with an error naming the platform. */
export class PlatformUnavailableError extends Error {
  constructor(
    readonly platformId: string,
    reason: string,
  ) {
    super(`Platform "${platformId}" is unavailable: ${reason}`);
    this.name = 'PlatformUnavailableError';
  }
}

/** Raised when a platform has spent its budget in the operation (`limits.operationTimeoutMs` of waiting on it). */
export class DeadlineExceededError extends Error {
  constructor(
    readonly platformId: string,
    ms: number,
  ) {
    super(`Platform "${platformId}" did not answer within ${ms} ms.`);
    this.name = 'DeadlineExceededError';
  }
}

/** How a platform describes one of its own errors to clients (`vSphere: ...`, `libvirt: ...`). */
export interface UpstreamErrorDescription {
  message: string;
  /** Sent in `extensions` beside `code: UPSTREAM_ERROR` (`vimFault`, `libvirtCode`, ...). */
  extensions: Record<string, unknown>;
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export class UnreachableCaseError extends Error {
  constructor(value: never) {
    super(`Unreachable case: ${JSON.stringify(value)}`);
  }
}

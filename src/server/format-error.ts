import type { GraphQLError, GraphQLFormattedError } from 'graphql';

import type { Logger } from 'pino';

import {
  DeadlineExceededError,
  ErrorCode,
  GatewayError,
  PlatformUnavailableError,
  type UpstreamErrorDescription,
  isClientFacingCode,
} from '../model/errors.js';
import { isTokenLimitError } from './limits.js';

/** Walks the `originalError` chain (Apollo wraps resolver and validation errors). */
function causes(error: unknown): unknown[] {
  const chain: unknown[] = [];
  let current: unknown = error;
  while (current && chain.length < 10 && !chain.includes(current)) {
    chain.push(current);
    current = (current as { originalError?: unknown }).originalError;
  }
  return chain;
}

/** Asks the platforms whether an error is one of theirs, and how they word it for clients. */
export type DescribeUpstreamError = (error: unknown) => UpstreamErrorDescription | null;

export interface ErrorFormatter {
  /** Apollo's `formatError`: the formatted error and the error it came from. */
  format(formatted: GraphQLFormattedError, error: unknown): GraphQLFormattedError;
  /** An error raised outside Apollo's pipeline (WebSocket validation, partial errors). */
  formatOne(error: GraphQLError): GraphQLFormattedError;
}

export interface ErrorFormatterOptions {
  /**
   * Keep graphql-js's "Did you mean ...?" in validation and variable errors.
   * They name fields, arguments, types and enum values the caller did not
   * ask about, so they belong only where the schema is open anyway
   * (introspection on).
   * @default false
   */
  suggestions?: boolean;
  /** Told the code of every error as it is formatted for a client (the gateway's error metrics). */
  countError?: (code: unknown) => void;
}

/**
 * What a client sees of an error. Expected errors keep their message and
 * stable `extensions.code`; a platform's own error is worded by its platform
 * (UPSTREAM_ERROR); anything unexpected becomes "Unexpected error." with
 * INTERNAL_SERVER_ERROR, and is logged in full.
 */
export function createErrorFormatter(
  logger: Logger,
  describeUpstream: DescribeUpstreamError,
  options: ErrorFormatterOptions = {},
): ErrorFormatter {
  const suggestions = options.suggestions ?? false;
  const countError = options.countError;
  const format = (formatted: GraphQLFormattedError, error: unknown): GraphQLFormattedError => {
    const out = classify(formatted, error, logger, describeUpstream, suggestions);
    countError?.(out.extensions?.['code']);
    // Errors about one platform (partial data) name it, whatever their code.
    const platformId = formatted.extensions?.['platformId'];
    return typeof platformId === 'string' ? { ...out, extensions: { ...out.extensions, platformId } } : out;
  };
  return { format, formatOne: (error) => format(error.toJSON(), error) };
}

function classify(
  formatted: GraphQLFormattedError,
  error: unknown,
  logger: Logger,
  describeUpstream: DescribeUpstreamError,
  suggestions: boolean,
): GraphQLFormattedError {
  const where = { locations: formatted.locations, path: formatted.path };
  const chain = causes(error);

  const gateway = chain.find((e): e is GatewayError => e instanceof GatewayError);
  if (gateway) {
    const { http: _http, ...extensions } = gateway.extensions;
    return { message: gateway.message, ...where, extensions };
  }

  const late = chain.find((e): e is DeadlineExceededError => e instanceof DeadlineExceededError);
  if (late) {
    return {
      message: late.message,
      ...where,
      extensions: { code: ErrorCode.DEADLINE_EXCEEDED, platformId: late.platformId },
    };
  }

  const unavailable = chain.find((e): e is PlatformUnavailableError => e instanceof PlatformUnavailableError);
  if (unavailable) {
    return {
      message: unavailable.message,
      ...where,
      extensions: { code: ErrorCode.PLATFORM_UNAVAILABLE, platformId: unavailable.platformId },
    };
  }

  for (const e of chain) {
    const upstream = describeUpstream(e);
    if (!upstream) continue;
    logger.warn({ err: e, path: formatted.path }, 'platform error in a response');
    return {
      message: upstream.message,
      ...where,
      extensions: { code: ErrorCode.UPSTREAM_ERROR, ...upstream.extensions },
    };
  }

  const code = formatted.extensions?.['code'];
  if (code === 'GRAPHQL_PARSE_FAILED' && isTokenLimitError(formatted)) {
    return { message: formatted.message, ...where, extensions: { code: ErrorCode.TOO_MANY_TOKENS } };
  }
  if (isClientFacingCode(code)) {
    const message =
      suggestions || !SUGGESTING_CODES.has(code) ? formatted.message : withoutSuggestion(formatted.message);
    return { message, ...where, extensions: { code } };
  }

  logger.error({ err: chain[chain.length - 1] ?? error, path: formatted.path }, 'unexpected error in a response');
  return { message: 'Unexpected error.', ...where, extensions: { code: ErrorCode.INTERNAL_SERVER_ERROR } };
}

/**
 * Codes of the errors graphql-js words with suggestions: validation, and
 * variables it cannot coerce (Apollo Server's and the WebSocket's BAD_USER_INPUT).
 */
const SUGGESTING_CODES: ReadonlySet<unknown> = new Set(['GRAPHQL_VALIDATION_FAILED', ErrorCode.BAD_USER_INPUT]);

/**
 * graphql-js's suggestion, always the message's last sentence: ` Did you mean "name"?`,
 * `... "a" or "b"?`, `... "a", "b", or "c"?`, `... the enum value "ON"?`,
 * `... to use an inline fragment on "Host"?`. Anchored at the end and made of
 * quoted GraphQL names only, so no other part of a message is cut.
 */
const SUGGESTION = / Did you mean (?:[a-z ]+ )?"[_A-Za-z]\w*"(?:,? (?:or )?"[_A-Za-z]\w*")*\?$/;

function withoutSuggestion(message: string): string {
  return message.replace(SUGGESTION, '');
}

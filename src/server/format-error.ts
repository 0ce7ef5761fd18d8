import type { GraphQLError, GraphQLFormattedError } from 'graphql';

import type { Logger } from 'pino';

import { DeadlineExceededError } from '../datasources/loaders.js';
import { PlatformUnavailableError } from '../datasources/platform-connection.js';
import { isLibvirtError } from '../datasources/libvirt/errors.js';
import { VimFault, VsphereTransportError } from '../datasources/vsphere/errors.js';
import { ErrorCode, GatewayError, isClientFacingCode } from '../errors.js';
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

/**
 * What a client sees of an error. Expected errors keep their message and
 * stable `extensions.code`; anything unexpected becomes "Unexpected error."
 * with INTERNAL_SERVER_ERROR, and is logged in full.
 */
export function formatError(formatted: GraphQLFormattedError, error: unknown, logger: Logger): GraphQLFormattedError {
  const out = classify(formatted, error, logger);
  // Errors about one platform (partial data) name it, whatever their code.
  const platformId = formatted.extensions?.['platformId'];
  return typeof platformId === 'string' ? { ...out, extensions: { ...out.extensions, platformId } } : out;
}

function classify(formatted: GraphQLFormattedError, error: unknown, logger: Logger): GraphQLFormattedError {
  const where = { locations: formatted.locations, path: formatted.path };
  const chain = causes(error);

  const gateway = chain.find((e): e is GatewayError => e instanceof GatewayError);
  if (gateway) {
    const { http: _http, ...extensions } = gateway.extensions;
    return { message: gateway.message, ...where, extensions };
  }

  const late = chain.find((e): e is DeadlineExceededError => e instanceof DeadlineExceededError);
  if (late) {
    return { message: late.message, ...where, extensions: { code: ErrorCode.DEADLINE_EXCEEDED, platformId: late.platformId } };
  }

  const unavailable = chain.find((e): e is PlatformUnavailableError => e instanceof PlatformUnavailableError);
  if (unavailable) {
    return {
      message: unavailable.message,
      ...where,
      extensions: { code: ErrorCode.PLATFORM_UNAVAILABLE, platformId: unavailable.platformId },
    };
  }

  const libvirt = chain.find(isLibvirtError);
  if (libvirt) {
    logger.warn({ err: libvirt, path: formatted.path }, 'libvirt error in a response');
    return {
      message: `libvirt: ${libvirt.message}`,
      ...where,
      extensions: { code: ErrorCode.UPSTREAM_ERROR, libvirtCode: libvirt.code },
    };
  }

  const vim = chain.find((e): e is VimFault => e instanceof VimFault);
  if (vim) {
    logger.warn({ err: vim, path: formatted.path }, 'vSphere fault in a response');
    return { message: `vSphere: ${vim.message}`, ...where, extensions: { code: ErrorCode.UPSTREAM_ERROR, vimFault: vim.faultType } };
  }
  const transport = chain.find((e): e is VsphereTransportError => e instanceof VsphereTransportError);
  if (transport) {
    logger.warn({ err: transport, path: formatted.path }, 'vSphere transport error in a response');
    return { message: `vSphere: ${transport.message}`, ...where, extensions: { code: ErrorCode.UPSTREAM_ERROR, transport: transport.failure } };
  }

  const code = formatted.extensions?.['code'];
  if (code === 'GRAPHQL_PARSE_FAILED' && isTokenLimitError(formatted)) {
    return { message: formatted.message, ...where, extensions: { code: ErrorCode.TOO_MANY_TOKENS } };
  }
  if (isClientFacingCode(code)) {
    return { message: formatted.message, ...where, extensions: { code } };
  }

  logger.error({ err: chain[chain.length - 1] ?? error, path: formatted.path }, 'unexpected error in a response');
  return { message: 'Unexpected error.', ...where, extensions: { code: ErrorCode.INTERNAL_SERVER_ERROR } };
}

/** Formats an error raised outside Apollo's pipeline (WebSocket validation, partial errors). */
export function formatOne(error: GraphQLError, logger: Logger): GraphQLFormattedError {
  return formatError(error.toJSON(), error, logger);
}


import type { IncomingMessage, ServerResponse } from 'node:http';

import type { ApolloServer } from '@apollo/server';
import { HeaderMap } from '@apollo/server';
import type { Logger } from 'pino';

import type { ReadinessConfig } from '../config/schema.js';
import type { Caller } from '../model/caller.js';
import { ErrorCode, UnreachableCaseError } from '../model/errors.js';
import type { PlatformStatus } from '../model/platform.js';
import { acceptRequestId, newRequestId } from '../observability/access-log.js';
import type { OperationObservation, Operations } from '../observability/operations.js';
import type { GatewayContext } from '../resolvers/context.js';
import { AuthenticationError, type Credential } from './authentication.js';
import { explorerAsset, explorerAssetPrefix, explorerNonce, explorerPage, explorerPageHeaders } from './explorer.js';
import type { DocumentRequest, DocumentResolution, TrustedDocuments } from './trusted-documents.js';

export interface HttpHandlerOptions {
  apollo: ApolloServer<GatewayContext>;
  path: string;
  /** Browser origins allowed besides the gateway's own (CORS, and refusal of others); `*` for any. */
  corsOrigins: readonly string[];
  explorer: boolean;
  maxBodyBytes: number;
  logger: Logger;
  /** The caller a request's credential proves; throws AuthenticationError when it proves none. */
  authenticate: (credential: Credential) => Promise<Caller>;
  /** An operation's context; the source address is whose budget an anonymous caller spends. */
  contextFor: (caller: Caller, remoteAddress: string | undefined) => GatewayContext;
  /** The estate's metrics in Prometheus text (GET /metrics/estate); absent when not enabled. */
  estateMetrics?: (caller: Caller) => string;
  /**
   * The gateway's own metrics (GET /metrics); absent when not enabled. They
   * name every platform and operation, so a scraper authenticates as for
   * GraphQL and must be one that sees everything (`allowed`).
   */
  gatewayMetrics?: { allowed(caller: Caller): boolean; render(): Promise<string>; readonly contentType: string };
  /** Each GraphQL request's observation: its access line, its metrics and its span. */
  operations: Operations;
  /** Liveness and the gateway's own part of readiness (started, not draining), each with a JSON body. */
  health: () => { live: boolean; ready: boolean; details: Record<string, unknown> };
  /**
   * What /readyz requires besides `health().ready` (`server.readiness`), and
   * the platforms and Redis as the gateway sees them at each probe.
   */
  readiness: {
    policy: ReadinessConfig;
    /** Every platform with its status as `platforms { status }` shows it, in configuration order. */
    platforms: () => readonly PlatformReadiness[];
    /** Whether Redis answers; null when none is configured. */
    redisUp: () => boolean | null;
  };
  /** The trusted-document check (`server.trustedDocuments`), run on each request before Apollo parses it. */
  documents: TrustedDocuments;
}

/** One platform as /readyz weighs it. */
export interface PlatformReadiness {
  id: string;
  status: PlatformStatus;
  statusMessage: string | null;
}

/** Something the readiness policy requires and does not have, as the /readyz body names it. */
export type ReadinessProblem =
  | { check: 'gateway'; message: string }
  | { check: 'platform'; platform: string; status: PlatformStatus; message: string | null }
  | { check: 'redis'; message: string };

/**
 * What the readiness policy requires that is missing at this moment: empty
 * when the platforms and Redis satisfy it. Every platform that keeps the
 * gateway unready is named, so that the probe's body says which.
 */
export function readinessProblems(
  policy: ReadinessConfig,
  platforms: readonly PlatformReadiness[],
  redisUp: boolean | null,
): ReadinessProblem[] {
  const down = (p: PlatformReadiness) => p.status !== 'CONNECTED';
  const required = policy.requirePlatforms;
  let missing: PlatformReadiness[];
  if (required === 'none') missing = [];
  else if (required === 'all') missing = platforms.filter(down);
  else if (required === 'any') missing = platforms.some((p) => !down(p)) ? [] : [...platforms];
  else missing = platforms.filter((p) => required.includes(p.id) && down(p));
  const problems: ReadinessProblem[] = missing.map((p) => ({
    check: 'platform',
    platform: p.id,
    status: p.status,
    message: p.statusMessage,
  }));
  if (policy.requireRedis && redisUp === false) problems.push({ check: 'redis', message: 'Redis does not answer' });
  return problems;
}

class BodyTooLargeError extends Error {}

async function readBody(req: IncomingMessage, max: number): Promise<string> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) throw new BodyTooLargeError();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > max) throw new BodyTooLargeError();
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function sendError(res: ServerResponse, status: number, code: string, message: string): void {
  sendJson(res, status, { errors: [{ message, extensions: { code } }] });
}

const CORS_HEADERS =
  'content-type, authorization, apollo-require-preflight, x-apollo-operation-name, x-request-id, traceparent, tracestate';

/**
 * Whether the page a browser request comes from may call the gateway: an
 * origin in `allowed` (`*`: any), or the gateway's own (the explorer). A
 * request without an Origin header is not a browser's cross-origin call
 * (curl, a backend, a top-level navigation) and always may; browsers send
 * Origin on every cross-origin request and WebSocket, and a page cannot
 * forge it. Behind a proxy, the gateway's own origin is the one in
 * X-Forwarded-Host when the proxy sets it (a page cannot set that header
 * either without a preflight, which a foreign origin fails).
 */
export function originAllowed(req: IncomingMessage, allowed: readonly string[]): boolean {
  const origin = req.headers.origin;
  if (origin === undefined || allowed.includes('*') || allowed.includes(origin)) return true;
  let host: string;
  try {
    host = new URL(origin).host;
  } catch {
    return false;
  }
  const forwarded = req.headers['x-forwarded-host'];
  const own = [req.headers.host, ...(typeof forwarded === 'string' ? forwarded.split(',') : [])];
  return own.some((h) => h !== undefined && h.trim().toLowerCase() === host);
}

/** CORS headers for a request's Origin, when the origin is a listed foreign one; a same-origin page needs none. */
function corsHeaders(req: IncomingMessage, allowed: readonly string[]): Record<string, string> {
  const origin = req.headers.origin;
  if (!origin || allowed.length === 0) return {};
  // A page may read the request ID of its answers, to quote it in a bug report.
  const expose = { 'access-control-expose-headers': 'x-request-id' };
  if (allowed.includes('*')) return { 'access-control-allow-origin': '*', ...expose };
  return allowed.includes(origin) ? { 'access-control-allow-origin': origin, vary: 'Origin', ...expose } : {};
}

/** RFC 6750's challenge: `invalid_token` when a credential was sent and refused, `invalid_request` when it was garbled. */
function bearerChallenge(e: AuthenticationError): string {
  if (e.reason === 'missing') return 'Bearer realm="virt-graph"';
  return `Bearer realm="virt-graph", error="${e.reason === 'malformed' ? 'invalid_request' : 'invalid_token'}"`;
}

function wantsHtml(req: IncomingMessage): boolean {
  return (req.headers.accept ?? '').includes('text/html');
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `extensions` without Apollo's `persistedQuery`, which has served once the document is resolved; undefined when nothing is left. */
function withoutPersistedQuery(extensions: unknown): unknown {
  if (!isRecord(extensions) || !('persistedQuery' in extensions)) return extensions;
  const { persistedQuery: _resolved, ...rest } = extensions;
  return Object.keys(rest).length > 0 ? rest : undefined;
}

type Refusal = Extract<DocumentResolution, { kind: 'refused' }>;

/**
 * A POST body with its document resolved against the trusted documents:
 * `query` set to the document to run, `documentId` and the persisted-query
 * extension dropped (Apollo would refuse the one it does not know). A
 * batch (an array) is resolved item by item and refused whole when one item
 * is. Anything else (a text body) goes on as it is: Apollo refuses it
 * before parsing a document.
 */
function resolvePostBody(body: unknown, documents: TrustedDocuments): { body: unknown } | Refusal {
  if (Array.isArray(body)) {
    const items: unknown[] = [];
    for (const item of body) {
      const resolved = resolvePostBody(item, documents);
      if ('kind' in resolved) return resolved;
      items.push(resolved.body);
    }
    return { body: items };
  }
  if (!isRecord(body)) return { body };
  const { documentId, extensions, ...rest } = body;
  const request: DocumentRequest = {
    query: body['query'],
    documentId,
    extensions,
    operationName: body['operationName'],
  };
  const resolution = documents.resolve(request, 'http');
  switch (resolution.kind) {
    case 'refused':
      return resolution;
    case 'asSent':
      return { body };
    case 'run': {
      const others = withoutPersistedQuery(extensions);
      return { body: { ...rest, query: resolution.query, ...(others === undefined ? {} : { extensions: others }) } };
    }
    default:
      throw new UnreachableCaseError(resolution);
  }
}

/**
 * A GET request's search string with its document resolved, as for a POST
 * body. A parameter that names the document given twice is refused here:
 * which of the two was checked and which would run must not be a question.
 */
function resolveSearch(url: URL, documents: TrustedDocuments): { search: string } | Refusal {
  const search = url.searchParams;
  for (const name of ['query', 'documentId', 'extensions']) {
    if (search.getAll(name).length > 1) {
      return {
        kind: 'refused',
        status: 400,
        code: 'BAD_REQUEST',
        message: `The '${name}' search parameter may only be specified once.`,
      };
    }
  }
  let extensions: unknown;
  try {
    extensions = JSON.parse(search.get('extensions') ?? 'null');
  } catch {
    // Apollo refuses it with its own message; no hash can be read from it.
    extensions = undefined;
  }
  const resolution = documents.resolve(
    {
      query: search.get('query') ?? undefined,
      documentId: search.get('documentId') ?? undefined,
      extensions,
      operationName: search.get('operationName') ?? undefined,
    },
    'http',
  );
  switch (resolution.kind) {
    case 'refused':
      return resolution;
    case 'asSent':
      return { search: url.search };
    case 'run': {
      const params = new URLSearchParams(search);
      params.set('query', resolution.query);
      params.delete('documentId');
      const rest = withoutPersistedQuery(extensions);
      if (rest === undefined) params.delete('extensions');
      else if (rest !== extensions) params.set('extensions', JSON.stringify(rest));
      return { search: `?${params}` };
    }
    default:
      throw new UnreachableCaseError(resolution);
  }
}

/**
 * The HTTP side of the gateway: GraphQL (through Apollo Server), the
 * explorer, and health probes. Bodies are read with a size cap before
 * anything parses them.
 */
export function createHttpHandler(opts: HttpHandlerOptions) {
  const { apollo, logger } = opts;

  /** The request's caller, or null once a 401 has been sent. Runs before the body is read: a stranger's megabyte is not parsed. */
  async function callerOf(req: IncomingMessage, res: ServerResponse): Promise<Caller | null> {
    try {
      return await opts.authenticate({
        authorization: req.headers.authorization,
        transport: 'http',
        remoteAddress: req.socket.remoteAddress,
      });
    } catch (e) {
      if (!(e instanceof AuthenticationError)) throw e;
      res.setHeader('www-authenticate', bearerChallenge(e));
      sendError(res, 401, ErrorCode.UNAUTHENTICATED, e.message);
      return null;
    }
  }

  function refuseDocument(res: ServerResponse, refusal: Refusal, observation: OperationObservation): void {
    sendError(res, refusal.status, refusal.code, refusal.message);
    observation.refused(refusal.code);
  }

  /** One GraphQL request, observed from its arrival to its last byte; a refusal before Apollo is counted with its code. */
  async function graphql(req: IncomingMessage, res: ServerResponse, url: URL, requestId: string): Promise<void> {
    const observation = opts.operations.begin({ transport: 'http', requestId, carrier: req.headers });
    try {
      await observation.run(() => graphqlObserved(req, res, url, observation));
    } catch (e) {
      observation.refused(ErrorCode.INTERNAL_SERVER_ERROR);
      throw e;
    } finally {
      observation.finish({ status: res.headersSent ? res.statusCode : 500 });
    }
  }

  async function graphqlObserved(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    observation: OperationObservation,
  ): Promise<void> {
    const caller = await callerOf(req, res);
    if (!caller) return observation.refused(ErrorCode.UNAUTHENTICATED);
    observation.callerIs(caller.id);
    let body: unknown;
    if (req.method === 'POST') {
      let text: string;
      try {
        text = await readBody(req, opts.maxBodyBytes);
      } catch (e) {
        if (e instanceof BodyTooLargeError) {
          res.setHeader('connection', 'close');
          sendError(res, 413, ErrorCode.REQUEST_TOO_LARGE, `The request body exceeds ${opts.maxBodyBytes} bytes.`);
          return observation.refused(ErrorCode.REQUEST_TOO_LARGE);
        }
        throw e;
      }
      const type = req.headers['content-type'] ?? '';
      if (type.includes('application/json') || type.includes('application/graphql-response+json')) {
        try {
          body = text.length > 0 ? JSON.parse(text) : undefined;
        } catch {
          sendError(res, 400, 'BAD_REQUEST', 'The request body is not valid JSON.');
          return observation.refused('BAD_REQUEST');
        }
      } else {
        body = text;
      }
    }
    // Trusted documents are looked up before Apollo parses anything: an unregistered document is refused as text.
    const method = (req.method ?? 'GET').toUpperCase();
    let search = url.search;
    if (method === 'POST') {
      const resolved = resolvePostBody(body, opts.documents);
      if ('kind' in resolved) return refuseDocument(res, resolved, observation);
      body = resolved.body;
    } else if (method === 'GET') {
      const resolved = resolveSearch(url, opts.documents);
      if ('kind' in resolved) return refuseDocument(res, resolved, observation);
      search = resolved.search;
    }
    const headers = new HeaderMap();
    for (const [key, value] of Object.entries(req.headers)) {
      if (value !== undefined) headers.set(key, Array.isArray(value) ? value.join(', ') : value);
    }
    const httpGraphQLRequest = { method, headers, search, body };
    // Apollo hands its plugins this very request (the context it copies).
    opts.operations.bind(httpGraphQLRequest, observation);
    const result = await apollo.executeHTTPGraphQLRequest({
      httpGraphQLRequest,
      context: async () => opts.contextFor(caller, req.socket.remoteAddress),
    });
    for (const [key, value] of result.headers) res.setHeader(key, value);
    res.statusCode = result.status ?? 200;
    if (result.body.kind === 'complete') {
      res.end(result.body.string);
      return;
    }
    for await (const chunk of result.body.asyncIterator) res.write(chunk);
    res.end();
  }

  /**
   * 200 when the gateway serves and the readiness policy is met, else 503;
   * the body lists the platforms as the graph shows them and, under
   * `unready`, what keeps the gateway out of a load balancer.
   */
  function sendReadiness(res: ServerResponse): void {
    const h = opts.health();
    const problems: ReadinessProblem[] = h.ready
      ? []
      : [{ check: 'gateway', message: 'the gateway is not serving (starting or draining; see phase)' }];
    const platforms = opts.readiness.platforms();
    problems.push(...readinessProblems(opts.readiness.policy, platforms, opts.readiness.redisUp()));
    const ready = problems.length === 0;
    sendJson(res, ready ? 200 : 503, {
      status: ready ? 'ready' : 'not ready',
      ...h.details,
      platforms: platforms.map((p) => ({ id: p.id, status: p.status })),
      readiness: opts.readiness.policy,
      unready: problems,
    });
  }

  const assetPrefix = explorerAssetPrefix(opts.path);
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const started = process.hrtime.bigint();
    const url = new URL(req.url ?? '/', 'http://localhost');
    // The caller's ID when it sends a usable one (a proxy's, a client's), so that both sides log the same.
    const requestId = acceptRequestId(req.headers['x-request-id']) ?? newRequestId();
    res.setHeader('x-request-id', requestId);
    const cors = corsHeaders(req, opts.corsOrigins);
    for (const [k, v] of Object.entries(cors)) res.setHeader(k, v);
    // Every answer is what its content-type says: a JSON error is never run as a script or rendered as a page.
    res.setHeader('x-content-type-options', 'nosniff');
    try {
      if (url.pathname === opts.path && req.method === 'OPTIONS') {
        // A browser's preflight: answer it here; Apollo never sees it.
        res.writeHead(204, {
          ...(cors['access-control-allow-origin']
            ? {
                'access-control-allow-methods': 'GET, POST, OPTIONS',
                'access-control-allow-headers': CORS_HEADERS,
                'access-control-max-age': '600',
              }
            : {}),
        });
        res.end();
      } else if (url.pathname === opts.path && !originAllowed(req, opts.corsOrigins)) {
        // Browsers do not stop a cross-origin POST from being sent (only its answer being read), and
        // a WebSocket not at all: a page from an origin not listed is refused before anything runs.
        sendError(
          res,
          403,
          ErrorCode.ORIGIN_NOT_ALLOWED,
          `Pages from ${req.headers.origin} may not call this gateway; see server.corsOrigins.`,
        );
      } else if (url.pathname === opts.path) {
        const namesDocument = url.searchParams.has('query') || url.searchParams.has('documentId');
        if (req.method === 'GET' && opts.explorer && wantsHtml(req) && !namesDocument) {
          const nonce = explorerNonce();
          res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', ...explorerPageHeaders(nonce) });
          res.end(explorerPage(opts.path, nonce));
        } else {
          await graphql(req, res, url, requestId);
        }
      } else if (url.pathname === '/metrics/estate' && opts.estateMetrics) {
        // The estate's names and numbers are no more public than the graph (Prometheus sends a bearer token).
        const caller = await callerOf(req, res);
        if (caller) {
          res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
          res.end(opts.estateMetrics(caller));
        }
      } else if (url.pathname === '/metrics' && opts.gatewayMetrics) {
        // They name every platform and operation: a scraper that sees them all, with a credential as for GraphQL.
        const caller = await callerOf(req, res);
        if (caller && opts.gatewayMetrics.allowed(caller)) {
          const text = await opts.gatewayMetrics.render();
          res.writeHead(200, { 'content-type': opts.gatewayMetrics.contentType });
          res.end(text);
        } else if (caller) {
          sendError(res, 403, ErrorCode.FORBIDDEN, "The gateway's metrics are for callers that see every platform.");
        }
      } else if (url.pathname === '/healthz') {
        const h = opts.health();
        sendJson(res, h.live ? 200 : 503, { status: h.live ? 'ok' : 'failing' });
      } else if (url.pathname === '/readyz') {
        sendReadiness(res);
      } else if (opts.explorer && req.method === 'GET' && url.pathname.startsWith(assetPrefix)) {
        const asset = explorerAsset(url.pathname.slice(assetPrefix.length));
        if (!asset) {
          sendError(res, 404, 'NOT_FOUND', 'No such file.');
        } else {
          res.writeHead(200, {
            'content-type': asset.type,
            'cache-control': 'public, max-age=3600',
            // Only the explorer's own page loads these; other sites may not pull them in (no-cors).
            'cross-origin-resource-policy': 'same-origin',
          });
          res.end(asset.body);
        }
      } else {
        sendError(res, 404, 'NOT_FOUND', `Nothing at ${url.pathname}; GraphQL is served at ${opts.path}.`);
      }
    } catch (e) {
      logger.error({ err: e, path: url.pathname }, 'HTTP request failed');
      if (!res.headersSent) sendError(res, 500, ErrorCode.INTERNAL_SERVER_ERROR, 'Unexpected error.');
      else res.end();
    } finally {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      logger.debug(
        { method: req.method, path: url.pathname, status: res.statusCode, ms: Math.round(ms * 10) / 10 },
        'http',
      );
    }
  };
}

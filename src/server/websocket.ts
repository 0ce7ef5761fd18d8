import type { Server as HttpServer, IncomingMessage } from 'node:http';

import {
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  GraphQLError,
  type GraphQLFormattedError,
  type GraphQLSchema,
  NoSchemaIntrospectionCustomRule,
  execute,
  getOperationAST,
  getVariableValues,
  parse,
  specifiedRules,
  validate,
} from 'graphql';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';

import type { Limits } from '../config/schema.js';
import type { Caller } from '../model/caller.js';
import type { GatewayContext } from '../resolvers/context.js';
import { ErrorCode } from '../model/errors.js';
import { acceptRequestId, newRequestId, operationIdPart } from '../observability/access-log.js';
import { type OperationObservation, type Operations, codesOf, outcomeOf } from '../observability/operations.js';
import type { TraceCarrier } from '../observability/tracing.js';
import { AuthenticationError, type Authenticator } from './authentication.js';
import type { ErrorFormatter } from './format-error.js';
import {
  type InitOutcome,
  type OperationOutcome,
  type OperationRequest,
  type TransportConnection,
  type TransportStats,
  serveGraphqlTransportWs,
} from './graphql-transport-ws.js';
import { originAllowed } from './http.js';
import { CheckedDocuments } from './checked-documents.js';
import { createSharedSubscribe } from './shared-subscription-execution.js';
import { assertCostWithin, isTokenLimitError, limitRules, operationCost, tokenLimitError } from './limits.js';
import { type RateLimiter, chargeOperation, dryRunDocument, rateLimitExtension } from './rate-limit.js';
import type { TrustedDocuments } from './trusted-documents.js';

export interface WebSocketOptions {
  server: HttpServer;
  path: string;
  schema: GraphQLSchema;
  limits: Limits;
  errors: ErrorFormatter;
  introspection: boolean;
  /** Subscriptions one connection may hold at once. */
  maxSubscriptionsPerConnection: number;
  /** How long a connection may wait before its connection_init. @default 5_000 // 5 seconds */
  connectionInitTimeoutMs?: number;
  /** Ping interval; a client that misses a pong is disconnected. @default 12_000 // 12 seconds */
  keepAliveMs?: number;
  /** Bytes a socket may hold unsent before its streams wait for it. @default 1_048_576 // 1 MiB */
  highWaterBytes?: number;
  logger: Logger;
  /** Who a connection's credential proves, checked at connection_init. */
  authenticator: Authenticator;
  /** Browser origins allowed to open a WebSocket besides the gateway's own; `*` for any. */
  corsOrigins: readonly string[];
  /** An operation's context; the source address is whose budget an anonymous caller spends. */
  contextFor: (
    caller: Caller,
    connection: GatewayContext['connection'],
    remoteAddress: string | undefined,
  ) => GatewayContext;
  /** Budgets of cost points per caller (`auth.rateLimit`); null when off. */
  rateLimiter: RateLimiter | null;
  /** The trusted-document check (`server.trustedDocuments`), run on each subscribe before its document is parsed. */
  documents: TrustedDocuments;
  /** Each operation's access line, metrics and span. */
  operations: Operations;
}

/** What a connection goes on with once its connection_init is accepted. */
interface ConnectionState {
  caller: Caller;
  /** The upgrade request's source address, kept for the operations' budgets (the socket may be gone by then). */
  remoteAddress: string | undefined;
  /** The connection's request ID; each operation's is `<this>:<its subscribe ID>`. */
  requestId: string;
  /** W3C trace context from the upgrade request's headers, overridden by connection_init's `traceparent`/`tracestate`. */
  carrier: TraceCarrier;
}

/** `traceparent` and `tracestate` of a payload (connection_init's, or a subscribe's extensions), where it has them. */
function traceFields(payload: Record<string, unknown> | null | undefined): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const name of ['traceparent', 'tracestate']) {
    const value = payload?.[name];
    if (typeof value === 'string') fields[name] = value;
  }
  return fields;
}

export interface RunningWebSocket {
  /** Closes every socket with 1001 Going Away and stops accepting. */
  close(): Promise<void>;
  clientCount(): number;
  /** Connections, running subscriptions and payloads sent (the gateway's metrics). */
  stats(): TransportStats;
}

/** Variable errors reported for one operation before graphql-js stops counting (as execute() does). */
const MAX_VARIABLE_ERRORS = 50;

function asGraphQLError(e: unknown): GraphQLError {
  return e instanceof GraphQLError
    ? e
    : new GraphQLError(e instanceof Error ? e.message : String(e), { originalError: e as Error });
}

/**
 * Gives parse, validation and variable errors the codes Apollo Server gives
 * them on HTTP (graphql-js gives them none); our own limit errors keep theirs.
 */
function withCode(
  error: GraphQLError,
  code: 'GRAPHQL_PARSE_FAILED' | 'GRAPHQL_VALIDATION_FAILED' | typeof ErrorCode.BAD_USER_INPUT,
): GraphQLError {
  return new GraphQLError(error.message, {
    nodes: error.nodes,
    source: error.source,
    positions: error.positions,
    originalError: error,
    extensions: { code },
  });
}

/**
 * The credential of a connection: `authorization` (or `Authorization`) in
 * the connection_init payload (what browser clients can send: they cannot
 * set headers on a WebSocket), else the upgrade request's Authorization header.
 */
function authorizationOf(payload: Record<string, unknown> | null, request: IncomingMessage): string | undefined {
  const value = payload?.['authorization'] ?? payload?.['Authorization'];
  if (value === undefined || value === null) return request.headers.authorization;
  // A value of another type is a garbled credential, refused as malformed rather than ignored.
  return typeof value === 'string' ? value : `(${typeof value})`;
}

/**
 * GraphQL over WebSocket (graphql-transport-ws) on the same port and path as
 * HTTP. A page from a foreign origin is refused at the upgrade (403; browsers
 * apply no CORS to WebSockets); the caller is established at connection_init
 * (refused: 4403) and the connection closed with 4403 when its credential
 * expires. Operations pass the same parse, validation, depth/alias/token/cost
 * limits and error masking as on HTTP; a message larger than maxBodyBytes
 * closes the socket (ws's maxPayload).
 */
export function attachWebSocket(opts: WebSocketOptions): RunningWebSocket {
  const { limits, schema } = opts;
  const rules = [
    ...specifiedRules,
    ...limitRules(limits),
    ...(opts.introspection ? [] : [NoSchemaIntrospectionCustomRule]),
  ];
  const checkedDocuments = new CheckedDocuments({
    check: (text) => {
      let document: DocumentNode;
      try {
        document = parse(text, { maxTokens: limits.maxTokens });
      } catch (e) {
        const error = asGraphQLError(e);
        return {
          errors: [
            isTokenLimitError(error) ? tokenLimitError(limits.maxTokens) : withCode(error, 'GRAPHQL_PARSE_FAILED'),
          ],
        };
      }
      const errors = validate(schema, document, rules);
      return errors.length > 0 ? { errors: errors.map((e) => withCode(e, 'GRAPHQL_VALIDATION_FAILED')) } : { document };
    },
  });
  const wss = new WebSocketServer({
    server: opts.server,
    path: opts.path,
    maxPayload: limits.maxBodyBytes,
    verifyClient: ({ req }, done) => {
      if (originAllowed(req, opts.corsOrigins)) return done(true);
      opts.logger.info({ origin: req.headers.origin, transport: 'websocket' }, 'origin refused');
      done(false, 403, 'Forbidden');
    },
  });

  /** A result as sent, and its errors (the request's partial ones too) formatted as on HTTP. */
  const formatResult = (
    result: ExecutionResult,
    args: ExecutionArgs,
  ): { text: string; errors: GraphQLFormattedError[] } => {
    const context = args.contextValue as GatewayContext;
    const raw = [...(result.errors ?? []), ...context.partialErrors];
    if (raw.length === 0) return { text: JSON.stringify(result), errors: [] };
    const errors = raw.map((e) => opts.errors.formatOne(e));
    return { text: JSON.stringify({ ...result, errors }), errors };
  };
  const serialize = (result: ExecutionResult, args: ExecutionArgs): string => formatResult(result, args).text;
  const refused = (errors: readonly GraphQLError[], observation: OperationObservation): OperationOutcome => {
    const formatted = errors.map((e) => opts.errors.formatOne(e));
    observation.answered('error', codesOf(formatted));
    return { kind: 'refused', errors: JSON.stringify(formatted) };
  };
  /** A query's or mutation's result, with what it cost and what is left of the caller's budget. */
  const withRateLimit = (result: ExecutionResult, args: ExecutionArgs): ExecutionResult => {
    const status = (args.contextValue as GatewayContext).rateLimit?.status;
    return status ? { ...result, extensions: { ...result.extensions, rateLimit: rateLimitExtension(status) } } : result;
  };
  const subscribe = createSharedSubscribe({
    callerOf: (args) => (args.contextValue as GatewayContext).caller.id,
    serialize,
  });

  /** The operation's execution arguments, or the errors that refuse it. */
  const prepare = async (
    request: OperationRequest,
    connection: TransportConnection<ConnectionState>,
    observation: OperationObservation,
  ): Promise<ExecutionArgs | GraphQLError[]> => {
    if (connection.operationCount() > opts.maxSubscriptionsPerConnection) {
      return [
        new GraphQLError(
          `This connection already holds ${opts.maxSubscriptionsPerConnection} operations; complete one, or open another connection.`,
          { extensions: { code: ErrorCode.TOO_MANY_SUBSCRIPTIONS } },
        ),
      ];
    }
    const checked = checkedDocuments.get(request.query);
    if ('errors' in checked) return [...checked.errors];
    const { document } = checked;
    const operation = getOperationAST(document, request.operationName);
    if (!operation) {
      return [withCode(new GraphQLError('Unable to identify operation'), 'GRAPHQL_VALIDATION_FAILED')];
    }
    observation.identify(operation.operation, operation.name?.value);
    // Checked before anything is charged or run: execute() would report them without a code, masked as internal errors.
    const variables = getVariableValues(schema, operation.variableDefinitions ?? [], request.variables ?? {}, {
      maxErrors: MAX_VARIABLE_ERRORS,
    });
    if (variables.errors) return variables.errors.map((e) => withCode(e, ErrorCode.BAD_USER_INPUT));
    const { caller, remoteAddress } = connection.state;
    // A subscriber that cannot keep up is cut off with a close code of its own.
    const context = opts.contextFor(caller, { close: (code, reason) => connection.close(code, reason) }, remoteAddress);
    let toRun: DocumentNode;
    try {
      const cost = operationCost(schema, document, request.operationName, request.variables, limits);
      assertCostWithin(cost, limits);
      const operation = { document, operationName: request.operationName, variables: request.variables, cost };
      // Charged here, before anything runs: a subscription once, when it starts.
      toRun =
        opts.rateLimiter && context.rateLimit
          ? await chargeOperation(opts.rateLimiter, context.rateLimit, operation, opts.logger)
          : (dryRunDocument(document, request.operationName, request.variables) ?? document);
    } catch (e) {
      return [asGraphQLError(e)];
    }
    return {
      schema,
      document: toRun,
      operationName: request.operationName,
      variableValues: request.variables,
      contextValue: context,
    };
  };

  const init = async (
    payload: Record<string, unknown> | null,
    request: IncomingMessage,
  ): Promise<InitOutcome<ConnectionState>> => {
    try {
      const caller = await opts.authenticator.authenticate({
        authorization: authorizationOf(payload, request),
        transport: 'websocket',
        remoteAddress: request.socket.remoteAddress,
      });
      // The client's own ID when it sends one (browsers cannot set headers on a WebSocket), told back in the ack.
      const requestId =
        acceptRequestId(payload?.['requestId']) ?? acceptRequestId(request.headers['x-request-id']) ?? newRequestId();
      return {
        kind: 'accepted',
        state: {
          caller,
          remoteAddress: request.socket.remoteAddress,
          requestId,
          carrier: { ...request.headers, ...traceFields(payload) },
        },
        closeAt: opts.authenticator.acceptedUntil(caller),
        ack: { requestId },
      };
    } catch (e) {
      // The close reason is all a browser client gets to see: it says why, as the 401's message does.
      if (e instanceof AuthenticationError) return { kind: 'refused', reason: `Forbidden: ${e.message}` };
      throw e;
    }
  };

  const transport = serveGraphqlTransportWs(wss, {
    init,
    connectionInitTimeoutMs: opts.connectionInitTimeoutMs ?? 5_000,
    keepAliveMs: opts.keepAliveMs ?? 12_000,
    highWaterBytes: opts.highWaterBytes ?? 1024 * 1024,
    onInternalError: (error) => opts.logger.error({ err: error }, 'WebSocket operation failed inside the gateway'),
    run: async (id, request, connection) => {
      const { state } = connection;
      const observation = opts.operations.begin({
        transport: 'websocket',
        requestId: `${state.requestId}:${operationIdPart(id)}`,
        carrier: { ...state.carrier, ...traceFields(request.extensions) },
      });
      observation.callerIs(state.caller.id);
      let outcome: OperationOutcome;
      try {
        outcome = await observation.run(() => runOperation(request, connection, observation));
      } catch (e) {
        observation.answered('error', [ErrorCode.INTERNAL_SERVER_ERROR]);
        observation.finish();
        throw e;
      }
      if (outcome.kind !== 'stream') {
        observation.finish();
        return outcome;
      }
      return { ...outcome, ended: (delivered) => observation.finish({ events: delivered }) };
    },
  });

  /** One operation, from its document to its result or stream, told to `observation` as it goes. */
  async function runOperation(
    request: OperationRequest,
    connection: TransportConnection<ConnectionState>,
    observation: OperationObservation,
  ): Promise<OperationOutcome> {
    // The protocol requires `query` to be a string: a client naming a registered document sends "" with its documentId.
    const resolution = opts.documents.resolve(
      {
        query: request.query,
        documentId: (request as OperationRequest & { documentId?: unknown }).documentId,
        extensions: request.extensions,
        operationName: request.operationName,
      },
      'websocket',
    );
    if (resolution.kind === 'refused') {
      return refused([new GraphQLError(resolution.message, { extensions: { code: resolution.code } })], observation);
    }
    const toRun = resolution.kind === 'run' ? { ...request, query: resolution.query } : request;
    const args = await prepare(toRun, connection, observation);
    if (Array.isArray(args)) return refused(args, observation);
    let result: ExecutionResult;
    if (getOperationAST(args.document, args.operationName)?.operation === 'subscription') {
      // The events of a stream are shared by every subscriber of the operation: none carries one caller's budget.
      const stream = await subscribe(args);
      if ('attach' in stream) {
        observation.subscribed();
        return { kind: 'stream', stream };
      }
      result = stream;
    } else {
      result = await execute(args);
    }
    const { text, errors } = formatResult(withRateLimit(result, args), args);
    observation.answered(outcomeOf(result.data, errors.length), codesOf(errors));
    return { kind: 'result', payload: text };
  }

  return { clientCount: () => transport.clientCount(), stats: () => transport.stats(), close: () => transport.close() };
}

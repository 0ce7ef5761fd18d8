import type { Server as HttpServer, IncomingMessage } from 'node:http';

import {
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  GraphQLError,
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
import { AuthenticationError, type Authenticator } from './authentication.js';
import type { ErrorFormatter } from './format-error.js';
import {
  type InitOutcome,
  type OperationOutcome,
  type OperationRequest,
  type TransportConnection,
  serveGraphqlTransportWs,
} from './graphql-transport-ws.js';
import { originAllowed } from './http.js';
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
}

/** What a connection goes on with once its connection_init is accepted. */
interface ConnectionState {
  caller: Caller;
  /** The upgrade request's source address, kept for the operations' budgets (the socket may be gone by then). */
  remoteAddress: string | undefined;
}

export interface RunningWebSocket {
  /** Closes every socket with 1001 Going Away and stops accepting. */
  close(): Promise<void>;
  clientCount(): number;
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

  /** A result as sent: errors (the request's partial ones too) formatted as on HTTP. */
  const serialize = (result: ExecutionResult, args: ExecutionArgs): string => {
    const context = args.contextValue as GatewayContext;
    const errors = [...(result.errors ?? []), ...context.partialErrors];
    if (errors.length === 0) return JSON.stringify(result);
    return JSON.stringify({ ...result, errors: errors.map((e) => opts.errors.formatOne(e)) });
  };
  const refused = (errors: readonly GraphQLError[]): OperationOutcome => ({
    kind: 'refused',
    errors: JSON.stringify(errors.map((e) => opts.errors.formatOne(e))),
  });
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
  ): Promise<ExecutionArgs | GraphQLError[]> => {
    if (connection.operationCount() > opts.maxSubscriptionsPerConnection) {
      return [
        new GraphQLError(
          `This connection already holds ${opts.maxSubscriptionsPerConnection} operations; complete one, or open another connection.`,
          { extensions: { code: ErrorCode.TOO_MANY_SUBSCRIPTIONS } },
        ),
      ];
    }
    let document: DocumentNode;
    try {
      document = parse(request.query, { maxTokens: limits.maxTokens });
    } catch (e) {
      const error = asGraphQLError(e);
      return [isTokenLimitError(error) ? tokenLimitError(limits.maxTokens) : withCode(error, 'GRAPHQL_PARSE_FAILED')];
    }
    const errors = validate(schema, document, rules);
    if (errors.length > 0) return errors.map((e) => withCode(e, 'GRAPHQL_VALIDATION_FAILED'));
    const operation = getOperationAST(document, request.operationName);
    if (!operation) {
      return [withCode(new GraphQLError('Unable to identify operation'), 'GRAPHQL_VALIDATION_FAILED')];
    }
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
      return {
        kind: 'accepted',
        state: { caller, remoteAddress: request.socket.remoteAddress },
        closeAt: opts.authenticator.acceptedUntil(caller),
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
    run: async (_id, request, connection) => {
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
        return refused([new GraphQLError(resolution.message, { extensions: { code: resolution.code } })]);
      }
      const toRun = resolution.kind === 'run' ? { ...request, query: resolution.query } : request;
      const args = await prepare(toRun, connection);
      if (Array.isArray(args)) return refused(args);
      if (getOperationAST(args.document, args.operationName)?.operation === 'subscription') {
        // The events of a stream are shared by every subscriber of the operation: none carries one caller's budget.
        const stream = await subscribe(args);
        return 'next' in stream
          ? { kind: 'stream', payloads: stream }
          : { kind: 'result', payload: serialize(withRateLimit(stream, args), args) };
      }
      return { kind: 'result', payload: serialize(withRateLimit(await execute(args), args), args) };
    },
  });

  return { clientCount: () => transport.clientCount(), close: () => transport.close() };
}

import type { Server as HttpServer } from 'node:http';

import {
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  GraphQLError,
  type GraphQLSchema,
  NoSchemaIntrospectionCustomRule,
  execute,
  getOperationAST,
  parse,
  specifiedRules,
  validate,
} from 'graphql';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';

import type { Limits } from '../config/schema.js';
import type { GatewayContext } from '../resolvers/context.js';
import { ErrorCode } from '../model/errors.js';
import type { ErrorFormatter } from './format-error.js';
import {
  type OperationOutcome,
  type OperationRequest,
  type TransportConnection,
  serveGraphqlTransportWs,
} from './graphql-transport-ws.js';
import { createSharedSubscribe } from './shared-subscription-execution.js';
import { assertCostWithin, isTokenLimitError, limitRules, operationCost, tokenLimitError } from './limits.js';

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
  contextFor: (connection: GatewayContext['connection']) => GatewayContext;
}

export interface RunningWebSocket {
  /** Closes every socket with 1001 Going Away and stops accepting. */
  close(): Promise<void>;
  clientCount(): number;
}

function asGraphQLError(e: unknown): GraphQLError {
  return e instanceof GraphQLError
    ? e
    : new GraphQLError(e instanceof Error ? e.message : String(e), { originalError: e as Error });
}

/** Gives parse and validation errors the codes Apollo Server gives them on HTTP; our own limit errors keep theirs. */
function withCode(error: GraphQLError, code: 'GRAPHQL_PARSE_FAILED' | 'GRAPHQL_VALIDATION_FAILED'): GraphQLError {
  return new GraphQLError(error.message, {
    nodes: error.nodes,
    source: error.source,
    positions: error.positions,
    originalError: error,
    extensions: { code },
  });
}

/**
 * GraphQL over WebSocket (graphql-transport-ws) on the same port and path as
 * HTTP. Operations pass the same parse, validation, depth/alias/token/cost
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
  const wss = new WebSocketServer({ server: opts.server, path: opts.path, maxPayload: limits.maxBodyBytes });

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
  const subscribe = createSharedSubscribe({
    callerOf: (args) => (args.contextValue as GatewayContext).caller.id,
    serialize,
  });

  /** The operation's execution arguments, or the errors that refuse it. */
  const prepare = (request: OperationRequest, connection: TransportConnection): ExecutionArgs | GraphQLError[] => {
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
    try {
      assertCostWithin(operationCost(schema, document, request.operationName, request.variables, limits), limits);
    } catch (e) {
      return [asGraphQLError(e)];
    }
    if (!getOperationAST(document, request.operationName)) {
      return [withCode(new GraphQLError('Unable to identify operation'), 'GRAPHQL_VALIDATION_FAILED')];
    }
    return {
      schema,
      document,
      operationName: request.operationName,
      variableValues: request.variables,
      // A subscriber that cannot keep up is cut off with a close code of its own.
      contextValue: opts.contextFor({ close: (code, reason) => connection.close(code, reason) }),
    };
  };

  const transport = serveGraphqlTransportWs(wss, {
    connectionInitTimeoutMs: opts.connectionInitTimeoutMs ?? 5_000,
    keepAliveMs: opts.keepAliveMs ?? 12_000,
    highWaterBytes: opts.highWaterBytes ?? 1024 * 1024,
    onInternalError: (error) => opts.logger.error({ err: error }, 'WebSocket operation failed inside the gateway'),
    run: async (_id, request, connection) => {
      const args = prepare(request, connection);
      if (Array.isArray(args)) return refused(args);
      if (getOperationAST(args.document, args.operationName)?.operation === 'subscription') {
        const stream = await subscribe(args);
        return 'next' in stream
          ? { kind: 'stream', payloads: stream }
          : { kind: 'result', payload: serialize(stream, args) };
      }
      return { kind: 'result', payload: serialize(await execute(args), args) };
    },
  });

  return { clientCount: () => transport.clientCount(), close: () => transport.close() };
}

import type { Server as HttpServer } from 'node:http';

import {
  type DocumentNode,
  type ExecutionArgs,
  GraphQLError,
  type GraphQLSchema,
  NoSchemaIntrospectionCustomRule,
  parse,
  specifiedRules,
  validate,
} from 'graphql';

import { useServer } from 'graphql-ws/use/ws';
import { WebSocketServer } from 'ws';

import type { Limits } from '../config/schema.js';
import type { GatewayContext } from '../resolvers/context.js';
import { ErrorCode } from '../model/errors.js';
import type { ErrorFormatter } from './format-error.js';
import { createSharedSubscribe } from './shared-subscription-execution.js';
import { assertCostWithin, isTokenLimitError, limitRules, operationCost, tokenLimitError } from './limits.js';

/** RFC 6455 close code for a server that is going down. */
const GOING_AWAY = 1001;

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
 * graphql-ws on the same port and path as HTTP. Operations pass the same
 * parse, validation, depth/alias/token/cost limits and error masking as on
 * HTTP; a message larger than maxBodyBytes closes the socket (ws's maxPayload).
 */
export function attachWebSocket(opts: WebSocketOptions): RunningWebSocket {
  const { limits, schema } = opts;
  const rules = [
    ...specifiedRules,
    ...limitRules(limits),
    ...(opts.introspection ? [] : [NoSchemaIntrospectionCustomRule]),
  ];
  const wss = new WebSocketServer({ server: opts.server, path: opts.path, maxPayload: limits.maxBodyBytes });

  useServer<Record<string, unknown> | undefined, { gateway?: GatewayContext }>(
    {
      schema,
      subscribe: createSharedSubscribe((args) => (args.contextValue as GatewayContext).caller.id),
      connectionInitWaitTimeout: opts.connectionInitTimeoutMs ?? 5_000,
      onSubscribe: (ctx, _id, payload): ExecutionArgs | readonly GraphQLError[] => {
        // graphql-ws has registered this operation already: it counts itself.
        if (Object.keys(ctx.subscriptions).length > opts.maxSubscriptionsPerConnection) {
          return [
            new GraphQLError(
              `This connection already holds ${opts.maxSubscriptionsPerConnection} operations; complete one, or open another connection.`,
              { extensions: { code: ErrorCode.TOO_MANY_SUBSCRIPTIONS } },
            ),
          ];
        }
        let document: DocumentNode;
        try {
          document = parse(payload.query, { maxTokens: limits.maxTokens });
        } catch (e) {
          const error = asGraphQLError(e);
          return [
            isTokenLimitError(error) ? tokenLimitError(limits.maxTokens) : withCode(error, 'GRAPHQL_PARSE_FAILED'),
          ];
        }
        const errors = validate(schema, document, rules);
        if (errors.length > 0) return errors.map((e) => withCode(e, 'GRAPHQL_VALIDATION_FAILED'));
        try {
          assertCostWithin(operationCost(schema, document, payload.operationName, payload.variables, limits), limits);
        } catch (e) {
          return [asGraphQLError(e)];
        }
        return {
          schema,
          document,
          operationName: payload.operationName,
          variableValues: payload.variables,
          contextValue: opts.contextFor({
            // A subscriber that cannot keep up is cut off with a close code of its own.
            close: (code, reason) => ctx.extra.socket.close(code, reason.slice(0, 120)),
          }),
        };
      },
      onNext: (_ctx, _id, _payload, args, result) => {
        const context = args.contextValue as GatewayContext;
        const errors = [...(result.errors ?? []), ...context.partialErrors];
        if (errors.length === 0) return undefined;
        return { ...result, errors: errors.map((e) => opts.errors.formatOne(e)) };
      },
      onError: (_ctx, _id, _payload, errors) => errors.map((e) => opts.errors.formatOne(e)),
    },
    wss,
    opts.keepAliveMs ?? 12_000,
  );

  return {
    clientCount: () => wss.clients.size,
    close: () =>
      new Promise<void>((resolve) => {
        for (const client of wss.clients) client.close(GOING_AWAY, 'Server shutting down');
        wss.close(() => resolve());
      }),
  };
}

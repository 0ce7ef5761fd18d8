import { ApolloServer, type ApolloServerPlugin, HeaderMap } from '@apollo/server';
import {
  ApolloServerPluginCacheControlDisabled,
  ApolloServerPluginLandingPageDisabled,
} from '@apollo/server/plugin/disabled';
import { type DocumentNode, GraphQLError, type GraphQLSchema, OperationTypeNode, execute } from 'graphql';
import type { Logger } from 'pino';

import type { Limits } from '../config/schema.js';
import { type Operations, codesOf, outcomeOf } from '../observability/operations.js';
import type { GatewayContext } from '../resolvers/context.js';
import type { ErrorFormatter } from './format-error.js';
import { assertCostWithin, limitRules, operationCost } from './limits.js';
import {
  type RateLimiter,
  chargeOperation,
  dryRunDocument,
  rateLimitExtension,
  rateLimitHeaders,
} from './rate-limit.js';

export interface ApolloOptions {
  schema: GraphQLSchema;
  limits: Limits;
  logger: Logger;
  errors: ErrorFormatter;
  introspection: boolean;
  /** Budgets of cost points per caller (`auth.rateLimit`); null when off. */
  rateLimiter: RateLimiter | null;
  /**
   * Apollo's automatic persisted queries (its own cache, filled by clients).
   * Off when trusted documents are configured: the manifest is then the only
   * store of documents, and the HTTP layer has resolved every hash already.
   */
  automaticPersistedQueries: boolean;
  /** Each operation's access line, metrics and span, begun by the HTTP layer and bound to its HTTP request. */
  operations: Operations;
}

/**
 * Apollo Server runs a subscription sent over HTTP as if it were a query:
 * its field is resolved without an event, and the null it gets for a
 * non-null field is answered as an internal error. Subscriptions are served
 * over WebSocket at the same path.
 */
function subscriptionOverHttpError(): GraphQLError {
  return new GraphQLError(
    'Subscriptions are served over WebSocket (the graphql-transport-ws protocol, as graphql-ws speaks it) at this same URL, not over HTTP.',
    { extensions: { code: 'BAD_REQUEST', http: { status: 400 } } },
  );
}

/**
 * Refuses an operation HTTP cannot serve (a subscription), then prices each
 * operation before it runs: refuses it when its estimated cost,
 * with its variables, is over the limit, or over what the caller has left of
 * its budget (429, Retry-After); says what it cost and what is left in
 * `extensions.rateLimit` and GitHub's `x-ratelimit-*` headers. A dry run
 * (`rateLimit(dryRun: true)`) runs only its rateLimit fields.
 */
function costPlugin(
  limits: Limits,
  rateLimiter: RateLimiter | null,
  errors: ErrorFormatter,
  logger: Logger,
): ApolloServerPlugin<GatewayContext> {
  return {
    async requestDidStart() {
      // The document to run instead of the request's, for a dry run.
      let instead: DocumentNode | null = null;
      return {
        async didResolveOperation({ request, document, operation: resolved, schema, contextValue }) {
          // Refused before it is priced: nothing is charged for what cannot run here.
          if (resolved?.operation === OperationTypeNode.SUBSCRIPTION) throw subscriptionOverHttpError();
          const cost = operationCost(schema, document, request.operationName, request.variables, limits);
          assertCostWithin(cost, limits);
          const operation = { document, operationName: request.operationName, variables: request.variables, cost };
          const toRun =
            rateLimiter && contextValue.rateLimit
              ? await chargeOperation(rateLimiter, contextValue.rateLimit, operation, logger)
              : (dryRunDocument(document, request.operationName, request.variables) ?? document);
          if (toRun !== document) instead = toRun;
        },
        async responseForOperation({ request, schema, contextValue, operationName }) {
          if (!instead) return null;
          const result = await execute({
            schema,
            document: instead,
            operationName,
            variableValues: request.variables,
            contextValue,
          });
          return {
            http: { status: undefined, headers: new HeaderMap() },
            body: {
              kind: 'single',
              // Apollo formats only the errors of its own execution; these are formatted as it would.
              singleResult: { ...result, errors: result.errors?.map((e) => errors.formatOne(e)) },
            },
          };
        },
        async willSendResponse({ response, contextValue }) {
          const status = contextValue.rateLimit?.status;
          if (!status) return;
          for (const [name, value] of Object.entries(rateLimitHeaders(status))) response.http.headers.set(name, value);
          if (response.body.kind !== 'single') return;
          const result = response.body.singleResult;
          result.extensions = { ...result.extensions, rateLimit: rateLimitExtension(status) };
        },
      };
    },
  };
}

/** Adds the request's partial errors (platforms that could not answer) to the response. */
function partialErrorsPlugin(errors: ErrorFormatter): ApolloServerPlugin<GatewayContext> {
  return {
    async requestDidStart() {
      return {
        async willSendResponse({ response, contextValue }) {
          if (response.body.kind !== 'single' || contextValue.partialErrors.length === 0) return;
          const result = response.body.singleResult;
          result.errors = [...(result.errors ?? []), ...contextValue.partialErrors.map((e) => errors.formatOne(e))];
        },
      };
    },
  };
}

/**
 * Says in `extensions.directReads` which platforms were read directly in
 * this request (their live inventory could not answer), and why.
 */
function directReadsPlugin(): ApolloServerPlugin<GatewayContext> {
  return {
    async requestDidStart() {
      return {
        async willSendResponse({ response, contextValue }) {
          if (response.body.kind !== 'single' || contextValue.directReads.size === 0) return;
          const result = response.body.singleResult;
          result.extensions = {
            ...result.extensions,
            directReads: [...contextValue.directReads].map(([platformId, reason]) => ({ platformId, reason })),
          };
        },
      };
    },
  };
}

/**
 * Tells each operation's observation what ran and how it ended: its type
 * and name once validated, its outcome and the codes of the errors sent.
 * Last of the plugins, so that it sees the errors and extensions the others add.
 */
function observationPlugin(operations: Operations): ApolloServerPlugin<GatewayContext> {
  return {
    async requestDidStart({ request }) {
      const observation = request.http && operations.of(request.http);
      if (!observation) return;
      return {
        async willSendResponse({ response, operation }) {
          if (operation) observation.identify(operation.operation, operation.name?.value);
          const result = response.body.kind === 'single' ? response.body.singleResult : response.body.initialResult;
          observation.answered(outcomeOf(result.data, result.errors?.length ?? 0), codesOf(result.errors));
        },
      };
    },
  };
}

export function createApollo(opts: ApolloOptions): ApolloServer<GatewayContext> {
  const { logger, limits } = opts;
  return new ApolloServer<GatewayContext>({
    schema: opts.schema,
    introspection: opts.introspection,
    includeStacktraceInErrorResponses: false,
    // Said explicitly although it is Apollo's default: a GET, or a POST with a type a plain HTML form or
    // <img> can send (text/plain, form encodings), runs only with a header that forces a CORS preflight
    // (apollo-require-preflight, x-apollo-operation-name, or a JSON content-type).
    csrfPrevention: true,
    persistedQueries: opts.automaticPersistedQueries ? undefined : false,
    // The gateway drains and stops on SIGTERM itself; Apollo's own handler
    // would stop it first and send the signal again (seen as a second one).
    stopOnTerminationSignals: false,
    parseOptions: { maxTokens: limits.maxTokens },
    validationRules: limitRules(limits),
    formatError: (formatted, error) => opts.errors.format(formatted, error),
    // The explorer is served by the HTTP layer from local files, not Apollo's CDN page.
    plugins: [
      ApolloServerPluginLandingPageDisabled(),
      // Apollo's HTTP cache hints are never used here (every answer is live), and the plugin wraps every field's resolver.
      ApolloServerPluginCacheControlDisabled(),
      costPlugin(limits, opts.rateLimiter, opts.errors, logger),
      partialErrorsPlugin(opts.errors),
      directReadsPlugin(),
      observationPlugin(opts.operations),
    ],
    logger: {
      debug: (m) => logger.debug(m),
      info: (m) => logger.info(m),
      warn: (m) => logger.warn(m),
      error: (m) => logger.error(m),
    },
  });
}

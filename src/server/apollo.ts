import { ApolloServer, type ApolloServerPlugin } from '@apollo/server';
import {
  ApolloServerPluginCacheControlDisabled,
  ApolloServerPluginLandingPageDisabled,
} from '@apollo/server/plugin/disabled';
import type { GraphQLSchema } from 'graphql';
import type { Logger } from 'pino';

import type { Limits } from '../config/schema.js';
import type { GatewayContext } from '../resolvers/context.js';
import type { ErrorFormatter } from './format-error.js';
import { assertCostWithin, limitRules, operationCost } from './limits.js';

export interface ApolloOptions {
  schema: GraphQLSchema;
  limits: Limits;
  logger: Logger;
  errors: ErrorFormatter;
  introspection: boolean;
}

/** Refuses operations whose estimated cost, with their variables, is over the limit. */
function costPlugin(limits: Limits): ApolloServerPlugin<GatewayContext> {
  return {
    async requestDidStart() {
      return {
        async didResolveOperation({ request, document, schema }) {
          assertCostWithin(operationCost(schema, document, request.operationName, request.variables, limits), limits);
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

export function createApollo(opts: ApolloOptions): ApolloServer<GatewayContext> {
  const { logger, limits } = opts;
  return new ApolloServer<GatewayContext>({
    schema: opts.schema,
    introspection: opts.introspection,
    includeStacktraceInErrorResponses: false,
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
      costPlugin(limits),
      partialErrorsPlugin(opts.errors),
      directReadsPlugin(),
    ],
    logger: {
      debug: (m) => logger.debug(m),
      info: (m) => logger.info(m),
      warn: (m) => logger.warn(m),
      error: (m) => logger.error(m),
    },
  });
}

import type { QueryResolvers } from '../generated/graphql.js';

export const rateLimitQueries: Pick<QueryResolvers, 'rateLimit'> = {
  // The charge was made before the operation ran (a dry run only priced it); this reads what it left.
  rateLimit: (_root, _args, ctx) => ctx.rateLimit?.status ?? null,
};

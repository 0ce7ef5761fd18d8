import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { buildSubgraphSchema } from '@apollo/subgraph';
import { makeExecutableSchema } from '@graphql-tools/schema';
import {
  type ConstDirectiveNode,
  type DocumentNode,
  type GraphQLSchema,
  Kind,
  type ObjectTypeDefinitionNode,
  concatAST,
  parse,
  visit,
} from 'graphql';

import { entityResolvers, isEntityKind } from '../resolvers/federation.js';
import { resolvers } from '../resolvers/index.js';

export const SCHEMA_DIR = fileURLToPath(new URL('../../schema/', import.meta.url));

/** The schema files, in name order: the contract. */
export function readTypeDefs(dir = SCHEMA_DIR): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.graphql'))
    .sort()
    .map((f) => readFileSync(`${dir}${f}`, 'utf8'));
}

export interface GatewaySchemaOptions {
  /**
   * Serve the graph as an Apollo Federation v2 subgraph as well: every type
   * implementing Node becomes an entity keyed by its `id`, and the schema
   * gains `_entities` and `_service` for a router to compose and query it.
   * Off, the schema is exactly the published contract (schema.graphql).
   * @default false
   */
  federation?: boolean;
}

/**
 * The federation spec version the subgraph links: 2.0 has all it uses
 * (`@key`, `@shareable`), and the lowest version shuts out no router or
 * gateway a company may still run.
 */
export const FEDERATION_SPEC_URL = 'https://specs.apollo.dev/federation/v2.0';

/**
 * Value types a company supergraph commonly defines too: with @shareable on
 * both sides they compose instead of failing as a field owned twice.
 * PageInfo is Relay's, and every Relay-style subgraph has its own.
 */
const SHAREABLE_TYPES: ReadonlySet<string> = new Set(['PageInfo']);

const resolverOptions = {
  resolvers: resolvers as Parameters<typeof makeExecutableSchema>[0]['resolvers'],
  inheritResolversFromInterfaces: false,
  resolverValidationOptions: { requireResolversToMatchSchema: 'error' as const },
};

export function buildGatewaySchema(options: GatewaySchemaOptions = {}): GraphQLSchema {
  if (!options.federation) return makeExecutableSchema({ typeDefs: readTypeDefs(), ...resolverOptions });
  // buildSubgraphSchema understands @link, @key and `extend type`, and wires
  // `_entities` to each entity's __resolveReference; makeExecutableSchema
  // then attaches the gateway's resolvers exactly as in the plain schema,
  // with the same check that each one names a field that exists.
  const subgraph = buildSubgraphSchema({
    typeDefs: federatedTypeDefs(readTypeDefs()),
    resolvers: entityResolvers,
  });
  const schema = makeExecutableSchema({ typeDefs: subgraph, ...resolverOptions });
  declareEntitiesListSize(schema);
  return schema;
}

/**
 * The contract with what a subgraph adds: the federation link, `@key(fields:
 * "id")` on every object type that implements Node, and `@shareable` on the
 * common value types. Derived from the files rather than kept beside them,
 * so a new Node type is an entity from its first commit.
 */
function federatedTypeDefs(typeDefs: readonly string[]): DocumentNode {
  const document = concatAST(typeDefs.map((sdl) => parse(sdl)));
  const keyed: string[] = [];
  const withKeys = visit(document, {
    ObjectTypeDefinition(node): ObjectTypeDefinitionNode | undefined {
      const added: ConstDirectiveNode[] = [];
      if (node.interfaces?.some((i) => i.name.value === 'Node')) {
        keyed.push(node.name.value);
        added.push(directive('key', { fields: 'id' }));
      }
      if (SHAREABLE_TYPES.has(node.name.value)) added.push(directive('shareable'));
      return added.length > 0 ? { ...node, directives: [...(node.directives ?? []), ...added] } : undefined;
    },
  });
  // An entity without a way back from its ID could be referenced by another
  // subgraph and never resolved: refuse to build rather than fail per query.
  const unresolvable = keyed.filter((name) => !isEntityKind(name));
  if (unresolvable.length > 0) {
    throw new Error(`Node types without an entity resolver (a NodeKind): ${unresolvable.join(', ')}`);
  }
  const link = parse(`extend schema @link(url: "${FEDERATION_SPEC_URL}", import: ["@key", "@shareable"])`);
  return concatAST([link, withKeys]);
}

function directive(name: string, args: Record<string, string> = {}): ConstDirectiveNode {
  return {
    kind: Kind.DIRECTIVE,
    name: { kind: Kind.NAME, value: name },
    arguments: Object.entries(args).map(([arg, value]) => ({
      kind: Kind.ARGUMENT,
      name: { kind: Kind.NAME, value: arg },
      value: { kind: Kind.STRING, value },
    })),
  };
}

/**
 * `_entities` returns one object per representation, like `nodes(ids:)`;
 * declared as such, the query cost counts a router's batch of 500 entities
 * as 500, not as the assumed length of an unbounded list. @apollo/subgraph
 * defines the field, so the declaration goes onto the AST node the cost
 * reads (listSizeOf in limits.ts).
 */
function declareEntitiesListSize(schema: GraphQLSchema): void {
  const entities = schema.getQueryType()?.getFields()['_entities'];
  if (!entities?.astNode) throw new Error('the subgraph schema has no _entities field to declare');
  entities.astNode = {
    ...entities.astNode,
    directives: [...(entities.astNode.directives ?? []), directive('listSize', { slicingArgument: 'representations' })],
  };
}

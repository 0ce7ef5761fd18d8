import { ErrorCode, GatewayError } from '../model/errors.js';
import { NODE_KINDS, type NodeKind, decodeIdOf } from '../model/ids.js';
import type { GatewayContext } from './context.js';
import { loadNode } from './node.js';

/**
 * What a supergraph router sends to `_entities` for one object: its type and
 * its key. `_Any` lets a caller send anything, so every field is unknown
 * until checked.
 */
export interface EntityRepresentation {
  readonly __typename?: unknown;
  readonly id?: unknown;
}

export type ReferenceResolver = (
  representation: EntityRepresentation,
  ctx: GatewayContext,
) => ReturnType<typeof loadNode>;

function referenceResolver(kind: NodeKind): ReferenceResolver {
  // Async, so that a bad representation fails its own entry of a router's
  // batch (null with its error) rather than the whole `_entities` field: the
  // IDs come from another subgraph's data, where one stale ID is likely.
  return async (representation, ctx) => {
    const { id } = representation;
    if (typeof id !== 'string') {
      throw new GatewayError(ErrorCode.INVALID_ID, `A ${kind} representation needs its "id" (a global ID string).`);
    }
    // The same path as node(id:), so an entity the caller may not see (its
    // roles, its tenants) is null here as it is there, and a malformed or
    // foreign ID is INVALID_ID in both.
    return loadNode(ctx, decodeIdOf(id, kind));
  };
}

/**
 * `__resolveReference` of every entity type: every kind of object with a
 * global ID is keyed by it (`@key(fields: "id")`), so another subgraph may
 * hold a reference to any of them and add fields to it.
 */
export const entityResolvers: Readonly<Record<NodeKind, { __resolveReference: ReferenceResolver }>> =
  Object.fromEntries(NODE_KINDS.map((kind) => [kind, { __resolveReference: referenceResolver(kind) }])) as Record<
    NodeKind,
    { __resolveReference: ReferenceResolver }
  >;

/** Whether a type name is one `entityResolvers` can resolve (the schema keys those and no other). */
export function isEntityKind(typeName: string): typeName is NodeKind {
  return (NODE_KINDS as readonly string[]).includes(typeName);
}

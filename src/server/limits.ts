import {
  type ASTVisitor,
  type DocumentNode,
  type FieldNode,
  type FragmentDefinitionNode,
  type GraphQLCompositeType,
  type GraphQLError,
  type GraphQLField,
  type GraphQLSchema,
  Kind,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValidationContext,
  type ValidationRule,
  getNamedType,
  isCompositeType,
  isListType,
  isNonNullType,
  isObjectType,
  isInterfaceType,
  valueFromASTUntyped,
} from 'graphql';

import type { Limits } from '../config/schema.js';
import { ErrorCode, GatewayError } from '../model/errors.js';

// Guards in the spirit of graphql-armor: a document is refused before any
// resolver runs when it is too deep, too wide, too long or too costly. The
// same rules serve HTTP (Apollo Server) and WebSocket (graphql-ws), where
// Apollo Server's own checks do not reach.

/** Nesting deeper than `maxDepth` selections; introspection (`__schema`, `__type`) is not counted. */
export function depthLimitRule(maxDepth: number): ValidationRule {
  return (context: ValidationContext): ASTVisitor => {
    const fragments = fragmentMap(context.getDocument());
    const depthOf = (set: SelectionSetNode, seen: Set<string>): number => {
      let deepest = 0;
      for (const sel of set.selections) {
        if (sel.kind === Kind.FIELD) {
          if (sel.name.value.startsWith('__')) continue;
          deepest = Math.max(deepest, sel.selectionSet ? 1 + depthOf(sel.selectionSet, seen) : 1);
        } else if (sel.kind === Kind.INLINE_FRAGMENT) {
          deepest = Math.max(deepest, depthOf(sel.selectionSet, seen));
        } else {
          const name = sel.name.value;
          const frag = fragments.get(name);
          if (!frag || seen.has(name)) continue; // cycles are NoFragmentCyclesRule's to report
          deepest = Math.max(deepest, depthOf(frag.selectionSet, new Set([...seen, name])));
        }
      }
      return deepest;
    };
    return {
      OperationDefinition(op) {
        const depth = depthOf(op.selectionSet, new Set());
        if (depth > maxDepth) {
          context.reportError(
            new GatewayError(ErrorCode.QUERY_TOO_DEEP, `Query depth ${depth} exceeds the maximum of ${maxDepth}.`, {
              depth,
              maxDepth,
            }),
          );
        }
      },
    };
  };
}

function countRule(
  kind: Kind.FIELD | Kind.DIRECTIVE,
  max: number,
  make: (count: number) => GraphQLError,
  counts: (node: { kind: string; alias?: unknown }) => boolean,
): ValidationRule {
  return (context: ValidationContext): ASTVisitor => {
    let count = 0;
    let reported = false;
    return {
      [kind](node: { kind: string; alias?: unknown }) {
        if (!counts(node)) return;
        count += 1;
        if (count > max && !reported) {
          reported = true;
          context.reportError(make(count));
        }
      },
    };
  };
}

export function aliasLimitRule(maxAliases: number): ValidationRule {
  return countRule(
    Kind.FIELD,
    maxAliases,
    () =>
      new GatewayError(ErrorCode.TOO_MANY_ALIASES, `The document uses more than ${maxAliases} aliases.`, {
        maxAliases,
      }),
    (node) => node.alias !== undefined,
  );
}

export function directiveLimitRule(maxDirectives: number): ValidationRule {
  return countRule(
    Kind.DIRECTIVE,
    maxDirectives,
    () =>
      new GatewayError(ErrorCode.TOO_MANY_DIRECTIVES, `The document uses more than ${maxDirectives} directives.`, {
        maxDirectives,
      }),
    () => true,
  );
}

export function limitRules(limits: Limits): ValidationRule[] {
  return [depthLimitRule(limits.maxDepth), aliasLimitRule(limits.maxAliases), directiveLimitRule(limits.maxDirectives)];
}

/**
 * graphql-js stops parsing past `maxTokens` with a plain syntax error; this
 * recognizes it so it can carry its own code.
 */
export function isTokenLimitError(error: { message: string }): boolean {
  // graphql-js words it "more that N tokens" (sic); "than" is accepted too should it be fixed.
  return /Document contains more th(?:at|an) \d+ tokens/.test(error.message);
}

export function tokenLimitError(maxTokens: number): GatewayError {
  return new GatewayError(ErrorCode.TOO_MANY_TOKENS, `The document has more than ${maxTokens} tokens.`, { maxTokens });
}

/**
 * Cost of a plain list field whose length the query does not bound (disks,
 * snapshots, ...). Edges and nodes of a connection are bounded by `first`.
 */
export const ASSUMED_LIST_LENGTH = 10;

/** A list field's `@listSize` (see schema/base.graphql), read once per field. */
const listSizes = new WeakMap<object, { assumedSize?: number; slicingArgument?: string } | null>();

export function listSizeOf(
  field: GraphQLField<unknown, unknown>,
): { assumedSize?: number; slicingArgument?: string } | null {
  let size = listSizes.get(field);
  if (size === undefined) {
    const directive = field.astNode?.directives?.find((d) => d.name.value === 'listSize');
    size = directive
      ? Object.fromEntries(
          (directive.arguments ?? []).map((a) => [a.name.value, valueFromASTUntyped(a.value)] as const),
        )
      : null;
    listSizes.set(field, size);
  }
  return size;
}

/**
 * Estimated cost of an operation: a leaf costs 1, an object 2 plus its
 * selections, and a list multiplies its selections by the page size it asks
 * for (`first`, else the default page size) or by ASSUMED_LIST_LENGTH.
 * Variables are known here, so `first: $n` counts at its real value.
 */
export function operationCost(
  schema: GraphQLSchema,
  document: DocumentNode,
  operationName: string | null | undefined,
  variables: Record<string, unknown> | null | undefined,
  limits: Limits,
): number {
  const fragments = fragmentMap(document);
  const op = document.definitions.find(
    (d): d is OperationDefinitionNode =>
      d.kind === Kind.OPERATION_DEFINITION && (!operationName || d.name?.value === operationName),
  );
  if (!op) return 0;
  const root = schema.getRootType(op.operation);
  if (!root) return 0;

  // The points a `metrics(from:, to:, resolutionSeconds:)` series can have: none without a range.
  let seriesPoints = 0;
  const pointsOf = (node: FieldNode): number => {
    const arg = (name: string) => {
      const a = node.arguments?.find((x) => x.name.value === name);
      return a ? valueFromASTUntyped(a.value, variables ?? undefined) : undefined;
    };
    const from = Date.parse(String(arg('from')));
    if (Number.isNaN(from)) return 0;
    const toArg = arg('to');
    const to = toArg === undefined || toArg === null ? Date.now() : Date.parse(String(toArg));
    const resolution = Number(arg('resolutionSeconds'));
    const range = Math.max(0, (Number.isNaN(to) ? Date.now() : to) - from) / 1000;
    const points = resolution > 0 ? Math.floor(range / resolution) + 1 : limits.maxSeriesPoints;
    return Math.min(points, limits.maxSeriesPoints);
  };

  const multiplier = (parent: GraphQLCompositeType, field: GraphQLField<unknown, unknown>, node: FieldNode): number => {
    if (parent.name === 'MetricSeries' && field.name === 'points') return seriesPoints;
    // A connection's `first` already counted its edges and nodes.
    if (parent.name.endsWith('Connection') && (field.name === 'edges' || field.name === 'nodes')) return 1;
    // A page is `first` items forward or `last` backward.
    const sizeArg = node.arguments?.find((a) => a.name.value === 'first' || a.name.value === 'last');
    if (sizeArg) {
      const v = valueFromASTUntyped(sizeArg.value, variables ?? undefined);
      if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return Math.min(v, limits.maxPageSize);
      return limits.maxPageSize;
    }
    if (field.args.some((a) => a.name === 'first')) return limits.defaultPageSize;
    let t = field.type;
    if (isNonNullType(t)) t = t.ofType;
    if (!isListType(t)) return 1;
    const declared = listSizeOf(field);
    if (declared?.slicingArgument) {
      const arg = node.arguments?.find((a) => a.name.value === declared.slicingArgument);
      const v = arg ? valueFromASTUntyped(arg.value, variables ?? undefined) : undefined;
      return Array.isArray(v) ? v.length : 1;
    }
    return declared?.assumedSize ?? ASSUMED_LIST_LENGTH;
  };

  const costOf = (set: SelectionSetNode, parent: GraphQLCompositeType, seen: ReadonlySet<string>): number => {
    let total = 0;
    for (const sel of set.selections) {
      if (sel.kind === Kind.FIELD) {
        if (sel.name.value.startsWith('__')) continue;
        const fields = isObjectType(parent) || isInterfaceType(parent) ? parent.getFields() : undefined;
        const field = fields?.[sel.name.value];
        if (!field) continue;
        const named = getNamedType(field.type);
        if (!sel.selectionSet || !isCompositeType(named)) {
          total += 1;
        } else {
          if (named.name === 'MetricSeries') seriesPoints = pointsOf(sel);
          total += 2 + multiplier(parent, field, sel) * costOf(sel.selectionSet, named, seen);
        }
      } else if (sel.kind === Kind.INLINE_FRAGMENT) {
        const cond = sel.typeCondition ? schema.getType(sel.typeCondition.name.value) : parent;
        total += costOf(sel.selectionSet, cond && isCompositeType(cond) ? cond : parent, seen);
      } else {
        const frag = fragments.get(sel.name.value);
        if (!frag || seen.has(frag.name.value)) continue;
        const cond = schema.getType(frag.typeCondition.name.value);
        total += costOf(
          frag.selectionSet,
          cond && isCompositeType(cond) ? cond : parent,
          new Set([...seen, frag.name.value]),
        );
      }
    }
    return total;
  };
  return costOf(op.selectionSet, root, new Set());
}

export function assertCostWithin(cost: number, limits: Limits): void {
  if (cost > limits.maxCost) {
    throw new GatewayError(
      ErrorCode.QUERY_TOO_COSTLY,
      `The estimated cost ${cost} exceeds the maximum of ${limits.maxCost}; ask for smaller pages or fewer fields.`,
      // Apollo Server answers 400 for this rather than 500; the key is not sent to clients.
      { cost, maxCost: limits.maxCost, http: { status: 400 } },
    );
  }
}

function fragmentMap(document: DocumentNode): Map<string, FragmentDefinitionNode> {
  return new Map(
    document.definitions
      .filter((d): d is FragmentDefinitionNode => d.kind === Kind.FRAGMENT_DEFINITION)
      .map((d) => [d.name.value, d]),
  );
}

import type { Limits } from '../config/schema.js';
import { ErrorCode, GatewayError } from '../model/errors.js';

export type SortValue = string | number;
export type Direction = 'ASC' | 'DESC';

export interface PageArgs {
  first?: number | null;
  after?: string | null;
  /** Backward: the last items before `before` (or of the whole order). */
  last?: number | null;
  before?: string | null;
}

export interface Page<T> {
  edges: { cursor: string; node: T }[];
  nodes: T[];
  pageInfo: { hasNextPage: boolean; hasPreviousPage: boolean; startCursor: string | null; endCursor: string | null };
  totalCount: number;
}

/** How items are ordered: a sort value per item, a direction, and the ID as tie-breaker. */
export interface Ordering<T> {
  /** Names the ordering inside cursors, so a cursor is not reused under another order. */
  name: string;
  direction: Direction;
  value: (item: T) => SortValue;
  id: (item: T) => string;
}

// Natural order ("vm-2" before "vm-10"), case-insensitive, the same on every run.
const collator = new Intl.Collator('en', { numeric: true, sensitivity: 'base' });

function compareValues(a: SortValue, b: SortValue): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return collator.compare(String(a), String(b)) || (String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0);
}

function compareKeys(a: [SortValue, string], b: [SortValue, string], direction: Direction): number {
  const byValue = compareValues(a[0], b[0]) * (direction === 'ASC' ? 1 : -1);
  return byValue || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);
}

interface CursorBody {
  o: string;
  v: SortValue;
  id: string;
}

function encodeCursor(body: CursorBody): string {
  return Buffer.from(JSON.stringify(body), 'utf8').toString('base64url');
}

function decodeCursor(cursor: string, ordering: string): CursorBody {
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    body = undefined;
  }
  const b = body as Partial<CursorBody> | undefined;
  if (
    !b ||
    typeof b.o !== 'string' ||
    typeof b.id !== 'string' ||
    (typeof b.v !== 'string' && typeof b.v !== 'number')
  ) {
    throw new GatewayError(ErrorCode.INVALID_CURSOR, `"${cursor.slice(0, 80)}" is not a valid cursor.`);
  }
  if (b.o !== ordering) {
    throw new GatewayError(
      ErrorCode.INVALID_CURSOR,
      'This cursor was made for a different orderBy; start again without "after".',
    );
  }
  return b as CursorBody;
}

/** Checks `first` (or `last`) against the configured bounds and applies the default. */
export function pageSize(
  size: number | null | undefined,
  limits: Limits,
  argument: 'first' | 'last' = 'first',
): number {
  if (size === null || size === undefined) return limits.defaultPageSize;
  if (!Number.isInteger(size) || size < 0 || size > limits.maxPageSize) {
    throw new GatewayError(
      ErrorCode.INVALID_PAGINATION,
      `"${argument}" must be between 0 and ${limits.maxPageSize}; got ${size}.`,
      { argument, max: limits.maxPageSize },
    );
  }
  return size;
}

interface Keyed<T> {
  item: T;
  key: [SortValue, string];
}

/**
 * Items in an ordering, with their keys. A listing the live inventory keeps
 * (the same array until something changes) is sorted once per ordering, not
 * once per page; a list made for one request is simply sorted.
 */
const sortedLists = new WeakMap<readonly unknown[], Map<string, Keyed<unknown>[]>>();

function sortedOnce<T>(items: readonly T[], ordering: Ordering<T>): Keyed<T>[] {
  const name = `${ordering.name}:${ordering.direction}`;
  let byOrdering = sortedLists.get(items);
  const kept = byOrdering?.get(name) as Keyed<T>[] | undefined;
  if (kept) return kept;
  const keyed = items.map((item): Keyed<T> => ({ item, key: [ordering.value(item), ordering.id(item)] }));
  keyed.sort((a, b) => compareKeys(a.key, b.key, ordering.direction));
  if (!byOrdering) sortedLists.set(items, (byOrdering = new Map()));
  byOrdering.set(name, keyed as Keyed<unknown>[]);
  return keyed;
}

/**
 * Sorts items and cuts one page. Cursors hold the last item's sort value and
 * ID (keyset pagination), so a page does not skip or repeat items when
 * others are added or removed before it.
 */
export function paginate<T>(items: readonly T[], args: PageArgs, ordering: Ordering<T>, limits: Limits): Page<T> {
  const backward = args.last !== null && args.last !== undefined;
  if (backward && args.first !== null && args.first !== undefined) {
    throw new GatewayError(ErrorCode.INVALID_PAGINATION, 'Give "first" or "last", not both.', { argument: 'last' });
  }
  const size = backward ? pageSize(args.last, limits, 'last') : pageSize(args.first, limits);
  const keyed = sortedOnce(items, ordering);
  // The window the cursors leave: after `after`, before `before`.
  const from = args.after ? indexOf(keyed, decodeCursor(args.after, ordering.name), ordering.direction, 'after') : 0;
  const to = args.before
    ? indexOf(keyed, decodeCursor(args.before, ordering.name), ordering.direction, 'before')
    : keyed.length;
  const start = backward ? Math.max(from, to - size) : from;
  const end = backward ? to : Math.min(to, from + size);
  const slice = start < end ? keyed.slice(start, end) : [];
  const edges = slice.map(({ item, key }) => ({
    cursor: encodeCursor({ o: ordering.name, v: key[0], id: key[1] }),
    node: item,
  }));
  return {
    edges,
    nodes: edges.map((e) => e.node),
    pageInfo: {
      // What lies beyond the page in the whole order (which Relay's spec allows), either way of paging.
      hasNextPage: Math.max(start, end) < keyed.length,
      hasPreviousPage: Math.min(start, end) > 0,
      startCursor: edges[0]?.cursor ?? null,
      endCursor: edges[edges.length - 1]?.cursor ?? null,
    },
    totalCount: keyed.length,
  };
}

/** The first index whose key sorts after the cursor's (`after`), or not before it (`before`). */
function indexOf<T>(keyed: readonly Keyed<T>[], c: CursorBody, direction: Direction, side: 'after' | 'before'): number {
  const at: [SortValue, string] = [c.v, c.id];
  let lo = 0;
  let hi = keyed.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const order = compareKeys((keyed[mid] as Keyed<T>).key, at, direction);
    if (side === 'after' ? order <= 0 : order < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

import type { Limits } from '../config/schema.js';
import { ErrorCode, GatewayError } from '../model/errors.js';

export type SortValue = string | number;
export type Direction = 'ASC' | 'DESC';

export interface PageArgs {
  first?: number | null;
  after?: string | null;
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

/** Checks `first` against the configured bounds and applies the default. */
export function pageSize(first: number | null | undefined, limits: Limits): number {
  if (first === null || first === undefined) return limits.defaultPageSize;
  if (!Number.isInteger(first) || first < 0 || first > limits.maxPageSize) {
    throw new GatewayError(
      ErrorCode.INVALID_PAGINATION,
      `"first" must be between 0 and ${limits.maxPageSize}; got ${first}.`,
      { argument: 'first', max: limits.maxPageSize },
    );
  }
  return first;
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
  const first = pageSize(args.first, limits);
  const keyed = sortedOnce(items, ordering);

  let start = 0;
  if (args.after) {
    const c = decodeCursor(args.after, ordering.name);
    const after: [SortValue, string] = [c.v, c.id];
    // First index whose key sorts after the cursor.
    let lo = 0;
    let hi = keyed.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareKeys((keyed[mid] as Keyed<T>).key, after, ordering.direction) <= 0) lo = mid + 1;
      else hi = mid;
    }
    start = lo;
  }
  const slice = keyed.slice(start, start + first);
  const edges = slice.map(({ item, key }) => ({
    cursor: encodeCursor({ o: ordering.name, v: key[0], id: key[1] }),
    node: item,
  }));
  return {
    edges,
    nodes: edges.map((e) => e.node),
    pageInfo: {
      hasNextPage: start + first < keyed.length,
      hasPreviousPage: start > 0,
      startCursor: edges[0]?.cursor ?? null,
      endCursor: edges[edges.length - 1]?.cursor ?? null,
    },
    totalCount: keyed.length,
  };
}

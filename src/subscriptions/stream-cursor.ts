import { ENTRY_ID, compareEntryIds } from '../inventory/replication/platform-stream.js';
import { ErrorCode, GatewayError } from '../model/errors.js';
import { PLATFORM_ID_PATTERN } from '../model/ids.js';

/**
 * How far a client has read one platform's stream: every event of the
 * entries before `id`, and of entry `id` those up to `index` (all of them
 * when `index` is Infinity).
 */
export interface StreamPosition {
  id: string;
  index: number;
}

/** A cursor over several platforms' streams: one position each. */
export type StreamCursor = Map<string, StreamPosition>;

const PREFIX = 's1.';

/** Whether event `index` of entry `id` comes after a position. */
export function isAfter(id: string, index: number, position: StreamPosition | undefined): boolean {
  if (!position) return true;
  const c = compareEntryIds(id, position.id);
  return c > 0 || (c === 0 && index > position.index);
}

/**
 * The cursor is every platform's position, so that a client may resume on
 * any instance: each instance reads the same streams (entry IDs are Redis's),
 * whatever order it interleaves them in.
 */
export function encodeStreamCursor(positions: Iterable<[string, StreamPosition]>): string {
  const parts: string[] = [];
  for (const [platformId, p] of positions) {
    parts.push(Number.isFinite(p.index) ? `${platformId}=${p.id}.${p.index}` : `${platformId}=${p.id}`);
  }
  return PREFIX + Buffer.from(parts.join(',')).toString('base64url');
}

/** The positions a cursor names; null for a cursor of the in-memory log; throws INVALID_CURSOR on garbage. */
export function decodeStreamCursor(cursor: string): StreamCursor | null {
  const invalid = () => new GatewayError(ErrorCode.INVALID_CURSOR, `"${cursor.slice(0, 40)}" is not an event cursor.`);
  if (!cursor.startsWith(PREFIX)) {
    // A cursor of a single instance (epoch.sequence): well formed, but of another log.
    if (/^[A-Za-z0-9_-]{8}\.[0-9a-z]{1,11}$/.test(cursor)) return null;
    throw invalid();
  }
  const body = cursor.slice(PREFIX.length);
  if (body.length > 16_384 || !/^[A-Za-z0-9_-]*$/.test(body)) throw invalid();
  const positions: StreamCursor = new Map();
  const text = Buffer.from(body, 'base64url').toString();
  for (const part of text === '' ? [] : text.split(',')) {
    const match = /^([^=]+)=(\d+-\d+)(?:\.(\d{1,9}))?$/.exec(part);
    if (!match || !PLATFORM_ID_PATTERN.test(match[1] as string) || !ENTRY_ID.test(match[2] as string)) throw invalid();
    positions.set(match[1] as string, {
      id: match[2] as string,
      index: match[3] === undefined ? Number.POSITIVE_INFINITY : Number(match[3]),
    });
  }
  return positions;
}

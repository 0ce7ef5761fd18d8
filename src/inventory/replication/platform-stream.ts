import type { InventoryChange, InventoryState } from '../../datasources/watch.js';
import type { GatewayEvent } from '../../model/events.js';
import { type RedisClient, runScript } from '../../state/redis.js';
import { decodeTagged, encodeTagged } from '../../state/tagged-json.js';
import type { MirrorState } from '../platform-mirror.js';

/** One entry of a platform's event stream. */
export interface StreamEntry {
  v: 1;
  /** The instance that wrote it. */
  by: string;
  /** The lease it was written under (holder entries only). */
  lease?: string;
  /** Objects the lease holder's mirror changed: every other instance applies them to its own. */
  changes?: InventoryChange[];
  /** The holder's mirror state, when it changed. */
  status?: MirrorState;
  /**
   * Objects an instance read after a mutation it ran: the holder reads them again and tells what
   * changed. Whole, not just named, so that a holder of an earlier version, which applies them as
   * they are, still understands the entry while instances are upgraded one by one.
   */
  observed?: InventoryChange[];
  /** What subscribers receive, in order. */
  events: GatewayEvent[];
  /** A gateway task as it is now (stored form), with its TASK event. */
  task?: unknown;
}

/** What the holder keeps in Redis for instances that start: its whole mirror and the stream entry it reflects. */
export interface StreamSnapshot {
  cursor: string;
  state: InventoryState;
  status: MirrorState;
  by: string;
}

export interface ReadEntry {
  id: string;
  entry: StreamEntry;
}

/** Raised when a write needs the lease and another instance holds it now. */
export class FencedError extends Error {
  constructor(platformId: string) {
    super(`another gateway instance holds the lease of platform ${platformId} now`);
    this.name = 'FencedError';
  }
}

// A lease is `<instance>#<fence>`: the fence is a counter that only grows,
// so a value is never reused, and every write a holder makes checks, inside
// Redis, that the lease is still its own. A holder paused past its lease
// (GC, SIGSTOP, a partition) is refused when it wakes.
const ACQUIRE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local value = ARGV[1] .. '#' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value`;

const RENEW = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`;

const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1`;

// The holder numbers its entries; one sent again after a lost reply (the
// connection dropped after Redis appended it) is answered with the ID it
// already has instead of being appended twice.
const APPEND_FENCED = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('FENCED') end
local w = redis.call('HMGET', KEYS[3], 'lease', 'seq', 'id')
if w[1] == ARGV[1] and tonumber(w[2]) >= tonumber(ARGV[2]) then return w[3] end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[4])
redis.call('HSET', KEYS[3], 'lease', ARGV[1], 'seq', ARGV[2], 'id', id)
return id`;

const WRITE_SNAPSHOT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1`;

/** Compares two stream entry IDs (`ms-seq`). */
export function compareEntryIds(a: string, b: string): number {
  const [am = '0', as = '0'] = a.split('-');
  const [bm = '0', bs = '0'] = b.split('-');
  return am.length !== bm.length ? am.length - bm.length : am !== bm ? (am < bm ? -1 : 1) : Number(as) - Number(bs);
}

/** The entry IDs Redis hands out have this shape. */
export const ENTRY_ID = /^\d{1,20}-\d{1,20}$/;

/**
 * One platform's keys in Redis and what is done with them: its lease, its
 * event stream (a length-capped Redis Stream; the entry ID is the cursor)
 * and the holder's snapshot. The keys share a hash tag, so that in a
 * Cluster they live on one node and a script may touch them together.
 */
export class PlatformStream {
  private readonly keys: { lease: string; fence: string; events: string; written: string; snapshot: string };

  constructor(
    private readonly redis: RedisClient,
    readonly platformId: string,
    prefix: string,
    private readonly maxLength: number,
  ) {
    const base = `${prefix}{${platformId}}:`;
    this.keys = {
      lease: `${base}lease`,
      fence: `${base}fence`,
      events: `${base}events`,
      written: `${base}written`,
      snapshot: `${base}snapshot`,
    };
  }

  /** Takes the lease when nobody holds it; its value, or null. */
  async acquire(instanceId: string, ttlMs: number): Promise<string | null> {
    const value = await runScript(this.redis, ACQUIRE, [this.keys.lease, this.keys.fence], [instanceId, ttlMs]);
    return typeof value === 'string' ? value : null;
  }

  /** Extends a lease this instance holds; false when it no longer does. */
  async renew(lease: string, ttlMs: number): Promise<boolean> {
    return (await runScript(this.redis, RENEW, [this.keys.lease], [lease, ttlMs])) === 1;
  }

  async release(lease: string): Promise<void> {
    await runScript(this.redis, RELEASE, [this.keys.lease], [lease]);
  }

  /** Who holds the lease now (`<instance>#<fence>`), or null. */
  async holder(): Promise<string | null> {
    return this.redis.get(this.keys.lease);
  }

  /** Appends an entry under the lease; throws FencedError when the lease is no longer this one. */
  async appendAsHolder(lease: string, seq: number, entry: StreamEntry): Promise<string> {
    try {
      return String(
        await runScript(
          this.redis,
          APPEND_FENCED,
          [this.keys.lease, this.keys.events, this.keys.written],
          [lease, seq, this.maxLength, encodeTagged(entry)],
        ),
      );
    } catch (e) {
      if (e instanceof Error && e.message.includes('FENCED')) throw new FencedError(this.platformId);
      throw e;
    }
  }

  /** Appends an entry any instance may write (its own tasks' updates, what it observed). */
  async append(entry: StreamEntry): Promise<string> {
    const id = await this.redis.xadd(this.keys.events, 'MAXLEN', '~', this.maxLength, '*', 'e', encodeTagged(entry));
    return String(id);
  }

  async writeSnapshot(lease: string, snapshot: StreamSnapshot): Promise<boolean> {
    const done = await runScript(
      this.redis,
      WRITE_SNAPSHOT,
      [this.keys.lease, this.keys.snapshot],
      [lease, encodeTagged(snapshot)],
    );
    return done === 1;
  }

  async readSnapshot(): Promise<StreamSnapshot | null> {
    const text = await this.redis.get(this.keys.snapshot);
    return text === null ? null : decodeTagged<StreamSnapshot>(text);
  }

  /** Entries after `after`, waiting up to `blockMs` for one (on a connection of its own). */
  async read(connection: RedisClient, after: string, blockMs: number, count: number): Promise<ReadEntry[]> {
    const reply = await connection.xread('COUNT', count, 'BLOCK', blockMs, 'STREAMS', this.keys.events, after);
    return reply ? entriesOf(reply[0]?.[1] ?? []) : [];
  }

  /** Entries after `from` (or from it, with `inclusive`) up to `until` (`+` is the newest). */
  async range(from: string, until = '+', count = 1_000, inclusive = false): Promise<ReadEntry[]> {
    return entriesOf(await this.redis.xrange(this.keys.events, inclusive ? from : `(${from}`, until, 'COUNT', count));
  }

  /** The ID of the newest entry, or `0-0` when the stream is empty. */
  async lastId(): Promise<string> {
    const reply = await this.redis.xrevrange(this.keys.events, '+', '-', 'COUNT', 1);
    return reply[0]?.[0] ?? '0-0';
  }

  /**
   * Whether entries after `after` may be gone (the stream was capped past
   * it, or Redis lost it): a reader there has a gap it cannot fill. The
   * entry `after` names was read by someone, so while it is still there,
   * nothing after it was trimmed (trimming removes the oldest first).
   */
  async trimmedAfter(after: string): Promise<boolean> {
    if (after === '0-0') return false;
    const still = await this.redis.xrange(this.keys.events, after, after, 'COUNT', 1);
    return still.length === 0;
  }
}

function entriesOf(raw: [id: string, fields: string[]][]): ReadEntry[] {
  const out: ReadEntry[] = [];
  for (const [id, fields] of raw) {
    const text = fields[fields.indexOf('e') + 1];
    if (text === undefined) continue;
    out.push({ id, entry: decodeTagged<StreamEntry>(text) });
  }
  return out;
}

import { isIP } from 'node:net';

import { HeaderMap } from '@apollo/server';
import { type DocumentNode, Kind, type OperationDefinitionNode, getOperationAST, valueFromASTUntyped } from 'graphql';
import type { Logger } from 'pino';

import type { AuthConfig } from '../config/schema.js';
import type { Caller } from '../model/caller.js';
import { ErrorCode, GatewayError, errorMessage } from '../model/errors.js';
import type { RateLimitStatus, RequestRateLimit } from '../resolvers/context.js';
import { type RedisClient, runScript } from '../state/redis.js';

// A budget of query cost points per caller and time window, as GitHub's
// GraphQL API keeps one: an operation's cost is known before it runs (the
// same estimate that `limits.maxCost` caps), so it is charged up front and
// refused whole when the caller has fewer points left than it costs. Nothing
// of a refused operation runs and nothing is charged for it.
//
// Windows are fixed and aligned to the epoch (a 60 s window ends at every
// full minute), the same for every caller and every instance: a counter per
// caller and window, gone when the window is. A caller can therefore spend
// up to twice its budget across a window boundary; a sliding window would
// prevent that at the price of a sorted set per caller, and a budget is a
// fairness guard, not a precise meter. Instances must keep their clocks in
// step (NTP) for the windows to line up.
//
// With Redis, the counter is one key per caller and window, shared by every
// instance; when Redis does not answer, an instance counts on its own in
// memory until it does again (callers get the budget once per instance
// meanwhile, rather than every caller being refused).

export type RateLimitConfig = AuthConfig['rateLimit'];

/** What a charge decided: allowed (and charged, unless it was a dry run), or refused until the window ends. */
export type RateLimitDecision =
  { allowed: true; status: RateLimitStatus } | { allowed: false; status: RateLimitStatus; retryAfterSeconds: number };

export interface RateLimiter {
  /** Points per window. */
  readonly limit: number;
  /**
   * Takes `cost` points from `subject`'s budget in the current window when
   * that many are left; `charge: false` only reads the budget (a dry run:
   * always allowed, nothing taken).
   */
  take(subject: string, cost: number, charge: boolean): Promise<RateLimitDecision>;
}

/**
 * How long a charge waits for Redis before counting in memory instead: a
 * Redis that hangs must not hold up every operation for its 5 s command
 * timeout.
 * @default 1_000 // 1 second
 */
export const REDIS_CHARGE_TIMEOUT_MS = 1_000;

interface Window {
  /** The window's number since the epoch: the same on every instance. */
  index: number;
  /** When it ends (ms since the epoch). */
  endsAt: number;
}

function windowAt(now: number, windowMs: number): Window {
  const index = Math.floor(now / windowMs);
  return { index, endsAt: (index + 1) * windowMs };
}

/** The decision for a budget with `used` points spent in `window` (this operation's cost included when allowed and charged). */
function decision(
  limit: number,
  cost: number,
  used: number,
  allowed: boolean,
  window: Window,
  now: number,
): RateLimitDecision {
  const status: RateLimitStatus = {
    limit,
    cost,
    used,
    remaining: Math.max(0, limit - used),
    resetAt: new Date(window.endsAt),
  };
  if (allowed) return { allowed, status };
  return { allowed, status, retryAfterSeconds: Math.max(1, Math.ceil((window.endsAt - now) / 1000)) };
}

/** Budgets kept in this process: one instance alone, or while Redis does not answer. */
export class MemoryRateLimiter implements RateLimiter {
  readonly limit: number;
  private readonly windowMs: number;
  private window = -1;
  /** Points spent per subject in `window`; emptied when the window turns, so it holds one window's callers at most. */
  private readonly used = new Map<string, number>();

  constructor(
    config: Pick<RateLimitConfig, 'pointsPerWindow' | 'windowSeconds'>,
    private readonly now: () => number = Date.now,
  ) {
    this.limit = config.pointsPerWindow;
    this.windowMs = config.windowSeconds * 1000;
  }

  async take(subject: string, cost: number, charge: boolean): Promise<RateLimitDecision> {
    return this.takeNow(subject, cost, charge, this.now());
  }

  /** Synchronous, so that two operations of one caller cannot both pass the check before either is counted. */
  takeNow(subject: string, cost: number, charge: boolean, now: number): RateLimitDecision {
    const window = windowAt(now, this.windowMs);
    if (window.index !== this.window) {
      this.window = window.index;
      this.used.clear();
    }
    const before = this.used.get(subject) ?? 0;
    if (!charge) return decision(this.limit, cost, before, true, window, now);
    if (before + cost > this.limit) return decision(this.limit, cost, before, false, window, now);
    this.used.set(subject, before + cost);
    return decision(this.limit, cost, before + cost, true, window, now);
  }
}

/**
 * Checks and charges in one step, so that instances charging one caller at
 * once cannot both slip under the limit. KEYS[1]: the caller's counter for
 * the window; ARGV: cost, limit, charge (1 or 0), and when the counter may
 * go (ms since the epoch). Returns {allowed, points used}.
 */
const CHARGE_LUA = `
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost = tonumber(ARGV[1])
if ARGV[3] ~= '1' then return {1, used} end
if used + cost > tonumber(ARGV[2]) then return {0, used} end
used = redis.call('INCRBY', KEYS[1], cost)
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return {1, used}
`;

/**
 * The counter of `subject` in window `index`. The subject is a hash tag
 * (`{...}`): each charge touches one key, which Redis Cluster needs of a
 * script, and a caller's counters of successive windows live on one node.
 */
export function rateLimitKey(keyPrefix: string, subject: string, index: number): string {
  return `${keyPrefix}ratelimit:{${subject}}:${index}`;
}

/** Budgets shared by every instance through Redis; counted in `fallback` while Redis does not answer. */
export class RedisRateLimiter implements RateLimiter {
  readonly limit: number;
  private readonly windowMs: number;
  /** Whether the last charge went to memory: the log says so once per outage, not once per operation. */
  private degraded = false;

  constructor(
    private readonly redis: RedisClient,
    private readonly keyPrefix: string,
    private readonly fallback: MemoryRateLimiter,
    config: Pick<RateLimitConfig, 'pointsPerWindow' | 'windowSeconds'>,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.limit = config.pointsPerWindow;
    this.windowMs = config.windowSeconds * 1000;
  }

  async take(subject: string, cost: number, charge: boolean): Promise<RateLimitDecision> {
    const now = this.now();
    const window = windowAt(now, this.windowMs);
    // Without an offline queue a command to a Redis that is away fails at once; not sending it is cheaper still.
    if (this.redis.status !== 'ready')
      return this.inMemory(subject, cost, charge, now, `Redis is ${this.redis.status}`);
    let reply: unknown;
    try {
      reply = await withTimeout(
        runScript(
          this.redis,
          CHARGE_LUA,
          [rateLimitKey(this.keyPrefix, subject, window.index)],
          // The counter outlives its window by a second, so a late instance's clock never revives it at zero.
          [cost, this.limit, charge ? 1 : 0, window.endsAt + 1_000],
        ),
        REDIS_CHARGE_TIMEOUT_MS,
      );
    } catch (e) {
      return this.inMemory(subject, cost, charge, now, errorMessage(e));
    }
    if (!Array.isArray(reply) || typeof reply[0] !== 'number' || typeof reply[1] !== 'number') {
      return this.inMemory(subject, cost, charge, now, `unexpected reply ${JSON.stringify(reply)}`);
    }
    if (this.degraded) {
      this.degraded = false;
      this.logger.info('rate limits are shared through Redis again');
    }
    return decision(this.limit, cost, reply[1], reply[0] === 1, window, now);
  }

  private inMemory(subject: string, cost: number, charge: boolean, now: number, reason: string): RateLimitDecision {
    if (!this.degraded) {
      this.degraded = true;
      this.logger.warn(
        { err: reason },
        'Redis did not answer a rate-limit charge: this instance counts budgets on its own until it does',
      );
    }
    return this.fallback.takeNow(subject, cost, charge, now);
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * The limiter `auth.rateLimit` asks for: shared through `redis` when there
 * is one, else in memory; null when rate limits are off.
 */
export function createRateLimiter(
  config: RateLimitConfig,
  shared: { redis: RedisClient | null; keyPrefix: string },
  logger: Logger,
  now: () => number = Date.now,
): RateLimiter | null {
  if (!config.enabled) return null;
  const memory = new MemoryRateLimiter(config, now);
  return shared.redis ? new RedisRateLimiter(shared.redis, shared.keyPrefix, memory, config, logger, now) : memory;
}

/**
 * Whose budget a caller spends: its own id; an anonymous caller's source
 * address, so that one noisy anonymous client does not use up everyone's.
 */
export function rateLimitSubject(caller: Caller, remoteAddress: string | undefined): string {
  return caller.kind === 'anonymous' ? `anonymous@${addressKey(remoteAddress)}` : caller.id;
}

/**
 * A source address as a budget's key: an IPv4 address as it is (also when
 * IPv4-mapped on a dual-stack socket), an IPv6 address by its /64 network,
 * since one host usually holds a whole /64 and could take a fresh budget
 * from each of its addresses.
 */
export function addressKey(address: string | undefined): string {
  if (!address) return 'unknown';
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (isIP(address) !== 6) return address;
  const [head = '', tail] = address.split('%')[0]!.split('::');
  const groups = (part: string | undefined) =>
    part === undefined || part === '' ? [] : part.split(':').flatMap((g) => (g.includes('.') ? ['0', '0'] : [g]));
  const first = groups(head);
  const last = groups(tail);
  const all = [...first, ...Array<string>(Math.max(0, 8 - first.length - last.length)).fill('0'), ...last];
  return `${all
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}

/** `extensions.rateLimit` of a response: GitHub's `rateLimit` fields. */
export function rateLimitExtension(status: RateLimitStatus): {
  limit: number;
  cost: number;
  remaining: number;
  resetAt: string;
} {
  return { limit: status.limit, cost: status.cost, remaining: status.remaining, resetAt: status.resetAt.toISOString() };
}

/** GitHub's rate-limit headers, for clients and proxies that read headers rather than bodies. */
export function rateLimitHeaders(status: RateLimitStatus): Record<string, string> {
  return {
    'x-ratelimit-limit': String(status.limit),
    'x-ratelimit-remaining': String(status.remaining),
    'x-ratelimit-used': String(status.used),
    'x-ratelimit-reset': String(Math.floor(status.resetAt.getTime() / 1000)),
  };
}

/** RATE_LIMITED: on HTTP a 429 with Retry-After; Apollo takes both from `http`, which no client sees. */
export function rateLimitedError(refused: Extract<RateLimitDecision, { allowed: false }>): GatewayError {
  const { status, retryAfterSeconds } = refused;
  return new GatewayError(
    ErrorCode.RATE_LIMITED,
    `Rate limit exceeded: this operation costs ${status.cost} points and ${status.remaining} of ${status.limit} are left ` +
      `until ${status.resetAt.toISOString()}; retry after ${retryAfterSeconds} s.`,
    {
      cost: status.cost,
      remaining: status.remaining,
      resetAt: status.resetAt.toISOString(),
      retryAfterSeconds,
      http: {
        status: 429,
        headers: new HeaderMap([
          ['retry-after', String(retryAfterSeconds)],
          ...Object.entries(rateLimitHeaders(status)),
        ]),
      },
    },
  );
}

/** An operation about to run, with its estimated cost (`operationCost`). */
export interface PricedOperation {
  document: DocumentNode;
  operationName: string | null | undefined;
  variables: Record<string, unknown> | null | undefined;
  cost: number;
}

/**
 * Charges an operation to its caller's budget before it runs, and records
 * the charge in `budget.status` (the `rateLimit` field and extensions read
 * it). Throws RATE_LIMITED when too few points are left, QUERY_TOO_COSTLY
 * when the operation costs more than a whole window's budget (it could never
 * run). Every operation costs at least 1 point, so that free ones
 * (`__typename`) cannot be sent without end.
 *
 * Returns the document to run: the operation's own, or for a dry run (priced,
 * not charged) only its `rateLimit` fields (see dryRunDocument).
 */
export async function chargeOperation(
  limiter: RateLimiter,
  budget: RequestRateLimit,
  operation: PricedOperation,
  logger: Logger,
): Promise<DocumentNode> {
  const cost = Math.max(1, operation.cost);
  const dryRun = dryRunDocument(operation.document, operation.operationName, operation.variables);
  if (!dryRun && cost > limiter.limit) {
    throw new GatewayError(
      ErrorCode.QUERY_TOO_COSTLY,
      `The estimated cost ${cost} exceeds the whole budget of ${limiter.limit} points per window; ask for smaller pages or fewer fields.`,
      { cost, maxCost: limiter.limit, http: { status: 400 } },
    );
  }
  const outcome = await limiter.take(budget.subject, cost, dryRun === null);
  if (!outcome.allowed) {
    logger.debug({ subject: budget.subject, cost, remaining: outcome.status.remaining }, 'rate limited');
    throw rateLimitedError(outcome);
  }
  budget.status = outcome.status;
  return dryRun ?? operation.document;
}

/**
 * The document to run instead of the operation when it asks for
 * `rateLimit(dryRun: true)` at its root: the operation with its `rateLimit`
 * (and `__typename`) fields only, so that the rest is priced but neither
 * charged nor run, as GitHub's "calculate the cost without evaluating".
 * Null when the operation is no dry run.
 */
export function dryRunDocument(
  document: DocumentNode,
  operationName: string | null | undefined,
  variables: Record<string, unknown> | null | undefined,
): DocumentNode | null {
  const operation = getOperationAST(document, operationName);
  if (operation?.operation !== 'query') return null;
  const dryRun = operation.selectionSet.selections.some(
    (s) =>
      s.kind === Kind.FIELD &&
      s.name.value === 'rateLimit' &&
      s.arguments?.some(
        (a) => a.name.value === 'dryRun' && valueFromASTUntyped(a.value, variables ?? undefined) === true,
      ),
  );
  if (!dryRun) return null;
  const kept: OperationDefinitionNode = {
    ...operation,
    selectionSet: {
      ...operation.selectionSet,
      selections: operation.selectionSet.selections.filter(
        (s) => s.kind === Kind.FIELD && (s.name.value === 'rateLimit' || s.name.value === '__typename'),
      ),
    },
  };
  // Fragments stay (the rateLimit selection may spread one); other operations go, so `kept` is the one to run.
  return {
    ...document,
    definitions: document.definitions
      .map((d) => (d === operation ? kept : d))
      .filter((d) => d.kind !== Kind.OPERATION_DEFINITION || d === kept),
  };
}

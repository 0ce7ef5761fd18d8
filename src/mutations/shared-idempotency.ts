import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import { ErrorCode, GatewayError, errorMessage } from '../model/errors.js';
import { type RedisClient, runScript } from '../state/redis.js';
import {
  IDEMPOTENCY_TTL_MS,
  type Idempotency,
  type IdempotentResult,
  type IdempotentRun,
  reuseOf,
} from './idempotency.js';

/**
 * What a key holds in Redis: a run in progress somewhere, or its outcome.
 * `fp` is the input's fingerprint; keys written before it was kept have
 * none, and replay for any input of their mutation.
 */
type Held<S> =
  | { s: 'running'; op: string; fp?: string; token: string }
  | { s: 'done'; op: string; fp?: string; at: number; outcome: S };

/** How long a claim lasts: past it, a run whose instance died may be retried elsewhere (ms). */
const CLAIM_TTL_MS = 60_000;
/** How often a retry that found the key running elsewhere looks again (ms). */
const POLL_MS = 50;

// Written only over the value the caller last saw (its own claim, or an
// outcome it found binds nothing): a claim that expired and was taken again
// is the other run's.
const SETTLE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1`;

/**
 * Idempotency keys shared by every gateway instance through Redis: the
 * first run claims the key (SET NX), a retry that lands on any instance
 * while it runs waits for its outcome, and an outcome that binds the key is
 * kept for 24 hours. A run that binds nothing (a refusal) or throws gives
 * the key back, so a retry, waiting or later, runs again.
 */
export class SharedIdempotencyKeys<S> implements Idempotency<S> {
  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
    private readonly ttlMs = IDEMPOTENCY_TTL_MS,
  ) {}

  private key(caller: string, idempotencyKey: string): string {
    const digest = createHash('sha256').update(caller).update('\u0000').update(idempotencyKey).digest('base64url');
    return `${this.prefix}idempotency:${digest}`;
  }

  async once(caller: string, idempotencyKey: string, request: IdempotentRun<S>): Promise<IdempotentResult<S>> {
    const key = this.key(caller, idempotencyKey);
    const claim = JSON.stringify({
      s: 'running',
      op: request.operation,
      fp: request.fingerprint,
      token: randomBytes(9).toString('base64url'),
    } satisfies Held<S>);
    const deadline = Date.now() + CLAIM_TTL_MS + 5_000;
    for (;;) {
      const taken = await this.shared(() => this.redis.set(key, claim, 'PX', CLAIM_TTL_MS, 'NX'));
      if (taken === 'OK') return this.runClaimed(key, claim, request);
      const text = await this.shared(() => this.redis.get(key));
      if (text === null) continue;
      const held = JSON.parse(text) as Held<S>;
      if (held.s === 'done' && !request.binds(held.outcome)) {
        // A refusal an earlier version kept: the key is free, taken over only if it still holds just that.
        const over = await this.shared(() => runScript(this.redis, SETTLE, [key], [text, claim, CLAIM_TTL_MS]));
        if (over === 1) return this.runClaimed(key, claim, request);
        continue;
      }
      const reused = reuseOf({ operation: held.op, fingerprint: held.fp }, request);
      if (reused) return reused;
      if (held.s === 'done') return { outcome: held.outcome, replayed: true };
      if (Date.now() > deadline) {
        throw new GatewayError(
          ErrorCode.SHARED_STATE_UNAVAILABLE,
          'The first run of this idempotency key did not finish; retry with the same key.',
        );
      }
      await sleep(POLL_MS);
    }
  }

  private async runClaimed(key: string, claim: string, request: IdempotentRun<S>): Promise<IdempotentResult<S>> {
    let outcome: S;
    try {
      outcome = await request.run();
    } catch (e) {
      await runScript(this.redis, SETTLE, [key], [claim, '', 0]).catch(() => undefined);
      throw e;
    }
    const kept = request.binds(outcome)
      ? JSON.stringify({
          s: 'done',
          op: request.operation,
          fp: request.fingerprint,
          at: Date.now(),
          outcome,
        } satisfies Held<S>)
      : '';
    // Kept (or, for a refusal, given back) before the client is answered, so
    // a retry anywhere gets this outcome or runs again. The mutation has run
    // whatever Redis says now: if it cannot settle the key, the client still
    // gets its outcome, and the claim (which retries wait on) is written over
    // as soon as Redis answers again.
    for (let attempt = 0; attempt < 7; attempt++) {
      try {
        await runScript(this.redis, SETTLE, [key], [claim, kept, this.ttlMs]);
        break;
      } catch {
        await sleep(Math.min(50 * 2 ** attempt, 2_000));
      }
    }
    return { outcome, replayed: false };
  }

  /** A Redis call, its failure worded for the client. */
  private async shared<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (e) {
      throw new GatewayError(
        ErrorCode.SHARED_STATE_UNAVAILABLE,
        `Redis, which keeps idempotency keys for every gateway instance, did not answer (${errorMessage(e)}); the mutation was not run. Retry with the same key.`,
      );
    }
  }
}

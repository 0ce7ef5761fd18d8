import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import { ErrorCode, GatewayError, errorMessage } from '../model/errors.js';
import { type RedisClient, runScript } from '../state/redis.js';
import { IDEMPOTENCY_TTL_MS, type Idempotency, type IdempotentResult } from './idempotency.js';

/** What a key holds in Redis: a run in progress somewhere, or its outcome. */
type Held<S> = { s: 'running'; op: string; token: string } | { s: 'done'; op: string; at: number; outcome: S };

/** How long a claim lasts: past it, a run whose instance died may be retried elsewhere (ms). */
const CLAIM_TTL_MS = 60_000;
/** How often a retry that found the key running elsewhere looks again (ms). */
const POLL_MS = 50;

// Written only over the claim this run took: a claim that expired and was
// taken again is the other run's.
const SETTLE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1`;

/**
 * Idempotency keys shared by every gateway instance through Redis: the
 * first run claims the key (SET NX), a retry that lands on any instance
 * while it runs waits for its outcome, and the outcome is kept for 24
 * hours. A run that throws gives the key back, so it may be retried.
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

  async once(
    caller: string,
    idempotencyKey: string,
    operation: string,
    run: () => Promise<S>,
  ): Promise<IdempotentResult<S>> {
    const key = this.key(caller, idempotencyKey);
    const claim = JSON.stringify({ s: 'running', op: operation, token: randomBytes(9).toString('base64url') });
    const deadline = Date.now() + CLAIM_TTL_MS + 5_000;
    for (;;) {
      const taken = await this.shared(() => this.redis.set(key, claim, 'PX', CLAIM_TTL_MS, 'NX'));
      if (taken === 'OK') return this.runClaimed(key, claim, operation, run);
      const text = await this.shared(() => this.redis.get(key));
      if (text === null) continue;
      const held = JSON.parse(text) as Held<S>;
      if (held.op !== operation) return { usedFor: held.op };
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

  private async runClaimed(
    key: string,
    claim: string,
    operation: string,
    run: () => Promise<S>,
  ): Promise<IdempotentResult<S>> {
    let outcome: S;
    try {
      outcome = await run();
    } catch (e) {
      await runScript(this.redis, SETTLE, [key], [claim, '', 0]).catch(() => undefined);
      throw e;
    }
    const done = JSON.stringify({ s: 'done', op: operation, at: Date.now(), outcome } satisfies Held<S>);
    // Kept before the client is answered, so a retry anywhere gets this
    // outcome. The mutation has run whatever Redis says now: if it cannot
    // keep the outcome, the client still gets it, and the claim (which
    // retries wait on) is written over as soon as Redis answers again.
    for (let attempt = 0; attempt < 7; attempt++) {
      try {
        await runScript(this.redis, SETTLE, [key], [claim, done, this.ttlMs]);
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

import type { Collection } from '../state/store.js';

/** What is kept of a mutation run with an idempotency key. */
export interface RememberedOutcome<S> {
  operation: string;
  /** Epoch ms of the first run. */
  at: number;
  outcome: S;
}

export type IdempotentResult<S> =
  | { outcome: S; replayed: boolean }
  /** The key was used for another mutation, named here. */
  | { usedFor: string };

/** Runs a mutation once per (caller, idempotency key), wherever it is retried. */
export interface Idempotency<S> {
  once(caller: string, idempotencyKey: string, operation: string, run: () => Promise<S>): Promise<IdempotentResult<S>>;
}

/** How long idempotency keys are remembered. @default 86_400_000 // 24 hours */
export const IDEMPOTENCY_TTL_MS = 86_400_000;

/**
 * Runs a mutation once per (caller, idempotency key) and remembers its
 * outcome, durably, before the first caller is answered: a retry, on this
 * instance or after a restart, gets the first outcome instead of acting
 * twice. A retry that arrives while the first run is still going waits for
 * it. A run that throws is not remembered, so it may be retried.
 */
export class IdempotencyKeys<S> implements Idempotency<S> {
  private readonly inFlight = new Map<string, { operation: string; outcome: Promise<S> }>();

  constructor(
    private readonly store: Collection<RememberedOutcome<S>>,
    private readonly ttlMs = IDEMPOTENCY_TTL_MS,
    /** Keys kept at most; the oldest go first. @default 100_000 */
    private readonly maxEntries = 100_000,
  ) {}

  private key(caller: string, idempotencyKey: string): string {
    return `${caller}\u0000${idempotencyKey}`;
  }

  async once(
    caller: string,
    idempotencyKey: string,
    operation: string,
    run: () => Promise<S>,
  ): Promise<IdempotentResult<S>> {
    const k = this.key(caller, idempotencyKey);
    const running = this.inFlight.get(k);
    if (running) {
      return running.operation === operation
        ? { outcome: await running.outcome, replayed: true }
        : { usedFor: running.operation };
    }
    const stored = this.store.get(k);
    if (stored && Date.now() - stored.at <= this.ttlMs) {
      return stored.operation === operation
        ? { outcome: stored.outcome, replayed: true }
        : { usedFor: stored.operation };
    }
    const outcome = run();
    this.inFlight.set(k, { operation, outcome });
    try {
      const value = await outcome;
      await this.store.set(k, { operation, at: Date.now(), outcome: value });
      if (this.store.size > this.maxEntries) await this.prune();
      return { outcome: value, replayed: false };
    } finally {
      this.inFlight.delete(k);
    }
  }

  /** Drops expired keys, then the oldest past the cap (kept in the order they were written). */
  private async prune(): Promise<void> {
    const now = Date.now();
    const drop: string[] = [];
    let left = this.store.size;
    for (const [k, e] of this.entries()) {
      if (now - e.at > this.ttlMs || left > this.maxEntries) {
        drop.push(k);
        left -= 1;
      }
    }
    await Promise.all(drop.map((k) => this.store.delete(k)));
  }

  private *entries(): Iterable<[string, RememberedOutcome<S>]> {
    for (const e of this.store.keys()) {
      const v = this.store.get(e);
      if (v) yield [e, v];
    }
  }

  get size(): number {
    return this.store.size;
  }
}

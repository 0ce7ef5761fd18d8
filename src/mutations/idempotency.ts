import { createHash } from 'node:crypto';

import type { Collection } from '../state/store.js';

/** What is kept of a mutation run with an idempotency key. */
export interface RememberedOutcome<S> {
  operation: string;
  /**
   * The input's fingerprint (`inputFingerprint`). Absent from keys kept by
   * versions before it: those replay for any input of their mutation, as
   * they did when they were written.
   */
  fingerprint?: string;
  /** Epoch ms of the first run. */
  at: number;
  outcome: S;
}

/** One mutation to run under an idempotency key. */
export interface IdempotentRun<S> {
  /** The mutation's name: a key is bound to one mutation. */
  operation: string;
  /** `inputFingerprint` of its input: a key is bound to one input. */
  fingerprint: string;
  run: () => Promise<S>;
  /**
   * Whether an outcome binds the key: one that started something or
   * completed does; a refusal does not, so a retry after the caller fixed
   * its cause runs again. Asked of kept outcomes too, so a refusal kept by
   * an earlier version is not replayed either.
   */
  binds: (outcome: S) => boolean;
}

export type IdempotentResult<S> =
  | { outcome: S; replayed: boolean }
  /** The key is bound to another mutation (`OPERATION`), or to this one with other input (`INPUT`). */
  | { reused: 'OPERATION' | 'INPUT'; usedFor: string };

/** Runs a mutation once per (caller, idempotency key), wherever it is retried. */
export interface Idempotency<S> {
  once(caller: string, idempotencyKey: string, request: IdempotentRun<S>): Promise<IdempotentResult<S>>;
}

/** How long idempotency keys are remembered. @default 86_400_000 // 24 hours */
export const IDEMPOTENCY_TTL_MS = 86_400_000;

/**
 * What a key guards besides its mutation: sha256 (hex) of the input as
 * canonical JSON (object keys sorted, arrays in order), without
 * `idempotencyKey` and `clientMutationId`, which a retry may change
 * without asking for something else.
 */
export function inputFingerprint(input: Readonly<Record<string, unknown>>): string {
  const { idempotencyKey: _key, clientMutationId: _echo, ...asked } = input;
  return createHash('sha256').update(canonicalJson(asked)).digest('hex');
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v: unknown) => canonicalJson(v)).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const fields = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      // By code unit, as JSON canonicalization (RFC 8785) does: the same order on every machine and locale.
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${fields.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** Why a request may not use a key bound to `held`; null when it is the same request. */
export function reuseOf(
  held: { operation: string; fingerprint?: string | undefined },
  request: { operation: string; fingerprint: string },
): { reused: 'OPERATION' | 'INPUT'; usedFor: string } | null {
  if (held.operation !== request.operation) return { reused: 'OPERATION', usedFor: held.operation };
  if (held.fingerprint !== undefined && held.fingerprint !== request.fingerprint)
    return { reused: 'INPUT', usedFor: held.operation };
  return null;
}

/** How a run ended, for the retries that waited on it: its outcome when it bound the key. */
type Settled<S> = { bound: true; outcome: S } | { bound: false };

/**
 * Runs a mutation once per (caller, idempotency key) and remembers an
 * outcome that binds the key, durably, before the first caller is
 * answered: a retry, on this instance or after a restart, gets the first
 * outcome instead of acting twice. A retry that arrives while the first run
 * is still going waits for it; when that run binds nothing (a refusal, or
 * it threw), the retry runs itself, as it would on SharedIdempotencyKeys.
 */
export class IdempotencyKeys<S> implements Idempotency<S> {
  private readonly inFlight = new Map<
    string,
    { operation: string; fingerprint: string; settled: Promise<Settled<S>> }
  >();

  constructor(
    private readonly store: Collection<RememberedOutcome<S>>,
    private readonly ttlMs = IDEMPOTENCY_TTL_MS,
    /** Keys kept at most; the oldest go first. @default 100_000 */
    private readonly maxEntries = 100_000,
  ) {}

  private key(caller: string, idempotencyKey: string): string {
    return `${caller}\u0000${idempotencyKey}`;
  }

  async once(caller: string, idempotencyKey: string, request: IdempotentRun<S>): Promise<IdempotentResult<S>> {
    const k = this.key(caller, idempotencyKey);
    for (;;) {
      const running = this.inFlight.get(k);
      if (!running) break;
      const reused = reuseOf(running, request);
      if (reused) return reused;
      const settled = await running.settled;
      if (settled.bound) return { outcome: settled.outcome, replayed: true };
    }
    const stored = this.store.get(k);
    if (stored && Date.now() - stored.at <= this.ttlMs && request.binds(stored.outcome)) {
      return reuseOf(stored, request) ?? { outcome: stored.outcome, replayed: true };
    }
    let settle: (s: Settled<S>) => void = () => {};
    let settled: Settled<S> = { bound: false };
    this.inFlight.set(k, {
      operation: request.operation,
      fingerprint: request.fingerprint,
      settled: new Promise((resolve) => (settle = resolve)),
    });
    try {
      const outcome = await request.run();
      if (!request.binds(outcome)) return { outcome, replayed: false };
      // It acted: retries waiting now get this outcome even if it cannot be kept.
      settled = { bound: true, outcome };
      await this.store.set(k, {
        operation: request.operation,
        fingerprint: request.fingerprint,
        at: Date.now(),
        outcome,
      });
      if (this.store.size > this.maxEntries) await this.prune();
      return { outcome, replayed: false };
    } finally {
      this.inFlight.delete(k);
      settle(settled);
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

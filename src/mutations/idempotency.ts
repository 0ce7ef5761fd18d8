/**
 * Remembers the first result of a mutation by (caller, idempotency key), so
 * that a retry returns it instead of acting twice.
 */
export class IdempotencyCache<V> {
  private readonly entries = new Map<string, { operation: string; value: Promise<V>; at: number }>();

  constructor(
    /** @default 86_400_000 // 24 hours */
    private readonly ttlMs = 86_400_000,
    /** Keys kept at most; the oldest go first. @default 100_000 */
    private readonly maxEntries = 100_000,
  ) {}

  private key(caller: string, idempotencyKey: string): string {
    return `${caller}\u0000${idempotencyKey}`;
  }

  /** The remembered entry, if fresh. */
  find(caller: string, idempotencyKey: string): { operation: string; value: Promise<V> } | undefined {
    const k = this.key(caller, idempotencyKey);
    const entry = this.entries.get(k);
    if (!entry) return undefined;
    if (Date.now() - entry.at > this.ttlMs) {
      this.entries.delete(k);
      return undefined;
    }
    return entry;
  }

  remember(caller: string, idempotencyKey: string, operation: string, value: Promise<V>): void {
    this.entries.set(this.key(caller, idempotencyKey), { operation, value, at: Date.now() });
    if (this.entries.size > this.maxEntries) this.prune();
  }

  /** Drops expired keys, then the oldest past the cap (a Map keeps insertion order). */
  private prune(): void {
    const now = Date.now();
    for (const [k, e] of this.entries) if (now - e.at > this.ttlMs) this.entries.delete(k);
    for (const k of this.entries.keys()) {
      if (this.entries.size <= this.maxEntries) break;
      this.entries.delete(k);
    }
  }

  get size(): number {
    return this.entries.size;
  }
}

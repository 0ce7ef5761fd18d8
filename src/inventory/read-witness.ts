import type { InventoryKind } from '../datasources/watch.js';

/**
 * What a mirror applied while a read outside its watch was in flight (a
 * read-back after an operation). A record the watch applied meanwhile was
 * read after that read began, so it may be newer: the reader must not
 * overwrite it with its own, and reads that object again instead.
 */
export class ReadWitness {
  private readonly arrived = new Set<string>();
  private everything = false;

  constructor(private readonly ended: (witness: ReadWitness) => void) {}

  /** Whether a record of this object reached the mirror since the read began. */
  arrivedSince(kind: InventoryKind, nativeId: string): boolean {
    return this.everything || this.arrived.has(keyOf(kind, nativeId));
  }

  /** Stops noting: called once the read is over, before the reader applies what it read. */
  end(): void {
    this.ended(this);
  }

  /** @internal the mirror's side: one object's record arrived. */
  note(kind: InventoryKind, nativeId: string): void {
    if (!this.everything) this.arrived.add(keyOf(kind, nativeId));
  }

  /** @internal the mirror's side: a full read replaced everything. */
  noteAll(): void {
    this.everything = true;
    this.arrived.clear();
  }
}

const keyOf = (kind: InventoryKind, nativeId: string) => `${kind}\u0000${nativeId}`;

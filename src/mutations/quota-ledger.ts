import { randomUUID } from 'node:crypto';

import type { Logger } from 'pino';

import { type RedisClient, runScript } from '../state/redis.js';

/** What a VM holds, or what a request adds to a tenant. */
export interface QuotaUse {
  vms: number;
  vcpus: number;
  memoryMiB: number;
  diskGiB: number;
}

export const NO_USE: QuotaUse = { vms: 0, vcpus: 0, memoryMiB: 0, diskGiB: 0 };

export const addUse = (a: QuotaUse, b: QuotaUse): QuotaUse => ({
  vms: a.vms + b.vms,
  vcpus: a.vcpus + b.vcpus,
  memoryMiB: a.memoryMiB + b.memoryMiB,
  diskGiB: a.diskGiB + b.diskGiB,
});

/**
 * The VM a reservation is for, so that it is not counted twice once the
 * live inventory shows it: a VM still to be made (by its name, which no
 * other VM on its platform has while the request is in flight), or a
 * change to one (shown once what the VM holds is no longer what it held).
 */
export type ReservedFor =
  | { kind: 'new'; platformId: string; name: string }
  | { kind: 'change'; platformId: string; nativeId: string; before: QuotaUse };

/** What an accepted request still in flight adds to a tenant. */
export interface Reservation {
  use: QuotaUse;
  /** Null when not known (kept by an instance of an earlier version): counted until it ends. */
  for: ReservedFor | null;
}

/**
 * Where quota checks take turns and accepted requests keep what they will
 * add until their task ends: this process alone, or every instance through
 * Redis.
 */
export interface QuotaLedger {
  /** Runs `check` while no other quota check runs (here, or on any instance sharing the ledger). */
  exclusive<T>(check: () => Promise<T>): Promise<T>;
  /** The accepted requests still in flight that add to a tenant. */
  reserved(tenant: string): Promise<Reservation[]>;
  /** Keeps `reservation` against each tenant; the returned function gives it back. */
  reserve(tenants: readonly string[], reservation: Reservation): Promise<() => void>;
}

/** Checks in turn and reservations in this process: one instance alone. */
export class LocalQuotaLedger implements QuotaLedger {
  private readonly pending = new Map<string, Set<Reservation>>();
  private queue: Promise<unknown> = Promise.resolve();

  exclusive<T>(check: () => Promise<T>): Promise<T> {
    const run = this.queue.then(check);
    this.queue = run.catch(() => undefined);
    return run;
  }

  reserved(tenant: string): Promise<Reservation[]> {
    return Promise.resolve([...(this.pending.get(tenant) ?? [])]);
  }

  reserve(tenants: readonly string[], reservation: Reservation): Promise<() => void> {
    const releases = tenants.map((name) => {
      const set = this.pending.get(name) ?? new Set<Reservation>();
      this.pending.set(name, set);
      const entry = { ...reservation };
      set.add(entry);
      return () => set.delete(entry);
    });
    return Promise.resolve(() => releases.forEach((r) => r()));
  }
}

/** How long the shared check lock is held at most: an instance that dies holding it frees it by then. */
const LOCK_MS = 15_000;
/** A reservation whose instance died with its task in flight lapses after this. */
const RESERVATION_MS = 6 * 3_600_000;
/**
 * A released reservation lingers this long: the VM its task made reaches the
 * other instances' live inventories through the lease holder's stream, a
 * moment after it reached this one's. Counted once meanwhile (as reserved
 * until an instance's inventory shows it, then as held), never none.
 */
const LINGER_MS = 10_000;

const RELEASE_LOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

interface StoredReservation extends Reservation {
  /** Epoch ms after which the reservation no longer counts. */
  until: number;
}

/**
 * Checks in turn and reservations shared by every instance through Redis: a
 * lock key that one check at a time holds, and per tenant a hash of the
 * reservations in flight. While Redis does not answer, the instance checks
 * and reserves on its own (as one instance alone would), and says so.
 */
export class RedisQuotaLedger implements QuotaLedger {
  private readonly local = new LocalQuotaLedger();
  private alone = false;

  constructor(
    private readonly redis: RedisClient,
    private readonly keyPrefix: string,
    private readonly logger: Logger,
  ) {}

  private get lockKey() {
    return `${this.keyPrefix}quota:lock`;
  }

  private pendingKey(tenant: string) {
    return `${this.keyPrefix}quota:pending:${tenant}`;
  }

  exclusive<T>(check: () => Promise<T>): Promise<T> {
    // One check at a time in this process too: the shared lock is then only contended between instances.
    return this.local.exclusive(async () => {
      const token = await this.lock();
      if (token === null) return check();
      try {
        return await check();
      } finally {
        await runScript(this.redis, RELEASE_LOCK, [this.lockKey], [token]).catch(() => undefined);
      }
    });
  }

  /** Takes the shared lock; null when Redis does not answer (the check then runs on this instance's own). */
  private async lock(): Promise<string | null> {
    const token = randomUUID();
    const deadline = Date.now() + LOCK_MS;
    try {
      while (Date.now() < deadline) {
        if (this.redis.status !== 'ready') throw new Error(`Redis is ${this.redis.status}`);
        if ((await this.redis.set(this.lockKey, token, 'PX', LOCK_MS, 'NX')) === 'OK') {
          this.shared();
          return token;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error(`the quota lock stayed taken for ${LOCK_MS} ms`);
    } catch (e) {
      this.onItsOwn(e);
      return null;
    }
  }

  async reserved(tenant: string): Promise<Reservation[]> {
    const reservations = await this.local.reserved(tenant);
    if (this.alone) return reservations;
    const now = Date.now();
    const entries = await this.redis.hgetall(this.pendingKey(tenant)).catch((e: unknown) => {
      this.onItsOwn(e);
      return {} as Record<string, string>;
    });
    const lapsed: string[] = [];
    for (const [id, json] of Object.entries(entries)) {
      const r = JSON.parse(json) as StoredReservation;
      if (r.until < now) lapsed.push(id);
      else reservations.push({ use: r.use, for: r.for ?? null });
    }
    if (lapsed.length > 0) await this.redis.hdel(this.pendingKey(tenant), ...lapsed).catch(() => undefined);
    return reservations;
  }

  async reserve(tenants: readonly string[], reservation: Reservation): Promise<() => void> {
    if (this.alone) return this.local.reserve(tenants, reservation);
    const id = randomUUID();
    const store = (until: number) =>
      Promise.all(
        tenants.map((t) =>
          this.redis.hset(
            this.pendingKey(t),
            id,
            JSON.stringify({ ...reservation, until } satisfies StoredReservation),
          ),
        ),
      );
    try {
      await store(Date.now() + RESERVATION_MS);
    } catch (e) {
      this.onItsOwn(e);
      return this.local.reserve(tenants, reservation);
    }
    return () => void store(Date.now() + LINGER_MS).catch(() => undefined);
  }

  private onItsOwn(e: unknown): void {
    if (this.alone) return;
    this.alone = true;
    this.logger.warn(
      { err: e },
      'Redis did not answer a quota check: this instance checks quotas on its own until it does',
    );
  }

  private shared(): void {
    if (!this.alone) return;
    this.alone = false;
    this.logger.info('quota checks are shared through Redis again');
  }
}

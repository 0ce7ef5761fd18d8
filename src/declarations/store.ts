import type { Collection, StateStore } from '../state/store.js';
import { type RedisClient, blockingConnection } from '../state/redis.js';
import {
  type DeclaredPool,
  type DeclarationState,
  type DeclaredVm,
  NEW_DECLARATION_STATE,
  type DeclarationRecord,
  declarationKey,
} from '../model/declaration.js';

/**
 * Where declarations live: on disk under `state.dir` for a gateway alone, in
 * Redis for instances that share one. A declaration (what applyVm wrote) and
 * its reconciler's state are kept apart, so the reconciler's writes never
 * race an apply: only applies write declarations, compared by
 * resourceVersion.
 */
export interface DeclarationStore {
  /** Every declaration, with its state; of one platform when given. */
  list(platformId?: string): Promise<DeclarationRecord[]>;
  /**
   * One declaration. `fresh`: as stored now, for a decision that leads to a
   * write (a shared store may otherwise answer from a short-lived cache).
   */
  get(platformId: string, name: string, fresh?: boolean): Promise<DeclarationRecord | undefined>;
  /** Calls `listener` with the platform of each declaration or pool written, by any instance; null when none tells. */
  watch(listener: (platformId: string) => void): void;
  close(): Promise<void>;
  /**
   * Writes a declaration when the stored one's resourceVersion is
   * `expected` (null: none may be stored; undefined: whatever is).
   * Resolves once it is durable; false, with nothing written, on a mismatch.
   */
  putDeclared(declared: DeclaredVm, expected: string | null | undefined): Promise<boolean>;
  putState(platformId: string, name: string, state: DeclarationState): Promise<void>;
  /** Drops a declaration and its state. */
  delete(platformId: string, name: string): Promise<void>;
  listPools(platformId?: string): Promise<DeclaredPool[]>;
  getPool(platformId: string, name: string): Promise<DeclaredPool | undefined>;
  /** As putDeclared, for a pool. */
  putPool(pool: DeclaredPool, expected: string | null | undefined): Promise<boolean>;
  deletePool(platformId: string, name: string): Promise<void>;
}

const matches = (stored: { resourceVersion: string } | undefined, expected: string | null | undefined) =>
  expected === undefined || (stored?.resourceVersion ?? null) === expected;

/** The embedded store: two journaled collections under `state.dir`. */
export class LocalDeclarationStore implements DeclarationStore {
  private constructor(
    private readonly declared: Collection<DeclaredVm>,
    private readonly states: Collection<DeclarationState>,
    private readonly pools: Collection<DeclaredPool>,
  ) {}

  static async open(state: StateStore): Promise<LocalDeclarationStore> {
    return new LocalDeclarationStore(
      await state.collection<DeclaredVm>('vm-declarations'),
      await state.collection<DeclarationState>('vm-declaration-states'),
      await state.collection<DeclaredPool>('vm-pools'),
    );
  }

  listPools(platformId?: string): Promise<DeclaredPool[]> {
    return Promise.resolve(
      [...this.pools.values()].filter((p) => platformId === undefined || p.platformId === platformId),
    );
  }

  getPool(platformId: string, name: string): Promise<DeclaredPool | undefined> {
    return Promise.resolve(this.pools.get(declarationKey(platformId, name)));
  }

  async putPool(pool: DeclaredPool, expected: string | null | undefined): Promise<boolean> {
    const key = declarationKey(pool.platformId, pool.name);
    if (!matches(this.pools.get(key), expected)) return false;
    await this.pools.set(key, pool);
    return true;
  }

  deletePool(platformId: string, name: string): Promise<void> {
    return this.pools.delete(declarationKey(platformId, name));
  }

  private withState(d: DeclaredVm): DeclarationRecord {
    return { declared: d, state: this.states.get(declarationKey(d.platformId, d.name)) ?? NEW_DECLARATION_STATE };
  }

  list(platformId?: string): Promise<DeclarationRecord[]> {
    const all = [...this.declared.values()].filter((d) => platformId === undefined || d.platformId === platformId);
    return Promise.resolve(all.map((d) => this.withState(d)));
  }

  // The gateway alone writes here, and wakes its own reconciler.
  watch(): void {}

  close(): Promise<void> {
    return Promise.resolve();
  }

  get(platformId: string, name: string): Promise<DeclarationRecord | undefined> {
    const d = this.declared.get(declarationKey(platformId, name));
    return Promise.resolve(d && this.withState(d));
  }

  async putDeclared(declared: DeclaredVm, expected: string | null | undefined): Promise<boolean> {
    const key = declarationKey(declared.platformId, declared.name);
    // Compared and set with no await between: one event loop, one writer.
    if (!matches(this.declared.get(key), expected)) return false;
    await this.declared.set(key, declared);
    return true;
  }

  putState(platformId: string, name: string, state: DeclarationState): Promise<void> {
    const key = declarationKey(platformId, name);
    // A state written for a declaration dropped meanwhile is not kept.
    if (!this.declared.get(key)) return Promise.resolve();
    return this.states.set(key, state);
  }

  async delete(platformId: string, name: string): Promise<void> {
    const key = declarationKey(platformId, name);
    await this.declared.delete(key);
    await this.states.delete(key);
  }
}

/** Sets the field when the stored declaration's resourceVersion is ARGV[3] ('' for none; '*' for any). */
const PUT_IF_VERSION = `
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] ~= '*' then
  local version = ''
  if current then version = cjson.decode(current)['resourceVersion'] end
  if version ~= ARGV[3] then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1`;

/**
 * Declarations in two Redis hashes shared by every instance. Reads of the
 * whole set are cached for a second: a listing of VMs asks for the
 * declaration of each of them.
 */
export class RedisDeclarationStore implements DeclarationStore {
  private cache: { at: number; all: Promise<Map<string, DeclarationRecord>> } | null = null;

  constructor(
    private readonly redis: RedisClient,
    keyPrefix: string,
    private readonly cacheMs = 1_000,
  ) {
    // One hash tag: every hash on one node of a cluster.
    this.declaredKey = `${keyPrefix}{declarations}:declared`;
    this.stateKey = `${keyPrefix}{declarations}:state`;
    this.poolKey = `${keyPrefix}{declarations}:pools`;
    this.channel = `${keyPrefix}{declarations}:changed`;
  }

  private readonly channel: string;

  private readonly declaredKey: string;
  private readonly stateKey: string;
  private readonly poolKey: string;

  async listPools(platformId?: string): Promise<DeclaredPool[]> {
    const all = Object.values(await this.redis.hgetall(this.poolKey)).map((json) => JSON.parse(json) as DeclaredPool);
    return all.filter((p) => platformId === undefined || p.platformId === platformId);
  }

  async getPool(platformId: string, name: string): Promise<DeclaredPool | undefined> {
    const json = await this.redis.hget(this.poolKey, declarationKey(platformId, name));
    return json ? (JSON.parse(json) as DeclaredPool) : undefined;
  }

  async putPool(pool: DeclaredPool, expected: string | null | undefined): Promise<boolean> {
    const written = await this.redis.eval(
      PUT_IF_VERSION,
      1,
      this.poolKey,
      declarationKey(pool.platformId, pool.name),
      JSON.stringify(pool),
      expected === undefined ? '*' : (expected ?? ''),
    );
    if (written === 1) await this.announce(pool.platformId);
    return written === 1;
  }

  async deletePool(platformId: string, name: string): Promise<void> {
    await this.redis.hdel(this.poolKey, declarationKey(platformId, name));
  }

  private async readAll(): Promise<Map<string, DeclarationRecord>> {
    const [declared, states] = await Promise.all([
      this.redis.hgetall(this.declaredKey),
      this.redis.hgetall(this.stateKey),
    ]);
    const all = new Map<string, DeclarationRecord>();
    for (const [key, json] of Object.entries(declared)) {
      const state = states[key];
      all.set(key, {
        declared: JSON.parse(json) as DeclaredVm,
        state: state ? (JSON.parse(state) as DeclarationState) : NEW_DECLARATION_STATE,
      });
    }
    return all;
  }

  private all(): Promise<Map<string, DeclarationRecord>> {
    const now = Date.now();
    if (!this.cache || now - this.cache.at > this.cacheMs) {
      const all = this.readAll();
      this.cache = { at: now, all };
      all.catch(() => {
        if (this.cache?.all === all) this.cache = null;
      });
    }
    return this.cache.all;
  }

  private written(): void {
    this.cache = null;
  }

  async list(platformId?: string): Promise<DeclarationRecord[]> {
    return [...(await this.all()).values()].filter(
      (d) => platformId === undefined || d.declared.platformId === platformId,
    );
  }

  async get(platformId: string, name: string, fresh = false): Promise<DeclarationRecord | undefined> {
    const key = declarationKey(platformId, name);
    if (!fresh) return (await this.all()).get(key);
    const [declared, state] = await Promise.all([
      this.redis.hget(this.declaredKey, key),
      this.redis.hget(this.stateKey, key),
    ]);
    if (!declared) return undefined;
    return {
      declared: JSON.parse(declared) as DeclaredVm,
      state: state ? (JSON.parse(state) as DeclarationState) : NEW_DECLARATION_STATE,
    };
  }

  private subscriber: RedisClient | null = null;

  watch(listener: (platformId: string) => void): void {
    // A connection of its own: one that subscribes can do nothing else.
    const subscriber = blockingConnection(this.redis);
    this.subscriber = subscriber;
    subscriber.on('message', (_channel: string, platformId: string) => {
      this.cache = null;
      listener(platformId);
    });
    // At each (re)connection: Redis away meanwhile, the reconciler's periodic pass picks writes up.
    subscriber.on('ready', () => {
      subscriber.subscribe(this.channel).catch(() => undefined);
    });
  }

  async close(): Promise<void> {
    this.subscriber?.disconnect();
  }

  /** Tells every instance (their caches, the holder's reconciler) that a platform's declarations changed. */
  private async announce(platformId: string): Promise<void> {
    this.written();
    await this.redis.publish(this.channel, platformId).catch(() => 0);
  }

  async putDeclared(declared: DeclaredVm, expected: string | null | undefined): Promise<boolean> {
    const written = await this.redis.eval(
      PUT_IF_VERSION,
      1,
      this.declaredKey,
      declarationKey(declared.platformId, declared.name),
      JSON.stringify(declared),
      expected === undefined ? '*' : (expected ?? ''),
    );
    if (written === 1) await this.announce(declared.platformId);
    else this.written();
    return written === 1;
  }

  async putState(platformId: string, name: string, state: DeclarationState): Promise<void> {
    const key = declarationKey(platformId, name);
    if (!(await this.redis.hexists(this.declaredKey, key))) return;
    await this.redis.hset(this.stateKey, key, JSON.stringify(state));
    this.written();
  }

  async delete(platformId: string, name: string): Promise<void> {
    const key = declarationKey(platformId, name);
    await Promise.all([this.redis.hdel(this.declaredKey, key), this.redis.hdel(this.stateKey, key)]);
    await this.announce(platformId);
  }
}

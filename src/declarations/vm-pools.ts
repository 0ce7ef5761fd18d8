import { randomUUID } from 'node:crypto';

import type { PlatformRegistry } from '../datasources/registry.js';
import type { Inventory } from '../inventory/inventory.js';
import type { CloneMode, Condition, DeclarationRecord, DeclaredPool, RunStrategy } from '../model/declaration.js';
import { decodeIdOf } from '../model/ids.js';
import type { UserError } from '../model/user-errors.js';
import { NUMBERED_NAME, type VmRecord, expandName } from '../model/vm.js';
import { UNFILED } from '../access/policy.js';
import type { AuditLog } from '../mutations/audit-log.js';
import type { MutationCall } from '../mutations/pipeline.js';
import { GatewayError } from '../model/errors.js';
import { membersOf, poolEvent } from './pools.js';
import type { EventPublisher, InventoryChangeType } from '../model/events.js';
import { Refusal, audited, platformOf, refuse } from './requests.js';
import type { DeclarationStore } from './store.js';

export interface ApplyVmPoolRequest {
  platformId: string;
  name: string;
  replicas: number;
  sourceId: string;
  spec: { vcpus: number | null; memoryMiB: number | null; runStrategy: RunStrategy };
  namePattern: string | null;
  warmStandbys: number;
  cloneMode: CloneMode;
  resourceVersion: string | null | undefined;
  clientMutationId: string | null | undefined;
}

export interface VmPoolOutcome {
  clientMutationId: string | null;
  pool: DeclaredPool | null;
  userErrors: UserError[];
}

export type VmPoolPhase = 'READY' | 'SCALING' | 'DEGRADED' | 'DELETING';

export interface VmPoolStatusRecord {
  phase: VmPoolPhase;
  conditions: Condition[];
  observedGeneration: number | null;
  readyReplicas: number;
  readyStandbys: number;
}

/**
 * Pools of clones: applyVmPool, scaleVmPool, deleteVmPool, and what a pool
 * shows. The platform's reconciler keeps the members (see pools.ts).
 */
export class VmPools {
  constructor(
    private readonly deps: {
      store: DeclarationStore;
      inventory: Inventory;
      registry: PlatformRegistry;
      audit: AuditLog;
      maxReplicas: number;
      /** Wakes the platform's reconciler. */
      wake: (platformId: string) => void;
      /** Whether a member is Ready, as its status says. */
      ready: (d: DeclarationRecord) => boolean;
      events: EventPublisher;
    },
  ) {}

  list(platformId?: string): Promise<DeclaredPool[]> {
    return this.deps.store.listPools(platformId);
  }

  get(platformId: string, name: string): Promise<DeclaredPool | undefined> {
    return this.deps.store.getPool(platformId, name);
  }

  /** A pool's members, oldest first: replicas and standbys. */
  async members(pool: DeclaredPool) {
    return membersOf(pool, await this.deps.store.list(pool.platformId));
  }

  async status(pool: DeclaredPool): Promise<VmPoolStatusRecord> {
    const { replicas, standbys } = await this.members(pool);
    const readyReplicas = replicas.filter((d) => this.deps.ready(d)).length;
    const readyStandbys = standbys.filter((d) => this.deps.ready(d)).length;
    const source = this.deps.inventory.serving(pool.platformId)?.details(pool.sourceNativeId);
    const failing = replicas.find((d) => d.state.lastFailure);
    const now = new Date().toISOString();
    const ready = readyReplicas === pool.replicas && replicas.length === pool.replicas;
    const phase: VmPoolPhase = pool.deleting
      ? 'DELETING'
      : ready
        ? 'READY'
        : !source || failing?.state.lastFailure?.permanent
          ? 'DEGRADED'
          : 'SCALING';
    const why = !source
      ? { reason: 'SourceUnavailable', message: 'the source VM is gone, hidden or its platform not serving' }
      : failing?.state.lastFailure
        ? {
            reason: failing.state.lastFailure.reason,
            message: `${failing.declared.name}: ${failing.state.lastFailure.message}`,
          }
        : { reason: 'Scaling', message: `${readyReplicas} of ${pool.replicas} replicas ready` };
    return {
      phase,
      readyReplicas,
      readyStandbys,
      observedGeneration: pool.generation,
      conditions: [
        ready
          ? { type: 'Ready', status: 'TRUE', reason: 'AllReplicasReady', message: null, lastTransitionTime: now }
          : { type: 'Ready', status: 'FALSE', ...why, lastTransitionTime: now },
      ],
    };
  }

  /** applyVmPool: creates or updates a pool, durable before it answers. */
  async apply(ctx: MutationCall, req: ApplyVmPoolRequest): Promise<VmPoolOutcome> {
    return this.request(ctx, 'applyVmPool', req.platformId, req, async () => {
      const platformId = platformOf(this.deps.registry, ctx, req.platformId);
      if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(req.name))
        refuse(
          'INVALID_INPUT',
          'name must be 1 to 63 letters, digits, ".", "_" or "-", starting with a letter or digit.',
          ['name'],
        );
      this.checkCounts(req.replicas, req.warmStandbys);
      const pattern = req.namePattern ?? `${req.name}-{n:3}`;
      if (!NUMBERED_NAME.test(pattern) || pattern.length > 70)
        refuse(
          'INVALID_INPUT',
          'namePattern needs {n} (or {n:3}) to give each VM its own name, and at most 70 characters.',
          ['namePattern'],
        );
      const source = (await this.sourceOf(ctx, platformId, req.sourceId)).nativeId;
      for (const [field, value, min, max] of [
        ['vcpus', req.spec.vcpus, 1, 768],
        ['memoryMiB', req.spec.memoryMiB, 4, 24 * 1024 * 1024],
      ] as const) {
        if (value !== null && !(Number.isInteger(value) && value >= min && value <= max))
          refuse('INVALID_INPUT', `spec.${field} must be ${min} to ${max}.`, ['spec', field]);
      }
      await this.authorize(ctx, 'applyVmPool', { platformId, namePattern: pattern, sourceNativeId: source });
      const existing = await this.deps.store.getPool(platformId, req.name);
      if (existing) {
        // Another tenant's pool of the name is neither shown nor overwritten; one's own is changed by right only.
        if (!(await this.visible(ctx, existing)))
          refuse('CONFLICT', `The pool name ${req.name} is taken on platform "${platformId}".`, ['name']);
        await this.authorize(ctx, 'applyVmPool', existing);
      }
      if (existing?.deleting) refuse('CONFLICT', `Pool ${req.name} is being deleted.`);
      const expected = req.resourceVersion;
      if (expected !== undefined && expected !== null && existing?.resourceVersion !== expected) {
        refuse('CONFLICT', `Pool ${req.name} has changed since resourceVersion ${expected}; read it again.`, [
          'resourceVersion',
        ]);
      }
      const wanted = {
        replicas: req.replicas,
        warmStandbys: req.warmStandbys,
        sourceNativeId: source,
        namePattern: pattern,
        cloneMode: req.cloneMode,
        spec: req.spec,
      };
      if (existing && existing.sourceNativeId !== source && existing.replicas + existing.warmStandbys > 0) {
        // Members already made are clones of the old source: a new source would mix two kinds of VM.
        refuse('INVALID_INPUT', 'A pool keeps its source; delete it and apply a new one.', ['sourceId']);
      }
      const same = existing && JSON.stringify({ ...existing, ...wanted }) === JSON.stringify(existing);
      const pool: DeclaredPool = same
        ? existing
        : {
            platformId,
            name: req.name,
            ...wanted,
            generation: (existing?.generation ?? 0) + 1,
            resourceVersion: randomUUID(),
            appliedBy: ctx.caller,
            appliedAt: new Date().toISOString(),
            deleting: null,
          };
      if (!same && !(await this.deps.store.putPool(pool, existing?.resourceVersion ?? null)))
        refuse('CONFLICT', `Pool ${req.name} changed while this apply ran; try again.`);
      return { pool, change: existing ? 'MODIFIED' : 'ADDED' };
    });
  }

  /** scaleVmPool: a new replica count, nothing else. */
  async scale(
    ctx: MutationCall,
    input: { poolId: string; replicas: number; clientMutationId?: string | null },
  ): Promise<VmPoolOutcome> {
    return this.request(ctx, 'scaleVmPool', input.poolId, input, async () => {
      const existing = await this.poolOf(ctx, input.poolId);
      if (existing.deleting) refuse('CONFLICT', `Pool ${existing.name} is being deleted.`);
      this.checkCounts(input.replicas, existing.warmStandbys);
      await this.authorize(ctx, 'scaleVmPool', existing);
      if (existing.replicas === input.replicas) return { pool: existing, change: 'MODIFIED' };
      const pool: DeclaredPool = {
        ...existing,
        replicas: input.replicas,
        generation: existing.generation + 1,
        resourceVersion: randomUUID(),
        appliedBy: ctx.caller,
        appliedAt: new Date().toISOString(),
      };
      if (!(await this.deps.store.putPool(pool, existing.resourceVersion)))
        refuse('CONFLICT', `Pool ${existing.name} changed while this scale ran; try again.`);
      return { pool, change: 'MODIFIED' };
    });
  }

  /** deleteVmPool: the pool goes once its members have (deleteVms) or at once, leaving its VMs. */
  async delete(
    ctx: MutationCall,
    input: { poolId: string; deleteVms: boolean; clientMutationId?: string | null },
  ): Promise<VmPoolOutcome> {
    return this.request(ctx, 'deleteVmPool', input.poolId, input, async () => {
      const existing = await this.poolOf(ctx, input.poolId);
      await this.authorize(ctx, 'deleteVmPool', existing);
      // A new resourceVersion: a write made over the pool as it was (a pass's) must not undo the delete.
      const pool: DeclaredPool = {
        ...existing,
        deleting: { deleteVms: input.deleteVms },
        resourceVersion: randomUUID(),
      };
      if (!(await this.deps.store.putPool(pool, existing.resourceVersion)))
        refuse('CONFLICT', `Pool ${existing.name} changed while this delete ran; try again.`);
      return { pool, change: 'MODIFIED' };
    });
  }

  private async request(
    ctx: MutationCall,
    operation: string,
    target: string,
    input: object & { clientMutationId?: string | null },
    run: () => Promise<{ pool: DeclaredPool; change: InventoryChangeType }>,
  ): Promise<VmPoolOutcome> {
    const clientMutationId = input.clientMutationId ?? null;
    try {
      const { pool, change } = await run();
      await audited(this.deps.audit, ctx, operation, `${pool.platformId}/${pool.name}`, input, 'ACCEPTED', []);
      this.deps.events.publish(poolEvent(pool, change, this.deps.inventory.mirror(pool.platformId)));
      this.deps.wake(pool.platformId);
      return { clientMutationId, pool, userErrors: [] };
    } catch (e) {
      if (!(e instanceof Refusal)) throw e;
      await audited(this.deps.audit, ctx, operation, target, input, 'REFUSED', [e.userError.code]);
      return { clientMutationId, pool: null, userErrors: [e.userError] };
    }
  }

  private checkCounts(replicas: number, warmStandbys: number): void {
    const max = this.deps.maxReplicas;
    if (!Number.isInteger(replicas) || replicas < 0 || replicas > max)
      refuse('INVALID_INPUT', `replicas must be 0 to ${max} (reconciler.maxPoolReplicas).`, ['replicas']);
    if (!Number.isInteger(warmStandbys) || warmStandbys < 0 || warmStandbys > max)
      refuse('INVALID_INPUT', `warmStandbys must be 0 to ${max} (reconciler.maxPoolReplicas).`, ['warmStandbys']);
  }

  /** The source VM: a VM of the pool's platform that the caller sees. */
  private async sourceOf(ctx: MutationCall, platformId: string, sourceId: string): Promise<VmRecord> {
    let ref;
    try {
      ref = decodeIdOf(sourceId, 'VirtualMachine');
    } catch (e) {
      return refuse('INVALID_INPUT', e instanceof GatewayError ? e.message : 'Not a valid ID.', ['sourceId']);
    }
    // A VM the caller may not see is one that does not exist, whatever else is wrong with the request.
    const source = ctx.access.seesPlatform(ref.platformId) ? await ctx.loaders.vm(ref.platformId, ref.nativeId) : null;
    if (!source) return refuse('NOT_FOUND', 'No such source VM.', ['sourceId']);
    if (ref.platformId !== platformId)
      refuse('INVALID_INPUT', `sourceId names a VM of platform "${ref.platformId}", not "${platformId}".`, [
        'sourceId',
      ]);
    // Members are shaped from the source as the live inventory holds it.
    if (!this.deps.inventory.serving(platformId))
      refuse('PLATFORM_UNAVAILABLE', `The live inventory of platform "${platformId}" is not serving; try again.`);
    return source;
  }

  /**
   * Where a pool's members are, for access: its first member's name on the
   * source's host. A caller sees a pool, and may change it, as it sees and
   * may change the VMs it makes.
   */
  private async placementOf(
    ctx: Pick<MutationCall, 'loaders'>,
    pool: Pick<DeclaredPool, 'platformId' | 'namePattern' | 'sourceNativeId'>,
  ) {
    const source = this.deps.inventory.mirror(pool.platformId)?.vmRecords([pool.sourceNativeId])[0];
    return ctx.loaders.placementOf(
      {
        platformId: pool.platformId,
        name: expandName(pool.namePattern, 1),
        hostNativeId: source?.hostNativeId ?? null,
      },
      UNFILED,
    );
  }

  /** Whether the caller sees the pool. */
  async visible(ctx: Pick<MutationCall, 'loaders' | 'access'>, pool: DeclaredPool): Promise<boolean> {
    return ctx.access.seesPlatform(pool.platformId) && ctx.access.seesVm(await this.placementOf(ctx, pool));
  }

  private async authorize(
    ctx: MutationCall,
    action: string,
    pool: Parameters<VmPools['placementOf']>[1],
  ): Promise<void> {
    const decision = ctx.access.may(action, await this.placementOf(ctx, pool));
    if (!decision.allowed) refuse('FORBIDDEN', decision.reason);
  }

  private async poolOf(ctx: MutationCall, poolId: string): Promise<DeclaredPool> {
    let ref;
    try {
      ref = decodeIdOf(poolId, 'VmPool');
    } catch (e) {
      return refuse('INVALID_INPUT', e instanceof GatewayError ? e.message : 'Not a valid ID.', ['poolId']);
    }
    const pool = ctx.access.seesPlatform(ref.platformId)
      ? await this.deps.store.getPool(ref.platformId, ref.nativeId)
      : undefined;
    if (!pool || !(await this.visible(ctx, pool))) return refuse('NOT_FOUND', 'No such pool.', ['poolId']);
    return pool;
  }
}

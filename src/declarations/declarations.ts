import { randomUUID } from 'node:crypto';

import type { Logger } from 'pino';

import type { AccessPolicy } from '../access/policy.js';
import type { PlatformRegistry } from '../datasources/registry.js';
import type { Inventory } from '../inventory/inventory.js';
import type { AuditLog } from '../mutations/audit-log.js';
import type { MutationCall, MutationPipeline } from '../mutations/pipeline.js';
import type { TaskManager } from '../mutations/task-manager.js';
import {
  type Condition,
  type DeclaredSpec,
  type DeclaredVm,
  NEW_DECLARATION_STATE,
  type DeclarationRecord,
  type VmStatusRecord,
} from '../model/declaration.js';
import { GatewayError } from '../model/errors.js';
import type { EventPublisher } from '../model/events.js';
import type { VmOperation } from '../model/operations.js';
import type { UserError } from '../model/user-errors.js';
import type { VmRecord } from '../model/vm.js';
import { Refusal, audited, authorize, platformOf, refuse } from './requests.js';
import { PlatformReconciler, type ReconcilerConfig, isReconciler } from './reconciler.js';
import { ConditionClock, type Fact, type Reachability, vmStatus } from './status.js';
import type { DeclarationStore } from './store.js';
import { VmPools } from './vm-pools.js';

export interface ApplyVmRequest {
  platformId: string;
  name: string;
  /** The spec on the named platform; a thrown GatewayError is an INVALID_INPUT refusal. */
  build: (platformId: string) => DeclaredSpec;
  resourceVersion: string | null | undefined;
  clientMutationId: string | null | undefined;
}

export interface ApplyVmOutcome {
  clientMutationId: string | null;
  declaration: DeclarationRecord | null;
  userErrors: UserError[];
}

export interface ForgetVmOutcome {
  clientMutationId: string | null;
  vm: VmRecord | null;
  userErrors: UserError[];
}

/** Operations a run strategy would have undone, and the strategy to apply instead. */
const UNDONE_BY: Partial<Record<VmOperation['kind'], { strategy: 'ALWAYS' | 'HALTED'; instead: string }>> = {
  STOP_VM: { strategy: 'ALWAYS', instead: 'HALTED' },
  SUSPEND_VM: { strategy: 'ALWAYS', instead: 'HALTED' },
  PAUSE_VM: { strategy: 'ALWAYS', instead: 'HALTED' },
  START_VM: { strategy: 'HALTED', instead: 'ALWAYS' },
  RESUME_VM: { strategy: 'HALTED', instead: 'ALWAYS' },
  UNPAUSE_VM: { strategy: 'HALTED', instead: 'ALWAYS' },
};

export interface DeclarationsDeps {
  store: DeclarationStore;
  inventory: Inventory;
  registry: PlatformRegistry;
  pipeline: MutationPipeline;
  tasks: TaskManager;
  policy: AccessPolicy;
  audit: AuditLog;
  events: EventPublisher;
  config: ReconcilerConfig;
  operationTimeoutMs: number;
  logger: Logger;
}

/**
 * Declared VMs: applyVm and forgetVm, each VM's spec and status, and a
 * reconciler per platform that keeps the VMs as declared. Imperative
 * operations that a declaration would undo are refused.
 */
export class Declarations {
  private readonly reconcilers = new Map<string, PlatformReconciler>();
  private readonly clock = new ConditionClock();
  readonly pools: VmPools;

  constructor(private readonly deps: DeclarationsDeps) {
    for (const p of deps.registry.providers) {
      this.reconcilers.set(p.id, new PlatformReconciler(p.id, deps));
    }
    deps.pipeline.guardWith((ctx, vm, op) => this.guard(ctx, vm, op));
    this.pools = new VmPools({
      store: deps.store,
      inventory: deps.inventory,
      registry: deps.registry,
      audit: deps.audit,
      maxReplicas: deps.config.maxPoolReplicas,
      wake: (platformId) => this.reconcilers.get(platformId)?.wake(),
      ready: (d) => this.isReady(d),
      events: deps.events,
    });
  }

  /** Whether a declared VM is Ready now, from the live inventory. */
  private isReady(d: DeclarationRecord): boolean {
    const id = d.state.nativeId;
    const vm = id ? this.deps.inventory.serving(d.declared.platformId)?.vmRecords([id])[0] : undefined;
    const ready = this.statusOfDeclaration(d, vm ?? null).conditions.find((c) => c.type === 'Ready');
    return ready?.status === 'TRUE';
  }

  /** Starts reconciling; the live inventory must have started. */
  start(): void {
    for (const r of this.reconcilers.values()) r.start();
    // An apply through another instance wakes this one's reconciler (which acts where it holds the lease).
    this.deps.store.watch((platformId) => this.reconcilers.get(platformId)?.wake());
  }

  async stop(): Promise<void> {
    await Promise.all([...this.reconcilers.values()].map((r) => r.stop()));
    await this.deps.store.close();
  }

  list(platformId?: string): Promise<DeclarationRecord[]> {
    return this.deps.store.list(platformId);
  }

  /** The declaration of a VM (by its platform and name); null when it has none. */
  async declarationOf(vm: VmRecord): Promise<DeclarationRecord | null> {
    const d = await this.deps.store.get(vm.platformId, vm.name);
    // A declaration bound to another VM of that name (this one was made beside it) is not this VM's.
    return d && (d.state.nativeId === null || d.state.nativeId === vm.nativeId) ? d : null;
  }

  private reachability(platformId: string): Reachability {
    const mirror = this.deps.inventory.mirror(platformId);
    if (this.deps.inventory.serving(platformId)) return { reachable: true, message: null };
    return {
      reachable: false,
      message: mirror?.state.reason ?? `the live inventory of platform "${platformId}" is not serving`,
    };
  }

  /**
   * Whether the caller sees a declaration: as it sees its VM, or before the
   * VM exists, a VM of its name where its spec places it.
   */
  async visible(ctx: Pick<MutationCall, 'loaders' | 'access'>, d: DeclarationRecord): Promise<boolean> {
    const { platformId, name, spec } = d.declared;
    if (!ctx.access.seesPlatform(platformId)) return false;
    const nativeId = d.state.nativeId;
    if (nativeId && (await ctx.loaders.vm(platformId, nativeId))) return true;
    const placed = await ctx.loaders.placementOf(
      { platformId, name, hostNativeId: spec.placement.hostNativeId, clusterNativeId: spec.placement.clusterNativeId },
      { folderPath: spec.placement.folderPath, resourcePoolPath: spec.placement.resourcePoolPath, tags: spec.tags },
    );
    return ctx.access.seesVm(placed);
  }

  /** A VM's status, declared or not. */
  async statusOf(vm: VmRecord): Promise<VmStatusRecord> {
    return this.status(vm, await this.declarationOf(vm), vm.platformId);
  }

  /** A declaration's status, with its VM when it exists. */
  statusOfDeclaration(d: DeclarationRecord, vm: VmRecord | null): VmStatusRecord {
    return this.status(vm, d, d.declared.platformId);
  }

  private status(vm: VmRecord | null, d: DeclarationRecord | null, platformId: string): VmStatusRecord {
    // vCPUs and memory as the live inventory holds them; a platform it does not serve is UNKNOWN anyway.
    const details = vm ? (this.deps.inventory.serving(platformId)?.details(vm.nativeId) ?? null) : null;
    const stamp = (facts: readonly Fact[]): Condition[] =>
      d
        ? // Declared: transition times as the reconciler stored them, new ones from now.
          facts.map((f) => {
            const kept = d.state.conditions.find((c) => c.type === f.type && c.status === f.status);
            return { ...f, lastTransitionTime: kept?.lastTransitionTime ?? new Date().toISOString() };
          })
        : this.clock.stamp(`${platformId}\u0000${vm?.nativeId ?? ''}`, facts);
    return vmStatus(vm, details, d, this.reachability(platformId), stamp);
  }

  /** applyVm: creates or updates a declaration, durable before it answers. */
  async applyVm(ctx: MutationCall, req: ApplyVmRequest): Promise<ApplyVmOutcome> {
    const clientMutationId = req.clientMutationId ?? null;
    let target = req.platformId;
    try {
      const platformId = platformOf(this.deps.registry, ctx, req.platformId);
      target = `${platformId}/${req.name}`;
      if (!/^[^\0/\\]{1,80}$/.test(req.name) || req.name.trim() !== req.name)
        refuse('INVALID_INPUT', 'name must be 1 to 80 characters, without "/", "\\" or surrounding spaces.', ['name']);
      let spec: DeclaredSpec;
      try {
        spec = req.build(platformId);
      } catch (e) {
        if (!(e instanceof GatewayError)) throw e;
        return refuse('INVALID_INPUT', e.message, (e.extensions['field'] as string[] | undefined) ?? null);
      }
      const provider = this.deps.registry.get(platformId)!;
      const problem = provider.placementProblem(spec.placement, spec.tags, 'new');
      if (problem) refuse('INVALID_INPUT', problem, ['spec', 'placement']);
      await authorize(ctx, 'applyVm', platformId, req.name, spec);
      const existing = await this.deps.store.get(platformId, req.name, true);
      if (existing) {
        // Another tenant's declaration of the name is neither shown nor overwritten; one's own is changed by right only.
        if (!(await this.visible(ctx, existing)))
          refuse('CONFLICT', `The name ${req.name} is taken on platform "${platformId}".`, ['name']);
        await authorize(ctx, 'applyVm', platformId, req.name, existing.declared.spec);
      }
      const expected = req.resourceVersion;
      if (expected !== undefined && expected !== null && existing?.declared.resourceVersion !== expected) {
        refuse(
          'CONFLICT',
          existing
            ? `The declaration of ${req.name} has changed since resourceVersion ${expected} (it is ${existing.declared.resourceVersion}); read it again and apply over it.`
            : `${req.name} is not declared; apply it without a resourceVersion to create it.`,
          ['resourceVersion'],
        );
      }
      let declaration: DeclarationRecord;
      if (existing && JSON.stringify(existing.declared.spec) === JSON.stringify(spec)) {
        // Nothing changed: the same generation, and nothing for the reconciler to do anew.
        declaration = existing;
      } else {
        const declared: DeclaredVm = {
          platformId,
          name: req.name,
          spec,
          generation: (existing?.declared.generation ?? 0) + 1,
          resourceVersion: randomUUID(),
          appliedBy: ctx.caller,
          appliedAt: new Date().toISOString(),
        };
        const written = await this.deps.store.putDeclared(declared, existing?.declared.resourceVersion ?? null);
        if (!written) refuse('CONFLICT', `The declaration of ${req.name} changed while this apply ran; try again.`);
        declaration = (await this.deps.store.get(platformId, req.name, true)) ?? {
          declared,
          state: existing?.state ?? NEW_DECLARATION_STATE,
        };
      }
      await audited(this.deps.audit, ctx, 'applyVm', target, req, 'ACCEPTED', []);
      this.reconcilers.get(platformId)?.wake();
      return { clientMutationId, declaration, userErrors: [] };
    } catch (e) {
      if (!(e instanceof Refusal)) throw e;
      await audited(this.deps.audit, ctx, 'applyVm', target, req, 'REFUSED', [e.userError.code]);
      return { clientMutationId, declaration: null, userErrors: [e.userError] };
    }
  }

  /** forgetVm: drops a declaration and leaves the VM as it is. */
  async forgetVm(
    ctx: MutationCall,
    input: { platformId: string; name: string; clientMutationId?: string | null },
  ): Promise<ForgetVmOutcome> {
    const clientMutationId = input.clientMutationId ?? null;
    let target = input.platformId;
    try {
      const platformId = platformOf(this.deps.registry, ctx, input.platformId);
      target = `${platformId}/${input.name}`;
      const existing = await this.deps.store.get(platformId, input.name, true);
      // One the caller may not see is one that does not exist.
      if (!existing || !(await this.visible(ctx, existing)))
        return refuse('NOT_FOUND', `${input.name} is not declared on platform "${platformId}".`, ['name']);
      await authorize(ctx, 'forgetVm', platformId, input.name, existing.declared.spec);
      await this.deps.store.delete(platformId, input.name);
      await audited(this.deps.audit, ctx, 'forgetVm', target, input, 'ACCEPTED', []);
      const nativeId = existing.state.nativeId;
      const vm = nativeId ? await Promise.resolve(ctx.loaders.vm(platformId, nativeId)).catch(() => null) : null;
      return { clientMutationId, vm, userErrors: [] };
    } catch (e) {
      if (!(e instanceof Refusal)) throw e;
      await audited(this.deps.audit, ctx, 'forgetVm', target, input, 'REFUSED', [e.userError.code]);
      return { clientMutationId, vm: null, userErrors: [e.userError] };
    }
  }

  /**
   * Refuses what the VM's run strategy would undo (the reconciler's own
   * operations pass), and notes a declared VM's delete, so that its
   * declaration goes with it instead of making the VM again.
   */
  private async guard(ctx: MutationCall, vm: VmRecord, op: VmOperation): Promise<UserError | null> {
    if (isReconciler(ctx.caller)) return null;
    const d = await this.declarationOf(vm);
    if (!d) return null;
    const undone = UNDONE_BY[op.kind];
    if (undone && d.declared.spec.runStrategy === undone.strategy) {
      return {
        code: 'MANAGED_BY_DECLARATION',
        field: ['vmId'],
        message:
          `${vm.name} is declared with runStrategy ${undone.strategy}, so the gateway would undo this. ` +
          `Apply runStrategy ${undone.instead} (applyVm) instead, or forgetVm to manage it imperatively.`,
      };
    }
    if (op.kind === 'DELETE_VM') {
      await this.deps.store.putState(vm.platformId, vm.name, {
        ...d.state,
        deleting: { since: new Date().toISOString() },
        nativeId: vm.nativeId,
      });
    }
    return null;
  }
}

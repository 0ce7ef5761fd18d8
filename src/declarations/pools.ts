import { randomUUID } from 'node:crypto';

import type { DeclarationRecord, DeclaredPool, DeclaredVm, PoolMembership } from '../model/declaration.js';
import type { InventoryChangeType, InventoryEvent } from '../model/events.js';
import type { PlatformMirror } from '../inventory/platform-mirror.js';
import { type VmDetails, expandName } from '../model/vm.js';

/** What a pool's reconciler does in one pass to bring its members to the declared counts. */
export interface PoolPlan {
  /** Standbys handed out as replicas, oldest first: they are running already. */
  promote: DeclarationRecord[];
  /** Members to stop and delete: the newest first. */
  retire: DeclarationRecord[];
  /** New members to declare, by number and role. */
  add: Pick<PoolMembership, 'index' | 'role'>[];
}

const byIndex = (a: DeclarationRecord, b: DeclarationRecord) => a.declared.member!.index - b.declared.member!.index;

/** A pool's members, oldest first: those it keeps, and those being retired. */
export function membersOf(pool: DeclaredPool, declarations: readonly DeclarationRecord[]) {
  const all = declarations.filter((d) => d.declared.member?.pool === pool.name).sort(byIndex);
  const active = all.filter((d) => !d.state.retiring);
  return {
    all,
    replicas: active.filter((d) => d.declared.member!.role === 'REPLICA'),
    standbys: active.filter((d) => d.declared.member!.role === 'STANDBY'),
  };
}

/**
 * The difference between a pool's members and its counts: a scale up hands
 * out standbys first, then declares new replicas; a scale down retires the
 * newest; standbys are topped up or trimmed to `warmStandbys`. Numbers only
 * grow, so the newest member is the one with the highest.
 */
export function planPool(pool: DeclaredPool, declarations: readonly DeclarationRecord[]): PoolPlan {
  const { all, replicas, standbys } = membersOf(pool, declarations);
  const plan: PoolPlan = { promote: [], retire: [], add: [] };
  if (pool.deleting) {
    plan.retire = all.filter((d) => !d.state.retiring).reverse();
    return plan;
  }
  const kept = [...replicas];
  const spare = [...standbys];
  while (kept.length < pool.replicas && spare.length > 0) {
    const handed = spare.shift()!;
    plan.promote.push(handed);
    kept.push(handed);
  }
  plan.retire.push(...kept.splice(pool.replicas).reverse());
  plan.retire.push(...spare.splice(pool.warmStandbys).reverse());
  let next = Math.max(pool.lastIndex ?? 0, ...all.map((d) => d.declared.member!.index)) + 1;
  for (let n = kept.length; n < pool.replicas; n++) plan.add.push({ index: next++, role: 'REPLICA' });
  for (let n = spare.length; n < pool.warmStandbys; n++) plan.add.push({ index: next++, role: 'STANDBY' });
  return plan;
}

/** A new member's declaration: a clone of the pool's source, shaped as the pool says or as the source is. */
export function memberDeclaration(
  pool: DeclaredPool,
  membership: Pick<PoolMembership, 'index' | 'role'>,
  source: VmDetails,
): DeclaredVm {
  return {
    platformId: pool.platformId,
    name: expandName(pool.namePattern, membership.index),
    spec: {
      vcpus: pool.spec.vcpus ?? source.vcpus,
      coresPerSocket: pool.spec.vcpus === null ? source.coresPerSocket : null,
      memoryMiB: pool.spec.memoryMiB ?? source.memoryMiB,
      guestOs: null,
      disks: [],
      nics: [],
      placement: {
        hostNativeId: null,
        clusterNativeId: null,
        storageNativeId: null,
        folderPath: null,
        resourcePoolPath: null,
      },
      tags: [],
      // Standbys wait running, whatever the replicas' strategy: that is what makes them fast.
      runStrategy: membership.role === 'STANDBY' ? 'ALWAYS' : pool.spec.runStrategy,
    },
    generation: 1,
    resourceVersion: randomUUID(),
    appliedBy: pool.appliedBy,
    appliedAt: new Date().toISOString(),
    member: { pool: pool.name, ...membership },
    source: { nativeId: pool.sourceNativeId, cloneMode: pool.cloneMode },
  };
}

/** A standby handed out as a replica: kept as the pool's replicas are. */
export function promoted(pool: DeclaredPool, d: DeclaredVm): DeclaredVm {
  return {
    ...d,
    spec: { ...d.spec, runStrategy: pool.spec.runStrategy },
    member: { ...d.member!, role: 'REPLICA' },
    generation: d.generation + 1,
    resourceVersion: randomUUID(),
    appliedAt: new Date().toISOString(),
  };
}

/** A pool's event, named for access by the first member it makes, on the source's host. */
export function poolEvent(
  pool: DeclaredPool,
  change: InventoryChangeType,
  mirror: PlatformMirror | undefined,
): InventoryEvent {
  const source = mirror?.vmRecords([pool.sourceNativeId])[0];
  return {
    type: 'INVENTORY',
    platformId: pool.platformId,
    kind: 'VmPool',
    change,
    nativeId: pool.name,
    aspects: [],
    previousPowerState: null,
    powerState: null,
    vm: { name: expandName(pool.namePattern, 1), hostNativeId: source?.hostNativeId ?? null },
  };
}

import { describe, expect, it } from 'vitest';

import { memberDeclaration, planPool, promoted } from '../src/declarations/pools.js';
import {
  type DeclarationRecord,
  type DeclaredPool,
  NEW_DECLARATION_STATE,
  type PoolMembership,
} from '../src/model/declaration.js';
import { ANONYMOUS } from '../src/model/caller.js';
import type { VmDetails } from '../src/model/vm.js';

const pool = (over: Partial<DeclaredPool> = {}): DeclaredPool => ({
  platformId: 'p',
  name: 'web',
  replicas: 3,
  warmStandbys: 0,
  sourceNativeId: 'src',
  namePattern: 'web-{n:3}',
  cloneMode: 'LINKED',
  spec: { vcpus: null, memoryMiB: 512, runStrategy: 'ALWAYS' },
  generation: 1,
  resourceVersion: 'rv',
  appliedBy: ANONYMOUS,
  appliedAt: '2026-12-01T00:00:00.000Z',
  deleting: null,
  ...over,
});

const source = { vcpus: 2, memoryMiB: 1024, coresPerSocket: 1 } as VmDetails;

function member(index: number, role: PoolMembership['role'] = 'REPLICA', retiring = false): DeclarationRecord {
  return {
    declared: memberDeclaration(pool(), { index, role }, source),
    state: { ...NEW_DECLARATION_STATE, retiring },
  };
}

const names = (ds: readonly DeclarationRecord[]) => ds.map((d) => d.declared.name);

describe('a pool plan', () => {
  it('declares the missing replicas, numbered after every member there is, retiring ones included', () => {
    const plan = planPool(pool({ replicas: 4 }), [member(1), member(2), member(5, 'REPLICA', true)]);
    expect(plan.add).toEqual([
      { index: 6, role: 'REPLICA' },
      { index: 7, role: 'REPLICA' },
    ]);
    expect(plan.retire).toEqual([]);
  });

  it('retires the newest replicas first on a scale down', () => {
    const plan = planPool(
      pool({ replicas: 3 }),
      [1, 2, 3, 4, 5, 6].map((i) => member(i)),
    );
    expect(names(plan.retire)).toEqual(['web-006', 'web-005', 'web-004']);
    expect(plan.add).toEqual([]);
  });

  it('hands out the oldest standbys before it clones, and tops the standbys up', () => {
    const plan = planPool(pool({ replicas: 3, warmStandbys: 2 }), [
      member(1),
      member(2, 'STANDBY'),
      member(3, 'STANDBY'),
    ]);
    expect(names(plan.promote)).toEqual(['web-002', 'web-003']);
    expect(plan.add).toEqual([
      { index: 4, role: 'STANDBY' },
      { index: 5, role: 'STANDBY' },
    ]);
  });

  it('trims standbys past warmStandbys, newest first', () => {
    const plan = planPool(pool({ replicas: 1, warmStandbys: 1 }), [
      member(1),
      member(2, 'STANDBY'),
      member(3, 'STANDBY'),
    ]);
    expect(names(plan.retire)).toEqual(['web-003']);
  });

  it('retires every member of a pool deleted with its VMs', () => {
    const plan = planPool(pool({ deleting: { deleteVms: true } }), [member(1), member(2, 'STANDBY')]);
    expect(names(plan.retire)).toEqual(['web-002', 'web-001']);
    expect(plan.add).toEqual([]);
  });

  it('shapes members as the pool says, else as the source is; standbys wait running', () => {
    const replica = memberDeclaration(
      pool({ spec: { vcpus: null, memoryMiB: 512, runStrategy: 'HALTED' } }),
      { index: 1, role: 'REPLICA' },
      source,
    );
    expect(replica.spec).toMatchObject({ vcpus: 2, memoryMiB: 512, runStrategy: 'HALTED' });
    const standby = memberDeclaration(
      pool({ spec: { vcpus: 4, memoryMiB: null, runStrategy: 'HALTED' } }),
      { index: 2, role: 'STANDBY' },
      source,
    );
    expect(standby.spec).toMatchObject({ vcpus: 4, memoryMiB: 1024, runStrategy: 'ALWAYS' });
    const handed = promoted(pool({ spec: { vcpus: 4, memoryMiB: null, runStrategy: 'HALTED' } }), standby);
    expect(handed.member).toEqual({ pool: 'web', index: 2, role: 'REPLICA' });
    expect(handed.spec.runStrategy).toBe('HALTED');
    expect(handed.resourceVersion).not.toBe(standby.resourceVersion);
  });
});

import type { VmOperation } from '../datasources/operations.js';
import { ErrorCode, GatewayError } from '../errors.js';
import type { MutationResolvers, PowerAction } from '../generated/graphql.js';
import { placementOn } from './placement.js';

// Thin: each mutation names its operation; VmOperations does the rest.
export const vmMutations: MutationResolvers = {
  startVm: (_r, { input }, ctx) => ctx.operations.run(ctx, { mutation: 'startVm', input, build: () => ({ kind: 'START_VM' }) }),
  stopVm: (_r, { input }, ctx) =>
    ctx.operations.run(ctx, { mutation: 'stopVm', input, build: () => ({ kind: 'STOP_VM', force: input.force ?? false }) }),
  rebootVm: (_r, { input }, ctx) => ctx.operations.run(ctx, { mutation: 'rebootVm', input, build: () => ({ kind: 'REBOOT_VM' }) }),
  resetVm: (_r, { input }, ctx) => ctx.operations.run(ctx, { mutation: 'resetVm', input, build: () => ({ kind: 'RESET_VM' }) }),
  suspendVm: (_r, { input }, ctx) => ctx.operations.run(ctx, { mutation: 'suspendVm', input, build: () => ({ kind: 'SUSPEND_VM' }) }),
  resumeVm: (_r, { input }, ctx) => ctx.operations.run(ctx, { mutation: 'resumeVm', input, build: () => ({ kind: 'RESUME_VM' }) }),
  pauseVm: (_r, { input }, ctx) => ctx.operations.run(ctx, { mutation: 'pauseVm', input, build: () => ({ kind: 'PAUSE_VM' }) }),
  unpauseVm: (_r, { input }, ctx) => ctx.operations.run(ctx, { mutation: 'unpauseVm', input, build: () => ({ kind: 'UNPAUSE_VM' }) }),
  deleteVm: (_r, { input }, ctx) =>
    ctx.operations.run(ctx, {
      mutation: 'deleteVm',
      input,
      anyState: input.force ?? false,
      build: () => ({ kind: 'DELETE_VM', force: input.force ?? false }),
    }),
  createSnapshot: (_r, { input }, ctx) =>
    ctx.operations.run(ctx, {
      mutation: 'createSnapshot',
      input,
      build: () => ({
        kind: 'CREATE_SNAPSHOT',
        name: input.name,
        description: input.description ?? null,
        includeMemory: input.includeMemory ?? false,
        quiesce: input.quiesce ?? false,
      }),
    }),
  revertToSnapshot: (_r, { input }, ctx) =>
    ctx.operations.run(ctx, {
      mutation: 'revertToSnapshot',
      input,
      build: (snapshotKey) => ({ kind: 'REVERT_TO_SNAPSHOT', snapshotKey: snapshotKey ?? '' }),
    }),
  deleteSnapshot: (_r, { input }, ctx) =>
    ctx.operations.run(ctx, {
      mutation: 'deleteSnapshot',
      input,
      build: (snapshotKey) => ({ kind: 'DELETE_SNAPSHOT', snapshotKey: snapshotKey ?? '', withChildren: input.withChildren ?? false }),
    }),
};

const POWER_ACTIONS: Record<PowerAction, { mutation: string; op: VmOperation }> = {
  START: { mutation: 'startVm', op: { kind: 'START_VM' } },
  STOP: { mutation: 'stopVm', op: { kind: 'STOP_VM', force: false } },
  FORCE_STOP: { mutation: 'stopVm', op: { kind: 'STOP_VM', force: true } },
  SUSPEND: { mutation: 'suspendVm', op: { kind: 'SUSPEND_VM' } },
  RESUME: { mutation: 'resumeVm', op: { kind: 'RESUME_VM' } },
  RESET: { mutation: 'resetVm', op: { kind: 'RESET_VM' } },
  REBOOT: { mutation: 'rebootVm', op: { kind: 'REBOOT_VM' } },
};

/** `web-{n:3}` with index 7 is `web-007`. */
export function expandName(pattern: string, index: number): string {
  return pattern.replace(/\{n(?::(\d+))?\}/g, (_m, width: string | undefined) => String(index).padStart(Number(width ?? 0), '0'));
}

const MAX_BATCH = 100;

function checkBatchSize(n: number, field: string): void {
  if (n < 1 || n > MAX_BATCH) {
    throw new GatewayError(ErrorCode.BAD_USER_INPUT, `${field} must name 1 to ${MAX_BATCH} VMs; got ${n}.`, { field: [field] });
  }
}

export const batchMutations: Pick<MutationResolvers, 'cloneVm' | 'deployVms' | 'snapshotVms' | 'powerVms'> = {
  cloneVm: (_r, { input }, ctx) =>
    ctx.operations.run(ctx, {
      mutation: 'cloneVm',
      input,
      build: (_s, vm) => ({ kind: 'CLONE_VM', name: input.name, placement: placementOn(vm.platformId, input.placement), powerOn: input.powerOn ?? false }),
    }),
  deployVms: (_r, { input }, ctx) =>
    ctx.operations.runBatch(ctx, {
      mutation: 'deployVms',
      input,
      items: () => {
        checkBatchSize(input.count, 'count');
        if (input.count > 1 && !/\{n(:\d+)?\}/.test(input.namePattern)) {
          throw new GatewayError(ErrorCode.BAD_USER_INPUT, 'namePattern needs {n} (or {n:3}) to give each VM its own name.', { field: ['namePattern'] });
        }
        const start = input.startIndex ?? 1;
        return Array.from({ length: input.count }, (_, i) => {
          const name = expandName(input.namePattern, start + i);
          return {
            mutation: 'deployVms',
            input: { vmId: input.templateId, name },
            build: (_s: string | null, vm: { platformId: string }) => ({
              kind: 'CLONE_VM' as const,
              name,
              placement: placementOn(vm.platformId, input.placement),
              powerOn: input.powerOn ?? true,
            }),
          };
        });
      },
    }),
  snapshotVms: (_r, { input }, ctx) => {
    const name = `${input.namePrefix ?? 'backup'}-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    return ctx.operations.runBatch(ctx, {
      mutation: 'snapshotVms',
      input,
      items: () => {
        checkBatchSize(input.vmIds.length, 'vmIds');
        return input.vmIds.map((vmId) => ({
          mutation: 'snapshotVms',
          input: { vmId, name },
          build: () => ({ kind: 'CREATE_SNAPSHOT' as const, name, description: input.description ?? null, includeMemory: input.includeMemory ?? false, quiesce: false }),
        }));
      },
    });
  },
  powerVms: (_r, { input }, ctx) =>
    ctx.operations.runBatch(ctx, {
      mutation: 'powerVms',
      input,
      items: () => {
        checkBatchSize(input.vmIds.length, 'vmIds');
        const { mutation, op } = POWER_ACTIONS[input.action];
        return input.vmIds.map((vmId) => ({ mutation, input: { vmId }, build: () => op }));
      },
    }),
};

import type { MutationResolvers } from '../generated/graphql.js';

// Thin: each mutation names its operation; VmOperations does the rest.
export const Mutation: MutationResolvers = {
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

import type { MigrationLimits, Reconfiguration, VmOperation, VmSpec } from '../model/operations.js';
import { migrationLimitProblems } from '../model/migration.js';
import { decodeIdOf } from '../model/ids.js';
import { ErrorCode, GatewayError } from '../model/errors.js';
import type {
  CreateVmInput,
  MigrateVmInput,
  MutationResolvers,
  PowerAction,
  ReconfigureVmInput,
} from '../generated/graphql.js';
import { NUMBERED_NAME, type VmRecord, expandName } from '../model/vm.js';
import type { GatewayContext } from './context.js';
import { nativeIdOn, placementOn, tagsOf } from './placement.js';

// Thin: each mutation names its operation; MutationPipeline does the rest.
export const vmMutations: MutationResolvers = {
  startVm: (_r, { input }, ctx) =>
    ctx.mutations.run(ctx, { mutation: 'startVm', input, build: () => ({ kind: 'START_VM' }) }),
  stopVm: (_r, { input }, ctx) =>
    ctx.mutations.run(ctx, {
      mutation: 'stopVm',
      input,
      build: () => ({ kind: 'STOP_VM', force: input.force ?? false }),
    }),
  rebootVm: (_r, { input }, ctx) =>
    ctx.mutations.run(ctx, { mutation: 'rebootVm', input, build: () => ({ kind: 'REBOOT_VM' }) }),
  resetVm: (_r, { input }, ctx) =>
    ctx.mutations.run(ctx, { mutation: 'resetVm', input, build: () => ({ kind: 'RESET_VM' }) }),
  suspendVm: (_r, { input }, ctx) =>
    ctx.mutations.run(ctx, { mutation: 'suspendVm', input, build: () => ({ kind: 'SUSPEND_VM' }) }),
  resumeVm: (_r, { input }, ctx) =>
    ctx.mutations.run(ctx, { mutation: 'resumeVm', input, build: () => ({ kind: 'RESUME_VM' }) }),
  pauseVm: (_r, { input }, ctx) =>
    ctx.mutations.run(ctx, { mutation: 'pauseVm', input, build: () => ({ kind: 'PAUSE_VM' }) }),
  unpauseVm: (_r, { input }, ctx) =>
    ctx.mutations.run(ctx, { mutation: 'unpauseVm', input, build: () => ({ kind: 'UNPAUSE_VM' }) }),
  deleteVm: (_r, { input }, ctx) =>
    ctx.mutations.run(ctx, {
      mutation: 'deleteVm',
      input,
      anyState: input.force ?? false,
      build: () => ({ kind: 'DELETE_VM', force: input.force ?? false }),
    }),
  createSnapshot: (_r, { input }, ctx) =>
    ctx.mutations.run(ctx, {
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
    ctx.mutations.run(ctx, {
      mutation: 'revertToSnapshot',
      input,
      build: (snapshotKey) => ({ kind: 'REVERT_TO_SNAPSHOT', snapshotKey: snapshotKey ?? '' }),
    }),
  deleteSnapshot: (_r, { input }, ctx) =>
    ctx.mutations.run(ctx, {
      mutation: 'deleteSnapshot',
      input,
      build: (snapshotKey) => ({
        kind: 'DELETE_SNAPSHOT',
        snapshotKey: snapshotKey ?? '',
        withChildren: input.withChildren ?? false,
      }),
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

const MAX_BATCH = 100;

function checkBatchSize(n: number, field: string): void {
  if (n < 1 || n > MAX_BATCH) {
    throw new GatewayError(ErrorCode.BAD_USER_INPUT, `${field} must name 1 to ${MAX_BATCH} VMs; got ${n}.`, {
      field: [field],
    });
  }
}

const bad = (field: string, message: string): never => {
  throw new GatewayError(ErrorCode.BAD_USER_INPUT, message, { field: [field] });
};

/** Range checks every VM shape shares (create, reconfigure, apply). */
export function checkShape(
  input: {
    vcpus?: number | null;
    coresPerSocket?: number | null;
    memoryMiB?: number | null;
    disks?: readonly { capacityBytes: number }[] | null;
  },
  disksField: string,
): void {
  if (input.vcpus != null && !(input.vcpus >= 1 && input.vcpus <= 768)) bad('vcpus', 'vcpus must be 1 to 768.');
  if (input.coresPerSocket != null && !(input.coresPerSocket >= 1 && input.coresPerSocket <= 768))
    bad('coresPerSocket', 'coresPerSocket must be 1 to 768.');
  if (input.memoryMiB != null && !(input.memoryMiB >= 4 && input.memoryMiB <= 24 * 1024 * 1024))
    bad('memoryMiB', 'memoryMiB must be 4 MiB to 24 TiB.');
  if (input.vcpus != null && input.coresPerSocket != null && input.vcpus % input.coresPerSocket !== 0) {
    bad('coresPerSocket', `${input.vcpus} vCPUs do not divide into sockets of ${input.coresPerSocket} cores.`);
  }
  for (const d of input.disks ?? [])
    if (d.capacityBytes < 1024 ** 2) bad(disksField, 'A new disk needs at least 1 MiB.');
}

function vmSpec(platformId: string, input: CreateVmInput): VmSpec {
  checkShape({ ...input, disks: input.disks }, 'disks');
  return {
    name: input.name,
    vcpus: input.vcpus ?? 1,
    coresPerSocket: input.coresPerSocket ?? null,
    memoryMiB: input.memoryMiB,
    guestOs: input.guestOs ?? null,
    disks: (input.disks ?? []).map((d) => ({
      capacityBytes: d.capacityBytes,
      storageNativeId: d.storageId ? nativeIdOn(platformId, d.storageId, ['disks'], 'Datastore', 'StoragePool') : null,
    })),
    nics: (input.nics ?? []).map((n) => ({
      networkNativeId: nativeIdOn(platformId, n.networkId, ['nics'], 'Network'),
    })),
    placement: placementOn(platformId, input.placement),
    tags: tagsOf(input.tags) ?? [],
    powerOn: input.powerOn ?? false,
  };
}

function reconfiguration(platformId: string, input: ReconfigureVmInput): Reconfiguration {
  checkShape({ ...input, disks: input.addDisks }, 'addDisks');
  const change: Reconfiguration = {
    vcpus: input.vcpus ?? null,
    coresPerSocket: input.coresPerSocket ?? null,
    memoryMiB: input.memoryMiB ?? null,
    addDisks: (input.addDisks ?? []).map((d) => ({
      capacityBytes: d.capacityBytes,
      storageNativeId: d.storageId
        ? nativeIdOn(platformId, d.storageId, ['addDisks'], 'Datastore', 'StoragePool')
        : null,
    })),
    removeDiskTargets: input.removeDiskTargets ?? [],
    addNics: (input.addNics ?? []).map((n) => ({
      networkNativeId: nativeIdOn(platformId, n.networkId, ['addNics'], 'Network'),
    })),
    removeNicMacs: input.removeNicMacs ?? [],
  };
  const empty = Object.values(change).every((v) => v === null || (Array.isArray(v) && v.length === 0));
  if (empty) bad('vmId', 'Nothing to change: give vcpus, memoryMiB, disks or NICs.');
  return change;
}

/** A migration's target, by the rules of the VM's own platform. */
function migration(ctx: GatewayContext, vm: VmRecord, input: MigrateVmInput): VmOperation {
  const host = decodeIdOf(input.hostId, 'Host');
  const from = ctx.registry.get(vm.platformId);
  const to = ctx.registry.get(host.platformId);
  if (!to) return bad('hostId', `No platform "${host.platformId}" is configured.`);
  if (!from) return bad('vmId', `No platform "${vm.platformId}" is configured.`);
  const limits = migrationLimits(input);
  const op = from.planMigration(vm, {
    platformId: to.id,
    platformKind: to.kind,
    platformUri: to.uri,
    hostNativeId: host.nativeId,
    storageNativeId: input.storageId
      ? nativeIdOn(vm.platformId, input.storageId, ['storageId'], 'Datastore', 'StoragePool')
      : null,
  });
  return op.kind === 'MIGRATE_VM' ? { ...op, limits } : op;
}

/** migrateVm's input fields for each limit, as user errors name them. */
const LIMIT_FIELDS = {
  bandwidthMiBps: 'bandwidthLimitMiBps',
  completionTimeoutSeconds: 'completionTimeoutSeconds',
  progressTimeoutSeconds: 'progressTimeoutSeconds',
} as const;

/** The limits migrateVm was given, each in its range (INVALID_INPUT otherwise, before anything starts). */
function migrationLimits(input: MigrateVmInput): MigrationLimits {
  const limits: MigrationLimits = {
    bandwidthMiBps: input.bandwidthLimitMiBps ?? null,
    completionTimeoutSeconds: input.completionTimeoutSeconds ?? null,
    progressTimeoutSeconds: input.progressTimeoutSeconds ?? null,
  };
  const [problem] = migrationLimitProblems(limits, LIMIT_FIELDS);
  if (problem) bad(LIMIT_FIELDS[problem.field], problem.message);
  return limits;
}

export const batchMutations: Pick<
  MutationResolvers,
  'cloneVm' | 'reconfigureVm' | 'createVm' | 'migrateVm' | 'cancelTask' | 'deployVms' | 'snapshotVms' | 'powerVms'
> = {
  cancelTask: (_r, { input }, ctx) => ctx.mutations.cancel(ctx, input),
  migrateVm: (_r, { input }, ctx) =>
    ctx.mutations.run(ctx, { mutation: 'migrateVm', input, build: (_s, vm) => migration(ctx, vm, input) }),
  createVm: (_r, { input }, ctx) =>
    ctx.mutations.runCreate(ctx, { input, build: (platformId) => vmSpec(platformId, input) }),
  reconfigureVm: (_r, { input }, ctx) =>
    ctx.mutations.run(ctx, {
      mutation: 'reconfigureVm',
      input,
      build: (_s, vm) => ({ kind: 'RECONFIGURE_VM', ...reconfiguration(vm.platformId, input) }),
    }),
  cloneVm: (_r, { input }, ctx) =>
    ctx.mutations.run(ctx, {
      mutation: 'cloneVm',
      input,
      build: (_s, vm) => ({
        kind: 'CLONE_VM',
        name: input.name,
        placement: placementOn(vm.platformId, input.placement),
        powerOn: input.powerOn ?? false,
        tags: tagsOf(input.tags),
        linked: false,
      }),
    }),
  deployVms: (_r, { input }, ctx) =>
    ctx.mutations.runBatch(ctx, {
      mutation: 'deployVms',
      input,
      items: () => {
        checkBatchSize(input.count, 'count');
        if (input.count > 1 && !NUMBERED_NAME.test(input.namePattern)) {
          throw new GatewayError(
            ErrorCode.BAD_USER_INPUT,
            'namePattern needs {n} (or {n:3}) to give each VM its own name.',
            { field: ['namePattern'] },
          );
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
              tags: tagsOf(input.tags),
              linked: false,
            }),
          };
        });
      },
    }),
  snapshotVms: (_r, { input }, ctx) => {
    const name = `${input.namePrefix ?? 'backup'}-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    return ctx.mutations.runBatch(ctx, {
      mutation: 'snapshotVms',
      input,
      items: () => {
        checkBatchSize(input.vmIds.length, 'vmIds');
        return input.vmIds.map((vmId) => ({
          mutation: 'snapshotVms',
          input: { vmId, name },
          build: () => ({
            kind: 'CREATE_SNAPSHOT' as const,
            name,
            description: input.description ?? null,
            includeMemory: input.includeMemory ?? false,
            quiesce: false,
          }),
        }));
      },
    });
  },
  powerVms: (_r, { input }, ctx) =>
    ctx.mutations.runBatch(ctx, {
      mutation: 'powerVms',
      input,
      items: () => {
        checkBatchSize(input.vmIds.length, 'vmIds');
        const { mutation, op } = POWER_ACTIONS[input.action];
        return input.vmIds.map((vmId) => ({ mutation, input: { vmId }, build: () => op }));
      },
    }),
};

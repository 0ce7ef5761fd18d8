import type { MigrationLimits } from './operations.js';
import type { TaskState } from './upstream-task.js';

/** Where a migration is in its life; it follows the task that runs it. */
export type MigrationPhase = 'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED';

/** A migration's phase for each state of its task (QUEUED: waiting for a slot under the task budget). */
export const PHASE_OF_TASK: Readonly<Record<TaskState, MigrationPhase>> = {
  QUEUED: 'PENDING',
  RUNNING: 'RUNNING',
  SUCCEEDED: 'SUCCEEDED',
  FAILED: 'FAILED',
  CANCELLED: 'CANCELLED',
};

export const FINISHED_PHASES: ReadonlySet<MigrationPhase> = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);

/** The error codes a migration ends with when the gateway stopped it (its task's `error.code`). */
export const MigrationStopCode = {
  /** cancelMigration: the task ends CANCELLED. */
  CANCELLED: 'CANCELLED',
  /** No progress for `progressTimeoutSeconds`: the task ends FAILED. */
  PROGRESS_TIMEOUT: 'MIGRATION_PROGRESS_TIMEOUT',
  /** Not finished within `completionTimeoutSeconds`: the task ends FAILED. */
  COMPLETION_TIMEOUT: 'MIGRATION_COMPLETION_TIMEOUT',
} as const;

/**
 * One live (or offline) move of a VM to another host, as the gateway keeps
 * it: one per MIGRATE_VM task, under the task's ID, with the limits it was
 * asked to keep and the transfer as the platform last reported it.
 */
export interface MigrationRecord {
  /** The ID of the task that runs it. */
  id: string;
  /** The VM's platform when the migration started (the source). */
  platformId: string;
  vmNativeId: string;
  vmName: string;
  /** The VM's host when the migration was asked for. */
  sourceHostNativeId: string | null;
  /** The VM's own platform (vSphere), or the libvirt platform of the destination host. */
  targetPlatformId: string;
  targetHostNativeId: string;
  limits: MigrationLimits;
  phase: MigrationPhase;
  /** 0 to 100; null until the platform has said. */
  progressPercent: number | null;
  /** Bytes as the platform counts the transfer (libvirt's job stats); null where it does not say (vSphere). */
  bytesTotal: number | null;
  bytesProcessed: number | null;
  bytesRemaining: number | null;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  /** Why it failed or was cancelled: its task's error. */
  error: { code: string; message: string } | null;
}

/** A migration as stored: its dates as ISO strings. */
export type StoredMigration = Omit<MigrationRecord, 'createdAt' | 'startedAt' | 'finishedAt'> & {
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
};

export function storedMigration(m: MigrationRecord): StoredMigration {
  return {
    ...m,
    createdAt: m.createdAt.toISOString(),
    startedAt: m.startedAt?.toISOString() ?? null,
    finishedAt: m.finishedAt?.toISOString() ?? null,
  };
}

export function loadedMigration(m: StoredMigration): MigrationRecord {
  const date = (s: string | null) => (s === null ? null : new Date(s));
  return { ...m, createdAt: new Date(m.createdAt), startedAt: date(m.startedAt), finishedAt: date(m.finishedAt) };
}

/** The ranges each limit must be in; outside them the request is refused (INVALID_INPUT) before anything starts. */
export const MIGRATION_LIMIT_RANGES: Readonly<Record<keyof MigrationLimits, { min: number; max: number }>> = {
  // 1 MiB/s is a throttle no one means by accident; 100 GiB/s is past any NIC.
  bandwidthMiBps: { min: 1, max: 102_400 },
  // A week: longer than any migration that can still be meant to finish.
  completionTimeoutSeconds: { min: 10, max: 604_800 },
  // Below 5 s the platform's own reporting gaps (setup, a slow poll) read as a stall.
  progressTimeoutSeconds: { min: 5, max: 86_400 },
};

/**
 * What is wrong with the limits, field by field, each named as the caller
 * named it (`names`); empty when they are fine.
 */
export function migrationLimitProblems(
  limits: MigrationLimits,
  names: Readonly<Record<keyof MigrationLimits, string>>,
): { field: keyof MigrationLimits; message: string }[] {
  const problems: { field: keyof MigrationLimits; message: string }[] = [];
  for (const field of Object.keys(MIGRATION_LIMIT_RANGES) as (keyof MigrationLimits)[]) {
    const value = limits[field];
    const { min, max } = MIGRATION_LIMIT_RANGES[field];
    if (value !== null && !(Number.isInteger(value) && value >= min && value <= max))
      problems.push({ field, message: `${names[field]} must be a whole number from ${min} to ${max}; got ${value}.` });
  }
  const { progressTimeoutSeconds: progress, completionTimeoutSeconds: completion } = limits;
  if (problems.length === 0 && progress !== null && completion !== null && progress >= completion) {
    problems.push({
      field: 'progressTimeoutSeconds',
      message: `${names.progressTimeoutSeconds} must be shorter than ${names.completionTimeoutSeconds}, or it could never apply.`,
    });
  }
  return problems;
}

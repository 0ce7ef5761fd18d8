import { randomUUID } from 'node:crypto';

import type { Logger } from 'pino';

import type { UserErrorCode } from '../model/user-errors.js';
import { JsonLinesFile } from '../state/json-lines-file.js';

/** What happened to a mutation: refused, accepted, replayed, and then how its task ended. */
export type AuditOutcome = 'REFUSED' | 'ACCEPTED' | 'REPLAYED' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED';

export interface AuditRecord {
  id: string;
  at: Date;
  caller: string;
  operation: string;
  targetId: string | null;
  /** JSON of the input, secrets redacted. */
  input: string;
  outcome: AuditOutcome;
  userErrorCodes: UserErrorCode[];
  taskId: string | null;
  /** The task's error code, when its task failed or was cancelled by the gateway. */
  errorCode: string | null;
  /** The caller's roles when it acted, as `role@tenant`; empty for entries of a task's end (see the ACCEPTED entry). */
  grants: string[];
  /** Where the request came from (the client's address as the gateway saw it); null where unknown. */
  sourceAddress: string | null;
}

const SECRET_KEYS = /^(password|secret|token|apiKey|credentials?)$/i;

/** The input as JSON with every secret-looking field replaced. */
export function redact(input: unknown): string {
  return JSON.stringify(input, (key, value: unknown) => (SECRET_KEYS.test(key) ? '[redacted]' : value));
}

type StoredRecord = Omit<AuditRecord, 'at' | 'grants' | 'sourceAddress'> &
  Partial<Pick<AuditRecord, 'grants' | 'sourceAddress'>> & { at: string };

function isStoredRecord(v: unknown): v is StoredRecord {
  const r = v as Partial<StoredRecord> | null;
  return typeof r === 'object' && r !== null && typeof r.id === 'string' && typeof r.at === 'string';
}

/**
 * Every mutation, allowed or refused, and how its task ended. Entries are
 * only ever appended: as JSON lines to the configured file, which keeps
 * them all across restarts, and in memory for queries, where the newest
 * `retain` are kept. An entry is on disk before it is visible (appends are
 * group-committed: one write and sync for all made meanwhile).
 */
export class AuditLog {
  private readonly entries: AuditRecord[] = [];
  private readonly byId = new Map<string, AuditRecord>();

  private constructor(
    private readonly file: JsonLinesFile | null,
    private readonly retain: number,
  ) {}

  /**
   * Opens the log, reading back only the newest `retain` entries of its
   * file; lines a crash tore (or that are damaged) are skipped and reported.
   */
  static async open(
    path: string | null,
    logger: Logger,
    /** Entries kept in memory for `auditLog` queries. @default 100_000 */
    retain = 100_000,
  ): Promise<AuditLog> {
    const log = new AuditLog(path ? new JsonLinesFile(path) : null, retain);
    if (!log.file) return log;
    const { values, corrupt } = await log.file.readTail<unknown>(retain);
    const unusable = corrupt.length + values.filter((v) => !isStoredRecord(v)).length;
    if (unusable > 0) {
      logger.warn(
        { file: path, skipped: unusable, first: corrupt.slice(0, 5) },
        'skipped unreadable audit lines (torn by a crash or damaged); the rest was loaded',
      );
    }
    // Entries written before grants and addresses were recorded have neither.
    for (const raw of values) {
      if (isStoredRecord(raw)) {
        log.remember({
          ...raw,
          grants: raw.grants ?? [],
          sourceAddress: raw.sourceAddress ?? null,
          at: new Date(raw.at),
        });
      }
    }
    return log;
  }

  private remember(record: AuditRecord): void {
    this.entries.push(record);
    this.byId.set(record.id, record);
    if (this.entries.length > this.retain) {
      for (const old of this.entries.splice(0, this.entries.length - this.retain)) this.byId.delete(old.id);
    }
  }

  /** Resolves with the entry once it is on disk (then it is visible). */
  async append(entry: Omit<AuditRecord, 'id' | 'at'>): Promise<AuditRecord> {
    const record: AuditRecord = { id: randomUUID(), at: new Date(), ...entry };
    await this.file?.append(record);
    this.remember(record);
    return record;
  }

  /** Oldest first. */
  all(): readonly AuditRecord[] {
    return this.entries;
  }

  get(id: string): AuditRecord | undefined {
    return this.byId.get(id);
  }

  close(): Promise<void> {
    return this.file?.close() ?? Promise.resolve();
  }
}

import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { dirname } from 'node:path';

import type { UserErrorCode } from '../model/user-errors.js';

export type AuditOutcome = 'REFUSED' | 'ACCEPTED' | 'REPLAYED';

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
}

const SECRET_KEYS = /^(password|secret|token|apiKey|credentials?)$/i;

/** The input as JSON with every secret-looking field replaced. */
export function redact(input: unknown): string {
  return JSON.stringify(input, (key, value: unknown) => (SECRET_KEYS.test(key) ? '[redacted]' : value));
}

/**
 * Every mutation, allowed or refused. Entries are only ever appended: as
 * JSON lines to the configured file, which keeps them all across restarts,
 * and in memory for queries, where the newest `retain` are kept.
 */
export class AuditLog {
  private readonly entries: AuditRecord[] = [];

  constructor(
    private readonly file: string | null,
    /** Entries kept in memory for `auditLog` queries. @default 100_000 */
    private readonly retain = 100_000,
  ) {
    if (!file) return;
    mkdirSync(dirname(file), { recursive: true });
    if (!existsSync(file)) return;
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (!line.trim()) continue;
      const raw = JSON.parse(line) as Omit<AuditRecord, 'at'> & { at: string };
      this.entries.push({ ...raw, at: new Date(raw.at) });
    }
    this.trim();
  }

  private trim(): void {
    if (this.entries.length > this.retain) this.entries.splice(0, this.entries.length - this.retain);
  }

  append(entry: Omit<AuditRecord, 'id' | 'at'>): AuditRecord {
    const record: AuditRecord = { id: randomUUID(), at: new Date(), ...entry };
    // Written before it is visible, so what a query shows is on disk.
    if (this.file) appendFileSync(this.file, `${JSON.stringify(record)}\n`, { flag: 'a' });
    this.entries.push(record);
    this.trim();
    return record;
  }

  /** Oldest first. */
  all(): readonly AuditRecord[] {
    return this.entries;
  }

  get(id: string): AuditRecord | undefined {
    return this.entries.find((e) => e.id === id);
  }
}

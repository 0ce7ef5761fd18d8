import { appendFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { pino } from 'pino';
import { describe, expect, it } from 'vitest';

import { AuditLog, type AuditRecord, redact } from '../src/mutations/audit-log.js';
import { IdempotencyKeys } from '../src/mutations/idempotency.js';
import { DurableMap } from '../src/state/durable-map.js';

const quiet = pino({ level: 'silent' });
const tempFile = (name: string) => join(mkdtempSync(join(tmpdir(), 'virt-graph-audit-')), name);
const entry = (operation: string, outcome: AuditRecord['outcome'] = 'ACCEPTED') => ({
  caller: 'ops',
  operation,
  targetId: null,
  input: '{}',
  outcome,
  userErrorCodes: [],
  taskId: null,
  errorCode: null,
  grants: ['operator@web'],
  sourceAddress: '127.0.0.1',
});

/** A logger whose lines the test reads. */
function recordingLogger() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino(
    { level: 'warn' },
    { write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) },
  );
  return { logger, lines };
}

describe('the audit log', () => {
  it('appends JSON lines and reads them back after a restart', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'virt-graph-audit-')), 'nested', 'audit.jsonl');
    const first = await AuditLog.open(file, quiet);
    const a = await first.append({ ...entry('stopVm'), targetId: 'vm-1', taskId: 't-1' });
    await first.append({ ...entry('startVm', 'REFUSED'), userErrorCodes: ['WRONG_STATE'] });
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(2);
    await first.close();

    const reopened = await AuditLog.open(file, quiet);
    expect(reopened.all().map((e) => [e.operation, e.outcome])).toEqual([
      ['stopVm', 'ACCEPTED'],
      ['startVm', 'REFUSED'],
    ]);
    expect(reopened.get(a.id)?.at).toEqual(a.at);
    await reopened.append(entry('deleteVm'));
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(3);
    await reopened.close();
  });

  it('has an entry on disk before it is visible, many appends sharing one write', async () => {
    const file = tempFile('audit.jsonl');
    const log = await AuditLog.open(file, quiet);
    const written = await Promise.all(Array.from({ length: 200 }, (_, i) => log.append(entry(`op-${i}`))));
    const onDisk = readFileSync(file, 'utf8').trim().split('\n');
    expect(onDisk).toHaveLength(200);
    expect(written.map((w) => w.operation)).toEqual(log.all().map((e) => e.operation));
    await log.close();
  });

  it('keeps the newest entries in memory and every entry in the file, reading back only the newest', async () => {
    const file = tempFile('audit.jsonl');
    const log = await AuditLog.open(file, quiet, 100);
    for (let i = 0; i < 150; i++) await log.append(entry(`op-${i}`));
    expect(log.all()).toHaveLength(100);
    expect(log.all()[0]!.operation).toBe('op-50');
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(150);
    const reopened = await AuditLog.open(file, quiet, 100);
    expect(reopened.all().map((e) => e.operation)).toEqual(log.all().map((e) => e.operation));
    await Promise.all([log.close(), reopened.close()]);
  });

  it('skips and reports a line torn by a crash instead of refusing to start, and keeps appending whole lines', async () => {
    const file = tempFile('audit.jsonl');
    const log = await AuditLog.open(file, quiet);
    await log.append(entry('first'));
    await log.append(entry('second'));
    await log.close();
    // A crash in the middle of an append: half a line, no newline.
    appendFileSync(file, '{"id":"torn","at":"2026-');
    const { logger, lines } = recordingLogger();
    const reopened = await AuditLog.open(file, logger);
    expect(reopened.all().map((e) => e.operation)).toEqual(['first', 'second']);
    expect(lines.find((l) => String(l['msg']).includes('skipped unreadable audit lines'))).toMatchObject({
      skipped: 1,
    });
    await reopened.append(entry('third'));
    await reopened.close();
    const again = await AuditLog.open(file, quiet);
    expect(again.all().map((e) => e.operation)).toEqual(['first', 'second', 'third']);
    await again.close();
  });

  it('redacts secrets in inputs wherever they are nested', () => {
    const json = redact({
      vmId: 'x',
      password: 'hunter2',
      guest: { credentials: { user: 'a' }, token: 't' },
      idempotencyKey: 'k',
    });
    expect(JSON.parse(json)).toEqual({
      vmId: 'x',
      password: '[redacted]',
      guest: { credentials: '[redacted]', token: '[redacted]' },
      idempotencyKey: 'k',
    });
    expect(json).not.toContain('hunter2');
  });
});

describe('the durable map', () => {
  it('replays its journal, skipping torn lines, and compacts it to the live entries', async () => {
    const file = tempFile('things.jsonl');
    const { map } = await DurableMap.open<number>(file);
    for (let i = 0; i < 1200; i++) await map.set(`k${i % 10}`, i);
    await map.delete('k0');
    await map.close();
    // Compaction kept the file near the live entries, not 1200 lines.
    expect(readFileSync(file, 'utf8').trim().split('\n').length).toBeLessThan(200);
    appendFileSync(file, '{"k":"k1","v":');
    const { map: reopened, corrupt } = await DurableMap.open<number>(file);
    expect(corrupt).toHaveLength(1);
    expect(reopened.size).toBe(9);
    expect(reopened.get('k0')).toBeUndefined();
    expect(reopened.get('k9')).toBe(1199);
    await reopened.close();
  });

  it('opens an empty map where there is no file yet', async () => {
    const { map, corrupt } = await DurableMap.open<string>(tempFile('none.jsonl'));
    expect([map.size, corrupt]).toEqual([0, []]);
  });
});

describe('idempotency keys', () => {
  it('run once per key, survive a reopen, refuse a key reused for another mutation, and forget past their cap', async () => {
    const file = tempFile('idempotency.jsonl');
    writeFileSync(file, '');
    const { map } = await DurableMap.open<never>(file);
    const keys = new IdempotencyKeys<number>(map as never, 60_000, 3);
    let runs = 0;
    const run = async () => ++runs;
    const as = (operation: string) => ({ operation, fingerprint: 'same input', run, binds: () => true });
    expect(await keys.once('c', 'k', as('startVm'))).toEqual({ outcome: 1, replayed: false });
    // A retry while the first run is still going waits for it.
    const [a, b] = await Promise.all([keys.once('c', 'slow', as('stopVm')), keys.once('c', 'slow', as('stopVm'))]);
    expect([a, b]).toEqual([
      { outcome: 2, replayed: false },
      { outcome: 2, replayed: true },
    ]);
    expect(await keys.once('c', 'k', as('deleteVm'))).toEqual({ reused: 'OPERATION', usedFor: 'startVm' });
    expect(await keys.once('other-caller', 'k', as('startVm'))).toEqual({ outcome: 3, replayed: false });
    await map.close();

    const { map: reopened } = await DurableMap.open<never>(file);
    const after = new IdempotencyKeys<number>(reopened as never, 60_000, 3);
    expect(await after.once('c', 'k', as('startVm'))).toEqual({ outcome: 1, replayed: true });
    for (let i = 0; i < 4; i++) await after.once('c', `n${i}`, as('startVm'));
    expect(after.size).toBe(3);
    expect(await after.once('c', 'k', as('startVm'))).toMatchObject({ replayed: false });
    await reopened.close();
  });
});

import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { AuditLog, redact } from '../src/mutations/audit-log.js';

describe('the audit log', () => {
  it('appends JSON lines and reads them back after a restart', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'virt-graph-audit-')), 'nested', 'audit.jsonl');
    const first = new AuditLog(file);
    const a = first.append({
      caller: 'ops',
      operation: 'stopVm',
      targetId: 'vm-1',
      input: '{}',
      outcome: 'ACCEPTED',
      userErrorCodes: [],
      taskId: 't-1',
    });
    first.append({
      caller: 'ops',
      operation: 'startVm',
      targetId: 'vm-1',
      input: '{}',
      outcome: 'REFUSED',
      userErrorCodes: ['WRONG_STATE'],
      taskId: null,
    });
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(2);

    const reopened = new AuditLog(file);
    expect(reopened.all().map((e) => [e.operation, e.outcome])).toEqual([
      ['stopVm', 'ACCEPTED'],
      ['startVm', 'REFUSED'],
    ]);
    expect(reopened.get(a.id)?.at).toEqual(a.at);
    reopened.append({
      caller: 'ops',
      operation: 'deleteVm',
      targetId: null,
      input: '{}',
      outcome: 'ACCEPTED',
      userErrorCodes: [],
      taskId: null,
    });
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(3);
  });

  it('keeps the newest entries in memory and every entry in the file', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'virt-graph-audit-')), 'audit.jsonl');
    const log = new AuditLog(file, 100);
    for (let i = 0; i < 150; i++) {
      log.append({
        caller: 'ops',
        operation: `op-${i}`,
        targetId: null,
        input: '{}',
        outcome: 'ACCEPTED',
        userErrorCodes: [],
        taskId: null,
      });
    }
    expect(log.all()).toHaveLength(100);
    expect(log.all()[0]!.operation).toBe('op-50');
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(150);
    expect(
      new AuditLog(file, 100)
        .all()
        .map((e) => e.operation)
        .slice(-1),
    ).toEqual(['op-149']);
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

describe('the idempotency cache', () => {
  it('forgets expired keys and keeps at most its cap, oldest first', async () => {
    const { IdempotencyCache } = await import('../src/mutations/idempotency.js');
    const cache = new IdempotencyCache<number>(60_000, 3);
    for (let i = 0; i < 5; i++) cache.remember('c', `k${i}`, 'op', Promise.resolve(i));
    expect(cache.size).toBe(3);
    expect(cache.find('c', 'k0')).toBeUndefined();
    expect(await cache.find('c', 'k4')!.value).toBe(4);
  });
});

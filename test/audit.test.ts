import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { AuditLog, redact } from '../src/audit/audit-log.js';

describe('the audit log', () => {
  it('appends JSON lines and reads them back after a restart', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'virt-graph-audit-')), 'nested', 'audit.jsonl');
    const first = new AuditLog(file);
    const a = first.append({ caller: 'ops', operation: 'stopVm', targetId: 'vm-1', input: '{}', outcome: 'ACCEPTED', userErrorCodes: [], taskId: 't-1' });
    first.append({ caller: 'ops', operation: 'startVm', targetId: 'vm-1', input: '{}', outcome: 'REFUSED', userErrorCodes: ['WRONG_STATE'], taskId: null });
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(2);

    const reopened = new AuditLog(file);
    expect(reopened.all().map((e) => [e.operation, e.outcome])).toEqual([
      ['stopVm', 'ACCEPTED'],
      ['startVm', 'REFUSED'],
    ]);
    expect(reopened.get(a.id)?.at).toEqual(a.at);
    reopened.append({ caller: 'ops', operation: 'deleteVm', targetId: null, input: '{}', outcome: 'ACCEPTED', userErrorCodes: [], taskId: null });
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(3);
  });

  it('redacts secrets in inputs wherever they are nested', () => {
    const json = redact({ vmId: 'x', password: 'hunter2', guest: { credentials: { user: 'a' }, token: 't' }, idempotencyKey: 'k' });
    expect(JSON.parse(json)).toEqual({ vmId: 'x', password: '[redacted]', guest: { credentials: '[redacted]', token: '[redacted]' }, idempotencyKey: 'k' });
    expect(json).not.toContain('hunter2');
  });
});

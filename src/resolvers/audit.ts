import type { AuditEntryResolvers, QueryResolvers } from '../generated/graphql.js';
import type { AuditRecord } from '../mutations/audit-log.js';
import { encodeId } from '../model/ids.js';
import { paginate } from './pagination.js';
import { assertReadsAudit } from './scope.js';
import { taskId } from './task.js';

/** Audit entries belong to the gateway, not to a platform. */
export const GATEWAY_SCOPE = 'gateway';

export const auditEntryId = (e: AuditRecord) =>
  encodeId({ kind: 'AuditEntry', platformId: GATEWAY_SCOPE, nativeId: e.id });

export const AuditEntry: AuditEntryResolvers = {
  id: (e) => auditEntryId(e),
  taskId: (e, _a, ctx) => {
    if (!e.taskId) return null;
    const task = ctx.tasks.get(e.taskId);
    return task ? taskId(task) : null;
  },
};

export const auditQueries: Pick<QueryResolvers, 'auditLog'> = {
  auditLog: (_root, args, ctx) => {
    assertReadsAudit(ctx);
    const f = args.filter ?? {};
    const targets = f.targetIds ? new Set(f.targetIds) : null;
    const callers = f.callers ? new Set(f.callers) : null;
    const operations = f.operations ? new Set(f.operations) : null;
    const from = f.from ? new Date(f.from).getTime() : null;
    const to = f.to ? new Date(f.to).getTime() : null;
    const entries = ctx.audit
      .all()
      .filter(
        (e) =>
          (!targets || (e.targetId !== null && targets.has(e.targetId))) &&
          (!callers || callers.has(e.caller)) &&
          (!operations || operations.has(e.operation)) &&
          (from === null || e.at.getTime() >= from) &&
          (to === null || e.at.getTime() < to),
      );
    return paginate(
      entries,
      args,
      {
        name: 'audit:AT',
        direction: args.orderBy?.direction ?? 'DESC',
        value: (e) => e.at.getTime(),
        id: auditEntryId,
      },
      ctx.limits,
    );
  },
};

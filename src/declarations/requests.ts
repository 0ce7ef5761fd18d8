import type { PlatformRegistry } from '../datasources/registry.js';
import type { DeclaredSpec } from '../model/declaration.js';
import { GatewayError } from '../model/errors.js';
import { decodeIdOf } from '../model/ids.js';
import type { UserError, UserErrorCode } from '../model/user-errors.js';
import { type AuditLog, redact } from '../mutations/audit-log.js';
import type { MutationCall } from '../mutations/pipeline.js';

/** An expected refusal of a declarative mutation, answered in its userErrors. */
export class Refusal extends Error {
  constructor(readonly userError: UserError) {
    super(userError.message);
  }
}

export const refuse = (code: UserErrorCode, message: string, field: string[] | null = null): never => {
  throw new Refusal({ code, message, field });
};

/** The platform a Platform ID names, when the caller may see it. */
export function platformOf(registry: PlatformRegistry, ctx: MutationCall, id: string, field = 'platformId'): string {
  let platformId: string;
  try {
    platformId = decodeIdOf(id, 'Platform').platformId;
  } catch (e) {
    return refuse('INVALID_INPUT', e instanceof GatewayError ? e.message : 'Not a valid ID.', [field]);
  }
  if (!registry.get(platformId) || !ctx.access.seesPlatform(platformId))
    refuse('NOT_FOUND', `No platform "${platformId}" is configured.`, [field]);
  return platformId;
}

/** The caller must be allowed to make a VM of this name where the spec puts it, filed as it says. */
export async function authorize(
  ctx: MutationCall,
  action: string,
  platformId: string,
  name: string,
  spec: Pick<DeclaredSpec, 'placement' | 'tags'>,
): Promise<void> {
  const placed = await ctx.loaders.placementOf(
    {
      platformId,
      name,
      hostNativeId: spec.placement.hostNativeId,
      clusterNativeId: spec.placement.clusterNativeId,
    },
    { folderPath: spec.placement.folderPath, resourcePoolPath: spec.placement.resourcePoolPath, tags: spec.tags },
  );
  const decision = ctx.access.may(action, placed);
  if (!decision.allowed) refuse('FORBIDDEN', decision.reason);
}

/** Writes a declarative mutation's audit entry; the input without its builder function. */
export async function audited(
  audit: AuditLog,
  ctx: MutationCall,
  operation: string,
  targetId: string,
  input: object,
  outcome: 'ACCEPTED' | 'REFUSED',
  codes: UserErrorCode[],
): Promise<void> {
  const { build: _build, ...shown } = input as { build?: unknown };
  await audit.append({
    caller: ctx.caller.id,
    operation,
    targetId,
    input: redact(shown),
    outcome,
    userErrorCodes: codes,
    taskId: null,
    errorCode: null,
    grants: ctx.access.grantNames,
    sourceAddress: ctx.remoteAddress,
  });
}

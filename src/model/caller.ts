/** How a caller proved who it is. */
export type CallerKind = 'anonymous' | 'user' | 'token';

/**
 * Who is asking: an anonymous caller (where the configuration allows one), a
 * user of an OIDC/JWT token, or a service account's API token. What a caller
 * may see and do follows from its subjects (see `subjectsOf`) through the
 * configured bindings.
 */
export interface Caller {
  /** `anonymous`, `user:<subject>` or `token:<name>`: what the audit log and the logs name. */
  id: string;
  kind: CallerKind;
  /** A user's groups, from the token's groups claim; empty otherwise. */
  groups: readonly string[];
  /** When the credential stops being valid (ms since the epoch); null when it does not. */
  expiresAt: number | null;
}

export const ANONYMOUS: Caller = { id: 'anonymous', kind: 'anonymous', groups: [], expiresAt: null };

/** The subjects a binding may name to grant roles to this caller: itself, and a user's groups. */
export function subjectsOf(caller: Caller): string[] {
  return [caller.id, ...caller.groups.map((g) => `group:${g}`)];
}

/** Expected refusals of a mutation, sent in its payload's `userErrors`. */
export type UserErrorCode =
  | 'NOT_FOUND'
  | 'WRONG_STATE'
  | 'UNSUPPORTED'
  | 'CONFLICT'
  | 'FORBIDDEN'
  | 'QUOTA_EXCEEDED'
  | 'INVALID_INPUT'
  /** The idempotency key was used for another mutation, or for this one with other input. */
  | 'IDEMPOTENCY_KEY_REUSED'
  | 'PLATFORM_UNAVAILABLE'
  /** The VM is declared (applyVm) with a run strategy this operation would undo. */
  | 'MANAGED_BY_DECLARATION';

export interface UserError {
  field: string[] | null;
  message: string;
  code: UserErrorCode;
}

import type { Caller } from '../model/caller.js';

export type Decision = { allowed: true } | { allowed: false; reason: string };

/** The one check every mutation passes: may this caller do this action to this target? */
export interface Authorizer {
  authorize(caller: Caller, action: string, targetId: string): Decision;
}

/** Until roles exist, everyone may do everything; the check still runs, and is audited. */
export const allowAll: Authorizer = {
  authorize: () => ({ allowed: true }),
};

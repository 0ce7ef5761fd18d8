/** Who is asking. Authentication comes later; until then everyone is anonymous. */
export interface Caller {
  id: string;
}

export const ANONYMOUS: Caller = { id: 'anonymous' };

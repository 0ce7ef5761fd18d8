import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

// API tokens for service accounts. A token is random and shown once (by
// `npm run create-api-token`); the configuration keeps only its SHA-256, so a
// leaked config file grants nothing. A plain hash (no salt, no slow KDF) is
// enough because the token carries 256 random bits: there is no dictionary
// to try.

/** What every API token starts with, so the gateway (and secret scanners) tell it from a JWT at a glance. */
export const API_TOKEN_PREFIX = 'vgt_';

/** Random bytes in a token: 256 bits, as much as the SHA-256 that stands for it. */
const TOKEN_BYTES = 32;

/** A new token: the prefix and 32 random bytes, base64url (47 characters in all). */
export function generateApiToken(): string {
  return `${API_TOKEN_PREFIX}${randomBytes(TOKEN_BYTES).toString('base64url')}`;
}

/** The SHA-256 of a token, as the 64 hex digits `auth.apiTokens[].sha256` holds. */
export function apiTokenSha256(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function isApiToken(token: string): boolean {
  return token.startsWith(API_TOKEN_PREFIX);
}

/** Finds tokens by their hash, comparing every configured hash in constant time. */
export class ApiTokenTable {
  private readonly entries: { name: string; digest: Buffer }[];

  constructor(tokens: readonly { name: string; sha256: string }[]) {
    this.entries = tokens.map((t) => ({ name: t.name, digest: Buffer.from(t.sha256, 'hex') }));
  }

  /** The name of the service account the token belongs to, or null when no configured hash matches. */
  nameOf(token: string): string | null {
    const digest = createHash('sha256').update(token, 'utf8').digest();
    let found: string | null = null;
    // No early exit: how long the search takes says nothing about which entry matched.
    for (const entry of this.entries) {
      if (timingSafeEqual(entry.digest, digest) && found === null) found = entry.name;
    }
    return found;
  }
}

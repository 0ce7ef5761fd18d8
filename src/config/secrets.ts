import { createCipheriv, createDecipheriv, randomBytes, scryptSync } from 'node:crypto';

/**
 * Secrets in the configuration may be stored encrypted: `enc:v1:` followed by
 * base64url(iv | tag | ciphertext) of AES-256-GCM. The key is derived with
 * scrypt from VIRT_GRAPH_SECRET_KEY; keys named in
 * VIRT_GRAPH_PREVIOUS_SECRET_KEYS (comma-separated) still decrypt, so a key
 * can be rotated without a flag day.
 */
export const SECRET_PREFIX = 'enc:v1:';

const SALT = 'virt-graph/secrets/v1';
const AAD = Buffer.from('virt-graph secret v1');
const IV_BYTES = 12;
const TAG_BYTES = 16;

export class SecretError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SecretError';
  }
}

const derived = new Map<string, Buffer>();

function keyFrom(passphrase: string): Buffer {
  let key = derived.get(passphrase);
  if (!key) {
    key = scryptSync(passphrase, SALT, 32, { N: 2 ** 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 });
    derived.set(passphrase, key);
  }
  return key;
}

export interface SecretKeys {
  current: string | undefined;
  previous: string[];
}

export function secretKeysFrom(env: NodeJS.ProcessEnv): SecretKeys {
  return {
    current: env['VIRT_GRAPH_SECRET_KEY'] || undefined,
    previous: (env['VIRT_GRAPH_PREVIOUS_SECRET_KEYS'] ?? '')
      .split(',')
      .map((k) => k.trim())
      .filter(Boolean),
  };
}

export function isEncrypted(value: string): boolean {
  return value.startsWith(SECRET_PREFIX);
}

export function encryptSecret(plain: string, passphrase: string): string {
  if (passphrase.length < 16) throw new SecretError('the secret key must be at least 16 characters long');
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', keyFrom(passphrase), iv);
  cipher.setAAD(AAD);
  const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
  return SECRET_PREFIX + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url');
}

/** Decrypts with the current key, then each previous key. Never puts the secret in an error. */
export function decryptSecret(value: string, keys: SecretKeys): string {
  if (!isEncrypted(value)) return value;
  const candidates = [keys.current, ...keys.previous].filter((k): k is string => Boolean(k));
  if (candidates.length === 0) throw new SecretError('it is encrypted but VIRT_GRAPH_SECRET_KEY is not set');
  const raw = Buffer.from(value.slice(SECRET_PREFIX.length), 'base64url');
  if (raw.length < IV_BYTES + TAG_BYTES) throw new SecretError('it is not a valid encrypted secret');
  const iv = raw.subarray(0, IV_BYTES);
  const tag = raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES);
  const body = raw.subarray(IV_BYTES + TAG_BYTES);
  for (const passphrase of candidates) {
    try {
      const decipher = createDecipheriv('aes-256-gcm', keyFrom(passphrase), iv);
      decipher.setAAD(AAD);
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(body), decipher.final()]).toString('utf8');
    } catch {
      // not this key; try the next
    }
  }
  throw new SecretError('it cannot be decrypted with VIRT_GRAPH_SECRET_KEY or any previous key');
}

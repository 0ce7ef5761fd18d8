// Encrypts a secret for the configuration file. The secret is read from
// standard input (not the command line, which shells keep in history):
//
//   VIRT_GRAPH_SECRET_KEY=... npm run --silent encrypt-secret <<< 'the password'
//
// With --rotate, the input is an enc:v1: value encrypted with a previous key
// (VIRT_GRAPH_PREVIOUS_SECRET_KEYS), printed again under the current key.
// `virt-graph encrypt-secret` runs the same functions from the built package.
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { type SecretKeys, SecretError, decryptSecret, encryptSecret, secretKeysFrom } from '../config/secrets.js';

/** Standard input whole, without the newline a shell's here-string or echo adds. */
export async function readSecretInput(input: AsyncIterable<unknown> = process.stdin): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of input) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

/** The keys to encrypt with; checked before standard input is read, so nobody types a secret for nothing. */
export function encryptionKeys(env: NodeJS.ProcessEnv): SecretKeys & { current: string } {
  const keys = secretKeysFrom(env);
  if (!keys.current)
    throw new SecretError('set VIRT_GRAPH_SECRET_KEY (at least 16 characters) to the key to encrypt with');
  return { ...keys, current: keys.current };
}

/** The enc:v1: value of `input` under the current key; with `rotate`, `input` is such a value under a previous key. */
export function encryptSecretInput(input: string, keys: SecretKeys & { current: string }, rotate: boolean): string {
  if (input.length === 0) throw new SecretError('nothing to encrypt: give the secret on standard input');
  return encryptSecret(rotate ? decryptSecret(input, keys) : input, keys.current);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rotate: { type: 'boolean' } } });
  const keys = encryptionKeys(process.env);
  const input = await readSecretInput();
  process.stdout.write(`${encryptSecretInput(input, keys, values.rotate === true)}\n`);
}

// Imported by the virt-graph command for its functions; run only as a command.
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    console.error(`encrypt-secret: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(2);
  });
}

// Encrypts a secret for the configuration file. The secret is read from
// standard input (not the command line, which shells keep in history):
//
//   VIRT_GRAPH_SECRET_KEY=... npm run --silent encrypt-secret <<< 'the password'
//
// With --rotate, the input is an enc:v1: value encrypted with a previous key
// (VIRT_GRAPH_PREVIOUS_SECRET_KEYS), printed again under the current key.
import { parseArgs } from 'node:util';

import { SecretError, decryptSecret, encryptSecret, secretKeysFrom } from '../config/secrets.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rotate: { type: 'boolean' } } });
  const keys = secretKeysFrom(process.env);
  if (!keys.current)
    throw new SecretError('set VIRT_GRAPH_SECRET_KEY (at least 16 characters) to the key to encrypt with');
  const input = await readStdin();
  if (input.length === 0) throw new SecretError('nothing to encrypt: give the secret on standard input');
  const plain = values.rotate ? decryptSecret(input, keys) : input;
  process.stdout.write(`${encryptSecret(plain, keys.current)}\n`);
}

main().catch((e: unknown) => {
  console.error(`encrypt-secret: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(2);
});

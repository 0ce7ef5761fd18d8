// Creates an API token for a service account:
//
//   npm run --silent create-api-token -- ci-deployer
//
// The token is printed once and kept nowhere: the configuration holds only
// its SHA-256 (the entry printed below it). A lost token is replaced by a new
// one, not recovered. `virt-graph create-api-token` runs the same function
// from the built package.
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { apiTokenSha256, generateApiToken } from '../server/api-tokens.js';

/** As `auth.apiTokens[].name` accepts it (the configuration's tenant and token names). */
export const API_TOKEN_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

const USAGE = 'Usage: npm run --silent create-api-token -- NAME   (NAME: 1-63 letters, digits, ".", "_" or "-")';

function main(): void {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const [name, ...rest] = positionals;
  if (name === undefined || rest.length > 0 || !API_TOKEN_NAME.test(name)) {
    console.error(USAGE);
    process.exit(2);
  }
  process.stdout.write(apiTokenInstructions(name));
}

/** A new token for `name`, with the configuration entry that keeps its hash and how clients send it. */
export function apiTokenInstructions(name: string): string {
  const token = generateApiToken();
  return [
    `API token for "${name}" (shown this once; put it in the client's secret store now):`,
    '',
    `  ${token}`,
    '',
    'Add this entry under auth.apiTokens in the configuration (only the hash is kept there):',
    '',
    `  - name: ${name}`,
    `    sha256: ${apiTokenSha256(token)}`,
    '',
    'and give it roles with a binding under auth.bindings, for example:',
    '',
    `  - subjects: ['token:${name}']`,
    '    roles: [operator]',
    "    tenants: ['*']",
    '',
    'Clients send it as the header  Authorization: Bearer <token>',
    "(on a WebSocket: connection_init payload { authorization: 'Bearer <token>' }).",
    '',
  ].join('\n');
}

// Imported by the virt-graph command for its functions; run only as a command.
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();

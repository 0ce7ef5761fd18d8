// Creates an API token for a service account:
//
//   npm run --silent create-api-token -- ci-deployer
//
// The token is printed once and kept nowhere: the configuration holds only
// its SHA-256 (the entry printed below it). A lost token is replaced by a new
// one, not recovered.
import { parseArgs } from 'node:util';

import { apiTokenSha256, generateApiToken } from '../server/api-tokens.js';

/** As `auth.apiTokens[].name` accepts it (the configuration's tenant and token names). */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

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
  if (name === undefined || rest.length > 0 || !NAME.test(name)) {
    console.error(USAGE);
    process.exit(2);
  }
  const token = generateApiToken();
  process.stdout.write(
    [
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
    ].join('\n'),
  );
}

main();

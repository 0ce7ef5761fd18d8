#!/usr/bin/env node
// The `virt-graph` command (package.json "bin"; `node dist/main.js` is the
// same command): serve the graph, check a configuration and its platforms,
// and the small tools an operator needs where no TypeScript runtime is
// installed. Every failure is one line on stderr and an exit code (see
// exit-codes.ts), never a stack trace, unless LOG_LEVEL is debug or trace.
import { readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { pino } from 'pino';

import { ConfigError, loadConfig } from '../config/load.js';
import { SecretError } from '../config/secrets.js';
import { anonymousWriteRefusal } from '../server/authentication.js';
import { ListenError } from '../server/gateway.js';
import { loadTrustedDocuments } from '../server/trusted-documents.js';
import { exactly, parseOrUsage } from './args.js';
import { API_TOKEN_NAME, apiTokenInstructions } from './create-api-token.js';
import { encryptSecretInput, encryptionKeys, readSecretInput } from './encrypt-secret.js';
import { CommandFailure, ExitCode, UsageError } from './exit-codes.js';
import { describeOutcome, tryPlatforms } from './platform-check.js';
import { checkPublishedSchema, printPublishedSchema } from './print-schema.js';
import { serve } from './serve.js';

export const USAGE = `Usage: virt-graph [COMMAND] [OPTIONS]

Commands:
  serve [--config FILE]                 serve the graph (the default command)
  check-config FILE [--offline]         validate FILE, then try each platform it names
  test-connection PLATFORM [--config FILE]
                                        try one platform of the configuration serve would use
  encrypt-secret [--rotate]             encrypt the secret on stdin with VIRT_GRAPH_SECRET_KEY
  create-api-token NAME                 make an API token for a service account
  print-schema [--out FILE | --check FILE]
                                        the published schema (SDL)

  virt-graph COMMAND --help             a command's options
  virt-graph --version                  the version

Exit codes: 0 ok, 1 failure, 2 usage error, 3 invalid configuration,
4 platform unreachable, 5 cannot listen on the address.`;

const CHECK_CONFIG_USAGE = `Usage: virt-graph check-config FILE [--offline] [--timeout SECONDS]

Validates FILE as serve would (with PORT, HOST, LOG_LEVEL and the secret keys
from the environment), then makes one connection attempt to each platform it
names and prints one line per platform.

  --offline           validate only; contact no platform
  --timeout SECONDS   how long each platform may take to answer (default: 10)

Exit codes: 0 valid and every platform connected, 3 invalid, 4 a platform
unreachable, refused the credentials or did not answer in time.`;

const TEST_CONNECTION_USAGE = `Usage: virt-graph test-connection PLATFORM [--config FILE] [--timeout SECONDS]

Makes one connection attempt to the platform with the ID PLATFORM, from the
configuration serve would use (--config, else VIRT_GRAPH_CONFIG, else the
embedded default), and prints one line.

  -c, --config FILE   the configuration
  --timeout SECONDS   how long the platform may take to answer (default: 10)

Exit codes: 0 connected, 2 no such platform, 3 invalid configuration,
4 unreachable, credentials refused or no answer in time.`;

const ENCRYPT_SECRET_USAGE = `Usage: virt-graph encrypt-secret [--rotate] < secret

Prints the secret read from stdin encrypted (enc:v1:...) with the key in
VIRT_GRAPH_SECRET_KEY, for a password in the configuration. Stdin, not an
argument: shells keep arguments in their history.

  --rotate   the input is an enc:v1: value under a previous key
             (VIRT_GRAPH_PREVIOUS_SECRET_KEYS); print it under the current one`;

const CREATE_API_TOKEN_USAGE = `Usage: virt-graph create-api-token NAME

Prints a new API token for the service account NAME (1-63 letters, digits,
".", "_" or "-") once, and the configuration entry that holds only its hash.`;

const PRINT_SCHEMA_USAGE = `Usage: virt-graph print-schema [--out FILE | --check FILE]

Prints the published schema (SDL), or writes it to FILE, or (--check) exits 1
when FILE differs from the schema this build serves.`;

/** @default 10_000 // 10 seconds */
const DEFAULT_PLATFORM_TIMEOUT_MS = 10_000;

const COMMANDS: Record<string, (args: string[]) => Promise<ExitCode>> = {
  serve: (args) => serve(args),
  'check-config': checkConfig,
  'test-connection': testConnection,
  'encrypt-secret': encryptSecretCommand,
  'create-api-token': createApiToken,
  'print-schema': printSchema,
};

/** Runs one command line (without `node` and the script); resolves with the exit code. */
export async function runVirtGraph(argv: readonly string[]): Promise<ExitCode> {
  try {
    return await dispatch(argv);
  } catch (e) {
    return report(e);
  }
}

function dispatch(argv: readonly string[]): Promise<ExitCode> {
  const [first, ...rest] = argv;
  if (first === '-h' || first === '--help' || first === 'help') {
    out(USAGE);
    return Promise.resolve(ExitCode.OK);
  }
  if (first === '-v' || first === '--version') {
    out(version());
    return Promise.resolve(ExitCode.OK);
  }
  // With no command, or options only, it serves: `node dist/main.js --config FILE` as before commands existed.
  if (first === undefined || first.startsWith('-')) {
    return serve(argv).catch((e: unknown) => {
      throw e instanceof UsageError ? new UsageError(e.message, USAGE) : e;
    });
  }
  const command = COMMANDS[first];
  if (!command) throw new UsageError(`unknown command '${first}'`, USAGE);
  return command(rest);
}

function report(e: unknown): ExitCode {
  if (e instanceof UsageError) {
    err(`virt-graph: ${e.message}\n\n${e.usage}`);
    return ExitCode.USAGE;
  }
  if (e instanceof ConfigError || e instanceof SecretError) {
    err(`virt-graph: ${e.message}`);
    return ExitCode.CONFIG;
  }
  if (e instanceof ListenError) {
    err(`virt-graph: ${e.message}`);
    return ExitCode.LISTEN;
  }
  if (e instanceof CommandFailure) {
    err(`virt-graph: ${e.message}`);
    return e.exitCode;
  }
  // An error nobody worded for the operator: its message, and where it came from only when asked.
  err(`virt-graph: failed: ${e instanceof Error ? e.message : String(e)}`);
  if (['debug', 'trace'].includes(process.env['LOG_LEVEL'] ?? '') && e instanceof Error && e.stack) err(e.stack);
  return ExitCode.FAILURE;
}

async function checkConfig(args: string[]): Promise<ExitCode> {
  const { values, positionals } = parseOrUsage(CHECK_CONFIG_USAGE, () =>
    parseArgs({
      args,
      options: { offline: { type: 'boolean' }, timeout: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    }),
  );
  if (values.help) return help(CHECK_CONFIG_USAGE);
  const [file] = exactly(positionals, ['FILE'], CHECK_CONFIG_USAGE) as [string];
  if (file === '') throw new UsageError('FILE is empty', CHECK_CONFIG_USAGE);
  const timeoutMs = timeoutFrom(values.timeout, CHECK_CONFIG_USAGE);
  const { config } = loadConfig({ path: file });
  // What startGateway refuses before it opens anything, so that a file that passes here also starts.
  const exposure = anonymousWriteRefusal(config.server.host, config.auth);
  if (exposure) throw new ConfigError(exposure);
  loadTrustedDocuments(config.server.trustedDocuments, pino({ level: 'silent' }));
  const count = config.platforms.length;
  out(`${file}: valid (${count} platform${count === 1 ? '' : 's'})`);
  if (values.offline) return ExitCode.OK;
  const outcomes = await tryPlatforms(config.platforms, timeoutMs);
  for (const o of outcomes) out(describeOutcome(o));
  const connected = outcomes.filter((o) => o.status === 'CONNECTED').length;
  out(`${connected} of ${count} platform${count === 1 ? '' : 's'} connected`);
  return connected === count ? ExitCode.OK : ExitCode.PLATFORM;
}

async function testConnection(args: string[]): Promise<ExitCode> {
  const { values, positionals } = parseOrUsage(TEST_CONNECTION_USAGE, () =>
    parseArgs({
      args,
      options: {
        config: { type: 'string', short: 'c' },
        timeout: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
      strict: true,
    }),
  );
  if (values.help) return help(TEST_CONNECTION_USAGE);
  const [id] = exactly(positionals, ['PLATFORM'], TEST_CONNECTION_USAGE) as [string];
  const timeoutMs = timeoutFrom(values.timeout, TEST_CONNECTION_USAGE);
  const { config, source } = loadConfig({ path: values.config });
  const platform = config.platforms.find((p) => p.id === id);
  if (!platform) {
    const known = config.platforms.map((p) => p.id).join(', ');
    throw new UsageError(`no platform '${id}' in ${source} (it has: ${known})`, TEST_CONNECTION_USAGE);
  }
  const [outcome] = await tryPlatforms([platform], timeoutMs);
  out(describeOutcome(outcome!));
  return outcome!.status === 'CONNECTED' ? ExitCode.OK : ExitCode.PLATFORM;
}

async function encryptSecretCommand(args: string[]): Promise<ExitCode> {
  const { values } = parseOrUsage(ENCRYPT_SECRET_USAGE, () =>
    parseArgs({ args, options: { rotate: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true }),
  );
  if (values.help) return help(ENCRYPT_SECRET_USAGE);
  const keys = encryptionKeys(process.env);
  const input = await readSecretInput(process.stdin);
  if (input.length === 0) throw new UsageError('nothing to encrypt: give the secret on stdin', ENCRYPT_SECRET_USAGE);
  out(encryptSecretInput(input, keys, values.rotate === true));
  return ExitCode.OK;
}

function createApiToken(args: string[]): Promise<ExitCode> {
  const { values, positionals } = parseOrUsage(CREATE_API_TOKEN_USAGE, () =>
    parseArgs({ args, options: { help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true }),
  );
  if (values.help) return help(CREATE_API_TOKEN_USAGE);
  const [name] = exactly(positionals, ['NAME'], CREATE_API_TOKEN_USAGE) as [string];
  if (!API_TOKEN_NAME.test(name)) throw new UsageError(`'${name}' is not a valid token name`, CREATE_API_TOKEN_USAGE);
  process.stdout.write(apiTokenInstructions(name));
  return Promise.resolve(ExitCode.OK);
}

function printSchema(args: string[]): Promise<ExitCode> {
  const { values } = parseOrUsage(PRINT_SCHEMA_USAGE, () =>
    parseArgs({
      args,
      options: { out: { type: 'string' }, check: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    }),
  );
  if (values.help) return help(PRINT_SCHEMA_USAGE);
  if (values.out !== undefined && values.check !== undefined) {
    throw new UsageError('--out and --check exclude each other', PRINT_SCHEMA_USAGE);
  }
  if (values.check !== undefined) {
    const problem = checkPublishedSchema(values.check);
    if (problem) throw new CommandFailure(problem, ExitCode.FAILURE);
    return Promise.resolve(ExitCode.OK);
  }
  const sdl = printPublishedSchema();
  if (values.out !== undefined) writeFileSync(values.out, sdl);
  else process.stdout.write(sdl);
  return Promise.resolve(ExitCode.OK);
}

function timeoutFrom(value: string | undefined, usage: string): number {
  if (value === undefined) return DEFAULT_PLATFORM_TIMEOUT_MS;
  const seconds = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value) || seconds <= 0) {
    throw new UsageError(`--timeout takes a number of seconds above 0, not '${value}'`, usage);
  }
  return Math.round(seconds * 1000);
}

function version(): string {
  // Two levels up from src/cli/ and from dist/cli/ alike: the package root.
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function help(usage: string): Promise<ExitCode> {
  out(usage);
  return Promise.resolve(ExitCode.OK);
}

function out(text: string): void {
  process.stdout.write(`${text}\n`);
}

function err(text: string): void {
  process.stderr.write(`${text}\n`);
}

/** Whether this module is the program (the bin link or `node dist/cli/virt-graph.js`), not imported by main.ts. */
function isProgram(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isProgram()) process.exit(await runVirtGraph(process.argv.slice(2)));

import { UsageError } from './exit-codes.js';

const ARGS_ERRORS = new Set([
  'ERR_PARSE_ARGS_UNKNOWN_OPTION',
  'ERR_PARSE_ARGS_INVALID_OPTION_VALUE',
  'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL',
]);

/**
 * Runs a `parseArgs` call and turns what it refuses into a UsageError: its
 * own messages run on with advice about `--` that only confuses, and its
 * TypeError would otherwise reach the operator as a stack trace.
 */
export function parseOrUsage<T>(usage: string, parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (!(e instanceof Error) || typeof code !== 'string' || !ARGS_ERRORS.has(code)) throw e;
    const first = e.message.split(/\.(?:\s|$)/)[0] ?? e.message;
    throw new UsageError(first.charAt(0).toLowerCase() + first.slice(1), usage);
  }
}

/** The positionals a command takes, exactly: a missing or an extra one is a usage error. */
export function exactly(positionals: readonly string[], names: readonly string[], usage: string): string[] {
  if (positionals.length < names.length) throw new UsageError(`missing ${names[positionals.length]}`, usage);
  if (positionals.length > names.length)
    throw new UsageError(`unexpected argument '${positionals[names.length]}'`, usage);
  return [...positionals];
}

// The breaking-change gate: the schema the gateway serves, compared with the
// schema as last released (schema-history/released.graphql). A change that
// would break an operation a client already ships (a field removed, an
// argument made required, an enum value removed) fails the check unless
// schema-history/intended-breaking-changes.json names it, with a reason and a
// date. Changes that may only surprise a client (an enum value added, a new
// optional argument) are printed as warnings.
//
//   npm run schema:check                              # the gate, as CI runs it (test/schema-breaking.test.ts)
//   npm run schema:check -- --schema FILE             # another schema instead of the built one
//   npm run schema:check -- --baseline FILE --intended FILE
//   npm run schema:check -- --release                 # at a release: new baseline, empty intended list
//
// A development tool: nothing the server runs imports it.
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import {
  BreakingChangeType,
  DangerousChangeType,
  type GraphQLSchema,
  buildSchema,
  findBreakingChanges,
  findDangerousChanges,
} from 'graphql';
import { z } from 'zod';

import { printPublishedSchema } from '../cli/print-schema.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const BASELINE_FILE = resolve(ROOT, 'schema-history/released.graphql');
export const INTENDED_FILE = resolve(ROOT, 'schema-history/intended-breaking-changes.json');

const BASELINE_HEADER =
  '# The virt-graph schema as last released: the breaking-change gate (npm run schema:check) compares\n' +
  '# the current schema with it. Written at a release by `npm run schema:check -- --release`; not edited by hand.\n\n';

const intendedChange = z
  .object({
    /** The change exactly as graphql-js words it (`VirtualMachine.memoryMiB was removed.`), as the check prints it. */
    change: z.string().min(1),
    /** Why clients may be broken: what replaces the old shape, who was told. */
    reason: z.string().min(1),
    /** When the change was decided, YYYY-MM-DD. */
    date: z.iso.date(),
  })
  .strict();
export type IntendedChange = z.infer<typeof intendedChange>;

const intendedFile = z.object({ changes: z.array(intendedChange) }).strict();

/** One difference between the released and the current schema. */
export interface SchemaChange {
  type: BreakingChangeType | DangerousChangeType;
  description: string;
}

export interface GateReport {
  /** Breaking changes not marked intended: each one fails the gate. */
  unintended: SchemaChange[];
  /** Breaking changes marked intended: allowed, listed so a reviewer sees them. */
  intended: SchemaChange[];
  /** Changes that may surprise a client (warnings; never fail). */
  dangerous: SchemaChange[];
  /** Entries of the intended list that match no change: left over from an earlier release, or misspelt. */
  unmatched: IntendedChange[];
}

/** Reads the intended list; a malformed file fails with what is wrong in it and where. */
export function readIntendedChanges(file: string): IntendedChange[] {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const parsed = intendedFile.safeParse(json);
  if (!parsed.success) {
    const [issue] = parsed.error.issues;
    throw new Error(`${file}: ${issue?.path.join('.') || '(top level)'}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data.changes;
}

/** Compares two schemas with graphql-js's own rules, and sorts what it finds by the intended list. */
export function checkSchemaChanges(
  released: GraphQLSchema,
  current: GraphQLSchema,
  intendedChanges: readonly IntendedChange[],
): GateReport {
  const marked = new Set(intendedChanges.map((c) => c.change.trim()));
  const breaking: SchemaChange[] = findBreakingChanges(released, current);
  const found = new Set(breaking.map((c) => c.description));
  return {
    unintended: breaking.filter((c) => !marked.has(c.description)),
    intended: breaking.filter((c) => marked.has(c.description)),
    dangerous: findDangerousChanges(released, current),
    unmatched: intendedChanges.filter((c) => !found.has(c.change.trim())),
  };
}

/** Whether the gate passes. */
export function passes(report: GateReport): boolean {
  return report.unintended.length === 0;
}

/** The report as the command prints it: failures first, each change on a line of its own. */
export function formatReport(
  report: GateReport,
  intendedFile = 'schema-history/intended-breaking-changes.json',
): string {
  const lines: string[] = [];
  const list = (changes: readonly SchemaChange[]) => changes.map((c) => `  ${c.type}: ${c.description}`);
  if (report.unintended.length > 0) {
    lines.push(
      `${report.unintended.length} breaking change(s) not marked intended:`,
      ...list(report.unintended),
      `Restore what clients use, or add each change (its text after the colon) to ${intendedFile} with a reason and a date.`,
    );
  }
  if (report.intended.length > 0) lines.push('Breaking changes marked intended:', ...list(report.intended));
  if (report.dangerous.length > 0)
    lines.push('Warnings (may change what existing clients see):', ...list(report.dangerous));
  if (report.unmatched.length > 0) {
    lines.push(
      `Entries of ${intendedFile} that match no change (fixed since, or misspelt):`,
      ...report.unmatched.map((c) => `  ${c.change}`),
    );
  }
  if (passes(report)) lines.push('No breaking change to the released schema that is not marked intended.');
  return `${lines.join('\n')}\n`;
}

/** Reads an SDL file as a schema; the file named in the error when it does not read back. */
export function readSchemaFile(file: string): GraphQLSchema {
  try {
    return buildSchema(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/**
 * The release step: the current schema becomes the baseline and the intended
 * list starts empty, so the next release's breaking changes are all new
 * decisions. Written as Prettier would, so `npm run format:check` passes.
 */
export async function writeRelease(baselineFile = BASELINE_FILE, intendedListFile = INTENDED_FILE): Promise<void> {
  const { format, resolveConfig } = await import('prettier');
  const sdl = BASELINE_HEADER + printPublishedSchema().replace(/^(#.*\n)+\n/, '');
  const options = { ...(await resolveConfig(baselineFile)), filepath: baselineFile };
  writeFileSync(baselineFile, await format(sdl, options));
  writeFileSync(
    intendedListFile,
    await format(JSON.stringify({ changes: [] }), { ...options, filepath: intendedListFile }),
  );
}

const USAGE = 'Usage: npm run schema:check [-- --schema FILE] [--baseline FILE] [--intended FILE] | [-- --release]';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      schema: { type: 'string' },
      baseline: { type: 'string' },
      intended: { type: 'string' },
      release: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const baselineFile = values.baseline ?? BASELINE_FILE;
  const intendedListFile = values.intended ?? INTENDED_FILE;
  if (values.release) {
    if (values.schema !== undefined) {
      console.error(`${USAGE}\n--release writes the schema the gateway serves; --schema does not apply.`);
      return 2;
    }
    await writeRelease(baselineFile, intendedListFile);
    console.log(`Wrote ${baselineFile} and emptied ${intendedListFile}.`);
    return 0;
  }
  const current = values.schema !== undefined ? readSchemaFile(values.schema) : buildSchema(printPublishedSchema());
  const report = checkSchemaChanges(readSchemaFile(baselineFile), current, readIntendedChanges(intendedListFile));
  const text = formatReport(report, values.intended ?? 'schema-history/intended-breaking-changes.json');
  if (passes(report)) {
    process.stdout.write(text);
    return 0;
  }
  process.stderr.write(text);
  return 1;
}

// Imported by the tests for its functions; run only as a command.
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      console.error(`schema:check: ${e instanceof Error ? e.message : String(e)}`);
      process.exitCode = 2;
    },
  );
}

import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

import { type ASTVisitor, type GraphQLSchema, Kind, buildSchema, parse, print, visit } from 'graphql';
import { afterAll, describe, expect, it } from 'vitest';

import { printPublishedSchema } from '../src/cli/print-schema.js';
import {
  BASELINE_FILE,
  INTENDED_FILE,
  checkSchemaChanges,
  formatReport,
  passes,
  readIntendedChanges,
  readSchemaFile,
  writeRelease,
} from '../src/schema-checks/breaking.js';

// The breaking-change gate, as CI runs it: the real schema against the
// released baseline passes (or this file fails and says what broke); a copy
// of the schema with three deliberate breaking changes fails, naming each;
// and passes once a fixture list marks them intended. The breaking copy is
// derived from the current schema rather than kept as a file, so it never
// drifts from the contract it breaks.

const run = promisify(execFile);
const root = resolve(import.meta.dirname, '..');
const tsx = join(root, 'node_modules/.bin/tsx');
const cli = join(root, 'src/schema-checks/breaking.ts');
const FIXTURE_INTENDED = join(root, 'test/fixtures/schema-breaking/intended-breaking-changes.json');
const dir = mkdtempSync(join(tmpdir(), 'virt-graph-schema-breaking-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const BREAKING = [
  'VirtualMachine.memoryMiB was removed.',
  'Query.virtualMachines arg first has changed type from Int to Int!.',
  'PAUSED was removed from enum type PowerState.',
];

/** The current schema, edited: `edit` returns a replacement for a definition, or undefined to keep it. */
function editedSchema(edit: ASTVisitor): string {
  return print(visit(parse(printPublishedSchema()), edit));
}

/** The contract with a field removed, a nullable argument made non-null and an enum value removed. */
function breakingSchema(): string {
  return editedSchema({
    ObjectTypeDefinition(node) {
      if (node.name.value === 'VirtualMachine') {
        return { ...node, fields: node.fields?.filter((f) => f.name.value !== 'memoryMiB') };
      }
      if (node.name.value !== 'Query') return undefined;
      const fields = node.fields?.map((field) => {
        if (field.name.value !== 'virtualMachines') return field;
        const args = field.arguments?.map((arg) => {
          if (arg.name.value !== 'first') return arg;
          if (arg.type.kind === Kind.NON_NULL_TYPE) throw new Error('virtualMachines(first:) is already non-null');
          return { ...arg, type: { kind: Kind.NON_NULL_TYPE, type: arg.type } };
        });
        return { ...field, arguments: args };
      });
      return { ...node, fields };
    },
    EnumTypeDefinition(node) {
      if (node.name.value !== 'PowerState') return undefined;
      return { ...node, values: node.values?.filter((v) => v.name.value !== 'PAUSED') };
    },
  });
}

function write(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

const current = (): GraphQLSchema => buildSchema(printPublishedSchema());
const released = () => readSchemaFile(BASELINE_FILE);
const schemaCheck = (...args: string[]) => run(tsx, [cli, ...args], { cwd: root });

describe('the breaking-change gate', () => {
  it('passes on the schema the gateway serves, against the released baseline', async () => {
    const report = checkSchemaChanges(released(), current(), readIntendedChanges(INTENDED_FILE));
    // The report alone says which change broke what, and what to do.
    if (!passes(report)) throw new Error(formatReport(report));
    const { stdout } = await schemaCheck();
    expect(stdout).toContain('No breaking change to the released schema that is not marked intended.');
  });

  it('fails on a schema with deliberate breaking changes, naming each', async () => {
    const report = checkSchemaChanges(released(), buildSchema(breakingSchema()), []);
    expect(passes(report)).toBe(false);
    expect(report.unintended.map((c) => c.description).sort()).toEqual([...BREAKING].sort());
    expect(report.unintended.map((c) => c.type).sort()).toEqual([
      'ARG_CHANGED_KIND',
      'FIELD_REMOVED',
      'VALUE_REMOVED_FROM_ENUM',
    ]);

    const schema = write('breaking.graphql', breakingSchema());
    const failed = await schemaCheck('--schema', schema).then(
      () => expect.fail('schema:check passed a breaking schema'),
      (e: { code: number; stderr: string }) => e,
    );
    expect(failed.code).toBe(1);
    for (const change of BREAKING) expect(failed.stderr).toContain(change);
    expect(failed.stderr).toContain('3 breaking change(s) not marked intended');
  });

  it('passes once those changes are marked intended, and lists them for the reviewer', async () => {
    const intended = readIntendedChanges(FIXTURE_INTENDED);
    const report = checkSchemaChanges(released(), buildSchema(breakingSchema()), intended);
    expect(passes(report)).toBe(true);
    expect(report.intended.map((c) => c.description).sort()).toEqual([...BREAKING].sort());
    expect(report.unmatched).toEqual([]);

    const schema = write('breaking-intended.graphql', breakingSchema());
    const { stdout } = await schemaCheck('--schema', schema, '--intended', FIXTURE_INTENDED);
    expect(stdout).toContain('Breaking changes marked intended:');
    for (const change of BREAKING) expect(stdout).toContain(change);
  });

  it('still fails on the one change left unmarked', () => {
    const intended = readIntendedChanges(FIXTURE_INTENDED).filter((c) => !c.change.startsWith('PAUSED'));
    const report = checkSchemaChanges(released(), buildSchema(breakingSchema()), intended);
    expect(report.unintended.map((c) => c.description)).toEqual(['PAUSED was removed from enum type PowerState.']);
  });

  it('reports changes that may surprise a client as warnings, without failing', () => {
    const added = editedSchema({
      EnumTypeDefinition(node) {
        if (node.name.value !== 'PowerState') return undefined;
        const value = { kind: Kind.ENUM_VALUE_DEFINITION, name: { kind: Kind.NAME, value: 'HIBERNATED' } } as const;
        return { ...node, values: [...(node.values ?? []), value] };
      },
    });
    // Against the schema served now: changes since the release are not this test's.
    const report = checkSchemaChanges(current(), buildSchema(added), []);
    expect(passes(report)).toBe(true);
    expect(report.dangerous).toEqual([
      { type: 'VALUE_ADDED_TO_ENUM', description: 'HIBERNATED was added to enum type PowerState.' },
    ]);
    expect(formatReport(report)).toContain('Warnings (may change what existing clients see):');
  });

  it('names entries of the intended list that match no change', () => {
    const report = checkSchemaChanges(released(), current(), readIntendedChanges(FIXTURE_INTENDED));
    expect(report.unmatched.map((c) => c.change)).toEqual(BREAKING);
    expect(passes(report)).toBe(true);
  });

  it('refuses an intended list without a reason or a date, naming the entry', () => {
    const file = write('bad-intended.json', JSON.stringify({ changes: [{ change: BREAKING[0], date: '2026-11-01' }] }));
    expect(() => readIntendedChanges(file)).toThrow(`${file}: changes.0.reason:`);
    writeFileSync(file, JSON.stringify({ changes: [{ change: BREAKING[0], reason: 'r', date: 'soon' }] }));
    expect(() => readIntendedChanges(file)).toThrow(`${file}: changes.0.date:`);
  });

  it('at a release, takes the current schema as the baseline and empties the intended list', async () => {
    const baseline = join(dir, 'released.graphql');
    const intended = write('intended.json', readFileSync(FIXTURE_INTENDED, 'utf8'));
    await writeRelease(baseline, intended);
    expect(readIntendedChanges(intended)).toEqual([]);
    const report = checkSchemaChanges(readSchemaFile(baseline), current(), []);
    expect(report).toEqual({ unintended: [], intended: [], dangerous: [], unmatched: [] });
    expect(readFileSync(baseline, 'utf8')).toMatch(/^# The virt-graph schema as last released/);
  });
});

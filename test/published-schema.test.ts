import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

import { buildSchema } from 'graphql';
import { afterAll, describe, expect, it } from 'vitest';

import { checkPublishedSchema, printPublishedSchema } from '../src/cli/print-schema.js';

// schema.graphql at the repository root is the contract frontend teams build
// against (docs/clients.md): it must be the schema the gateway serves, and
// `npm run print-schema` must say so, or say what to run.

const run = promisify(execFile);
const root = resolve(import.meta.dirname, '..');
const dir = mkdtempSync(join(tmpdir(), 'virt-graph-schema-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the published schema (schema.graphql)', () => {
  it('is the schema the gateway serves', () => {
    const problem = checkPublishedSchema(join(root, 'schema.graphql'), 'schema.graphql');
    // The message alone says what to run.
    if (problem !== undefined) throw new Error(problem);
  });

  it('reads back as a schema, with its directive definitions', () => {
    const schema = buildSchema(readFileSync(join(root, 'schema.graphql'), 'utf8'));
    expect(schema.getDirective('listSize')?.args.map((a) => a.name)).toEqual(['assumedSize', 'slicingArgument']);
    expect(schema.getType('Node')).toBeDefined();
  });

  it('npm run print-schema writes it, and --check refuses a stale copy with what to run', async () => {
    const tsx = join(root, 'node_modules/.bin/tsx');
    const cli = join(root, 'src/cli/print-schema.ts');
    const file = join(dir, 'schema.graphql');
    await run(tsx, [cli, '--out', file], { cwd: root });
    expect(readFileSync(file, 'utf8')).toBe(printPublishedSchema());
    await expect(run(tsx, [cli, '--check', file], { cwd: root })).resolves.toMatchObject({ stderr: '' });

    writeFileSync(file, readFileSync(file, 'utf8').replace('type Query {', 'type Query {\n  removedField: Int\n'));
    await expect(run(tsx, [cli, '--check', file], { cwd: root })).rejects.toMatchObject({
      code: 1,
      stderr: `${file} is out of date: run npm run print-schema -- --out ${file}\n`,
    });
  });

  it('names the file and the command in its message', () => {
    expect(checkPublishedSchema(join(dir, 'absent.graphql'), 'schema.graphql')).toBe(
      'schema.graphql is missing: run npm run print-schema -- --out schema.graphql',
    );
    writeFileSync(join(dir, 'old.graphql'), 'type Query { a: Int }\n');
    expect(checkPublishedSchema(join(dir, 'old.graphql'), 'schema.graphql')).toBe(
      'schema.graphql is out of date: run npm run print-schema -- --out schema.graphql',
    );
  });
});

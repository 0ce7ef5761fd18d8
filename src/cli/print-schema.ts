// Prints the gateway's schema as one SDL document: the published contract
// (schema.graphql at the repository root) that frontend teams and their tools
// (GraphQL Code Generator, IDE plugins, cache configuration) read without
// running a gateway.
//
//   npm run --silent print-schema                        # to standard output
//   npm run print-schema -- --out schema.graphql         # (re)writes the file
//   npm run print-schema -- --check schema.graphql       # exit 1 when the file is out of date
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { type GraphQLSchema, buildSchema, lexicographicSortSchema, printSchema } from 'graphql';

import { buildGatewaySchema } from '../server/schema.js';

const HEADER =
  '# The virt-graph schema, generated from schema/*.graphql by `npm run print-schema -- --out schema.graphql`.\n' +
  '# Do not edit: CI fails when this file differs from the schema the gateway serves.\n\n';

/**
 * The schema as published. Sorted by name, so a type moved between the
 * files under schema/ or a field reordered there leaves no diff. Directive
 * definitions (`@listSize`) are kept; their uses on fields are not, because
 * graphql-js prints none: clients do not need them.
 */
export function printPublishedSchema(schema: GraphQLSchema = buildGatewaySchema()): string {
  const sdl = HEADER + printSchema(lexicographicSortSchema(schema)) + '\n';
  // A document that does not read back as a schema would only fail later, in a
  // client's build: refuse to publish it.
  buildSchema(sdl);
  return sdl;
}

/** Why `file` is not the current schema (one line), or undefined when it is. `label` names it in the message. */
export function checkPublishedSchema(file: string, label = file, current = printPublishedSchema()): string | undefined {
  let published: string;
  try {
    published = readFileSync(file, 'utf8');
  } catch {
    return `${label} is missing: run npm run print-schema -- --out ${label}`;
  }
  return published === current ? undefined : `${label} is out of date: run npm run print-schema -- --out ${label}`;
}

const USAGE = 'Usage: npm run --silent print-schema [-- --out FILE | --check FILE]';

function main(): void {
  const { values } = parseArgs({
    options: { out: { type: 'string' }, check: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (values.out !== undefined && values.check !== undefined) {
    console.error(USAGE);
    process.exit(2);
  }
  if (values.check !== undefined) {
    const problem = checkPublishedSchema(values.check);
    if (problem) {
      console.error(problem);
      process.exit(1);
    }
    return;
  }
  const sdl = printPublishedSchema();
  if (values.out !== undefined) writeFileSync(values.out, sdl);
  else process.stdout.write(sdl);
}

// Imported by the tests and the client kit's generator for its functions; run only as a command.
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    main();
  } catch (e: unknown) {
    console.error(`print-schema: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(2);
  }
}

import { execFile } from 'node:child_process';
import {
  copyFileSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

import { parse, specifiedRules, validate } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { staleClientKitFiles } from '../examples/client/generate.js';
import { validateConfig } from '../src/config/load.js';
import { limitRules, operationCost } from '../src/server/limits.js';
import { buildGatewaySchema } from '../src/server/schema.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';

// The client kit frontend teams start from (docs/clients.md, examples/client/):
// its cache configuration is what the schema gives, its GraphQL examples are
// valid, and its GraphQL Code Generator example builds against the published
// schema.graphql and runs against a real gateway (libvirt's test driver).

const run = promisify(execFile);
const root = resolve(import.meta.dirname, '..');
const bin = (name: string) => join(root, 'node_modules/.bin', name);
const PLATFORMS = [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }];

describe('the client kit', () => {
  it('has the cache configuration the schema gives (possible types, type policies, Graphcache keys)', async () => {
    expect(await staleClientKitFiles()).toEqual([]);
  });

  it('has GraphQL examples in docs/clients.md that are valid under the default limits', () => {
    const docs = readFileSync(join(root, 'docs/clients.md'), 'utf8');
    const examples = [...docs.matchAll(/```graphql\n([\s\S]*?)```/g)].map((m) => m[1] as string);
    expect(examples.length).toBeGreaterThanOrEqual(3);
    const schema = buildGatewaySchema();
    const { limits } = validateConfig({ platforms: PLATFORMS });
    for (const example of examples) {
      const document = parse(example, { maxTokens: limits.maxTokens });
      expect(validate(schema, document, [...specifiedRules, ...limitRules(limits)]).map((e) => e.message)).toEqual([]);
      expect(operationCost(schema, document, null, {}, limits)).toBeLessThanOrEqual(limits.maxCost);
    }
  });
});

describe('the GraphQL Code Generator example (examples/client)', () => {
  // A copy of the example beside a copy of schema.graphql, as the repository
  // lays them out, so `../../schema.graphql` in its codegen.ts is the
  // published file and generated code never lands in the working tree.
  const dir = mkdtempSync(join(tmpdir(), 'virt-graph-client-'));
  const example = join(dir, 'examples/client');
  const gateways: TestGateway[] = [];

  beforeAll(async () => {
    mkdirSync(example, { recursive: true });
    cpSync(join(root, 'examples/client'), example, {
      recursive: true,
      filter: (src) => !src.endsWith('/gql') && !src.includes('/gql/'),
    });
    copyFileSync(join(root, 'schema.graphql'), join(dir, 'schema.graphql'));
    symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir');
    await run(bin('graphql-codegen'), ['--config', 'codegen.ts', '--silent'], { cwd: example });
  });
  afterAll(async () => {
    await Promise.all(gateways.map((g) => g.close()));
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs the example's main.ts as a user would; its typed result, parsed. */
  async function runMain(url: string, ...args: string[]): Promise<Record<string, unknown>> {
    const { stdout } = await run(bin('tsx'), ['main.ts', url, ...args], { cwd: example });
    return JSON.parse(stdout) as Record<string, unknown>;
  }

  it('type-checks (strict) against the generated code, whose types are not `any`', async () => {
    // Reading a field the query did not select must fail to compile.
    writeFileSync(
      join(example, 'selection-check.ts'),
      [
        "import type { VmListQuery } from './gql/graphql.js';",
        'export function uuidOf(q: VmListQuery): unknown {',
        '  // @ts-expect-error `uuid` is not in the VmList selection',
        '  return q.virtualMachines?.edges[0]?.node.uuid;',
        '}',
        '',
      ].join('\n'),
    );
    writeFileSync(
      join(example, 'tsconfig.check.json'),
      JSON.stringify({ extends: './tsconfig.json', include: ['*.ts', 'gql'], exclude: ['generate.ts'] }),
    );
    const result = await run(bin('tsc'), ['--noEmit', '-p', 'tsconfig.check.json'], { cwd: example }).then(
      () => '',
      (e: { stdout: string }) => e.stdout,
    );
    expect(result).toBe('');
  });

  it('runs its typed query and mutation against a gateway that runs only its persisted documents', async () => {
    const gw = await startTestGateway({
      platforms: PLATFORMS,
      server: {
        trustedDocuments: { manifestFile: join(example, 'gql/persisted-documents.json'), enforce: true },
      },
    });
    gateways.push(gw);
    const result = await runMain(gw.url, '--start', 'test');
    expect(result['virtualMachines']).toContainEqual({
      id: expect.any(String),
      name: 'test',
      powerState: 'ON',
      memoryMiB: expect.any(Number),
      host: { id: expect.any(String), name: expect.any(String) },
      disks: expect.any(Array),
    });
    // The test driver's `test` runs already: refused in userErrors, no task, nothing thrown.
    expect(result['startVm']).toMatchObject({
      task: null,
      userErrors: [{ field: null, code: 'WRONG_STATE', message: expect.any(String) }],
    });
  });

  it('falls back to the text on a gateway without trusted documents', async () => {
    const gw = await startTestGateway({ platforms: PLATFORMS });
    gateways.push(gw);
    const result = await runMain(gw.url);
    expect(result['virtualMachines']).toContainEqual(expect.objectContaining({ name: 'test', powerState: 'ON' }));
    expect(result['startVm']).toBeUndefined();
  });
});

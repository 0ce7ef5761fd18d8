import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';

import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = resolve(import.meta.dirname, '..');
const depcruise = join(root, 'node_modules/.bin/depcruise');
const config = join(root, '.dependency-cruiser.cjs');

/** Runs the project's layer rules over a tree; the names of the rules it broke. */
async function violations(cwd: string): Promise<string[]> {
  // The JSON report lists violations whatever the exit code says.
  const stdout = await run(depcruise, ['src', '--config', config, '--output-type', 'json'], {
    cwd,
    maxBuffer: 64 * 1024 * 1024,
  }).then(
    (r) => r.stdout,
    (e: { stdout: string }) => e.stdout,
  );
  const report = JSON.parse(stdout) as { summary: { violations: { rule: { name: string } }[] } };
  return report.summary.violations.map((v) => v.rule.name).sort();
}

const trees: string[] = [];
/** A small tree of the house's shape with the given files (path -> source). */
function tree(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'layers-'));
  trees.push(dir);
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext' } }),
  );
  for (const [path, source] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), source);
  }
  return dir;
}
afterAll(() => {
  for (const dir of trees) rmSync(dir, { recursive: true, force: true });
});

const base = {
  'src/model/ids.ts': 'export type Id = string;\n',
  'src/config/schema.ts': "import type { Id } from '../model/ids.js';\nexport type Config = { id: Id };\n",
  'src/datasources/provider.ts': "import type { Id } from '../model/ids.js';\nexport interface Provider { id: Id }\n",
  'src/datasources/vsphere/errors.ts': 'export class VimFault extends Error {}\n',
  'src/datasources/libvirt/errors.ts': 'export class LibvirtError extends Error {}\n',
  'src/datasources/registry.ts':
    "import { VimFault } from './vsphere/errors.js';\nimport { LibvirtError } from './libvirt/errors.js';\nexport const known = [VimFault, LibvirtError];\n",
  'src/resolvers/node.ts': "import type { Provider } from '../datasources/provider.js';\nexport type P = Provider;\n",
};

describe('the layer rules', () => {
  it('pass on the project itself', async () => {
    expect(await violations(root)).toEqual([]);
  }, 60_000);

  it('pass on a tree whose arrows all point down', async () => {
    expect(await violations(tree(base))).toEqual([]);
  }, 60_000);

  it('catch an import up the order, a platform reached from outside, a platform importing another, and a cycle', async () => {
    const wrong = tree({
      ...base,
      'src/model/ids.ts':
        "import type { Config } from '../config/schema.js';\nexport type Id = string;\nexport type C = Config;\n",
      'src/resolvers/node.ts':
        "import { VimFault } from '../datasources/vsphere/errors.js';\nexport const f = VimFault;\n",
      'src/datasources/libvirt/errors.ts':
        "import { VimFault } from '../vsphere/errors.js';\nexport class LibvirtError extends VimFault {}\n",
    });
    expect(await violations(wrong)).toEqual([
      'no-circular',
      'no-platform-to-platform',
      'no-upward-from-model',
      'platform-only-through-registry',
    ]);
  }, 60_000);
});

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};

describe('a production install (npm ci --omit=dev)', () => {
  it('has everything the native addon is built with', () => {
    // The command of the build script, and what binding.gyp includes.
    const tool = pkg.scripts['build:native']!.split(' ')[0]!;
    expect(tool).toBe('node-gyp');
    const gyp = readFileSync(join(root, 'native/libvirt/binding.gyp'), 'utf8');
    const needed = [tool, ...(gyp.includes('node-addon-api') ? ['node-addon-api'] : [])];
    for (const name of needed) {
      expect(pkg.dependencies, `${name} must be a dependency, not a devDependency`).toHaveProperty(name);
      expect(pkg.devDependencies).not.toHaveProperty(name);
    }
  });
});

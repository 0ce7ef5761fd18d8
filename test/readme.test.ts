import { readFileSync } from 'node:fs';

import { parse, specifiedRules, validate } from 'graphql';
import { describe, expect, it } from 'vitest';

import { validateConfig } from '../src/config/load.js';
import { limitRules, operationCost } from '../src/server/limits.js';
import { buildGatewaySchema } from '../src/server/schema.js';

// The README's examples are part of the contract users read: each must be a
// valid operation under the default limits.
const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
const examples = [...readme.matchAll(/```graphql\n([\s\S]*?)```/g)].map((m) => m[1] as string);
const { limits } = validateConfig({ platforms: [{ id: 'x', kind: 'libvirt', uri: 'test:///default' }] });
const schema = buildGatewaySchema();

describe('README examples', () => {
  it('has examples', () => {
    expect(examples.length).toBeGreaterThanOrEqual(6);
  });

  it.each(examples.map((e, i) => [i + 1, e]))('example %i is valid under the default limits', (_i, example) => {
    const document = parse(example as string, { maxTokens: limits.maxTokens });
    expect(validate(schema, document, [...specifiedRules, ...limitRules(limits)]).map((e) => e.message)).toEqual([]);
    expect(operationCost(schema, document, null, {}, limits)).toBeLessThanOrEqual(limits.maxCost);
  });
});

import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ConfigError, loadConfig } from '../src/config/load.js';
import { decryptSecret, encryptSecret } from '../src/config/secrets.js';
import { startTestGateway } from './helpers/gateway.js';
import { type Vcsim, startVcsim } from './helpers/vcsim.js';

const KEY = 'test-secret-key-0123456789';
const OLD_KEY = 'previous-secret-key-0123456789';

function encryptWithCli(
  secret: string,
  env: Record<string, string>,
  args: string[] = [],
): { out: string; err: string; code: number | null } {
  const res = spawnSync(join(process.cwd(), 'node_modules/.bin/tsx'), ['src/cli/encrypt-secret.ts', ...args], {
    input: secret,
    env: { ...process.env, ...env },
    encoding: 'utf8',
  });
  return { out: res.stdout.trim(), err: res.stderr, code: res.status };
}

describe('encrypted secrets', () => {
  it('round-trips, and every encryption of one secret differs', () => {
    const a = encryptSecret('p@ss', KEY);
    const b = encryptSecret('p@ss', KEY);
    expect(a).toMatch(/^enc:v1:[A-Za-z0-9_-]+$/);
    expect(a).not.toBe(b);
    expect(decryptSecret(a, { current: KEY, previous: [] })).toBe('p@ss');
  });

  it('decrypts with a previous key during rotation, and refuses a wrong key or a tampered value', () => {
    const old = encryptSecret('p@ss', OLD_KEY);
    expect(decryptSecret(old, { current: KEY, previous: [OLD_KEY] })).toBe('p@ss');
    expect(() => decryptSecret(old, { current: KEY, previous: [] })).toThrow(/cannot be decrypted/);
    const tampered = old.slice(0, -2) + (old.endsWith('AA') ? 'BB' : 'AA');
    expect(() => decryptSecret(tampered, { current: OLD_KEY, previous: [] })).toThrow(/cannot be decrypted/);
    expect(() => decryptSecret(old, { current: undefined, previous: [] })).toThrow(/VIRT_GRAPH_SECRET_KEY is not set/);
  });

  it('encrypts from standard input with the CLI, and rotates a value to the current key', () => {
    const first = encryptWithCli('from-stdin', { VIRT_GRAPH_SECRET_KEY: OLD_KEY });
    expect(first.code).toBe(0);
    const rotated = encryptWithCli(
      first.out,
      { VIRT_GRAPH_SECRET_KEY: KEY, VIRT_GRAPH_PREVIOUS_SECRET_KEYS: OLD_KEY },
      ['--rotate'],
    );
    expect(rotated.code).toBe(0);
    expect(decryptSecret(rotated.out, { current: KEY, previous: [] })).toBe('from-stdin');
    const noKey = encryptWithCli('x', { VIRT_GRAPH_SECRET_KEY: '' });
    expect(noKey.code).toBe(2);
    expect(noKey.err).toMatch(/set VIRT_GRAPH_SECRET_KEY/);
  });

  it('names the password key when a configured secret cannot be decrypted', () => {
    const path = join(mkdtempSync(join(tmpdir(), 'virt-graph-secret-')), 'gw.yaml');
    writeFileSync(
      path,
      `platforms:\n  - { id: a, kind: libvirt, uri: "test:///default", username: u, password: "${encryptSecret('x', OLD_KEY)}" }\n`,
    );
    expect(() => loadConfig({ path, env: { VIRT_GRAPH_SECRET_KEY: KEY } })).toThrow(ConfigError);
    expect(() => loadConfig({ path, env: { VIRT_GRAPH_SECRET_KEY: KEY } })).toThrow(
      /platforms\[0\]\.password: it cannot be decrypted/,
    );
    expect(loadConfig({ path, env: { VIRT_GRAPH_SECRET_KEY: OLD_KEY } }).config.platforms[0]).toMatchObject({
      password: 'x',
    });
  });
});

describe('a vCenter password stored encrypted', () => {
  let sim: Vcsim;
  beforeAll(async () => {
    sim = await startVcsim();
  });
  afterAll(() => sim?.stop());

  it('logs in, and the password appears in no log line and no response', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'virt-graph-secret-')), 'gw.yaml');
    writeFileSync(
      path,
      `platforms:\n  - id: vc\n    kind: vsphere\n    url: "${sim.url}"\n    username: ${sim.username}\n    password: "${encryptSecret(sim.password, KEY)}"\n    caFile: "${sim.certFile}"\n`,
    );
    const { config } = loadConfig({ path, env: { VIRT_GRAPH_SECRET_KEY: KEY } });
    const gw = await startTestGateway(config as unknown as Record<string, unknown>);
    try {
      const res = await gw.query<{ platforms: { status: string; uri: string }[] }>(
        '{ platforms { status uri statusMessage } }',
      );
      expect(res.data!.platforms[0]).toMatchObject({ status: 'CONNECTED', uri: sim.url });
      expect(JSON.stringify(res)).not.toContain(sim.password);
      expect(JSON.stringify(gw.logs())).not.toContain(sim.password);
    } finally {
      await gw.close();
    }
  });
});

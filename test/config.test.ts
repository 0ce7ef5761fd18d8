import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { ConfigError, loadConfig } from '../src/config/load.js';
import { encryptSecret } from '../src/config/secrets.js';

function configFile(text: string): string {
  const path = join(mkdtempSync(join(tmpdir(), 'virt-graph-config-')), 'gateway.yaml');
  writeFileSync(path, text);
  return path;
}

function loadError(text: string): string {
  try {
    loadConfig({ path: configFile(text), env: {} });
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error('expected the configuration to be refused');
}

describe('configuration', () => {
  it('serves the libvirt test driver when no file is given', () => {
    const { config, source } = loadConfig({ env: {} });
    expect(source).toBe('embedded default');
    expect(config.platforms).toEqual([
      expect.objectContaining({ id: 'libvirt-test', kind: 'libvirt', uri: 'test:///default', readOnly: false }),
      expect.objectContaining({ id: 'vcsim', kind: 'vsphere', url: 'https://127.0.0.1:8989/sdk', insecure: false }),
    ]);
    expect(config.server).toMatchObject({ host: '127.0.0.1', port: 4000, path: '/graphql' });
    expect(config.limits).toMatchObject({
      maxDepth: 12,
      maxAliases: 30,
      maxTokens: 5000,
      maxCost: 50000,
      defaultPageSize: 50,
    });
  });

  it('reads a file named by VIRT_GRAPH_CONFIG and lets PORT, HOST and LOG_LEVEL override it', () => {
    const path = configFile(`
server: { port: 8080 }
logging: { level: warn }
platforms:
  - { id: a, kind: libvirt, uri: "test:///default" }
  - { id: b, kind: libvirt, uri: "qemu+ssh://ops@kvm1/system", readOnly: true }
`);
    const { config } = loadConfig({
      env: { VIRT_GRAPH_CONFIG: path, PORT: '9090', HOST: '0.0.0.0', LOG_LEVEL: 'debug' },
    });
    expect(config.server.port).toBe(9090);
    expect(config.server.host).toBe('0.0.0.0');
    expect(config.logging.level).toBe('debug');
    expect(config.platforms.map((p) => p.id)).toEqual(['a', 'b']);
  });

  it.each([
    [
      'an unknown key',
      'platforms: [{ id: a, kind: libvirt, uri: "test:///default", colour: red }]',
      /platforms\[0\]: Unrecognized key: "colour"/,
    ],
    ['a missing URI', 'platforms: [{ id: a, kind: libvirt }]', /platforms\[0\]\.uri: /],
    ['an unknown platform kind', 'platforms: [{ id: a, kind: hyperv, uri: x }]', /platforms\[0\]\.kind: /],
    [
      'a bad platform id',
      'platforms: [{ id: "a:b", kind: libvirt, uri: x }]',
      /platforms\[0\]\.id: must be 1-63 letters/,
    ],
    [
      'duplicate ids',
      'platforms: [{ id: a, kind: libvirt, uri: x }, { id: a, kind: libvirt, uri: y }]',
      /platforms\[1\]\.id: duplicate platform id "a"/,
    ],
    ['no platforms', 'platforms: []', /platforms: configure at least one platform/],
    ['a port out of range', 'server: { port: 70000 }\nplatforms: [{ id: a, kind: libvirt, uri: x }]', /server\.port: /],
    [
      'a page size over the maximum',
      'limits: { defaultPageSize: 500, maxPageSize: 100 }\nplatforms: [{ id: a, kind: libvirt, uri: x }]',
      /limits\.defaultPageSize: defaultPageSize must not exceed maxPageSize/,
    ],
    [
      'Redis given two ways',
      'redis: { url: "redis://r:6379", cluster: [{ host: r, port: 7000 }] }\nplatforms: [{ id: a, kind: libvirt, uri: x }]',
      /redis: give exactly one of url, sentinels or cluster/,
    ],
    [
      'a Redis URL of another scheme',
      'redis: { url: "http://r:6379" }\nplatforms: [{ id: a, kind: libvirt, uri: x }]',
      /redis\.url: must be a redis:\/\/ or rediss:\/\/ URL/,
    ],
    [
      'a Redis password in the URL',
      'redis: { url: "redis://:secret@r:6379" }\nplatforms: [{ id: a, kind: libvirt, uri: x }]',
      /redis\.url: must not contain a password; use password/,
    ],
    [
      'Redis without the live inventory',
      'redis: { url: "redis://r:6379" }\ninventory: { enabled: false }\nplatforms: [{ id: a, kind: libvirt, uri: x }]',
      /redis: several instances share their platforms through the live inventory/,
    ],
    [
      'a snapshot interval longer than half the stream',
      'redis: { url: "redis://r:6379", streamMaxLength: 1000, snapshotEveryEntries: 800 }\nplatforms: [{ id: a, kind: libvirt, uri: x }]',
      /redis\.snapshotEveryEntries: snapshotEveryEntries must be at most half of streamMaxLength/,
    ],
    [
      'a wrong type',
      'limits: { maxDepth: "deep" }\nplatforms: [{ id: a, kind: libvirt, uri: x }]',
      /limits\.maxDepth: /,
    ],
    [
      'a readiness policy that requires an unconfigured platform',
      'server: { readiness: { requirePlatforms: [a, b] } }\nplatforms: [{ id: a, kind: libvirt, uri: x }]',
      /server\.readiness\.requirePlatforms\[1\]: unknown platform "b"/,
    ],
    [
      'an unknown readiness mode',
      'server: { readiness: { requirePlatforms: most } }\nplatforms: [{ id: a, kind: libvirt, uri: x }]',
      /server\.readiness\.requirePlatforms: /,
    ],
    [
      'an empty list of platforms for readiness',
      'server: { readiness: { requirePlatforms: [] } }\nplatforms: [{ id: a, kind: libvirt, uri: x }]',
      /server\.readiness\.requirePlatforms: /,
    ],
  ])('refuses %s and names the key', (_label, text, message) => {
    expect(loadError(text)).toMatch(message);
  });

  it('reads Redis settings with their defaults, and decrypts an encrypted Redis password', () => {
    const key = randomBytes(32).toString('base64');
    const path = configFile(`
redis: { url: "rediss://cache.example:6380/2", password: "${encryptSecret('s3cret', key)}" }
platforms: [{ id: a, kind: libvirt, uri: "test:///default" }]
`);
    const { config } = loadConfig({ path, env: { VIRT_GRAPH_SECRET_KEY: key } });
    expect(config.redis).toEqual({
      url: 'rediss://cache.example:6380/2',
      password: 's3cret',
      sentinelName: 'mymaster',
      keyPrefix: 'virt-graph:',
      leaseTtlMs: 10_000,
      streamMaxLength: 10_000,
      snapshotEveryEntries: 1_000,
      connectTimeoutMs: 5_000,
    });
    expect(() => loadConfig({ path, env: {} })).toThrow(/redis\.password: /);
  });

  it('reads the readiness policy: at least one platform by default, Redis only when asked', () => {
    expect(loadConfig({ env: {} }).config.server.readiness).toEqual({ requirePlatforms: 'any', requireRedis: false });
    const path = configFile(`
server: { readiness: { requirePlatforms: [b], requireRedis: true } }
platforms:
  - { id: a, kind: libvirt, uri: "test:///default" }
  - { id: b, kind: libvirt, uri: "test:///default" }
`);
    expect(loadConfig({ path, env: {} }).config.server.readiness).toEqual({
      requirePlatforms: ['b'],
      requireRedis: true,
    });
  });

  it('refuses a file that is not YAML, and one that does not exist', () => {
    expect(loadError('platforms: [unclosed')).toMatch(/is not valid YAML/);
    expect(() => loadConfig({ path: '/nonexistent/gateway.yaml', env: {} })).toThrow(
      /cannot read config file \/nonexistent\/gateway.yaml/,
    );
  });
});

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { parse as parseYaml } from 'yaml';

import { type Config, configSchema } from './schema.js';
import { SecretError, decryptSecret, secretKeysFrom } from './secrets.js';

/** A configuration that cannot be used; the message names the key and why. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Where scripts/run-gateway.sh serves VMware's vCenter simulator for the embedded default. */
export const DEMO_VCSIM = {
  url: 'https://127.0.0.1:8989/sdk',
  username: 'user',
  password: 'pass',
  caFile: fileURLToPath(new URL('../../.cache/vcsim/cert.pem', import.meta.url)),
};

/**
 * Used when no file is given, so a newcomer sees a working graph: libvirt's
 * test driver, and the local vCenter simulator that scripts/run-gateway.sh
 * starts (without it, that platform shows as UNREACHABLE and the rest serves).
 */
export const EMBEDDED_DEFAULT = {
  platforms: [
    { id: 'libvirt-test', kind: 'libvirt', uri: 'test:///default' },
    { id: 'vcsim', kind: 'vsphere', ...DEMO_VCSIM },
  ],
};

export interface LoadOptions {
  /** Path from `--config`; falls back to VIRT_GRAPH_CONFIG. */
  path?: string;
  env?: NodeJS.ProcessEnv;
}

export function loadConfig(opts: LoadOptions = {}): { config: Config; source: string } {
  const env = opts.env ?? process.env;
  const path = opts.path ?? env['VIRT_GRAPH_CONFIG'];
  let raw: unknown;
  let source: string;
  if (path) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new ConfigError(`cannot read config file ${path}: ${(e as Error).message}`);
    }
    try {
      raw = parseYaml(text) ?? {};
    } catch (e) {
      throw new ConfigError(`config file ${path} is not valid YAML: ${(e as Error).message}`);
    }
    source = path;
  } else {
    raw = structuredClone(EMBEDDED_DEFAULT);
    source = 'embedded default';
  }
  const config = decryptPasswords(validateConfig(applyEnv(raw, env), source, envOverrides(env)), env, source);
  return { config, source };
}

/** Replaces encrypted passwords (enc:v1:...) of platforms and Redis by their plain text, in memory only. */
export function decryptPasswords(config: Config, env: NodeJS.ProcessEnv, source = 'config'): Config {
  const keys = secretKeysFrom(env);
  const platforms = config.platforms.map((p, i) => {
    if (!('password' in p) || p.password === undefined) return p;
    try {
      return { ...p, password: decryptSecret(p.password, keys) };
    } catch (e) {
      if (e instanceof SecretError)
        throw new ConfigError(`invalid configuration (${source}):\n  platforms[${i}].password: ${e.message}`);
      throw e;
    }
  });
  let redis = config.redis;
  if (redis?.password !== undefined) {
    try {
      redis = { ...redis, password: decryptSecret(redis.password, keys) };
    } catch (e) {
      if (e instanceof SecretError)
        throw new ConfigError(`invalid configuration (${source}):\n  redis.password: ${e.message}`);
      throw e;
    }
  }
  return { ...config, platforms, ...(redis ? { redis } : {}) };
}

/**
 * What an environment variable put at a key, so that a bad value is blamed
 * on the variable (`PORT="abc"`) rather than on a file that does not hold it.
 */
export interface EnvOverride {
  /** The variable and its value as set: `PORT="abc"`. */
  variable: string;
  /** Said instead of the schema's words, which speak of types an environment variable does not have. */
  expected?: string;
}

export function validateConfig(
  raw: unknown,
  source = 'config',
  /** By formatted key (`server.port`): the environment variables that set it. */
  fromEnv: ReadonlyMap<string, EnvOverride> = new Map(),
): Config {
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const envProblems: string[] = [];
    const fileProblems: string[] = [];
    for (const issue of result.error.issues) {
      const key = formatPath(issue.path);
      const override = fromEnv.get(key);
      if (override)
        envProblems.push(`invalid environment variable ${override.variable}: ${override.expected ?? issue.message}`);
      else fileProblems.push(`  ${key}: ${issue.message}`);
    }
    const lines = [...new Set(envProblems)];
    if (fileProblems.length > 0) lines.push(`invalid configuration (${source}):`, ...fileProblems);
    throw new ConfigError(lines.join('\n'));
  }
  return result.data;
}

/** PORT, HOST and LOG_LEVEL override the file, as container platforms expect. */
function applyEnv(raw: unknown, env: NodeJS.ProcessEnv): unknown {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return raw;
  const obj = { ...(raw as Record<string, unknown>) };
  const server = { ...((obj['server'] as Record<string, unknown> | undefined) ?? {}) };
  if (env['PORT'] !== undefined) server['port'] = numberOrText(env['PORT']);
  if (env['HOST'] !== undefined) server['host'] = env['HOST'];
  if (Object.keys(server).length > 0) obj['server'] = server;
  if (env['LOG_LEVEL'] !== undefined) {
    obj['logging'] = { ...((obj['logging'] as Record<string, unknown> | undefined) ?? {}), level: env['LOG_LEVEL'] };
  }
  return obj;
}

/** The keys applyEnv sets, by formatted key, with the variable that set each. */
function envOverrides(env: NodeJS.ProcessEnv): Map<string, EnvOverride> {
  const overrides = new Map<string, EnvOverride>();
  const show = (name: string) => `${name}=${JSON.stringify(env[name])}`;
  if (env['PORT'] !== undefined) {
    overrides.set('server.port', { variable: show('PORT'), expected: 'expected a port number from 0 to 65535' });
  }
  if (env['HOST'] !== undefined) {
    overrides.set('server.host', { variable: show('HOST'), expected: 'expected an address or host name to listen on' });
  }
  if (env['LOG_LEVEL'] !== undefined) overrides.set('logging.level', { variable: show('LOG_LEVEL') });
  return overrides;
}

function numberOrText(s: string): number | string {
  return /^\d+$/.test(s) ? Number(s) : s;
}

function formatPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '(top level)';
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${String(p)}`)).join('');
}

export type { Config };

import { readdir, stat } from 'node:fs/promises';
import { hostname } from 'node:os';

import { type QmpAddress, formatQmpAddress, parseQmpAddress } from './client.js';

// Where a QMP platform's QEMUs are: the `sockets` of its configuration. An
// entry is one QEMU's address (a unix socket path, tcp://host:port), or a
// glob of unix socket paths that finds any number of them; globs are
// expanded again every rescanIntervalMs, so QEMUs started later are found.
// Globs are expanded with node:fs (Node 20 has no fs.glob): `*`, `?` and
// `[...]` within a path segment; `*` and `?` do not match a leading dot,
// as in a shell. Only sockets match.

/** One entry of `sockets`. */
export type SocketEntry =
  | { kind: 'address'; text: string; address: QmpAddress }
  | { kind: 'glob'; text: string; pattern: string }
  /** An entry the client refuses (the config schema checks a little less): it shows in the platform status. */
  | { kind: 'invalid'; text: string; problem: string };

/** The native ID of the host of unix-socket QEMUs: the gateway's own machine. */
export const LOCAL_HOST = 'local';

const GLOB_MAGIC = /[*?[]/;

export function parseSocketEntry(text: string): SocketEntry {
  const path = text.replace(/^unix:(\/\/)?/i, '');
  if (!/^tcp:/i.test(text) && GLOB_MAGIC.test(path)) return { kind: 'glob', text, pattern: path };
  try {
    return { kind: 'address', text, address: parseQmpAddress(text) };
  } catch (e) {
    return { kind: 'invalid', text, problem: (e as Error).message };
  }
}

/** The native ID of the host a QEMU runs on: the gateway's machine for a unix socket, the TCP host otherwise. */
export function hostOf(address: QmpAddress): string {
  return address.kind === 'unix' ? LOCAL_HOST : address.host;
}

/** The name shown for a host. */
export function hostName(hostNativeId: string): string {
  return hostNativeId === LOCAL_HOST ? hostname() : hostNativeId;
}

/** The key of an address: how it is written back (`unix:/run/qemu/a.qmp`, `tcp://10.0.0.5:4444`). */
export function addressKey(address: QmpAddress): string {
  return formatQmpAddress(address);
}

/** A socket a glob found, with what tells a new socket at the same path from the old one. */
export interface FoundSocket {
  path: string;
  /** Inode and change time: a QEMU started again at the same path makes a new socket file. */
  identity: string;
}

/**
 * The unix sockets a glob matches now, sorted. A directory that does not
 * exist matches nothing; one that cannot be read throws (EACCES, ...).
 */
export async function expandGlob(pattern: string): Promise<FoundSocket[]> {
  const segments = pattern.split('/').filter((s) => s !== '');
  let candidates = ['/'];
  for (const segment of segments) {
    const next: string[] = [];
    for (const dir of candidates) {
      if (!GLOB_MAGIC.test(segment)) {
        next.push(join(dir, segment));
        continue;
      }
      const matcher = segmentMatcher(segment);
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (e) {
        if (isMissing(e)) continue;
        throw new Error(`cannot read the directory ${dir} for the glob ${pattern}: ${(e as Error).message}`, {
          cause: e,
        });
      }
      for (const name of names.sort()) if (matcher.test(name)) next.push(join(dir, name));
    }
    // A directory is checked when the next segment reads it; what the last segment names must be a socket.
    candidates = next;
  }
  const found: FoundSocket[] = [];
  for (const path of candidates) {
    try {
      const s = await stat(path);
      if (s.isSocket()) found.push({ path, identity: `${s.ino}:${s.ctimeMs}` });
    } catch (e) {
      if (!isMissing(e)) throw e;
    }
  }
  return found;
}

function join(dir: string, name: string): string {
  return dir.endsWith('/') ? `${dir}${name}` : `${dir}/${name}`;
}

function isMissing(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** A regular expression for one glob segment: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`; a leading dot only literally. */
export function segmentMatcher(segment: string): RegExp {
  let re = '';
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i] as string;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const close = segment.indexOf(']', i + 2);
      if (close === -1) {
        re += '\\[';
        continue;
      }
      let body = segment.slice(i + 1, close);
      const negated = body.startsWith('!') || body.startsWith('^');
      if (negated) body = body.slice(1);
      re += `[${negated ? '^' : ''}${body.replace(/[\\\]^]/g, '\\$&')}]`;
      i = close;
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(segment.startsWith('.') ? `^${re}$` : `^(?!\\.)${re}$`);
}

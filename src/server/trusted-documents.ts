import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

import type { Logger } from 'pino';

import { ConfigError } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { ErrorCode } from '../model/errors.js';

// Trusted documents (persisted operations): in production a portal runs
// only the operations its build registered, so a stolen token or an open
// port buys the operations the portal has, not the whole graph. The
// manifest is read once at start; each request is matched against it
// before anything parses it, on HTTP and WebSocket alike, then goes through
// the same parse, validation, cost, rate-limit and authorization steps as
// any other document.

export type TrustedDocumentsConfig = NonNullable<Config['server']['trustedDocuments']>;

/** What a request names as its document, as sent: nothing here has been checked yet. */
export interface DocumentRequest {
  /** The document text (`query`). */
  query: unknown;
  /** `documentId`: `sha256:<hex>` or `<hex>` (GraphQL over HTTP's persisted documents, GraphQL Code Generator). */
  documentId: unknown;
  /** `extensions`; Apollo clients name the document in `persistedQuery.sha256Hash`. */
  extensions: unknown;
  /** Only for the logs: which operation a client sent. */
  operationName: unknown;
}

/**
 * What to do with a request: run `query` (the registered text, or the text
 * sent when it may run; the request's id and persisted-query extension are
 * dropped, they have served), pass it on as sent (nothing to resolve), or
 * refuse it with an HTTP status and an error code.
 */
export type DocumentResolution =
  | { kind: 'run'; query: string }
  | { kind: 'asSent' }
  | { kind: 'refused'; status: 400 | 403; code: string; message: string };

export interface TrustedDocuments {
  /** Whether a manifest is configured (Apollo's own persisted-query cache is off then). */
  readonly enabled: boolean;
  /** Matches one request against the manifest; `transport` is for the logs. */
  resolve(request: DocumentRequest, transport: 'http' | 'websocket'): DocumentResolution;
}

/** SHA-256 of a document's text (UTF-8), in lowercase hex: how manifests name documents. */
export function documentHash(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

const SHA256_HEX = /^[0-9a-f]{64}$/;
const SHA1_HEX = /^[0-9a-f]{40}$/;

/** A manifest key or request id without its `sha256:` prefix, lowercased; null when it is not a SHA-256 hex digest. */
function normalizeId(id: string): string | null {
  const hex = id.replace(/^sha256:/i, '').toLowerCase();
  return SHA256_HEX.test(hex) ? hex : null;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The documents of a manifest by SHA-256 (lowercase hex). Two formats:
 * GraphQL Code Generator's client preset (`persisted-documents.json`: an
 * object from hash, optionally `sha256:`-prefixed, to text) and Apollo's
 * persisted query manifest (`{ format: "apollo-persisted-query-manifest",
 * version: 1, operations: [{ id, body, name, type }] }`). Each hash is
 * checked against its text: a manifest built with another hash function,
 * or edited by hand, would otherwise register documents no client can name,
 * or name a document with another's hash. Throws ConfigError naming the
 * file, and the entry when one is wrong.
 */
export function readManifest(file: string): Map<string, string> {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(
      `server.trustedDocuments.manifestFile ${file} cannot be read as JSON: ${(e as Error).message}`,
    );
  }
  const entries: [id: string, body: unknown][] = [];
  if (isRecord(raw) && 'format' in raw) {
    if (raw['format'] !== 'apollo-persisted-query-manifest' || raw['version'] !== 1) {
      throw new ConfigError(
        `server.trustedDocuments.manifestFile ${file}: format ${JSON.stringify(raw['format'])} version ` +
          `${JSON.stringify(raw['version'])} is not one the gateway reads (apollo-persisted-query-manifest version 1, ` +
          'or an object from SHA-256 to document text)',
      );
    }
    const operations = raw['operations'];
    if (!Array.isArray(operations)) {
      throw new ConfigError(`server.trustedDocuments.manifestFile ${file}: "operations" is not an array`);
    }
    operations.forEach((op: unknown, i) => {
      if (!isRecord(op) || typeof op['id'] !== 'string') {
        throw new ConfigError(`server.trustedDocuments.manifestFile ${file}: operations[${i}] has no string "id"`);
      }
      entries.push([op['id'], op['body']]);
    });
  } else if (isRecord(raw)) {
    entries.push(...Object.entries(raw));
  } else {
    throw new ConfigError(
      `server.trustedDocuments.manifestFile ${file} is not a manifest: expected an object from SHA-256 to document ` +
        'text, or an apollo-persisted-query-manifest',
    );
  }

  const documents = new Map<string, string>();
  for (const [id, body] of entries) {
    const where = `server.trustedDocuments.manifestFile ${file}: document "${id}"`;
    if (typeof body !== 'string' || body.trim() === '') throw new ConfigError(`${where} has no document text`);
    const hash = normalizeId(id);
    if (!hash) {
      const hint = SHA1_HEX.test(id.toLowerCase())
        ? " (a SHA-1 digest: GraphQL Code Generator's default; set persistedDocuments.hashAlgorithm to 'sha256')"
        : '';
      throw new ConfigError(`${where} is not named by a SHA-256 hex digest${hint}`);
    }
    const actual = documentHash(body);
    if (actual !== hash) {
      throw new ConfigError(
        `${where} does not match its text (the text's SHA-256 is ${actual}); regenerate the manifest`,
      );
    }
    documents.set(hash, body);
  }
  return documents;
}

/**
 * Unregistered hashes logged so far are remembered up to this many, so a
 * client sending endless distinct documents (enforce: false) cannot grow
 * the set without end; past it, one more line says logging stopped.
 */
const MAX_LOGGED_HASHES = 10_000;

/** A hash as a client names it: `sha256:<hex>` (upper or lower case) or `<hex>`; null when it is not one. */
function requestedHash(value: unknown): string | null {
  return typeof value === 'string' ? normalizeId(value) : null;
}

function persistedQueryHash(extensions: unknown): unknown {
  const persisted = isRecord(extensions) ? extensions['persistedQuery'] : undefined;
  return isRecord(persisted) ? persisted['sha256Hash'] : undefined;
}

const present = (v: unknown) => v !== undefined && v !== null;

/**
 * The trusted-document check of `server.trustedDocuments`, read from its
 * manifest (throws ConfigError when the manifest cannot be used). Without
 * that section every request runs as sent, except that a `documentId` is
 * refused (PERSISTED_QUERY_NOT_FOUND) rather than ignored: a client that
 * names a document and has a different one run would be worse than an error.
 */
export function loadTrustedDocuments(config: TrustedDocumentsConfig | undefined, logger: Logger): TrustedDocuments {
  if (!config) {
    return {
      enabled: false,
      resolve: (request) =>
        present(request.documentId)
          ? {
              kind: 'refused',
              status: 400,
              code: ErrorCode.PERSISTED_QUERY_NOT_FOUND,
              message:
                'This gateway has no trusted documents (server.trustedDocuments) to look a documentId up in; ' +
                'send the document in "query".',
            }
          : { kind: 'asSent' },
    };
  }

  const documents = readManifest(config.manifestFile);
  logger.info(
    { manifestFile: config.manifestFile, documents: documents.size, enforce: config.enforce },
    'trusted documents loaded',
  );
  if (documents.size === 0 && config.enforce) {
    logger.warn(
      { manifestFile: config.manifestFile },
      'the trusted-document manifest is empty: every operation will be refused',
    );
  }
  const logged = new Set<string>();
  const logUnregistered = (hash: string, request: DocumentRequest, transport: string) => {
    if (logged.has(hash) || logged.size > MAX_LOGGED_HASHES) return;
    logged.add(hash);
    if (logged.size > MAX_LOGGED_HASHES) {
      logger.warn(`${MAX_LOGGED_HASHES} unregistered documents logged; further ones are not`);
      return;
    }
    const operationName = typeof request.operationName === 'string' ? request.operationName : undefined;
    // The text is not logged: literal arguments in it may be secrets (a guest password in createVm).
    logger.warn(
      { documentHash: hash, operationName, transport },
      config.enforce
        ? 'unregistered document refused (server.trustedDocuments)'
        : 'unregistered document served (server.trustedDocuments.enforce is false)',
    );
  };

  /** A document sent as text: run when registered, or when enforce is off (logged once per hash). */
  const byText = (text: string, request: DocumentRequest, transport: string): DocumentResolution => {
    const hash = documentHash(text);
    if (documents.has(hash)) return { kind: 'run', query: text };
    logUnregistered(hash, request, transport);
    if (!config.enforce) return { kind: 'run', query: text };
    return {
      kind: 'refused',
      status: 403,
      code: ErrorCode.OPERATION_NOT_TRUSTED,
      message: `This gateway runs only registered documents, and this one (sha256:${hash}) is not; send a documentId from the manifest.`,
    };
  };

  return {
    enabled: true,
    resolve(request, transport) {
      const text = typeof request.query === 'string' && request.query !== '' ? request.query : null;
      // A documentId first, then Apollo's hash: a client sends one of them.
      const [field, named] = present(request.documentId)
        ? ['documentId', request.documentId]
        : ['extensions.persistedQuery.sha256Hash', persistedQueryHash(request.extensions)];
      if (present(named)) {
        const hash = requestedHash(named);
        if (!hash) {
          return {
            kind: 'refused',
            status: 400,
            code: ErrorCode.PERSISTED_QUERY_NOT_FOUND,
            message: `${field} must be the 64 hex digits of a SHA-256, optionally prefixed with "sha256:".`,
          };
        }
        // Clients that send the text too: it must be the document they name.
        if (text !== null && documentHash(text) !== hash) {
          return {
            kind: 'refused',
            status: 400,
            code: 'BAD_REQUEST',
            message: `The query sent is not the document ${field} names (its SHA-256 differs).`,
          };
        }
        const registered = documents.get(hash);
        if (registered !== undefined) return { kind: 'run', query: registered };
        // Apollo's automatic persisted queries send the text after a miss, with its hash: as any text.
        if (text !== null) return byText(text, request, transport);
        return {
          kind: 'refused',
          status: 400,
          code: ErrorCode.PERSISTED_QUERY_NOT_FOUND,
          message: `No document sha256:${hash} is registered in this gateway's trusted documents.`,
        };
      }
      // Neither text nor id: passed on, and refused downstream as an empty request.
      return text === null ? { kind: 'asSent' } : byText(text, request, transport);
    },
  };
}

import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';

import {
  type CompactJWSHeaderParameters,
  type CryptoKey,
  type JWTPayload,
  createRemoteJWKSet,
  errors as jose,
  importSPKI,
  importX509,
  jwtVerify,
} from 'jose';
import type { Logger } from 'pino';

import { ConfigError } from '../config/load.js';
import type { AuthConfig, Role } from '../config/schema.js';
import { ANONYMOUS, type Caller } from '../model/caller.js';
import { ErrorCode, GatewayError, errorMessage } from '../model/errors.js';
import { ApiTokenTable, isApiToken } from './api-tokens.js';

// Who is calling, decided once per HTTP request and once per WebSocket
// connection (at connection_init), before any operation runs. Only the
// credential's own proof counts: a bearer JWT checked against the issuer's
// keys, or an API token checked against the configured hashes. What the
// caller may then see and do is the policy's business, not this file's.
//
// A credential that is present but wrong is refused, whatever the anonymous
// configuration says: serving it as anonymous would turn a typo in a portal's
// token handling into silently different (and unaudited) access.

/** A request's credential, as HTTP or the WebSocket's connection_init carries it. */
export interface Credential {
  /** The `Authorization` value: `Bearer <JWT>` or `Bearer vgt_...`; absent when the request carries none. */
  authorization?: string | undefined;
  /** Where it came from, for the log line of a refusal. */
  transport?: 'http' | 'websocket';
  remoteAddress?: string | undefined;
}

/** Why a credential was refused: the log's `reason`. The client gets a sentence instead. */
export type RefusalReason =
  | 'missing'
  | 'malformed'
  | 'expired'
  | 'not-yet-valid'
  | 'issuer'
  | 'audience'
  | 'algorithm'
  | 'signature'
  | 'claims'
  | 'unknown-key'
  | 'keys-unavailable'
  | 'jwt-not-configured'
  | 'unknown-api-token';

/** A refused credential: UNAUTHENTICATED (HTTP 401, or a WebSocket closed with 4403). */
export class AuthenticationError extends GatewayError {
  constructor(
    readonly reason: RefusalReason,
    message: string,
    /** The token's verified subject, when the refusal came after the signature was checked (an expired token). */
    readonly subject?: string,
  ) {
    super(ErrorCode.UNAUTHENTICATED, message);
    this.name = 'AuthenticationError';
  }
}

export interface Authenticator {
  /** The caller a credential proves, or AuthenticationError; any other error is the gateway's own fault. */
  authenticate(credential: Credential): Promise<Caller>;
  /**
   * When the gateway stops accepting the caller's credential (ms since the
   * epoch): its expiry plus the configured clock tolerance, so that a
   * WebSocket lives exactly as long as a new request with the same token
   * would be served. Null when the credential does not expire.
   */
  acceptedUntil(caller: Caller): number | null;
}

/**
 * After a successful JWKS fetch, an unknown `kid` triggers another fetch only
 * after this long: tokens with made-up key IDs cannot make the gateway hammer
 * the issuer. Issuers publish a new key before they sign with it, so the wait
 * only matters for a key used the moment it is published.
 * @default 30_000 // 30 seconds
 */
export const JWKS_REFETCH_COOLDOWN_MS = 30_000;
/** How long one JWKS fetch may take. @default 5_000 // 5 seconds */
const JWKS_TIMEOUT_MS = 5_000;
/**
 * How old the fetched keys may grow before the next request refreshes them
 * in the background, so a key the issuer withdrew stops being trusted. A
 * failed refresh keeps the old keys: an issuer that is down must not lock
 * every caller out.
 * @default 600_000 // 10 minutes
 */
const JWKS_REFRESH_MS = 600_000;

const WRITE_ROLES: readonly Role[] = ['operator', 'admin'];

type JwtConfig = NonNullable<AuthConfig['jwt']>;
type KeySource = (header: CompactJWSHeaderParameters) => Promise<CryptoKey>;

/** The signing keys of a JWKS URL: cached, fetched again for an unknown `kid` (after the cooldown), refreshed when old. */
function remoteKeys(url: string, logger: Logger): KeySource {
  const jwks = createRemoteJWKSet(new URL(url), {
    // jose would drop its keys after cacheMaxAge and fail every token while
    // the issuer is down; the refresh below replaces them only on success.
    cacheMaxAge: Infinity,
    cooldownDuration: JWKS_REFETCH_COOLDOWN_MS,
    timeoutDuration: JWKS_TIMEOUT_MS,
  });
  let refreshedAt = Date.now();
  const refresh = () => {
    refreshedAt = Date.now();
    jwks.reload().catch((e: unknown) => {
      logger.warn(
        { jwksUrl: url, cause: errorMessage(e), cached: jwks.jwks() !== undefined },
        'could not fetch the JWKS; keys fetched before (if any) stay in use',
      );
    });
  };
  // Fetched at start, so the first caller does not wait for it and a later
  // outage finds keys in the cache.
  refresh();
  return async (header) => {
    if (Date.now() - refreshedAt > JWKS_REFRESH_MS && !jwks.reloading) refresh();
    try {
      return await jwks(header);
    } catch (e) {
      if (e instanceof jose.JWKSNoMatchingKey || e instanceof jose.JWKSMultipleMatchingKeys) throw e;
      logger.warn({ jwksUrl: url, cause: errorMessage(e) }, 'could not fetch the JWKS to verify a token');
      throw new AuthenticationError(
        'keys-unavailable',
        "The gateway could not fetch its token issuer's signing keys (JWKS); try again later.",
      );
    }
  };
}

/** The key of a PEM file (SPKI public key or X.509 certificate), imported once for each configured algorithm it fits. */
async function staticKeys(file: string, algorithms: readonly string[]): Promise<KeySource> {
  let pem: string;
  try {
    pem = await readFile(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`auth.jwt.publicKeyFile: cannot read ${file}: ${errorMessage(e)}`);
  }
  const keys = new Map<string, CryptoKey>();
  for (const alg of algorithms) {
    try {
      // WebCrypto binds a key to one algorithm: an RSA key serves RS256 and PS256 as two keys.
      keys.set(alg, pem.includes('BEGIN CERTIFICATE') ? await importX509(pem, alg) : await importSPKI(pem, alg));
    } catch {
      // Not this key's type (an EC key for RS256, a P-256 key for ES384): tokens with that alg are refused below.
    }
  }
  if (keys.size === 0) {
    throw new ConfigError(
      `auth.jwt.publicKeyFile: ${file} holds no PEM public key ("BEGIN PUBLIC KEY" or a certificate) usable with ${algorithms.join(', ')}`,
    );
  }
  return async (header) => {
    const key = keys.get(header.alg);
    if (!key) {
      throw new AuthenticationError('algorithm', "The bearer token's algorithm does not fit the gateway's key.");
    }
    return key;
  };
}

/** The refusal a jose error stands for; the subject when jose had verified the token before refusing it. */
function refusalFor(e: unknown, jwt: JwtConfig): AuthenticationError | null {
  if (e instanceof AuthenticationError) return e;
  if (e instanceof jose.JWTExpired) {
    return new AuthenticationError('expired', 'The bearer token has expired.', subjectIn(e.payload, jwt));
  }
  if (e instanceof jose.JWTClaimValidationFailed) {
    const subject = subjectIn(e.payload, jwt);
    switch (e.claim) {
      case 'nbf':
        return new AuthenticationError('not-yet-valid', 'The bearer token is not valid yet.', subject);
      case 'iss':
        return new AuthenticationError('issuer', 'The bearer token was issued by another issuer.', subject);
      case 'aud':
        return new AuthenticationError('audience', 'The bearer token is meant for another audience.', subject);
      case 'exp':
        return new AuthenticationError('claims', 'The bearer token has no valid expiry (exp).', subject);
      default:
        return new AuthenticationError('claims', `The bearer token's "${e.claim}" claim is not acceptable.`, subject);
    }
  }
  if (e instanceof jose.JOSEAlgNotAllowed) {
    return new AuthenticationError(
      'algorithm',
      `The bearer token is signed with an algorithm this gateway does not accept (it accepts ${jwt.algorithms.join(', ')}).`,
    );
  }
  if (e instanceof jose.JWSSignatureVerificationFailed) {
    return new AuthenticationError('signature', "The bearer token's signature does not verify.");
  }
  if (e instanceof jose.JWKSNoMatchingKey || e instanceof jose.JWKSMultipleMatchingKeys) {
    return new AuthenticationError('unknown-key', "No signing key of the token's issuer matches the bearer token.");
  }
  if (
    e instanceof jose.JWSInvalid ||
    e instanceof jose.JWTInvalid ||
    e instanceof jose.JOSENotSupported ||
    e instanceof jose.JWKInvalid
  ) {
    return new AuthenticationError('malformed', 'The bearer token is not a well-formed signed JWT.');
  }
  return null;
}

function subjectIn(payload: JWTPayload, jwt: JwtConfig): string | undefined {
  const sub = payload[jwt.subjectClaim];
  return typeof sub === 'string' && sub !== '' ? `user:${sub}` : undefined;
}

/** `Bearer <token>` (the scheme in any case, RFC 7235), or null. */
function bearerToken(authorization: string): string | null {
  const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(authorization);
  return m ? m[1]! : null;
}

/**
 * Establishes callers from credentials per `auth`: JWTs (when `auth.jwt` is
 * configured; its keys are fetched or read now), API tokens, and anonymous
 * callers (when `auth.anonymous` is configured). Refusals are logged with
 * their reason and, where known, the subject; never with the credential.
 * Throws ConfigError when the public key file cannot be used.
 */
export async function createAuthenticator(auth: AuthConfig, logger: Logger): Promise<Authenticator> {
  const { jwt } = auth;
  const apiTokens = new ApiTokenTable(auth.apiTokens);
  const keys: KeySource | null = !jwt
    ? null
    : jwt.jwksUrl
      ? remoteKeys(jwt.jwksUrl, logger)
      : await staticKeys(jwt.publicKeyFile!, jwt.algorithms);
  const toleranceMs = (jwt?.clockToleranceSeconds ?? 0) * 1000;

  const verifyJwt = async (token: string, jwt: JwtConfig, keys: KeySource): Promise<Caller> => {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer: jwt.issuer,
        audience: jwt.audience,
        algorithms: jwt.algorithms,
        clockTolerance: jwt.clockToleranceSeconds,
        // A token without an expiry would hold a WebSocket (and its access) forever.
        requiredClaims: ['exp'],
      }));
    } catch (e) {
      const refusal = refusalFor(e, jwt);
      if (refusal) throw refusal;
      throw e;
    }
    const sub = payload[jwt.subjectClaim];
    if (typeof sub !== 'string' || sub === '') {
      throw new AuthenticationError('claims', `The bearer token has no "${jwt.subjectClaim}" claim naming its user.`);
    }
    const groups = payload[jwt.groupsClaim];
    return {
      id: `user:${sub}`,
      kind: 'user',
      groups: Array.isArray(groups) && groups.every((g) => typeof g === 'string') ? [...(groups as string[])] : [],
      expiresAt: payload.exp! * 1000,
    };
  };

  const identify = async (authorization: string | undefined): Promise<Caller> => {
    if (authorization === undefined) {
      if (auth.anonymous) return ANONYMOUS;
      throw new AuthenticationError('missing', 'This gateway needs a credential: send Authorization: Bearer <token>.');
    }
    const token = bearerToken(authorization);
    if (token === null) {
      throw new AuthenticationError('malformed', 'The Authorization value must be "Bearer <token>".');
    }
    if (isApiToken(token)) {
      const name = apiTokens.nameOf(token);
      if (name === null)
        throw new AuthenticationError('unknown-api-token', 'The API token is not known to this gateway.');
      return { id: `token:${name}`, kind: 'token', groups: [], expiresAt: null };
    }
    if (!jwt || !keys) {
      throw new AuthenticationError(
        'jwt-not-configured',
        'This gateway accepts no JWTs (auth.jwt is not configured); use an API token.',
      );
    }
    return verifyJwt(token, jwt, keys);
  };

  return {
    authenticate: async (credential) => {
      try {
        return await identify(credential.authorization);
      } catch (e) {
        if (e instanceof AuthenticationError) {
          logger.info(
            {
              reason: e.reason,
              ...(e.subject ? { subject: e.subject } : {}),
              transport: credential.transport,
              remoteAddress: credential.remoteAddress,
            },
            'authentication refused',
          );
        }
        throw e;
      }
    },
    acceptedUntil: (caller) => (caller.expiresAt === null ? null : caller.expiresAt + toleranceMs),
  };
}

/** Whether `host` (as `server.host` gives it) is reachable only from this machine. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (h === 'localhost') return true;
  switch (isIP(h)) {
    case 4:
      return h.startsWith('127.');
    case 6:
      return h === '::1' || /^::ffff:127\./.test(h) || /^(0{1,4}:){7}0{0,3}1$/.test(h);
    default:
      return false;
  }
}

/**
 * Why the gateway must not listen where it is told to, or null: a
 * non-loopback address with anonymous callers that may change VMs, unless
 * `auth.allowAnonymousWriteOnNetwork` says so on purpose.
 */
export function anonymousWriteRefusal(host: string, auth: AuthConfig): string | null {
  const roles = auth.anonymous?.roles.filter((r) => WRITE_ROLES.includes(r)) ?? [];
  if (roles.length === 0 || isLoopbackHost(host) || auth.allowAnonymousWriteOnNetwork) return null;
  return (
    `server.host is ${host}, reachable from other machines, and anonymous callers have the ${roles.join(' and ')} role ` +
    '(without an auth section they are admins): anyone who reaches the port could change or delete VMs. ' +
    'Configure auth.jwt or auth.apiTokens and leave auth.anonymous out (or give it the viewer role), ' +
    'listen on 127.0.0.1, or set auth.allowAnonymousWriteOnNetwork: true to serve it anyway.'
  );
}

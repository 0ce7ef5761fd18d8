import { readFileSync } from 'node:fs';

import { Pool, errors as undiciErrors } from 'undici';

import {
  type UpstreamLabel,
  instrumentUpstream,
  upstreamLabel,
  upstreamSessionClosed,
  upstreamSessionOpened,
} from '../../observability/upstream.js';
import { VimFault, VsphereTransportError } from './errors.js';
import { type XNode, child, parseXml, path } from './xml.js';
import { Semaphore } from './semaphore.js';

export interface SoapClientOptions {
  /** The SDK endpoint, for example https://vcenter.example/sdk. */
  url: string;
  /** Skip certificate verification (lab only). @default false */
  insecure?: boolean;
  /** PEM file of a CA to trust for this endpoint, besides the system's. */
  caFile?: string;
  /** SOAP requests in flight at once; more wait their turn. @default 16 */
  maxConcurrentRequests?: number;
  /** Time for one request to be answered. @default 60_000 // 60 seconds */
  requestTimeoutMs?: number;
}

const ENVELOPE_OPEN =
  '<?xml version="1.0" encoding="UTF-8"?>' +
  '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"' +
  ' xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">' +
  '<soapenv:Body>';
const ENVELOPE_CLOSE = '</soapenv:Body></soapenv:Envelope>';

const TLS_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_NOT_YET_VALID',
]);

/**
 * The vim25 SOAP transport: one keep-alive connection pool per endpoint,
 * the session cookie, a cap on requests in flight, and faults turned into
 * typed errors. It knows nothing of particular methods.
 */
export class SoapClient {
  private readonly pool: Pool;
  private readonly endpoint: URL;
  private readonly gate: Semaphore;
  private readonly timeoutMs: number;
  private cookie: string | null = null;
  private soapAction = 'urn:vim25/6.5';
  private readonly counts = new Map<string, number>();
  /** Whose calls these are, in the gateway's metrics and traces. */
  private readonly upstream: UpstreamLabel;
  private closed = false;

  constructor(opts: SoapClientOptions) {
    this.endpoint = new URL(opts.url);
    this.upstream = upstreamLabel('vsphere', this.endpoint.href);
    this.timeoutMs = opts.requestTimeoutMs ?? 60_000;
    this.gate = new Semaphore(opts.maxConcurrentRequests ?? 16);
    this.pool = new Pool(this.endpoint.origin, {
      connections: opts.maxConcurrentRequests ?? 16,
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
      connectTimeout: Math.min(this.timeoutMs, 10_000),
      connect: {
        rejectUnauthorized: !opts.insecure,
        ...(opts.caFile ? { ca: readFileSync(opts.caFile, 'utf8') } : {}),
      },
    });
    upstreamSessionOpened(this.upstream);
  }

  /** Speak the API version the server reports, once it is known. */
  setApiVersion(version: string): void {
    this.soapAction = `urn:vim25/${version}`;
  }

  /** Forget the session cookie (after Logout, or before a new Login). */
  clearSession(): void {
    this.cookie = null;
  }

  /** SOAP calls made so far, in total and per method. */
  callCounts(): { total: number; byMethod: Record<string, number> } {
    return { total: [...this.counts.values()].reduce((a, b) => a + b, 0), byMethod: Object.fromEntries(this.counts) };
  }

  /** Requests in flight, their peak, and requests waiting. */
  load(): { active: number; peak: number; waiting: number } {
    return this.gate.load();
  }

  /**
   * Calls one vim25 method. `body` is the XML of its arguments (including
   * `_this`). Resolves with the `<MethodResponse>` element; elements named in
   * `deferred` are left unparsed (see expandXml).
   */
  invoke(method: string, body: string, deferred?: ReadonlySet<string>): Promise<XNode> {
    // Timed inside the gate: the metric is how long vSphere took, not how long our own cap held the call.
    return this.gate.run(() => instrumentUpstream(this.upstream, method, () => this.send(method, body, deferred)));
  }

  /** One method's round trip: the envelope, the POST, then its fault or its response. */
  private async send(method: string, body: string, deferred: ReadonlySet<string> | undefined): Promise<XNode> {
    this.counts.set(method, (this.counts.get(method) ?? 0) + 1);
    const text = await this.post(`${ENVELOPE_OPEN}<${method} xmlns="urn:vim25">${body}</${method}>${ENVELOPE_CLOSE}`);
    let envelope: XNode;
    try {
      envelope = parseXml(text, deferred);
    } catch (e) {
      throw new VsphereTransportError('PROTOCOL', `${method}: the response is not XML (${(e as Error).message})`);
    }
    const responseBody = child(envelope, 'Body');
    if (envelope.name !== 'Envelope' || !responseBody) {
      throw new VsphereTransportError('PROTOCOL', `${method}: the response is not a SOAP envelope`);
    }
    const fault = child(responseBody, 'Fault');
    if (fault) throw faultOf(fault);
    const response = child(responseBody, `${method}Response`);
    if (!response) throw new VsphereTransportError('PROTOCOL', `${method}: the response has no ${method}Response`);
    return response;
  }

  private async post(envelope: string): Promise<string> {
    const headers: Record<string, string> = {
      'content-type': 'text/xml; charset=utf-8',
      soapaction: this.soapAction,
    };
    if (this.cookie) headers['cookie'] = this.cookie;
    let res;
    try {
      res = await this.pool.request({
        path: this.endpoint.pathname,
        method: 'POST',
        headers,
        body: envelope,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      throw transportError(e, this.endpoint.host);
    }
    const setCookie = res.headers['set-cookie'];
    const session = (Array.isArray(setCookie) ? setCookie : setCookie ? [setCookie] : []).find((c) =>
      c.startsWith('vmware_soap_session='),
    );
    if (session) this.cookie = session.split(';')[0] ?? null;
    let text: string;
    try {
      text = await res.body.text();
    } catch (e) {
      throw transportError(e, this.endpoint.host);
    }
    // Faults come with status 500; anything else but 200 is not SOAP.
    if (res.statusCode !== 200 && !(res.statusCode === 500 && text.includes('Fault'))) {
      throw new VsphereTransportError('PROTOCOL', `HTTP ${res.statusCode} from ${this.endpoint.host}`);
    }
    return text;
  }

  async close(): Promise<void> {
    if (!this.closed) upstreamSessionClosed(this.upstream);
    this.closed = true;
    await this.pool.close().catch(() => undefined);
  }
}

function faultOf(fault: XNode): VimFault {
  const message = path(fault, 'faultstring')?.text || 'vSphere fault';
  const detail = child(fault, 'detail')?.children[0];
  const type = detail?.attrs['xsi:type'] ?? detail?.name.replace(/Fault$/, '') ?? 'SystemError';
  return new VimFault(type, message);
}

function transportError(e: unknown, host: string): VsphereTransportError {
  const err = e as { code?: unknown; name?: string; message?: string; cause?: { code?: unknown; message?: string } };
  // Node's codes are strings; a DOMException (an aborted request) carries a number.
  const raw = err.code ?? err.cause?.code;
  const code = typeof raw === 'string' ? raw : '';
  const detail = err.cause?.message ?? err.message ?? String(e);
  // OpenSSL's refusals that Node reports without a code of their own ("EE certificate key too weak").
  const tlsWording =
    /certificate|CERT_|SSL routines|key too weak/i.test(detail) && !/ECONNREFUSED|ENOTFOUND/.test(code);
  if (TLS_CODES.has(code) || code.startsWith('ERR_SSL_') || tlsWording) {
    return new VsphereTransportError('TLS', `certificate of ${host} refused: ${detail}`);
  }
  if (
    err.name === 'TimeoutError' ||
    e instanceof undiciErrors.HeadersTimeoutError ||
    e instanceof undiciErrors.BodyTimeoutError ||
    e instanceof undiciErrors.ConnectTimeoutError
  ) {
    return new VsphereTransportError('TIMEOUT', `no answer from ${host} in time`);
  }
  return new VsphereTransportError('UNREACHABLE', `cannot reach ${host}: ${detail}`);
}

import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';

import { Agent, request } from 'undici';

import { describeError } from './vcsim.js';

const ENVELOPE_HEAD =
  '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">';

export type ProxyMode = 'pass' | 'truncate' | 'html' | 'page';

/**
 * A plain-HTTP loopback proxy in front of a real simulator that can spoil
 * its answers on demand, a failure vcsim cannot produce by itself. In 'page'
 * mode it splits RetrievePropertiesEx results into pages of `pageSize`
 * objects with continuation tokens, as vCenter does and vcsim 0.24 does not.
 */
export async function startSoapProxy(
  target: string,
  caFile: string,
  pageSize = 3,
): Promise<{
  url: string;
  setMode(m: ProxyMode, method?: string): void;
  /** Holds requests whose body matches, unanswered, until release(): a peer that stops answering some calls. */
  hold(matches: (body: string) => boolean): void;
  release(): void;
  pagesServed(): number;
  /** Every response body the simulator sent through the proxy. */
  responses(): string[];
  /** Requests the proxy could not relay to the simulator (answered 502), and why. */
  errors(): string[];
  close(): Promise<void>;
}> {
  const dispatcher = new Agent({ connect: { ca: readFileSync(caFile, 'utf8') } });
  let mode: ProxyMode = 'pass';
  let onlyMethod: string | undefined;
  const pending = new Map<string, string[]>();
  let tokens = 0;
  let served = 0;
  const seen: string[] = [];
  const upstreamErrors: string[] = [];
  const page = (envelopeHead: string, method: string, objects: string[]): string => {
    const now = objects.slice(0, pageSize);
    const rest = objects.slice(pageSize);
    let token = '';
    if (rest.length > 0) {
      tokens += 1;
      pending.set(String(tokens), rest);
      token = `<token>${tokens}</token>`;
    }
    served += 1;
    return `${envelopeHead}<soapenv:Body><${method}Response xmlns="urn:vim25"><returnval>${token}${now.join('')}</returnval></${method}Response></soapenv:Body></soapenv:Envelope>`;
  };
  // A simulator the proxy cannot reach (a certificate this Node.js refuses,
  // say) fails the test here, naming why, instead of in a request handler.
  try {
    const probe = await request(new URL('/about', target), { method: 'GET', dispatcher });
    await probe.body.dump();
  } catch (err) {
    await dispatcher.close().catch(() => {});
    throw new Error(`the SOAP proxy cannot reach the simulator at ${target}: ${describeError(err)}`);
  }
  const server: Server = createServer((req, res) => {
    // An upstream failure becomes a 502 naming it, never an unhandled rejection.
    handle(req, res).catch((err: unknown) => {
      const message = `soap-proxy: cannot relay to ${target}: ${describeError(err)}`;
      upstreamErrors.push(message);
      if (res.headersSent) {
        res.destroy();
      } else {
        res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8' });
        res.end(message);
      }
    });
  });
  let held: ((body: string) => boolean) | null = null;
  let released: Promise<void> = Promise.resolve();
  let release = () => {};
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    while (held?.(body)) await released;
    if (mode === 'page' && body.includes('<ContinueRetrievePropertiesEx ')) {
      const token = /<token>([^<]*)<\/token>/.exec(body)?.[1] ?? '';
      const rest = pending.get(token) ?? [];
      pending.delete(token);
      res.writeHead(200, { 'content-type': 'text/xml; charset=utf-8' });
      res.end(page(ENVELOPE_HEAD, 'ContinueRetrievePropertiesEx', rest));
      return;
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && k !== 'host') headers[k] = v;
    const upstream = await request(target, { method: 'POST', headers, body, dispatcher });
    const text = await upstream.body.text();
    seen.push(text);
    const cookie = upstream.headers['set-cookie'];
    if (cookie) res.setHeader('set-cookie', cookie);
    const spoil = mode !== 'pass' && (!onlyMethod || body.includes(`<${onlyMethod} `));
    if (mode === 'page' && body.includes('<RetrievePropertiesEx ') && upstream.statusCode === 200) {
      const objects = text.match(/<objects>[\s\S]*?<\/objects>/g) ?? [];
      const head = /^[\s\S]*?<soapenv:Envelope[^>]*>/.exec(text)?.[0] ?? ENVELOPE_HEAD;
      res.writeHead(200, { 'content-type': 'text/xml; charset=utf-8' });
      res.end(page(head, 'RetrievePropertiesEx', objects));
    } else if (spoil && mode === 'page') {
      res.writeHead(upstream.statusCode, { 'content-type': 'text/xml; charset=utf-8' });
      res.end(text);
    } else if (spoil && mode === 'html') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html><body>Service Unavailable</body></html>');
    } else if (spoil) {
      res.writeHead(200, { 'content-type': 'text/xml' });
      res.end(text.slice(0, Math.floor(text.length / 2)));
    } else {
      res.writeHead(upstream.statusCode, { 'content-type': 'text/xml; charset=utf-8' });
      res.end(text);
    }
  };
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/sdk`,
    setMode: (m, method) => {
      mode = m;
      onlyMethod = method;
    },
    hold: (matches) => {
      held = matches;
      released = new Promise((resolve) => (release = resolve));
    },
    release: () => {
      held = null;
      release();
    },
    pagesServed: () => served,
    responses: () => [...seen],
    errors: () => [...upstreamErrors],
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await dispatcher.close();
    },
  };
}

import { Script, createContext } from 'node:vm';

import { createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';

import { explorerAssetPrefix } from '../src/server/explorer.js';

/** Where the default endpoint's explorer files are. */
const EXPLORER_ASSET_PREFIX = explorerAssetPrefix('/graphql');
import { type TestGateway, startTestGateway } from './helpers/gateway.js';

// The production profile of the HTTP side: the explorer page's security
// headers (a CSP that allows exactly what the page loads, no framing, no
// referrer), nosniff on every answer, Apollo's CSRF prevention kept, and the
// explorer and introspection off by default on an address other machines
// can reach.

const PLATFORMS = [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }];
const INTROSPECTION = '{ __schema { queryType { name } } }';

/** A CSP header as directive name -> its sources. */
function parseCsp(header: string): Map<string, string[]> {
  return new Map(
    header
      .split(';')
      .map((d) => d.trim().split(/\s+/))
      .filter((parts) => parts[0])
      .map(([name, ...sources]) => [name!, sources]),
  );
}

/** Each element `tag` of a page, with its attributes and its content (the page is ours and simple: no parser needed). */
function elements(html: string, tag: string): { attrs: Map<string, string>; content: string }[] {
  const selfClosing = tag === 'link' || tag === 'meta';
  const pattern = selfClosing
    ? new RegExp(`<${tag}\\b([^>]*)>`, 'gi')
    : new RegExp(`<${tag}\\b([^>]*)>([\\s\\S]*?)</${tag}>`, 'gi');
  return [...html.matchAll(pattern)].map((m) => ({
    attrs: new Map([...(m[1] ?? '').matchAll(/([a-z-]+)="([^"]*)"/gi)].map((a) => [a[1]!.toLowerCase(), a[2]!])),
    content: m[2] ?? '',
  }));
}

async function explorerPage(url: string): Promise<Response> {
  return fetch(url, { headers: { accept: 'text/html' } });
}

describe('the explorer page at a loopback address', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ platforms: PLATFORMS });
  });
  afterAll(() => gw?.close());

  it('is sent with a tight Content-Security-Policy, no framing, no referrer and nosniff', async () => {
    const res = await explorerPage(gw.url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('referrer-policy')).toBe('no-referrer');
    const csp = parseCsp(res.headers.get('content-security-policy') ?? '');
    expect(csp.get('default-src')).toEqual(["'self'"]);
    // Scripts: files from the gateway only, no inline script, no eval.
    expect(csp.get('script-src')).toEqual(["'self'"]);
    expect(csp.get('style-src')).toEqual(["'self'", expect.stringMatching(/^'nonce-[A-Za-z0-9+/]{22}=='$/)]);
    expect(csp.get('connect-src')).toEqual(["'self'"]);
    expect(csp.get('frame-ancestors')).toEqual(["'none'"]);
    expect(csp.get('object-src')).toEqual(["'none'"]);
    expect(csp.get('base-uri')).toEqual(["'none'"]);
    expect([...csp.values()].flat()).not.toContain("'unsafe-inline'");
    expect([...csp.values()].flat()).not.toContain("'unsafe-eval'");
  });

  it('references only what its policy allows: same-origin files under the asset prefix, and nonce-carrying inline style', async () => {
    const res = await explorerPage(gw.url);
    const html = await res.text();
    const csp = parseCsp(res.headers.get('content-security-policy')!);
    const nonce = /^'nonce-(.+)'$/.exec(csp.get('style-src')![1]!)![1]!;
    const origin = new URL(gw.url).origin;

    const scripts = elements(html, 'script');
    expect(scripts.length).toBeGreaterThanOrEqual(4);
    const stylesheets = elements(html, 'link').filter((l) => l.attrs.get('rel') === 'stylesheet');
    expect(stylesheets).toHaveLength(1);
    const files = [
      ...scripts.map((s) => ({ ref: s.attrs.get('src'), type: 'text/javascript' })),
      ...stylesheets.map((l) => ({ ref: l.attrs.get('href'), type: 'text/css' })),
    ];
    for (const { ref, type } of files) {
      // No inline script (script-src 'self' would block it): every script is a file.
      expect(ref, 'a script or stylesheet without a URL').toBeDefined();
      const url = new URL(ref!, gw.url);
      expect(url.origin, ref).toBe(origin);
      expect(url.pathname.startsWith(EXPLORER_ASSET_PREFIX), ref).toBe(true);
      const asset = await fetch(url);
      expect(asset.status, ref).toBe(200);
      expect(asset.headers.get('content-type'), ref).toBe(type);
      expect(asset.headers.get('x-content-type-options'), ref).toBe('nosniff');
      expect(asset.headers.get('cross-origin-resource-policy'), ref).toBe('same-origin');
    }
    for (const script of scripts) expect(script.content.trim()).toBe('');
    // The one inline style carries the nonce the policy names.
    const styles = elements(html, 'style');
    expect(styles.map((s) => s.attrs.get('nonce'))).toEqual([nonce]);
    // Nothing else that loads: no inline handlers, no other sources.
    expect(html).not.toMatch(/\son[a-z]+=/i);
    expect(elements(html, 'iframe')).toEqual([]);
    expect(elements(html, 'img')).toEqual([]);
  });

  it('gives each page a fresh nonce', async () => {
    const nonces = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const res = await explorerPage(gw.url);
      nonces.add(res.headers.get('content-security-policy')!);
      await res.text();
    }
    expect(nonces.size).toBe(3);
  });

  it("starts GraphiQL from its own file, against the page's endpoint, handing GraphiQL's dialogs the style nonce", async () => {
    const html = await (await explorerPage(gw.url)).text();
    const start = elements(html, 'script').find((s) => s.attrs.get('src')?.endsWith('/start.js'))!;
    const source = await (await fetch(new URL(start.attrs.get('src')!, gw.url))).text();
    // The browser globals the script uses, recorded.
    const calls: { fetcherUrl?: string; rendered?: unknown; root?: unknown } = {};
    const root = { dataset: { endpoint: new URL(gw.url).pathname } };
    const window: Record<string, unknown> = {};
    const sandbox = {
      window,
      location: { href: `${new URL(gw.url).origin}/graphql` },
      URL,
      document: {
        currentScript: { nonce: 'the-nonce' },
        getElementById: (name: string) => (name === 'explorer' ? root : null),
      },
      GraphiQL: Object.assign(() => null, {
        createFetcher: ({ url }: { url: string }) => {
          calls.fetcherUrl = url;
          return 'fetcher';
        },
      }),
      React: { createElement: (type: unknown, props: unknown) => ({ type, props }) },
      ReactDOM: {
        createRoot: (element: unknown) => {
          calls.root = element;
          return { render: (tree: unknown) => (calls.rendered = tree) };
        },
      },
    };
    new Script(source).runInContext(createContext(sandbox));
    expect(calls.fetcherUrl).toBe(gw.url);
    expect(calls.root).toBe(root);
    expect(calls.rendered).toMatchObject({
      props: { fetcher: 'fetcher', defaultQuery: expect.stringContaining('virtualMachines') },
    });
    expect(window['__webpack_nonce__']).toBe('the-nonce');
  });

  it('says nosniff on every answer, not only the explorer', async () => {
    const answers = await Promise.all([
      fetch(gw.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query: '{ __typename }' }),
      }),
      fetch(gw.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{ broken' }),
      fetch(gw.url, { method: 'OPTIONS' }),
      fetch(new URL('/healthz', gw.url)),
      fetch(new URL('/readyz', gw.url)),
      fetch(new URL('/nothing-here', gw.url)),
      fetch(new URL(`${EXPLORER_ASSET_PREFIX}nothing.js`, gw.url)),
    ]);
    for (const res of answers) {
      expect(res.headers.get('x-content-type-options'), `${res.url} ${res.status}`).toBe('nosniff');
      await res.arrayBuffer();
    }
  });
});

describe('the explorer under a sub-path', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ server: { path: '/virt/graphql' }, platforms: PLATFORMS });
  });
  afterAll(() => gw?.close());

  /** The page's scripts and stylesheet, as its own URL names them. */
  const refsOf = (html: string) => [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);

  it('serves its files beside the endpoint, and names them relative to the page', async () => {
    const page = new URL('/virt/graphql', gw.url);
    const html = await (await explorerPage(page.toString())).text();
    const refs = refsOf(html);
    expect(refs.length).toBeGreaterThanOrEqual(5);
    for (const ref of refs) {
      const url = new URL(ref, page);
      expect(url.pathname.startsWith('/virt/explorer/'), ref).toBe(true);
      expect((await fetch(url)).status, ref).toBe(200);
    }
  });

  it('works behind a reverse proxy that serves it under a prefix it strips', async () => {
    // The browser sees https://portal/ops/graphql; the proxy sends /graphql-relative paths on without /ops.
    const gateway = await startTestGateway({ platforms: PLATFORMS });
    try {
      const html = await (await explorerPage(gateway.url)).text();
      for (const ref of refsOf(html)) {
        const seen = new URL(ref, 'https://portal.example/ops/graphql');
        expect(seen.pathname.startsWith('/ops/'), ref).toBe(true);
        const forwarded = new URL(seen.pathname.slice('/ops'.length), gateway.url);
        expect((await fetch(forwarded)).status, ref).toBe(200);
      }
    } finally {
      await gateway.close();
    }
  });
});

describe("Apollo's CSRF prevention", () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ platforms: PLATFORMS });
  });
  afterAll(() => gw?.close());

  const CSRF = /This operation has been blocked as a potential Cross-Site Request Forgery/;
  const search = `?${new URLSearchParams({ query: '{ platforms { id } }' })}`;

  it('refuses a GET query without a header that forces a preflight', async () => {
    const res = await fetch(`${gw.url}${search}`);
    expect(res.status).toBe(400);
    expect(await res.text()).toMatch(CSRF);
  });

  it('refuses a POST a plain form could send (text/plain), even with a JSON body', async () => {
    const res = await fetch(gw.url, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: JSON.stringify({ query: '{ platforms { id } }' }),
    });
    expect(res.status).toBe(400);
    expect(await res.text()).toMatch(CSRF);
  });

  it('serves the same requests with a preflight header', async () => {
    const res = await fetch(`${gw.url}${search}`, { headers: { 'apollo-require-preflight': 'true' } });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ data: { platforms: expect.any(Array) } });
  });
});

describe('on an address other machines can reach', () => {
  // 0.0.0.0 listens on every interface of this machine; the test calls it through loopback.
  // Anonymous callers may only read, so the gateway agrees to start there.
  const network = { host: '0.0.0.0' };
  const auth = { anonymous: { roles: ['viewer'] } };
  let closed: TestGateway;
  let enabled: TestGateway;
  const local = (gw: TestGateway) => `http://127.0.0.1:${gw.port}/graphql`;
  beforeAll(async () => {
    closed = await startTestGateway({ server: network, auth, platforms: PLATFORMS });
    enabled = await startTestGateway({ server: { ...network, explorer: true }, auth, platforms: PLATFORMS });
  });
  afterAll(async () => {
    await closed?.close();
    await enabled?.close();
  });

  const post = async (url: string, query: string) => {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query }),
    });
    return (await res.json()) as { data?: unknown; errors?: { message: string; extensions?: { code?: string } }[] };
  };
  const overWebSocket = async (url: string, query: string) => {
    const client = createClient({ url: url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, retryAttempts: 0 });
    try {
      return await new Promise<{ data?: unknown; errors?: { extensions?: { code?: string } }[] }>((resolve, reject) => {
        let result = {};
        client.subscribe(
          { query },
          {
            next: (value) => (result = value),
            error: (errors) =>
              Array.isArray(errors)
                ? resolve({ errors: errors as { extensions?: { code?: string } }[] })
                : reject(errors instanceof Error ? errors : new Error(JSON.stringify(errors))),
            complete: () => resolve(result),
          },
        );
      });
    } finally {
      await client.dispose();
    }
  };

  it('serves no explorer page and no explorer files by default', async () => {
    const page = await explorerPage(local(closed));
    expect(page.headers.get('content-type')).not.toMatch(/text\/html/);
    expect(await page.text()).not.toContain('id="explorer"');
    expect((await fetch(`http://127.0.0.1:${closed.port}${EXPLORER_ASSET_PREFIX}graphiql.js`)).status).toBe(404);
  });

  it('refuses introspection by default, on HTTP and WebSocket, and still serves queries', async () => {
    const http = await post(local(closed), INTROSPECTION);
    expect(http.data).toBeUndefined();
    expect(http.errors?.[0]?.extensions?.code).toBe('GRAPHQL_VALIDATION_FAILED');
    expect(http.errors?.[0]?.message).toMatch(/introspection is not allowed/);
    const ws = await overWebSocket(local(closed), INTROSPECTION);
    expect(ws.errors?.[0]?.extensions?.code).toBe('GRAPHQL_VALIDATION_FAILED');
    expect((await post(local(closed), '{ platforms { id } }')).data).toMatchObject({ platforms: expect.any(Array) });
  });

  it('serves both when the configuration asks for the explorer', async () => {
    const page = await explorerPage(local(enabled));
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    expect(await page.text()).toContain('id="explorer"');
    expect((await post(local(enabled), INTROSPECTION)).data).toEqual({ __schema: { queryType: { name: 'Query' } } });
  });
});

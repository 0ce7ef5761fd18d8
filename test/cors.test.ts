import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';

import { PROTOCOL } from '../src/server/graphql-transport-ws.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';

// Browser origins: CORS headers for listed origins, and refusal of the
// others, on HTTP and at the WebSocket upgrade (to which browsers apply no CORS).

const QUERY = JSON.stringify({ query: '{ platforms { name } }' });

describe('CORS for browser clients', () => {
  let closed: TestGateway;
  let open: TestGateway;
  let listed: TestGateway;
  beforeAll(async () => {
    const platforms = [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }];
    closed = await startTestGateway({ platforms });
    open = await startTestGateway({ server: { corsOrigins: ['*'] }, platforms });
    listed = await startTestGateway({ server: { corsOrigins: ['https://portal.example'] }, platforms });
  });
  afterAll(async () => {
    await closed?.close();
    await open?.close();
    await listed?.close();
  });

  const preflight = (url: string, origin: string) =>
    fetch(url, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
  const post = (url: string, origin?: string) =>
    fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(origin ? { origin } : {}) },
      body: QUERY,
    });
  /** The HTTP status of a WebSocket upgrade from `origin`: 101 when it opens. */
  const upgrade = (url: string, origin: string) =>
    new Promise<number>((resolve, reject) => {
      const socket = new WebSocket(url.replace(/^http/, 'ws'), PROTOCOL, { origin });
      socket.once('unexpected-response', (req, res) => {
        resolve(res.statusCode ?? 0);
        req.destroy();
      });
      socket.once('open', () => {
        resolve(101);
        socket.close();
      });
      socket.once('error', reject);
    });

  it('allows no foreign origin by default: no CORS headers, and its requests and WebSockets are refused', async () => {
    const res = await preflight(closed.url, 'https://anywhere.example');
    expect(res.status).toBe(204);
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
    expect(res.headers.get('access-control-allow-methods')).toBeNull();
    const foreign = await post(closed.url, 'https://anywhere.example');
    expect(foreign.status).toBe(403);
    expect(await foreign.json()).toMatchObject({ errors: [{ extensions: { code: 'ORIGIN_NOT_ALLOWED' } }] });
    expect(await upgrade(closed.url, 'https://anywhere.example')).toBe(403);
  });

  it("serves the gateway's own pages (the explorer) and clients that send no Origin", async () => {
    const own = new URL(closed.url).origin;
    const same = await post(closed.url, own);
    expect(same.status).toBe(200);
    expect(same.headers.get('access-control-allow-origin')).toBeNull();
    expect((await post(closed.url)).status).toBe(200);
    expect(await upgrade(closed.url, own)).toBe(101);
  });

  it('allows any origin with "*"', async () => {
    const res = await preflight(open.url, 'https://anywhere.example');
    expect(res.status).toBe(204);
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    expect(res.headers.get('access-control-allow-methods')).toBe('GET, POST, OPTIONS');
    expect(res.headers.get('access-control-allow-headers')).toContain('authorization');
    const foreign = await post(open.url, 'https://anywhere.example');
    expect(foreign.status).toBe(200);
    expect(foreign.headers.get('access-control-allow-origin')).toBe('*');
    expect(await upgrade(open.url, 'https://anywhere.example')).toBe(101);
  });

  it('allows only the configured origins when given', async () => {
    const ok = await preflight(listed.url, 'https://portal.example');
    expect(ok.headers.get('access-control-allow-origin')).toBe('https://portal.example');
    expect(ok.headers.get('vary')).toBe('Origin');
    expect((await post(listed.url, 'https://portal.example')).status).toBe(200);
    expect(await upgrade(listed.url, 'https://portal.example')).toBe(101);
    const other = await preflight(listed.url, 'https://evil.example');
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
    expect(other.headers.get('access-control-allow-methods')).toBeNull();
    expect((await post(listed.url, 'https://evil.example')).status).toBe(403);
    expect(await upgrade(listed.url, 'https://evil.example')).toBe(403);
  });
});

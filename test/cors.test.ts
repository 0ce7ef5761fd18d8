import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type TestGateway, startTestGateway } from './helpers/gateway.js';

describe('CORS for browser clients', () => {
  let open: TestGateway;
  let listed: TestGateway;
  beforeAll(async () => {
    const platforms = [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }];
    open = await startTestGateway({ platforms });
    listed = await startTestGateway({ server: { corsOrigins: ['https://portal.example'] }, platforms });
  });
  afterAll(async () => {
    await open?.close();
    await listed?.close();
  });

  const preflight = (url: string, origin: string) =>
    fetch(url, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });

  it('answers a preflight and allows any origin by default', async () => {
    const res = await preflight(open.url, 'https://anywhere.example');
    expect(res.status).toBe(204);
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    expect(res.headers.get('access-control-allow-methods')).toBe('GET, POST, OPTIONS');
    expect(res.headers.get('access-control-allow-headers')).toContain('content-type');
    const post = await fetch(open.url, {
      method: 'POST',
      headers: { origin: 'https://anywhere.example', 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ platforms { name } }' }),
    });
    expect(post.headers.get('access-control-allow-origin')).toBe('*');
  });

  it('allows only the configured origins when given', async () => {
    const ok = await preflight(listed.url, 'https://portal.example');
    expect(ok.headers.get('access-control-allow-origin')).toBe('https://portal.example');
    expect(ok.headers.get('vary')).toBe('Origin');
    const other = await preflight(listed.url, 'https://evil.example');
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
    expect(other.headers.get('access-control-allow-methods')).toBeNull();
  });
});

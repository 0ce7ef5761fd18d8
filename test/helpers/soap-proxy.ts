import { type Server, createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';

import { Agent, request } from 'undici';

export type ProxyMode = 'pass' | 'truncate' | 'html';

/**
 * A plain-HTTP loopback proxy in front of a real simulator that can spoil
 * its answers on demand: the one failure vcsim cannot produce by itself.
 */
export async function startSoapProxy(target: string, caFile: string): Promise<{ url: string; setMode(m: ProxyMode, method?: string): void; close(): Promise<void> }> {
  const dispatcher = new Agent({ connect: { ca: readFileSync(caFile, 'utf8') } });
  let mode: ProxyMode = 'pass';
  let onlyMethod: string | undefined;
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && k !== 'host') headers[k] = v;
    const upstream = await request(target, { method: 'POST', headers, body, dispatcher });
    const text = await upstream.body.text();
    const cookie = upstream.headers['set-cookie'];
    if (cookie) res.setHeader('set-cookie', cookie);
    const spoil = mode !== 'pass' && (!onlyMethod || body.includes(`<${onlyMethod} `));
    if (spoil && mode === 'html') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html><body>Service Unavailable</body></html>');
    } else if (spoil) {
      res.writeHead(200, { 'content-type': 'text/xml' });
      res.end(text.slice(0, Math.floor(text.length / 2)));
    } else {
      res.writeHead(upstream.statusCode, { 'content-type': 'text/xml; charset=utf-8' });
      res.end(text);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/sdk`,
    setMode: (m, method) => {
      mode = m;
      onlyMethod = method;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await dispatcher.close();
    },
  };
}

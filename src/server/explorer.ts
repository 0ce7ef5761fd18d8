import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);

/** Static files of the explorer, served from installed packages: no CDN, works offline. */
const ASSETS: Record<string, { pkg: string; file: string; type: string }> = {
  'react.js': { pkg: 'react', file: 'umd/react.production.min.js', type: 'text/javascript' },
  'react-dom.js': { pkg: 'react-dom', file: 'umd/react-dom.production.min.js', type: 'text/javascript' },
  'graphiql.js': { pkg: 'graphiql', file: 'graphiql.min.js', type: 'text/javascript' },
  'graphiql.css': { pkg: 'graphiql', file: 'graphiql.min.css', type: 'text/css' },
};

const cache = new Map<string, Buffer>();

/**
 * Where the explorer's files are served: `explorer/` beside the endpoint
 * (`/graphql` → `/explorer/`, `/virt/graphql` → `/virt/explorer/`). The page
 * names them relative to itself, so behind a reverse proxy that serves the
 * gateway under a sub-path (and strips it) they resolve under that path too.
 */
export function explorerAssetPrefix(endpoint: string): string {
  return `${endpoint.slice(0, endpoint.lastIndexOf('/') + 1)}explorer/`;
}

const DEFAULT_QUERY = `# Welcome to the virtualization graph.
# Press the play button (or Ctrl-Enter) to run this query.
{
  platforms { name kind status statusMessage hypervisorType hypervisorVersion }
  virtualMachines(first: 10) {
    totalCount
    edges { node { name powerState phase memoryMiB vcpus host { name } } }
  }
}
`;

/**
 * What starts GraphiQL, served as a file rather than inline in the page so
 * the page's Content-Security-Policy can allow scripts from the gateway
 * only (`script-src 'self'`, no inline script, no hash to keep in step).
 * The endpoint comes from the page (`data-endpoint`); the nonce the page's
 * CSP gives styles is handed to GraphiQL's dialogs, which insert a <style>
 * element of their own (react-remove-scroll-bar reads `__webpack_nonce__`).
 */
const START_SCRIPT = Buffer.from(`// virt-graph explorer: starts GraphiQL on the page that loaded this file.
// It is a file of its own, not an inline script, so that the page's
// Content-Security-Policy allows scripts from the gateway's origin only.
'use strict';
(function () {
  // The nonce the page's policy allows styles with: GraphiQL's dialogs insert a
  // <style> element and give it __webpack_nonce__ when one is set.
  window.__webpack_nonce__ = document.currentScript.nonce;
  var root = document.getElementById('explorer');
  var fetcher = GraphiQL.createFetcher({ url: new URL(root.dataset.endpoint, location.href).toString() });
  ReactDOM.createRoot(root).render(
    React.createElement(GraphiQL, { fetcher: fetcher, defaultQuery: ${JSON.stringify(DEFAULT_QUERY)} }),
  );
})();
`);

export function explorerAsset(name: string): { body: Buffer; type: string } | null {
  if (name === 'start.js') return { body: START_SCRIPT, type: 'text/javascript' };
  const asset = ASSETS[name];
  if (!asset) return null;
  let body = cache.get(name);
  if (!body) {
    // The UMD bundles are not in the packages' "exports", so they are read by path.
    body = readFileSync(join(dirname(require.resolve(`${asset.pkg}/package.json`)), asset.file));
    cache.set(name, body);
  }
  return { body, type: asset.type };
}

/** A fresh nonce for one page: 128 random bits, as CSP asks of a nonce. */
export function explorerNonce(): string {
  return randomBytes(16).toString('base64');
}

/**
 * The page's Content-Security-Policy: everything from the gateway's own
 * origin only; scripts only as files (the explorer's assets; nothing else
 * on the origin is served as JavaScript, and every response says nosniff);
 * styles from the asset file or with the page's nonce; fonts and images
 * also as data: URLs (GraphiQL's stylesheet embeds its fonts and icons);
 * no plugins, no <base>, no form posts, and no framing (clickjacking).
 */
export function explorerContentSecurityPolicy(nonce: string): string {
  return [
    "default-src 'self'",
    "script-src 'self'",
    `style-src 'self' 'nonce-${nonce}'`,
    "img-src 'self' data:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

/** Headers of the explorer page besides its type: its CSP and the browser hardening that goes with it. */
export function explorerPageHeaders(nonce: string): Record<string, string> {
  return {
    'content-security-policy': explorerContentSecurityPolicy(nonce),
    // For browsers that predate frame-ancestors.
    'x-frame-options': 'DENY',
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    // The nonce is per response: a cached page would carry a stale one.
    'cache-control': 'no-store',
  };
}

const escapeAttribute = (text: string) =>
  text.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** The explorer page for the GraphQL endpoint at `endpoint`; `nonce` must be the one its CSP header names. */
export function explorerPage(endpoint: string, nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>virt-graph explorer</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="explorer/graphiql.css">
<style nonce="${nonce}">html, body, #explorer { height: 100%; margin: 0; }</style>
</head>
<body>
<div id="explorer" data-endpoint="${escapeAttribute(endpoint.slice(endpoint.lastIndexOf('/') + 1) || './')}">Loading the GraphiQL explorer...</div>
<script src="explorer/react.js"></script>
<script src="explorer/react-dom.js"></script>
<script src="explorer/graphiql.js"></script>
<script src="explorer/start.js" nonce="${nonce}"></script>
</body>
</html>
`;
}

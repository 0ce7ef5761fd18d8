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

export const EXPLORER_ASSET_PREFIX = '/explorer/';

export function explorerAsset(name: string): { body: Buffer; type: string } | null {
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

export function explorerPage(endpoint: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>virt-graph explorer</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="${EXPLORER_ASSET_PREFIX}graphiql.css">
<style>html, body, #explorer { height: 100%; margin: 0; }</style>
</head>
<body>
<div id="explorer">Loading the explorer...</div>
<script src="${EXPLORER_ASSET_PREFIX}react.js"></script>
<script src="${EXPLORER_ASSET_PREFIX}react-dom.js"></script>
<script src="${EXPLORER_ASSET_PREFIX}graphiql.js"></script>
<script>
  const fetcher = GraphiQL.createFetcher({ url: new URL(${JSON.stringify(endpoint)}, location.href).toString() });
  ReactDOM.createRoot(document.getElementById('explorer')).render(
    React.createElement(GraphiQL, { fetcher, defaultQuery: ${JSON.stringify(DEFAULT_QUERY)} }),
  );
</script>
</body>
</html>
`;
}

import { availableParallelism } from 'node:os';

import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // graphql 16 ships CJS (index.js) and ESM (index.mjs) without an "exports"
    // map: Node's loader picks the CJS build for Apollo Server, Vite would pick
    // the ESM one for our code, and graphql refuses objects from "another realm".
    alias: [{ find: /^graphql$/, replacement: 'graphql/index.js' }],
  },
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Each file starts its own gateways on free loopback ports; files run in parallel processes.
    pool: 'forks',
    // Most files spend their time waiting on the servers they start (libvirtd, vcsim, redis-server,
    // guests), so more files run at once than there are cores: vitest's default (cores - 1) ran the
    // suite one file at a time on two cores, in 13 to 14 minutes; three at once took 6 to 7. The files
    // that boot guests take turns (test/helpers/guest-turn.ts). At most 8: each file's servers take
    // up to a few hundred MB.
    maxWorkers: Math.min(8, Math.max(3, availableParallelism() - 1)),
    reporters: ['default'],
  },
});

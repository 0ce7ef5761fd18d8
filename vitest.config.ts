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
    reporters: ['default'],
  },
});

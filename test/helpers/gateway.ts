import type { FormattedExecutionResult } from 'graphql';
import { createClient } from 'graphql-ws';
import { pino } from 'pino';
import { WebSocket } from 'ws';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';

import { validateConfig } from '../../src/config/load.js';
import { type RunningGateway, startGateway } from '../../src/server/gateway.js';

export interface TestGateway extends RunningGateway {
  /** POSTs a GraphQL request over real HTTP and returns the parsed body. */
  query<T = Record<string, unknown>>(
    query: string,
    variables?: Record<string, unknown>,
  ): Promise<FormattedExecutionResult<T> & { status: number }>;
  /** Runs one operation over a real graphql-ws WebSocket client. */
  wsQuery<T = Record<string, unknown>>(
    query: string,
    variables?: Record<string, unknown>,
  ): Promise<FormattedExecutionResult<T>>;
  /** Log lines written so far, parsed. */
  logs(): Record<string, unknown>[];
}

/** Starts a gateway on a free loopback port with the given (partial) configuration. */
export async function startTestGateway(raw: Record<string, unknown>): Promise<TestGateway> {
  const config = validateConfig({
    server: { host: '127.0.0.1', port: 0, ...(raw['server'] as object) },
    // Each gateway keeps its state apart, unless a test shares it on purpose (a restart).
    state: { dir: mkdtempSync(join(tmpdir(), 'virt-graph-state-')) },
    ...without(raw, 'server'),
  });
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  const logger = pino({ level: 'debug' }, sink);
  const gateway = await startGateway(config, logger);
  await gateway.ready;

  return {
    ...gateway,
    async query(query, variables) {
      const res = await fetch(gateway.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query, variables }),
      });
      return { ...((await res.json()) as FormattedExecutionResult<never>), status: res.status };
    },
    async wsQuery(query, variables) {
      const client = createClient({
        url: gateway.url.replace(/^http/, 'ws'),
        webSocketImpl: WebSocket,
        retryAttempts: 0,
        lazy: true,
      });
      try {
        return await new Promise((resolve, reject) => {
          let result: FormattedExecutionResult<never> | undefined;
          client.subscribe<never>(
            { query, variables },
            {
              next: (value) => {
                result = value as FormattedExecutionResult<never>;
              },
              error: (errors) => {
                // graphql-ws reports refused operations as an array of GraphQL errors.
                if (Array.isArray(errors)) resolve({ errors } as FormattedExecutionResult<never>);
                else reject(errors instanceof Error ? errors : new Error(JSON.stringify(errors)));
              },
              complete: () => resolve(result ?? {}),
            },
          );
        });
      } finally {
        await client.dispose();
      }
    },
    logs: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

function without(obj: Record<string, unknown>, key: string): Record<string, unknown> {
  const { [key]: _dropped, ...rest } = obj;
  return rest;
}

/** A loopback port with nothing listening on it (bound, then released). */
export async function closedPort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

import type { FormattedExecutionResult } from 'graphql';
import { type Client, createClient } from 'graphql-ws';
import { WebSocket } from 'ws';

import { apiTokenSha256, generateApiToken } from '../../src/server/api-tokens.js';
import { type Subscription, subscribe } from './subscriptions.js';

/** A response over HTTP, with its status. */
export type HttpResult<T> = FormattedExecutionResult<T> & { status: number };

/**
 * One caller of a gateway, holding an API token: every request it makes
 * carries the token, as `Authorization: Bearer` on HTTP and in
 * `connectionParams` on graphql-ws.
 */
export interface CallerClient {
  /** The caller as the gateway names it (`token:a-viewer`). */
  id: string;
  /** POSTs one GraphQL request. */
  http<T = Record<string, unknown>>(query: string, variables?: Record<string, unknown>): Promise<HttpResult<T>>;
  /** Runs one query or mutation over a WebSocket of its own and returns its single result. */
  ws<T = Record<string, unknown>>(
    query: string,
    variables?: Record<string, unknown>,
  ): Promise<FormattedExecutionResult<T>>;
  /** Opens a subscription over a WebSocket of its own. */
  subscribe<T = Record<string, unknown>>(query: string, variables?: Record<string, unknown>): Subscription<T>;
}

/** A new API token and the `auth.apiTokens` entry that stands for it. */
export function apiToken(name: string): { token: string; entry: { name: string; sha256: string } } {
  const token = generateApiToken();
  return { token, entry: { name, sha256: apiTokenSha256(token) } };
}

function wsClient(url: string, token: string): Client {
  return createClient({
    url: url.replace(/^http/, 'ws'),
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    lazy: true,
    connectionParams: { authorization: `Bearer ${token}` },
  });
}

export function callerClient(url: string, name: string, token: string): CallerClient {
  return {
    id: `token:${name}`,
    async http<T>(query: string, variables?: Record<string, unknown>) {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ query, variables }),
      });
      return { ...((await res.json()) as FormattedExecutionResult<T>), status: res.status };
    },
    async ws<T>(query: string, variables?: Record<string, unknown>) {
      const client = wsClient(url, token);
      try {
        return await new Promise<FormattedExecutionResult<T>>((resolve, reject) => {
          let result: FormattedExecutionResult<T> = {};
          client.subscribe<T>(
            { query, variables },
            {
              next: (value) => (result = value as FormattedExecutionResult<T>),
              // graphql-ws reports an operation refused before it ran as an array of GraphQL errors.
              error: (e) =>
                Array.isArray(e)
                  ? resolve({ errors: e } as FormattedExecutionResult<T>)
                  : reject(e instanceof Error ? e : new Error(JSON.stringify(e))),
              complete: () => resolve(result),
            },
          );
        });
      } finally {
        await client.dispose();
      }
    },
    subscribe<T>(query: string, variables: Record<string, unknown> = {}): Subscription<T> {
      return subscribe<T>(url, query, variables, { authorization: `Bearer ${token}` });
    },
  };
}

import { type Client, createClient } from 'graphql-ws';
import { WebSocket } from 'ws';

/** A live subscription over a real graphql-ws client: what it received so far, and a way to wait for more. */
export interface Subscription<T> {
  events: T[];
  errors: unknown[];
  /** Resolves once `count` events have arrived (in all), or rejects after `timeoutMs`. */
  until(count: number, timeoutMs?: number): Promise<T[]>;
  /** Ends the subscription and closes its client. */
  close(): Promise<void>;
  /** The close code the server closed the socket with, if it did. */
  closeCode(): number | null;
}

export function subscribe<T = Record<string, unknown>>(
  url: string,
  query: string,
  variables: Record<string, unknown> = {},
  /** What connection_init carries (a caller's credential). */
  connectionParams?: Record<string, unknown>,
): Subscription<T> {
  let closeCode: number | null = null;
  const client: Client = createClient({
    url: url.replace(/^http/, 'ws'),
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    lazy: true,
    ...(connectionParams ? { connectionParams } : {}),
    on: { closed: (e) => (closeCode = (e as { code?: number }).code ?? null) },
  });
  const events: T[] = [];
  const errors: unknown[] = [];
  const waiters: (() => void)[] = [];
  const dispose = client.subscribe<T>(
    { query, variables },
    {
      next: (value) => {
        if (value.errors) errors.push(...value.errors);
        if (value.data) events.push(value.data as T);
        for (const w of waiters.splice(0)) w();
      },
      // graphql-ws reports an operation refused before it ran as an array of GraphQL errors.
      error: (e) => {
        errors.push(...(Array.isArray(e) ? e : [e]));
        for (const w of waiters.splice(0)) w();
      },
      complete: () => {
        for (const w of waiters.splice(0)) w();
      },
    },
  );
  return {
    events,
    errors,
    async until(count, timeoutMs = 5_000) {
      const deadline = Date.now() + timeoutMs;
      while (events.length < count) {
        if (errors.length > 0) throw new Error(`subscription failed: ${JSON.stringify(errors)}`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`only ${events.length} of ${count} events arrived: ${JSON.stringify(events)}`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, left);
        });
      }
      return events.slice(0, count);
    },
    async close() {
      dispose();
      await client.dispose();
    },
    closeCode: () => closeCode,
  };
}

/** Waits until `check` holds, polling. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A vmChanged event as the multi-instance tests select it. */
export interface VmEvent {
  vmChanged: {
    cursor: string;
    type: string;
    changes: string[];
    powerState: string | null;
    vm: { name: string } | null;
  };
}

export const VM_CHANGED = `subscription($f: VmChangeFilter, $after: String) {
  vmChanged(filter: $f, after: $after) { cursor type changes powerState vm { name } }
}`;

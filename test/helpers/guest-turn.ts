import { type Server, createServer } from 'node:net';

import { afterAll, beforeAll } from 'vitest';

/**
 * Test files that boot real guests take turns across the suite's processes.
 *
 * A guest under TCG keeps a core busy while it boots and runs its init, and
 * the suite runs several files side by side: two or three guest files at once
 * on a two-core machine starved each other's boots past their deadlines.
 * One guest file at a time beside any number of others did not.
 *
 * The turn is a Linux abstract-namespace socket bound under one name: the
 * kernel lets one process hold it and frees it when that process exits,
 * however it exits, so a killed test process never leaves the others waiting.
 */

/** How long a file may wait for its turn: the other guest files, one after another, run before it. */
const WAIT_MS = 15 * 60_000;
const NAME = '\0virt-graph-test-guests';
const RETRY_MS = 250;

/**
 * Holds the turn for the enclosing scope (a file, or the describe that boots
 * guests): taken before that scope's other beforeAll hooks, given back after
 * its last afterAll. Call it before the scope's own hooks.
 */
export function holdGuestTurn(): void {
  let held: Server | undefined;
  beforeAll(async () => {
    held = await waitForTurn();
  }, WAIT_MS);
  afterAll(async () => {
    await new Promise<void>((resolve) => (held ? held.close(() => resolve()) : resolve()));
  });
}

async function waitForTurn(): Promise<Server> {
  for (;;) {
    const held = await tryToHold();
    if (held) return held;
    await new Promise((r) => setTimeout(r, RETRY_MS));
  }
}

function tryToHold(): Promise<Server | null> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') resolve(null);
      else reject(err);
    });
    server.listen({ path: NAME }, () => {
      // Held until given back or the process exits, without keeping the process alive.
      server.unref();
      resolve(server);
    });
  });
}

import type { Logger } from 'pino';

import { DurableMap } from './durable-map.js';

/**
 * A durable collection of JSON values by key: reads from memory, writes on
 * disk (or in the shared store) before they resolve. Dates are stored as
 * ISO strings; owners convert.
 */
export interface Collection<T> {
  get(key: string): T | undefined;
  /** Oldest write first. */
  keys(): IterableIterator<string>;
  values(): IterableIterator<T>;
  readonly size: number;
  set(key: string, value: T): Promise<void>;
  delete(key: string): Promise<void>;
}

/** The gateway's state that must survive a restart: tasks, idempotency keys, declarations. */
export interface StateStore {
  /** Opens a named collection, loading what it holds. */
  collection<T>(name: string): Promise<Collection<T>>;
  close(): Promise<void>;
}

/**
 * The embedded store: one journal file per collection under `dir`. Lines
 * torn by a crash are skipped and reported in the log, never fatal.
 */
export function openFileStore(dir: string, logger: Logger): StateStore {
  const opened: DurableMap<unknown>[] = [];
  return {
    async collection<T>(name: string): Promise<Collection<T>> {
      if (!/^[a-z][a-z0-9-]*$/.test(name)) throw new Error(`bad collection name "${name}"`);
      const path = `${dir}/${name}.jsonl`;
      const { map, corrupt } = await DurableMap.open<T>(path);
      if (corrupt.length > 0) {
        logger.warn(
          { file: path, skipped: corrupt.length, first: corrupt.slice(0, 5) },
          'skipped unreadable lines of a state file (torn by a crash or damaged); the rest was loaded',
        );
      }
      opened.push(map as DurableMap<unknown>);
      return map;
    },
    async close() {
      await Promise.all(opened.map((m) => m.close()));
    },
  };
}

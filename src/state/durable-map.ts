import type { CorruptLine } from './json-lines-file.js';
import { JsonLinesFile } from './json-lines-file.js';

type Entry<T> = { k: string; v: T } | { k: string; deleted: true };

/**
 * A map of JSON values kept in memory and journaled to disk: every change is
 * a line appended to the journal (on disk before `set` or `delete`
 * resolves), and the journal is rewritten with just the live entries once
 * it has grown to several times their number. Opening replays it; lines
 * torn by a crash are skipped and reported, never fatal.
 */
export class DurableMap<T> {
  private appendedSinceRewrite = 0;

  private constructor(
    private readonly file: JsonLinesFile,
    private readonly entries: Map<string, T>,
  ) {}

  static async open<T>(path: string): Promise<{ map: DurableMap<T>; corrupt: CorruptLine[] }> {
    const file = new JsonLinesFile(path);
    const { values, corrupt } = await file.readTail<Entry<T>>();
    const entries = new Map<string, T>();
    for (const e of values) {
      if (typeof e !== 'object' || e === null || typeof e.k !== 'string') continue;
      if ('deleted' in e) entries.delete(e.k);
      else entries.set(e.k, e.v);
    }
    const map = new DurableMap(file, entries);
    map.appendedSinceRewrite = values.length;
    return { map, corrupt };
  }

  get(key: string): T | undefined {
    return this.entries.get(key);
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  get size(): number {
    return this.entries.size;
  }

  /** Oldest write first. */
  keys(): IterableIterator<string> {
    return this.entries.keys();
  }

  /** Oldest write first. */
  values(): IterableIterator<T> {
    return this.entries.values();
  }

  /** Visible at once; resolves once on disk. */
  set(key: string, value: T): Promise<void> {
    // Re-inserted so iteration order follows the latest write.
    this.entries.delete(key);
    this.entries.set(key, value);
    return this.journal({ k: key, v: value });
  }

  delete(key: string): Promise<void> {
    if (!this.entries.delete(key)) return Promise.resolve();
    return this.journal({ k: key, deleted: true });
  }

  private async journal(entry: Entry<T>): Promise<void> {
    await this.file.append(entry);
    this.appendedSinceRewrite += 1;
    if (this.appendedSinceRewrite > 4 * this.entries.size + 1_000) {
      this.appendedSinceRewrite = this.entries.size;
      await this.file.rewrite([...this.entries].map(([k, v]) => ({ k, v })));
    }
  }

  close(): Promise<void> {
    return this.file.close();
  }
}

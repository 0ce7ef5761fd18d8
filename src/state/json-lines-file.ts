import { type FileHandle, mkdir, open, rename, stat } from 'node:fs/promises';
import { dirname } from 'node:path';

/** A line that could not be read back: a torn append at a crash, or damage. */
export interface CorruptLine {
  /** 1-based, counted from the start of the file (or of the part read). */
  line: number;
  reason: string;
}

interface PendingWrite {
  text: string;
  resolve: () => void;
  reject: (e: Error) => void;
}

/**
 * An append-only file of JSON lines. Appends are group-committed: every
 * append made while a write is in flight joins the next one, which is one
 * `write` and one `fdatasync` for all of them, so a caller's append resolves
 * only once its line is on disk, without one synchronous write per line on
 * the event loop.
 */
export class JsonLinesFile {
  private handle: FileHandle | null = null;
  private pending: PendingWrite[] = [];
  /** Every write, rewrite and close runs after the one before: one at a time, in order. */
  private tail: Promise<void> = Promise.resolve();
  private flushScheduled = false;

  constructor(readonly path: string) {}

  /** Appends one value as a line; resolves once it is on disk. */
  append(value: unknown): Promise<void> {
    const text = `${JSON.stringify(value)}\n`;
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ text, resolve, reject });
      // Appends made while a write is in flight wait for it and go together.
      if (this.flushScheduled) return;
      this.flushScheduled = true;
      this.tail = this.tail.then(() => this.flush());
    });
  }

  private async flush(): Promise<void> {
    this.flushScheduled = false;
    const batch = this.pending;
    this.pending = [];
    try {
      let prefix = '';
      if (!this.handle) {
        const opened = await this.openForAppend();
        this.handle = opened.handle;
        // A line torn by a crash gets its own end, so the next line stays whole.
        if (opened.torn) prefix = '\n';
      }
      await this.handle.appendFile(prefix + batch.map((w) => w.text).join(''));
      await this.handle.datasync();
      for (const w of batch) w.resolve();
    } catch (e) {
      for (const w of batch) w.reject(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** Opens the file for appending, and says whether its last line lacks its newline. */
  private async openForAppend(): Promise<{ handle: FileHandle; torn: boolean }> {
    await mkdir(dirname(this.path), { recursive: true });
    const handle = await open(this.path, 'a+');
    const { size } = await handle.stat();
    if (size === 0) return { handle, torn: false };
    const last = Buffer.alloc(1);
    await handle.read(last, 0, 1, size - 1);
    return { handle, torn: last[0] !== 0x0a };
  }

  /** Runs after every write queued before it; its failure is the caller's alone. */
  private serialized(op: () => Promise<void>): Promise<void> {
    const run = this.tail.then(op);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /**
   * Replaces the whole file with these values, atomically (a new file,
   * synced, renamed over the old one), after the writes queued before it;
   * appends made after the call go to the new file.
   */
  rewrite(values: readonly unknown[]): Promise<void> {
    return this.serialized(async () => {
      await this.handle?.close();
      this.handle = null;
      await mkdir(dirname(this.path), { recursive: true });
      const temp = `${this.path}.${process.pid}.tmp`;
      const out = await open(temp, 'w');
      try {
        for (let i = 0; i < values.length; i += 10_000) {
          await out.appendFile(
            values
              .slice(i, i + 10_000)
              .map((v) => `${JSON.stringify(v)}\n`)
              .join(''),
          );
        }
        await out.datasync();
      } finally {
        await out.close();
      }
      await rename(temp, this.path);
    });
  }

  /** Resolves once the writes queued so far are done. */
  drain(): Promise<void> {
    return this.tail;
  }

  close(): Promise<void> {
    return this.serialized(async () => {
      await this.handle?.close();
      this.handle = null;
    });
  }

  /**
   * Reads the newest `max` lines (all when `max` is Infinity), reading the
   * file backwards so a long history costs only what is kept. Lines that
   * are not JSON are skipped and reported.
   */
  async readTail<T>(max = Infinity): Promise<{ values: T[]; corrupt: CorruptLine[] }> {
    let size: number;
    try {
      size = (await stat(this.path)).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { values: [], corrupt: [] };
      throw e;
    }
    const file = await open(this.path, 'r');
    const lines: string[] = [];
    try {
      const CHUNK = 1 << 20;
      let position = size;
      let rest = Buffer.alloc(0);
      while (position > 0 && lines.length < max) {
        const length = Math.min(CHUNK, position);
        position -= length;
        const buf = Buffer.alloc(length);
        await file.read(buf, 0, length, position);
        let data = Buffer.concat([buf, rest]);
        // Everything after the first newline is whole lines; the part
        // before it may continue in the previous chunk.
        let end = data.length;
        for (let i = data.length - 1; i >= 0 && lines.length < max; i--) {
          if (data[i] !== 0x0a) continue;
          const line = data.subarray(i + 1, end).toString('utf8');
          if (line.trim() !== '') lines.push(line);
          end = i;
        }
        data = data.subarray(0, end);
        rest = data;
      }
      if (position === 0 && lines.length < max && rest.length > 0) {
        const line = rest.toString('utf8');
        if (line.trim() !== '') lines.push(line);
      }
    } finally {
      await file.close();
    }
    lines.reverse();
    const values: T[] = [];
    const corrupt: CorruptLine[] = [];
    lines.forEach((line, i) => {
      try {
        values.push(JSON.parse(line) as T);
      } catch (e) {
        corrupt.push({ line: i + 1, reason: (e as Error).message });
      }
    });
    return { values, corrupt };
  }
}

import type { NativeConnection, OpenOptions } from './addon.js';
import { nativeAddon } from './addon.js';

type Method = Exclude<keyof NativeConnection, 'isOpen' | 'libvirtCalls'>;

/**
 * One libvirt connection, as the provider uses it. Counts every call that
 * crosses into the addon, per method, so tests and benchmarks can prove that
 * batching holds; the addon counts the libvirt API calls behind them.
 */
export class LibvirtClient {
  private readonly counts = new Map<Method, number>();

  private constructor(private readonly conn: NativeConnection) {}

  static async open(uri: string, options: OpenOptions = {}): Promise<LibvirtClient> {
    return new LibvirtClient(await nativeAddon().open(uri, options));
  }

  /** Calls a native method, counting it. */
  call<M extends Method>(method: M, ...args: Parameters<NativeConnection[M]>): ReturnType<NativeConnection[M]> {
    this.counts.set(method, (this.counts.get(method) ?? 0) + 1);
    const fn = this.conn[method] as (...a: Parameters<NativeConnection[M]>) => ReturnType<NativeConnection[M]>;
    return fn.apply(this.conn, args);
  }

  /** Calls into the addon so far, in total and per method. */
  addonCalls(): { total: number; byMethod: Record<string, number> } {
    const byMethod = Object.fromEntries(this.counts);
    return { total: [...this.counts.values()].reduce((a, b) => a + b, 0), byMethod };
  }

  /** libvirt API calls made through this connection so far (counted in the addon). */
  libvirtCalls(): number {
    return this.conn.libvirtCalls();
  }

  isOpen(): boolean {
    return this.conn.isOpen();
  }

  async close(): Promise<void> {
    await this.conn.close();
  }
}

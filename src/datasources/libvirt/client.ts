import {
  type UpstreamLabel,
  instrumentUpstream,
  upstreamLabel,
  upstreamSessionClosed,
  upstreamSessionOpened,
} from '../../observability/upstream.js';
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
  private closed = false;

  private constructor(
    private readonly conn: NativeConnection,
    /** Whose calls these are, in the gateway's metrics and traces. */
    private readonly upstream: UpstreamLabel,
  ) {
    upstreamSessionOpened(upstream);
  }

  static async open(uri: string, options: OpenOptions = {}): Promise<LibvirtClient> {
    // Taken before the await: the platform connecting is known only until then.
    const upstream = upstreamLabel('libvirt', uri);
    return new LibvirtClient(await nativeAddon().open(uri, options), upstream);
  }

  /** Calls a native method, counting it. */
  call<M extends Method>(method: M, ...args: Parameters<NativeConnection[M]>): ReturnType<NativeConnection[M]> {
    this.counts.set(method, (this.counts.get(method) ?? 0) + 1);
    const fn = this.conn[method] as (...a: Parameters<NativeConnection[M]>) => ReturnType<NativeConnection[M]>;
    // Every method but isOpen and libvirtCalls (not a Method) returns a promise.
    return instrumentUpstream(this.upstream, method, () => fn.apply(this.conn, args) as Promise<unknown>) as ReturnType<
      NativeConnection[M]
    >;
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
    if (!this.closed) upstreamSessionClosed(this.upstream);
    this.closed = true;
    await this.conn.close();
  }
}

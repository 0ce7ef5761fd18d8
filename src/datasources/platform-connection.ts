import type { Logger } from 'pino';

import { PlatformUnavailableError, errorMessage } from '../model/errors.js';
import type { PlatformState } from '../model/platform.js';
import { connectingPlatform } from '../observability/upstream.js';

export interface ConnectOutcome<C> {
  client: C;
  hypervisorType: string | null;
  hypervisorVersion: string | null;
}

export interface PlatformConnectionOptions<C> {
  platformId: string;
  logger: Logger;
  /** Opens a client; throws on failure. */
  connect: () => Promise<ConnectOutcome<C>>;
  disconnect: (client: C) => Promise<void>;
  /** Whether an error means the credentials were refused (not retried). */
  isAuthFailure: (e: unknown) => boolean;
  /**
   * Whether an error means the connection is gone (reconnect), rather than
   * one object failing; may ask the client itself.
   */
  isConnectionFailure: (e: unknown, client: C) => boolean | Promise<boolean>;
  /** First retry delay. @default 1_000 // 1 second */
  retryInitialMs?: number;
  /** Longest retry delay. @default 30_000 // 30 seconds */
  retryMaxMs?: number;
}

/**
 * The connection life cycle every platform shares: connect in the background,
 * expose the state, reconnect with exponential backoff after a connection
 * failure, never retry refused credentials in a loop.
 */
export class PlatformConnection<C> {
  private client: C | null = null;
  private current: PlatformState = {
    status: 'CONNECTING',
    statusMessage: null,
    connectedAt: null,
    hypervisorType: null,
    hypervisorVersion: null,
  };
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly statusListeners: ((state: PlatformState) => void)[] = [];
  private retryDelayMs: number;
  private connecting: Promise<void> | null = null;
  private stopped = false;

  constructor(private readonly opts: PlatformConnectionOptions<C>) {
    this.retryDelayMs = opts.retryInitialMs ?? 1_000;
  }

  state(): PlatformState {
    return { ...this.current };
  }

  /** Calls `listener` whenever the status changes (connected, lost, refused). */
  onStatusChange(listener: (state: PlatformState) => void): void {
    this.statusListeners.push(listener);
  }

  private setState(next: PlatformState): void {
    const changed = next.status !== this.current.status || next.statusMessage !== this.current.statusMessage;
    this.current = next;
    if (changed) for (const listener of this.statusListeners) listener({ ...next });
  }

  /** Resolves after the first attempt, whatever its outcome. */
  start(): Promise<void> {
    this.stopped = false;
    return this.attempt();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    await this.connecting;
    const client = this.client;
    this.client = null;
    if (client) await this.opts.disconnect(client).catch(() => undefined);
  }

  /** Runs fn with the live client; marks the platform unreachable when the connection fails under it. */
  async use<T>(fn: (client: C) => Promise<T>): Promise<T> {
    const client = this.client;
    if (!client) {
      throw new PlatformUnavailableError(
        this.opts.platformId,
        this.current.statusMessage ?? this.current.status.toLowerCase(),
      );
    }
    try {
      return await fn(client);
    } catch (e) {
      if (await this.opts.isConnectionFailure(e, client)) {
        // Calls in flight when the connection died fail alike; the first one reconnects.
        if (this.client === client) this.lose(client, e);
        throw new PlatformUnavailableError(this.opts.platformId, errorMessage(e));
      }
      throw e;
    }
  }

  private attempt(): Promise<void> {
    if (this.connecting) return this.connecting;
    this.connecting = (async () => {
      try {
        // The clients connect opens learn which platform their calls and sessions count for.
        const outcome = await connectingPlatform(this.opts.platformId, () => this.opts.connect());
        if (this.stopped) {
          await this.opts.disconnect(outcome.client).catch(() => undefined);
          return;
        }
        this.client = outcome.client;
        this.retryDelayMs = this.opts.retryInitialMs ?? 1_000;
        this.setState({
          status: 'CONNECTED',
          statusMessage: null,
          connectedAt: new Date(),
          hypervisorType: outcome.hypervisorType,
          hypervisorVersion: outcome.hypervisorVersion,
        });
        this.opts.logger.info('platform connected');
      } catch (e) {
        const auth = this.opts.isAuthFailure(e);
        this.setState({
          ...this.current,
          status: auth ? 'AUTH_FAILED' : 'UNREACHABLE',
          statusMessage: errorMessage(e),
          connectedAt: null,
        });
        this.opts.logger.warn(
          { status: this.current.status, reason: this.current.statusMessage },
          'platform connection failed',
        );
        if (!auth) this.scheduleRetry();
      } finally {
        this.connecting = null;
      }
    })();
    return this.connecting;
  }

  private lose(client: C, e: unknown): void {
    this.client = null;
    this.setState({ ...this.current, status: 'UNREACHABLE', statusMessage: errorMessage(e), connectedAt: null });
    this.opts.logger.warn({ reason: this.current.statusMessage }, 'platform connection lost');
    void this.opts.disconnect(client).catch(() => undefined);
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.stopped || this.retryTimer) return;
    const delay = this.retryDelayMs;
    this.retryDelayMs = Math.min(delay * 2, this.opts.retryMaxMs ?? 30_000);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.attempt();
    }, delay);
    this.retryTimer.unref();
  }
}

/**
 * What every provider shares: a platform ID, an endpoint, and a connection
 * whose life cycle (start, stop, state) it exposes as the Provider interface
 * asks. Subclasses read through `connection.use`.
 */
export abstract class ConnectedProvider<C> {
  protected abstract readonly connection: PlatformConnection<C>;

  start(): Promise<void> {
    return this.connection.start();
  }

  stop(): Promise<void> {
    return this.connection.stop();
  }

  state(): PlatformState {
    return this.connection.state();
  }

  onStatusChange(listener: (state: PlatformState) => void): void {
    this.connection.onStatusChange(listener);
  }

  /** The live client (a libvirt connection, a vSphere session), for tests that count calls. */
  withClient<T>(fn: (client: C) => Promise<T>): Promise<T> {
    return this.connection.use(fn);
  }
}

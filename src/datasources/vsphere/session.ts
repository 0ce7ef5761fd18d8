import type { Logger } from 'pino';

import { isVimFault } from './errors.js';
import { SoapClient, type SoapClientOptions } from './soap-client.js';
import { TaskWatcher } from './task-watcher.js';
import {
  type PropertySpec,
  type ServiceContent,
  acquireCloneTicket,
  cloneSession,
  containerFilterSpec,
  continueRetrievePropertiesEx,
  createContainerView,
  currentTime,
  login,
  logout,
  objectsFilterSpec,
  retrievePropertiesEx,
  retrieveServiceContent,
  type ObjectContent,
} from './vim.js';
import type { MoRef } from './xml.js';

export interface SessionOptions extends SoapClientOptions {
  username: string;
  password: string;
  /** Objects per RetrievePropertiesEx page. @default 1_000 */
  pageSize?: number;
  /** Interval of the keep-alive call; vCenter drops sessions idle for 30 minutes. @default 600_000 // 10 minutes */
  keepAliveMs?: number;
  logger: Logger;
}

/**
 * One logged-in vSphere session, shared by every request to a platform
 * (vCenter limits sessions per user). A request that meets NotAuthenticated
 * (the session expired or was terminated) logs in again once, shared with
 * the requests that met it at the same time, and is retried once.
 */
export class VsphereSession {
  private relogin: Promise<void> | null = null;
  private readonly views = new Map<string, Promise<MoRef>>();
  private keepAlive: NodeJS.Timeout | null = null;
  /** The server's session key, for tests that terminate it from outside. */
  sessionKey = '';
  /** Follows the upstream tasks this session starts. */
  readonly tasks = new TaskWatcher(this);

  private constructor(
    readonly client: SoapClient,
    readonly content: ServiceContent,
    private readonly opts: SessionOptions,
  ) {}

  static async open(opts: SessionOptions): Promise<VsphereSession> {
    const client = new SoapClient(opts);
    try {
      const content = await retrieveServiceContent(client);
      client.setApiVersion(content.about.apiVersion);
      const session = new VsphereSession(client, content, opts);
      await session.login();
      session.startKeepAlive();
      return session;
    } catch (e) {
      await client.close();
      throw e;
    }
  }

  private async login(): Promise<void> {
    this.client.clearSession();
    this.views.clear();
    const { key } = await login(this.client, this.content, this.opts.username, this.opts.password);
    this.sessionKey = key;
  }

  private startKeepAlive(): void {
    const every = this.opts.keepAliveMs ?? 600_000;
    this.keepAlive = setInterval(() => {
      this.call(() => currentTime(this.client)).catch((e: unknown) =>
        this.opts.logger.warn({ err: e }, 'vSphere keep-alive failed'),
      );
    }, every);
    this.keepAlive.unref();
  }

  /** Runs fn; on NotAuthenticated, logs in again (once for all callers) and runs it once more. */
  async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (!isVimFault(e, 'NotAuthenticated')) throw e;
      this.relogin ??= this.login().finally(() => {
        this.relogin = null;
      });
      await this.relogin;
      this.opts.logger.info('vSphere session renewed');
      return fn();
    }
  }

  /**
   * Properties of every object of the given types under the root folder.
   * The container view is created once per session and kept: it follows
   * the inventory as it changes. Pages through the result.
   */
  retrieveAll(specs: readonly PropertySpec[]): Promise<ObjectContent[]> {
    const types = [...new Set(specs.map((s) => s.type))].sort();
    return this.call(async () => {
      const key = types.join(',');
      let view = this.views.get(key);
      if (!view) {
        view = createContainerView(this.client, this.content, this.content.rootFolder, types, true);
        this.views.set(key, view);
        view.catch(() => this.views.delete(key));
      }
      return this.pages(containerFilterSpec(await view, specs));
    });
  }

  /** Time one request of this session may take to be answered, in ms. */
  get requestTimeoutMs(): number {
    return this.opts.requestTimeoutMs ?? 60_000;
  }

  /** Objects per page of a property collector's answer. */
  get pageSize(): number {
    return this.opts.pageSize ?? 1_000;
  }

  /**
   * A second session of the same login on connections of its own, for work
   * that must neither wait behind this session's requests nor hold one of
   * their slots (the inventory watch's long poll); `overrides` replace this
   * session's transport settings. It is cloned from this one (a clone ticket,
   * no password sent again), so it opens only while this one works. The
   * caller closes it.
   */
  async openSibling(
    overrides: Pick<SessionOptions, 'requestTimeoutMs' | 'maxConcurrentRequests'>,
  ): Promise<VsphereSession> {
    const ticket = await this.call(() => acquireCloneTicket(this.client, this.content));
    const opts = { ...this.opts, ...overrides };
    const client = new SoapClient(opts);
    try {
      client.setApiVersion(this.content.about.apiVersion);
      const sibling = new VsphereSession(client, this.content, opts);
      sibling.sessionKey = (await cloneSession(client, this.content, ticket)).key;
      sibling.startKeepAlive();
      return sibling;
    } catch (e) {
      await client.close();
      throw e;
    }
  }

  /** Properties of chosen objects, all in one request (then pages). */
  retrieveObjects(objects: readonly MoRef[], specs: readonly PropertySpec[]): Promise<ObjectContent[]> {
    if (objects.length === 0) return Promise.resolve([]);
    return this.call(() => this.pages(objectsFilterSpec(objects, specs)));
  }

  private async pages(filterSpec: string): Promise<ObjectContent[]> {
    const first = await retrievePropertiesEx(this.client, this.content, filterSpec, this.opts.pageSize ?? 1_000);
    const objects = [...first.objects];
    let token = first.token;
    while (token) {
      const next = await continueRetrievePropertiesEx(this.client, this.content, token);
      objects.push(...next.objects);
      token = next.token;
    }
    return objects;
  }

  async close(): Promise<void> {
    if (this.keepAlive) clearInterval(this.keepAlive);
    this.tasks.stop();
    await logout(this.client, this.content).catch(() => undefined);
    await this.client.close();
  }
}

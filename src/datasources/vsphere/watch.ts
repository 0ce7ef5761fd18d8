import type { Logger } from 'pino';

import { errorMessage } from '../../model/errors.js';
import type { FullReadReason, InventoryWatch, WatchOptions, WatchSink } from '../watch.js';
import { VimFault, isVimFault } from './errors.js';
import {
  type UpdateSet,
  cancelWaitForUpdates,
  createFilter,
  createPropertyCollector,
  destroyPropertyCollector,
  destroyPropertyFilter,
  waitForUpdatesEx,
} from './property-collector.js';
import type { VsphereSession } from './session.js';
import {
  type ObjectContent,
  containerFilterSpec,
  continueRetrievePropertiesEx,
  createContainerView,
  destroyView,
  objectsFilterSpec,
  retrievePropertiesEx,
} from './vim.js';
import { recentTasksObjectSet } from './upstream-tasks.js';
import { FILTER_SPECS, WATCH_TYPES, type WatchDelta, WatchedInventory } from './watch-inventory.js';
import type { MoRef } from './xml.js';

// vSphere's change stream, as govmomi's property.Wait and pyVmomi's
// WaitForUpdatesEx loops follow it: one container view over the root folder,
// one filter on a property collector of our own asking for exactly the
// properties the provider's reads ask for, then WaitForUpdatesEx in a loop.
// The first answer holds every object (the full read); later ones hold what
// changed, applied to the watch's copy of the properties and mapped again.

export interface VsphereWatchDeps {
  platformId: string;
  logger: Logger;
  /**
   * Runs fn with the platform's live session (throws while the platform is
   * not connected): the watch opens its own session beside it from there.
   */
  useSession: <T>(fn: (session: VsphereSession) => Promise<T>) => Promise<T>;
  /**
   * How long one WaitForUpdatesEx may wait for a change, in seconds. By
   * default the platform's request timeout (in seconds, 1 to 30): the server
   * answers at least that often, so a server that stopped answering is
   * noticed within twice the request timeout, as for any other request.
   */
  maxWaitSeconds?: number;
  /** How long stop() waits for the upstream clean-up before it resolves anyway. @default 2_000 */
  stopGraceMs?: number;
}

/** A running vSphere watch. */
export interface VsphereInventoryWatch extends InventoryWatch {
  /** SOAP calls of the watch's own sessions so far, per method: for tests and metrics. */
  callCounts(): Record<string, number>;
}

/** The watch's own session and what it created in it. */
interface Upstream {
  session: VsphereSession;
  maxWaitSeconds: number;
  collector: MoRef | null;
  view: MoRef | null;
  filter: MoRef | null;
}

const wait = (ms: number) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    t.unref();
  });

/** Requests the watch's session runs at once: the long poll and a CancelWaitForUpdates beside it. */
const WATCH_CONNECTIONS = 2;

export function watchVsphere(sink: WatchSink, options: WatchOptions, deps: VsphereWatchDeps): VsphereInventoryWatch {
  return new VsphereWatch(sink, options, deps);
}

class VsphereWatch implements VsphereInventoryWatch {
  private stopped = false;
  private current: Upstream | null = null;
  /** Sessions being closed (after a failure, in the background). */
  private readonly closing = new Set<Promise<void>>();
  /** Sessions whose calls still count: the current one and those being closed. */
  private readonly live = new Set<VsphereSession>();
  private readonly pastCounts = new Map<string, number>();
  /** A WaitForUpdatesEx that waits for changes is in flight. */
  private polling = false;
  private wake: (() => void) | null = null;
  private readonly running: Promise<void>;

  constructor(
    private readonly sink: WatchSink,
    private readonly options: WatchOptions,
    private readonly deps: VsphereWatchDeps,
  ) {
    this.running = this.loop();
  }

  async stop(): Promise<void> {
    if (!this.stopped) {
      this.stopped = true;
      this.wake?.();
      void this.cancelPoll();
    }
    await Promise.race([
      Promise.all([this.running, ...this.closing]).then(() => undefined),
      wait(this.deps.stopGraceMs ?? 2_000),
    ]);
  }

  callCounts(): Record<string, number> {
    const counts = new Map(this.pastCounts);
    for (const s of this.live) addCounts(counts, s);
    return Object.fromEntries(counts);
  }

  // --- the loop -----------------------------------------------------------

  private async loop(): Promise<void> {
    let reason: FullReadReason = 'initial';
    let delay = this.options.retryInitialMs;
    while (!this.stopped) {
      try {
        this.current = await this.open();
        await this.follow(this.current, reason, () => {
          delay = this.options.retryInitialMs;
        });
      } catch (e) {
        if (this.stopped) break;
        this.deps.logger.warn({ err: e, retryInMs: delay }, 'vSphere inventory watch interrupted');
        this.emit((s) => s.interrupted(reasonOf(e)));
        reason = 'reconnect';
        // The session is likely dead: close it without waiting (a hung server holds Logout until its timeout).
        if (this.current) void this.dispose(this.current, false);
        this.current = null;
        await this.sleep(delay);
        delay = Math.min(delay * 2, this.options.retryMaxMs);
      }
    }
    if (this.current) await this.dispose(this.current, true);
    this.current = null;
  }

  /** Opens the watch's own session beside the platform's, with a timeout that covers a long poll. */
  private open(): Promise<Upstream> {
    return this.deps.useSession(async (main) => {
      const maxWaitSeconds =
        this.deps.maxWaitSeconds ?? Math.max(1, Math.min(30, Math.floor(main.requestTimeoutMs / 1_000)));
      const session = await main.openSibling({
        requestTimeoutMs: main.requestTimeoutMs + maxWaitSeconds * 1_000,
        maxConcurrentRequests: WATCH_CONNECTIONS,
      });
      this.live.add(session);
      return { session, maxWaitSeconds, collector: null, view: null, filter: null };
    });
  }

  /**
   * Creates the collector and the view, then repeats: a filter, its full
   * read (replace), its changes (apply) until the resync is due. Returns
   * only when stopped; throws when the stream fails.
   */
  private async follow(up: Upstream, reason: FullReadReason, synced: () => void): Promise<void> {
    const { client, content } = up.session;
    if (this.stopped) return;
    up.collector = await createPropertyCollector(client, content);
    up.view = await createContainerView(client, content, content.rootFolder, WATCH_TYPES, true);
    while (!this.stopped) {
      const tasks = content.taskManager ? recentTasksObjectSet(content.taskManager) : '';
      up.filter = await createFilter(
        client,
        up.collector,
        containerFilterSpec(up.view, FILTER_SPECS, 'spec', tasks),
        false,
      );
      const inventory = new WatchedInventory(this.deps.platformId);

      let version = await this.fullRead(up, inventory);
      if (this.stopped) return;
      this.emit((s) => s.replace(inventory.state(), reason));
      synced();
      reason = 'resync';

      // Changes, until the next resync is due.
      const resyncAt = Date.now() + this.options.resyncIntervalMs;
      for (;;) {
        const left = resyncAt - Date.now();
        if (left <= 0) break;
        const set = await this.poll(up, version, Math.min(up.maxWaitSeconds, Math.max(1, Math.ceil(left / 1_000))));
        if (this.stopped) return;
        if (!set) continue;
        version = set.version;
        const delta = inventory.apply(set, up.filter);
        await this.settle(up, inventory, delta);
        if (this.stopped) return;
        const changes = inventory.changes(delta);
        if (changes.length > 0) this.emit((s) => s.apply(changes));
      }

      // The resync: a fresh filter, whose first answer is everything again.
      const old = up.filter;
      up.filter = null;
      await destroyPropertyFilter(client, old);
    }
  }

  /**
   * The full read: everything a new filter sees, as "enter" updates; the
   * version to follow from. A method of its own so that its answers (the
   * whole estate, parsed) are garbage once applied, not held by the
   * following loop's frame.
   */
  private async fullRead(up: Upstream, inventory: WatchedInventory): Promise<string> {
    let version = '';
    for (;;) {
      const set = await this.poll(up, version, 0);
      if (this.stopped || !set || !up.filter) return version;
      version = set.version;
      await this.settle(up, inventory, inventory.apply(set, up.filter));
      if (!set.truncated) return version;
    }
  }

  /** One WaitForUpdatesEx; `maxWaitSeconds` 0 for the full read (which the server answers at once). */
  private async poll(up: Upstream, version: string, maxWaitSeconds: number): Promise<UpdateSet | null> {
    if (this.stopped || !up.collector) return null;
    this.polling = maxWaitSeconds > 0;
    try {
      return await waitForUpdatesEx(up.session.client, up.collector, version, {
        maxWaitSeconds,
        maxObjectUpdates: up.session.pageSize,
      });
    } finally {
      this.polling = false;
    }
  }

  /** Reads again the objects whose changes could not be applied (rare: vCenter sends whole values). */
  private async settle(up: Upstream, inventory: WatchedInventory, delta: WatchDelta): Promise<void> {
    if (delta.refetch.size === 0) return;
    this.deps.logger.debug({ objects: delta.refetch.size }, 'vSphere watch reads objects again');
    const refs = [...delta.refetch.values()];
    let contents: ObjectContent[];
    try {
      contents = await readObjects(up.session, refs);
    } catch (e) {
      // One of them is gone, which fails the whole read: one at a time, the gone ones left out.
      if (!isVimFault(e, 'ManagedObjectNotFound')) throw e;
      contents = [];
      for (const ref of refs) {
        try {
          contents.push(...(await readObjects(up.session, [ref])));
        } catch (err) {
          if (!isVimFault(err, 'ManagedObjectNotFound')) throw err;
        }
      }
    }
    inventory.reload(delta, contents);
  }

  // --- stop and clean-up --------------------------------------------------

  /** Ends a pending long poll (CancelWaitForUpdates may overtake the poll it cancels: sent again until it ends). */
  private async cancelPoll(): Promise<void> {
    const up = this.current;
    for (let i = 0; i < 8 && this.polling && up?.collector && up === this.current; i++) {
      await cancelWaitForUpdates(up.session.client, up.collector).catch(() => undefined);
      await wait(250);
    }
  }

  /**
   * Destroys the filter, collector and view when `tidy` (a session that
   * works), then logs the session out and closes its connections.
   */
  private dispose(up: Upstream, tidy: boolean): Promise<void> {
    const { client } = up.session;
    const done = (async () => {
      if (tidy) {
        // Destroying the collector destroys its filters.
        if (up.collector) await destroyPropertyCollector(client, up.collector).catch(() => undefined);
        else if (up.filter) await destroyPropertyFilter(client, up.filter).catch(() => undefined);
        if (up.view) await destroyView(client, up.view).catch(() => undefined);
      }
      await up.session.close().catch(() => undefined);
    })().finally(() => {
      addCounts(this.pastCounts, up.session);
      this.live.delete(up.session);
      this.closing.delete(done);
    });
    this.closing.add(done);
    return done;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    }).finally(() => {
      this.wake = null;
    });
  }

  /** Calls the sink unless stopped: nothing reaches it once stop() was called. */
  private emit(call: (sink: WatchSink) => void): void {
    if (this.stopped) return;
    try {
      call(this.sink);
    } catch (e) {
      this.deps.logger.error({ err: e }, 'inventory sink failed');
    }
  }
}

/** Why the stream stopped, in words: a fault's type when its message says nothing more. */
function reasonOf(e: unknown): string {
  if (e instanceof VimFault && !e.message.includes(e.faultType)) {
    return e.message && e.message !== 'vSphere fault' ? `${e.faultType}: ${e.message}` : e.faultType;
  }
  return errorMessage(e);
}

/**
 * The watched properties of some objects, read in the watch's session (not
 * through VsphereSession.call: a session that lost its login is replaced
 * whole, with its collector, never logged in again under it).
 */
async function readObjects(s: VsphereSession, refs: readonly MoRef[]): Promise<ObjectContent[]> {
  const first = await retrievePropertiesEx(s.client, s.content, objectsFilterSpec(refs, FILTER_SPECS), s.pageSize);
  const out = [...first.objects];
  for (let token = first.token; token;) {
    const next = await continueRetrievePropertiesEx(s.client, s.content, token);
    out.push(...next.objects);
    token = next.token;
  }
  return out;
}

function addCounts(into: Map<string, number>, session: VsphereSession): void {
  for (const [method, n] of Object.entries(session.client.callCounts().byMethod)) {
    into.set(method, (into.get(method) ?? 0) + n);
  }
}

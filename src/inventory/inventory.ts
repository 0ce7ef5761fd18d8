import type { Logger } from 'pino';

import { readStorage } from '../datasources/full-read.js';
import { createRequestScope } from '../datasources/request-scope.js';
import type { Provider } from '../datasources/provider.js';
import type { PlatformRegistry } from '../datasources/registry.js';
import type { InventoryChange, InventoryWatch, WatchOptions } from '../datasources/watch.js';
import type { EventPublisher } from '../model/events.js';
import { errorMessage } from '../model/errors.js';
import type { PlatformRecord, PlatformState } from '../model/platform.js';
import { PlatformMirror } from './platform-mirror.js';
import type { LeaseView, Replication } from './replication/replication.js';

/**
 * The live inventory: one mirror per platform, each fed by its platform's
 * watch. Reads go to a mirror while it is SYNCED; everything it sees change
 * is published as an event. With a Replication (several instances sharing
 * Redis), only the instance holding a platform's lease watches it; the
 * others keep their mirror from its stream.
 */
export class Inventory {
  private readonly mirrors = new Map<string, PlatformMirror>();
  private readonly watches: InventoryWatch[] = [];

  constructor(
    private readonly registry: PlatformRegistry,
    private readonly events: EventPublisher,
    private readonly options: WatchOptions & { enabled: boolean },
    private readonly logger: Logger,
    private readonly replication: Replication | null = null,
  ) {
    for (const p of registry.providers) {
      const mirror = new PlatformMirror(p.id, events, logger.child({ platform: p.id, room: 'inventory' }));
      // A platform's status event carries both its connection and its mirror, whichever changed.
      const publish = () => {
        const shown = this.platformState(p.id, p.state());
        events.publish({
          type: 'PLATFORM_STATUS',
          platformId: p.id,
          status: shown.status,
          inventory: mirror.state.state,
          message: mirror.state.reason ?? shown.statusMessage,
        });
      };
      mirror.onStatus(publish);
      p.onStatusChange(publish);
      this.mirrors.set(p.id, mirror);
    }
  }

  /** Starts every platform's watch; the mirrors fill in the background. */
  start(): void {
    if (!this.options.enabled) return;
    for (const p of this.registry.providers) {
      const mirror = this.mirrors.get(p.id) as PlatformMirror;
      if (this.replication)
        this.replication.run(
          p.id,
          mirror,
          () => p.watch(mirror, this.options),
          (observed) => this.refresh(p.id, objectsOf(observed)),
        );
      else this.watches.push(p.watch(mirror, this.options));
    }
  }

  async stop(): Promise<void> {
    await Promise.all([...this.watches.splice(0).map((w) => w.stop()), this.replication?.stop()]);
  }

  get enabled(): boolean {
    return this.options.enabled;
  }

  /** Who watches a platform among instances sharing a Redis; undefined for a gateway that runs alone. */
  lease(platformId: string): LeaseView | undefined {
    return this.replication?.lease(platformId);
  }

  /**
   * A platform as the graph and /readyz show it: the worse of its
   * connection's state and its change stream's. The connection learns of a
   * dead or stalled platform only when a call through it fails, and while
   * the mirror answers reads none is made; the watch's long poll is the one
   * request always in flight, so its failure (a reset, or no answer within
   * its timeout: vSphere's maxWaitSeconds plus the request timeout) is the
   * first sign. A stream that is down means the gateway no longer sees the
   * platform: it is not shown CONNECTED, whatever the connection last knew.
   * On an instance that follows another's stream, the holder's view counts.
   */
  platformState<S extends PlatformState>(platformId: string, connection: S): S {
    const stream = this.mirrors.get(platformId)?.state;
    if (connection.status !== 'CONNECTED' || stream?.state !== 'STALE') return connection;
    const since = stream.staleSince ? ` since ${stream.staleSince.toISOString()}` : '';
    return {
      ...connection,
      status: 'UNREACHABLE',
      statusMessage: `change stream down${since}: ${stream.reason ?? 'no reason given'}`,
      connectedAt: null,
    };
  }

  /** Every configured platform as platformState() shows it, in configuration order. */
  platformStates(): PlatformRecord[] {
    return this.registry.records().map((r) => this.platformState(r.id, r));
  }

  mirror(platformId: string): PlatformMirror | undefined {
    return this.mirrors.get(platformId);
  }

  /** The mirror of a platform when it may answer reads (SYNCED); undefined otherwise. */
  serving(platformId: string): PlatformMirror | undefined {
    const m = this.mirrors.get(platformId);
    return m?.serving ? m : undefined;
  }

  /**
   * Reads the given VMs (and, when asked, the storage and its volumes) from
   * their platform and applies them to its mirror, so a query made after a
   * mutation's task finished sees its effect (read your writes), whatever
   * the change stream's latency, and for storage volumes, which no
   * platform reports changes of.
   *
   * The watch may apply a record of the same object while this read is in
   * flight, read after this one began: this read's record is then not
   * applied over it, and that object is read again, up to READ_BACK_ROUNDS
   * times (past that, the watch is busy with the object and keeps it current).
   */
  async refresh(platformId: string, what: { vms: readonly string[]; storage: boolean }): Promise<void> {
    const mirror = this.mirrors.get(platformId);
    const provider = this.registry.get(platformId);
    if (!mirror || !provider) return;
    let pending = what;
    try {
      for (let round = 1; pending.vms.length > 0 || pending.storage; round += 1) {
        const witness = mirror.beginRead();
        let read: InventoryChange[];
        try {
          read = await readBack(provider, pending);
        } finally {
          witness.end();
        }
        const fresh: InventoryChange[] = [];
        const superseded: InventoryChange[] = [];
        for (const c of read) (witness.arrivedSince(c.kind, c.nativeId) ? superseded : fresh).push(c);
        if (!this.replication?.observed(platformId, fresh)) mirror.apply(fresh);
        pending = objectsOf(superseded);
        if (superseded.length > 0 && round === READ_BACK_ROUNDS) {
          this.logger.debug(
            { platform: platformId, objects: superseded.map((c) => `${c.kind} ${c.nativeId}`) },
            'the change stream kept changing these objects during every read-back: its records stand',
          );
          break;
        }
      }
    } catch (e) {
      // The change stream or the next resync brings the mirror up to date.
      this.logger.warn(
        { platform: platformId, err: errorMessage(e) },
        'could not refresh the inventory after an operation',
      );
    }
  }
}

const READ_BACK_ROUNDS = 3;

/** The given VMs (and the storage with its volumes, when asked) as the platform has them now. */
async function readBack(
  provider: Provider,
  what: { vms: readonly string[]; storage: boolean },
): Promise<InventoryChange[]> {
  const [states, storage] = await Promise.all([
    what.vms.length > 0 ? provider.readVmStates(what.vms, createRequestScope()) : null,
    what.storage ? readStorage(provider) : null,
  ]);
  const changes: InventoryChange[] = [];
  for (const [nativeId, record] of states ?? []) {
    // A VM that could not be read is left as the mirror holds it: the change stream or the resync tells.
    if (!(record instanceof Error)) changes.push({ kind: 'VirtualMachine', nativeId, record });
  }
  if (storage) {
    for (const s of storage.storage) changes.push({ kind: 'Storage', nativeId: s.nativeId, record: s });
    for (const [pool, volumes] of storage.volumes)
      changes.push({ kind: 'StorageVolumes', nativeId: pool, record: volumes });
  }
  return changes;
}

/** What `refresh` reads again to learn what a change names: its VMs, and the storage when it names any. */
function objectsOf(changes: readonly InventoryChange[]): { vms: string[]; storage: boolean } {
  return {
    vms: changes.filter((c) => c.kind === 'VirtualMachine').map((c) => c.nativeId),
    storage: changes.some((c) => c.kind === 'Storage' || c.kind === 'StorageVolumes'),
  };
}

import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

import type { Logger } from 'pino';

import type { RedisConfig } from '../../config/schema.js';
import type { InventoryChange, InventoryWatch } from '../../datasources/watch.js';
import type { EventPublisher, GatewayEvent } from '../../model/events.js';
import type { RedisClient } from '../../state/redis.js';
import type { PlatformMirror } from '../platform-mirror.js';
import { type EntryListener, PlatformReplica, type ReplicaRole } from './platform-replica.js';
import { PlatformStream, type ReadEntry } from './platform-stream.js';

/** Who watches a platform, as one instance sees it. */
export interface LeaseView {
  platformId: string;
  role: ReplicaRole;
  /** The lease's holder, `<instance>#<fence>`, or null when nobody holds it. */
  holder: string | null;
  /** This instance's own name, to compare with `holder`. */
  instanceId: string;
  /** Since when this instance holds the lease (null when it does not). */
  heldSince: Date | null;
}

/**
 * The gateway as one of several instances sharing a Redis: a replica per
 * platform (lease, stream, snapshot), and the stream entries every replica
 * reads, handed to the listeners (the event log, the task records) once
 * the replica has applied them to its mirror.
 */
export class Replication implements EventPublisher {
  readonly instanceId = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  private readonly streams = new Map<string, PlatformStream>();
  private readonly replicas = new Map<string, PlatformReplica>();
  private readonly listeners: EntryListener[] = [];

  constructor(
    private readonly redis: RedisClient,
    private readonly config: RedisConfig,
    private readonly logger: Logger,
  ) {}

  private streamOf(platformId: string): PlatformStream {
    let stream = this.streams.get(platformId);
    if (!stream) {
      stream = new PlatformStream(this.redis, platformId, this.config.keyPrefix, this.config.streamMaxLength);
      this.streams.set(platformId, stream);
    }
    return stream;
  }

  /** Called with every stream entry, in each platform's order, after its mirror took it in. */
  onEntry(listener: EntryListener): void {
    this.listeners.push(listener);
  }

  /**
   * Starts following (and, when it gets the lease, watching) a platform.
   * `readAgain` reads objects from the platform and applies them to the mirror: the holder's answer
   * to what another instance observed after its mutation.
   */
  run(
    platformId: string,
    mirror: PlatformMirror,
    startWatch: () => InventoryWatch,
    readAgain: (observed: InventoryChange[]) => Promise<void>,
  ): void {
    const replica = new PlatformReplica(
      this.streamOf(platformId),
      mirror,
      startWatch,
      readAgain,
      this.redis,
      {
        instanceId: this.instanceId,
        leaseTtlMs: this.config.leaseTtlMs,
        snapshotEveryEntries: this.config.snapshotEveryEntries,
      },
      (p, r) => {
        for (const listener of this.listeners) listener(p, r);
      },
      this.logger.child({ platform: platformId, room: 'replication' }),
    );
    this.replicas.set(platformId, replica);
    replica.start();
  }

  async stop(): Promise<void> {
    await Promise.all([...this.replicas.values()].map((r) => r.stop()));
  }

  publish(event: GatewayEvent): void {
    this.replicas.get(event.platformId)?.publish(event);
  }

  publishTask(event: GatewayEvent, task: unknown): void {
    const replica = this.replicas.get(event.platformId);
    if (replica) replica.publishTask(event, task);
    // A platform that is not replicated (the inventory off) still tells its tasks to every instance.
    else void this.streamOf(event.platformId).append({ v: 1, by: this.instanceId, events: [event], task });
  }

  /** Objects read after a mutation: applied here and told to the platform's holder. */
  observed(platformId: string, changes: InventoryChange[]): boolean {
    const replica = this.replicas.get(platformId);
    if (!replica) return false;
    replica.observed(changes);
    return true;
  }

  /** A platform's entries from one ID (itself included) up to another, for a client that resumes. */
  range(platformId: string, from: string, until: string): Promise<ReadEntry[]> {
    return this.streamOf(platformId).range(from, until, 100_000, true);
  }

  /** Whether a platform's stream lost entries after this ID. */
  trimmedAfter(platformId: string, after: string): Promise<boolean> {
    return this.streamOf(platformId).trimmedAfter(after);
  }

  leases(): LeaseView[] {
    return [...this.replicas].map(([platformId, r]) => ({
      platformId,
      role: r.role,
      holder: r.leaseInfo.holder,
      instanceId: this.instanceId,
      heldSince: r.leaseInfo.heldHereSince,
    }));
  }

  lease(platformId: string): LeaseView | undefined {
    return this.leases().find((l) => l.platformId === platformId);
  }
}

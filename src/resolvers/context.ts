import type { GraphQLError } from 'graphql';
import type { Logger } from 'pino';

import type { AccessPolicy, CallerAccess } from '../access/policy.js';
import { ANONYMOUS, type Caller } from '../model/caller.js';
import type { Limits } from '../config/schema.js';
import { type Loaders, createLoaders, platformDeadlines } from '../inventory/loaders.js';
import type { PlatformRegistry } from '../datasources/registry.js';
import type { Inventory } from '../inventory/inventory.js';
import type { MetricsService } from '../metrics/metrics-service.js';
import type { EventSource } from '../subscriptions/subscriber-queue.js';
import type { AuditLog } from '../mutations/audit-log.js';
import type { Declarations } from '../declarations/declarations.js';
import type { MutationPipeline } from '../mutations/pipeline.js';
import type { TaskManager } from '../mutations/task-manager.js';
import type { MigrationTracker } from '../mutations/migrations.js';

/** A caller's budget of query cost points in the current window, as the operation's charge left it. */
export interface RateLimitStatus {
  /** Points per window (`auth.rateLimit.pointsPerWindow`). */
  limit: number;
  /** What this operation costs (at least 1); charged unless it is a dry run. */
  cost: number;
  /** Points spent in this window, this operation's included. */
  used: number;
  remaining: number;
  /** When the window ends and the budget is whole again. */
  resetAt: Date;
}

/** The rate limit of one operation: whose budget it spends, and what the charge left. */
export interface RequestRateLimit {
  /** The caller's id, or `anonymous@<address>` for an anonymous caller. */
  readonly subject: string;
  /** Set when the operation has been charged, before it runs; null until then (or when it was refused). */
  status: RateLimitStatus | null;
}

/** Everything a resolver may use during one operation. */
export interface GatewayContext {
  registry: PlatformRegistry;
  loaders: Loaders;
  limits: Limits;
  logger: Logger;
  caller: Caller;
  /** What the caller may see and do; the request's loaders show it only what it may see. */
  access: CallerAccess;
  /** The client's address, as the gateway saw it; null where unknown. */
  remoteAddress: string | null;
  /**
   * Errors that do not void the data, such as a platform that could not
   * answer while others did; sent as entries of the response's `errors`.
   */
  partialErrors: GraphQLError[];
  mutations: MutationPipeline;
  tasks: TaskManager;
  audit: AuditLog;
  inventory: Inventory;
  events: EventSource;
  metrics: MetricsService;
  metricsLimits: { maxObjectsPerSubscription: number };
  /** Declared VMs: their specs and statuses, applyVm and forgetVm. */
  declarations: Declarations;
  /** Migrations as objects: their progress and limits, cancelMigration. */
  migrations: MigrationTracker;
  /**
   * Platforms whose reads in this request went to the platform itself
   * because its live inventory could not answer, and why; sent in the
   * response's `extensions.directReads`.
   */
  directReads: Map<string, string>;
  subscriptionLimits: { maxQueuedEvents: number };
  /** The WebSocket this operation came over; null over HTTP. */
  connection: { close(code: number, reason: string): void } | null;
  /** Starts over with new reads (new loaders): a subscription resolves each event as a request of its own. */
  freshReads(): void;
  /** The operation's budget of cost points (the `rateLimit` field); null when `auth.rateLimit` is off. */
  rateLimit: RequestRateLimit | null;
}

export interface ContextDeps {
  registry: PlatformRegistry;
  policy: AccessPolicy;
  limits: Limits;
  logger: Logger;
  mutations: MutationPipeline;
  tasks: TaskManager;
  audit: AuditLog;
  inventory: Inventory;
  events: EventSource;
  metrics: MetricsService;
  metricsLimits: { maxObjectsPerSubscription: number };
  subscriptionLimits: { maxQueuedEvents: number };
  declarations: Declarations;
  migrations: MigrationTracker;
}

export function createContext(
  deps: ContextDeps,
  caller: Caller = ANONYMOUS,
  connection: GatewayContext['connection'] = null,
  remoteAddress: string | null = null,
): GatewayContext {
  return new RequestContext(deps, caller, connection, remoteAddress);
}

/** The reads of one request (or of one subscription event). */
interface Reads {
  directReads: Map<string, string>;
  partialErrors: GraphQLError[];
  loaders: Loaders | undefined;
}

const newReads = (): Reads => ({ directReads: new Map(), partialErrors: [], loaders: undefined });

/**
 * A class rather than an object literal spread from the dependencies: one
 * is made per request, and a literal with accessors made that way costs
 * several times as much to build and to read from.
 */
class RequestContext implements GatewayContext {
  readonly registry: PlatformRegistry;
  readonly limits: Limits;
  readonly logger: Logger;
  readonly mutations: MutationPipeline;
  readonly tasks: TaskManager;
  readonly audit: AuditLog;
  readonly inventory: Inventory;
  readonly events: EventSource;
  readonly metrics: MetricsService;
  readonly metricsLimits: { maxObjectsPerSubscription: number };
  readonly subscriptionLimits: { maxQueuedEvents: number };
  readonly declarations: Declarations;
  readonly migrations: MigrationTracker;
  readonly access: CallerAccess;
  // Set by the gateway for the transport's subject; the charge fills in the status.
  rateLimit: RequestRateLimit | null = null;
  private reads: Reads = newReads();

  constructor(
    deps: ContextDeps,
    readonly caller: Caller,
    readonly connection: GatewayContext['connection'],
    readonly remoteAddress: string | null,
  ) {
    this.registry = deps.registry;
    this.limits = deps.limits;
    this.logger = deps.logger;
    this.mutations = deps.mutations;
    this.tasks = deps.tasks;
    this.audit = deps.audit;
    this.inventory = deps.inventory;
    this.events = deps.events;
    this.metrics = deps.metrics;
    this.metricsLimits = deps.metricsLimits;
    this.subscriptionLimits = deps.subscriptionLimits;
    this.declarations = deps.declarations;
    this.migrations = deps.migrations;
    this.access = deps.policy.for(caller);
  }

  // Made on first use, so an idle subscription holds none.
  get loaders(): Loaders {
    const reads = this.reads;
    return (reads.loaders ??= createLoaders(
      this.registry,
      this.inventory,
      // A budget per platform, not one deadline for all: a stalled platform must not spend a healthy one's time.
      platformDeadlines(this.limits.operationTimeoutMs),
      (platformId, reason) => reads.directReads.set(platformId, reason),
      this.access,
    ));
  }

  get directReads(): Map<string, string> {
    return this.reads.directReads;
  }

  get partialErrors(): GraphQLError[] {
    return this.reads.partialErrors;
  }

  freshReads(): void {
    this.reads = newReads();
  }
}

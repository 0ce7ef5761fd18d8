import type { GraphQLError } from 'graphql';
import type { Logger } from 'pino';

import { ANONYMOUS, type Caller } from '../model/caller.js';
import type { Limits } from '../config/schema.js';
import { type Loaders, createLoaders } from '../inventory/loaders.js';
import type { PlatformRegistry } from '../datasources/registry.js';
import type { Inventory } from '../inventory/inventory.js';
import type { MemoryEventLog } from '../subscriptions/event-log.js';
import type { AuditLog } from '../mutations/audit-log.js';
import type { MutationPipeline } from '../mutations/pipeline.js';
import type { TaskManager } from '../mutations/task-manager.js';

/** Everything a resolver may use during one operation. */
export interface GatewayContext {
  registry: PlatformRegistry;
  loaders: Loaders;
  limits: Limits;
  logger: Logger;
  caller: Caller;
  /**
   * Errors that do not void the data, such as a platform that could not
   * answer while others did; sent as entries of the response's `errors`.
   */
  partialErrors: GraphQLError[];
  mutations: MutationPipeline;
  tasks: TaskManager;
  audit: AuditLog;
  inventory: Inventory;
  events: MemoryEventLog;
  /**
   * Platforms whose reads in this request went to the platform itself
   * because its live inventory could not answer, and why; sent in the
   * response's `extensions.directReads`.
   */
  directReads: Map<string, string>;
}

export interface ContextDeps {
  registry: PlatformRegistry;
  limits: Limits;
  logger: Logger;
  mutations: MutationPipeline;
  tasks: TaskManager;
  audit: AuditLog;
  inventory: Inventory;
  events: MemoryEventLog;
}

export function createContext(deps: ContextDeps, caller: Caller = ANONYMOUS): GatewayContext {
  const ms = deps.limits.operationTimeoutMs;
  const directReads = new Map<string, string>();
  const loaders = createLoaders(deps.registry, deps.inventory, { at: Date.now() + ms, ms }, (platformId, reason) =>
    directReads.set(platformId, reason),
  );
  return { ...deps, caller, loaders, partialErrors: [], directReads };
}

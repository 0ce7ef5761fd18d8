import type { GraphQLError } from 'graphql';
import type { Logger } from 'pino';

import type { Limits } from '../config/schema.js';
import { type Loaders, createLoaders } from '../datasources/loaders.js';
import type { PlatformRegistry } from '../datasources/registry.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { VmOperations } from '../operations/vm-operations.js';
import type { TaskManager } from '../tasks/task-manager.js';

/** Who is asking. Authentication comes later; until then everyone is anonymous. */
export interface Caller {
  id: string;
}

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
  operations: VmOperations;
  tasks: TaskManager;
  audit: AuditLog;
}

export interface ContextDeps {
  registry: PlatformRegistry;
  limits: Limits;
  logger: Logger;
  operations: VmOperations;
  tasks: TaskManager;
  audit: AuditLog;
}

export function createContext(deps: ContextDeps, caller: Caller = { id: 'anonymous' }): GatewayContext {
  const ms = deps.limits.operationTimeoutMs;
  return { ...deps, caller, loaders: createLoaders(deps.registry, { at: Date.now() + ms, ms }), partialErrors: [] };
}

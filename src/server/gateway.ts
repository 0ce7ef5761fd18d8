import { type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

import type { GraphQLSchema } from 'graphql';
import type { Logger } from 'pino';

import { ConfigError } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { Caller } from '../model/caller.js';
import { PlatformRegistry } from '../datasources/registry.js';
import { AuditLog } from '../mutations/audit-log.js';
import { AccessPolicy } from '../access/policy.js';
import { LocalQuotaLedger, RedisQuotaLedger } from '../mutations/quota-ledger.js';
import { Quotas } from '../mutations/quotas.js';
import { type Idempotency, IdempotencyKeys, type RememberedOutcome } from '../mutations/idempotency.js';
import { SharedIdempotencyKeys } from '../mutations/shared-idempotency.js';
import { MutationPipeline, type StoredOutcome } from '../mutations/pipeline.js';
import { type StoredTask, TaskManager } from '../mutations/task-manager.js';
import { MigrationTracker } from '../mutations/migrations.js';
import type { StoredMigration } from '../model/migration.js';
import { Inventory } from '../inventory/inventory.js';
import { Declarations } from '../declarations/declarations.js';
import { LocalDeclarationStore, RedisDeclarationStore } from '../declarations/store.js';
import { openFileStore } from '../state/store.js';
import { meteredEventSource } from '../observability/event-metering.js';
import { openObservability } from '../observability/observability.js';
import { wireEvents } from './event-wiring.js';
import { renderEstate } from './estate-exposition.js';
import { openMetrics } from './metrics-wiring.js';
import type { MetricsService } from '../metrics/metrics-service.js';
import { type SharedState, openSharedState } from './shared-state.js';
import { createApollo } from './apollo.js';
import { anonymousWriteRefusal, createAuthenticator, isLoopbackHost } from './authentication.js';
import { type GatewayContext, createContext } from '../resolvers/context.js';
import { createErrorFormatter } from './format-error.js';
import { createHttpHandler } from './http.js';
import { createRateLimiter, rateLimitSubject } from './rate-limit.js';
import { buildGatewaySchema } from './schema.js';
import { loadTrustedDocuments, readManifest } from './trusted-documents.js';
import { attachWebSocket } from './websocket.js';

export interface RunningGateway {
  /** The GraphQL endpoint, for example http://127.0.0.1:4000/graphql. */
  url: string;
  port: number;
  registry: PlatformRegistry;
  tasks: TaskManager;
  metrics: MetricsService;
  /** Resolves once every platform has made its first connection attempt. */
  ready: Promise<void>;
  /**
   * The served schema and a caller's context, for executing documents in
   * this process without HTTP (embedding; the request-throughput
   * benchmark's baseline). No cost limit or rate limit applies there.
   */
  schema: GraphQLSchema;
  contextFor(caller: Caller): GatewayContext;
  /** Stops accepting, lets requests in flight finish (up to the grace period), closes platforms. */
  close(): Promise<void>;
}

type Phase = 'starting' | 'serving' | 'draining' | 'stopped';

export async function startGateway(config: Config, logger: Logger): Promise<RunningGateway> {
  const { server: serverConfig, limits } = config;
  // Refused before anything opens: a gateway that anyone on the network may use to delete VMs.
  const exposure = anonymousWriteRefusal(serverConfig.host, config.auth);
  if (exposure) throw new ConfigError(exposure);
  // Read before anything opens too: a manifest that cannot be used stops the start.
  const documents = loadTrustedDocuments(serverConfig.trustedDocuments, logger);
  // The access log, the gateway's metrics and traces; the trusted documents' names bound the operation label.
  const trusted = serverConfig.trustedDocuments;
  const observability = await openObservability(
    config,
    logger,
    trusted ? { documents: readManifest(trusted.manifestFile).values(), enforced: trusted.enforce } : null,
  );
  const authenticator = await createAuthenticator(config.auth, logger);
  const registry = PlatformRegistry.fromConfig(config.platforms, logger);
  const schema = buildGatewaySchema({ federation: serverConfig.federation });

  let phase: Phase = 'starting';
  const state = openFileStore(config.state.dir, logger);
  const tasks = new TaskManager(config.tasks, logger, await state.collection<StoredTask>('tasks'));
  const audit = await AuditLog.open(
    config.audit.file ?? join(config.state.dir, 'audit.jsonl'),
    logger,
    config.audit.retainInMemory,
  );
  const shared: SharedState = await openSharedState(config, logger);
  // Shared through Redis when this instance reached it at start.
  const rateLimiter = createRateLimiter(config.auth.rateLimit, shared, logger);
  // A development default on a loopback address; in production (any other address) only when asked.
  const explorer = serverConfig.explorer ?? isLoopbackHost(serverConfig.host);
  const introspection = serverConfig.introspection ?? explorer;
  // graphql-js's "Did you mean" names what introspection would: shown only when it is on.
  const errors = createErrorFormatter(logger, (e) => registry.describeError(e), {
    suggestions: introspection,
    countError: observability.countError,
  });
  const apollo = createApollo({
    schema,
    limits,
    logger,
    errors,
    introspection,
    rateLimiter,
    automaticPersistedQueries: !documents.enabled,
    operations: observability.operations,
  });
  await apollo.start();
  const idempotencyKeys: Idempotency<StoredOutcome> = shared.redis
    ? new SharedIdempotencyKeys(shared.redis, shared.keyPrefix)
    : new IdempotencyKeys(await state.collection<RememberedOutcome<StoredOutcome>>('idempotency'));
  const { source: events, publisher } = await wireEvents(shared, config, tasks, logger);
  const inventory = new Inventory(
    registry,
    publisher,
    {
      enabled: config.inventory.enabled,
      resyncIntervalMs: config.inventory.resyncIntervalSeconds * 1000,
      retryInitialMs: config.inventory.retryInitialMs,
      retryMaxMs: config.inventory.retryMaxMs,
    },
    logger,
    shared.replication,
  );
  // Kept beside the tasks, in the same store: a migration lives as long as its task.
  const migrations = await MigrationTracker.open({
    tasks,
    store: await state.collection<StoredMigration>('migrations'),
    audit,
    logger,
    events: publisher,
  });
  const mutations = new MutationPipeline({
    tasks,
    migrations,
    audit,
    idempotencyKeys,
    inventory,
    quotas: new Quotas(
      config.auth,
      shared.redis ? new RedisQuotaLedger(shared.redis, shared.keyPrefix, logger) : new LocalQuotaLedger(),
    ),
    logger,
  });
  const policy = new AccessPolicy(config.auth);
  const declarations = new Declarations({
    store: shared.redis
      ? new RedisDeclarationStore(shared.redis, shared.keyPrefix)
      : await LocalDeclarationStore.open(state),
    inventory,
    registry,
    pipeline: mutations,
    tasks,
    policy,
    audit,
    events: publisher,
    config: config.reconciler,
    operationTimeoutMs: limits.operationTimeoutMs,
    logger: logger.child({ room: 'declarations' }),
  });
  const subscriptionLimits = { maxQueuedEvents: config.subscriptions.maxQueuedEvents };
  const metrics = openMetrics(config, shared, registry, inventory, logger);
  const metricsLimits = { maxObjectsPerSubscription: config.metrics.maxObjectsPerSubscription };
  const meteredEvents = meteredEventSource(events);
  const contextFor = (
    caller: Caller,
    connection: GatewayContext['connection'],
    remoteAddress: string | undefined,
  ): GatewayContext => {
    const context = createContext(
      {
        registry,
        policy,
        limits,
        logger,
        mutations,
        tasks,
        audit,
        inventory,
        events: meteredEvents,
        metrics,
        metricsLimits,
        subscriptionLimits,
        declarations,
        migrations,
      },
      caller,
      connection,
      remoteAddress ?? null,
    );
    if (rateLimiter) context.rateLimit = { subject: rateLimitSubject(caller, remoteAddress), status: null };
    return context;
  };
  const http: Server = createServer(
    createHttpHandler({
      apollo,
      path: serverConfig.path,
      corsOrigins: serverConfig.corsOrigins,
      explorer,
      maxBodyBytes: limits.maxBodyBytes,
      logger,
      authenticate: (credential) => authenticator.authenticate(credential),
      documents,
      contextFor: (caller, remoteAddress) => contextFor(caller, null, remoteAddress),
      operations: observability.operations,
      gatewayMetrics: observability.exposition
        ? { ...observability.exposition, allowed: (caller) => policy.for(caller).seesEverything }
        : undefined,
      estateMetrics: config.metrics.estate.enabled
        ? (caller) =>
            renderEstate(
              inventory,
              metrics,
              config.platforms.map((p) => p.id),
              policy.for(caller),
            )
        : undefined,
      health: () => ({
        live: phase !== 'stopped',
        ready: phase === 'serving',
        details: { phase, ...shared.health() },
      }),
      readiness: {
        policy: serverConfig.readiness,
        platforms: () => inventory.platformStates(),
        redisUp: () => (config.redis ? shared.redis?.status === 'ready' : null),
      },
    }),
  );
  http.requestTimeout = 60_000;
  http.headersTimeout = 15_000;
  const ws = attachWebSocket({
    server: http,
    path: serverConfig.path,
    schema,
    limits,
    errors,
    introspection,
    maxSubscriptionsPerConnection: config.subscriptions.maxPerConnection,
    connectionInitTimeoutMs: config.subscriptions.connectionInitTimeoutMs,
    keepAliveMs: config.subscriptions.keepAliveMs,
    highWaterBytes: config.subscriptions.sendBufferBytes,
    authenticator,
    corsOrigins: serverConfig.corsOrigins,
    contextFor,
    rateLimiter,
    documents,
    operations: observability.operations,
    logger,
  });
  observability.report({
    platforms: () => inventory.platformStates(),
    tasks: () => tasks.inFlight(),
    transport: () => ws.stats(),
  });

  await listen(http, serverConfig.port, serverConfig.host);
  const port = (http.address() as AddressInfo).port;
  const host = serverConfig.host.includes(':') ? `[${serverConfig.host}]` : serverConfig.host;
  const url = `http://${host}:${port}${serverConfig.path}`;
  logger.info({ url, platforms: config.platforms.map((p) => p.id) }, 'gateway listening');

  const ready = registry.start().then(async () => {
    inventory.start();
    metrics.start();
    declarations.start();
    // Tasks a previous run left unfinished follow their platform's task where it has one.
    await tasks.resumeInterrupted(
      (task, reporter) => registry.get(task.platformId)?.resumeTask(task, reporter) ?? null,
    );
    if (phase === 'starting') phase = 'serving';
  });

  let closing: Promise<void> | null = null;
  const close = () => {
    closing ??= (async () => {
      phase = 'draining';
      logger.info('gateway shutting down');
      const grace = setTimeout(() => http.closeAllConnections(), serverConfig.shutdownGraceMs);
      grace.unref();
      await ws.close();
      // A connection kept alive past its last response would hold the drain
      // open for keepAliveTimeout (5 s): responses from now on say it closes,
      // and one that turns idle closes at once.
      http.prependListener('request', (_req, res: ServerResponse) => res.setHeader('connection', 'close'));
      http.keepAliveTimeout = DRAINING_KEEP_ALIVE_MS;
      await new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeIdleConnections();
      });
      clearTimeout(grace);
      await apollo.stop();
      await metrics.stop();
      await declarations.stop();
      await inventory.stop();
      await registry.stop();
      await Promise.all([state.close(), audit.close()]);
      await shared.close();
      await observability.close();
      phase = 'stopped';
      logger.info('gateway stopped');
    })();
    return closing;
  };

  return {
    url,
    port,
    registry,
    tasks,
    metrics,
    ready,
    schema,
    contextFor: (caller) => contextFor(caller, null, undefined),
    close,
  };
}

/** How long a connection may stay idle while the gateway drains: long enough for nothing but a request already on its way. */
const DRAINING_KEEP_ALIVE_MS = 50;

/** The address cannot be listened on; the message is the one line an operator needs. */
export class ListenError extends Error {
  constructor(
    readonly address: string,
    /** Node's code: EADDRINUSE, EACCES, EADDRNOTAVAIL, ENOTFOUND, ... */
    readonly code: string | undefined,
    reason: string,
  ) {
    super(`cannot listen on ${address}: ${reason}`);
    this.name = 'ListenError';
  }
}

const LISTEN_REASONS: Record<string, string> = {
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied',
  EADDRNOTAVAIL: 'no such address on this machine',
  ENOTFOUND: 'no such host name',
};

function listen(http: Server, port: number, host: string): Promise<void> {
  // ws's WebSocketServer passes the server's errors on to itself, where
  // nothing listens: a failed listen would end the process with ws's stack
  // trace before this promise could reject. Its listener is put back once
  // the server listens.
  const forwarded = http.listeners('error') as ((e: Error) => void)[];
  http.removeAllListeners('error');
  return new Promise<void>((resolve, reject) => {
    http.once('error', (e: NodeJS.ErrnoException) => {
      for (const f of forwarded) http.on('error', f);
      const address = `${host.includes(':') ? `[${host}]` : host}:${port}`;
      reject(new ListenError(address, e.code, (e.code && LISTEN_REASONS[e.code]) ?? e.message));
    });
    http.listen(port, host, () => {
      http.removeAllListeners('error');
      for (const f of forwarded) http.on('error', f);
      resolve();
    });
  });
}

import { z } from 'zod';

import { PLATFORM_ID_PATTERN } from '../model/ids.js';
import { VM_TAG, VM_TAG_RULE } from '../model/vm.js';

const platformId = z
  .string()
  .regex(PLATFORM_ID_PATTERN, 'must be 1-63 letters, digits, ".", "_" or "-", starting with a letter or digit');

/** How long a graceful stop waits for the guest to power itself off before its task fails (the VM stays as it is). */
const gracefulStopTimeoutMs = z.number().int().min(100).max(3_600_000).default(300_000);

const retry = {
  /** First reconnect delay after a connection failure, in ms. */
  retryInitialMs: z.number().int().min(10).max(600_000).default(1_000),
  /** Longest reconnect delay, in ms. */
  retryMaxMs: z.number().int().min(10).max(3_600_000).default(30_000),
};

export const libvirtPlatformSchema = z
  .object({
    id: platformId,
    kind: z.literal('libvirt'),
    /** Any libvirt URI: qemu:///system, qemu+ssh://user@host/system, test:///path.xml, ... */
    uri: z.string().min(1, 'must not be empty'),
    /** For URIs that ask for credentials (SASL, esx://, ...). */
    username: z.string().min(1).optional(),
    password: z.string().min(1).optional(),
    /** Open the connection read-only (no lifecycle operations). */
    readOnly: z.boolean().default(false),
    /** How often the live inventory checks that libvirt still answers (a hung daemon sends no event). */
    livenessIntervalMs: z.number().int().min(100).max(600_000).default(10_000),
    /** How long that check may take before the platform's live inventory counts as STALE. */
    livenessTimeoutMs: z.number().int().min(100).max(600_000).default(5_000),
    gracefulStopTimeoutMs,
    /** libvirt keeps no metrics history: the gateway records one while this says so. */
    metrics: z
      .object({
        /** Record every VM's and host's samples (raw for a day, 5-minute rollups for 30 days; see metrics.history). */
        history: z.boolean().default(false),
        /** How often recorded samples are taken, in seconds. */
        historyIntervalSeconds: z.number().int().min(5).max(3_600).default(60),
      })
      .strict()
      .prefault({}),
    ...retry,
  })
  .strict();

export const vspherePlatformSchema = z
  .object({
    id: platformId,
    kind: z.literal('vsphere'),
    /** The SDK endpoint of a vCenter or ESXi host: https://vcenter.example/sdk (a bare host gets /sdk). */
    url: z
      .string()
      .url('must be an https:// (or http://) URL')
      .transform((u) => {
        const url = new URL(u);
        if (url.pathname === '/' || url.pathname === '') url.pathname = '/sdk';
        return url.toString();
      })
      .refine(
        (u) => !new URL(u).username && !new URL(u).password,
        'must not contain credentials; use username and password',
      ),
    username: z.string().min(1, 'must not be empty'),
    /** Plain, or encrypted with `npm run encrypt-secret` (enc:v1:...). */
    password: z.string().min(1, 'must not be empty'),
    /** Skip TLS certificate verification (lab only; the default verifies). */
    insecure: z.boolean().default(false),
    /** PEM file of a CA to trust for this endpoint (self-signed vCenter certificates). */
    caFile: z.string().min(1).optional(),
    /** SOAP requests in flight at once on this platform; more wait, none is refused. */
    maxConcurrentRequests: z.number().int().min(1).max(256).default(16),
    /** Time for one SOAP request to be answered, in ms. */
    requestTimeoutMs: z.number().int().min(100).max(600_000).default(60_000),
    /** Objects per RetrievePropertiesEx page. */
    pageSize: z.number().int().min(1).max(10_000).default(1_000),
    /** Keep-alive interval of the session, in ms (vCenter drops idle sessions after 30 minutes). */
    keepAliveMs: z.number().int().min(1_000).max(1_800_000).default(600_000),
    /**
     * vCenter's `config.vpxd.stats.maxQueryMetrics`: entities × counters one
     * historical QueryPerf may ask for (-1: no limit). History reads are split to fit.
     */
    perfMaxQueryMetrics: z.number().int().min(-1).max(1_000_000).default(64),
    gracefulStopTimeoutMs,
    ...retry,
  })
  .strict();

/**
 * Why a QMP socket entry cannot be used, or null: an absolute unix socket
 * path (`unix:` optional), a glob of them (`*`, `?` and `[...]` within
 * path segments), or tcp://host:port.
 */
function qmpSocketProblem(entry: string): string | null {
  if (/^tcp:/i.test(entry)) {
    const m = /^tcp:\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})\/?$/.exec(entry);
    if (!m) return 'must be tcp://host:port (a host name, an IPv4 address or a [bracketed] IPv6 address)';
    const port = Number(m[2]);
    return port >= 1 && port <= 65_535 ? null : `port ${m[2]} is outside 1 to 65535`;
  }
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(entry)?.[1];
  if (scheme && scheme.toLowerCase() !== 'unix')
    return `the scheme ${scheme} is not supported; give a unix socket path or tcp://host:port`;
  const path = entry.replace(/^unix:(\/\/)?/i, '');
  if (!path.startsWith('/'))
    return 'must be an absolute unix socket path, a glob such as /run/qemu/*.qmp, or tcp://host:port';
  if (path.includes('\0')) return 'contains a NUL byte';
  if (path.includes('**')) return 'recursive globs (**) are not supported; use * within one directory';
  const bytes = Buffer.byteLength(path);
  if (!/[*?[]/.test(path) && bytes > 107) return `a unix socket path has at most 107 bytes; this one has ${bytes}`;
  return null;
}

export const qmpPlatformSchema = z
  .object({
    id: platformId,
    kind: z.literal('qmp'),
    /**
     * QEMU processes by their QMP monitors (`-qmp unix:PATH,server=on,wait=off`):
     * unix socket paths, globs of them (expanded again every rescanIntervalMs),
     * tcp://host:port. One VM per QEMU.
     */
    sockets: z
      .array(
        z.string().superRefine((entry, ctx) => {
          const problem = qmpSocketProblem(entry);
          if (problem) ctx.addIssue({ code: 'custom', message: problem });
        }),
      )
      .min(1, 'give at least one socket path, glob or tcp://host:port')
      .superRefine((entries, ctx) => {
        entries.forEach((entry, i) => {
          if (entries.indexOf(entry) !== i) ctx.addIssue({ code: 'custom', message: 'listed twice', path: [i] });
        });
      }),
    /** Time for QEMU to answer one command, in ms. */
    commandTimeoutMs: z.number().int().min(100).max(600_000).default(30_000),
    /** How long a graceful stopVm waits for the guest to shut down after the ACPI power button, in ms. */
    gracefulStopTimeoutMs,
    /** How often globs are expanded again to find new QEMUs, in ms. */
    rescanIntervalMs: z.number().int().min(50).max(3_600_000).default(5_000),
    ...retry,
  })
  .strict();

export const platformSchema = z.discriminatedUnion('kind', [
  libvirtPlatformSchema,
  vspherePlatformSchema,
  qmpPlatformSchema,
]);

export const limitsSchema = z
  .object({
    /** Deepest selection nesting; introspection fields are not counted. */
    maxDepth: z.number().int().min(1).max(100).default(12),
    /** Aliases per document. */
    maxAliases: z.number().int().min(0).max(1000).default(30),
    /** Directives per document. */
    maxDirectives: z.number().int().min(0).max(1000).default(50),
    /** Lexical tokens per document; parsing stops past this. */
    maxTokens: z.number().int().min(100).max(1_000_000).default(5_000),
    /** Estimated cost per operation (see README: query cost). */
    maxCost: z.number().int().min(1).max(100_000_000).default(50_000),
    /** Size of an HTTP request body or WebSocket message, in bytes. */
    maxBodyBytes: z
      .number()
      .int()
      .min(1024)
      .max(100 * 1024 * 1024)
      .default(1024 * 1024),
    /** Largest `first` a connection accepts. */
    maxPageSize: z.number().int().min(1).max(100_000).default(1_000),
    /** `first` when a client gives none. */
    defaultPageSize: z.number().int().min(1).max(100_000).default(50),
    /** Most points one `metrics(from:, to:)` series may have; a longer one is refused with the resolutions that fit. */
    maxSeriesPoints: z.number().int().min(10).max(1_000_000).default(1_440),
    /** Most IDs `nodes(ids:)` takes. */
    maxNodeIds: z.number().int().min(1).max(100_000).default(100),
    /**
     * How long one operation waits for a platform. A platform that has not
     * answered by then is left out of the response with an error naming it.
     */
    operationTimeoutMs: z.number().int().min(100).max(600_000).default(30_000),
  })
  .strict()
  .refine((l) => l.defaultPageSize <= l.maxPageSize, {
    message: 'defaultPageSize must not exceed maxPageSize',
    path: ['defaultPageSize'],
  });

const hostPort = z.object({ host: z.string().min(1), port: z.number().int().min(1).max(65_535) }).strict();

export const redisSchema = z
  .object({
    /** redis://[user@]host:port[/db] or rediss:// (TLS); with `sentinels`, the master's name is `sentinelName`. */
    url: z
      .string()
      .url('must be a redis:// or rediss:// URL')
      .refine((u) => /^rediss?:$/.test(new URL(u).protocol), 'must be a redis:// or rediss:// URL')
      .refine((u) => !new URL(u).password, 'must not contain a password; use password')
      .optional(),
    /** Plain, or encrypted with `npm run encrypt-secret` (enc:v1:...). */
    password: z.string().min(1).optional(),
    /** Sentinels to ask for the master named `sentinelName` (instead of `url`). */
    sentinels: z.array(hostPort).min(1).optional(),
    sentinelName: z.string().min(1).default('mymaster'),
    /** Nodes of a Redis Cluster to start from (instead of `url`). */
    cluster: z.array(hostPort).min(1).optional(),
    /** Prefix of every key the gateway writes; instances that share it act as one. */
    keyPrefix: z
      .string()
      .regex(/^[A-Za-z0-9:_.-]{1,64}$/, 'must be 1-64 letters, digits, ":", "_", "." or "-"')
      .default('virt-graph:'),
    /** How long a platform's lease lasts unless its holder renews it: the longest a dead holder goes unnoticed (ms). */
    leaseTtlMs: z.number().int().min(1_000).max(600_000).default(10_000),
    /** Entries kept in each platform's event stream (approximately): how far back a client may resume. */
    streamMaxLength: z.number().int().min(100).max(10_000_000).default(10_000),
    /** The holder writes a snapshot of its inventory for new instances after this many entries. */
    snapshotEveryEntries: z.number().int().min(10).max(1_000_000).default(1_000),
    /** How long the gateway waits for Redis at start before running alone (ms). */
    connectTimeoutMs: z.number().int().min(100).max(600_000).default(5_000),
  })
  .strict()
  .refine((r) => [r.url, r.sentinels, r.cluster].filter((x) => x !== undefined).length === 1, {
    message: 'give exactly one of url, sentinels or cluster',
  })
  .refine((r) => r.snapshotEveryEntries * 2 <= r.streamMaxLength, {
    message: 'snapshotEveryEntries must be at most half of streamMaxLength (a new instance reads on from its snapshot)',
    path: ['snapshotEveryEntries'],
  });

/** The roles, each including what the one before it may do (auditor stands apart: the audit log). */
export const ROLES = ['viewer', 'operator', 'admin', 'auditor'] as const;
const role = z.enum(ROLES);
const tenantName = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/,
    'must be 1-63 letters, digits, ".", "_" or "-", starting with a letter or digit',
  );
const names = z.array(z.string().min(1)).min(1);
const inventoryPaths = z.array(z.string().regex(/^\/./, 'must be an inventory path, starting with "/"')).min(1);
const vmTag = z.string().regex(VM_TAG, VM_TAG_RULE);

/**
 * A tenant: a named set of objects. An object belongs to it when it is on
 * one of `platforms` (all platforms when absent) and, when any other
 * selector is given, matches at least one of them.
 */
export const tenantSchema = z
  .object({
    platforms: names.optional(),
    /** vSphere clusters, by name: their hosts and the VMs on them. */
    clusters: names.optional(),
    /** Hosts by name: the VMs on them. */
    hosts: names.optional(),
    /** VM names, as globs (`web-*`, `db-??`). */
    namePatterns: names.optional(),
    /** vSphere VM folders by inventory path (`/DC0/vm/web`, globs allowed): the VMs in them and in the folders below. */
    folders: inventoryPaths.optional(),
    /** vSphere resource pools and vApps by inventory path (`/DC0/host/C0/Resources/web`): the VMs in them and in the pools below. */
    resourcePools: inventoryPaths.optional(),
    /** libvirt tags, kept in a domain's metadata: the VMs carrying one of them. */
    tags: z.array(vmTag).min(1).optional(),
  })
  .strict();

const jwtAlgorithm = z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']);

export const authSchema = z
  .object({
    /**
     * What a request without credentials may do, as a binding; absent: such
     * requests are refused (UNAUTHENTICATED). A request with a bad credential
     * is refused either way, never served as anonymous.
     */
    anonymous: z
      .object({ roles: z.array(role).min(1), tenants: z.array(z.string().min(1)).min(1).default(['*']) })
      .strict()
      .optional(),
    /** Serve anonymous operator or admin access on a non-loopback address (refused at start unless true). */
    allowAnonymousWriteOnNetwork: z.boolean().default(false),
    /** OIDC / JWT bearer tokens, checked against a JWKS URL or a static public key. */
    jwt: z
      .object({
        jwksUrl: z.string().url().optional(),
        /** PEM (SPKI) public key file, instead of jwksUrl. */
        publicKeyFile: z.string().min(1).optional(),
        issuer: z.string().min(1),
        audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
        /** Accepted signature algorithms; `none` and HMAC never are. */
        algorithms: z.array(jwtAlgorithm).min(1).default(['RS256', 'ES256']),
        clockToleranceSeconds: z.number().int().min(0).max(300).default(30),
        /** The claim that names the user (`user:<value>` in bindings). */
        subjectClaim: z.string().min(1).default('sub'),
        /** The claim listing the user's groups (`group:<name>` in bindings). */
        groupsClaim: z.string().min(1).default('groups'),
      })
      .strict()
      .refine((j) => Boolean(j.jwksUrl) !== Boolean(j.publicKeyFile), {
        message: 'give exactly one of jwksUrl and publicKeyFile',
      })
      .optional(),
    /** Service accounts: `npm run create-api-token -- NAME` prints a token once and the entry to paste here. */
    apiTokens: z
      .array(
        z
          .object({
            name: tenantName,
            /** SHA-256 of the token, hex; the token itself is never stored. */
            sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be the 64 hex digits of a SHA-256'),
          })
          .strict(),
      )
      .default([])
      .superRefine((tokens, ctx) => {
        tokens.forEach((t, i) => {
          if (tokens.findIndex((u) => u.name === t.name) !== i)
            ctx.addIssue({ code: 'custom', message: `duplicate token name "${t.name}"`, path: [i, 'name'] });
        });
      }),
    /**
     * A budget of query cost points per caller (anonymous callers: per
     * source address) and time window, as GitHub's GraphQL API keeps one;
     * shared by every instance through Redis when configured.
     */
    rateLimit: z
      .object({
        enabled: z.boolean().default(true),
        pointsPerWindow: z.number().int().min(1).max(1_000_000_000).default(1_000_000),
        windowSeconds: z.number().int().min(1).max(86_400).default(60),
      })
      .strict()
      .prefault({}),
    /** Per tenant: what its VMs may hold in all; createVm, cloneVm, deployVms and reconfigureVm past it are refused (QUOTA_EXCEEDED). */
    quotas: z
      .record(
        z.string().min(1),
        z
          .object({
            vms: z.number().int().min(0).optional(),
            vcpus: z.number().int().min(0).optional(),
            memoryMiB: z.number().int().min(0).optional(),
            diskGiB: z.number().int().min(0).optional(),
          })
          .strict(),
      )
      .default({}),
    /** Named sets of objects that bindings grant roles on; `*` (everything) needs no entry. */
    tenants: z.record(tenantName, tenantSchema).default({}),
    /** Who has which roles on which tenants. Subjects: `user:<sub>`, `group:<name>`, `token:<name>`. */
    bindings: z
      .array(
        z
          .object({
            subjects: z
              .array(z.string().regex(/^(user|group|token):.+$/, 'must be user:NAME, group:NAME or token:NAME'))
              .min(1),
            roles: z.array(role).min(1),
            tenants: z.array(z.string().min(1)).min(1),
          })
          .strict(),
      )
      .default([]),
  })
  .strict()
  .superRefine((auth, ctx) => {
    // A binding to a tenant that does not exist would silently grant nothing.
    const known = (t: string) => t === '*' || t in auth.tenants;
    auth.bindings.forEach((b, i) =>
      b.tenants.forEach((t, j) => {
        if (!known(t))
          ctx.addIssue({ code: 'custom', message: `unknown tenant "${t}"`, path: ['bindings', i, 'tenants', j] });
      }),
    );
    Object.keys(auth.quotas).forEach((t) => {
      if (!(t in auth.tenants)) ctx.addIssue({ code: 'custom', message: `unknown tenant "${t}"`, path: ['quotas', t] });
    });
    auth.anonymous?.tenants.forEach((t, j) => {
      if (!known(t))
        ctx.addIssue({ code: 'custom', message: `unknown tenant "${t}"`, path: ['anonymous', 'tenants', j] });
    });
  });

export const configSchema = z
  .object({
    server: z
      .object({
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(0).max(65_535).default(4000),
        /** GraphQL endpoint path, for HTTP and WebSocket. */
        path: z
          .string()
          .regex(/^\/[A-Za-z0-9/_-]*$/, 'must be an absolute URL path')
          .default('/graphql'),
        /**
         * Serve the GraphiQL explorer on GET. @default true on a loopback
         * address, false elsewhere (production: say true to have it)
         */
        explorer: z.boolean().optional(),
        /** Allow schema introspection (the explorer needs it). @default as explorer */
        introspection: z.boolean().optional(),
        /**
         * Run only operations of a registered manifest (trusted documents):
         * a JSON file mapping each document's SHA-256 (hex) to its text, as
         * GraphQL Code Generator's client preset or Apollo's persisted-query
         * manifest writes it. Clients send `documentId: "sha256:<hex>"` (or
         * Apollo's `extensions.persistedQuery.sha256Hash`); with `enforce`, any other document is refused.
         */
        trustedDocuments: z
          .object({ manifestFile: z.string().min(1), enforce: z.boolean().default(true) })
          .strict()
          .optional(),
        /** How long SIGTERM waits for requests in flight before closing, in ms. */
        shutdownGraceMs: z.number().int().min(0).max(600_000).default(10_000),
        /**
         * Browser origins allowed to call the API besides the gateway's own
         * pages (CORS headers, and the Origin check on requests and WebSocket
         * upgrades), for example `https://portal.example`; `*` allows any.
         * Empty (the default): no foreign origin.
         */
        corsOrigins: z.array(z.string().min(1)).default([]),
        /**
         * What GET /readyz requires, besides a gateway that has started and
         * is not draining, before it answers 200 (503 otherwise, naming what
         * is missing). A platform counts as reachable while
         * `platforms { status }` says CONNECTED.
         */
        /**
         * Serve the graph as an Apollo Federation v2 subgraph too (`@key` on
         * the Node types, `_entities`, `_service`), for a company supergraph.
         */
        federation: z.boolean().default(false),
        readiness: z
          .object({
            /**
             * `any` (the default): at least one platform reachable, so an
             * instance that reaches none (its own network, DNS or secrets)
             * leaves the load balancer while one platform's outage of many
             * does not take the graph away from the others' users. `all`:
             * every platform. `none`: platforms do not count. Or a list of
             * platform IDs that must each be reachable.
             */
            requirePlatforms: z.union([z.enum(['any', 'all', 'none']), z.array(platformId).min(1)]).default('any'),
            /**
             * With `redis` configured: unready while Redis does not answer.
             * Off by default: every instance loses the same Redis at once, and
             * each keeps serving without it (alone, see `redis`), so requiring
             * it would take every instance out of the load balancer together.
             */
            requireRedis: z.boolean().default(false),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    logging: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        /** One info line per GraphQL operation (name, type, duration, outcome, request ID). */
        accessLog: z.boolean().default(true),
      })
      .strict()
      .prefault({}),
    /** The gateway's own health for operators: Prometheus metrics and OpenTelemetry traces. */
    observability: z
      .object({
        /** GET /metrics: the gateway's own metrics in Prometheus text (requests, errors, upstream calls, subscriptions, process). */
        metrics: z
          .object({ enabled: z.boolean().default(true) })
          .strict()
          .prefault({}),
        /** OpenTelemetry traces, sent over OTLP/HTTP; off unless an endpoint is given. */
        tracing: z
          .object({
            /** The collector's OTLP/HTTP traces URL (`http://otel-collector:4318/v1/traces`). */
            otlpEndpoint: z.string().url().optional(),
            serviceName: z.string().min(1).default('virt-graph'),
            /** Share of root spans kept (parent-based: a sampled caller's trace is always kept). */
            sampleRatio: z.number().min(0).max(1).default(1),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    limits: limitsSchema.prefault({}),
    tasks: z
      .object({
        /** Tasks running at once per platform; more wait QUEUED. */
        maxPerPlatform: z.number().int().min(1).max(10_000).default(64),
        /** Tasks running at once per host (power-ons, snapshots). */
        maxPerHost: z.number().int().min(1).max(1_000).default(8),
        /** Finished tasks kept for queries. */
        retain: z.number().int().min(10).max(1_000_000).default(10_000),
      })
      .strict()
      .prefault({}),
    reconciler: z
      .object({
        /**
         * How often every declared VM is compared with the live inventory even
         * when no change woke the reconciler (seconds). Changes the inventory
         * sees (a VM powered off elsewhere) wake it at once.
         */
        resyncSeconds: z.number().int().min(1).max(86_400).default(30),
        /** Actions (creates, power changes, reconfigurations) in flight at once per platform. */
        maxConcurrentActions: z.number().int().min(1).max(1_000).default(4),
        /** First delay before a declared VM whose action failed is tried again (ms); doubles up to backoffMaxMs. */
        backoffInitialMs: z.number().int().min(10).max(3_600_000).default(1_000),
        backoffMaxMs: z.number().int().min(10).max(86_400_000).default(300_000),
        /**
         * How long a VM's name stays reserved after a gateway died while making
         * it (seconds): a request it sent may still make the VM, so another is
         * not asked for before.
         */
        reservationSeconds: z.number().int().min(0).max(86_400).default(120),
        /** The most replicas (and, apart, warm standbys) a pool may declare. */
        maxPoolReplicas: z.number().int().min(1).max(100_000).default(1_000),
      })
      .strict()
      .prefault({}),
    inventory: z
      .object({
        /**
         * Keep a live mirror of every platform and answer reads from it.
         * Off: every read goes to the platforms (no subscriptions' inventory events).
         */
        enabled: z.boolean().default(true),
        /** How often each platform's whole inventory is read again, to heal missed changes (seconds). */
        resyncIntervalSeconds: z.number().int().min(5).max(86_400).default(300),
        /** First delay before a failed watch restarts (ms); doubles up to retryMaxMs. */
        retryInitialMs: z.number().int().min(10).max(600_000).default(1_000),
        retryMaxMs: z.number().int().min(10).max(3_600_000).default(30_000),
      })
      .strict()
      .prefault({}),
    subscriptions: z
      .object({
        /** Events kept for clients that resume with `after: cursor`. */
        history: z.number().int().min(100).max(10_000_000).default(10_000),
        /** Events queued for one subscription whose client does not read; past it the connection is closed. */
        maxQueuedEvents: z.number().int().min(10).max(1_000_000).default(1_000),
        /** Subscriptions one WebSocket connection may hold at once. */
        maxPerConnection: z.number().int().min(1).max(10_000).default(100),
        /** How long a new WebSocket may take to send connection_init before it is closed with 4408 (ms). */
        connectionInitTimeoutMs: z.number().int().min(100).max(600_000).default(5_000),
        /** WebSocket ping interval; a client that has not answered the previous ping is dropped (ms). */
        keepAliveMs: z.number().int().min(100).max(600_000).default(12_000),
        /**
         * Bytes a WebSocket may hold unsent before its subscriptions wait for
         * it; while they wait their events queue (up to maxQueuedEvents).
         */
        sendBufferBytes: z.number().int().min(1_024).max(1_073_741_824).default(1_048_576),
      })
      .strict()
      .prefault({}),
    metrics: z
      .object({
        /** The interval `metrics { latest }` samples at when no subscription already samples the object (seconds). */
        latestIntervalSeconds: z.number().int().min(1).max(3_600).default(20),
        /** How long `latest` keeps an object sampled after it was last asked, so the next ask is answered at once (seconds). */
        latestLingerSeconds: z.number().int().min(0).max(86_400).default(300),
        /** How long `latest` waits for a first sample before it answers null (ms). */
        latestTimeoutMs: z.number().int().min(100).max(600_000).default(10_000),
        /** Most VMs or hosts one vmMetrics/hostMetrics subscription may watch. */
        maxObjectsPerSubscription: z.number().int().min(1).max(100_000).default(1_000),
        /** What is kept of recorded history (platforms with metrics.history), in Redis when configured, else in memory. */
        history: z
          .object({
            rawRetentionSeconds: z.number().int().min(60).max(31_536_000).default(86_400),
            rollupSeconds: z.number().int().min(60).max(86_400).default(300),
            rollupRetentionSeconds: z.number().int().min(3_600).max(315_360_000).default(2_592_000),
            /** Without Redis: the most memory the recorded history may hold (MiB); past it, new objects are not recorded. */
            maxMemoryMiB: z.number().int().min(1).max(1_048_576).default(256),
          })
          .strict()
          .refine((h) => h.rawRetentionSeconds >= 2 * h.rollupSeconds, {
            message: 'rawRetentionSeconds must be at least twice rollupSeconds (rollups are computed from raw samples)',
            path: ['rawRetentionSeconds'],
          })
          .refine((h) => h.rollupRetentionSeconds >= h.rollupSeconds, {
            message: 'rollupRetentionSeconds must be at least rollupSeconds',
            path: ['rollupRetentionSeconds'],
          })
          .prefault({}),
        /** Prometheus exposition of every VM's and host's latest sample, labelled by platform, name and host. */
        estate: z
          .object({
            enabled: z.boolean().default(false),
            /** How often the estate is sampled for it while enabled (seconds). */
            intervalSeconds: z.number().int().min(1).max(3_600).default(60),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    state: z
      .object({
        /**
         * Where the state that must survive a restart is kept: tasks,
         * idempotency keys and (unless audit.file says otherwise) the audit
         * trail; one journal file each. Relative to the working directory.
         */
        dir: z.string().min(1).default('.state'),
      })
      .strict()
      .prefault({}),
    audit: z
      .object({
        /** Append-only JSON-lines file of every mutation. @default `<state.dir>/audit.jsonl` */
        file: z.string().min(1).optional(),
        /** Newest entries kept in memory for `auditLog` queries (the file keeps all). */
        retainInMemory: z.number().int().min(100).max(10_000_000).default(100_000),
      })
      .strict()
      .prefault({}),
    /**
     * Several gateway instances as one: each platform watched by one
     * instance at a time (a lease), every event through a Redis Stream per
     * platform, idempotency keys shared. Absent: one instance, in memory.
     */
    redis: redisSchema.optional(),
    /**
     * Who may call, and what each caller may see and do. Absent: anonymous
     * callers are admins of everything, which the gateway serves on a
     * loopback address only.
     */
    auth: authSchema.prefault({ anonymous: { roles: ['admin'], tenants: ['*'] } }),
    platforms: z
      .array(platformSchema)
      .min(1, 'configure at least one platform')
      .superRefine((platforms, ctx) => {
        const seen = new Set<string>();
        platforms.forEach((p, i) => {
          if (seen.has(p.id)) {
            ctx.addIssue({ code: 'custom', message: `duplicate platform id "${p.id}"`, path: [i, 'id'] });
          }
          seen.add(p.id);
        });
      }),
  })
  .strict()
  .refine((c) => !c.redis || c.inventory.enabled, {
    message: 'several instances share their platforms through the live inventory: redis needs inventory.enabled',
    path: ['redis'],
  })
  .superRefine((c, ctx) => {
    const required = c.server.readiness.requirePlatforms;
    if (!Array.isArray(required)) return;
    // A platform that does not exist would never be reachable: the gateway would never be ready.
    const configured = new Set(c.platforms.map((p) => p.id));
    required.forEach((id, i) => {
      if (!configured.has(id))
        ctx.addIssue({
          code: 'custom',
          message: `unknown platform "${id}"`,
          path: ['server', 'readiness', 'requirePlatforms', i],
        });
    });
  });

export type Config = z.infer<typeof configSchema>;
export type Limits = z.infer<typeof limitsSchema>;
export type ReadinessConfig = Config['server']['readiness'];
export type RedisConfig = z.infer<typeof redisSchema>;
export type AuthConfig = z.infer<typeof authSchema>;
export type TenantConfig = z.infer<typeof tenantSchema>;
export type Role = (typeof ROLES)[number];
export type MetricsConfig = z.infer<typeof configSchema>['metrics'];
export type PlatformConfig = z.infer<typeof platformSchema>;
export type LibvirtPlatformConfig = z.infer<typeof libvirtPlatformSchema>;
export type VspherePlatformConfig = z.infer<typeof vspherePlatformSchema>;
export type QmpPlatformConfig = z.infer<typeof qmpPlatformSchema>;

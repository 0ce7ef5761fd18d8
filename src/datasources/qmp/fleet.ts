import { basename, extname } from 'node:path';

import type { Logger } from 'pino';

import { PlatformUnavailableError, errorMessage } from '../../model/errors.js';
import type { PlatformState } from '../../model/platform.js';
import { type QmpAddress, QmpClient, type QmpCloseReason, parseQmpAddress } from './client.js';
import {
  QmpConnectionError,
  type QmpEvent,
  QmpProtocolError,
  type QmpStatusInfo,
  type QmpVersion,
} from './protocol.js';
import { LOCAL_HOST, type SocketEntry, addressKey, expandGlob, hostOf } from './sockets.js';

// The QEMUs of one QMP platform and the one connection the gateway holds to
// each (a QMP monitor serves one client at a time: while the gateway holds
// it, nobody else can use that socket). Reads, operations and the live
// inventory all go through these connections.
//
// Each address is an endpoint: connected (a monitor: the client and what
// QEMU said of itself at connect), or not, with the reason and a retry timer
// (exponential backoff). Globs are expanded at start and every
// rescanIntervalMs: a new socket is connected at once, and one whose file
// was made again (a QEMU started anew at the same path) is tried again
// without waiting for its backoff. A socket file a glob finds that nothing
// listens on (ENOENT, ECONNREFUSED: the file a killed QEMU left) is not a
// failure of the platform; every other failure is, and so is every failure
// of a listed address. A QEMU that exits closes its connection: its VM is
// removed (`removed`), and the address is tried again.
//
// The platform is CONNECTED while at least one QEMU is connected or nothing
// failed (globs that find no QEMU yet are no failure), UNREACHABLE when
// nothing is connected and something failed; the message names what failed.

/** One connected QEMU: its connection and what it said of itself when the gateway connected. */
export interface QmpMonitor {
  /** The address as written back (`unix:/run/qemu/a.qmp`): the key of its endpoint. */
  readonly key: string;
  readonly address: QmpAddress;
  /** `local` for a unix socket, the TCP host otherwise. */
  readonly hostNativeId: string;
  readonly client: QmpClient;
  /** The VM's native ID: QEMU's UUID, or (all-zero UUID) the socket address, encoded. */
  readonly vmNativeId: string;
  readonly uuid: string;
  readonly name: string;
  readonly arch: string | null;
  readonly machineType: string | null;
  readonly version: QmpVersion;
  /** query-status as last read, for a QEMU that stops answering. */
  lastStatus: QmpStatusInfo;
}

/** What the fleet tells its listeners (the live inventory). */
export type FleetEvent =
  | { type: 'added'; monitor: QmpMonitor }
  | { type: 'removed'; monitor: QmpMonitor; reason: string }
  | { type: 'qemu-event'; monitor: QmpMonitor; event: QmpEvent }
  | { type: 'status'; state: PlatformState };

export interface QmpFleetOptions {
  platformId: string;
  logger: Logger;
  entries: readonly SocketEntry[];
  commandTimeoutMs: number;
  rescanIntervalMs: number;
  retryInitialMs: number;
  retryMaxMs: number;
}

/** How a host of the platform stands: its connected QEMUs, and whether any of its sockets failed. */
export interface FleetHost {
  nativeId: string;
  monitors: QmpMonitor[];
  failed: boolean;
}

interface Endpoint {
  key: string;
  address: QmpAddress;
  /** Listed in the configuration (every failure counts), rather than found by a glob. */
  listed: boolean;
  /** The globs that find it now (their `sockets` entries). */
  foundBy: Set<string>;
  /** The socket file's identity when a glob found it. */
  fileIdentity: string | null;
  monitor: QmpMonitor | null;
  attempt: Promise<void> | null;
  /** Why the last attempt failed; `leftover` for a glob's socket file that nothing listens on. */
  failure: { message: string; leftover: boolean } | null;
  retryTimer: NodeJS.Timeout | null;
  retryDelayMs: number;
  /** Out of the fleet (its glob no longer finds it): nothing more is attempted. */
  dropped: boolean;
}

const ZERO_UUID = /^0{8}-0{4}-0{4}-0{4}-0{12}$/;
/** Failures listed in a platform's status message, the rest counted. */
const LISTED_FAILURES = 3;

export class QmpFleet {
  private readonly endpoints = new Map<string, Endpoint>();
  private readonly byVm = new Map<string, QmpMonitor>();
  private readonly listeners = new Set<(e: FleetEvent) => void>();
  private readonly statusListeners: ((state: PlatformState) => void)[] = [];
  private readonly globs: { text: string; pattern: string }[] = [];
  private readonly globFailures = new Map<string, string>();
  private readonly invalid: string[] = [];
  /** Hosts named by the configuration: they are listed even while none of their QEMUs is connected. */
  private readonly configuredHosts = new Set<string>();
  private current: PlatformState = {
    status: 'CONNECTING',
    statusMessage: null,
    connectedAt: null,
    hypervisorType: 'QEMU',
    hypervisorVersion: null,
  };
  private scanned = false;
  private stopped = true;
  private rescanTimer: NodeJS.Timeout | null = null;
  private scanning: Promise<void> | null = null;

  constructor(private readonly opts: QmpFleetOptions) {
    for (const entry of opts.entries) {
      if (entry.kind === 'glob') {
        this.globs.push({ text: entry.text, pattern: entry.pattern });
        this.configuredHosts.add(LOCAL_HOST);
      } else if (entry.kind === 'invalid') {
        this.invalid.push(entry.problem);
      } else {
        this.configuredHosts.add(hostOf(entry.address));
        const endpoint = this.endpoint(entry.address);
        endpoint.listed = true;
      }
    }
  }

  /** Expands the globs and tries every socket once; resolves when each attempt has ended. Never throws. */
  async start(): Promise<void> {
    this.stopped = false;
    await this.scan(true);
    this.scanned = true;
    this.updateState();
    if (this.globs.length > 0 && !this.stopped) {
      this.rescanTimer = setInterval(() => void this.scan(false), this.opts.rescanIntervalMs);
      this.rescanTimer.unref();
    }
  }

  /** Closes every connection (the QEMUs go on running). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.rescanTimer) clearInterval(this.rescanTimer);
    this.rescanTimer = null;
    await this.scanning;
    const endpoints = [...this.endpoints.values()];
    for (const e of endpoints) {
      if (e.retryTimer) clearTimeout(e.retryTimer);
      e.retryTimer = null;
    }
    await Promise.all(endpoints.map((e) => e.attempt));
    await Promise.all(
      endpoints.map(async (e) => {
        const client = e.monitor?.client;
        e.monitor = null;
        if (client) {
          client.destroy();
          await client.closed;
        }
      }),
    );
    this.byVm.clear();
  }

  state(): PlatformState {
    return { ...this.current };
  }

  onStatusChange(listener: (state: PlatformState) => void): void {
    this.statusListeners.push(listener);
  }

  /** Receives every change of the fleet until the returned function is called. */
  subscribe(listener: (event: FleetEvent) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** The connected QEMUs, by address. */
  monitors(): QmpMonitor[] {
    return [...this.byVm.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** The QEMU holding a VM, while it is connected. */
  monitor(vmNativeId: string): QmpMonitor | undefined {
    return this.byVm.get(vmNativeId);
  }

  /** Every host: those the configuration names, and those of connected QEMUs. */
  hosts(): FleetHost[] {
    const hosts = new Map<string, FleetHost>();
    const host = (id: string) => {
      let h = hosts.get(id);
      if (!h) hosts.set(id, (h = { nativeId: id, monitors: [], failed: false }));
      return h;
    };
    for (const id of this.configuredHosts) host(id);
    for (const e of this.endpoints.values()) {
      const h = host(hostOf(e.address));
      if (e.monitor) h.monitors.push(e.monitor);
      else if (e.failure && !e.failure.leftover) h.failed = true;
    }
    return [...hosts.values()].sort((a, b) => (a.nativeId < b.nativeId ? -1 : 1));
  }

  /** Throws PlatformUnavailableError unless the platform is CONNECTED. */
  assertConnected(): void {
    if (this.current.status === 'CONNECTED') return;
    throw new PlatformUnavailableError(
      this.opts.platformId,
      this.current.statusMessage ?? this.current.status.toLowerCase(),
    );
  }

  // ---------------------------------------------------------------- endpoints

  private endpoint(address: QmpAddress): Endpoint {
    const key = addressKey(address);
    let e = this.endpoints.get(key);
    if (!e) {
      e = {
        key,
        address,
        listed: false,
        foundBy: new Set(),
        fileIdentity: null,
        monitor: null,
        attempt: null,
        failure: null,
        retryTimer: null,
        retryDelayMs: this.opts.retryInitialMs,
        dropped: false,
      };
      this.endpoints.set(key, e);
    }
    return e;
  }

  /**
   * Expands the globs, then tries every socket that is neither connected
   * nor waiting for its retry; at start, waits for those attempts.
   */
  private scan(waitForAttempts: boolean): Promise<void> {
    if (this.scanning) return this.scanning;
    this.scanning = (async () => {
      try {
        await Promise.all(this.globs.map((g) => this.expand(g)));
        if (this.stopped) return;
        const attempts = [...this.endpoints.values()]
          .filter((e) => !e.monitor && !e.retryTimer && !e.dropped)
          .map((e) => this.connect(e));
        if (waitForAttempts) await Promise.all(attempts);
      } finally {
        this.scanning = null;
        this.updateState();
      }
    })();
    return this.scanning;
  }

  private async expand(glob: { text: string; pattern: string }): Promise<void> {
    let found;
    try {
      found = await expandGlob(glob.pattern);
      this.globFailures.delete(glob.text);
    } catch (e) {
      // What it found before stays as it is until it can be read again.
      this.globFailures.set(glob.text, errorMessage(e));
      return;
    }
    const seen = new Set<string>();
    for (const socket of found) {
      let address: QmpAddress;
      try {
        address = parseQmpAddress(socket.path);
      } catch (e) {
        this.globFailures.set(glob.text, errorMessage(e));
        continue;
      }
      const e = this.endpoint(address);
      seen.add(e.key);
      e.foundBy.add(glob.text);
      e.dropped = false;
      if (e.fileIdentity !== socket.identity) {
        const renewed = e.fileIdentity !== null;
        e.fileIdentity = socket.identity;
        // A socket made again: a QEMU started anew at that path, tried now rather than after its backoff.
        if (renewed && !e.monitor && e.retryTimer) {
          clearTimeout(e.retryTimer);
          e.retryTimer = null;
          e.retryDelayMs = this.opts.retryInitialMs;
        }
      }
    }
    for (const e of this.endpoints.values()) {
      if (!e.foundBy.has(glob.text) || seen.has(e.key)) continue;
      e.foundBy.delete(glob.text);
      this.dropIfUnused(e);
    }
  }

  /** A socket no glob finds and no configuration lists, with no QEMU connected: forgotten. */
  private dropIfUnused(e: Endpoint): void {
    if (e.listed || e.foundBy.size > 0 || e.monitor) return;
    e.dropped = true;
    if (e.retryTimer) clearTimeout(e.retryTimer);
    e.retryTimer = null;
    if (!e.attempt) this.endpoints.delete(e.key);
  }

  private connect(e: Endpoint): Promise<void> {
    if (e.attempt) return e.attempt;
    e.attempt = (async () => {
      let client: QmpClient | null = null;
      try {
        client = await QmpClient.connect(e.address, {
          connectTimeoutMs: Math.min(10_000, this.opts.commandTimeoutMs),
          commandTimeoutMs: this.opts.commandTimeoutMs,
          onEvent: (event) => this.onQemuEvent(e, event),
          onListenerError: (error, event) =>
            this.opts.logger.error(
              { err: errorMessage(error), event: event.event, socket: e.key },
              'a QMP event listener failed',
            ),
        });
        const identified = await this.identify(e, client);
        if (this.stopped || e.dropped) {
          client.destroy();
          return;
        }
        const monitor = this.uniquely(identified);
        e.monitor = monitor;
        e.failure = null;
        e.retryDelayMs = this.opts.retryInitialMs;
        this.byVm.set(monitor.vmNativeId, monitor);
        this.opts.logger.info(
          { socket: e.key, vm: monitor.name, uuid: monitor.uuid, qemu: formatVersion(monitor.version) },
          'QEMU connected',
        );
        void monitor.client.closed.then((reason) => this.lost(e, monitor, reason));
        this.emit({ type: 'added', monitor });
      } catch (err) {
        client?.destroy();
        if (this.stopped) return;
        const leftover = !e.listed && isLeftoverSocket(err);
        e.failure = { message: failureMessage(e.key, err), leftover };
        const log = { socket: e.key, reason: e.failure.message, retryInMs: e.retryDelayMs };
        if (leftover) this.opts.logger.debug(log, 'nothing listens on a QMP socket a glob found');
        else this.opts.logger.warn(log, 'cannot use a QMP socket');
        this.scheduleRetry(e);
      } finally {
        e.attempt = null;
        if (e.dropped) this.endpoints.delete(e.key);
        this.updateState();
      }
    })();
    return e.attempt;
  }

  /** What QEMU says of itself: identity, architecture and machine type, run state. */
  private async identify(e: Endpoint, client: QmpClient): Promise<QmpMonitor> {
    const [uuid, name, target, machine, status] = await Promise.all([
      client.execute('query-uuid'),
      client.execute('query-name'),
      client.execute('query-target').catch(() => null),
      client.execute('qom-get', { path: '/machine', property: 'type' }).catch(() => null),
      client.execute('query-status'),
    ]);
    const addressId = encodeURIComponent(e.key);
    return {
      key: e.key,
      address: e.address,
      hostNativeId: hostOf(e.address),
      client,
      vmNativeId: ZERO_UUID.test(uuid.UUID) ? addressId : uuid.UUID.toLowerCase(),
      uuid: uuid.UUID.toLowerCase(),
      name: name.name ?? fallbackName(e.address),
      arch: target?.arch ?? null,
      machineType: typeof machine === 'string' ? machine.replace(/-machine$/, '') : null,
      version: client.greeting.version,
      lastStatus: status,
    };
  }

  /** The monitor, known by its socket address instead when another connected QEMU has the same UUID. */
  private uniquely(m: QmpMonitor): QmpMonitor {
    const holder = this.byVm.get(m.vmNativeId);
    if (!holder || holder.key === m.key) return m;
    this.opts.logger.warn(
      { socket: m.key, other: holder.key, uuid: m.uuid },
      'two QEMUs have the same UUID; the second is known by its socket address',
    );
    return { ...m, vmNativeId: encodeURIComponent(m.key) };
  }

  private lost(e: Endpoint, monitor: QmpMonitor, reason: QmpCloseReason): void {
    if (e.monitor !== monitor) return;
    e.monitor = null;
    if (this.byVm.get(monitor.vmNativeId) === monitor) this.byVm.delete(monitor.vmNativeId);
    if (this.stopped) return;
    const why = closeReason(reason);
    this.opts.logger.info({ socket: e.key, vm: monitor.name, reason: why }, 'QEMU connection closed');
    this.emit({ type: 'removed', monitor, reason: why });
    this.dropIfUnused(e);
    // At once: a QEMU that was restarted at the same address is back as soon as it listens.
    if (!e.dropped) void this.connect(e);
    this.updateState();
  }

  private scheduleRetry(e: Endpoint): void {
    if (this.stopped || e.dropped || e.retryTimer) return;
    const delay = e.retryDelayMs;
    e.retryDelayMs = Math.min(delay * 2, this.opts.retryMaxMs);
    e.retryTimer = setTimeout(() => {
      e.retryTimer = null;
      void this.connect(e);
    }, delay);
    e.retryTimer.unref();
  }

  private onQemuEvent(e: Endpoint, event: QmpEvent): void {
    // Events before the QEMU is known (during identify) are covered by the read that follows `added`.
    if (this.stopped || !e.monitor) return;
    this.emit({ type: 'qemu-event', monitor: e.monitor, event });
  }

  private emit(event: FleetEvent): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (err) {
        this.opts.logger.error({ err: errorMessage(err) }, 'a QMP fleet listener failed');
      }
    }
  }

  // ---------------------------------------------------------------- status

  private updateState(): void {
    if (!this.scanned || this.stopped) return;
    const connected = this.monitors();
    const problems = [
      ...this.invalid,
      ...this.globFailures.values(),
      ...[...this.endpoints.values()].flatMap((e) =>
        !e.monitor && e.failure && !e.failure.leftover ? [e.failure.message] : [],
      ),
    ];
    const versions = [...new Set(connected.map((m) => formatVersion(m.version)))].sort();
    const hypervisorVersion = versions.length > 0 ? versions.join(', ') : null;
    let next: PlatformState;
    if (connected.length === 0 && problems.length > 0) {
      next = {
        status: 'UNREACHABLE',
        statusMessage: summary(problems),
        connectedAt: null,
        hypervisorType: 'QEMU',
        hypervisorVersion,
      };
    } else {
      next = {
        status: 'CONNECTED',
        statusMessage:
          problems.length > 0
            ? `${connected.length} QEMU${connected.length === 1 ? '' : 's'} connected; ${summary(problems)}`
            : null,
        connectedAt: this.current.status === 'CONNECTED' ? this.current.connectedAt : new Date(),
        hypervisorType: 'QEMU',
        hypervisorVersion,
      };
    }
    const changed = next.status !== this.current.status || next.statusMessage !== this.current.statusMessage;
    this.current = next;
    if (!changed) return;
    if (next.status === 'CONNECTED' && next.statusMessage === null) this.opts.logger.info('platform connected');
    else this.opts.logger.warn({ status: next.status, reason: next.statusMessage }, 'platform status');
    for (const listener of this.statusListeners) listener({ ...next });
    this.emit({ type: 'status', state: { ...next } });
  }
}

export function formatVersion(v: QmpVersion): string {
  return `${v.qemu.major}.${v.qemu.minor}.${v.qemu.micro}`;
}

/** The VM's name when QEMU has none (no -name): the socket's file name, or host:port. */
function fallbackName(address: QmpAddress): string {
  if (address.kind === 'tcp') return `${address.host}:${address.port}`;
  const file = basename(address.path);
  return basename(file, extname(file)) || file;
}

/** A socket file nothing listens on (left by a QEMU that was killed), that has gone meanwhile, or whose QEMU is exiting. */
function isLeftoverSocket(e: unknown): boolean {
  if (!(e instanceof QmpConnectionError) || e.failure !== 'UNREACHABLE') return false;
  const code = (e.cause as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ECONNREFUSED' || code === 'ENOENT' || code === 'ECONNRESET';
}

/** A failure worded with the socket it concerns. */
function failureMessage(key: string, e: unknown): string {
  if (e instanceof QmpProtocolError) return `${key} does not speak QMP: ${e.message}`;
  const message = errorMessage(e);
  const where = key.replace(/^unix:/, '').replace(/^tcp:\/\//, '');
  return message.includes(where) ? message : `${key}: ${message}`;
}

function closeReason(reason: QmpCloseReason): string {
  switch (reason.kind) {
    case 'client-closed':
      return 'closed by the gateway';
    case 'peer-closed':
      return 'QEMU closed the connection (it has exited)';
    case 'connection-error':
    case 'protocol-error':
      return reason.error.message;
  }
}

function summary(problems: string[]): string {
  const listed = problems.slice(0, LISTED_FAILURES).join('; ');
  const more = problems.length - LISTED_FAILURES;
  return more > 0 ? `${listed}; and ${more} more` : listed;
}

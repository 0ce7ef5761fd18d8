import { createConnection, isIPv4, isIPv6, type Socket } from 'node:net';

import {
  QMP_MAX_ARGUMENT_DEPTH,
  type QmpArguments,
  QmpAddressError,
  QmpCommandError,
  type QmpCommandMap,
  type QmpCommandMessage,
  type QmpCommandName,
  QmpConnectionError,
  type QmpEvent,
  type QmpGreeting,
  type QmpKnownEventName,
  QmpLineSplitter,
  type QmpMessage,
  QmpProtocolError,
  QmpTimeoutError,
  excerptOf,
  jsonDepth,
  parseQmpMessage,
} from './protocol.js';

// One QMP connection to one QEMU process: connect, greeting, capabilities
// negotiation, then commands matched to their replies by id, and events to
// listeners. A client is one connection and ends with it: it never
// reconnects, because whether and when to is the provider's policy. To
// reconnect, connect a new client to the same `address` with the same
// `options` (which carry the event listener, so nothing needs re-attaching).
//
// Whatever the peer sends is checked before it is believed: a line that is not
// a QMP message, a reply to an id that no command is waiting for, or a line
// past the size cap closes the connection with a QmpProtocolError. Nothing the
// peer sends can throw out of the socket's data handler.

/** Where QEMU listens: `-qmp unix:PATH,server=on` or `-qmp tcp:HOST:PORT,server=on`. */
export type QmpAddress = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

// sun_path holds 108 bytes on Linux (104 on macOS), the final NUL included.
// Node does not check: a longer path fails with a misleading ENOENT.
const MAX_UNIX_PATH_BYTES = process.platform === 'darwin' ? 103 : 107;

/**
 * Reads an address: `tcp://HOST:PORT` (HOST a name, an IPv4 address or a
 * bracketed IPv6 address), or a unix socket path, optionally written
 * `unix:PATH` as QEMU's own option does. Throws QmpAddressError.
 */
export function parseQmpAddress(input: string): QmpAddress {
  if (input === '') throw new QmpAddressError(input, 'empty; give a unix socket path or tcp://host:port');
  if (/^tcp:/i.test(input)) return parseTcp(input);
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(input);
  if (scheme && scheme[1]?.toLowerCase() !== 'unix') {
    throw new QmpAddressError(
      input,
      `the scheme ${scheme[1]} is not supported; use a unix socket path or tcp://host:port`,
    );
  }
  let path = input;
  if (/^unix:/i.test(path)) {
    path = path.slice('unix:'.length);
    // unix:///run/qemu.sock, URL-style, names the same path as unix:/run/qemu.sock.
    if (path.startsWith('//')) {
      path = path.slice(2);
      if (!path.startsWith('/')) throw new QmpAddressError(input, 'a unix:// address takes an absolute path');
    }
  }
  if (path === '') throw new QmpAddressError(input, 'no socket path');
  if (path.includes('\0')) throw new QmpAddressError(input, 'the socket path contains a NUL byte');
  const bytes = Buffer.byteLength(path);
  if (bytes > MAX_UNIX_PATH_BYTES) {
    throw new QmpAddressError(
      input,
      `a unix socket path may have at most ${MAX_UNIX_PATH_BYTES} bytes on this system; this one has ${bytes}`,
    );
  }
  return { kind: 'unix', path };
}

const TCP_ADDRESS = /^tcp:\/\/(\[[^\]]*\]|[^:/?#@[\]]*)(?::(\d*))?\/?$/i;
const HOSTNAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i;

function parseTcp(input: string): QmpAddress {
  if (!/^tcp:\/\//i.test(input)) {
    throw new QmpAddressError(input, 'write a TCP address as tcp://host:port');
  }
  const m = TCP_ADDRESS.exec(input);
  if (!m) throw new QmpAddressError(input, 'expected tcp://host:port, without user, path, query or fragment');
  const rawHost = m[1] ?? '';
  const rawPort = m[2];
  let host: string;
  if (rawHost.startsWith('[')) {
    host = rawHost.slice(1, -1);
    if (!isIPv6(host)) throw new QmpAddressError(input, `${rawHost} is not an IPv6 address`);
  } else {
    host = rawHost;
    if (host === '') throw new QmpAddressError(input, 'no host');
    if (!isIPv4(host) && !HOSTNAME.test(host)) throw new QmpAddressError(input, `${host} is not a host name`);
  }
  if (rawPort === undefined || rawPort === '') throw new QmpAddressError(input, 'no port');
  const port = Number(rawPort);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new QmpAddressError(input, `port ${rawPort} is outside 1 to 65535`);
  }
  return { kind: 'tcp', host, port };
}

/** An address written back: `unix:/run/qemu.sock`, `tcp://127.0.0.1:4444`, `tcp://[::1]:4444`. */
export function formatQmpAddress(address: QmpAddress): string {
  if (address.kind === 'unix') return `unix:${address.path}`;
  return `tcp://${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
}

export type QmpEventListener = (event: QmpEvent) => void;

export interface QmpClientOptions {
  /** Time to connect, read the greeting and negotiate capabilities. @default 10_000 // 10 seconds */
  connectTimeoutMs?: number;
  /** Time for one command to be answered, unless execute() is given its own. @default 30_000 // 30 seconds */
  commandTimeoutMs?: number;
  /** The longest line accepted from the peer, in bytes. @default 16 * 1024 * 1024 // 16 MiB */
  maxLineBytes?: number;
  /**
   * Receives every event from the start of the connection, so that none is
   * missed between connect() resolving and a later onEvent().
   */
  onEvent?: QmpEventListener;
  /**
   * Told when an event listener throws. The other listeners still get the
   * event, and the connection is unaffected.
   * @default a process warning
   */
  onListenerError?: (error: unknown, event: QmpEvent) => void;
}

export interface QmpExecuteOptions {
  /** Overrides the client's commandTimeoutMs for this command. */
  timeoutMs?: number;
}

/** Why a connection ended; `closed` resolves with it. */
export type QmpCloseReason =
  /** close() or destroy(). */
  | { kind: 'client-closed' }
  /** The peer ended the connection (end of file, or a reset): QEMU quit, died, or dropped this client. */
  | { kind: 'peer-closed' }
  /** The connection failed, or was never completed (unreachable, or the handshake timed out). */
  | { kind: 'connection-error'; error: QmpConnectionError }
  /** The peer sent something that is not QMP; the client hung up. */
  | { kind: 'protocol-error'; error: QmpProtocolError };

/** The client's life: `connecting` and `negotiating` are over when connect() resolves. */
export type QmpClientState = 'connecting' | 'negotiating' | 'ready' | 'closing' | 'closed';

interface PendingCommand {
  command: string;
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout | null;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: Error): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

// Codes by which a connected peer's going away shows itself, besides a clean
// end of file. QEMU's exit after `quit` often arrives as a reset: always when
// input it had not read was pending, and over TCP often even without.
const PEER_GONE_CODES = new Set(['ECONNRESET', 'EPIPE']);

/** A QMP connection to one QEMU. Create one with QmpClient.connect(). */
export class QmpClient {
  readonly address: QmpAddress;
  /** The options this client was connected with; pass them to connect() to reconnect alike. */
  readonly options: Readonly<QmpClientOptions>;
  /** Resolves (never rejects) once the connection is closed, with the reason. */
  readonly closed: Promise<QmpCloseReason>;

  private readonly label: string;
  private readonly socket: Socket;
  private readonly splitter: QmpLineSplitter;
  private readonly commandTimeoutMs: number;
  private phase: QmpClientState = 'connecting';
  private socketConnected = false;
  private greetingInfo: QmpGreeting | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, PendingCommand>();
  /** Ids of commands that timed out, whose answers may still come and are then dropped. */
  private readonly abandoned = new Set<number>();
  private readonly listeners = new Set<{ name: string | null; fn: QmpEventListener }>();
  private closeReason: QmpCloseReason | null = null;
  private readonly handshake = deferred<void>();
  private readonly settled = deferred<QmpCloseReason>();

  private constructor(address: QmpAddress, options: QmpClientOptions) {
    this.address = address;
    this.options = options;
    this.label = formatQmpAddress(address);
    this.commandTimeoutMs = checkTimeout(options.commandTimeoutMs ?? 30_000, 'commandTimeoutMs');
    const maxLineBytes = options.maxLineBytes ?? 16 * 1024 * 1024;
    if (!Number.isSafeInteger(maxLineBytes) || maxLineBytes < 1) {
      throw new RangeError(`maxLineBytes must be a positive whole number of bytes, not ${String(maxLineBytes)}`);
    }
    this.splitter = new QmpLineSplitter(maxLineBytes);
    this.closed = this.settled.promise;
    // Awaited by connect() only while the handshake runs; a later rejection is nobody's business.
    this.handshake.promise.catch(() => undefined);
    if (options.onEvent) this.listeners.add({ name: null, fn: options.onEvent });
    this.socket =
      address.kind === 'unix'
        ? createConnection({ path: address.path })
        : createConnection({ host: address.host, port: address.port, noDelay: true });
    this.socket.on('connect', () => {
      this.socketConnected = true;
    });
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.on('end', () => this.terminate({ kind: 'peer-closed' }));
    this.socket.on('error', (e) => this.onSocketError(e));
    this.socket.on('close', () => {
      this.terminate({ kind: 'peer-closed' });
      this.phase = 'closed';
      this.settled.resolve(this.closeReason ?? { kind: 'peer-closed' });
    });
  }

  /**
   * Connects, reads the greeting and negotiates capabilities; resolves with a
   * client ready for commands. Rejects with QmpAddressError (a bad address),
   * QmpConnectionError (UNREACHABLE, TIMEOUT, or CLOSED when the peer hung
   * up during the handshake) or QmpProtocolError (the peer is not QMP).
   */
  static async connect(address: string | QmpAddress, options: QmpClientOptions = {}): Promise<QmpClient> {
    const target = typeof address === 'string' ? parseQmpAddress(address) : address;
    const timeoutMs = checkTimeout(options.connectTimeoutMs ?? 10_000, 'connectTimeoutMs');
    const client = new QmpClient(target, options);
    const timer = setTimeout(() => client.handshakeTimedOut(timeoutMs), timeoutMs);
    try {
      await client.handshake.promise;
    } finally {
      clearTimeout(timer);
    }
    return client;
  }

  /** The server's greeting: its version and capabilities. */
  get greeting(): QmpGreeting {
    if (!this.greetingInfo) throw new Error('QmpClient: no greeting before connect() resolves');
    return this.greetingInfo;
  }

  get state(): QmpClientState {
    return this.phase;
  }

  /** Commands sent and not yet answered (timed-out ones not counted). */
  get commandsInFlight(): number {
    return this.pending.size;
  }

  /**
   * Runs one command and resolves with its `return`. Rejects with
   * QmpCommandError (QEMU refused it), QmpTimeoutError (no answer in time;
   * the connection stays usable), QmpConnectionError (the connection is
   * closed, or closed before the answer came), or a TypeError or RangeError
   * for arguments that cannot be sent. Commands run in the order sent.
   * `quit` resolves when QEMU hangs up, whether or not its reply came first.
   */
  execute<C extends QmpCommandName>(
    command: C,
    args?: QmpCommandMap[C]['args'],
    options?: QmpExecuteOptions,
  ): Promise<QmpCommandMap[C]['return']>;
  // Any other command. Inferred from a name the map knows, C makes the command
  // `never`, so that such a call is checked against the map and cannot slip
  // through here with wrong arguments; naming T (C then defaults to string)
  // is the caller's word and is taken for any command.
  execute<T = unknown, C extends string = string>(
    command: C extends QmpCommandName ? never : C,
    args?: QmpArguments,
    options?: QmpExecuteOptions,
  ): Promise<T>;
  execute(command: string, args?: QmpArguments, options: QmpExecuteOptions = {}): Promise<unknown> {
    if (this.phase !== 'ready') {
      return Promise.reject(
        new QmpConnectionError('CLOSED', this.label, `${command}: the connection to ${this.label} is ${this.phase}`),
      );
    }
    try {
      if (typeof command !== 'string' || command === '')
        throw new TypeError('a QMP command name must be a non-empty string');
      if (args !== undefined && (typeof args !== 'object' || args === null || Array.isArray(args))) {
        throw new TypeError(`${command}: arguments must be a JSON object`);
      }
      if (args !== undefined && jsonDepth(args, QMP_MAX_ARGUMENT_DEPTH) > QMP_MAX_ARGUMENT_DEPTH) {
        throw new RangeError(`${command}: arguments nest deeper than QEMU accepts (${QMP_MAX_ARGUMENT_DEPTH} levels)`);
      }
      const timeoutMs = checkTimeout(options.timeoutMs ?? this.commandTimeoutMs, 'timeoutMs');
      return this.send(command, args, timeoutMs);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Calls the listener with every event, or with every event of one name.
   * Returns a function that removes it. Events are delivered in the order
   * QEMU sent them, interleaved with replies as they were on the wire: an
   * event QEMU sends before a command's reply (STOP before `stop` returns)
   * reaches listeners before that command's promise settles.
   */
  onEvent(listener: QmpEventListener): () => void;
  onEvent<Name extends QmpKnownEventName>(name: Name, listener: (event: QmpEvent<Name>) => void): () => void;
  onEvent(name: string, listener: QmpEventListener): () => void;
  onEvent(nameOrListener: string | QmpEventListener, listener?: (event: QmpEvent<never>) => void): () => void {
    const entry =
      typeof nameOrListener === 'function'
        ? { name: null, fn: nameOrListener }
        : { name: nameOrListener, fn: listener as QmpEventListener };
    if (typeof entry.fn !== 'function') throw new TypeError('onEvent needs a listener function');
    this.listeners.add(entry);
    return () => {
      this.listeners.delete(entry);
    };
  }

  /**
   * Closes gracefully: no new command is accepted, the ones in flight get
   * their answers (or time out), then the socket is closed. Resolves with the
   * reason the connection ended, which is an earlier one if it had already.
   */
  close(): Promise<QmpCloseReason> {
    if (this.phase === 'ready') {
      this.phase = 'closing';
      if (this.pending.size === 0) this.terminate({ kind: 'client-closed' });
    }
    return this.closed;
  }

  /** Closes at once; commands in flight are rejected with QmpConnectionError. */
  destroy(): void {
    this.terminate({ kind: 'client-closed' });
  }

  // ------------------------------------------------------------ internals

  private send(command: string, args: QmpArguments | undefined, timeoutMs: number | null): Promise<unknown> {
    const id = this.nextId++;
    const message: QmpCommandMessage =
      args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
    // Serialised before anything is registered, so that arguments JSON cannot
    // express (a BigInt, a cycle) fail this command alone.
    const line = `${JSON.stringify(message)}\r\n`;
    return new Promise<unknown>((resolve, reject) => {
      const entry: PendingCommand = { command, resolve, reject, timer: null };
      if (timeoutMs !== null) entry.timer = setTimeout(() => this.expire(id, timeoutMs), timeoutMs);
      this.pending.set(id, entry);
      this.socket.write(line);
    });
  }

  private expire(id: number, timeoutMs: number): void {
    const entry = this.pending.get(id);
    if (!entry) return;
    this.pending.delete(id);
    this.abandoned.add(id);
    entry.reject(new QmpTimeoutError(entry.command, timeoutMs, this.label));
    this.afterSettle();
  }

  /** A graceful close waits for the last command in flight. */
  private afterSettle(): void {
    if (this.phase === 'closing' && this.pending.size === 0) this.terminate({ kind: 'client-closed' });
  }

  private onData(chunk: Buffer): void {
    if (this.closeReason) return;
    try {
      for (const line of this.splitter.push(chunk)) {
        const message = parseQmpMessage(line);
        if (message) this.dispatch(message, line);
        // A listener may have closed the client; the rest of the chunk is not read.
        if (this.closeReason) return;
      }
    } catch (e) {
      if (e instanceof QmpProtocolError) {
        this.terminate({ kind: 'protocol-error', error: e });
      } else {
        // Every other failure in here is ours, not the peer's; the connection
        // cannot be trusted past it either way.
        const error = new QmpProtocolError(`reading from ${this.label} failed: ${(e as Error).message}`);
        this.terminate({ kind: 'protocol-error', error });
      }
    }
  }

  private dispatch(message: QmpMessage, line: Buffer): void {
    if (this.phase === 'connecting') {
      if (message.kind !== 'greeting')
        throw new QmpProtocolError('expected the QMP greeting', excerptOf(line.toString()));
      this.greetingInfo = message.greeting;
      this.phase = 'negotiating';
      // Under the connect timeout only: a handshake has one deadline, not two.
      this.send('qmp_capabilities', undefined, null).then(
        () => {
          if (this.phase !== 'negotiating') return;
          this.phase = 'ready';
          this.handshake.resolve();
        },
        (e: unknown) => {
          // A connection failure has already rejected the handshake with its reason.
          if (e instanceof QmpCommandError) {
            this.terminate({
              kind: 'protocol-error',
              error: new QmpProtocolError(`the peer refused capabilities negotiation (${e.errorClass}: ${e.desc})`),
            });
          }
        },
      );
      return;
    }
    switch (message.kind) {
      case 'greeting':
        throw new QmpProtocolError('a second greeting', excerptOf(line.toString()));
      case 'event':
        this.emit(message.event);
        return;
      case 'return':
      case 'error':
        this.settle(message, line);
        return;
    }
  }

  private settle(message: Extract<QmpMessage, { kind: 'return' | 'error' }>, line: Buffer): void {
    const id = message.id;
    if (typeof id !== 'number') {
      // This client numbers every command; a reply without a number answers
      // none of them. (QEMU sends an id-less error when it cannot read a
      // command at all; whatever caused it, commands and replies no longer pair.)
      throw new QmpProtocolError('a reply that carries no id of this client', excerptOf(line.toString()));
    }
    const entry = this.pending.get(id);
    if (!entry) {
      if (this.abandoned.delete(id)) return; // the late answer to a command that timed out
      throw new QmpProtocolError(`a reply to id ${id}, which no command is waiting for`, excerptOf(line.toString()));
    }
    this.pending.delete(id);
    if (entry.timer) clearTimeout(entry.timer);
    if (message.kind === 'return') entry.resolve(message.value);
    else entry.reject(new QmpCommandError(entry.command, message.error.class, message.error.desc));
    this.afterSettle();
  }

  private emit(event: QmpEvent): void {
    for (const { name, fn } of [...this.listeners]) {
      if (name !== null && name !== event.event) continue;
      try {
        fn(event);
      } catch (e) {
        this.reportListenerError(e, event);
      }
    }
  }

  private reportListenerError(error: unknown, event: QmpEvent): void {
    const report = this.options.onListenerError;
    if (report) {
      try {
        report(error, event);
      } catch {
        // A failing error reporter is not worth the connection.
      }
      return;
    }
    process.emitWarning(`a QMP event listener threw on ${event.event}: ${String(error)}`, 'QmpListenerWarning');
  }

  private onSocketError(e: NodeJS.ErrnoException): void {
    const code = e.code ?? '';
    if (this.phase === 'ready' || this.phase === 'closing') {
      if (PEER_GONE_CODES.has(code)) {
        this.terminate({ kind: 'peer-closed' });
      } else {
        const error = new QmpConnectionError(
          'CLOSED',
          this.label,
          `the connection to ${this.label} failed: ${e.message}`,
          {
            cause: e,
          },
        );
        this.terminate({ kind: 'connection-error', error });
      }
      return;
    }
    this.terminate({ kind: 'connection-error', error: this.connectError(e) });
  }

  /** A failure before the handshake finished, worded for the person who wrote the address. */
  private connectError(e: NodeJS.ErrnoException): QmpConnectionError {
    const code = e.code ?? 'error';
    const where = this.address.kind === 'unix' ? this.address.path : `${this.address.host}:${this.address.port}`;
    if (this.socketConnected) {
      return new QmpConnectionError(
        'CLOSED',
        this.label,
        `${this.label} failed during the QMP handshake: ${e.message}`,
        {
          cause: e,
        },
      );
    }
    let why: string;
    switch (code) {
      case 'ENOENT':
        why = `no socket at ${where} (ENOENT): is QEMU running with -qmp unix:${where},server=on?`;
        break;
      case 'ECONNREFUSED':
        why =
          this.address.kind === 'unix'
            ? `nothing listens on ${where} (ECONNREFUSED): the socket file of a QEMU that has exited?`
            : `nothing listens on ${where} (ECONNREFUSED)`;
        break;
      case 'EACCES':
        why = `no permission to connect to ${where} (EACCES)`;
        break;
      case 'ENOTFOUND':
      case 'EAI_AGAIN':
        why = `the host ${this.address.kind === 'tcp' ? this.address.host : where} cannot be resolved (${code})`;
        break;
      default:
        why = `cannot connect to ${where}: ${e.message}`;
    }
    return new QmpConnectionError('UNREACHABLE', this.label, why, { cause: e });
  }

  private handshakeTimedOut(timeoutMs: number): void {
    if (this.phase !== 'connecting' && this.phase !== 'negotiating') return;
    const what = !this.socketConnected
      ? `could not connect within ${timeoutMs} ms`
      : this.phase === 'connecting'
        ? // QEMU accepts a second client on a QMP socket but greets it only
          // once the first has gone, so this is the usual cause.
          `accepted the connection but sent no QMP greeting within ${timeoutMs} ms (is another client connected to this monitor?)`
        : `did not complete capabilities negotiation within ${timeoutMs} ms`;
    this.terminate({
      kind: 'connection-error',
      error: new QmpConnectionError('TIMEOUT', this.label, `${this.label} ${what}`),
    });
  }

  /**
   * Ends the connection for the first reason given (later ones are
   * ignored): rejects every command in flight and a handshake in progress,
   * and closes the socket. `closed` resolves when the socket has closed.
   */
  private terminate(reason: QmpCloseReason): void {
    if (this.closeReason) return;
    this.closeReason = reason;
    if (this.phase !== 'closed') this.phase = 'closing';
    const cause = 'error' in reason ? reason.error : undefined;
    const why = describeReason(reason);
    for (const [id, entry] of this.pending) {
      this.pending.delete(id);
      if (entry.timer) clearTimeout(entry.timer);
      // QEMU 7.2 emits SHUTDOWN and exits, but does not always write the
      // reply to `quit` first (over TCP, about every other time here): the
      // peer hanging up is the outcome quit asked for.
      if (entry.command === 'quit' && reason.kind === 'peer-closed') {
        entry.resolve({});
        continue;
      }
      entry.reject(
        new QmpConnectionError('CLOSED', this.label, `${entry.command}: no answer from ${this.label}: ${why}`, {
          cause,
        }),
      );
    }
    this.abandoned.clear();
    this.handshake.reject(
      cause ??
        new QmpConnectionError(
          'CLOSED',
          this.label,
          `${this.label} closed the connection during the QMP handshake (${why})`,
        ),
    );
    this.socket.destroy();
  }
}

function describeReason(reason: QmpCloseReason): string {
  switch (reason.kind) {
    case 'client-closed':
      return 'the client closed the connection';
    case 'peer-closed':
      return 'the peer closed the connection';
    case 'connection-error':
    case 'protocol-error':
      return reason.error.message;
  }
}

function checkTimeout(ms: number, name: string): number {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms <= 0 || ms > 2_147_483_647) {
    throw new RangeError(`${name} must be a number of milliseconds from 1 to 2147483647, not ${String(ms)}`);
  }
  return ms;
}

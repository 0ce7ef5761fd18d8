import type { UpstreamErrorDescription } from '../../model/errors.js';

// QMP as it travels (QEMU's docs/interop/qmp-spec.txt): the server sends one
// JSON object per line, ended by CR LF: first a greeting, then replies (each
// carrying the `id` of its command) and asynchronous events in any order.
// This file holds what is true of the wire whoever speaks it: the message
// shapes, how a line becomes a message, the replies and events the provider
// reads, and the errors. client.ts holds the connection.
//
// Reply and event shapes are QEMU 7.2's, read from `query-qmp-schema` of
// Debian 12's qemu-system-x86_64. The client checks only the envelope of a
// message (greeting, return, error or event); what is inside `return` and
// `data` is QEMU's word and is not checked field by field.

/** An enum QEMU may extend: the values known today, and any other string from a newer QEMU. */
export type QmpOpenEnum<Known extends string> = Known | (string & Record<never, never>);

/** A value as JSON carries it. */
export type QmpJson = null | boolean | number | string | QmpJson[] | { [key: string]: QmpJson };

/** The arguments of a command: a JSON object. */
export type QmpArguments = Readonly<Record<string, unknown>>;

/**
 * How deep the arguments of a command may nest, the arguments object itself
 * counting as 1. QEMU's JSON parser refuses more than 1024 levels in a whole
 * command (whose outer object is one), and answers that with errors that
 * carry no `id` (one per leftover token), which no client can match to its
 * command; the client refuses such arguments before sending them instead.
 */
export const QMP_MAX_ARGUMENT_DEPTH = 1023;

// ---------------------------------------------------------------- the wire

export interface QmpVersion {
  qemu: { major: number; minor: number; micro: number };
  /** The distribution's build, e.g. `Debian 1:7.2+dfsg-7+deb12u18+b3`. */
  package: string;
}

/** The first line the server sends: `{"QMP": {"version": ..., "capabilities": [...]}}`. */
export interface QmpGreeting {
  version: QmpVersion;
  /** Capabilities the server offers (QEMU 7.2: `["oob"]`); this client enables none of them. */
  capabilities: string[];
}

/** What the client sends: one command, with the id its reply will carry. */
export interface QmpCommandMessage {
  execute: string;
  arguments?: QmpArguments;
  id: number;
}

/** An error reply's body: QEMU's error class and its message for people. */
export interface QmpErrorBody {
  class: QmpErrorClass;
  desc: string;
}

/**
 * The error classes QEMU uses (qapi/error.json). Nearly every failure is a
 * GenericError; the others survive for compatibility.
 */
export type QmpErrorClass = QmpOpenEnum<
  'GenericError' | 'CommandNotFound' | 'DeviceNotActive' | 'DeviceNotFound' | 'KVMMissingCap'
>;

/** One message from the server, classified. */
export type QmpMessage =
  | { kind: 'greeting'; greeting: QmpGreeting }
  /** `id` is whatever the server sent back (undefined when it sent none). */
  | { kind: 'return'; id: unknown; value: unknown }
  | { kind: 'error'; id: unknown; error: QmpErrorBody }
  | { kind: 'event'; event: QmpEvent };

// ---------------------------------------------------------------- replies

export type QmpRunState = QmpOpenEnum<
  | 'debug'
  | 'inmigrate'
  | 'internal-error'
  | 'io-error'
  | 'paused'
  | 'postmigrate'
  | 'prelaunch'
  | 'finish-migrate'
  | 'restore-vm'
  | 'running'
  | 'save-vm'
  | 'shutdown'
  | 'suspended'
  | 'watchdog'
  | 'guest-panicked'
  | 'colo'
>;

/** `query-status`. */
export interface QmpStatusInfo {
  /** True while the vCPUs run: `status` is `running` (or `debug`/`colo` in a few cases). */
  running: boolean;
  status: QmpRunState;
  /** Sent by QEMU 7.2; newer QEMUs deprecate it and may leave it out. */
  singlestep?: boolean;
}

/** `query-name`: `name` is absent when QEMU was started without `-name`. */
export interface QmpNameInfo {
  name?: string;
}

/** `query-uuid`: all zeros when QEMU was started without `-uuid`. */
export interface QmpUuidInfo {
  UUID: string;
}

/** Where a vCPU sits in the topology (`props` of query-cpus-fast); only what the machine defines is present. */
export interface QmpCpuInstanceProperties {
  'node-id'?: number;
  'socket-id'?: number;
  'die-id'?: number;
  'cluster-id'?: number;
  'core-id'?: number;
  'thread-id'?: number;
}

/** One vCPU of `query-cpus-fast` (an empty list under `-machine none`, which has no CPU on x86). */
export interface QmpCpuInfoFast {
  'cpu-index': number;
  'qom-path': string;
  /** The host thread (TID) that runs this vCPU. */
  'thread-id': number;
  props?: QmpCpuInstanceProperties;
  /** The emulated architecture: `x86_64`, `aarch64`, `s390x`, ... */
  target: string;
  /** s390x only. */
  'cpu-state'?: QmpOpenEnum<'uninitialized' | 'stopped' | 'check-stop' | 'operating' | 'load'>;
}

/** `query-memory-size-summary`, in bytes. */
export interface QmpMemorySizeSummary {
  /** Memory given at start (`-m`). */
  'base-memory': number;
  /** Memory hot-plugged since (DIMMs, virtio-mem); absent when the machine cannot hot-plug memory. */
  'plugged-memory'?: number;
}

/** An image as `query-block` describes it (`ImageInfo`; the format's own details left untyped). */
export interface QmpImageInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'cluster-size'?: number;
  'dirty-flag'?: boolean;
  encrypted?: boolean;
  compressed?: boolean;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  snapshots?: QmpSnapshotInfo[];
  'backing-image'?: QmpImageInfo;
  /** qcow2, vmdk, luks, rbd: `{ type, data }`. */
  'format-specific'?: { type: string; data: Readonly<Record<string, unknown>> };
}

/** An internal snapshot of an image. */
export interface QmpSnapshotInfo {
  id: string;
  name: string;
  'vm-state-size': number;
  'date-sec': number;
  'date-nsec': number;
  'vm-clock-sec': number;
  'vm-clock-nsec': number;
  icount?: number;
}

export interface QmpBlockDirtyInfo {
  name?: string;
  count: number;
  granularity: number;
  recording: boolean;
  busy: boolean;
  persistent: boolean;
  inconsistent?: boolean;
}

/** The medium in a drive (`BlockDeviceInfo`), with its I/O limits (0 = unlimited). */
export interface QmpBlockDeviceInfo {
  file: string;
  'node-name'?: string;
  ro: boolean;
  drv: string;
  backing_file?: string;
  backing_file_depth: number;
  encrypted: boolean;
  detect_zeroes: QmpOpenEnum<'off' | 'on' | 'unmap'>;
  bps: number;
  bps_rd: number;
  bps_wr: number;
  iops: number;
  iops_rd: number;
  iops_wr: number;
  bps_max?: number;
  bps_rd_max?: number;
  bps_wr_max?: number;
  iops_max?: number;
  iops_rd_max?: number;
  iops_wr_max?: number;
  bps_max_length?: number;
  bps_rd_max_length?: number;
  bps_wr_max_length?: number;
  iops_max_length?: number;
  iops_rd_max_length?: number;
  iops_wr_max_length?: number;
  iops_size?: number;
  group?: string;
  image: QmpImageInfo;
  cache: { writeback: boolean; direct: boolean; 'no-flush': boolean };
  write_threshold: number;
  'dirty-bitmaps'?: QmpBlockDirtyInfo[];
}

/** One drive of `query-block` (a named BlockBackend), with its medium when one is inserted. */
export interface QmpBlockInfo {
  /** The drive's id (`-drive id=`); empty for drives created with -blockdev and a device. */
  device: string;
  /** The QOM path or id of the guest device that uses the drive. */
  qdev?: string;
  /** Always `unknown` (kept for compatibility). */
  type: string;
  removable: boolean;
  locked: boolean;
  inserted?: QmpBlockDeviceInfo;
  tray_open?: boolean;
  'io-status'?: QmpOpenEnum<'ok' | 'failed' | 'nospace'>;
}

/** I/O counters of a drive or node since it was opened (`BlockDeviceStats`; times in nanoseconds). */
export interface QmpBlockDeviceStats {
  rd_bytes: number;
  wr_bytes: number;
  unmap_bytes: number;
  rd_operations: number;
  wr_operations: number;
  flush_operations: number;
  unmap_operations: number;
  rd_total_time_ns: number;
  wr_total_time_ns: number;
  flush_total_time_ns: number;
  unmap_total_time_ns: number;
  wr_highest_offset: number;
  rd_merged: number;
  wr_merged: number;
  unmap_merged: number;
  idle_time_ns?: number;
  failed_rd_operations: number;
  failed_wr_operations: number;
  failed_flush_operations: number;
  failed_unmap_operations: number;
  invalid_rd_operations: number;
  invalid_wr_operations: number;
  invalid_flush_operations: number;
  invalid_unmap_operations: number;
  account_invalid: boolean;
  account_failed: boolean;
  /** Latency windows configured with `stats-intervals`; empty otherwise. */
  timed_stats: Readonly<Record<string, number>>[];
  rd_latency_histogram?: { boundaries: number[]; bins: number[] };
  wr_latency_histogram?: { boundaries: number[]; bins: number[] };
  flush_latency_histogram?: { boundaries: number[]; bins: number[] };
}

/** One entry of `query-blockstats`: a drive (or, with `query-nodes`, a node) and the nodes below it. */
export interface QmpBlockStats {
  device?: string;
  qdev?: string;
  'node-name'?: string;
  stats: QmpBlockDeviceStats;
  /** file, host_device, nvme: `{ driver, ... }` counters of that driver. */
  'driver-specific'?: { driver: string } & Readonly<Record<string, unknown>>;
  parent?: QmpBlockStats;
  backing?: QmpBlockStats;
}

/** An empty reply (`{}`): stop, cont, quit, system_powerdown, ... */
export type QmpEmptyReturn = Readonly<Record<string, never>>;

/** `query-target`: the emulated architecture. */
export interface QmpTargetInfo {
  arch: string;
}

/** One job of `query-jobs`, as long as it has not been dismissed. */
export interface QmpJobInfo {
  id: string;
  type: QmpOpenEnum<'snapshot-save' | 'snapshot-load' | 'snapshot-delete' | 'create' | 'backup' | 'commit' | 'mirror'>;
  status: QmpJobStatus;
  'current-progress': number;
  'total-progress': number;
  /** Why it failed (or was cancelled); absent for a job that succeeded or has not ended. */
  error?: string;
}

/** The arguments of `snapshot-save` and `snapshot-load` (QEMU 6.0+): a job over the given block nodes. */
export interface QmpSnapshotJobArgs {
  'job-id': string;
  /** The snapshot's name in every image (its tag). */
  tag: string;
  /** The node that holds (or holds) the VM's memory and device state. */
  vmstate: string;
  /** Every node to snapshot or revert, by node name. */
  devices: string[];
}

/** One action of `transaction`; the provider uses internal disk snapshots only. */
export type QmpTransactionAction = {
  type: 'blockdev-snapshot-internal-sync';
  /** `device` is a drive's id or a node name. */
  data: { device: string; name: string };
};

/**
 * The commands the provider uses, with their arguments and replies. execute()
 * infers the reply type from this map; any other command is typed by the
 * caller (`execute<T>('query-foo')`).
 */
export interface QmpCommandMap {
  qmp_capabilities: { args: { enable?: string[] }; return: QmpEmptyReturn };
  'query-status': { args: QmpEmptyReturn; return: QmpStatusInfo };
  'query-name': { args: QmpEmptyReturn; return: QmpNameInfo };
  'query-uuid': { args: QmpEmptyReturn; return: QmpUuidInfo };
  'query-cpus-fast': { args: QmpEmptyReturn; return: QmpCpuInfoFast[] };
  'query-memory-size-summary': { args: QmpEmptyReturn; return: QmpMemorySizeSummary };
  'query-block': { args: QmpEmptyReturn; return: QmpBlockInfo[] };
  /** `query-nodes`: list every named node instead of every drive. */
  'query-blockstats': { args: { 'query-nodes'?: boolean }; return: QmpBlockStats[] };
  stop: { args: QmpEmptyReturn; return: QmpEmptyReturn };
  cont: { args: QmpEmptyReturn; return: QmpEmptyReturn };
  system_powerdown: { args: QmpEmptyReturn; return: QmpEmptyReturn };
  system_reset: { args: QmpEmptyReturn; return: QmpEmptyReturn };
  quit: { args: QmpEmptyReturn; return: QmpEmptyReturn };
  'query-target': { args: QmpEmptyReturn; return: QmpTargetInfo };
  /** Reads a QOM property (`/machine` `type`: the machine type, `pc-i440fx-7.2-machine`). */
  'qom-get': { args: { path: string; property: string }; return: QmpJson };
  'query-jobs': { args: QmpEmptyReturn; return: QmpJobInfo[] };
  'job-dismiss': { args: { id: string }; return: QmpEmptyReturn };
  /** Saves the VM's memory and device state and an internal snapshot of each device, as a job. */
  'snapshot-save': { args: QmpSnapshotJobArgs; return: QmpEmptyReturn };
  /** Reverts the devices and loads the VM state saved with them, as a job; the VM is stopped meanwhile. */
  'snapshot-load': { args: QmpSnapshotJobArgs; return: QmpEmptyReturn };
  'snapshot-delete': { args: Omit<QmpSnapshotJobArgs, 'vmstate'>; return: QmpEmptyReturn };
  /** Several actions that all happen or none does. */
  transaction: { args: { actions: QmpTransactionAction[] }; return: QmpEmptyReturn };
}
export type QmpCommandName = keyof QmpCommandMap;

// ---------------------------------------------------------------- events

/** Why the machine shut down or reset (`ShutdownCause`). */
export type QmpShutdownCause = QmpOpenEnum<
  | 'none'
  | 'host-error'
  | 'host-qmp-quit'
  | 'host-qmp-system-reset'
  | 'host-signal'
  | 'host-ui'
  | 'guest-shutdown'
  | 'guest-reset'
  | 'guest-panic'
  | 'subsystem-reset'
  | 'snapshot-load'
>;

/** A background job's state (`JobStatus`); `null` is the state of a job that is gone. */
export type QmpJobStatus = QmpOpenEnum<
  | 'undefined'
  | 'created'
  | 'running'
  | 'paused'
  | 'ready'
  | 'standby'
  | 'waiting'
  | 'pending'
  | 'aborting'
  | 'concluded'
  | 'null'
>;

/** The data of the events the provider follows. Events without data get `{}`. */
export interface QmpEventDataMap {
  /** The vCPUs stopped (stop, an I/O error, a breakpoint, migration). */
  STOP: Readonly<Record<string, never>>;
  /** The vCPUs run again. */
  RESUME: Readonly<Record<string, never>>;
  /** The machine shut down; QEMU exits unless started with `-no-shutdown`. */
  SHUTDOWN: { guest: boolean; reason: QmpShutdownCause };
  RESET: { guest: boolean; reason: QmpShutdownCause };
  /** An ACPI power-button press was sent to the guest (system_powerdown); the guest may ignore it. */
  POWERDOWN: Readonly<Record<string, never>>;
  JOB_STATUS_CHANGE: { id: string; status: QmpJobStatus };
}
export type QmpKnownEventName = keyof QmpEventDataMap;

/** An asynchronous event. `data` is typed for the events in QmpEventDataMap. */
export interface QmpEvent<Name extends string = string> {
  event: Name;
  data: Name extends QmpKnownEventName ? QmpEventDataMap[Name] : Readonly<Record<string, unknown>>;
  /** When QEMU emitted it (its wall clock, to the millisecond; QEMU sends microseconds). */
  timestamp: Date;
}

/** Narrows an event to one name, typing its data. */
export function isQmpEvent<Name extends QmpKnownEventName>(e: QmpEvent, name: Name): e is QmpEvent<Name> {
  return e.event === name;
}

// ---------------------------------------------------------------- errors

/** QEMU refused a command: its error class and message. The connection stays usable. */
export class QmpCommandError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: QmpErrorClass,
    readonly desc: string,
  ) {
    super(`${command}: ${errorClass}: ${desc}`);
    this.name = 'QmpCommandError';
  }

  is(errorClass: QmpErrorClass): boolean {
    return this.errorClass === errorClass;
  }
}

/** A command got no answer in time. The connection stays usable; a late answer is dropped. */
export class QmpTimeoutError extends Error {
  constructor(
    readonly command: string,
    readonly timeoutMs: number,
    address: string,
  ) {
    super(`${command}: no answer from ${address} within ${timeoutMs} ms`);
    this.name = 'QmpTimeoutError';
  }
}

export type QmpConnectionFailure =
  /** Nothing to connect to: no socket file, refused, unknown host. */
  | 'UNREACHABLE'
  /** The connection or the QMP handshake did not finish within the connect timeout. */
  | 'TIMEOUT'
  /** The connection ended (or failed) before the command, or the handshake, got its answer. */
  | 'CLOSED';

/** The connection could not be made, or ended under a command in flight. */
export class QmpConnectionError extends Error {
  constructor(
    readonly failure: QmpConnectionFailure,
    /** The address as formatQmpAddress writes it. */
    readonly address: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'QmpConnectionError';
  }
}

/** The peer sent something that is not QMP; the client closed the connection. */
export class QmpProtocolError extends Error {
  constructor(
    message: string,
    /** The start of the offending line, when a line was at fault. */
    readonly excerpt: string | null = null,
  ) {
    super(excerpt === null ? message : `${message}: ${excerpt}`);
    this.name = 'QmpProtocolError';
  }
}

/** An address that is neither a unix socket path nor tcp://host:port. */
export class QmpAddressError extends Error {
  constructor(
    readonly input: string,
    reason: string,
  ) {
    super(`Invalid QMP address ${JSON.stringify(input)}: ${reason}`);
    this.name = 'QmpAddressError';
  }
}

/** Failures that mean the QEMU process is gone or cannot be reached, as opposed to one command failing. */
export function isQmpConnectionFailure(e: unknown): boolean {
  return e instanceof QmpConnectionError || e instanceof QmpProtocolError;
}

/** A QMP error as clients see it: QEMU's class and message, or the kind of connection failure. */
export function describeQmpError(e: unknown): UpstreamErrorDescription | null {
  if (e instanceof QmpCommandError) return { message: `QEMU: ${e.desc}`, extensions: { qmpClass: e.errorClass } };
  if (e instanceof QmpTimeoutError) return { message: `QEMU: ${e.message}`, extensions: { transport: 'TIMEOUT' } };
  if (e instanceof QmpConnectionError) return { message: `QEMU: ${e.message}`, extensions: { transport: e.failure } };
  if (e instanceof QmpProtocolError) return { message: `QEMU: ${e.message}`, extensions: { transport: 'PROTOCOL' } };
  return null;
}

// ---------------------------------------------------------------- framing

/**
 * Cuts the byte stream into lines. Lines are kept as bytes until complete, so
 * a UTF-8 character split across two chunks is decoded whole. A line longer
 * than the cap is refused as soon as it passes the cap, not when (if ever) it
 * ends, so a peer that streams without newlines cannot grow memory.
 */
export class QmpLineSplitter {
  private parts: Buffer[] = [];
  private partBytes = 0;

  constructor(private readonly maxLineBytes: number) {}

  /** The lines this chunk completes, without their line ending. Throws QmpProtocolError past the cap. */
  push(chunk: Buffer): Buffer[] {
    const lines: Buffer[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(0x0a); nl !== -1; nl = chunk.indexOf(0x0a, start)) {
      const piece = chunk.subarray(start, nl);
      this.checkSize(this.partBytes + piece.length);
      const line = this.parts.length === 0 ? piece : Buffer.concat([...this.parts, piece]);
      this.parts = [];
      this.partBytes = 0;
      lines.push(line.length > 0 && line[line.length - 1] === 0x0d ? line.subarray(0, -1) : line);
      start = nl + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.checkSize(this.partBytes + rest.length);
      this.parts.push(rest);
      this.partBytes += rest.length;
    }
    return lines;
  }

  /** Bytes of a line begun and not yet ended. */
  get pendingBytes(): number {
    return this.partBytes;
  }

  private checkSize(bytes: number): void {
    if (bytes > this.maxLineBytes) {
      throw new QmpProtocolError(`a line longer than ${this.maxLineBytes} bytes (the peer sends no line ends?)`);
    }
  }
}

// ---------------------------------------------------------------- parsing

type JsonObject = Record<string, unknown>;

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const EXCERPT_CHARS = 200;

/** The start of a line, quoted, for an error message: control characters and all, shown, never interpreted. */
export function excerptOf(text: string): string {
  return JSON.stringify(text.length > EXCERPT_CHARS ? `${text.slice(0, EXCERPT_CHARS)}…` : text);
}

const MESSAGE_KEYS = ['QMP', 'return', 'error', 'event'] as const;

/**
 * One line from the server as a message, or null for a blank line. Anything
 * that is not one JSON object with exactly one of `QMP`, `return`, `error`
 * or `event`, shaped as the spec says, is a QmpProtocolError.
 */
export function parseQmpMessage(line: Buffer | string): QmpMessage | null {
  const text = typeof line === 'string' ? line : line.toString('utf8');
  if (text.trim() === '') return null;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new QmpProtocolError('a line that is not JSON', excerptOf(text));
  }
  if (!isObject(value)) throw new QmpProtocolError('a line that is not a JSON object', excerptOf(text));
  const keys = MESSAGE_KEYS.filter((k) => Object.hasOwn(value, k));
  if (keys.length !== 1) {
    throw new QmpProtocolError('a message that is neither a greeting, a reply nor an event', excerptOf(text));
  }
  const bad = (what: string) => new QmpProtocolError(what, excerptOf(text));
  switch (keys[0]) {
    case 'QMP': {
      const greeting = greetingOf(value['QMP']);
      if (!greeting) throw bad('a malformed QMP greeting');
      return { kind: 'greeting', greeting };
    }
    case 'return':
      return { kind: 'return', id: value['id'], value: value['return'] };
    case 'error': {
      const body = value['error'];
      if (!isObject(body) || typeof body['class'] !== 'string' || typeof body['desc'] !== 'string') {
        throw bad('an error reply without a class and a description');
      }
      return { kind: 'error', id: value['id'], error: { class: body['class'], desc: body['desc'] } };
    }
    case 'event': {
      const event = eventOf(value);
      if (!event) throw bad('a malformed event');
      return { kind: 'event', event };
    }
    default:
      throw bad('a message of no known kind');
  }
}

function greetingOf(v: unknown): QmpGreeting | null {
  if (!isObject(v) || !isObject(v['version']) || !Array.isArray(v['capabilities'])) return null;
  const { qemu, package: pkg } = v['version'];
  if (!isObject(qemu) || typeof pkg !== 'string') return null;
  const { major, minor, micro } = qemu;
  if (typeof major !== 'number' || typeof minor !== 'number' || typeof micro !== 'number') return null;
  const capabilities = v['capabilities'];
  if (!capabilities.every((c): c is string => typeof c === 'string')) return null;
  return { version: { qemu: { major, minor, micro }, package: pkg }, capabilities };
}

function eventOf(v: JsonObject): QmpEvent | null {
  const { event, data, timestamp } = v;
  if (typeof event !== 'string' || event === '') return null;
  if (data !== undefined && !isObject(data)) return null;
  if (!isObject(timestamp)) return null;
  const { seconds, microseconds } = timestamp;
  if (typeof seconds !== 'number' || typeof microseconds !== 'number') return null;
  return {
    event,
    data: data ?? {},
    timestamp: new Date(seconds * 1000 + Math.floor(microseconds / 1000)),
  };
}

/** How deep a value nests (a scalar is 0, `{}` is 1), counted no further than `limit + 1`. */
export function jsonDepth(value: unknown, limit: number): number {
  if (typeof value !== 'object' || value === null) return 0;
  if (limit < 0) return 1;
  let deepest = 0;
  for (const child of Array.isArray(value) ? value : Object.values(value)) {
    deepest = Math.max(deepest, jsonDepth(child, limit - 1));
    if (deepest > limit) break;
  }
  return deepest + 1;
}

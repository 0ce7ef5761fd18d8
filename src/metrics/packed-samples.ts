import { FIELD_COUNT, type RawPoint, type Rollup } from './rollup.js';

// The binary records of the Redis metrics history (redis-history.ts says
// which keys hold them). Fixed-size records, so that a chunk of them is
// read by offset and a rollup window is written in place. Numbers are
// big-endian; values are Float32, NaN for null: 7 significant digits, as
// the memory store keeps them.

/** A raw sample: its time in its chunk (Uint32 ms), its interval (Float32 s), FIELD_COUNT Float32 values: 48 bytes. */
export const RAW_RECORD_BYTES = 4 + 4 + 4 * FIELD_COUNT;

/**
 * A window's rollup: its sample count (Uint16, whose top bit says that a
 * counts entry holds the count of some field), then FIELD_COUNT Float32
 * averages and FIELD_COUNT Float32 maxima: 82 bytes. A field without values
 * has a NaN average (count 0); any other counts every sample, unless the
 * window's counts entry says otherwise. So the counts, which weigh the
 * averages when windows are re-aggregated and almost always equal the
 * sample count, cost nothing in the windows where they do.
 */
export const ROLLUP_RECORD_BYTES = 2 + 8 * FIELD_COUNT;

/**
 * Windows per rollup chunk: 49, the most whose chunk (49 x 82 bytes, a spare
 * byte, and Redis' 6 bytes of string header) fits a 4 KiB allocation. A
 * chunk is allocated whole with its first window, so 4 KiB is also what the
 * rollups of an object seen only once cost.
 */
export const ROLLUP_CHUNK_WINDOWS = Math.floor((4_096 - 6 - 1) / ROLLUP_RECORD_BYTES);

/** Sample counts (and field counts) above this are kept at it: 1 s samples in windows of more than 9 hours. */
export const MAX_SAMPLES = 0x7fff;
const HAS_COUNTS = 0x8000;

/** A raw sample as stored. */
export interface StoredRaw extends RawPoint {
  intervalSeconds: number;
  values: Float32Array;
}

export function encodeRaw(offsetMs: number, intervalSeconds: number, values: readonly number[]): Buffer {
  const b = Buffer.allocUnsafe(RAW_RECORD_BYTES);
  b.writeUInt32BE(offsetMs, 0);
  b.writeFloatBE(intervalSeconds, 4);
  for (let f = 0; f < FIELD_COUNT; f++) b.writeFloatBE(values[f]!, 8 + 4 * f);
  return b;
}

/** The raw sample at byte `at` of a chunk that starts at `start` (ms). */
export function decodeRawAt(chunk: Buffer, at: number, start: number): StoredRaw {
  const values = new Float32Array(FIELD_COUNT);
  for (let f = 0; f < FIELD_COUNT; f++) values[f] = chunk.readFloatBE(at + 8 + 4 * f);
  return { timestamp: start + chunk.readUInt32BE(at), intervalSeconds: chunk.readFloatBE(at + 4), values };
}

/** Every raw sample of a chunk that starts at `start` (ms), in the order kept (by time). */
export function decodeRawChunk(chunk: Buffer, start: number): StoredRaw[] {
  const out: StoredRaw[] = [];
  for (let at = 0; at + RAW_RECORD_BYTES <= chunk.length; at += RAW_RECORD_BYTES)
    out.push(decodeRawAt(chunk, at, start));
  return out;
}

/**
 * A window's record, and its counts entry when some field's count is
 * neither 0 nor the sample count: the window's slot in its chunk (Uint8),
 * a bit mask of those fields (Uint16, bit f for field f), and their counts
 * (Uint16 each, in field order). Entries are appended; the last of a slot
 * counts.
 */
export function encodeRollup(r: Rollup, slot: number): { record: Buffer; counts: Buffer | null } {
  let mask = 0;
  const partial: number[] = [];
  for (let f = 0; f < FIELD_COUNT; f++) {
    const n = r.count[f]!;
    if (n === 0 || n === r.samples) continue;
    mask |= 1 << f;
    partial.push(Math.min(n, MAX_SAMPLES));
  }
  const record = Buffer.allocUnsafe(ROLLUP_RECORD_BYTES);
  record.writeUInt16BE(Math.min(r.samples, MAX_SAMPLES) | (mask === 0 ? 0 : HAS_COUNTS), 0);
  for (let f = 0; f < FIELD_COUNT; f++) {
    // NaN where a field had no value: that is its count 0.
    record.writeFloatBE(r.count[f] === 0 ? Number.NaN : r.avg[f]!, 2 + 4 * f);
    record.writeFloatBE(r.count[f] === 0 ? Number.NaN : r.max[f]!, 2 + 4 * (FIELD_COUNT + f));
  }
  if (mask === 0) return { record, counts: null };
  const counts = Buffer.allocUnsafe(3 + 2 * partial.length);
  counts.writeUInt8(slot, 0);
  counts.writeUInt16BE(mask, 1);
  partial.forEach((n, i) => counts.writeUInt16BE(n, 3 + 2 * i));
  return { record, counts };
}

/**
 * The windows present in `records` (the records of slots `firstSlot`… of a
 * chunk), oldest first, with the counts from the chunk's counts entries.
 * `endOf(slot)` is the end of the window in that slot.
 */
export function decodeRollups(
  records: Buffer,
  firstSlot: number,
  counts: Buffer | null,
  endOf: (slot: number) => number,
): Rollup[] {
  const entries = counts ? countEntries(counts) : new Map<number, Map<number, number>>();
  const out: Rollup[] = [];
  for (let at = 0; at + ROLLUP_RECORD_BYTES <= records.length; at += ROLLUP_RECORD_BYTES) {
    const head = records.readUInt16BE(at);
    const samples = head & MAX_SAMPLES;
    // Slots no window was written to are zero.
    if (samples === 0) continue;
    const slot = firstSlot + at / ROLLUP_RECORD_BYTES;
    const partial = head & HAS_COUNTS ? entries.get(slot) : undefined;
    const r: Rollup = { end: endOf(slot), samples, avg: [], max: [], count: [] };
    for (let f = 0; f < FIELD_COUNT; f++) {
      const avg = records.readFloatBE(at + 2 + 4 * f);
      r.avg.push(avg);
      r.max.push(records.readFloatBE(at + 2 + 4 * (FIELD_COUNT + f)));
      r.count.push(Number.isNaN(avg) ? 0 : (partial?.get(f) ?? samples));
    }
    out.push(r);
  }
  return out;
}

/** The counts entries of a chunk: slot -> field -> count, the last entry of a slot winning. */
function countEntries(counts: Buffer): Map<number, Map<number, number>> {
  const bySlot = new Map<number, Map<number, number>>();
  let at = 0;
  while (at + 3 <= counts.length) {
    const slot = counts.readUInt8(at);
    const mask = counts.readUInt16BE(at + 1);
    at += 3;
    const fields = new Map<number, number>();
    for (let f = 0; f < FIELD_COUNT; f++) {
      if (!(mask & (1 << f))) continue;
      if (at + 2 > counts.length) return bySlot;
      fields.set(f, counts.readUInt16BE(at));
      at += 2;
    }
    bySlot.set(slot, fields);
  }
  return bySlot;
}

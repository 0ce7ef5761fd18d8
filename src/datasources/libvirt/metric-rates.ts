import { type MetricSample, emptySample } from '../../model/metrics.js';

/**
 * The arithmetic of libvirt metrics, without libvirt: samples made of two
 * readings of an object's counters. libvirt gives counters (CPU time in ns,
 * bytes and requests since the domain started) and gauges (balloon and host
 * memory in KiB); a rate is the difference of a counter between two readings
 * over the time between them.
 */

/** One reading of an object's numeric counters, by libvirt's names, and when it was taken. */
export interface CounterReading {
  /** In whole ms since the epoch: the rates are computed from exactly the timestamps the samples carry. */
  time: number;
  /**
   * What changes when the object's counters start again from zero: the
   * domain's runtime ID (a new one at each start), 0 for a host.
   */
  run: number;
  counters: Readonly<Record<string, number>>;
}

const NS_PER_SECOND = 1e9;
const BYTES_PER_KIB = 1024;

/** Domain counters summed over devices into one rate, and the per-device suffix of each. */
const DEVICE_RATES = {
  diskReadBytesPerSecond: ['block', 'rd.bytes'],
  diskWriteBytesPerSecond: ['block', 'wr.bytes'],
  diskReadIops: ['block', 'rd.reqs'],
  diskWriteIops: ['block', 'wr.reqs'],
  networkRxBytesPerSecond: ['net', 'rx.bytes'],
  networkTxBytesPerSecond: ['net', 'tx.bytes'],
} as const;

/** libvirt's host CPU fields (virNodeGetCPUStats, Linux), read into raw as `cpu.<field>`. */
const HOST_CPU_BUSY = ['cpu.kernel', 'cpu.user', 'cpu.iowait'] as const;
const HOST_CPU_ALL = [...HOST_CPU_BUSY, 'cpu.idle'] as const;

/**
 * The sum of one counter over a domain's devices (`block.N.rd.bytes` for N
 * below `block.count`), or null when the reading lacks the count or a device's
 * counter (libvirt leaves out what a device cannot report).
 */
export function deviceSum(
  counters: Readonly<Record<string, number>>,
  group: 'block' | 'net',
  suffix: string,
): number | null {
  const count = counters[`${group}.count`];
  if (count === undefined) return null;
  let sum = 0;
  for (let i = 0; i < count; i++) {
    const v = counters[`${group}.${i}.${suffix}`];
    if (v === undefined) return null;
    sum += v;
  }
  return sum;
}

/**
 * A function of a reading's counters, computed once per counters object: a
 * reading is compared with several others (reset checks, rates), and at
 * thousands of domains per sampling recomputing the sums is the main cost.
 */
function oncePerReading<T>(fn: (counters: Readonly<Record<string, number>>) => T) {
  const cache = new WeakMap<object, T>();
  return (counters: Readonly<Record<string, number>>): T => {
    let v = cache.get(counters);
    if (v === undefined) cache.set(counters, (v = fn(counters)));
    return v;
  };
}

/** Every counter of a domain that a rate is made of, summed over devices where the rate is: name → value. */
export const domainRateCounters = oncePerReading(domainRateCountersOf);

function domainRateCountersOf(counters: Readonly<Record<string, number>>): Map<string, number> {
  const out = new Map<string, number>();
  const cpu = counters['cpu.time'];
  if (cpu !== undefined) out.set('cpu.time', cpu);
  const ready = vcpuReadySum(counters);
  if (ready !== null) out.set(ready.name, ready.sum);
  for (const [group, suffix] of Object.values(DEVICE_RATES)) {
    const sum = deviceSum(counters, group, suffix);
    if (sum !== null) out.set(`${group}.${suffix}`, sum);
  }
  return out;
}

/** The host's counters that its CPU rate is made of. */
export const hostRateCounters = oncePerReading(hostRateCountersOf);

function hostRateCountersOf(counters: Readonly<Record<string, number>>): Map<string, number> {
  const out = new Map<string, number>();
  for (const f of HOST_CPU_ALL) {
    const v = counters[f];
    if (v !== undefined) out.set(f, v);
  }
  return out;
}

/**
 * Why `previous` cannot be the start of rates ending at `current`, or null
 * when it can: a reading of another run (the domain was restarted), one not
 * older, or a counter that went down (restarted, or a device removed). Rates
 * across any of these would be wrong, and negative ones absurd.
 */
export function resetReason(
  previous: CounterReading,
  current: CounterReading,
  rateCounters: (c: Readonly<Record<string, number>>) => Map<string, number>,
): string | null {
  if (previous.run !== current.run) return 'restarted';
  if (current.time <= previous.time) return 'not newer';
  const before = rateCounters(previous.counters);
  for (const [name, now] of rateCounters(current.counters)) {
    const then = before.get(name);
    if (then !== undefined && now < then) return `${name} went down`;
  }
  return null;
}

/** The difference of one counter between two readings, or null when either lacks it. */
function delta(before: ReadonlyMap<string, number>, after: ReadonlyMap<string, number>, name: string): number | null {
  const a = before.get(name);
  const b = after.get(name);
  return a === undefined || b === undefined ? null : b - a;
}

/**
 * The time the domain's vCPUs were ready to run while the host ran
 * something else, summed over vCPUs: `vcpu.N.delay` (the run-queue wait in
 * the thread's schedstat, which the guest sees as steal time), or where
 * libvirt has no delay, `vcpu.N.wait` (Xen's equivalent; the qemu driver
 * reports it as 0). Null when libvirt reports neither.
 */
function vcpuReadySum(counters: Readonly<Record<string, number>>): { name: string; sum: number } | null {
  const maximum = counters['vcpu.maximum'];
  if (maximum === undefined) return null;
  for (const suffix of ['delay', 'wait']) {
    let sum = 0;
    let seen = 0;
    for (let i = 0; i < maximum; i++) {
      const v = counters[`vcpu.${i}.${suffix}`];
      if (v !== undefined) {
        sum += v;
        seen += 1;
      }
    }
    if (seen > 0) return { name: `vcpu.${suffix}`, sum };
  }
  return null;
}

/**
 * How old the guest's last memory report is, in seconds at `timeMs`; null
 * when it never reported. QEMU stamps `balloon.last-update` with the host's
 * clock when the guest reports; the guest's balloon driver reports once when
 * it loads and then only every stats period, which is unset by default.
 */
export function memoryReportAge(counters: Readonly<Record<string, number>>, timeMs: number): number | null {
  const lastUpdate = counters['balloon.last-update'];
  if (counters['balloon.unused'] === undefined || lastUpdate === undefined || lastUpdate === 0) return null;
  return Math.max(0, timeMs / 1000 - lastUpdate);
}

/**
 * A guest's memory report older than this is not shown as its memory use: a
 * guest whose stats period is unset (a read-only connection cannot set it)
 * keeps the numbers of its boot forever.
 */
export const MEMORY_REPORT_MAX_AGE_SECONDS = 300;

/**
 * A domain's sample: gauges from `current`, rates from `previous` to
 * `current` (null without a previous reading). `fallbackIntervalSeconds` is
 * the sample's interval when it has no rates.
 */
export function domainSample(
  previous: CounterReading | null,
  current: CounterReading,
  fallbackIntervalSeconds: number,
): MetricSample {
  const c = current.counters;
  const seconds = previous ? (current.time - previous.time) / 1000 : fallbackIntervalSeconds;
  const sample = emptySample(current.time, seconds);
  // Shared with the reading, not copied: neither is changed once read.
  sample.raw = c as Record<string, number>;

  // The guest's own view: what its balloon driver reports unused (needs the
  // balloon's stats period set, see metrics.ts); the host's view (balloon.rss,
  // what QEMU's process holds) stays in raw only, since it counts the
  // guest's page cache and never shrinks when the guest frees memory.
  const balloon = c['balloon.current'];
  const unused = c['balloon.unused'];
  const age = memoryReportAge(c, current.time);
  const fresh = age === null || age <= MEMORY_REPORT_MAX_AGE_SECONDS;
  if (balloon !== undefined && unused !== undefined && balloon > 0 && fresh) {
    const used = (balloon - unused) * BYTES_PER_KIB;
    sample.memoryUsedBytes = used;
    sample.memoryUsagePercent = (used / (balloon * BYTES_PER_KIB)) * 100;
  }

  if (!previous) return sample;
  const before = domainRateCounters(previous.counters);
  const after = domainRateCounters(c);
  const vcpus = c['vcpu.current'];
  // Percent of the VM's own vCPUs (100 = all of them busy all the time), not
  // of the host's CPUs: cpu.time is the QEMU process's CPU time (vCPUs plus
  // its emulator and I/O threads), so a busy guest can show a little over 100.
  if (vcpus !== undefined && vcpus > 0) {
    const cpu = delta(before, after, 'cpu.time');
    if (cpu !== null) sample.cpuUsagePercent = (cpu / (seconds * NS_PER_SECOND * vcpus)) * 100;
    // vSphere's CPU ready (see vcpuReadySum), also of the VM's vCPU time.
    const ready = delta(before, after, 'vcpu.delay') ?? delta(before, after, 'vcpu.wait');
    if (ready !== null) sample.cpuReadyPercent = (ready / (seconds * NS_PER_SECOND * vcpus)) * 100;
  }
  for (const [field, [group, suffix]] of Object.entries(DEVICE_RATES) as [
    keyof typeof DEVICE_RATES,
    (typeof DEVICE_RATES)[keyof typeof DEVICE_RATES],
  ][]) {
    const d = delta(before, after, `${group}.${suffix}`);
    if (d !== null) sample[field] = d / seconds;
  }
  return sample;
}

/**
 * A host's sample: memory from `current` (used = total − free − buffers −
 * cached, as `free` counts it), CPU from `previous` to `current`. Hosts have
 * no disk or network numbers here: libvirt has no node counters for them.
 */
export function hostSample(
  previous: CounterReading | null,
  current: CounterReading,
  fallbackIntervalSeconds: number,
): MetricSample {
  const c = current.counters;
  const seconds = previous ? (current.time - previous.time) / 1000 : fallbackIntervalSeconds;
  const sample = emptySample(current.time, seconds);
  // Shared with the reading, not copied: neither is changed once read.
  sample.raw = c as Record<string, number>;

  const total = c['memory.total'];
  const free = c['memory.free'];
  const buffers = c['memory.buffers'];
  const cached = c['memory.cached'];
  if (total !== undefined && free !== undefined && buffers !== undefined && cached !== undefined && total > 0) {
    const used = (total - free - buffers - cached) * BYTES_PER_KIB;
    sample.memoryUsedBytes = used;
    sample.memoryUsagePercent = (used / (total * BYTES_PER_KIB)) * 100;
  }

  if (!previous) return sample;
  const before = hostRateCounters(previous.counters);
  const after = hostRateCounters(c);
  // A ratio of CPU times (the share of all CPUs' time that was not idle), so
  // the wall-clock time between readings does not enter. iowait counts as
  // busy: CPUs stalled on the host's disks are load a dashboard should show,
  // though `virsh nodecpustats --percent` lists it apart from usage.
  const deltas = HOST_CPU_ALL.map((f) => delta(before, after, f));
  if (deltas.every((d): d is number => d !== null)) {
    const [kernel, user, iowait, idle] = deltas as [number, number, number, number];
    const busy = kernel + user + iowait;
    const all = busy + idle;
    if (all > 0) sample.cpuUsagePercent = (busy / all) * 100;
  }
  return sample;
}

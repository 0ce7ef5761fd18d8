// Loaded into the gateway's process by the benchmarks (`--import`), never by
// the gateway itself: once a second it writes to stderr how busy the event
// loop was since its previous line (utilization) and the longest the loop
// went without turning, as
// {"eventLoopProbe":{"at":<epoch ms>,"utilization":0.42,"maxDelayMs":12,
// "heapUsedMiB":57,"heapTotalMiB":134,"externalMiB":4}}.
// A timer that fires late by N ms means no I/O was read and no timer ran for
// N ms; a line then comes N ms after the one before. Plain JavaScript: the
// gateway it is loaded into runs compiled, without a TypeScript loader.
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { setInterval } from 'node:timers';

/** What of the process's memory is the JavaScript heap (RSS is read from /proc by the benchmark). */
function heap() {
  const m = process.memoryUsage();
  const mib = (bytes) => Math.round(bytes / 2 ** 20);
  return { heapUsedMiB: mib(m.heapUsed), heapTotalMiB: mib(m.heapTotal), externalMiB: mib(m.external) };
}

const delay = monitorEventLoopDelay({ resolution: 10 });
delay.enable();
let last = performance.eventLoopUtilization();
setInterval(() => {
  const now = performance.eventLoopUtilization();
  const utilization = performance.eventLoopUtilization(now, last).utilization;
  last = now;
  const line = {
    eventLoopProbe: {
      at: Date.now(),
      utilization: Number(utilization.toFixed(3)),
      maxDelayMs: Math.round(delay.max / 1e6),
      ...heap(),
    },
  };
  delay.reset();
  process.stderr.write(`${JSON.stringify(line)}\n`);
}, 1_000).unref();

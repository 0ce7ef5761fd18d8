// Loaded into the gateway's process by the benchmarks (`--import`), never by
// the gateway itself: once a second it writes to stderr how busy the event
// loop was since its previous line (utilization) and the longest the loop
// went without turning, as
// {"eventLoopProbe":{"at":<epoch ms>,"utilization":0.42,"maxDelayMs":12}}.
// A timer that fires late by N ms means no I/O was read and no timer ran for
// N ms; a line then comes N ms after the one before.
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';

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
    },
  };
  delay.reset();
  process.stderr.write(`${JSON.stringify(line)}\n`);
}, 1_000).unref();

// A closed loop: `concurrency` workers, each starting its next call when the
// previous one has answered, for `durationMs`. Throughput is what the loop
// reaches, not a rate it was given; each call's latency is kept.

export interface LoopResult {
  requests: number;
  /** From the start to the last answer. */
  seconds: number;
  latencies: number[];
  /** This process's CPU (user + system) over the loop. */
  cpuMs: number;
}

/** Runs `call` in a closed loop, with each call's variables taken in turn from `variables`. */
export async function closedLoop(
  concurrency: number,
  durationMs: number,
  variables: readonly Record<string, unknown>[],
  call: (variables: Record<string, unknown>) => Promise<unknown>,
): Promise<LoopResult> {
  const latencies: number[] = [];
  let next = 0;
  const cpu = process.cpuUsage();
  const started = performance.now();
  const until = started + durationMs;
  let last = started;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < until) {
        const t = performance.now();
        await call(variables[next++ % variables.length] ?? {});
        last = performance.now();
        latencies.push(last - t);
      }
    }),
  );
  const used = process.cpuUsage(cpu);
  return {
    requests: latencies.length,
    seconds: (last - started) / 1000,
    latencies,
    cpuMs: (used.user + used.system) / 1000,
  };
}

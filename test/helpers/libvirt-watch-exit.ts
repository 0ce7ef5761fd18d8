// Runs a libvirt watch in a process of its own until its first full read,
// stops it and the provider, and then only ends: the process must exit by
// itself (no event subscription, thread-safe function or timer left holding
// it). Prints how long stop() took. Usage: node --import tsx this.ts <uri>
import { pino } from 'pino';

import { validateConfig } from '../../src/config/load.js';
import type { LibvirtPlatformConfig } from '../../src/config/schema.js';
import { LibvirtProvider } from '../../src/datasources/libvirt/provider.js';

const uri = process.argv[2];
if (!uri) throw new Error('usage: libvirt-watch-exit.ts <uri>');
const config = validateConfig({ platforms: [{ id: 'exit', kind: 'libvirt', uri }] });
const provider = new LibvirtProvider(config.platforms[0] as LibvirtPlatformConfig, pino({ level: 'silent' }));
await provider.start();
let replaced: () => void = () => undefined;
const first = new Promise<void>((resolve) => (replaced = resolve));
const watch = provider.watch(
  { replace: () => replaced(), apply: () => undefined, interrupted: () => undefined },
  { resyncIntervalMs: 60_000, retryInitialMs: 50, retryMaxMs: 200 },
);
await first;
const started = performance.now();
await watch.stop();
const stopMs = performance.now() - started;
await provider.stop();
process.stdout.write(`stopped in ${stopMs.toFixed(1)} ms\n`);

import { pino } from 'pino';

import type { PlatformConfig } from '../config/schema.js';
import { PlatformRegistry } from '../datasources/registry.js';
import type { PlatformStatus } from '../model/platform.js';

/** How one platform answered a first connection attempt. */
export interface PlatformOutcome {
  id: string;
  kind: PlatformConfig['kind'];
  /** The endpoint without credentials. */
  uri: string;
  /** NO_ANSWER: the attempt was still running when the time was up. */
  status: Exclude<PlatformStatus, 'CONNECTING'> | 'NO_ANSWER';
  /** Why it is not connected (or, connected, what is degraded), on one line. */
  message: string | null;
  /** Hypervisor type and version, when connected and the platform says. */
  hypervisor: string | null;
}

/** How long `stop()` may take after an attempt before it is abandoned: the process exits anyway. */
const STOP_WAIT_MS = 2_000;

/**
 * Makes one connection attempt to each platform, in parallel, through the
 * same providers the gateway uses (so TLS, credentials and libvirt URIs are
 * checked exactly as `serve` would), and disconnects again. Retries are the
 * gateway's business: here one attempt answers the question.
 */
export async function tryPlatforms(
  platforms: readonly PlatformConfig[],
  timeoutMs: number,
): Promise<PlatformOutcome[]> {
  // The providers log their own attempts; the caller prints one line per platform instead.
  const registry = PlatformRegistry.fromConfig(platforms, pino({ level: 'silent' }));
  return Promise.all(
    registry.providers.map(async (provider, i): Promise<PlatformOutcome> => {
      const config = platforms[i]!;
      const answered = await within(provider.start(), timeoutMs);
      const state = provider.state();
      await within(provider.stop(), STOP_WAIT_MS);
      const base = { id: config.id, kind: config.kind, uri: provider.uri };
      if (!answered || state.status === 'CONNECTING') {
        return { ...base, status: 'NO_ANSWER', message: `no answer within ${seconds(timeoutMs)}`, hypervisor: null };
      }
      const hypervisor =
        state.status === 'CONNECTED' && state.hypervisorType
          ? [state.hypervisorType, state.hypervisorVersion].filter(Boolean).join(' ')
          : null;
      return { ...base, status: state.status, message: oneLine(state.statusMessage), hypervisor };
    }),
  );
}

/** `kvm-1: CONNECTED (libvirt qemu+ssh://kvm1/system; QEMU 7.2.0)`, or the reason it is not. */
export function describeOutcome(o: PlatformOutcome): string {
  const where = `${o.kind} ${o.uri}`;
  if (o.status === 'CONNECTED') {
    const details = [where, o.hypervisor, o.message].filter(Boolean).join('; ');
    return `${o.id}: CONNECTED (${details})`;
  }
  return `${o.id}: ${o.status === 'NO_ANSWER' ? 'NO ANSWER' : o.status} (${where}): ${o.message ?? 'no reason given'}`;
}

/** Whether `work` settled (either way) within `ms`. */
async function within(work: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([work.then(settled, settled), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const settled = (): true => true;

function oneLine(message: string | null): string | null {
  return message === null ? null : message.replace(/\s*\n\s*/g, ' ').trim();
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

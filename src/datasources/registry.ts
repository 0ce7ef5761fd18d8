import type { Logger } from 'pino';

import type { PlatformConfig } from '../config/schema.js';
import { UnreachableCaseError, type UpstreamErrorDescription } from '../model/errors.js';
import type { PlatformRecord } from '../model/platform.js';
import { LibvirtProvider } from './libvirt/provider.js';
import type { Provider } from './provider.js';
import { QmpProvider } from './qmp/provider.js';
import { VsphereProvider } from './vsphere/provider.js';

/** The configured platforms, in configuration order. */
export class PlatformRegistry {
  private readonly byId: Map<string, Provider>;

  constructor(readonly providers: readonly Provider[]) {
    this.byId = new Map(providers.map((p) => [p.id, p]));
  }

  static fromConfig(platforms: readonly PlatformConfig[], logger: Logger): PlatformRegistry {
    return new PlatformRegistry(platforms.map((p) => createProvider(p, logger)));
  }

  get(id: string): Provider | undefined {
    return this.byId.get(id);
  }

  record(id: string): PlatformRecord | undefined {
    const p = this.byId.get(id);
    return p ? recordOf(p) : undefined;
  }

  records(): PlatformRecord[] {
    return this.providers.map(recordOf);
  }

  /** A platform error as the platform words it for clients; null when no platform claims it. */
  describeError(error: unknown): UpstreamErrorDescription | null {
    for (const p of this.providers) {
      const described = p.describeError(error);
      if (described) return described;
    }
    return null;
  }

  /** Starts every platform in parallel; resolves when each has made its first attempt. */
  async start(): Promise<void> {
    await Promise.all(this.providers.map((p) => p.start()));
  }

  async stop(): Promise<void> {
    await Promise.all(this.providers.map((p) => p.stop()));
  }
}

/** A platform's identity with its current connection state. */
function recordOf(p: Provider): PlatformRecord {
  return { id: p.id, kind: p.kind, uri: p.uri, ...p.state() };
}

function createProvider(config: PlatformConfig, logger: Logger): Provider {
  switch (config.kind) {
    case 'libvirt':
      return new LibvirtProvider(config, logger.child({ platform: config.id }));
    case 'vsphere':
      return new VsphereProvider(config, logger.child({ platform: config.id }));
    case 'qmp':
      return new QmpProvider(config, logger.child({ platform: config.id }));
    default:
      throw new UnreachableCaseError(config);
  }
}

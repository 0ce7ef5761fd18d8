import { type VmPlacement, tenantHolds } from '../access/policy.js';
import type { AuthConfig } from '../config/schema.js';
import type { Loaders } from '../inventory/loaders.js';
import type { VmDetails } from '../model/vm.js';
import { NO_USE, type QuotaLedger, type QuotaUse, addUse } from './quota-ledger.js';

export type { QuotaUse };

const GIB = 1024 ** 3;
const NAMES: Record<keyof QuotaUse, string> = {
  vms: 'VMs',
  vcpus: 'vCPUs',
  memoryMiB: 'memory (MiB)',
  diskGiB: 'disk (GiB)',
};

/** What one VM holds, from its details. */
export function useOf(details: Pick<VmDetails, 'vcpus' | 'memoryMiB' | 'disks'>): QuotaUse {
  const bytes = details.disks.reduce((sum, d) => sum + (d.device === 'DISK' ? (d.capacityBytes ?? 0) : 0), 0);
  return { vms: 1, vcpus: details.vcpus, memoryMiB: details.memoryMiB, diskGiB: bytes / GIB };
}

/** Why a request does not fit, or null when it does. */
export type QuotaVerdict = { fits: true; release: () => void } | { fits: false; reason: string };

/**
 * Per-tenant quotas: what the VMs a tenant holds may add up to. A request
 * that adds to a tenant is checked against what the tenant's VMs hold now
 * (read through the caller's loaders, unfiltered) plus what requests
 * accepted before it still have in flight; checks take turns (on every
 * instance sharing the ledger), so twenty concurrent creates cannot all
 * slip under a limit. What a request reserves is released when its task
 * ends: by then the live inventory holds the VM it made.
 */
export class Quotas {
  constructor(
    private readonly auth: AuthConfig,
    private readonly ledger: QuotaLedger,
  ) {}

  /** Checks and reserves what a request adds to every tenant with a quota that holds the target. */
  reserve(loaders: Loaders, target: VmPlacement, demand: QuotaUse): Promise<QuotaVerdict> {
    const tenants = Object.entries(this.auth.quotas).filter(([name]) => {
      const tenant = this.auth.tenants[name];
      return tenant !== undefined && tenantHolds(tenant, target);
    });
    if (tenants.length === 0 || Object.values(demand).every((v) => v <= 0)) {
      return Promise.resolve({ fits: true, release: () => {} });
    }
    return this.ledger.exclusive(() => this.check(loaders, target.platformId, tenants, demand));
  }

  private async check(
    loaders: Loaders,
    platformId: string,
    tenants: [string, AuthConfig['quotas'][string]][],
    demand: QuotaUse,
  ): Promise<QuotaVerdict> {
    for (const [name, quota] of tenants) {
      const [held, reserved] = await Promise.all([this.usedBy(loaders, name, platformId), this.ledger.reserved(name)]);
      const used = addUse(held, reserved);
      for (const key of Object.keys(NAMES) as (keyof QuotaUse)[]) {
        const limit = quota[key];
        if (limit === undefined || demand[key] <= 0) continue;
        if (used[key] + demand[key] > limit) {
          const n = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(1));
          return {
            fits: false,
            reason: `Tenant ${name} may hold ${n(limit)} ${NAMES[key]}; it holds ${n(used[key])} and this asks for ${n(demand[key])} more.`,
          };
        }
      }
    }
    const release = await this.ledger.reserve(
      tenants.map(([name]) => name),
      demand,
    );
    return { fits: true, release };
  }

  /** What the VMs a tenant holds on the platforms it may hold VMs of add up to. */
  private async usedBy(loaders: Loaders, name: string, platformId: string): Promise<QuotaUse> {
    const tenant = this.auth.tenants[name];
    if (!tenant) return NO_USE;
    const platforms = tenant.platforms ?? [platformId];
    let sum = NO_USE;
    for (const p of platforms) {
      let vms;
      try {
        vms = await loaders.allVms.load(p);
      } catch {
        continue; // A platform that cannot answer holds nothing we can count; the others still do.
      }
      // All at once: where a VM is filed may take a read of its details, batched so.
      const placements = await Promise.all(vms.map((vm) => loaders.placementOf(vm)));
      const held = vms.filter((_, i) => tenantHolds(tenant, placements[i] as VmPlacement));
      const details = await loaders.vmDetails.loadMany(held.map((v) => ({ platformId: p, nativeId: v.nativeId })));
      for (const d of details) if (d && !(d instanceof Error)) sum = addUse(sum, useOf(d));
    }
    return sum;
  }
}

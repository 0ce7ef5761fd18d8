import { type VmPlacement, tenantHolds } from '../access/policy.js';
import type { AuthConfig } from '../config/schema.js';
import type { Loaders } from '../inventory/loaders.js';
import type { VmDetails } from '../model/vm.js';

/** What a VM holds, or what a request adds to a tenant. */
export interface QuotaUse {
  vms: number;
  vcpus: number;
  memoryMiB: number;
  diskGiB: number;
}

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

const add = (a: QuotaUse, b: QuotaUse): QuotaUse => ({
  vms: a.vms + b.vms,
  vcpus: a.vcpus + b.vcpus,
  memoryMiB: a.memoryMiB + b.memoryMiB,
  diskGiB: a.diskGiB + b.diskGiB,
});
const NONE: QuotaUse = { vms: 0, vcpus: 0, memoryMiB: 0, diskGiB: 0 };

/** Why a request does not fit, or null when it does. */
export type QuotaVerdict = { fits: true; release: () => void } | { fits: false; reason: string };

/**
 * Per-tenant quotas: what the VMs a tenant holds may add up to. A request
 * that adds to a tenant is checked against what the tenant's VMs hold now
 * (read through the caller's loaders, unfiltered) plus what requests
 * accepted before it still have in flight; checks run one at a time, so
 * twenty concurrent creates cannot all slip under a limit. What a request
 * reserves is released when its task ends: by then the live inventory
 * holds the VM it made. Reservations are this instance's: two instances
 * may each accept one request past a limit at the same moment.
 */
export class Quotas {
  private readonly pending = new Map<string, Set<QuotaUse>>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly auth: AuthConfig) {}

  /** Checks and reserves what a request adds to every tenant with a quota that holds the target. */
  reserve(loaders: Loaders, target: VmPlacement, demand: QuotaUse): Promise<QuotaVerdict> {
    const tenants = Object.entries(this.auth.quotas).filter(([name]) => {
      const tenant = this.auth.tenants[name];
      return tenant !== undefined && tenantHolds(tenant, target);
    });
    if (tenants.length === 0 || Object.values(demand).every((v) => v <= 0)) {
      return Promise.resolve({ fits: true, release: () => {} });
    }
    const run = this.queue.then(() => this.check(loaders, target.platformId, tenants, demand));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async check(
    loaders: Loaders,
    platformId: string,
    tenants: [string, AuthConfig['quotas'][string]][],
    demand: QuotaUse,
  ): Promise<QuotaVerdict> {
    for (const [name, quota] of tenants) {
      const used = add(await this.usedBy(loaders, name, platformId), this.reserved(name));
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
    const reservations = tenants.map(([name]) => {
      const set = this.pending.get(name) ?? new Set<QuotaUse>();
      this.pending.set(name, set);
      const entry = { ...demand };
      set.add(entry);
      return () => set.delete(entry);
    });
    return { fits: true, release: () => reservations.forEach((r) => r()) };
  }

  private reserved(tenant: string): QuotaUse {
    let sum = NONE;
    for (const u of this.pending.get(tenant) ?? []) sum = add(sum, u);
    return sum;
  }

  /** What the VMs a tenant holds on the platforms it may hold VMs of add up to. */
  private async usedBy(loaders: Loaders, name: string, platformId: string): Promise<QuotaUse> {
    const tenant = this.auth.tenants[name];
    if (!tenant) return NONE;
    const platforms = tenant.platforms ?? [platformId];
    let sum = NONE;
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
      for (const d of details) if (d && !(d instanceof Error)) sum = add(sum, useOf(d));
    }
    return sum;
  }
}

import { type VmPlacement, tenantHolds } from '../access/policy.js';
import type { AuthConfig } from '../config/schema.js';
import type { Loaders } from '../inventory/loaders.js';
import type { VmDetails } from '../model/vm.js';
import { NO_USE, type QuotaLedger, type QuotaUse, type ReservedFor, addUse } from './quota-ledger.js';

export type { QuotaUse, ReservedFor };

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
 * slip under a limit. What a request reserves counts until the live
 * inventory shows its VM made (or changed), from then on as held, and is
 * released when its task ends.
 */
export class Quotas {
  constructor(
    private readonly auth: AuthConfig,
    private readonly ledger: QuotaLedger,
  ) {}

  /** Checks and reserves what a request adds (for one VM) to every tenant with a quota that holds the target. */
  reserve(loaders: Loaders, target: VmPlacement, demand: QuotaUse, forVm: ReservedFor): Promise<QuotaVerdict> {
    const tenants = Object.entries(this.auth.quotas).filter(([name]) => {
      const tenant = this.auth.tenants[name];
      return tenant !== undefined && tenantHolds(tenant, target);
    });
    if (tenants.length === 0 || Object.values(demand).every((v) => v <= 0)) {
      return Promise.resolve({ fits: true, release: () => {} });
    }
    return this.ledger.exclusive(() => this.check(loaders, target.platformId, tenants, demand, forVm));
  }

  private async check(
    loaders: Loaders,
    platformId: string,
    tenants: [string, AuthConfig['quotas'][string]][],
    demand: QuotaUse,
    forVm: ReservedFor,
  ): Promise<QuotaVerdict> {
    for (const [name, quota] of tenants) {
      const [held, reservations] = await Promise.all([
        this.heldBy(loaders, name, platformId),
        this.ledger.reserved(name),
      ]);
      let used = held.sum;
      // A request whose VM the live inventory already shows is counted there, not again.
      for (const r of reservations) if (!r.for || !held.shows(r.for)) used = addUse(used, r.use);
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
      { use: demand, for: forVm },
    );
    return { fits: true, release };
  }

  /** What the VMs a tenant holds on the platforms it may hold VMs of add up to, and which VMs they are. */
  private async heldBy(loaders: Loaders, name: string, platformId: string): Promise<HeldVms> {
    const tenant = this.auth.tenants[name];
    const byId = new Map<string, QuotaUse>();
    const names = new Set<string>();
    const shows = (r: ReservedFor) =>
      r.kind === 'new'
        ? names.has(key(r.platformId, r.name))
        : !sameUse(byId.get(key(r.platformId, r.nativeId)), r.before);
    if (!tenant) return { sum: NO_USE, shows };
    let sum = NO_USE;
    const platforms = tenant.platforms ?? [platformId];
    for (const p of platforms) {
      let vms;
      try {
        vms = await loaders.allVms.load(p);
      } catch {
        continue; // A platform that cannot answer holds nothing we can count; the others still do.
      }
      // All at once: where a VM is filed may take a read of its details, batched so.
      const placements = await Promise.all(vms.map((vm) => loaders.placementOf(vm)));
      const mine = vms.filter((_, i) => tenantHolds(tenant, placements[i] as VmPlacement));
      const details = await loaders.vmDetails.loadMany(mine.map((v) => ({ platformId: p, nativeId: v.nativeId })));
      details.forEach((d, i) => {
        if (!d || d instanceof Error) return;
        const vm = mine[i]!;
        const use = useOf(d);
        sum = addUse(sum, use);
        byId.set(key(p, vm.nativeId), use);
        names.add(key(p, vm.name));
      });
    }
    return { sum, shows };
  }
}

/** The VMs a tenant holds, as the live inventory shows them. */
interface HeldVms {
  sum: QuotaUse;
  /** Whether the VM a reservation is for already shows its effect: made, or changed. */
  shows(r: ReservedFor): boolean;
}

const key = (platformId: string, part: string) => `${platformId}\u0000${part}`;

/** Whether a VM (absent: gone) still holds what it held before a change. */
const sameUse = (a: QuotaUse | undefined, b: QuotaUse) =>
  a !== undefined && (Object.keys(b) as (keyof QuotaUse)[]).every((k) => a[k] === b[k]);

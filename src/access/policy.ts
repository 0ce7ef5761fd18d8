import type { AuthConfig, Role, TenantConfig } from '../config/schema.js';
import { type Caller, subjectsOf } from '../model/caller.js';
import type { VmDetails } from '../model/vm.js';

/** Where a VM is filed, beside where it runs: vSphere's folder and resource pool, libvirt's tags. */
export interface VmFiling {
  /** vSphere: inventory path of the VM's folder (`/DC0/vm/web`). */
  folderPath: string | null;
  /** vSphere: inventory path of its resource pool or vApp (`/DC0/host/C0/Resources/web`). */
  resourcePoolPath: string | null;
  /** libvirt: the tags in the domain's metadata. */
  tags: readonly string[];
}

export const UNFILED: VmFiling = { folderPath: null, resourcePoolPath: null, tags: [] };

/** Only the filing of something filed (a placement, say): what a task keeps. */
export function filingPart(f: VmFiling): VmFiling {
  return { folderPath: f.folderPath, resourcePoolPath: f.resourcePoolPath, tags: f.tags };
}

/** A VM's filing, from its details (unfiled while they are unknown). */
export function filingOf(details: VmDetails | null | undefined): VmFiling {
  if (!details) return UNFILED;
  return {
    folderPath: details.vsphere?.folderPath ?? null,
    resourcePoolPath: details.vsphere?.resourcePoolPath ?? null,
    tags: details.tags,
  };
}

/** Where a VM is, as far as tenants can tell: what their selectors match. */
export interface VmPlacement extends VmFiling {
  platformId: string;
  name: string;
  hostName: string | null;
  clusterName: string | null;
}

/** One role on one tenant (`*`: every object). */
interface Grant {
  role: Role;
  tenant: TenantConfig | '*';
  tenantName: string;
}

/** The mutations each role may run; each role may do what the ones before it may. */
const OPERATOR_ACTIONS = new Set([
  'startVm',
  'stopVm',
  'rebootVm',
  'resetVm',
  'suspendVm',
  'resumeVm',
  'pauseVm',
  'unpauseVm',
  'createSnapshot',
  'revertToSnapshot',
  'deleteSnapshot',
  'powerVms',
  'snapshotVms',
  'cancelTask',
]);
const ADMIN_ACTIONS = new Set([
  'createVm',
  'cloneVm',
  'deleteVm',
  'reconfigureVm',
  'migrateVm',
  // Stopping a migration is as much a change of where a VM runs as starting one.
  'cancelMigration',
  'deployVms',
  'applyVm',
  'forgetVm',
  'applyVmPool',
  'scaleVmPool',
  'deleteVmPool',
]);

const RANK: Record<Exclude<Role, 'auditor'>, number> = { viewer: 1, operator: 2, admin: 3 };

/** The least role an action needs. */
export function roleNeeded(action: string): Exclude<Role, 'auditor'> {
  if (ADMIN_ACTIONS.has(action)) return 'admin';
  if (OPERATOR_ACTIONS.has(action)) return 'operator';
  return 'admin';
}

/** A glob (`*`, `?`) as a whole-string, case-sensitive pattern. */
function globRegExp(glob: string): RegExp {
  const body = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

/** Globs compiled once, whoever asks. */
const compiledGlobs = new Map<string, RegExp>();

function globMatcher(patterns: Map<string, RegExp>): (glob: string, value: string) => boolean {
  return (glob, value) => {
    let re = patterns.get(glob);
    if (!re) patterns.set(glob, (re = globRegExp(glob)));
    return re.test(value);
  };
}

/** An inventory path and the paths above it, deepest first: `/a/b/c`, `/a/b`, `/a`. */
function pathAndAncestors(path: string): string[] {
  const out: string[] = [];
  for (let p = path; p.length > 1; p = p.slice(0, p.lastIndexOf('/')) || '/') out.push(p);
  return out;
}

/** Whether an object filed at `path` is in (or below) one of the folders or pools `globs` name. */
function filedUnder(
  globs: readonly string[] | undefined,
  path: string | null,
  matches: (g: string, v: string) => boolean,
) {
  if (!globs || path === null) return false;
  const paths = pathAndAncestors(path);
  return globs.some((g) => paths.some((p) => matches(g, p)));
}

/** Whether a tenant holds a VM: on one of its platforms and, when it has other selectors, matching one. */
export function tenantHolds(
  tenant: TenantConfig,
  vm: VmPlacement,
  patterns: Map<string, RegExp> = compiledGlobs,
): boolean {
  if (tenant.platforms && !tenant.platforms.includes(vm.platformId)) return false;
  const selectors = [
    tenant.clusters,
    tenant.hosts,
    tenant.namePatterns,
    tenant.folders,
    tenant.resourcePools,
    tenant.tags,
  ];
  if (selectors.every((s) => s === undefined)) return true;
  const matches = globMatcher(patterns);
  return (
    (tenant.clusters !== undefined && vm.clusterName !== null && tenant.clusters.includes(vm.clusterName)) ||
    (tenant.hosts !== undefined && vm.hostName !== null && tenant.hosts.includes(vm.hostName)) ||
    (tenant.namePatterns ?? []).some((g) => matches(g, vm.name)) ||
    filedUnder(tenant.folders, vm.folderPath, matches) ||
    filedUnder(tenant.resourcePools, vm.resourcePoolPath, matches) ||
    (tenant.tags ?? []).some((t) => vm.tags.includes(t))
  );
}

/** Whether a tenant selects VMs by what only their details say (folder, resource pool, tags). */
export function selectsByFiling(tenant: TenantConfig): boolean {
  return tenant.folders !== undefined || tenant.resourcePools !== undefined || tenant.tags !== undefined;
}

/** Whether a tenant may hold objects of a platform at all. */
const tenantOnPlatform = (tenant: TenantConfig | '*', platformId: string) =>
  tenant === '*' || !tenant.platforms || tenant.platforms.includes(platformId);

export type Decision = { allowed: true } | { allowed: false; reason: string };

/**
 * What one caller may see and do, from the configured bindings: the one
 * place every read filter and every mutation check asks. VMs belong to
 * tenants; the infrastructure they run on (datacenters, clusters, hosts,
 * networks, storage) is shared, and shown to whoever holds a role on a
 * tenant of its platform, as KubeVirt shows nodes to every namespace.
 */
export class CallerAccess {
  private readonly patterns = new Map<string, RegExp>();

  constructor(
    readonly caller: Caller,
    private readonly grants: readonly Grant[],
  ) {}

  /** Sees every object of every platform: reads need no filtering. */
  get seesEverything(): boolean {
    return this.grants.some((g) => g.tenant === '*' && g.role !== 'auditor');
  }

  /** The caller's roles, as `role@tenant`, for the audit log. */
  get grantNames(): string[] {
    return [...new Set(this.grants.map((g) => `${g.role}@${g.tenantName}`))];
  }

  /**
   * May read the audit log: it names every tenant's VMs, so only an auditor
   * or an admin of everything (`*`) may; an admin of some tenants may not.
   */
  get readsAudit(): boolean {
    return this.grants.some((g) => g.role === 'auditor' || (g.role === 'admin' && g.tenant === '*'));
  }

  /** Some of the caller's tenants select VMs by folder, resource pool or tags: placing a VM needs its details. */
  get selectsByFiling(): boolean {
    return this.grants.some((g) => g.tenant !== '*' && selectsByFiling(g.tenant));
  }

  /** Holds a role (other than auditor) on a tenant that may hold objects of this platform. */
  seesPlatform(platformId: string): boolean {
    return this.grants.some((g) => g.role !== 'auditor' && tenantOnPlatform(g.tenant, platformId));
  }

  /** The highest role the caller holds over a VM, or null when the VM is hidden from it. */
  roleOn(vm: VmPlacement): Exclude<Role, 'auditor'> | null {
    let best: Exclude<Role, 'auditor'> | null = null;
    for (const g of this.grants) {
      if (g.role === 'auditor') continue;
      if (best && RANK[best] >= RANK[g.role]) continue;
      if (g.tenant === '*' || tenantHolds(g.tenant, vm, this.patterns)) best = g.role;
    }
    return best;
  }

  seesVm(vm: VmPlacement): boolean {
    return this.roleOn(vm) !== null;
  }

  /** May the caller run `action` on this VM (or, for a VM to be created, on the VM it would be)? */
  may(action: string, vm: VmPlacement): Decision {
    const needed = roleNeeded(action);
    const held = this.roleOn(vm);
    if (held && RANK[held] >= RANK[needed]) return { allowed: true };
    return {
      allowed: false,
      reason: held
        ? `${action} needs the ${needed} role on ${vm.name}; ${this.caller.id} is ${held} there.`
        : `${this.caller.id} holds no role that allows ${action} on ${vm.name}.`,
    };
  }
}

/** The configured bindings, resolved per caller. */
export class AccessPolicy {
  private readonly cache = new Map<string, CallerAccess>();

  constructor(private readonly auth: AuthConfig) {}

  /** What a caller may see and do (resolved once per caller identity and groups). */
  for(caller: Caller): CallerAccess {
    const key = `${caller.id}\u0000${caller.groups.join('\u0000')}`;
    let access = this.cache.get(key);
    if (!access) {
      access = new CallerAccess(caller, this.grantsOf(caller));
      // Bounded: identities come and go; the grants are cheap to resolve again.
      if (this.cache.size >= 10_000) this.cache.clear();
      this.cache.set(key, access);
    }
    return access;
  }

  private grantsOf(caller: Caller): Grant[] {
    const tenant = (name: string): TenantConfig | '*' =>
      name === '*' ? '*' : (this.auth.tenants[name] as TenantConfig);
    if (caller.kind === 'anonymous') {
      const a = this.auth.anonymous;
      return a ? a.roles.flatMap((role) => a.tenants.map((t) => ({ role, tenant: tenant(t), tenantName: t }))) : [];
    }
    const subjects = new Set(subjectsOf(caller));
    return this.auth.bindings
      .filter((b) => b.subjects.some((s) => subjects.has(s)))
      .flatMap((b) => b.roles.flatMap((role) => b.tenants.map((t) => ({ role, tenant: tenant(t), tenantName: t }))));
  }
}

import { describe, expect, it } from 'vitest';

import { AccessPolicy, UNFILED, type VmFiling, roleNeeded } from '../src/access/policy.js';
import { validateConfig } from '../src/config/load.js';
import type { Caller } from '../src/model/caller.js';

const config = validateConfig({
  platforms: [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }],
  auth: {
    tenants: {
      web: { namePatterns: ['web-*'] },
      lab: { platforms: ['kvm'] },
      'cluster-a': { platforms: ['vc'], clusters: ['A'] },
      'host-1': { hosts: ['esx-1'] },
      'folder-web': { platforms: ['vc'], folders: ['/DC0/vm/web', '/*/vm/shared-*'] },
      'pool-batch': { resourcePools: ['/DC0/host/C0/Resources/batch'] },
      'tag-team': { tags: ['team-a', 'pci'] },
    },
    bindings: [
      { subjects: ['group:web-ops'], roles: ['operator'], tenants: ['web'] },
      { subjects: ['user:alice'], roles: ['viewer'], tenants: ['lab'] },
      { subjects: ['user:alice'], roles: ['admin'], tenants: ['cluster-a'] },
      { subjects: ['token:ci'], roles: ['admin'], tenants: ['host-1'] },
      { subjects: ['user:audrey'], roles: ['auditor'], tenants: ['*'] },
      { subjects: ['user:fay'], roles: ['operator'], tenants: ['folder-web', 'pool-batch', 'tag-team'] },
    ],
  },
});
const policy = new AccessPolicy(config.auth);
const user = (sub: string, groups: string[] = []): Caller => ({
  id: `user:${sub}`,
  kind: 'user',
  groups,
  expiresAt: null,
});
const vm = (
  platformId: string,
  name: string,
  hostName: string | null = null,
  clusterName: string | null = null,
  filing: Partial<VmFiling> = {},
) => ({ platformId, name, hostName, clusterName, ...UNFILED, ...filing });

describe('who may see and do what', () => {
  it('grants a group its role on the VMs its tenant names, and nothing elsewhere', () => {
    const bob = policy.for(user('bob', ['web-ops']));
    expect(bob.seesEverything).toBe(false);
    expect(bob.roleOn(vm('kvm', 'web-1'))).toBe('operator');
    expect(bob.roleOn(vm('vc', 'web-2'))).toBe('operator');
    expect(bob.seesVm(vm('kvm', 'db-1'))).toBe(false);
    expect(bob.may('stopVm', vm('kvm', 'web-1'))).toEqual({ allowed: true });
    const del = bob.may('deleteVm', vm('kvm', 'web-1'));
    expect(del.allowed).toBe(false);
    expect(!del.allowed && del.reason).toContain('needs the admin role on web-1; user:bob is operator there');
    expect(bob.may('stopVm', vm('kvm', 'db-1')).allowed).toBe(false);
    // Glob semantics: the whole name, * and ? only.
    expect(bob.seesVm(vm('kvm', 'my-web-1'))).toBe(false);
    expect(bob.seesVm(vm('kvm', 'web-'))).toBe(true);
  });

  it('takes the highest role of every tenant that holds a VM', () => {
    const alice = policy.for(user('alice'));
    expect(alice.roleOn(vm('kvm', 'anything'))).toBe('viewer');
    expect(alice.roleOn(vm('vc', 'x', 'esx-9', 'A'))).toBe('admin');
    expect(alice.roleOn(vm('vc', 'x', 'esx-9', 'B'))).toBeNull();
    expect(alice.seesPlatform('kvm')).toBe(true);
    expect(alice.seesPlatform('vc')).toBe(true);
    expect(alice.seesPlatform('other')).toBe(false);
  });

  it('binds API tokens by name, and keeps the auditor out of the inventory', () => {
    const ci = policy.for({ id: 'token:ci', kind: 'token', groups: [], expiresAt: null });
    expect(ci.roleOn(vm('vc', 'x', 'esx-1'))).toBe('admin');
    expect(ci.roleOn(vm('vc', 'x', 'esx-2'))).toBeNull();
    const audrey = policy.for(user('audrey'));
    expect(audrey.readsAudit).toBe(true);
    expect(audrey.seesEverything).toBe(false);
    expect(audrey.seesVm(vm('kvm', 'web-1'))).toBe(false);
    expect(policy.for(user('bob', ['web-ops'])).readsAudit).toBe(false);
  });

  it('gives nobody anything unbound, and anonymous callers only what auth.anonymous says', () => {
    expect(policy.for(user('mallory')).seesPlatform('kvm')).toBe(false);
    expect(policy.for({ id: 'anonymous', kind: 'anonymous', groups: [], expiresAt: null }).seesPlatform('kvm')).toBe(
      false,
    );
    const open = new AccessPolicy(
      validateConfig({ platforms: [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }] }).auth,
    );
    const anonymous = open.for({ id: 'anonymous', kind: 'anonymous', groups: [], expiresAt: null });
    expect(anonymous.seesEverything).toBe(true);
    expect(anonymous.may('deleteVm', vm('kvm', 'a')).allowed).toBe(true);
  });

  it('selects VMs by vSphere folder and resource pool (and everything below them) and by libvirt tags', () => {
    const fay = policy.for(user('fay'));
    expect(fay.selectsByFiling).toBe(true);
    expect(policy.for(user('bob', ['web-ops'])).selectsByFiling).toBe(false);
    const inFolder = (folderPath: string) => vm('vc', 'x', null, null, { folderPath });
    expect(fay.seesVm(inFolder('/DC0/vm/web'))).toBe(true);
    expect(fay.seesVm(inFolder('/DC0/vm/web/frontends/eu'))).toBe(true);
    // A folder is a whole path segment: /DC0/vm/webshop is not below /DC0/vm/web.
    expect(fay.seesVm(inFolder('/DC0/vm/webshop'))).toBe(false);
    expect(fay.seesVm(inFolder('/DC0/vm'))).toBe(false);
    expect(fay.seesVm(inFolder('/DC7/vm/shared-tools/x'))).toBe(true);
    // The tenant is on vc only.
    expect(fay.seesVm(vm('kvm', 'x', null, null, { folderPath: '/DC0/vm/web' }))).toBe(false);
    const inPool = (resourcePoolPath: string) => vm('vc', 'x', null, null, { resourcePoolPath });
    expect(fay.seesVm(inPool('/DC0/host/C0/Resources/batch'))).toBe(true);
    expect(fay.seesVm(inPool('/DC0/host/C0/Resources/batch/nightly'))).toBe(true);
    expect(fay.seesVm(inPool('/DC0/host/C0/Resources'))).toBe(false);
    expect(fay.roleOn(vm('kvm', 'y', null, null, { tags: ['other', 'pci'] }))).toBe('operator');
    expect(fay.seesVm(vm('kvm', 'y', null, null, { tags: ['team-b'] }))).toBe(false);
    expect(fay.seesVm(vm('kvm', 'y'))).toBe(false);
  });

  it('refuses tenant selectors that are not inventory paths or tags, naming the key', () => {
    const withTenant = (tenant: object) =>
      validateConfig({
        platforms: [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }],
        auth: { tenants: { t: tenant } },
      });
    expect(() => withTenant({ folders: ['DC0/vm/web'] })).toThrow(/auth\.tenants\.t\.folders\[0\].*inventory path/s);
    expect(() => withTenant({ tags: ['has space'] })).toThrow(/auth\.tenants\.t\.tags\[0\]/);
    expect(() => withTenant({ labels: ['x'] })).toThrow(/labels/);
  });

  it('names the least role of each mutation', () => {
    expect(roleNeeded('startVm')).toBe('operator');
    expect(roleNeeded('createSnapshot')).toBe('operator');
    expect(roleNeeded('migrateVm')).toBe('admin');
    // Anything not named needs the most.
    expect(roleNeeded('someNewMutation')).toBe('admin');
  });

  it('refuses a configuration that binds an unknown tenant, naming it', () => {
    expect(() =>
      validateConfig({
        platforms: [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }],
        auth: { bindings: [{ subjects: ['user:x'], roles: ['viewer'], tenants: ['nope'] }] },
      }),
    ).toThrow(/auth\.bindings\[0\]\.tenants\[0\].*unknown tenant "nope"/s);
    expect(() =>
      validateConfig({
        platforms: [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }],
        auth: { bindings: [{ subjects: ['user:x'], roles: ['superuser'], tenants: ['*'] }] },
      }),
    ).toThrow(/auth\.bindings\[0\]\.roles\[0\]/);
  });
});

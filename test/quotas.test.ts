import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { VmPlacement } from '../src/access/policy.js';
import { validateConfig } from '../src/config/load.js';
import { ANONYMOUS } from '../src/model/caller.js';
import { decodeId } from '../src/model/ids.js';
import { LocalQuotaLedger } from '../src/mutations/quota-ledger.js';
import { Quotas } from '../src/mutations/quotas.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { finished, mutate } from './helpers/mutations.js';
import { type RedisServer, redisServer } from './helpers/redis-server.js';
import { type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';

// Per-tenant quotas against the libvirt test driver: a tenant of the VMs
// named q-* may hold 5 VMs, 8 vCPUs and 6 GiB of memory in all.
const GiB = 1024 ** 3;
let gw: TestGateway;
let platform: string;

async function vmId(name: string): Promise<string> {
  const res = await gw.query<{ virtualMachines: { nodes: { id: string; name: string }[] } }>(
    'query($n: String) { virtualMachines(first: 50, filter: { nameContains: $n }) { nodes { id name } } }',
    { n: name },
  );
  return res.data!.virtualMachines.nodes.find((v) => v.name === name)!.id;
}

beforeAll(async () => {
  gw = await startTestGateway({
    platforms: [{ id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 3 }).uri }],
    auth: {
      anonymous: { roles: ['admin'], tenants: ['*'] },
      tenants: { q: { platforms: ['kvm'], namePatterns: ['q-*'] } },
      quotas: { q: { vms: 5, vcpus: 8, memoryMiB: 6144 } },
    },
  });
  const res = await gw.query<{ platforms: { id: string }[] }>('{ platforms { id } }');
  platform = res.data!.platforms[0]!.id;
});
afterAll(() => gw?.close());

describe('tenant quotas', () => {
  it('lets exactly the VMs that fit through 20 concurrent creates, and refuses the rest naming the quota', async () => {
    const outcomes = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        mutate(gw, 'createVm', {
          platformId: platform,
          name: `q-${String(i).padStart(2, '0')}`,
          vcpus: 1,
          memoryMiB: 512,
        }),
      ),
    );
    const accepted = outcomes.filter((o) => o.task);
    const refused = outcomes.filter((o) => !o.task);
    expect(accepted.length).toBe(5);
    for (const o of refused) {
      expect(o.userErrors).toEqual([
        {
          code: 'QUOTA_EXCEEDED',
          field: null,
          message: 'Tenant q may hold 5 VMs; it holds 5 and this asks for 1 more.',
        },
      ]);
    }
    for (const o of accepted) expect((await finished(gw, o.task!.id)).state).toBe('SUCCEEDED');
    // Once made, they count from the inventory: still no room.
    const again = await mutate(gw, 'createVm', { platformId: platform, name: 'q-late', memoryMiB: 256 });
    expect(again.userErrors[0]!.code).toBe('QUOTA_EXCEEDED');
    // A VM outside the tenant is not counted against it.
    const outside = await mutate(gw, 'createVm', { platformId: platform, name: 'other-1', memoryMiB: 256 });
    expect(outside.userErrors).toEqual([]);
    await finished(gw, outside.task!.id);
  });

  it('checks reconfigurations and clones against vCPUs and memory, and frees what a deleted VM held', async () => {
    const id = await vmId('q-00');
    // 5 VMs x 1 vCPU: 3 more fit (8), 4 do not.
    const tooMany = await mutate(gw, 'reconfigureVm', { vmId: id, vcpus: 5 });
    expect(tooMany.userErrors[0]).toMatchObject({
      code: 'QUOTA_EXCEEDED',
      message: 'Tenant q may hold 8 vCPUs; it holds 5 and this asks for 4 more.',
    });
    const memory = await mutate(gw, 'reconfigureVm', { vmId: id, memoryMiB: 4608 });
    expect(memory.userErrors[0]!.message).toBe(
      'Tenant q may hold 6144 memory (MiB); it holds 2560 and this asks for 4096 more.',
    );
    const fits = await mutate(gw, 'reconfigureVm', { vmId: id, vcpus: 4 });
    expect(fits.userErrors).toEqual([]);
    await finished(gw, fits.task!.id);

    const clone = await mutate(gw, 'cloneVm', { vmId: await vmId('q-01'), name: 'q-copy' });
    expect(clone.userErrors[0]!.code).toBe('QUOTA_EXCEEDED');

    const del = await mutate(gw, 'deleteVm', { vmId: await vmId('q-02'), force: true });
    await finished(gw, del.task!.id);
    const now = await mutate(gw, 'cloneVm', { vmId: await vmId('q-01'), name: 'q-copy', disks: undefined });
    expect(now.userErrors).toEqual([]);
    await finished(gw, now.task!.id);
    expect(
      (
        await mutate(gw, 'createVm', {
          platformId: platform,
          name: 'q-more',
          memoryMiB: 256,
          disks: [{ capacityBytes: GiB }],
        })
      ).userErrors[0]!.code,
    ).toBe('QUOTA_EXCEEDED');
  });

  it('refuses a quota on an unknown tenant at start, naming it', async () => {
    await expect(
      startTestGateway({
        platforms: [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }],
        auth: { anonymous: { roles: ['admin'] }, quotas: { nope: { vms: 1 } } },
      }),
    ).rejects.toThrow(/auth\.quotas\.nope.*unknown tenant "nope"/s);
  });
});

describe('a request in flight whose VM the live inventory already shows', () => {
  // A ledger of the test's own, holding a reservation open as a task still in
  // flight does, against the gateway's live inventory (its loaders).
  const auth = validateConfig({
    platforms: [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }],
    auth: {
      anonymous: { roles: ['admin'], tenants: ['*'] },
      tenants: { z: { platforms: ['kvm'], namePatterns: ['z-*'] } },
      quotas: { z: { vms: 2, vcpus: 4 } },
    },
  }).auth;
  const demand = { vms: 1, vcpus: 1, memoryMiB: 256, diskGiB: 0 };
  const target = (name: string): VmPlacement => ({
    platformId: 'kvm',
    name,
    hostName: null,
    clusterName: null,
    folderPath: null,
    resourcePoolPath: null,
    tags: [],
  });
  const loaders = () => gw.contextFor(ANONYMOUS).loaders;

  it('counts a VM being made once: in the inventory, not also as reserved', async () => {
    const quotas = new Quotas(auth, new LocalQuotaLedger());
    const first = await quotas.reserve(loaders(), target('z-1'), demand, {
      kind: 'new',
      platformId: 'kvm',
      name: 'z-1',
    });
    expect(first.fits).toBe(true);
    // The VM is made (here by the gateway, outside this ledger) while its reservation is still held.
    const made = await mutate(gw, 'createVm', { platformId: platform, name: 'z-1', vcpus: 1, memoryMiB: 256 });
    expect((await finished(gw, made.task!.id)).state).toBe('SUCCEEDED');
    // Held 1 (z-1, shown) and nothing else in flight: one more fits the 2 allowed.
    const second = await quotas.reserve(loaders(), target('z-2'), demand, {
      kind: 'new',
      platformId: 'kvm',
      name: 'z-2',
    });
    expect(second.fits).toBe(true);
    const third = await quotas.reserve(loaders(), target('z-3'), demand, {
      kind: 'new',
      platformId: 'kvm',
      name: 'z-3',
    });
    expect(third).toEqual({ fits: false, reason: 'Tenant z may hold 2 VMs; it holds 2 and this asks for 1 more.' });
  });

  it('counts a change once the inventory shows it, not also as reserved', async () => {
    const quotas = new Quotas(auth, new LocalQuotaLedger());
    const id = await vmId('z-1');
    const { nativeId } = decodeId(id);
    const vcpus = (n: number) => ({ vms: 0, vcpus: n, memoryMiB: 0, diskGiB: 0 });
    /** A change to z-1 asked while it holds `from` vCPUs. */
    const changeFrom = (from: number) => ({
      kind: 'change' as const,
      platformId: 'kvm',
      nativeId,
      before: { vms: 1, vcpus: from, memoryMiB: 256, diskGiB: 0 },
    });
    expect((await quotas.reserve(loaders(), target('z-1'), vcpus(2), changeFrom(1))).fits).toBe(true);
    // Not shown yet: z-1 holds 1, and 2 more are in flight.
    expect(await quotas.reserve(loaders(), target('z-1'), vcpus(2), changeFrom(1))).toEqual({
      fits: false,
      reason: 'Tenant z may hold 4 vCPUs; it holds 3 and this asks for 2 more.',
    });
    const done = await mutate(gw, 'reconfigureVm', { vmId: id, vcpus: 3 });
    expect((await finished(gw, done.task!.id)).state).toBe('SUCCEEDED');
    // Shown: z-1 holds 3 of the 4 vCPUs, and the change in flight no longer counts as well.
    expect((await quotas.reserve(loaders(), target('z-1'), vcpus(1), changeFrom(3))).fits).toBe(true);
    expect(await quotas.reserve(loaders(), target('z-1'), vcpus(1), changeFrom(3))).toEqual({
      fits: false,
      reason: 'Tenant z may hold 4 vCPUs; it holds 4 and this asks for 1 more.',
    });
  });
});

describe('tenant quotas on several instances', () => {
  let redis: RedisServer;
  let sim: Vcsim;
  let one: TestGateway;
  let two: TestGateway;
  // The standalone host's 2 VMs, and room for 3 more.
  const QUOTA = 5;
  beforeAll(async () => {
    [redis, sim] = await Promise.all([redisServer(), startVcsim()]);
    const config = () => ({
      redis: { url: redis.url, connectTimeoutMs: 2_000 },
      platforms: [vspherePlatform(sim)],
      auth: {
        anonymous: { roles: ['admin'], tenants: ['*'] },
        tenants: { h0: { hosts: ['DC0_H0'] } },
        quotas: { h0: { vms: QUOTA } },
      },
    });
    [one, two] = await Promise.all([startTestGateway(config()), startTestGateway(config())]);
  }, 60_000);
  afterAll(async () => {
    await Promise.all([one?.close(), two?.close()]);
    await Promise.all([redis?.stop(), sim?.stop()]);
  });

  it('lets exactly the VMs that fit through 20 concurrent creates split across two instances', async () => {
    const { data } = await one.query<{ platforms: { id: string }[]; hosts: { nodes: { id: string; name: string }[] } }>(
      '{ platforms { id } hosts(first: 50) { nodes { id name } } }',
    );
    const platformId = data!.platforms[0]!.id;
    const hostId = data!.hosts.nodes.find((h) => h.name === 'DC0_H0')!.id;
    const outcomes = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        mutate(i % 2 === 0 ? one : two, 'createVm', {
          platformId,
          name: `shared-q-${i}`,
          memoryMiB: 256,
          placement: { hostId },
        }),
      ),
    );
    const accepted = outcomes.filter((o) => o.task);
    expect(accepted.length).toBe(QUOTA - 2);
    for (const o of outcomes.filter((x) => !x.task)) expect(o.userErrors[0]!.code).toBe('QUOTA_EXCEEDED');
    // (Checked by each instance on its own, each would have let 3 through: 6 in all.)
    for (const [i, o] of outcomes.entries())
      if (o.task) expect((await finished(i % 2 === 0 ? one : two, o.task.id)).state).toBe('SUCCEEDED');
    // Made, they count from each instance's live inventory: no room on either.
    for (const gw of [one, two]) {
      const again = await mutate(gw, 'createVm', {
        platformId,
        name: 'shared-q-late',
        memoryMiB: 256,
        placement: { hostId },
      });
      expect(again.userErrors[0]!.code).toBe('QUOTA_EXCEEDED');
    }
  });
});

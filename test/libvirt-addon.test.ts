import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { DomainStats, ListDomainsFlags, nativeAddon } from '../src/datasources/libvirt/addon.js';
import { LibvirtClient } from '../src/datasources/libvirt/client.js';
import { VirErr, isAuthFailure, isConnectionFailure, isLibvirtError } from '../src/datasources/libvirt/errors.js';
import { type Estate, writeEstate } from './fixtures/libvirt-estate.js';
import { closedPort } from './helpers/gateway.js';
import { rejection } from './helpers/rejection.js';

let estate: Estate;
let client: LibvirtClient;

beforeAll(async () => {
  estate = writeEstate({ vms: 20, auth: { username: 'ops', password: 's3cret' } });
  client = await LibvirtClient.open(estate.uri, { username: 'ops', password: 's3cret' });
});
afterAll(() => client?.close());

describe('native libvirt addon', () => {
  it('reports the libvirt it was built against', () => {
    expect(nativeAddon().libvirtVersion).toBeGreaterThanOrEqual(9_000_000);
  });

  it('lists domains and their states in bulk', async () => {
    const stats = await client.call('getAllDomainStats', DomainStats.STATE, 0);
    expect(stats).toHaveLength(20);
    expect(stats.find((s) => s.name === 'web-001')).toMatchObject({
      uuid: estate.vms[0]!.uuid,
      params: { 'state.state': 1 },
    });
    const persistent = await client.call('listAllDomains', ListDomainsFlags.PERSISTENT);
    expect(persistent).toHaveLength(20);
    const active = await client.call('listAllDomains', ListDomainsFlags.ACTIVE);
    expect(active.every((d) => d.id > 0)).toBe(true);
    const inactive = await client.call('listAllDomains', ListDomainsFlags.INACTIVE);
    expect(inactive.every((d) => d.id === -1)).toBe(true);
    expect(active.length + inactive.length).toBe(20);
  });

  it("rejects with libvirt's code, domain and message", async () => {
    const e = await rejection(client.call('lookupDomainByName', 'no-such-domain'));
    expect(isLibvirtError(e)).toBe(true);
    expect(e).toMatchObject({
      name: 'LibvirtError',
      code: VirErr.NO_DOMAIN,
      domain: expect.any(Number),
      message: 'Domain not found',
    });
  });

  it('puts an error at the index of a missing object in bulk results, and only there', async () => {
    const uuids = [estate.vms[0]!.uuid, '00000000-0000-0000-0000-00000000dead', estate.vms[1]!.uuid];
    const xmls = await client.call('getDomainXmlDescs', uuids, 0);
    expect(typeof xmls[0]).toBe('string');
    expect(xmls[1]).toBeInstanceOf(Error);
    expect(xmls[1]).toMatchObject({ code: VirErr.NO_DOMAIN });
    expect(xmls[2]).toContain('<name>db-002</name>');
    const snaps = await client.call('listDomainSnapshots', uuids);
    expect((snaps[0] as { name: string; current: boolean }[]).map((s) => [s.name, s.current])).toEqual([
      ['installed', false],
      ['patched', true],
    ]);
    expect(snaps[1]).toMatchObject({ code: VirErr.NO_DOMAIN });
    expect(snaps[2]).toEqual([]);
  });

  it('resolves large batches with one listing, small ones by lookup, with the same answers', async () => {
    const missing = '00000000-0000-0000-0000-00000000beef';
    const large = [...estate.vms.slice(0, 8).map((v) => v.uuid), missing];
    let before = client.libvirtCalls();
    const viaListing = await client.call('getDomainXmlDescs', large, 0);
    expect(client.libvirtCalls() - before).toBe(1 + 8);
    expect(viaListing[8]).toMatchObject({ code: VirErr.NO_DOMAIN });
    before = client.libvirtCalls();
    const viaLookup = await client.call('getDomainXmlDescs', [large[0]!, missing], 0);
    expect(client.libvirtCalls() - before).toBe(2 + 1);
    expect(viaLookup[0]).toBe(viaListing[0]);
    expect(viaLookup[1]).toMatchObject({ code: VirErr.NO_DOMAIN });
  });

  it('runs many calls concurrently off the main thread', async () => {
    const results = await Promise.all(Array.from({ length: 50 }, () => client.call('listAllDomains', 0)));
    expect(results.every((r) => r.length === 20)).toBe(true);
  });

  it('counts every call into the addon and every libvirt call behind it', async () => {
    const before = { addon: client.addonCalls().total, libvirt: client.libvirtCalls() };
    await client.call(
      'getDomainXmlDescs',
      estate.vms.slice(0, 5).map((v) => v.uuid),
      0,
    );
    expect(client.addonCalls().total - before.addon).toBe(1);
    // One listing resolves the five UUIDs, then one XML read each.
    expect(client.libvirtCalls() - before.libvirt).toBe(6);
  });

  it('refuses credentials the driver does not accept, as an authentication failure', async () => {
    const e = await rejection(LibvirtClient.open(estate.uri, { username: 'ops', password: 'wrong' }));
    expect(e).toMatchObject({ code: VirErr.AUTH_FAILED });
    expect(isAuthFailure(e)).toBe(true);
    const none = await rejection(LibvirtClient.open(estate.uri));
    expect(isAuthFailure(none)).toBe(true);
  });

  it('reports an unreachable remote as a connection failure', async () => {
    const e = await rejection(LibvirtClient.open(`qemu+tcp://127.0.0.1:${await closedPort()}/system`));
    expect(isConnectionFailure(e)).toBe(true);
    expect(isAuthFailure(e)).toBe(false);
  });

  it('refuses calls after close, and closes once', async () => {
    const c = await LibvirtClient.open('test:///default');
    const pending = c.call('listAllDomains', 0);
    await c.close();
    // A call already in flight finishes on its own reference.
    expect((await pending).length).toBeGreaterThan(0);
    expect(c.isOpen()).toBe(false);
    expect(() => c.call('listAllDomains', 0)).toThrow('connection is closed');
    await c.close();
  });

  it('validates arguments before leaving the main thread', () => {
    expect(() => client.call('getDomainXmlDescs', [1 as unknown as string], 0)).toThrow(TypeError);
    expect(() => client.call('lookupDomainByUuid', undefined as unknown as string)).toThrow('uuid must be a string');
  });
});

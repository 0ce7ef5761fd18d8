import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LibvirtClient } from '../src/datasources/libvirt/client.js';
import { isLibvirtError } from '../src/datasources/libvirt/errors.js';
import { type Estate, writeEstate } from './fixtures/libvirt-estate.js';
import { rejection } from './helpers/rejection.js';

// Every libvirt function, virStorageVolFree and friends included, clears the
// calling thread's last error. These calls fail with a libvirt object still
// held, so a free before the error is read would replace libvirt's message
// with "... failed without a libvirt error" (VIR_ERR_INTERNAL_ERROR).

// virterror.h
const VIR_ERR_INTERNAL_ERROR = 1;
const VIR_ERR_OPERATION_FAILED = 9;
const VIR_FROM_NONE = 0;

let estate: Estate;
let client: LibvirtClient;

beforeAll(async () => {
  estate = writeEstate({ vms: 4 });
  client = await LibvirtClient.open(estate.uri);
});
afterAll(() => client?.close());

function expectLibvirtsOwn(e: unknown, code: number, message: string | RegExp): void {
  expect(isLibvirtError(e)).toBe(true);
  expect(e).toMatchObject({ name: 'LibvirtError', code, message: expect.stringMatching(message) });
  expect((e as { domain: number }).domain).not.toBe(VIR_FROM_NONE);
  expect((e as Error).message).not.toContain('without a libvirt error');
}

describe("libvirt's own error survives the cleanup after a failed call", () => {
  it('createVolume over an existing volume (pool still held when virStorageVolCreateXML fails)', async () => {
    const pool = estate.pools[0]!;
    const existing = pool.volumes[0]!;
    const e = await rejection(
      client.call(
        'createVolume',
        pool.uuid,
        `<volume><name>${existing}</name><capacity unit='bytes'>1048576</capacity></volume>`,
      ),
    );
    expectLibvirtsOwn(e, VIR_ERR_OPERATION_FAILED, /already exists/);
  });

  it('cloneVolume onto an existing name (pool and source held when virStorageVolCreateXMLFrom fails)', async () => {
    const pool = estate.pools[0]!;
    const [source, taken] = pool.volumes;
    const e = await rejection(client.call('cloneVolume', `${pool.path}/${source}`, taken!));
    expectLibvirtsOwn(e, VIR_ERR_OPERATION_FAILED, /already exists/);
  });

  it('a lifecycle change the domain refuses (domain held when the call fails)', async () => {
    const running = estate.vms.find((v) => v.rawState === 'running')!;
    const e = await rejection(client.call('domainLifecycle', running.uuid, 'create'));
    // The test driver files this one under internal errors, with the domain's name.
    expectLibvirtsOwn(e, VIR_ERR_INTERNAL_ERROR, new RegExp(`${running.name}.*already running`));
  });

  it('leaves the pool as it was and the connection usable', async () => {
    const pool = estate.pools[0]!;
    const [volumes] = await client.call('listStorageVolumes', [pool.uuid]);
    expect((volumes as { name: string }[]).map((v) => v.name).sort()).toEqual([...pool.volumes].sort());
    const made = await client.call(
      'createVolume',
      pool.uuid,
      `<volume><name>fresh.qcow2</name><capacity unit='bytes'>1048576</capacity></volume>`,
    );
    expect(made).toBe(`${pool.path}/fresh.qcow2`);
  });
});

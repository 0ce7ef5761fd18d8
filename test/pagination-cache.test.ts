import { pino } from 'pino';
import { describe, expect, it } from 'vitest';

import type { VmState } from '../src/datasources/watch.js';
import { PlatformMirror } from '../src/inventory/platform-mirror.js';
import type { VmRecord } from '../src/model/vm.js';
import { paginate } from '../src/resolvers/pagination.js';

const limits = { defaultPageSize: 50, maxPageSize: 1000 } as Parameters<typeof paginate>[3];
const vm = (nativeId: string, name: string): VmState => ({
  vm: { platformId: 'p', nativeId, name, uuid: nativeId, powerState: 'ON' } as VmRecord,
  details: { disks: [], nics: [] } as unknown as VmState['details'],
  snapshots: [],
});
const byName = {
  name: 'vm:NAME',
  direction: 'ASC' as const,
  value: (v: VmRecord) => v.name,
  id: (v: VmRecord) => v.nativeId,
};

describe('pages of a listing the live inventory keeps', () => {
  it('are sorted once per version of the listing, and follow every change', () => {
    const mirror = new PlatformMirror('p', { publish: () => {} }, pino({ level: 'silent' }));
    mirror.replace(
      {
        datacenters: [],
        clusters: [],
        hosts: [],
        vms: [vm('1', 'b'), vm('2', 'a'), vm('3', 'c')],
        networks: [],
        storage: [],
        volumes: new Map(),
        upstreamTasks: [],
      },
      'initial',
    );
    const before = mirror.listVms();
    expect(mirror.listVms()).toBe(before);
    expect(paginate(before, {}, byName, limits).nodes.map((v) => v.name)).toEqual(['a', 'b', 'c']);

    mirror.apply([{ kind: 'VirtualMachine', nativeId: '2', record: vm('2', 'z') }]);
    const after = mirror.listVms();
    expect(after).not.toBe(before);
    expect(paginate(after, {}, byName, limits).nodes.map((v) => v.name)).toEqual(['b', 'c', 'z']);
    // The earlier version still pages as it was (a request that began before the change).
    expect(paginate(before, {}, byName, limits).nodes.map((v) => v.name)).toEqual(['a', 'b', 'c']);
  });
});

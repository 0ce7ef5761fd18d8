// Batched vs one-call-per-VM reads of domain details through the addon, and
// the whole GraphQL listing at two estate sizes. Prints ratios against a
// baseline measured in the same run: machines here are noisy, absolute times
// are for orientation only.
import { pino } from 'pino';

import { median } from './median.js';

import { validateConfig } from '../src/config/load.js';
import { LibvirtClient } from '../src/datasources/libvirt/client.js';
import type { LibvirtProvider } from '../src/datasources/libvirt/provider.js';
import { startGateway } from '../src/server/gateway.js';
import { writeEstate } from '../test/fixtures/libvirt-estate.js';
import { BENCH_AUTH } from './support.js';

const ROUNDS = 5;

const fmt = (ms: number) => `${ms.toFixed(1)} ms`;

async function addonBatching(n: number): Promise<void> {
  const estate = writeEstate({ vms: n });
  const client = await LibvirtClient.open(estate.uri);
  const uuids = estate.vms.map((v) => v.uuid);
  const calls = () => ({ addon: client.addonCalls().total, libvirt: client.libvirtCalls() });

  let before = calls();
  const perVm = await median(() => Promise.all(uuids.map((u) => client.call('getDomainXmlDescs', [u], 0))));
  const perVmCalls = {
    addon: (calls().addon - before.addon) / (ROUNDS + 1),
    libvirt: (calls().libvirt - before.libvirt) / (ROUNDS + 1),
  };
  before = calls();
  const batched = await median(() => client.call('getDomainXmlDescs', uuids, 0));
  const batchedCalls = {
    addon: (calls().addon - before.addon) / (ROUNDS + 1),
    libvirt: (calls().libvirt - before.libvirt) / (ROUNDS + 1),
  };
  await client.close();
  console.log(
    `domain XML of ${n} VMs: one call per VM (baseline) ${fmt(perVm)} [${perVmCalls.addon} addon / ${perVmCalls.libvirt} libvirt calls]; ` +
      `batched ${fmt(batched)} [${batchedCalls.addon} / ${batchedCalls.libvirt}]; speed-up x${(perVm / batched).toFixed(1)}`,
  );
}

const QUERY = `{ virtualMachines(first: 10000) { totalCount edges { node {
  name powerState memoryMiB vcpus host { name } networks { name } storage { name } disks { capacityBytes } snapshots { name }
} } } }`;

async function graphqlListing(sizes: number[]): Promise<void> {
  const results: { n: number; ms: number; addon: number; libvirt: number }[] = [];
  for (const n of sizes) {
    const estate = writeEstate({ vms: n });
    const config = validateConfig({
      server: { port: 0 },
      limits: { maxCost: 100_000_000, maxPageSize: 10_000 },
      auth: BENCH_AUTH,
      platforms: [{ id: 'bench', kind: 'libvirt', uri: estate.uri }],
    });
    const gw = await startGateway(config, pino({ level: 'silent' }));
    await gw.ready;
    const provider = gw.registry.get('bench') as LibvirtProvider;
    const run = async () => {
      const res = await fetch(gw.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query: QUERY }),
      });
      const body = (await res.json()) as { errors?: unknown };
      if (body.errors) throw new Error(JSON.stringify(body.errors));
    };
    const counts = () => provider.withClient(async (c) => ({ addon: c.addonCalls().total, libvirt: c.libvirtCalls() }));
    const before = await counts();
    await run();
    const after = await counts();
    const ms = await median(run);
    results.push({ n, ms, addon: after.addon - before.addon, libvirt: after.libvirt - before.libvirt });
    await gw.close();
  }
  const base = results[0]!;
  for (const r of results) {
    console.log(
      `GraphQL listing of ${r.n} VMs with host, networks, storage, disks, snapshots: ${fmt(r.ms)} ` +
        `(x${(r.ms / base.ms).toFixed(2)} of ${base.n} VMs for x${(r.n / base.n).toFixed(0)} the VMs; ` +
        `${(r.ms / r.n).toFixed(3)} ms/VM); ${r.addon} addon calls, ${r.libvirt} libvirt calls`,
    );
  }
}

await addonBatching(1000);
await graphqlListing([100, 1000, 5000]);

// VM details of 500 VMs from VMware's simulator: one RetrievePropertiesEx per
// VM (the baseline a naive resolver makes) against one for all of them, and
// the whole GraphQL listing. Ratios are against the baseline of the same run.
import { pino } from 'pino';

import { median } from './median.js';

import { validateConfig } from '../src/config/load.js';
import type { VsphereProvider } from '../src/datasources/vsphere/provider.js';
import { VM_DETAIL_SPEC } from '../src/datasources/vsphere/mapping.js';
import { VsphereSession } from '../src/datasources/vsphere/session.js';
import { startGateway } from '../src/server/gateway.js';
import { startVcsim, vspherePlatform } from '../test/helpers/vcsim.js';

const ROUNDS = 5;

const sim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 2, host: 1, vm: 250 });
try {
  const logger = pino({ level: 'silent' });
  const session = await VsphereSession.open({
    url: sim.url,
    username: sim.username,
    password: sim.password,
    caFile: sim.certFile,
    logger,
  });
  const refs = Object.keys(sim.oracle.vms).map((value) => ({ type: 'VirtualMachine', value }));
  const specs = [VM_DETAIL_SPEC];
  const perVm = await median(() => Promise.all(refs.map((r) => session.retrieveObjects([r], specs))));
  const batched = await median(() => session.retrieveObjects(refs, specs));
  await session.close();
  console.log(
    `VM details of ${refs.length} VMs: one RetrievePropertiesEx per VM (baseline, 16 in flight) ${perVm.toFixed(1)} ms ` +
      `[${refs.length} calls]; batched ${batched.toFixed(1)} ms [1 call]; speed-up x${(perVm / batched).toFixed(1)}`,
  );

  const config = validateConfig({
    server: { port: 0 },
    limits: { maxCost: 100_000_000, maxPageSize: 1000 },
    platforms: [vspherePlatform(sim)],
  });
  const gw = await startGateway(config, logger);
  await gw.ready;
  const query = `{ virtualMachines(first: 1000) { totalCount edges { node {
    name powerState memoryMiB vcpus host { name cluster { name } } storage { name } networks { name } disks { capacityBytes } snapshots { name }
  } } } }`;
  const run = async () => {
    const res = await fetch(gw.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query }),
    });
    const body = (await res.json()) as { errors?: unknown };
    if (body.errors) throw new Error(JSON.stringify(body.errors));
  };
  const provider = gw.registry.get('vc') as VsphereProvider;
  await run();
  const before = await provider.withClient(async (s) => s.client.callCounts().total);
  const ms = await median(run);
  const after = await provider.withClient(async (s) => s.client.callCounts().total);
  console.log(
    `GraphQL listing of ${refs.length} VMs with host, cluster, datastores, networks, disks, snapshots: ${ms.toFixed(1)} ms ` +
      `(${(ms / refs.length).toFixed(3)} ms/VM); ${(after - before) / (ROUNDS + 1)} SOAP calls per query`,
  );
  await gw.close();
} finally {
  await sim.stop();
}

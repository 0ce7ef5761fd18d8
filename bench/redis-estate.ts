// Several instances on a large estate (issue 8): a 5,000-VM vCenter
// simulator, a real redis-server, a holder and a follower, against one
// gateway running alone on the same simulator (the baseline, in the same
// run). What it costs to share: the holder's start to SYNCED and its event
// loop while it writes the initial entries and its snapshot; the snapshot's
// and the stream's size in Redis; a follower's start to SYNCED (it reads the
// snapshot, not the platform) and its RSS; the same listing on each.
//
// REDIS_VMS (5000).
import { Redis } from 'ioredis';

import { redisServer } from '../test/helpers/redis-server.js';
import { vspherePlatform } from '../test/helpers/vcsim.js';
import {
  BENCH_AUTH,
  type GatewayProcess,
  machine,
  memoryOf,
  mib,
  ms,
  printTable,
  ratio,
  settledRss,
  spawnGateway,
  startLargeVcsim,
  timeRuns,
} from './support.js';

const VMS = Number(process.env['REDIS_VMS'] ?? 5000);
const LIMITS = { maxPageSize: 100_000, maxCost: 100_000_000 };
const INVENTORY = { resyncIntervalSeconds: 3600 };
const LISTING = `{ virtualMachines(first: ${VMS}) { nodes { id name powerState host { name } memoryMiB vcpus guestOs storage { name } networks { name } } } }`;

interface Measured {
  toSyncedMs: number;
  maxStallMs: number;
  rssMiB: number;
  peakMiB: number;
  listingMs: number;
}

async function measure(gw: GatewayProcess): Promise<Measured> {
  await gw.waitSynced(600_000);
  // When the poll saw it SYNCED (a follower's syncedAt is the holder's, from before it started).
  const toSyncedMs = Date.now() - gw.spawnedAtEpoch;
  const loop = gw.eventLoop(0);
  const listingMs = (
    await timeRuns(async () => {
      const res = await gw.post<{ virtualMachines: { nodes: unknown[] } }>(LISTING);
      if (res.data?.virtualMachines.nodes.length !== VMS) throw new Error(`listing: ${JSON.stringify(res.errors)}`);
    }, 3)
  ).median;
  const rssMiB = await settledRss(gw.pid);
  return { toSyncedMs, maxStallMs: loop.maxStallMs, rssMiB, peakMiB: memoryOf(gw.pid).peakMiB, listingMs };
}

async function main(): Promise<void> {
  console.log(machine());
  const clusters = 4;
  const sim = await startLargeVcsim({ clusters, hostsPerCluster: 2, vmsPerCluster: Math.ceil(VMS / clusters) });
  const redis = await redisServer();
  const client = new Redis(redis.url);
  const gateways: GatewayProcess[] = [];
  try {
    const platform = vspherePlatform(sim);
    const alone = await spawnGateway({ limits: LIMITS, auth: BENCH_AUTH, inventory: INVENTORY, platforms: [platform] });
    gateways.push(alone);
    const baseline = await measure(alone);
    await alone.stop();
    gateways.length = 0;

    const shared = {
      limits: LIMITS,
      auth: BENCH_AUTH,
      inventory: INVENTORY,
      platforms: [platform],
      redis: { url: redis.url },
    };
    const holder = await spawnGateway(shared);
    gateways.push(holder);
    const held = await measure(holder);
    // The snapshot is written once the initial entries are: wait for it before the follower starts.
    for (let i = 0; i < 600 && (await client.exists('virt-graph:{vc}:snapshot')) === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const snapshotBytes = await client.strlen('virt-graph:{vc}:snapshot');
    const streamEntries = await client.xlen('virt-graph:{vc}:events');
    const streamBytes = Number(await client.memory('USAGE', 'virt-graph:{vc}:events'));
    const follower = await spawnGateway(shared);
    gateways.push(follower);
    const followed = await measure(follower);

    const row = (what: string, m: Measured, base: Measured | null) => [
      what,
      ms(m.toSyncedMs),
      base ? ratio(m.toSyncedMs, base.toSyncedMs) : '',
      ms(m.maxStallMs),
      ms(m.listingMs),
      mib(m.rssMiB),
      mib(m.peakMiB),
    ];
    printTable(
      `${VMS} VMs, one vCenter simulator`,
      ['gateway', 'start to SYNCED', 'ratio', 'longest event-loop stall', `${VMS}-VM listing`, 'RSS', 'peak RSS'],
      [
        row('alone (baseline)', baseline, null),
        row('holder (watches, writes the stream and snapshot)', held, baseline),
        row('follower (starts from the snapshot)', followed, baseline),
      ],
    );
    printTable(
      'Redis',
      ['snapshot', 'stream entries', 'stream memory'],
      [[mib(snapshotBytes / 1_048_576), String(streamEntries), mib(streamBytes / 1_048_576)]],
    );
  } finally {
    await Promise.all(gateways.map((g) => g.stop()));
    client.disconnect();
    await redis.kill();
    await sim.stop();
  }
}

await main();

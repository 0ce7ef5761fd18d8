// Reads answered from the live inventory (issue 7), against a baseline
// measured in the same run, with the gateway's resident memory beside the
// times. The gateway runs as its own process (`node --import tsx
// src/main.ts --config FILE`), so its RSS is its own.
//
// 1. vSphere, a 5,000-VM vCenter simulator: the dashboard listing over HTTP
//    from the SYNCED mirror against VMware's Go client (govmomi, built from
//    bench/govmomi-list) reading the same properties, login included; a
//    50-VM page; SOAP calls for 10 reads (a counting proxy in front of the
//    simulator); RSS.
// 2. libvirt, a 1,000-domain test-driver estate: the listing from the mirror
//    against the provider's own reads made directly through the addon.
// 3. 200 concurrent 100-VM pages against the 5,000-VM mirror: p50 and p99.
// 4. A 20,000-VM simulator: gateway start to SYNCED, and RSS then.
//
// Sizes: LIVE_VMS (5000), LIVE_DOMAINS (1000), LIVE_LARGE_VMS (20000);
// LIVE_PARTS picks parts (vsphere,libvirt,large). Medians of LIVE_RUNS (5)
// runs after a warm-up. Absolute times are for orientation only.
import { DomainStats, ListDomainsFlags } from '../src/datasources/libvirt/addon.js';
import { LibvirtClient } from '../src/datasources/libvirt/client.js';
import { parseDomainXml } from '../src/datasources/libvirt/xml.js';
import { writeEstate } from '../test/fixtures/libvirt-estate.js';
import { libvirtd } from '../test/helpers/libvirtd.js';
import { vspherePlatform } from '../test/helpers/vcsim.js';
import {
  BENCH_AUTH,
  type GatewayProcess,
  type GraphQLBody,
  buildGovmomiList,
  countsSince,
  machine,
  medianOf,
  memoryOf,
  mib,
  ms,
  percentile,
  printTable,
  ratio,
  runGovmomiList,
  settledRss,
  spawnGateway,
  startCountingProxy,
  startLargeVcsim,
  timeAlternating,
  timeRuns,
} from './support.js';

const VMS = Number(process.env['LIVE_VMS'] ?? 5000);
const DOMAINS = Number(process.env['LIVE_DOMAINS'] ?? 1000);
const LARGE_VMS = Number(process.env['LIVE_LARGE_VMS'] ?? 20000);
const RUNS = Number(process.env['LIVE_RUNS'] ?? 5);
const PARTS = new Set((process.env['LIVE_PARTS'] ?? 'vsphere,libvirt,large').split(','));
const CONCURRENT = 200;

const LIMITS = { maxPageSize: 100_000, maxCost: 100_000_000 };
// No periodic full re-read during the measurements (it would compete for the CPU at a random moment).
const INVENTORY = { resyncIntervalSeconds: 3600 };

/** The fields a dashboard shows per VM. */
const DASHBOARD = 'id name powerState host { name } memoryMiB vcpus guestOs storage { name } networks { name }';
const LISTING = `query($first: Int!, $after: String) {
  virtualMachines(first: $first, after: $after) {
    totalCount pageInfo { endCursor hasNextPage } edges { node { ${DASHBOARD} } }
  }
}`;

interface Listing {
  virtualMachines: { totalCount: number; pageInfo: { endCursor: string | null }; edges: unknown[] };
}

/** Lists a page (or everything) and checks the answer came whole and from the mirror. */
async function list(gw: GatewayProcess, first: number, after?: string | null): Promise<GraphQLBody<Listing>> {
  const body = await gw.post<Listing>(LISTING, { first, after: after ?? null });
  if (body.errors) throw new Error(JSON.stringify(body.errors).slice(0, 2000));
  if (body.extensions?.['directReads']) throw new Error(`read directly: ${JSON.stringify(body.extensions)}`);
  return body;
}

const goal = (met: boolean, text: string) => `${text}: ${met ? 'met' : '**missed**'}`;

console.log(`live inventory benchmarks on ${machine()}`);

// --- 1 and 3: vSphere ---------------------------------------------------------

if (PARTS.has('vsphere')) {
  buildGovmomiList();
  const clusters = 4;
  const sim = await startLargeVcsim({ clusters, hostsPerCluster: 2, vmsPerCluster: Math.ceil(VMS / clusters) });
  const proxy = await startCountingProxy(sim.url, sim.certFile);
  let gw: GatewayProcess | null = null;
  try {
    console.log(`vcsim with ${VMS} VMs started in ${ms(sim.startMs)}, RSS ${mib(memoryOf(sim.pid).rssMiB)}`);
    gw = await spawnGateway({
      limits: LIMITS,
      auth: BENCH_AUTH,
      inventory: INVENTORY,
      platforms: [{ id: 'vc', kind: 'vsphere', url: proxy.url, username: sim.username, password: sim.password }],
    });
    const synced = await gw.waitSynced(30 * 60_000);
    const syncMs = synced.syncedAt - gw.spawnedAtEpoch;
    const syncCalls = proxy.counts();
    const rssSynced = await settledRss(gw.pid);
    const syncLoop = gw.eventLoop(0);
    console.log(
      `gateway SYNCED ${ms(syncMs)} after its start, RSS ${mib(rssSynced)}; SOAP calls: ${JSON.stringify(syncCalls)}; ` +
        `while syncing, the event loop stalled up to ${ms(syncLoop.maxStallMs)}, the slowest answer to a query took ` +
        `${ms(synced.slowestPollMs)}, ${synced.failedPolls} failed`,
    );

    // Baseline: govmomi (a process per listing, each with its own login, timed by itself), in
    // alternation with the gateway's listing.
    let goRss = 0;
    const { go, full } = await timeAlternating(
      {
        go: async () => {
          const [r] = await runGovmomiList(sim, 1);
          if (r?.vms !== VMS) throw new Error(`govmomi listed ${JSON.stringify(r)}`);
          goRss = Math.max(goRss, r.peakRssMiB);
          return r.ms;
        },
        full: async () => {
          const b = await list(gw!, VMS);
          const n = b.data!.virtualMachines.edges.length;
          if (n !== VMS) throw new Error(`listed ${n}`);
        },
      },
      RUNS,
    );
    const goMs = go.median;
    const rssAfterFull = memoryOf(gw.pid);
    const page50 = await timeRuns(() => list(gw!, 50), RUNS * 4);

    // SOAP calls for 10 reads: none while SYNCED.
    const before = proxy.counts();
    for (let i = 0; i < 10; i++) await list(gw, VMS);
    const tenReads = countsSince(before, proxy.counts());

    // 3: 200 concurrent 100-VM pages, spread over the estate.
    const cursors: (string | null)[] = [null];
    while (cursors.length < Math.ceil(VMS / 100)) {
      const b = await list(gw, 100, cursors[cursors.length - 1]);
      cursors.push(b.data!.virtualMachines.pageInfo.endCursor);
    }
    const page100 = await timeRuns(() => list(gw!, 100, cursors[7]), RUNS * 4);
    const burst = async () => {
      const times = await Promise.all(
        Array.from({ length: CONCURRENT }, async (_, i) => {
          const t = performance.now();
          await list(gw!, 100, cursors[i % cursors.length]);
          return performance.now() - t;
        }),
      );
      return { p50: percentile(times, 50), p99: percentile(times, 99), max: Math.max(...times) };
    };
    await burst();
    const burstMark = gw.probeMark();
    const bursts = [];
    for (let i = 0; i < Math.max(3, Math.ceil(RUNS / 2)); i++) bursts.push(await burst());
    const burstLoop = gw.eventLoop(burstMark);
    const p50 = medianOf(bursts.map((b) => b.p50));
    const p99 = medianOf(bursts.map((b) => b.p99));
    const rssEnd = memoryOf(gw.pid);
    const retrieve = tenReads['RetrievePropertiesEx'] ?? 0;

    printTable(
      `vSphere, ${VMS} VMs (vcsim on loopback): dashboard listing (${DASHBOARD})`,
      ['what', 'baseline', 'measured', 'ratio', 'goal', 'RSS'],
      [
        [
          `full listing, ${VMS} VMs`,
          `govmomi ContainerView.Retrieve, login included: ${ms(goMs)}`,
          `gateway, HTTP, SYNCED mirror: ${ms(full.median)}`,
          ratio(full.median, goMs),
          goal(full.median <= goMs, '≤ x1.0'),
          `govmomi peak ${mib(goRss)}; gateway ${mib(rssAfterFull.rssMiB)}`,
        ],
        [
          '50-VM page',
          `same govmomi listing: ${ms(goMs)}`,
          `${ms(page50.median)}`,
          ratio(page50.median, goMs),
          goal(page50.median <= 0.05 * goMs, '≤ x0.05'),
          '',
        ],
        [
          'SOAP calls for 10 full reads',
          '',
          `RetrievePropertiesEx: ${retrieve}; all: ${JSON.stringify(tenReads)}`,
          '',
          goal(retrieve === 0, '0 while SYNCED'),
          '',
        ],
        [
          'gateway RSS, estate mirrored',
          '',
          `SYNCED and idle: ${mib(rssSynced)}; after the reads: ${mib(rssEnd.rssMiB)} (peak ${mib(rssEnd.peakMiB)})`,
          '',
          goal(Math.max(rssSynced, rssEnd.rssMiB) <= 300, '≤ 300 MB'),
          '',
        ],
        [
          'gateway start to SYNCED',
          `one govmomi listing: ${ms(goMs)}`,
          `${ms(syncMs)} (event loop stalled up to ${ms(syncLoop.maxStallMs)}; SOAP calls: ${JSON.stringify(syncCalls)})`,
          ratio(syncMs, goMs),
          '',
          '',
        ],
      ],
    );
    printTable(
      `${CONCURRENT} concurrent 100-VM pages against the ${VMS}-VM mirror (HTTP, ${CONCURRENT} connections)`,
      ['what', 'baseline: one page alone', 'p50', 'p99', 'p99 / one page', 'goal', 'RSS after', 'event loop'],
      [
        [
          `${CONCURRENT} at once, median of ${bursts.length} bursts`,
          ms(page100.median),
          ms(p50),
          ms(p99),
          ratio(p99, page100.median),
          goal(p99 <= 1000, 'p99 ≤ 1 s'),
          `${mib(rssEnd.rssMiB)} (peak ${mib(rssEnd.peakMiB)})`,
          `utilization ${(burstLoop.utilization * 100).toFixed(0)}%, longest stall ${ms(burstLoop.maxStallMs)}`,
        ],
      ],
    );
    console.log(
      `samples (ms): govmomi ${go.samples.map((v) => v.toFixed(0)).join(', ')}; ` +
        `full listing ${full.samples.map((s) => s.toFixed(0)).join(', ')}; bursts p99 ${bursts.map((b) => b.p99.toFixed(0)).join(', ')}`,
    );
  } finally {
    await gw?.stop();
    await proxy.close();
    await sim.stop();
  }
}

// --- 2: libvirt ----------------------------------------------------------------

/** The provider's listing reads (provider.ts listVms + getVmDetails), straight through the addon. */
async function addonReads(client: LibvirtClient, parse: boolean): Promise<void> {
  const [stats] = await Promise.all([
    client.call('getAllDomainStats', DomainStats.STATE, 0),
    client.call('listAllDomains', ListDomainsFlags.PERSISTENT),
    client.call('listAllDomains', ListDomainsFlags.AUTOSTART),
  ]);
  const xmls = await client.call(
    'getDomainXmlDescs',
    stats.map((d) => d.uuid),
    0,
  );
  if (xmls.length !== DOMAINS) throw new Error(`read ${xmls.length} domains`);
  if (parse) for (const x of xmls) if (typeof x === 'string') parseDomainXml(x);
}

async function libvirtListing(label: string, uri: string): Promise<string[][]> {
  const gw = await spawnGateway({
    limits: LIMITS,
    auth: BENCH_AUTH,
    inventory: INVENTORY,
    platforms: [{ id: 'lv', kind: 'libvirt', uri }],
  });
  const client = await LibvirtClient.open(uri);
  try {
    await gw.waitSynced(10 * 60_000);
    const rssSynced = await settledRss(gw.pid);
    const { raw, parsed, full } = await timeAlternating(
      {
        raw: () => addonReads(client, false),
        parsed: () => addonReads(client, true),
        full: async () => {
          const b = await list(gw, DOMAINS);
          if (b.data!.virtualMachines.edges.length !== DOMAINS) throw new Error('short listing');
        },
      },
      RUNS,
    );
    const rssEnd = memoryOf(gw.pid);
    const page = await timeRuns(() => list(gw, 100), RUNS * 4);
    return [
      [
        `${label}: full listing, ${DOMAINS} domains`,
        `addon: stats + 2 listings + domain XML of all: ${ms(raw.median)}`,
        `gateway, HTTP, SYNCED mirror: ${ms(full.median)}`,
        ratio(full.median, raw.median),
        goal(full.median <= raw.median, '≤ x1.0'),
        `gateway SYNCED ${mib(rssSynced)}, after reads ${mib(rssEnd.rssMiB)}`,
      ],
      [
        `${label}: same`,
        `addon reads + the provider's XML parsing: ${ms(parsed.median)}`,
        ms(full.median),
        ratio(full.median, parsed.median),
        '',
        '',
      ],
      [
        `${label}: 100-domain page`,
        `addon reads: ${ms(raw.median)}`,
        ms(page.median),
        ratio(page.median, raw.median),
        '',
        '',
      ],
    ];
  } finally {
    await client.close();
    await gw.stop();
  }
}

if (PARTS.has('libvirt')) {
  const estate = writeEstate({ vms: DOMAINS });
  const rows = await libvirtListing('test driver in-process', estate.uri);
  // The same estate served by a real libvirtd over its unix socket: every read is a round trip, as on a remote host.
  const daemon = libvirtd();
  await daemon.start();
  try {
    const socket = new URL(daemon.uri).searchParams.get('socket');
    rows.push(...(await libvirtListing('through libvirtd', `test+unix://${estate.path}?socket=${socket}`)));
  } finally {
    await daemon.stop();
  }
  printTable(
    `libvirt, ${DOMAINS} domains (libvirt's test driver): dashboard listing (${DASHBOARD})`,
    ['what', 'baseline', 'measured', 'ratio', 'goal', 'RSS'],
    rows,
  );
}

// --- 4: a 20,000-VM vCenter ----------------------------------------------------

if (PARTS.has('large')) {
  const clusters = 8;
  const sim = await startLargeVcsim({ clusters, hostsPerCluster: 2, vmsPerCluster: Math.ceil(LARGE_VMS / clusters) });
  let gw: GatewayProcess | null = null;
  try {
    const simRss = memoryOf(sim.pid).rssMiB;
    gw = await spawnGateway({
      limits: LIMITS,
      auth: BENCH_AUTH,
      inventory: INVENTORY,
      platforms: [vspherePlatform(sim)],
    });
    const synced = await gw.waitSynced(60 * 60_000);
    const syncMs = synced.syncedAt - gw.spawnedAtEpoch;
    const atSync = memoryOf(gw.pid);
    const rssSynced = await settledRss(gw.pid);
    const syncLoop = gw.eventLoop(0);
    const full = await timeRuns(async () => {
      const b = await list(gw!, LARGE_VMS);
      if (b.data!.virtualMachines.edges.length !== LARGE_VMS) throw new Error('short listing');
    }, 3);
    const page = await timeRuns(() => list(gw!, 50), RUNS * 4);
    const rssEnd = memoryOf(gw.pid);
    printTable(
      `vSphere, ${LARGE_VMS} VMs (vcsim built it in ${ms(sim.startMs)}, its RSS ${mib(simRss)})`,
      ['what', 'measured', 'RSS'],
      [
        [
          'gateway start to first SYNCED',
          `${ms(syncMs)} (event loop stalled up to ${ms(syncLoop.maxStallMs)}; slowest answer to a query meanwhile ` +
            `${ms(synced.slowestPollMs)}, ${synced.failedPolls} dropped)`,
          `at SYNCED ${mib(atSync.rssMiB)} (peak ${mib(atSync.peakMiB)}), settled ${mib(rssSynced)}`,
        ],
        [`full listing, ${LARGE_VMS} VMs, from the mirror`, ms(full.median), ''],
        ['50-VM page', ms(page.median), `after the reads ${mib(rssEnd.rssMiB)} (peak ${mib(rssEnd.peakMiB)})`],
      ],
    );
  } finally {
    await gw?.stop();
    await sim.stop();
  }
}

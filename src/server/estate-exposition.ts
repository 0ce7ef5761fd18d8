import type { CallerAccess } from '../access/policy.js';
import type { Inventory } from '../inventory/inventory.js';
import type { MetricsService } from '../metrics/metrics-service.js';
import { METRIC_FIELDS, type MetricField, type MetricSample } from '../model/metrics.js';

/** Prometheus names and help of each neutral field. */
const GAUGES: Record<MetricField, { name: string; help: string }> = {
  cpuUsagePercent: { name: 'cpu_usage_percent', help: 'CPU busy, percent of the vCPUs (VM) or CPUs (host)' },
  cpuReadyPercent: { name: 'cpu_ready_percent', help: 'Time ready to run but waiting for a CPU, percent' },
  memoryUsedBytes: { name: 'memory_used_bytes', help: 'Memory in use, bytes' },
  memoryUsagePercent: { name: 'memory_usage_percent', help: 'Memory in use, percent' },
  diskReadBytesPerSecond: { name: 'disk_read_bytes_per_second', help: 'Disk reads, bytes per second' },
  diskWriteBytesPerSecond: { name: 'disk_write_bytes_per_second', help: 'Disk writes, bytes per second' },
  diskReadIops: { name: 'disk_read_iops', help: 'Disk read operations per second' },
  diskWriteIops: { name: 'disk_write_iops', help: 'Disk write operations per second' },
  networkRxBytesPerSecond: { name: 'network_receive_bytes_per_second', help: 'Network received, bytes per second' },
  networkTxBytesPerSecond: { name: 'network_transmit_bytes_per_second', help: 'Network sent, bytes per second' },
};

const escape = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const labels = (l: Record<string, string>) =>
  `{${Object.entries(l)
    .map(([k, v]) => `${k}="${escape(v)}"`)
    .join(',')}}`;

interface Row {
  labels: string;
  sample: MetricSample;
}

/**
 * Every VM's and host's latest sample in Prometheus text format
 * (`virtgraph_vm_*` and `virtgraph_host_*` gauges labelled by platform,
 * name, native ID and, for VMs, host), for a Prometheus that scrapes
 * /metrics/estate. Numbers carry the sample's own time, so a scrape between
 * two samplings does not pretend they are new.
 */
export function renderEstate(
  inventory: Inventory,
  metrics: MetricsService,
  platformIds: readonly string[],
  /** What the scraper may see: the VMs of its tenants, the hosts of their platforms. */
  access: CallerAccess,
): string {
  const vms: Row[] = [];
  const hosts: Row[] = [];
  for (const platformId of platformIds) {
    const sampler = metrics.sampler(platformId);
    const mirror = inventory.mirror(platformId);
    if (!sampler || !mirror || !access.seesPlatform(platformId)) continue;
    const hostsById = new Map(mirror.listHosts().map((h) => [h.nativeId, h]));
    for (const h of mirror.listHosts()) {
      const sample = sampler.latest('HOST', h.nativeId);
      if (sample) hosts.push({ labels: labels({ platform: platformId, host: h.name, id: h.nativeId }), sample });
    }
    for (const v of mirror.listVms()) {
      const sample = sampler.latest('VM', v.nativeId);
      if (!sample) continue;
      if (!access.seesEverything && !access.seesVm(mirror.placementOf(v))) continue;
      const host = (v.hostNativeId ? hostsById.get(v.hostNativeId)?.name : undefined) ?? v.hostNativeId ?? '';
      vms.push({ labels: labels({ platform: platformId, vm: v.name, host, id: v.nativeId }), sample });
    }
  }
  const out: string[] = [];
  for (const [prefix, rows] of [
    ['virtgraph_vm_', vms],
    ['virtgraph_host_', hosts],
  ] as const) {
    for (const field of METRIC_FIELDS) {
      const gauge = GAUGES[field];
      const lines = rows.flatMap((r) => {
        const v = r.sample[field];
        return v === null ? [] : [`${prefix}${gauge.name}${r.labels} ${v} ${r.sample.timestamp}`];
      });
      if (lines.length === 0) continue;
      out.push(`# HELP ${prefix}${gauge.name} ${gauge.help}`, `# TYPE ${prefix}${gauge.name} gauge`, ...lines);
    }
  }
  return out.join('\n') + '\n';
}

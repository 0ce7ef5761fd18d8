import { VsphereTransportError } from './errors.js';
import type { SoapClient } from './soap-client.js';
import type { PropertySpec } from './vim.js';
import {
  type MoRef,
  type XNode,
  boolOf,
  child,
  children,
  elementXml,
  expandXml,
  intOf,
  moRefOf,
  moRefXml,
  textOf,
} from './xml.js';

// The PerformanceManager's side of vim25 (the perfCounter and
// historicalInterval properties and QueryPerf), typed by hand like vim.ts;
// names are vSphere's own.

/**
 * Read once per session, in one call: every counter the endpoint has, with
 * its key, and the historical intervals it keeps (vCenter's are configurable).
 */
export const PERF_MANAGER_SPEC: PropertySpec = {
  type: 'PerformanceManager',
  paths: ['perfCounter', 'historicalInterval'],
};

/** One PerfCounterInfo, as much of it as the gateway uses. */
export interface PerfCounterInfo {
  /** The counter's ID on this endpoint: IDs differ between vCenter, ESXi and versions, names do not. */
  key: number;
  /** `group.name.rollup`, as govmomi names counters: `cpu.usage.average`. */
  name: string;
  /** unitInfo's key: `percent` (hundredths of a percent), `kiloBytes`, `kiloBytesPerSecond`, `millisecond`, `number`, ... */
  unit: string;
}

/** The counters of a `perfCounter` property value (ArrayOfPerfCounterInfo). */
export function parsePerfCounters(val: XNode): PerfCounterInfo[] {
  return children(val, 'PerfCounterInfo').flatMap((c) => {
    const key = intOf(child(c, 'key'));
    const group = textOf(child(child(c, 'groupInfo'), 'key'));
    const name = textOf(child(child(c, 'nameInfo'), 'key'));
    const rollup = textOf(child(c, 'rollupType'));
    if (key === null || !group || !name || !rollup) return [];
    return [{ key, name: `${group}.${name}.${rollup}`, unit: textOf(child(child(c, 'unitInfo'), 'key')) ?? '' }];
  });
}

/** One PerfInterval of PerformanceManager.historicalInterval. */
export interface PerfInterval {
  /** The interval's intervalId in a PerfQuerySpec, in seconds: 300 for vCenter's first. */
  samplingPeriod: number;
  /** How long its samples are kept, in seconds. */
  length: number;
  /** The statistics level collected (1 to 4); null on ESXi, whose one interval is a baseline. */
  level: number | null;
  /** A disabled interval collects nothing. */
  enabled: boolean;
}

/** The intervals of a `historicalInterval` property value (ArrayOfPerfInterval). */
export function parsePerfIntervals(val: XNode): PerfInterval[] {
  return children(val, 'PerfInterval').flatMap((i) => {
    const samplingPeriod = intOf(child(i, 'samplingPeriod'));
    const length = intOf(child(i, 'length'));
    if (samplingPeriod === null || length === null) return [];
    return [{ samplingPeriod, length, level: intOf(child(i, 'level')), enabled: boolOf(child(i, 'enabled')) ?? false }];
  });
}

/** A PerfQuerySpec for one entity. */
export interface PerfQuerySpec {
  entity: MoRef;
  /** Exclusive: samples after this time. */
  startTime?: Date;
  /** Inclusive. */
  endTime?: Date;
  /** The most recent samples to return (realtime only: vCenter ignores it for historical intervals). */
  maxSample?: number;
  counterIds: readonly number[];
  /** "" is the aggregate of all instances. */
  instance: string;
  /** 20 (realtime) or a historical interval's samplingPeriod. */
  intervalId: number;
}

/** The spec's XML, its elements in the order of the WSDL's sequence (vCenter checks it). */
export function perfQuerySpecXml(spec: PerfQuerySpec): string {
  const instance = elementXml('instance', spec.instance);
  return (
    '<querySpec>' +
    moRefXml('entity', spec.entity) +
    (spec.startTime ? elementXml('startTime', spec.startTime.toISOString()) : '') +
    (spec.endTime ? elementXml('endTime', spec.endTime.toISOString()) : '') +
    (spec.maxSample !== undefined ? elementXml('maxSample', spec.maxSample) : '') +
    spec.counterIds.map((id) => `<metricId>${elementXml('counterId', id)}${instance}</metricId>`).join('') +
    elementXml('intervalId', spec.intervalId) +
    '</querySpec>'
  );
}

export interface PerfSampleInfo {
  /** The end of the sample's interval, in ms since the epoch. */
  timestamp: number;
  intervalSeconds: number;
}

/** One entity's answer: its samples' times and, per metric, one value per sample (-1: none). */
export interface PerfEntityMetric {
  entity: MoRef;
  sampleInfo: PerfSampleInfo[];
  series: { counterId: number; instance: string; values: number[] }[];
}

// Each entity's answer stays unparsed until it is reached: an answer for
// thousands of entities is parsed one entity at a time.
const RETURNVAL: ReadonlySet<string> = new Set(['returnval']);

/**
 * QueryPerf: every spec in one call. Entities the answer leaves out (a VM
 * that is off has no realtime samples) are absent from the result.
 */
export async function queryPerf(
  client: SoapClient,
  perfManager: MoRef,
  specs: readonly PerfQuerySpec[],
): Promise<Iterable<PerfEntityMetric>> {
  const res = await client.invoke(
    'QueryPerf',
    moRefXml('_this', perfManager) + specs.map(perfQuerySpecXml).join(''),
    RETURNVAL,
  );
  const entities = children(res, 'returnval');
  return {
    *[Symbol.iterator]() {
      for (const rv of entities) yield entityMetric(expandXml(rv));
    },
  };
}

function entityMetric(rv: XNode): PerfEntityMetric {
  const type = rv.attrs['xsi:type'];
  // Only the CSV format (which the gateway never asks for) has another type.
  if (type && type !== 'PerfEntityMetric') {
    throw new VsphereTransportError('PROTOCOL', `QueryPerf: unexpected ${type}`);
  }
  const entity = moRefOf(child(rv, 'entity'));
  if (!entity) throw new VsphereTransportError('PROTOCOL', 'QueryPerf: an answer without its entity');
  return {
    entity,
    sampleInfo: children(rv, 'sampleInfo').map((s) => {
      const timestamp = Date.parse(textOf(child(s, 'timestamp')) ?? '');
      if (Number.isNaN(timestamp)) throw new VsphereTransportError('PROTOCOL', 'QueryPerf: a sample without its time');
      return { timestamp, intervalSeconds: intOf(child(s, 'interval')) ?? 0 };
    }),
    series: children(rv, 'value').flatMap((v) => {
      const id = child(v, 'id');
      const counterId = intOf(child(id, 'counterId'));
      if (counterId === null) return [];
      return [
        {
          counterId,
          instance: textOf(child(id, 'instance')) ?? '',
          values: children(v, 'value').map((x) => intOf(x) ?? -1),
        },
      ];
    }),
  };
}

import { childNativeId } from '../../model/ids.js';
import type { SnapshotRecord } from '../../model/snapshot.js';
import type { VmRecord } from '../../model/vm.js';
import type { VmState } from '../watch.js';
import type { NativeDomainRecord, NativeSnapshot } from './addon.js';
import type { LibvirtClient } from './client.js';
import { domainState, snapshotPowerState } from './states.js';
import { parseDomainXml, parseSnapshotXml } from './xml.js';

// A few domains read whole (listing record, details, snapshots) in one call
// into the addon, without listing every domain: what the watch reads again
// after an event. The records are built as the provider's listVms,
// getVmDetails and getSnapshots build them (test/libvirt-watch.test.ts
// holds both to the same result).

/** Each UUID's domain as it is now: null when there is none, an Error when it could not be read. */
export async function readDomainStates(
  client: LibvirtClient,
  platformId: string,
  hostNativeId: string | null,
  uuids: readonly string[],
): Promise<Map<string, VmState | null | Error>> {
  const out = new Map<string, VmState | null | Error>();
  if (uuids.length === 0) return out;
  const records = await client.call('readDomains', uuids);
  uuids.forEach((uuid, i) => {
    const r = records[i];
    if (r === undefined || r === null) out.set(uuid, null);
    else if (r instanceof Error) out.set(uuid, r);
    else
      out.set(
        uuid,
        parseOrError(() => domainStateOf(platformId, hostNativeId, r)),
      );
  });
  return out;
}

/** A domain's listing record, from what libvirt says of it. */
export function vmRecordOf(
  platformId: string,
  hostNativeId: string | null,
  d: {
    uuid: string;
    name: string;
    id: number;
    state: number | undefined;
    reason: number | undefined;
    persistent: boolean;
    autostart: boolean;
  },
): VmRecord {
  return {
    platformId,
    nativeId: d.uuid,
    name: d.name,
    uuid: d.uuid,
    ...domainState(d.state, d.reason),
    runtimeId: d.id >= 0 ? d.id : null,
    persistent: d.persistent,
    autostart: d.autostart,
    isTemplate: false,
    hostNativeId,
  };
}

export function domainStateOf(platformId: string, hostNativeId: string | null, r: NativeDomainRecord): VmState {
  return {
    vm: vmRecordOf(platformId, hostNativeId, r),
    details: parseDomainXml(r.xml),
    snapshots: snapshotRecords(platformId, r.uuid, r.snapshots),
  };
}

export function snapshotRecords(
  platformId: string,
  vmUuid: string,
  snaps: readonly NativeSnapshot[],
): SnapshotRecord[] {
  return snaps.map((s): SnapshotRecord => {
    const parsed = parseSnapshotXml(s.xml);
    return {
      platformId,
      nativeId: childNativeId(vmUuid, s.name),
      vmNativeId: vmUuid,
      name: s.name,
      description: parsed.description,
      createdAt: parsed.createdAt,
      rawState: parsed.state,
      powerState: snapshotPowerState(parsed.state),
      includesMemory:
        parsed.memory === 'internal' || parsed.memory === 'external'
          ? true
          : parsed.memory === null && (parsed.state === 'running' || parsed.state === 'paused'),
      isCurrent: s.current,
      quiesced: null,
      key: s.name,
      parentKey: parsed.parentName,
    };
  });
}

export function parseOrError<T>(fn: () => T): T | Error {
  try {
    return fn();
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e));
  }
}

import { DomainStats } from './addon.js';
import type { LibvirtClient } from './client.js';
import { escapeXml } from '../xml/tree.js';
import { parseVolumeXml } from './xml.js';
import { OperationFailedError } from '../../model/operations.js';

/** A storage volume by its path: the pool that holds it, and what a backed volume needs of it. */
interface BackingVolume {
  poolUuid: string;
  capacityBytes: number;
  format: string;
}

/** Every volume of every pool by path, for the backing files of linked clones. */
export async function volumesByPath(c: LibvirtClient): Promise<Map<string, BackingVolume>> {
  const pools = await c.call('listAllStoragePools', 0);
  const perPool = await c.call(
    'listStorageVolumes',
    pools.map((p) => p.uuid),
  );
  const byPath = new Map<string, BackingVolume>();
  perPool.forEach((vols, i) => {
    if (vols instanceof Error) return;
    for (const v of vols) {
      const parsed = parseVolumeXml(v.xml);
      byPath.set(parsed.path ?? v.key, {
        poolUuid: pools[i]!.uuid,
        capacityBytes: parsed.capacityBytes,
        format: parsed.format ?? 'raw',
      });
    }
  });
  return byPath;
}

/**
 * A linked clone's disks are qcow2 volumes backed by the source's: nothing
 * is copied, and each clone writes to its own layer. A running source would
 * keep writing under its clones, so it must be stopped.
 */
export async function assertLinkable(c: LibvirtClient, uuid: string): Promise<void> {
  const running = (await c.call('getAllDomainStats', DomainStats.STATE, 0)).some((d) => d.uuid === uuid && d.id >= 0);
  if (running) {
    throw new OperationFailedError(
      "a linked clone shares the source's disks, which a running source keeps writing to: stop the source, or clone in full",
      'WRONG_STATE',
    );
  }
}

/** A new qcow2 volume in the source volume's pool, backed by it; its path. */
export async function backedVolume(
  c: LibvirtClient,
  backing: BackingVolume,
  sourcePath: string,
  name: string,
): Promise<string> {
  const xml =
    `<volume><name>${escapeXml(name)}</name><capacity unit='bytes'>${backing.capacityBytes}</capacity>` +
    `<target><format type='qcow2'/></target>` +
    `<backingStore><path>${escapeXml(sourcePath)}</path><format type='${escapeXml(backing.format)}'/></backingStore></volume>`;
  return c.call('createVolume', backing.poolUuid, xml);
}

import type { Placement as PlacementInput } from '../generated/graphql.js';
import type { Placement } from '../model/operations.js';
import { ErrorCode, GatewayError } from '../model/errors.js';
import { type NodeKind, decodeIdOf } from '../model/ids.js';
import { VM_TAG, VM_TAG_RULE } from '../model/vm.js';

/**
 * The native ID behind an input ID that must name an object of the given
 * platform (the VM's, or the one a VM is created on); anything else is a
 * BAD_USER_INPUT naming the input field.
 */
export function nativeIdOn(platformId: string, id: string, field: string[], ...kinds: NodeKind[]): string {
  const ref = decodeIdOf(id, ...kinds);
  if (ref.platformId !== platformId) {
    throw new GatewayError(
      ErrorCode.BAD_USER_INPUT,
      `${field.join('.')} names an object of platform "${ref.platformId}", not "${platformId}".`,
      { field },
    );
  }
  return ref.nativeId;
}

/** Native placement on the given platform; IDs of another platform are refused. */
export function placementOn(platformId: string, input: PlacementInput | null | undefined): Placement {
  const on = (id: string | null | undefined, field: string, ...kinds: NodeKind[]) =>
    id ? nativeIdOn(platformId, id, ['placement', field], ...kinds) : null;
  return {
    hostNativeId: on(input?.hostId, 'hostId', 'Host'),
    clusterNativeId: on(input?.clusterId, 'clusterId', 'Cluster'),
    storageNativeId: on(input?.storageId, 'storageId', 'Datastore', 'StoragePool'),
    folderPath: inventoryPath(input?.folder, 'folder'),
    resourcePoolPath: inventoryPath(input?.resourcePool, 'resourcePool'),
  };
}

function inventoryPath(path: string | null | undefined, field: string): string | null {
  if (path === null || path === undefined) return null;
  if (!/^\/[^/]/.test(path) || path.length > 2048) {
    throw new GatewayError(
      ErrorCode.BAD_USER_INPUT,
      `placement.${field} must be an inventory path such as /DC0/vm/web.`,
      {
        field: ['placement', field],
      },
    );
  }
  return path.replace(/\/+$/, '');
}

/** Tags as given, checked and without repeats; null when none were given. */
export function tagsOf(tags: readonly string[] | null | undefined): string[] | null {
  if (tags === null || tags === undefined) return null;
  const bad = tags.find((t) => !VM_TAG.test(t));
  if (bad !== undefined)
    throw new GatewayError(ErrorCode.BAD_USER_INPUT, `Tag "${bad.slice(0, 80)}" ${VM_TAG_RULE}.`, { field: ['tags'] });
  if (tags.length > 64) throw new GatewayError(ErrorCode.BAD_USER_INPUT, 'At most 64 tags.', { field: ['tags'] });
  return [...new Set(tags)];
}

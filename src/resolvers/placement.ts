import type { Placement as PlacementInput } from '../generated/graphql.js';
import type { Placement } from '../datasources/operations.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { decodeIdOf } from '../model/ids.js';

/** Native placement on the VM's own platform; IDs of another platform are refused. */
export function placementOn(platformId: string, input: PlacementInput | null | undefined): Placement {
  const on = (id: string | null | undefined, field: string, ...kinds: Parameters<typeof decodeIdOf>[1][]) => {
    if (!id) return null;
    const ref = decodeIdOf(id, ...kinds);
    if (ref.platformId !== platformId) {
      throw new GatewayError(ErrorCode.BAD_USER_INPUT, `placement.${field} is on platform "${ref.platformId}", not the VM's "${platformId}".`, {
        field: ['placement', field],
      });
    }
    return ref.nativeId;
  };
  return {
    hostNativeId: on(input?.hostId, 'hostId', 'Host'),
    clusterNativeId: on(input?.clusterId, 'clusterId', 'Cluster'),
    storageNativeId: on(input?.storageId, 'storageId', 'Datastore', 'StoragePool'),
  };
}

import { ErrorCode, GatewayError } from '../../model/errors.js';
import type { MigrationTarget, VmOperation } from '../../model/operations.js';
import type { VmRecord } from '../../model/vm.js';

/** A vSphere VM moves between hosts (and datastores) of its own vCenter. */
export function planVsphereMigration(vm: VmRecord, target: MigrationTarget): VmOperation {
  if (target.platformId !== vm.platformId) {
    throw new GatewayError(ErrorCode.BAD_USER_INPUT, 'A vSphere VM moves between hosts of its own vCenter.', {
      field: ['hostId'],
    });
  }
  return {
    kind: 'MIGRATE_VM',
    hostNativeId: target.hostNativeId,
    storageNativeId: target.storageNativeId,
    destination: null,
  };
}

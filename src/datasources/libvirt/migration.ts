import { ErrorCode, GatewayError } from '../../model/errors.js';
import type { MigrationTarget, VmOperation } from '../../model/operations.js';
import type { VmRecord } from '../../model/vm.js';

/**
 * A libvirt connection is one host, so a libvirt VM moves to the host of
 * another libvirt platform, peer to peer, with its storage where it is.
 */
export function planLibvirtMigration(vm: VmRecord, target: MigrationTarget): VmOperation {
  const refuse = (field: string, message: string) =>
    new GatewayError(ErrorCode.BAD_USER_INPUT, message, { field: [field] });
  if (target.platformId === vm.platformId) throw refuse('hostId', `${vm.name} already runs on that host.`);
  if (target.platformKind !== 'LIBVIRT')
    throw refuse('hostId', 'A libvirt VM moves to the host of another libvirt platform.');
  if (target.storageNativeId)
    throw refuse('storageId', 'A libvirt VM keeps its storage when it moves; leave storageId out.');
  return {
    kind: 'MIGRATE_VM',
    hostNativeId: target.hostNativeId,
    storageNativeId: null,
    destination: { platformId: target.platformId, uri: target.platformUri },
  };
}

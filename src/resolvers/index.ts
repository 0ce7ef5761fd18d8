import type { Resolvers } from '../generated/graphql.js';
import { Host, hostQueries } from './host.js';
import { Network, networkQueries } from './network.js';
import { Node, nodeQueries } from './node.js';
import { Platform, platformQueries } from './platform.js';
import { DateTime, SafeInt } from './scalars.js';
import { Snapshot } from './snapshot.js';
import { Storage, StoragePool, StorageVolume, storageQueries } from './storage.js';
import { VirtualMachine, virtualMachineQueries } from './virtual-machine.js';
import { VmDisk, VmNic } from './vm-devices.js';

export const resolvers: Resolvers = {
  DateTime,
  SafeInt,
  Query: {
    ...nodeQueries,
    ...platformQueries,
    ...hostQueries,
    ...virtualMachineQueries,
    ...networkQueries,
    ...storageQueries,
  },
  Node,
  Platform,
  Host,
  VirtualMachine,
  VmDisk,
  VmNic,
  Snapshot,
  Network,
  Storage,
  StoragePool,
  StorageVolume,
};

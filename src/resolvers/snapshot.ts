import type { SnapshotResolvers } from '../generated/graphql.js';
import { encodeId } from '../model/ids.js';
import { findVm, snapshotsOf } from './lookups.js';

export const Snapshot: SnapshotResolvers = {
  id: (s) => encodeId({ kind: 'Snapshot', platformId: s.platformId, nativeId: s.nativeId }),
  vm: async (s, _a, ctx) => {
    const vm = await findVm(ctx, s.platformId, s.vmNativeId);
    if (!vm) throw new Error(`snapshot ${s.name} outlived its VM ${s.vmNativeId}`);
    return vm;
  },
  parent: async (s, _a, ctx) => {
    if (!s.parentKey) return null;
    const siblings = await snapshotsOf(ctx, { platformId: s.platformId, nativeId: s.vmNativeId });
    return siblings.find((x) => x.key === s.parentKey) ?? null;
  },
  children: async (s, _a, ctx) => {
    const siblings = await snapshotsOf(ctx, { platformId: s.platformId, nativeId: s.vmNativeId });
    return siblings.filter((x) => x.parentKey === s.key);
  },
};

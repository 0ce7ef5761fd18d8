import type { Querier } from './declarations.js';

// VM pools over GraphQL (applyVmPool, scaleVmPool, deleteVmPool, vmPool):
// the documents, the rows they return and waits on a pool's status. No
// vitest here, so that the benchmark (bench/pool-ready.ts) uses the same
// documents: a GraphQL error throws, naming the operation.

export interface PoolConditionRow {
  type: string;
  status: string;
  reason: string;
  message: string | null;
}

export interface PoolMemberRow {
  name: string;
  spec: { runStrategy: string; generation: number };
  status: { phase: string; conditions: PoolConditionRow[] };
  vm: { id: string; name: string; powerState: string } | null;
}

export interface PoolRow {
  id: string;
  name: string;
  replicas: number;
  readyReplicas: number;
  warmStandbys: number;
  readyStandbys: number;
  namePattern: string;
  cloneMode: string;
  generation: number;
  resourceVersion: string;
  source: { id: string; name: string } | null;
  spec: { vcpus: number | null; memoryMiB: number | null; runStrategy: string };
  status: { phase: string; observedGeneration: number | null; conditions: PoolConditionRow[] };
  members: PoolMemberRow[];
  standbys: PoolMemberRow[];
  vms: { id: string; name: string; powerState: string }[];
}

export interface PoolUserError {
  code: string;
  field: string[] | null;
  message: string;
}

export interface PoolPayload {
  pool: PoolRow | null;
  userErrors: PoolUserError[];
}

const CONDITIONS = 'conditions { type status reason message }';
const MEMBER = `name spec { runStrategy generation } status { phase ${CONDITIONS} } vm { id name powerState }`;

/** Every field of a pool the tests look at. */
export const POOL_FIELDS = `id name replicas readyReplicas warmStandbys readyStandbys namePattern cloneMode
  generation resourceVersion source { id name } spec { vcpus memoryMiB runStrategy }
  status { phase observedGeneration ${CONDITIONS} }
  members { ${MEMBER} } standbys { ${MEMBER} } vms { id name powerState }`;

/** What a wait for readiness needs, and the members' Ready condition to say what held it up. */
export const POOL_COUNTS =
  'id replicas readyReplicas readyStandbys status { phase } ' +
  'members { name status { phase conditions { type status reason message } } } standbys { name }';

const payload = (mutation: string, input: string) => `mutation($input: ${input}!) {
  ${mutation}(input: $input) { pool { ${POOL_FIELDS} } userErrors { code field message } }
}`;

async function run<T>(gw: Querier, what: string, query: string, variables: Record<string, unknown>): Promise<T> {
  const res = await gw.query<Record<string, T>>(query, variables);
  if (res.errors !== undefined || !res.data) throw new Error(`${what}: ${JSON.stringify(res.errors ?? res)}`);
  return Object.values(res.data)[0] as T;
}

/** applyVmPool; a refusal is a userError, a GraphQL error throws. */
export const applyVmPool = (gw: Querier, input: Record<string, unknown>) =>
  run<PoolPayload>(gw, 'applyVmPool', payload('applyVmPool', 'ApplyVmPoolInput'), { input });

export const scaleVmPool = (gw: Querier, input: { poolId: string; replicas: number }) =>
  run<PoolPayload>(gw, 'scaleVmPool', payload('scaleVmPool', 'ScaleVmPoolInput'), { input });

export const deleteVmPool = (gw: Querier, input: { poolId: string; deleteVms: boolean }) =>
  run<PoolPayload>(gw, 'deleteVmPool', payload('deleteVmPool', 'DeleteVmPoolInput'), { input });

/** A mutation's pool, which must have been accepted. */
export function accepted(p: PoolPayload, what: string): PoolRow {
  if (p.userErrors.length > 0 || !p.pool) throw new Error(`${what} refused: ${JSON.stringify(p.userErrors)}`);
  return p.pool;
}

/** The pool by ID, with `fields` (all of POOL_FIELDS unless given); null when there is none. */
export const vmPool = <T = PoolRow>(gw: Querier, id: string, fields = POOL_FIELDS) =>
  run<T | null>(gw, 'vmPool', `query($id: ID!) { vmPool(id: $id) { ${fields} } }`, { id });

/** The pools of a platform, by name. */
export const vmPools = (gw: Querier, platformId: string | null, first = 100) =>
  run<{ totalCount: number; nodes: { id: string; name: string }[] }>(
    gw,
    'vmPools',
    'query($p: ID, $first: Int) { vmPools(platformId: $p, first: $first) { totalCount nodes { id name } } }',
    { p: platformId, first },
  );

/** What POOL_COUNTS reads. */
export interface PoolCounts {
  id: string;
  replicas: number;
  readyReplicas: number;
  readyStandbys: number;
  status: { phase: string };
  members: { name: string }[];
  standbys: { name: string }[];
}

/** A pool READY with all its replicas and `warmStandbys` standbys ready: nothing left to do. */
export const settled = (p: PoolCounts | null, warmStandbys: number): boolean =>
  p !== null &&
  p.status.phase === 'READY' &&
  p.readyReplicas === p.replicas &&
  p.members.length === p.replicas &&
  p.readyStandbys === warmStandbys &&
  p.standbys.length === warmStandbys;

/** What vmsStartingWith reads of a VM. */
export interface PoolVmRow {
  id: string;
  name: string;
  powerState: string;
  spec: { runStrategy: string; generation: number } | null;
}

/** The VMs whose names start with `prefix`, of one platform when given, by name, as the gateway lists them. */
export async function vmsStartingWith(
  gw: Querier,
  prefix: string,
  platformId: string | null = null,
): Promise<PoolVmRow[]> {
  const res = await run<{ nodes: PoolVmRow[] }>(
    gw,
    'virtualMachines',
    `query($n: String, $p: [ID!]) { virtualMachines(first: 1000, filter: { nameContains: $n, platformIds: $p }) {
      nodes { id name powerState spec { runStrategy generation } } } }`,
    { n: prefix, p: platformId === null ? null : [platformId] },
  );
  return res.nodes.filter((v) => v.name.startsWith(prefix)).sort((a, b) => a.name.localeCompare(b.name));
}

/** `prefix-001` ... for numbers `from` to `to`. */
export const numbered = (prefix: string, from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => `${prefix}-${String(from + i).padStart(3, '0')}`);

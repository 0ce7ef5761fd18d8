import { expect } from 'vitest';

/** What the declarative tests need of a gateway: an in-process TestGateway or a spawned GatewayProcess. */
export interface Querier {
  query<T = Record<string, unknown>>(
    query: string,
    variables?: Record<string, unknown>,
  ): Promise<{ data?: T | null; errors?: readonly unknown[] }>;
}

export interface ConditionRow {
  type: string;
  status: string;
  reason: string;
  message: string | null;
  lastTransitionTime: string;
}

export interface StatusRow {
  phase: string;
  observedGeneration: number | null;
  conditions: ConditionRow[];
}

export interface SpecRow {
  runStrategy: string;
  generation: number;
  resourceVersion: string;
  vcpus: number;
  memoryMiB: number;
  appliedBy: string;
  tags: string[];
}

export interface DeclarationRow {
  platform: { id: string };
  name: string;
  spec: SpecRow;
  status: StatusRow;
  vm: { id: string; name: string; powerState: string; vcpus: number; memoryMiB: number } | null;
}

export interface UserErrorRow {
  code: string;
  field: string[] | null;
  message: string;
}

const STATUS = 'status { phase observedGeneration conditions { type status reason message lastTransitionTime } }';
const SPEC = 'spec { runStrategy generation resourceVersion vcpus memoryMiB appliedBy tags }';
const DECLARATION = `platform { id } name ${SPEC} ${STATUS} vm { id name powerState vcpus memoryMiB }`;

export const APPLY_VM = `mutation($input: ApplyVmInput!) {
  applyVm(input: $input) { declaration { ${DECLARATION} } userErrors { code field message } }
}`;

export const FORGET_VM = `mutation($input: ForgetVmInput!) {
  forgetVm(input: $input) { vm { id name powerState } userErrors { code field message } }
}`;

export const VM_DECLARATIONS = `query($p: ID, $first: Int, $after: String) {
  vmDeclarations(platformId: $p, first: $first, after: $after) { totalCount nodes { ${DECLARATION} } }
}`;

export interface ApplyPayload {
  declaration: DeclarationRow | null;
  userErrors: UserErrorRow[];
}

/** Runs applyVm; GraphQL errors fail the test (a refusal is a userError). */
export async function applyVm(gw: Querier, input: Record<string, unknown>): Promise<ApplyPayload> {
  const res = await gw.query<{ applyVm: ApplyPayload }>(APPLY_VM, { input });
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return res.data!.applyVm;
}

/** Runs applyVm that must be accepted; the declaration as it then stands. */
export async function applied(gw: Querier, input: Record<string, unknown>): Promise<DeclarationRow> {
  const payload = await applyVm(gw, input);
  expect(payload.userErrors).toEqual([]);
  expect(payload.declaration).not.toBeNull();
  return payload.declaration!;
}

export async function forgetVm(
  gw: Querier,
  input: Record<string, unknown>,
): Promise<{ vm: { id: string; name: string; powerState: string } | null; userErrors: UserErrorRow[] }> {
  const res = await gw.query<{
    forgetVm: { vm: { id: string; name: string; powerState: string } | null; userErrors: UserErrorRow[] };
  }>(FORGET_VM, { input });
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return res.data!.forgetVm;
}

/** Every declaration of a platform (one page of 100). */
export async function declarations(
  gw: Querier,
  platformId?: string,
): Promise<{ totalCount: number; nodes: DeclarationRow[] }> {
  const res = await gw.query<{ vmDeclarations: { totalCount: number; nodes: DeclarationRow[] } }>(VM_DECLARATIONS, {
    p: platformId ?? null,
    first: 100,
  });
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return res.data!.vmDeclarations;
}

/** The declaration of `name`, or undefined. */
export async function declaration(gw: Querier, platformId: string, name: string): Promise<DeclarationRow | undefined> {
  return (await declarations(gw, platformId)).nodes.find((d) => d.name === name);
}

export interface VmRow {
  id: string;
  name: string;
  powerState: string;
  phase: string;
  vcpus: number;
  memoryMiB: number;
  tags: string[];
  spec: SpecRow | null;
  status: StatusRow;
}

const VM_FIELDS = `id name powerState phase vcpus memoryMiB tags ${SPEC} ${STATUS}`;

/** Every VM named exactly `name`, as the gateway shows it. */
export async function vmsNamed(gw: Querier, name: string): Promise<VmRow[]> {
  const res = await gw.query<{ virtualMachines: { nodes: VmRow[] } }>(
    `query($n: String) { virtualMachines(first: 100, filter: { nameContains: $n }) { nodes { ${VM_FIELDS} } } }`,
    { n: name },
  );
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return res.data!.virtualMachines.nodes.filter((v) => v.name === name);
}

/** The one VM named `name`, or undefined (more than one fails the test). */
export async function vmNamed(gw: Querier, name: string): Promise<VmRow | undefined> {
  const all = await vmsNamed(gw, name);
  expect(all.length, `VMs named ${name}`).toBeLessThanOrEqual(1);
  return all[0];
}

export const condition = (s: StatusRow, type: string): ConditionRow | undefined =>
  s.conditions.find((c) => c.type === type);

/**
 * Polls `probe` until `done` holds for its value, and returns that value;
 * past the deadline, fails naming what was last seen.
 */
export async function until<T>(
  what: string,
  probe: () => Promise<T>,
  done: (v: T) => boolean,
  timeoutMs = 10_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  let lastError: unknown;
  for (;;) {
    try {
      last = await probe();
      lastError = undefined;
      if (done(last)) return last;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `${what}: not within ${timeoutMs} ms; last seen: ${
          lastError !== undefined ? String(lastError) : JSON.stringify(last, null, 1)
        }`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Polls `probe` for `ms` and fails at the first value for which `holds` is false. */
export async function holdsFor<T>(
  what: string,
  probe: () => Promise<T>,
  holds: (v: T) => boolean,
  ms: number,
  intervalMs = 100,
): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await probe();
    if (!holds(v)) throw new Error(`${what}: no longer held after ${ms - (end - Date.now())} ms: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

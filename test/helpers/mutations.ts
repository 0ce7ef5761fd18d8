import { expect } from 'vitest';

import type { TestGateway } from './gateway.js';

export interface TaskRow {
  id: string;
  operation: string;
  state: string;
  progress: number;
  queuePosition: number | null;
  error: { code: string; message: string } | null;
  targetName: string;
  upstreamTaskId: string | null;
  resultSnapshot: { id: string; name: string } | null;
}

export interface Payload {
  vm: { id: string; name: string; powerState: string } | null;
  task: TaskRow | null;
  userErrors: { field: string[] | null; message: string; code: string }[];
}

const TASK_FIELDS =
  'id operation state progress queuePosition error { code message } targetName upstreamTaskId resultSnapshot { id name }';

/** Runs one mutation over real HTTP and returns its payload. */
export async function mutate(gw: TestGateway, mutation: string, input: Record<string, unknown>): Promise<Payload> {
  const inputType = `${mutation.charAt(0).toUpperCase()}${mutation.slice(1)}Input`;
  const known = [
    'StopVmInput',
    'DeleteVmInput',
    'CreateSnapshotInput',
    'DeleteSnapshotInput',
    'CloneVmInput',
    'ReconfigureVmInput',
    'CreateVmInput',
    'MigrateVmInput',
  ];
  const type = known.includes(inputType)
    ? inputType
    : input['snapshotId']
      ? 'SnapshotOperationInput'
      : 'VmOperationInput';
  const res = await gw.query<Record<string, Payload>>(
    `mutation($input: ${type}!) { ${mutation}(input: $input) { vm { id name powerState } task { ${TASK_FIELDS} } userErrors { field message code } } }`,
    { input },
  );
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return res.data![mutation] as Payload;
}

/** Polls a task until it has finished. */
export async function finished(gw: TestGateway, taskId: string, timeoutMs = 20_000): Promise<TaskRow> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await gw.query<{ task: TaskRow }>(`query($id: ID!) { task(id: $id) { ${TASK_FIELDS} } }`, {
      id: taskId,
    });
    const task = res.data!.task;
    if (['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(task.state)) return task;
    if (Date.now() > deadline) throw new Error(`task ${taskId} still ${task.state}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs a mutation that must be accepted, and waits for its task to succeed. */
export async function succeed(gw: TestGateway, mutation: string, input: Record<string, unknown>): Promise<TaskRow> {
  const payload = await mutate(gw, mutation, input);
  expect(payload.userErrors).toEqual([]);
  const task = await finished(gw, payload.task!.id);
  expect(task.error, JSON.stringify(task.error)).toBeNull();
  expect(task).toMatchObject({ state: 'SUCCEEDED', progress: 100 });
  return task;
}

import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { IdempotencyKeys, inputFingerprint } from '../src/mutations/idempotency.js';
import { DurableMap } from '../src/state/durable-map.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { finished } from './helpers/mutations.js';
import { type RedisServer, redisServer } from './helpers/redis-server.js';
import { eventually } from './helpers/subscriptions.js';

// Idempotency keys as Stripe keeps them, and mutation payloads a normalized
// client cache may trust, against real gateways on libvirt's test driver:
// one gateway with its keys on disk, and two gateways sharing theirs through
// a real redis-server. A key replays only the request it was first used for
// (other input or another mutation is IDEMPOTENCY_KEY_REUSED); a refusal
// binds no key, so a retry after the cause is fixed runs; keys written
// before fingerprints existed still replay; and a payload's `vm` is the VM
// as the gateway sees it when it answers, never the copy from before the
// operation.

interface Answer {
  clientMutationId: string | null;
  vm: { id: string; powerState: string } | null;
  task: { id: string; state: string; target: { powerState: string } | null } | null;
  userErrors: { field: string[] | null; code: string; message: string }[];
}

const INPUT_TYPES: Record<string, string> = {
  startVm: 'VmOperationInput',
  pauseVm: 'VmOperationInput',
  unpauseVm: 'VmOperationInput',
  stopVm: 'StopVmInput',
  createSnapshot: 'CreateSnapshotInput',
};

async function send(gw: TestGateway, mutation: string, input: Record<string, unknown>): Promise<Answer> {
  const res = await gw.query<Record<string, Answer>>(
    `mutation($input: ${INPUT_TYPES[mutation]}!) { ${mutation}(input: $input) {
      clientMutationId vm { id powerState } task { id state target { powerState } } userErrors { field code message }
    } }`,
    { input },
  );
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return res.data![mutation]!;
}

/** Sends a mutation that must start a task, and waits for it to succeed. */
async function done(gw: TestGateway, mutation: string, input: Record<string, unknown>): Promise<Answer> {
  const answer = await send(gw, mutation, input);
  expect(answer.userErrors).toEqual([]);
  expect((await finished(gw, answer.task!.id)).state).toBe('SUCCEEDED');
  return answer;
}

async function vmNamed(gw: TestGateway, name: string): Promise<{ id: string; powerState: string }> {
  const res = await gw.query<{ virtualMachines: { nodes: { id: string; name: string; powerState: string }[] } }>(
    'query($n: String) { virtualMachines(first: 100, filter: { nameContains: $n }) { nodes { id name powerState } } }',
    { n: name },
  );
  const vm = res.data!.virtualMachines.nodes.find((v) => v.name === name);
  expect(vm, name).toBeDefined();
  return vm!;
}

async function snapshotNames(gw: TestGateway, name: string): Promise<string[]> {
  const res = await gw.query<{ virtualMachines: { nodes: { name: string; snapshots: { name: string }[] }[] } }>(
    'query($n: String) { virtualMachines(first: 100, filter: { nameContains: $n }) { nodes { name snapshots { name } } } }',
    { n: name },
  );
  return res.data!.virtualMachines.nodes.find((v) => v.name === name)!.snapshots.map((s) => s.name);
}

/** A stored payload as the version before fingerprints kept it: the whole VM record, as it was then. */
function oldStyleVm(ref: { platformId: string; nativeId: string }, name: string): Record<string, unknown> {
  return { ...ref, name, uuid: ref.nativeId, powerState: 'SUSPENDED', rawState: 'pmsuspended', rawStateReason: null };
}

function oldRefusal(): Record<string, unknown> {
  return {
    kind: 'single',
    payload: { vm: null, taskId: null, userErrors: [{ code: 'WRONG_STATE', field: null, message: 'It was OFF.' }] },
  };
}

/** Two ways into one gateway state, and what its keys hold, in the form of each store. */
interface Setup {
  name: string;
  vmName: string;
  first(): TestGateway;
  second(): TestGateway;
  /** Makes a key's outcome look as the version before fingerprints wrote it. */
  forgetFingerprint(idempotencyKey: string): Promise<void>;
  /** Keeps a refusal under a key, as the version before this one did. */
  keepOldRefusal(idempotencyKey: string, operation: string): Promise<void>;
}

function scenarios(setup: () => Setup): void {
  const both = () => [setup().first(), setup().second()] as const;
  /** Waits until every instance shows the VM in this power state (followers take the holder's word). */
  const settled = (powerState: string) =>
    eventually(async () => {
      for (const gw of both()) if ((await vmNamed(gw, setup().vmName)).powerState !== powerState) return false;
      return true;
    }, 10_000);
  /** The VM running, whatever a test before left it as: each test starts from there. */
  const running = async () => {
    const vm = await vmNamed(setup().first(), setup().vmName);
    if (vm.powerState === 'PAUSED') await done(setup().first(), 'unpauseVm', { vmId: vm.id });
    if (vm.powerState === 'OFF') await done(setup().first(), 'startVm', { vmId: vm.id });
    await settled('ON');
    return vm;
  };

  it('replays a key only for the same input: other input or another mutation is IDEMPOTENCY_KEY_REUSED', async () => {
    const [a, b] = both();
    const vm = await running();
    const first = await send(a, 'createSnapshot', { vmId: vm.id, name: 'snap-a', idempotencyKey: 'snap-1' });
    expect(first.userErrors).toEqual([]);

    const other = await send(b, 'createSnapshot', { vmId: vm.id, name: 'snap-b', idempotencyKey: 'snap-1' });
    expect(other.task).toBeNull();
    expect(other.userErrors).toHaveLength(1);
    expect(other.userErrors[0]).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED', field: ['idempotencyKey'] });
    expect(other.userErrors[0]!.message).toMatch(/with other input/);
    expect(other.userErrors[0]!.message).toMatch(/use a new key/);

    // clientMutationId is the client's own echo, not part of the request.
    const retry = await send(b, 'createSnapshot', {
      vmId: vm.id,
      name: 'snap-a',
      idempotencyKey: 'snap-1',
      clientMutationId: 'retry-2',
    });
    expect(retry).toMatchObject({ clientMutationId: 'retry-2', userErrors: [], task: { id: first.task!.id } });

    const anotherMutation = await send(a, 'pauseVm', { vmId: vm.id, idempotencyKey: 'snap-1' });
    expect(anotherMutation.task).toBeNull();
    expect(anotherMutation.userErrors[0]).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED', field: ['idempotencyKey'] });
    expect(anotherMutation.userErrors[0]!.message).toMatch(/was used for createSnapshot/);

    await finished(a, first.task!.id);
    const names = await snapshotNames(a, setup().vmName);
    expect(names).toContain('snap-a');
    expect(names).not.toContain('snap-b');
    expect((await vmNamed(a, setup().vmName)).powerState).toBe('ON');
  });

  it('remembers no refusal: a retry after the cause is fixed runs, and is then replayed', async () => {
    const [a, b] = both();
    const vm = await running();
    const wrongState = await send(a, 'unpauseVm', { vmId: vm.id, idempotencyKey: 'unpause-1' });
    expect(wrongState.userErrors.map((e) => e.code)).toEqual(['WRONG_STATE']);

    await done(a, 'pauseVm', { vmId: vm.id });
    await settled('PAUSED');
    const fixed = await send(b, 'unpauseVm', { vmId: vm.id, idempotencyKey: 'unpause-1' });
    expect(fixed.userErrors).toEqual([]);
    expect(fixed.task).not.toBeNull();
    expect((await finished(b, fixed.task!.id)).state).toBe('SUCCEEDED');
    await settled('ON');
    const again = await send(a, 'unpauseVm', { vmId: vm.id, idempotencyKey: 'unpause-1' });
    expect(again).toMatchObject({ userErrors: [], task: { id: fixed.task!.id, state: 'SUCCEEDED' } });

    // Refused for its input, then sent right with the same key: not bound to the input it was refused for.
    const invalid = await send(a, 'pauseVm', { vmId: 'not-an-id', idempotencyKey: 'pause-1' });
    expect(invalid.userErrors.map((e) => e.code)).toEqual(['INVALID_INPUT']);
    const corrected = await send(b, 'pauseVm', { vmId: vm.id, idempotencyKey: 'pause-1' });
    expect(corrected.userErrors).toEqual([]);
    expect((await finished(b, corrected.task!.id)).state).toBe('SUCCEEDED');
    await settled('PAUSED');
    await done(a, 'unpauseVm', { vmId: vm.id });
    await settled('ON');
  });

  it('answers with the VM as the gateway sees it then, never the copy from before the operation', async () => {
    const [a, b] = both();
    const vm = await running();
    const stop = await send(a, 'stopVm', { vmId: vm.id, force: true, idempotencyKey: 'stop-1' });
    expect(stop.userErrors).toEqual([]);
    // Both read when the response is made: a task that already finished shows in `vm` too.
    expect(stop.vm!.powerState).toBe(stop.task!.target!.powerState);
    if (stop.task!.state === 'SUCCEEDED') expect(stop.vm!.powerState).toBe('OFF');

    expect((await finished(a, stop.task!.id)).state).toBe('SUCCEEDED');
    await settled('OFF');
    const replay = await send(b, 'stopVm', { vmId: vm.id, force: true, idempotencyKey: 'stop-1' });
    expect(replay).toMatchObject({
      userErrors: [],
      vm: { id: vm.id, powerState: 'OFF' },
      task: { id: stop.task!.id, state: 'SUCCEEDED', target: { powerState: 'OFF' } },
    });
    await done(b, 'startVm', { vmId: vm.id });
    await settled('ON');
  });

  it('replays a key kept by the previous version (no fingerprint) for any input, its VM read anew', async () => {
    const vm = await running();
    const paused = await done(setup().first(), 'pauseVm', { vmId: vm.id, idempotencyKey: 'old-1' });
    await settled('PAUSED');
    await setup().forgetFingerprint('old-1');

    const replay = await send(setup().second(), 'pauseVm', { vmId: 'another-vm', idempotencyKey: 'old-1' });
    expect(replay).toMatchObject({ userErrors: [], task: { id: paused.task!.id, state: 'SUCCEEDED' } });
    // The VM the old entry kept whole (as SUSPENDED), read as it is now.
    const now = await vmNamed(setup().second(), setup().vmName);
    expect(replay.vm).toEqual({ id: now.id, powerState: now.powerState });
  });

  it('does not replay a refusal kept by the previous version', async () => {
    const vm = await running();
    await setup().keepOldRefusal('old-2', 'pauseVm');
    const runs = await send(setup().second(), 'pauseVm', { vmId: vm.id, idempotencyKey: 'old-2' });
    expect(runs.userErrors).toEqual([]);
    expect((await finished(setup().second(), runs.task!.id)).state).toBe('SUCCEEDED');
    await settled('PAUSED');
    await done(setup().first(), 'unpauseVm', { vmId: vm.id });
    await settled('ON');
  });
}

describe('idempotency keys on disk (one gateway)', () => {
  const estate = writeEstate({ vms: 3 });
  const dir = mkdtempSync(join(tmpdir(), 'virt-graph-idempotency-'));
  const file = join(dir, 'idempotency.jsonl');
  const config = { state: { dir }, platforms: [{ id: 'kvm', kind: 'libvirt', uri: estate.uri }] };
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway(config);
  });
  afterAll(() => gw?.close());

  /** Rewrites the journal while the gateway is stopped (it reads it only at start); the estate starts afresh. */
  async function rewrite(edit: (entries: { k: string; v?: Record<string, unknown> }[]) => void): Promise<void> {
    await gw.close();
    try {
      const entries = readFileSync(file, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { k: string; v?: Record<string, unknown> });
      edit(entries);
      writeFileSync(file, entries.map((e) => `${JSON.stringify(e)}\n`).join(''));
    } finally {
      gw = await startTestGateway(config);
    }
  }

  scenarios(() => ({
    name: 'disk',
    vmName: 'web-001',
    first: () => gw,
    second: () => gw,
    forgetFingerprint: (key) =>
      rewrite((entries) => {
        for (const e of entries) {
          if (e.k !== `anonymous\u0000${key}` || !e.v) continue;
          expect(e.v['fingerprint']).toMatch(/^[0-9a-f]{64}$/);
          delete e.v['fingerprint'];
          const payload = (e.v['outcome'] as { payload: { vm: { platformId: string; nativeId: string } } }).payload;
          payload.vm = oldStyleVm(payload.vm, 'web-001') as typeof payload.vm;
        }
      }),
    keepOldRefusal: (key, operation) =>
      rewrite((entries) => {
        entries.push({ k: `anonymous\u0000${key}`, v: { operation, at: Date.now(), outcome: oldRefusal() } });
      }),
  }));
});

describe('idempotency keys shared through Redis (two gateways)', () => {
  let redis: RedisServer;
  let client: Redis;
  let one: TestGateway;
  let two: TestGateway;
  beforeAll(async () => {
    redis = await redisServer();
    client = new Redis(redis.url);
    // Both instances in this process reach the same test:///default domains.
    const config = () => ({
      redis: { url: redis.url, connectTimeoutMs: 2_000 },
      platforms: [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }],
    });
    [one, two] = await Promise.all([startTestGateway(config()), startTestGateway(config())]);
  });
  afterAll(async () => {
    await Promise.all([one?.close(), two?.close()]);
    client?.disconnect();
    await redis?.stop();
  });

  const redisKey = (key: string) =>
    `virt-graph:idempotency:${createHash('sha256').update('anonymous').update('\u0000').update(key).digest('base64url')}`;

  scenarios(() => ({
    name: 'redis',
    vmName: 'test',
    first: () => one,
    second: () => two,
    async forgetFingerprint(key) {
      const held = JSON.parse((await client.get(redisKey(key)))!) as Record<string, unknown>;
      expect(held).toMatchObject({ s: 'done', fp: expect.stringMatching(/^[0-9a-f]{64}$/) });
      delete held['fp'];
      const payload = (held['outcome'] as { payload: { vm: { platformId: string; nativeId: string } } }).payload;
      payload.vm = oldStyleVm(payload.vm, 'test') as typeof payload.vm;
      await client.set(redisKey(key), JSON.stringify(held), 'PX', 60_000);
    },
    async keepOldRefusal(key, operation) {
      const held = { s: 'done', op: operation, at: Date.now(), outcome: oldRefusal() };
      await client.set(redisKey(key), JSON.stringify(held), 'PX', 60_000);
    },
  }));
});

describe('the request a key guards', () => {
  it('is the input as canonical JSON, without the key and the client’s echo', () => {
    const base = inputFingerprint({ vmId: 'v', placement: { hostId: 'h', folder: '/f' }, tags: ['a', 'b'] });
    expect(base).toMatch(/^[0-9a-f]{64}$/);
    const same = {
      tags: ['a', 'b'],
      placement: { folder: '/f', hostId: 'h' },
      vmId: 'v',
      idempotencyKey: 'k',
      clientMutationId: 'c',
      description: undefined,
    };
    expect(inputFingerprint(same)).toBe(base);
    expect(inputFingerprint({ ...same, tags: ['b', 'a'] })).not.toBe(base);
    expect(inputFingerprint({ ...same, placement: { folder: '/f', hostId: 'h2' } })).not.toBe(base);
  });

  it('binds only an outcome that acted: a retry waiting on a refusal runs itself, as on Redis', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'virt-graph-keys-')), 'keys.jsonl');
    writeFileSync(file, '');
    const { map } = await DurableMap.open<never>(file);
    const keys = new IdempotencyKeys<string>(map as never);
    let runs = 0;
    const request = (fingerprint: string) => ({
      operation: 'pauseVm',
      fingerprint,
      binds: (outcome: string) => outcome !== 'refused',
      run: async () => {
        runs += 1;
        await new Promise((r) => setTimeout(r, 20));
        return runs === 1 ? 'refused' : `task ${runs}`;
      },
    });
    const [first, waiting] = await Promise.all([keys.once('c', 'k', request('f')), keys.once('c', 'k', request('f'))]);
    expect([first, waiting]).toEqual([
      { outcome: 'refused', replayed: false },
      { outcome: 'task 2', replayed: false },
    ]);
    expect(await keys.once('c', 'k', request('f'))).toEqual({ outcome: 'task 2', replayed: true });
    expect(await keys.once('c', 'k', request('g'))).toEqual({ reused: 'INPUT', usedFor: 'pauseVm' });
    expect(keys.size).toBe(1);
    await map.close();
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { GraphQLError } from 'graphql';

import { encodeId } from '../src/model/ids.js';
import { describeLibvirtError } from '../src/datasources/libvirt/errors.js';
import { createErrorFormatter } from '../src/server/format-error.js';
import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';

let gw: TestGateway;
let platformId: string;
let vmId: string;

beforeAll(async () => {
  const estate = writeEstate({ vms: 12 });
  gw = await startTestGateway({
    limits: { maxDepth: 8, maxAliases: 5, maxTokens: 400, maxCost: 5_000, maxBodyBytes: 32 * 1024, maxPageSize: 100 },
    platforms: [{ id: 'lab', kind: 'libvirt', uri: estate.uri }],
  });
  const res = await gw.query<{ platforms: { id: string }[]; virtualMachines: { nodes: { id: string }[] } }>(
    '{ platforms { id } virtualMachines(first: 1) { nodes { id } } }',
  );
  platformId = res.data!.platforms[0]!.id;
  vmId = res.data!.virtualMachines.nodes[0]!.id;
});
afterAll(() => gw?.close());

const codes = (res: { errors?: readonly { extensions?: Record<string, unknown> }[] }) =>
  (res.errors ?? []).map((e) => e.extensions?.['code']);

describe('IDs', () => {
  it.each([
    ['not base64', 'not an id!'],
    ['base64 of garbage', Buffer.from('hello world').toString('base64url')],
    ['unknown kind', Buffer.from('v1:Toaster:lab:1').toString('base64url')],
    ['wrong version', Buffer.from('v9:VirtualMachine:lab:1').toString('base64url')],
    ['empty', ''],
  ])('refuses a malformed ID (%s) with INVALID_ID', async (_label, id) => {
    const res = await gw.query('query($id: ID!) { node(id: $id) { id } }', { id });
    expect(codes(res)).toEqual(['INVALID_ID']);
    expect(res.data).toEqual({ node: null });
  });

  it('returns null for a well-formed ID of an object that does not exist', async () => {
    const ids = [
      encodeId({ kind: 'VirtualMachine', platformId: 'lab', nativeId: '00000000-0000-0000-0000-000000000000' }),
      encodeId({ kind: 'VirtualMachine', platformId: 'elsewhere', nativeId: 'x' }),
      encodeId({ kind: 'Snapshot', platformId: 'lab', nativeId: 'no-such-vm/snap' }),
      encodeId({ kind: 'StorageVolume', platformId: 'lab', nativeId: 'no-slash' }),
    ];
    const res = await gw.query('query($ids: [ID!]!) { nodes(ids: $ids) { id } }', { ids });
    expect(res.errors).toBeUndefined();
    expect(res.data).toEqual({ nodes: [null, null, null, null] });
  });

  it('refuses an ID of the wrong kind where a kind is required', async () => {
    const res = await gw.query('query($h: ID!) { virtualMachines(filter: { hostIds: [$h] }) { totalCount } }', {
      h: vmId,
    });
    expect(codes(res)).toEqual(['INVALID_ID']);
    expect(res.errors![0]!.message).toBe('Expected the ID of a Host, got the ID of a VirtualMachine.');
  });

  it('refuses too many IDs in nodes()', async () => {
    const res = await gw.query('query($ids: [ID!]!) { nodes(ids: $ids) { id } }', { ids: Array(101).fill(vmId) });
    expect(codes(res)).toEqual(['INVALID_PAGINATION']);
  });
});

describe('filters and pagination', () => {
  it('refuses an unknown platform in a filter', async () => {
    const ghost = encodeId({ kind: 'Platform', platformId: 'ghost', nativeId: 'ghost' });
    const res = await gw.query('query($p: ID!) { virtualMachines(filter: { platformIds: [$p] }) { totalCount } }', {
      p: ghost,
    });
    expect(codes(res)).toEqual(['UNKNOWN_PLATFORM']);
    expect(res.errors![0]!.message).toBe('No platform "ghost" is configured.');
    const ok = await gw.query('query($p: ID!) { virtualMachines(filter: { platformIds: [$p] }) { totalCount } }', {
      p: platformId,
    });
    expect(ok.errors).toBeUndefined();
  });

  it.each([-1, 101, 2 ** 31 - 1])('refuses first: %d', async (first) => {
    const res = await gw.query('query($n: Int) { virtualMachines(first: $n) { totalCount } }', { n: first });
    expect(codes(res)).toEqual(['INVALID_PAGINATION']);
  });

  it('refuses a first beyond 32 bits as a GraphQL input error', async () => {
    const res = await gw.query('{ virtualMachines(first: 99999999999) { totalCount } }');
    expect(res.status).toBe(400);
    expect(codes(res)).toEqual(['GRAPHQL_VALIDATION_FAILED']);
  });

  it('accepts first: 0 for a count', async () => {
    const res = await gw.query<{ virtualMachines: { totalCount: number; edges: unknown[] } }>(
      '{ virtualMachines(first: 0) { totalCount edges { cursor } } }',
    );
    expect(res.data!.virtualMachines).toEqual({ totalCount: 12, edges: [] });
  });

  it('refuses a malformed cursor, and a cursor of another ordering', async () => {
    const bad = await gw.query('{ virtualMachines(after: "nope") { totalCount } }');
    expect(codes(bad)).toEqual(['INVALID_CURSOR']);
    const page = await gw.query<{ virtualMachines: { pageInfo: { endCursor: string } } }>(
      '{ virtualMachines(first: 2) { pageInfo { endCursor } } }',
    );
    const other = await gw.query(
      'query($c: String) { virtualMachines(after: $c, orderBy: { field: VCPUS }) { totalCount } }',
      {
        c: page.data!.virtualMachines.pageInfo.endCursor,
      },
    );
    expect(codes(other)).toEqual(['INVALID_CURSOR']);
  });
});

describe('document limits, on HTTP and on WebSocket', () => {
  const deep =
    '{ virtualMachines { edges { node { snapshots { children { children { children { children { name } } } } } } } } }';
  const wide = `{ ${Array.from({ length: 6 }, (_, i) => `a${i}: platforms { name }`).join(' ')} }`;
  const long = `{ platforms { ${Array.from({ length: 500 }, () => 'name').join(' ')} } }`;
  const costly =
    '{ virtualMachines(first: 100) { nodes { snapshots { children { children { name } } } disks { source } } } }';

  it.each([
    ['too deep', deep, 'QUERY_TOO_DEEP'],
    ['too many aliases', wide, 'TOO_MANY_ALIASES'],
    ['too many tokens', long, 'TOO_MANY_TOKENS'],
    ['too costly', costly, 'QUERY_TOO_COSTLY'],
  ])('refuses a document that is %s', async (_label, query, code) => {
    const http = await gw.query(query);
    expect(codes(http)).toEqual([code]);
    expect(http.data).toBeUndefined();
    expect(http.status).toBe(400);
    const ws = await gw.wsQuery(query);
    expect(codes(ws)).toEqual([code]);
  });

  it('counts `first` given through variables in the cost', async () => {
    const q = 'query($n: Int) { virtualMachines(first: $n) { nodes { snapshots { children { name } } } } }';
    // Per VM: snapshots (2 + its @listSize 8 x children (2 + @listSize 4 x name)) = 50, plus 2 for the node.
    expect(codes(await gw.query(q, { n: 96 }))).toEqual([]);
    expect(codes(await gw.query(q, { n: 97 }))).toEqual(['QUERY_TOO_COSTLY']);
  });

  it('does not count introspection against depth', async () => {
    const res = await gw.query(
      '{ __schema { types { fields { type { ofType { ofType { ofType { ofType { name } } } } } } } } }',
    );
    expect(res.errors).toBeUndefined();
  });

  it('refuses a body over maxBodyBytes with 413 before parsing it', async () => {
    const res = await fetch(gw.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: `{ platforms { name } } # ${'x'.repeat(40_000)}` }),
    });
    expect(res.status).toBe(413);
    expect(((await res.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe(
      'REQUEST_TOO_LARGE',
    );
  });

  it('refuses a body that is not JSON', async () => {
    const res = await fetch(gw.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"query": ',
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe(
      'BAD_REQUEST',
    );
  });

  it('refuses syntax errors and unknown fields with Apollo codes', async () => {
    expect(codes(await gw.query('{ platforms { name'))).toEqual(['GRAPHQL_PARSE_FAILED']);
    expect(codes(await gw.query('{ platforms { nope } }'))).toEqual(['GRAPHQL_VALIDATION_FAILED']);
    expect(codes(await gw.wsQuery('{ platforms { nope } }'))).toEqual(['GRAPHQL_VALIDATION_FAILED']);
  });
});

describe('error masking', () => {
  it('masks unexpected errors for clients and logs them in full', () => {
    const lines: string[] = [];
    const logger = pino({ level: 'debug' }, { write: (l: string) => lines.push(l) });
    const secret = new Error('connection string postgres://admin:hunter2@db/prod');
    const wrapped = new GraphQLError(secret.message, { originalError: secret, path: ['x'] });
    const out = createErrorFormatter(logger, () => null).formatOne(wrapped);
    expect(out).toEqual({
      message: 'Unexpected error.',
      path: ['x'],
      locations: undefined,
      extensions: { code: 'INTERNAL_SERVER_ERROR' },
    });
    expect(lines.join('')).toContain('hunter2');
  });

  it("keeps libvirt errors typed as UPSTREAM_ERROR with libvirt's code", () => {
    const logger = pino({ level: 'silent' });
    const libvirt = Object.assign(new Error('Domain not found'), { name: 'LibvirtError', code: 42, domain: 10 });
    const wrapped = new GraphQLError(libvirt.message, { originalError: libvirt });
    expect(createErrorFormatter(logger, describeLibvirtError).formatOne(wrapped).extensions).toEqual({
      code: 'UPSTREAM_ERROR',
      libvirtCode: 42,
    });
  });
});

import type { FormattedExecutionResult } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { writeEstate } from './fixtures/libvirt-estate.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';

// What a frontend team sees when a document does not fit the graph, over
// real HTTP and a real graphql-ws client against gateways on libvirt's test
// driver: a coded client error on either transport (never an internal one),
// and graphql-js's "Did you mean" only where introspection shows the schema anyway.

const platforms = [{ id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 2 }).uri }];
let open: TestGateway;
let closed: TestGateway;

beforeAll(async () => {
  [open, closed] = await Promise.all([
    startTestGateway({ server: { introspection: true }, platforms }),
    startTestGateway({ server: { introspection: false }, platforms }),
  ]);
});
afterAll(() => Promise.all([open?.close(), closed?.close()]));

const codes = (res: FormattedExecutionResult) => (res.errors ?? []).map((e) => e.extensions?.['code']);
const messages = (res: FormattedExecutionResult) => (res.errors ?? []).map((e) => e.message);
const unexpectedErrorsLogged = (gw: TestGateway) =>
  gw.logs().filter((l) => l['msg'] === 'unexpected error in a response');

const VM_CHANGED_BY_FILTER = 'subscription($f: VmChangeFilter) { vmChanged(filter: $f) { type } }';

describe('a subscription that does not fit the schema', () => {
  it('is refused over WebSocket with the validation code a query gets for the same mistake', async () => {
    const subscription = await open.wsQuery('subscription { noSuchField }');
    const query = await open.wsQuery('{ noSuchField }');
    expect(codes(subscription)).toEqual(['GRAPHQL_VALIDATION_FAILED']);
    expect(codes(query)).toEqual(['GRAPHQL_VALIDATION_FAILED']);
    expect(messages(subscription)).toEqual(['Cannot query field "noSuchField" on type "Subscription".']);
  });

  it('with a variable the schema cannot take is refused over WebSocket with BAD_USER_INPUT, as HTTP refuses it in a query', async () => {
    const ws = await open.wsQuery(VM_CHANGED_BY_FILTER, { f: { noSuchField: [] } });
    expect(codes(ws)).toEqual(['BAD_USER_INPUT']);
    expect(messages(ws)[0]).toContain('Field "noSuchField" is not defined by type "VmChangeFilter".');
    const http = await open.query('query($n: Int) { virtualMachines(first: $n) { totalCount } }', { n: 'ten' });
    const wsQuery = await open.wsQuery('query($n: Int) { virtualMachines(first: $n) { totalCount } }', { n: 'ten' });
    expect(codes(http)).toEqual(['BAD_USER_INPUT']);
    expect(wsQuery).toEqual({ errors: http.errors });
    expect(unexpectedErrorsLogged(open)).toEqual([]);
  });

  it('is refused over HTTP with the validation code', async () => {
    const res = await open.query('subscription { noSuchField }');
    expect(res.status).toBe(400);
    expect(codes(res)).toEqual(['GRAPHQL_VALIDATION_FAILED']);
  });

  it('that does fit is refused over HTTP as a bad request naming the WebSocket, and is not charged', async () => {
    const res = await open.query('subscription { platformStatusChanged { platform { id } } }');
    expect(res.status).toBe(400);
    expect(codes(res)).toEqual(['BAD_REQUEST']);
    expect(messages(res)[0]).toContain('WebSocket');
    expect(res.extensions?.['rateLimit']).toBeUndefined();
    expect(unexpectedErrorsLogged(open)).toEqual([]);
  });

  it('beside a query in one document does not stop the query running over HTTP', async () => {
    const res = await fetch(open.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        query: 'query Platforms { platforms { id } } subscription Status { platformStatusChanged { platform { id } } }',
        operationName: 'Platforms',
      }),
    });
    const body = (await res.json()) as FormattedExecutionResult<{ platforms: unknown[] }>;
    expect(body.errors).toBeUndefined();
    expect(body.data?.platforms).toHaveLength(1);
  });
});

type Transport = 'http' | 'ws';
const run = (gw: TestGateway, transport: Transport, query: string, variables?: Record<string, unknown>) =>
  transport === 'http' ? gw.query(query, variables) : gw.wsQuery(query, variables);

/** Documents graphql-js refuses with a suggestion, and the message without it. */
const SUGGESTED: [
  label: string,
  transport: Transport,
  query: string,
  variables: Record<string, unknown>,
  bare: string,
][] = [
  [
    'a misspelt field',
    'http',
    '{ virtualMachines(first: 1) { nodes { nme } } }',
    {},
    'Cannot query field "nme" on type "VirtualMachine".',
  ],
  [
    'a misspelt field',
    'ws',
    '{ virtualMachines(first: 1) { nodes { nme } } }',
    {},
    'Cannot query field "nme" on type "VirtualMachine".',
  ],
  [
    'a misspelt subscription field',
    'ws',
    'subscription { vmChaged { type } }',
    {},
    'Cannot query field "vmChaged" on type "Subscription".',
  ],
  [
    'a misspelt enum value (two suggestions)',
    'ws',
    'subscription { vmChanged(filter: { powerStates: [OF] }) { type } }',
    {},
    'Value "OF" does not exist in "PowerState" enum.',
  ],
  [
    'a misspelt argument',
    'http',
    '{ virtualMachines(frist: 1) { totalCount } }',
    {},
    'Unknown argument "frist" on field "Query.virtualMachines".',
  ],
  [
    'a misspelt input field in a variable',
    'ws',
    VM_CHANGED_BY_FILTER,
    { f: { vmId: [] } },
    'Variable "$f" got invalid value { vmId: [] }; Field "vmId" is not defined by type "VmChangeFilter".',
  ],
];

describe('field suggestions', () => {
  it.each(SUGGESTED)(
    'are kept with introspection on: %s over %s',
    async (_label, transport, query, variables, bare) => {
      const [message] = messages(await run(open, transport, query, variables));
      expect(message).toMatch(/ Did you mean .+\?$/);
      expect(message?.startsWith(`${bare} Did you mean `)).toBe(true);
    },
  );

  it.each(SUGGESTED)(
    'are left out with introspection off: %s over %s',
    async (_label, transport, query, variables, bare) => {
      const res = await run(closed, transport, query, variables);
      expect(messages(res)).toEqual([bare]);
      expect(codes(res)[0]).toMatch(/^(GRAPHQL_VALIDATION_FAILED|BAD_USER_INPUT)$/);
    },
  );

  it('leave a message without a suggestion as it is, introspection off', async () => {
    const res = await closed.query('{ noSuchField }');
    expect(messages(res)).toEqual(['Cannot query field "noSuchField" on type "Query".']);
  });
});

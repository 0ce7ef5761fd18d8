import { randomUUID } from 'node:crypto';
import { join } from 'node:path';

import { ApolloGateway, IntrospectAndCompose, RemoteGraphQLDataSource } from '@apollo/gateway';
import { ApolloServer } from '@apollo/server';
import { ApolloServerPluginInlineTraceDisabled } from '@apollo/server/plugin/disabled';
import { startStandaloneServer } from '@apollo/server/standalone';
import { buildSubgraphSchema } from '@apollo/subgraph';
import {
  type DirectiveDefinitionNode,
  type FormattedExecutionResult,
  type ObjectTypeDefinitionNode,
  Kind,
  type StringValueNode,
  isObjectType,
  parse,
} from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { checkPublishedSchema, printPublishedSchema } from '../src/cli/print-schema.js';
import { encodeId } from '../src/model/ids.js';
import { validateConfig } from '../src/config/load.js';
import { listSizeOf, operationCost } from '../src/server/limits.js';
import { FEDERATION_SPEC_URL, buildGatewaySchema } from '../src/server/schema.js';
import { apiToken } from './helpers/callers.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { finished, mutate } from './helpers/mutations.js';
import { subscribe } from './helpers/subscriptions.js';

// The gateway as one subgraph of a company supergraph: Apollo Gateway
// composes it with a small CMDB subgraph that adds `owner` to
// VirtualMachine, and answers queries that cross both, in both directions
// (our VMs gain an owner; the CMDB's references gain our fields through
// `_entities`, which must apply the caller's visibility as node(id:) does).

// Apollo Gateway reports usage to Apollo unless told not to; a test reaches nothing outside the machine.
process.env['APOLLO_TELEMETRY_DISABLED'] = 'true';

const OUTSIDER = apiToken('outsider');
const AUTH = {
  // The supergraph's own requests (composition's `_service`) carry no credential.
  anonymous: { roles: ['admin'], tenants: ['*'] },
  apiTokens: [OUTSIDER.entry],
  // A tenant whose VMs (`web-*`) the test driver's estate does not have: the outsider sees none.
  tenants: { web: { platforms: ['kvm'], namePatterns: ['web-*'] } },
  bindings: [{ subjects: ['token:outsider'], roles: ['viewer'], tenants: ['web'] }],
};

/** The CMDB: owners by VM global ID. It still lists a VM that was deleted, as CMDBs do. */
const owners = new Map<string, string>();
const CMDB_TYPE_DEFS = parse(`
  extend schema @link(url: "${FEDERATION_SPEC_URL}", import: ["@key", "@shareable"])

  type VirtualMachine @key(fields: "id") {
    id: ID!
    "Who answers for the VM."
    owner: String
  }

  "The CMDB's own Relay page info: composes with the gateway's because both share it."
  type PageInfo @shareable {
    hasNextPage: Boolean!
    endCursor: String
  }

  type Query {
    "VMs an owner answers for; null where the VM is gone or hidden from the caller."
    vmsOwnedBy(owner: String!): [VirtualMachine]!
  }
`);

interface SupergraphContext {
  authorization?: string;
}

let gw: TestGateway;
// Set once started: stopping a server that never started throws.
let cmdb: ApolloServer | undefined;
let supergraph: ApolloServer<SupergraphContext> | undefined;
let supergraphUrl: string;
let testVmId: string;
const deletedVmId = encodeId({ kind: 'VirtualMachine', platformId: 'kvm', nativeId: randomUUID() });

async function post<T>(url: string, query: string, variables?: Record<string, unknown>, token?: string) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return { ...((await res.json()) as FormattedExecutionResult<T>), status: res.status };
}

beforeAll(async () => {
  gw = await startTestGateway({
    server: { federation: true },
    platforms: [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }],
    auth: AUTH,
  });
  const service = await gw.query('{ _service { sdl } }');
  if (service.errors) {
    throw new Error(
      `server.federation: true serves no _service (${service.errors[0]?.message}): does startGateway pass the option to buildGatewaySchema?`,
    );
  }
  const vms = await gw.query<{ virtualMachines: { nodes: { id: string; name: string }[] } }>(
    '{ virtualMachines(first: 10) { nodes { id name } } }',
  );
  testVmId = vms.data!.virtualMachines.nodes.find((v) => v.name === 'test')!.id;
  owners.set(testVmId, 'alice');
  owners.set(deletedVmId, 'alice');

  const cmdbServer = new ApolloServer({
    // The CMDB needs no traces for the router; off, it also says nothing on the console.
    plugins: [ApolloServerPluginInlineTraceDisabled()],
    schema: buildSubgraphSchema({
      typeDefs: CMDB_TYPE_DEFS,
      resolvers: {
        VirtualMachine: {
          __resolveReference: (ref: { id: string }) => ({ id: ref.id, owner: owners.get(ref.id) ?? null }),
        },
        Query: {
          vmsOwnedBy: (_root: unknown, { owner }: { owner: string }) =>
            [...owners].filter(([, o]) => o === owner).map(([id, o]) => ({ id, owner: o })),
        },
      },
    }),
  });
  const { url: cmdbUrl } = await startStandaloneServer(cmdbServer, { listen: { host: '127.0.0.1', port: 0 } });
  cmdb = cmdbServer;

  const supergraphServer = new ApolloServer<SupergraphContext>({
    gateway: new ApolloGateway({
      supergraphSdl: new IntrospectAndCompose({
        subgraphs: [
          { name: 'virt', url: gw.url },
          { name: 'cmdb', url: cmdbUrl },
        ],
      }),
      // The caller's credential goes on to each subgraph, so the gateway
      // filters what it returns by the caller, not by the router.
      buildService: ({ url }) =>
        new RemoteGraphQLDataSource<SupergraphContext>({
          url,
          willSendRequest({ request, context }) {
            if (context.authorization) request.http?.headers.set('authorization', context.authorization);
          },
        }),
    }),
  });
  ({ url: supergraphUrl } = await startStandaloneServer(supergraphServer, {
    listen: { host: '127.0.0.1', port: 0 },
    context: async ({ req }) => ({ authorization: req.headers.authorization }),
  }));
  supergraph = supergraphServer;
}, 60_000);

afterAll(async () => {
  await supergraph?.stop();
  await cmdb?.stop();
  await gw?.close();
});

interface VmRow {
  id: string;
  name: string;
  powerState: string;
  memoryMiB: number;
  owner: string | null;
}

describe('federation off', () => {
  it('leaves the schema the published contract, without federation fields', () => {
    const plain = buildGatewaySchema();
    expect(Object.keys(plain.getQueryType()!.getFields())).not.toContain('_entities');
    expect(plain.getDirective('key')).toBeUndefined();
    const published = join(import.meta.dirname, '..', 'schema.graphql');
    expect(
      checkPublishedSchema(
        published,
        'schema.graphql',
        printPublishedSchema(buildGatewaySchema({ federation: false })),
      ),
    ).toBeUndefined();
  });
});

describe('the federated schema', () => {
  const schema = buildGatewaySchema({ federation: true });

  it('is the plain schema plus federation: same types, fields and descriptions', () => {
    const plain = buildGatewaySchema();
    for (const type of Object.values(plain.getTypeMap())) {
      const federated = schema.getType(type.name);
      expect(federated?.description, type.name).toBe(type.description);
      if (isObjectType(type) && isObjectType(federated)) {
        const fields = Object.keys(federated.getFields()).filter((f) => !f.startsWith('_'));
        expect(fields.sort(), type.name).toEqual(Object.keys(type.getFields()).sort());
      }
    }
  });

  it('keeps the @listSize declarations the query cost reads, and counts _entities by its representations', () => {
    const query = schema.getQueryType()!.getFields();
    expect(listSizeOf(query['nodes']!)).toEqual({ slicingArgument: 'ids' });
    expect(listSizeOf(query['_entities']!)).toEqual({ slicingArgument: 'representations' });

    // A router's batch costs what it asks for: 2 for the list, then each entity's selections.
    const document = parse(
      'query($r: [_Any!]!) { _entities(representations: $r) { ... on VirtualMachine { id name } } }',
    );
    const { limits } = validateConfig({ platforms: [{ id: 'kvm', kind: 'libvirt', uri: 'test:///default' }] });
    const costFor = (n: number) =>
      operationCost(
        schema,
        document,
        null,
        { r: Array.from({ length: n }, () => ({ __typename: 'VirtualMachine' })) },
        limits,
      );
    expect(costFor(1)).toBe(2 + 2);
    expect(costFor(250)).toBe(2 + 250 * 2);
  });
});

describe('the gateway as a subgraph', () => {
  it('publishes its SDL with a key on every Node type, its scalars and the @listSize directive', async () => {
    const res = await gw.query<{ _service: { sdl: string } }>('{ _service { sdl } }');
    expect(res.errors).toBeUndefined();
    const sdl = parse(res.data!._service.sdl);
    const keyed = sdl.definitions
      .filter((d): d is ObjectTypeDefinitionNode => d.kind === Kind.OBJECT_TYPE_DEFINITION)
      .filter((d) => d.directives?.some((x) => x.name.value === 'key'))
      .map((d) => d.name.value)
      .sort();
    const nodeTypes = Object.values(buildGatewaySchema().getTypeMap())
      .filter((t) => isObjectType(t) && t.getInterfaces().some((i) => i.name === 'Node'))
      .map((t) => t.name)
      .sort();
    expect(keyed).toEqual(nodeTypes);
    const vm = sdl.definitions.find(
      (d): d is ObjectTypeDefinitionNode => d.kind === Kind.OBJECT_TYPE_DEFINITION && d.name.value === 'VirtualMachine',
    )!;
    const key = vm.directives!.find((d) => d.name.value === 'key')!;
    expect((key.arguments![0]!.value as StringValueNode).value).toBe('id');
    const listSize = sdl.definitions.find(
      (d): d is DirectiveDefinitionNode => d.kind === Kind.DIRECTIVE_DEFINITION && d.name.value === 'listSize',
    );
    expect(listSize?.arguments?.map((a) => a.name.value)).toEqual(['assumedSize', 'slicingArgument']);
    // Its uses stay on the fields, for the supergraph's own cost rules to read.
    expect(res.data!._service.sdl).toContain('@listSize(slicingArgument: "ids")');
    const scalars = sdl.definitions.filter((d) => d.kind === Kind.SCALAR_TYPE_DEFINITION).map((d) => d.name.value);
    expect(scalars).toEqual(expect.arrayContaining(['DateTime', 'SafeInt']));
  });

  it('resolves an entity through node(id:)’s path: visible to whom node(id:) shows it, null to others', async () => {
    const query = `query($r: [_Any!]!) { _entities(representations: $r) { ... on VirtualMachine { id name memoryMiB } } }`;
    const representations = [
      { __typename: 'VirtualMachine', id: testVmId },
      { __typename: 'VirtualMachine', id: deletedVmId },
    ];
    const seen = await post<{ _entities: ({ id: string; name: string; memoryMiB: number } | null)[] }>(gw.url, query, {
      r: representations,
    });
    expect(seen.errors).toBeUndefined();
    expect(seen.data!._entities).toEqual([{ id: testVmId, name: 'test', memoryMiB: expect.any(Number) }, null]);

    const hidden = await post<{ _entities: unknown[] }>(gw.url, query, { r: representations }, OUTSIDER.token);
    expect(hidden.errors).toBeUndefined();
    expect(hidden.data!._entities).toEqual([null, null]);
    const node = await post<{ node: unknown }>(gw.url, 'query($id: ID!) { node(id: $id) { id } }', { id: testVmId });
    expect(node.data!.node).toEqual({ id: testVmId });
  });

  it('refuses a representation without a usable ID as node(id:) refuses a bad ID, failing only its own entry', async () => {
    const res = await gw.query<{ _entities: unknown[] }>(
      `query($r: [_Any!]!) { _entities(representations: $r) { ... on VirtualMachine { id } } }`,
      {
        r: [
          { __typename: 'VirtualMachine' },
          { __typename: 'VirtualMachine', id: encodeId({ kind: 'Host', platformId: 'kvm', nativeId: 'h' }) },
          { __typename: 'VirtualMachine', id: testVmId },
        ],
      },
    );
    expect(res.errors?.map((e) => [e.path, e.extensions?.['code']])).toEqual([
      [['_entities', 0], 'INVALID_ID'],
      [['_entities', 1], 'INVALID_ID'],
    ]);
    expect(res.data!._entities).toEqual([null, null, { id: testVmId }]);
  });
});

describe('a supergraph composed with a CMDB subgraph', () => {
  it('answers a query that crosses both: our VMs with the CMDB’s owner', async () => {
    const res = await post<{ virtualMachines: { nodes: VmRow[] } }>(
      supergraphUrl,
      '{ virtualMachines(first: 10) { nodes { id name powerState memoryMiB owner } } }',
    );
    expect(res.errors).toBeUndefined();
    expect(res.data!.virtualMachines.nodes).toEqual([
      { id: testVmId, name: 'test', powerState: 'ON', memoryMiB: expect.any(Number), owner: 'alice' },
    ]);
  });

  it('answers the other way: the CMDB’s references gain our fields, null where the VM is gone', async () => {
    const res = await post<{ vmsOwnedBy: (VmRow | null)[] }>(
      supergraphUrl,
      '{ vmsOwnedBy(owner: "alice") { id name powerState owner } }',
    );
    expect(res.errors).toBeUndefined();
    expect(res.data!.vmsOwnedBy).toEqual([{ id: testVmId, name: 'test', powerState: 'ON', owner: 'alice' }, null]);
  });

  it('shows a caller only what the gateway shows it: the credential reaches the subgraph', async () => {
    const list = await post<{ virtualMachines: { nodes: VmRow[] } }>(
      supergraphUrl,
      '{ virtualMachines(first: 10) { nodes { id owner } } }',
      undefined,
      OUTSIDER.token,
    );
    expect(list.errors).toBeUndefined();
    expect(list.data!.virtualMachines.nodes).toEqual([]);

    const owned = await post<{ vmsOwnedBy: (VmRow | null)[] }>(
      supergraphUrl,
      '{ vmsOwnedBy(owner: "alice") { id name } }',
      undefined,
      OUTSIDER.token,
    );
    expect(owned.errors).toBeUndefined();
    expect(owned.data!.vmsOwnedBy).toEqual([null, null]);
  });
});

describe('subscriptions in federated mode', () => {
  // Apollo Gateway does not federate subscriptions: they stay on the gateway's own WebSocket.
  it('are served on the gateway’s own WebSocket', async () => {
    const sub = subscribe<{ vmChanged: { vmId: string | null; powerState: string | null } }>(
      gw.url,
      'subscription { vmChanged { vmId powerState } }',
    );
    try {
      // graphql-ws subscribes lazily: a short pause lets the subscription reach the gateway first.
      await new Promise((r) => setTimeout(r, 200));
      const stop = await mutate(gw, 'stopVm', { vmId: testVmId, force: true });
      expect(stop.userErrors).toEqual([]);
      await finished(gw, stop.task!.id);
      const events = await sub.until(1, 10_000);
      expect(events[0]!.vmChanged).toMatchObject({ vmId: testVmId });
      expect(events.some((e) => e.vmChanged.powerState === 'OFF')).toBe(true);
    } finally {
      await sub.close();
    }
  });
});

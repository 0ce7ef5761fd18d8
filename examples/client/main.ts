// A typed virt-graph client with nothing but fetch: lists VMs with their host
// and disks and, with --start NAME, starts that VM, printing each typed
// result as JSON.
//
//   npm run codegen                                  # once, and after each schema or query change
//   npm start -- http://127.0.0.1:4000/graphql [--start NAME]
//
// A token in VIRT_GRAPH_TOKEN (an OIDC/JWT bearer token or an API token) is
// sent as `Authorization: Bearer ...`; without one the call is anonymous.
import { parseArgs } from 'node:util';

import type { StartVmMutation as StartVm, TypedDocumentString, VmListQuery as VmList } from './gql/graphql.js';
import { StartVmMutation, VmListQuery } from './queries.js';

/** One entry of a GraphQL response's `errors`: the unexpected, with a stable `extensions.code`. */
interface GraphQLResponseError {
  message: string;
  path?: (string | number)[];
  extensions?: { code?: string; [key: string]: unknown };
}

/** A response that carried `errors`: the gateway could not answer all of the operation. */
class GraphQLRequestError extends Error {
  constructor(
    readonly status: number,
    readonly errors: GraphQLResponseError[],
  ) {
    super(errors.map((e) => `${e.extensions?.code ?? 'ERROR'}: ${e.message}`).join('; '));
    this.name = 'GraphQLRequestError';
  }
}

interface GraphQLResponse<TResult> {
  status: number;
  data?: TResult | null;
  errors?: GraphQLResponseError[];
}

async function post<TResult>(url: string, body: object, token: string | undefined): Promise<GraphQLResponse<TResult>> {
  const response = await fetch(url, {
    method: 'POST',
    headers: {
      // application/json also satisfies the gateway's CSRF check, which refuses plain form posts.
      'content-type': 'application/json',
      accept: 'application/graphql-response+json, application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify(body),
  });
  return { status: response.status, ...((await response.json()) as Omit<GraphQLResponse<TResult>, 'status'>) };
}

/**
 * Runs one typed operation over HTTP. Its result type and its variables'
 * type come from the document, so a wrong variable or a field the
 * operation did not select is a compile error here, not a surprise at run time.
 *
 * The document goes by its hash (`documentId`, from gql/persisted-documents.json),
 * which a gateway with `server.trustedDocuments` requires; one that does not
 * know the hash (no manifest, or an older one) answers
 * PERSISTED_QUERY_NOT_FOUND without running anything, so sending the text
 * instead cannot run a mutation twice.
 */
async function execute<TResult, TVariables>(
  url: string,
  document: TypedDocumentString<TResult, TVariables>,
  variables: TVariables,
  token = process.env['VIRT_GRAPH_TOKEN'],
): Promise<TResult> {
  const hash: unknown = document.__meta__?.['hash'];
  let answer =
    typeof hash === 'string'
      ? await post<TResult>(url, { documentId: hash, variables }, token)
      : await post<TResult>(url, { query: document.toString(), variables }, token);
  if (typeof hash === 'string' && answer.errors?.some((e) => e.extensions?.code === 'PERSISTED_QUERY_NOT_FOUND'))
    answer = await post<TResult>(url, { query: document.toString(), variables }, token);
  // A partial answer (one platform down) still has data, but showing it as
  // whole would hide the outage: this client treats any error as a failure.
  if (answer.errors && answer.errors.length > 0) throw new GraphQLRequestError(answer.status, answer.errors);
  if (answer.data == null) throw new GraphQLRequestError(answer.status, [{ message: `HTTP ${answer.status}` }]);
  return answer.data;
}

type Vm = NonNullable<VmList['virtualMachines']>['edges'][number]['node'];

/** Every VM, page by page: `first` and the last page's `endCursor` as `after`. */
async function listVms(url: string): Promise<Vm[]> {
  const vms: Vm[] = [];
  let after: string | null = null;
  for (;;) {
    const page: VmList = await execute(url, VmListQuery, { first: 100, after });
    // Null only with an error, which execute has thrown already.
    if (!page.virtualMachines) throw new Error('virtualMachines: no answer');
    vms.push(...page.virtualMachines.edges.map((e) => e.node));
    const { hasNextPage, endCursor } = page.virtualMachines.pageInfo;
    if (!hasNextPage || endCursor == null) return vms;
    after = endCursor;
  }
}

/** Starts a VM; a refusal (WRONG_STATE, FORBIDDEN, ...) comes back in `userErrors`, not as an exception. */
async function startVm(url: string, vmId: string): Promise<StartVm['startVm']> {
  const { startVm } = await execute(url, StartVmMutation, { input: { vmId } });
  return startVm;
}

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({ allowPositionals: true, options: { start: { type: 'string' } } });
  const [url] = positionals;
  if (url === undefined || positionals.length > 1) {
    console.error('Usage: npm start -- GRAPHQL_URL [--start VM_NAME]');
    process.exit(2);
  }
  const vms = await listVms(url);
  const result: { virtualMachines: typeof vms; startVm?: StartVm['startVm'] } = { virtualMachines: vms };
  if (values.start !== undefined) {
    const vm = vms.find((v) => v.name === values.start);
    if (!vm) throw new Error(`no VM named ${values.start}`);
    result.startVm = await startVm(url, vm.id);
  }
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exit(1);
});

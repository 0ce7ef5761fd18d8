// The gateway of bench/request-throughput.ts, in a process of its own (so
// that its RSS and CPU are its own), with what the benchmark compares it to
// in the same process, on the same schema, context and SYNCED mirror:
//
// - graphql-js: `execute` of a parsed and validated document, in a closed
//   loop inside this process (the baseline: no HTTP, no JSON);
// - graphql-jit: the same document compiled once, for hot documents;
// - a bare HTTP layer: `node:http`, JSON in and out, the document parsed
//   and validated once, then graphql-js; no Apollo, no cost or rate limits,
//   no authentication, no access log or metrics.
//
// bench/request-throughput.ts compiles it to plain JavaScript over dist/ and
// starts it with an IPC channel; the configuration comes as JSON in THROUGHPUT_CONFIG. Says
// `{ ready: { url, bareUrl } }` once every platform is SYNCED, then answers
// each `{ run }` message with `{ result }`.
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

import {
  type DocumentNode,
  type ExecutionResult,
  type GraphQLSchema,
  execute,
  parse,
  specifiedRules,
  validate,
} from 'graphql';
import { compileQuery, isCompiledQuery } from 'graphql-jit';
import { pino } from 'pino';

import { validateConfig } from '../src/config/load.js';
import { ANONYMOUS } from '../src/model/caller.js';
import { startGateway } from '../src/server/gateway.js';
import { type LoopResult, closedLoop } from './closed-loop.js';

export type InProcessMode = 'graphql-js' | 'graphql-jit';

export interface RunRequest {
  mode: InProcessMode;
  query: string;
  /** One set of variables per request, taken in turn. */
  variables: Record<string, unknown>[];
  concurrency: number;
  durationMs: number;
}

export type RunResult = LoopResult;

export type HostMessage = { ready: { url: string; bareUrl: string } } | { result: RunResult } | { error: string };

const send = (message: HostMessage) => process.send?.(message);

const config = validateConfig(JSON.parse(process.env['THROUGHPUT_CONFIG'] ?? '{}') as Record<string, unknown>);
const gateway = await startGateway(config, pino({ level: 'warn' }, pino.destination(2)));
await gateway.ready;

/** Parsed and validated once per query text, as Apollo's document cache does for the gateway. */
const documents = new Map<string, DocumentNode>();
function documentOf(schema: GraphQLSchema, query: string): DocumentNode {
  let document = documents.get(query);
  if (!document) {
    document = parse(query);
    const errors = validate(schema, document, specifiedRules);
    if (errors.length > 0) throw new Error(errors.map((e) => e.message).join('; '));
    documents.set(query, document);
  }
  return document;
}

const run = (query: string, variableValues: Record<string, unknown>): Promise<ExecutionResult> =>
  Promise.resolve(
    execute({
      schema: gateway.schema,
      document: documentOf(gateway.schema, query),
      variableValues,
      contextValue: gateway.contextFor(ANONYMOUS),
    }),
  );

function compiled(query: string): (variables: Record<string, unknown>) => Promise<ExecutionResult> {
  const result = compileQuery(gateway.schema, documentOf(gateway.schema, query));
  if (!isCompiledQuery(result)) throw new Error(`graphql-jit: ${JSON.stringify(result.errors)}`);
  return (variables) => Promise.resolve(result.query(undefined, gateway.contextFor(ANONYMOUS), variables));
}

async function waitSynced(): Promise<void> {
  for (;;) {
    const { data } = await run('{ platforms { inventoryState } }', {});
    const states = ((data?.['platforms'] ?? []) as { inventoryState: string }[]).map((p) => p.inventoryState);
    if (states.length > 0 && states.every((s) => s === 'SYNCED')) return;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** One in-process way in a closed loop; a result with errors fails the run. */
function runInProcess(request: RunRequest): Promise<RunResult> {
  const once =
    request.mode === 'graphql-jit' ? compiled(request.query) : (v: Record<string, unknown>) => run(request.query, v);
  return closedLoop(request.concurrency, request.durationMs, request.variables, async (variables) => {
    const result = await once(variables);
    if (result.errors?.length) throw new Error(`${request.mode}: ${JSON.stringify(result.errors)}`);
  });
}

/** The lighter HTTP layer: a POSTed `{ query, variables }` executed with graphql-js, answered as JSON. */
function bareHandler(req: IncomingMessage, res: ServerResponse): void {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    void (async () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
          query: string;
          variables?: Record<string, unknown>;
        };
        const result = await run(body.query, body.variables ?? {});
        const json = JSON.stringify(result);
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) });
        res.end(json);
      } catch (e) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ message: (e as Error).message }] }));
      }
    })();
  });
}

const bare = createServer(bareHandler);
await new Promise<void>((resolve) => bare.listen(0, '127.0.0.1', resolve));
await waitSynced();
send({
  ready: { url: gateway.url, bareUrl: `http://127.0.0.1:${(bare.address() as AddressInfo).port}/graphql` },
});

process.on('message', (message: { run?: RunRequest; stop?: true }) => {
  if (message.run) {
    runInProcess(message.run).then(
      (result) => send({ result }),
      (e: unknown) => send({ error: (e as Error).message }),
    );
  } else if (message.stop) {
    bare.close();
    bare.closeAllConnections();
    void gateway.close().then(() => process.exit(0));
  }
});

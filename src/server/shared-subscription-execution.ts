import { type ExecutionArgs, type ExecutionResult, createSourceEventStream, execute, print } from 'graphql';

import type { Delivery } from '../subscriptions/event-log.js';

type Result = ExecutionResult | Promise<ExecutionResult>;

/**
 * Executes subscriptions so that one event is resolved once per distinct
 * operation (document, operation name, variables, caller), however many
 * subscribers share it: 1,000 dashboards with the same subscription cost
 * one execution per event, not 1,000. Results are kept for the few most
 * recent events only.
 */
export function createSharedSubscribe(
  callerOf: (args: ExecutionArgs) => string,
  /** Executions kept (distinct operations × recent events). @default 2_000 */
  maxKept = 2_000,
) {
  const kept = new Map<string, Result>();
  const documentKeys = new WeakMap<object, string>();
  const documentKey = (args: ExecutionArgs) => {
    let key = documentKeys.get(args.document);
    if (key === undefined) documentKeys.set(args.document, (key = print(args.document)));
    return key;
  };

  const resolveEvent = (args: ExecutionArgs, delivery: Delivery): Result => {
    const cursor = delivery.type === 'EVENT' ? delivery.envelope.cursor : `resync:${delivery.cursor}`;
    const key = `${cursor}\u0000${args.operationName ?? ''}\u0000${callerOf(args)}\u0000${JSON.stringify(args.variableValues ?? {})}\u0000${documentKey(args)}`;
    let result = kept.get(key);
    if (!result) {
      result = execute({ ...args, rootValue: delivery });
      kept.set(key, result);
      if (kept.size > maxKept) kept.delete(kept.keys().next().value as string);
    }
    return result;
  };

  return async (args: ExecutionArgs) => {
    const stream = await createSourceEventStream(args);
    if (!(Symbol.asyncIterator in stream)) return stream as ExecutionResult;
    const source = stream as AsyncIterableIterator<Delivery>;
    const mapped: AsyncIterableIterator<ExecutionResult> = {
      [Symbol.asyncIterator]() {
        return this;
      },
      async next() {
        const item = await source.next();
        if (item.done) return { value: undefined, done: true };
        return { value: await resolveEvent(args, item.value), done: false };
      },
      async return() {
        await source.return?.();
        return { value: undefined, done: true };
      },
      async throw(e: unknown) {
        await source.return?.();
        throw e;
      },
    };
    return mapped;
  };
}

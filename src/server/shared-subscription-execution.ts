import { type ExecutionArgs, type ExecutionResult, createSourceEventStream, execute, print } from 'graphql';

import type { Delivery } from '../subscriptions/event-log.js';
import type { MetricDelivery } from '../subscriptions/metric-subscription.js';

/** What one subscription's source stream yields, and the key its result is shared under. */
function deliveryKey(d: Delivery | MetricDelivery): string {
  if (d.type === 'METRICS') return `metrics:${d.update.key}`;
  return d.type === 'EVENT' ? d.envelope.cursor : `resync:${d.cursor}`;
}

export interface SharedSubscribeOptions {
  /** Who runs an operation: operations of different callers are never shared. */
  callerOf(args: ExecutionArgs): string;
  /** An event's result as the JSON text sent to clients (errors formatted). */
  serialize(result: ExecutionResult, args: ExecutionArgs): string;
  /** Results kept (distinct operations × recent events). @default 2_000 */
  maxKept?: number;
}

/**
 * Executes subscriptions so that one event is resolved and serialized once
 * per distinct operation (document, operation name, variables, caller),
 * however many subscribers share it: 1,000 dashboards with the same
 * subscription cost one execution and one JSON text per event, not 1,000.
 * Results are kept for the few most recent events only.
 *
 * Returns the stream of payloads, or the result that refused the
 * subscription (an unknown platform in its filter, a bad cursor).
 */
export function createSharedSubscribe(opts: SharedSubscribeOptions) {
  const maxKept = opts.maxKept ?? 2_000;
  const kept = new Map<string, Promise<string>>();
  const documentKeys = new WeakMap<object, string>();
  // Distinct operations get a short number for the per-event key, released with their last subscriber.
  const operations = new Map<string, { id: number; users: number }>();
  let nextOperationId = 0;

  const operationKey = (args: ExecutionArgs) => {
    let doc = documentKeys.get(args.document);
    if (doc === undefined) documentKeys.set(args.document, (doc = print(args.document)));
    return `${args.operationName ?? ''}\u0000${opts.callerOf(args)}\u0000${JSON.stringify(args.variableValues ?? {})}\u0000${doc}`;
  };

  const resolveEvent = (
    operationId: number,
    args: ExecutionArgs,
    delivery: Delivery | MetricDelivery,
  ): Promise<string> => {
    const key = `${deliveryKey(delivery)}|${operationId}`;
    let result = kept.get(key);
    if (!result) {
      result = Promise.resolve(execute({ ...args, rootValue: delivery })).then((r) => opts.serialize(r, args));
      kept.set(key, result);
      if (kept.size > maxKept) kept.delete(kept.keys().next().value as string);
    }
    return result;
  };

  return async (args: ExecutionArgs): Promise<ExecutionResult | AsyncIterator<string>> => {
    const stream = await createSourceEventStream(args);
    if (!(Symbol.asyncIterator in stream)) return stream as ExecutionResult;
    const source = stream as AsyncIterableIterator<Delivery | MetricDelivery>;
    const key = operationKey(args);
    let operation = operations.get(key);
    if (!operation) operations.set(key, (operation = { id: nextOperationId++, users: 0 }));
    operation.users += 1;
    const { id } = operation;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const op = operations.get(key);
      if (op && --op.users === 0) operations.delete(key);
    };
    return {
      async next() {
        const item = await source.next();
        if (item.done) {
          release();
          return { value: undefined, done: true };
        }
        return { value: await resolveEvent(id, args, item.value), done: false };
      },
      async return() {
        release();
        await source.return?.();
        return { value: undefined, done: true };
      },
    };
  };
}

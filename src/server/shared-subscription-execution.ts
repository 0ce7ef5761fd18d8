import { type ExecutionArgs, type ExecutionResult, createSourceEventStream, execute, print } from 'graphql';

import type { Delivery } from '../subscriptions/event-log.js';
import type { MetricDelivery } from '../subscriptions/metric-subscription.js';
import type { SubscriberStream } from '../subscriptions/subscriber-queue.js';
import type { PayloadStream } from './graphql-transport-ws.js';

type SourceItem = Delivery | MetricDelivery;

/** What one subscription's source stream yields, and the key its result is shared under. */
function deliveryKey(d: SourceItem): string {
  if (d.type === 'METRICS') return `metrics:${d.update.key}`;
  return d.type === 'EVENT' ? d.envelope.cursor : `resync:${d.cursor}`;
}

/** A distinct operation: the short number its results are kept under, and how many subscriptions run it. */
interface SharedOperation {
  id: number;
  key: string;
  users: number;
}

export interface SharedSubscribeOptions {
  /** Who runs an operation: operations of different callers are never shared. */
  callerOf(args: ExecutionArgs): string;
  /** An event's result as the JSON text sent to clients (errors formatted). */
  serialize(result: ExecutionResult, args: ExecutionArgs): string;
  /** Results kept (distinct operations × recent events). @default 2_000 */
  maxKept?: number;
}

/** A source stream that can push: what every subscribe resolver of the schema returns. */
function isPushable(stream: AsyncIterator<unknown>): stream is SubscriberStream<SourceItem> {
  const s = stream as Partial<SubscriberStream<SourceItem>>;
  return typeof s.attach === 'function' && typeof s.resume === 'function';
}

/**
 * Executes subscriptions so that one event is resolved and serialized once
 * per distinct operation (document, operation name, variables, caller),
 * however many subscribers share it: 1,000 dashboards with the same
 * subscription cost one execution and one JSON text per event, not 1,000.
 * Results are kept for the few most recent events only. Events are pushed
 * through: a result resolved at once (from the live inventory) reaches the
 * socket within the call that published its event.
 *
 * Returns the stream of payloads, or the result that refused the
 * subscription (an unknown platform in its filter, a bad cursor).
 */
export function createSharedSubscribe(opts: SharedSubscribeOptions) {
  const maxKept = opts.maxKept ?? 2_000;
  const kept = new Map<string, string | Promise<string>>();
  const documentKeys = new WeakMap<object, string>();
  // Distinct operations get a short number for the per-event key, released with their last subscriber.
  const operations = new Map<string, SharedOperation>();
  let nextOperationId = 0;

  const operationKey = (args: ExecutionArgs) => {
    let doc = documentKeys.get(args.document);
    if (doc === undefined) documentKeys.set(args.document, (doc = print(args.document)));
    return `${args.operationName ?? ''}\u0000${opts.callerOf(args)}\u0000${JSON.stringify(args.variableValues ?? {})}\u0000${doc}`;
  };

  const resolveEvent = (operationId: number, args: ExecutionArgs, delivery: SourceItem): string | Promise<string> => {
    const key = `${deliveryKey(delivery)}|${operationId}`;
    let result = kept.get(key);
    if (result === undefined) {
      const executed = execute({ ...args, rootValue: delivery });
      result = 'then' in executed ? executed.then((r) => opts.serialize(r, args)) : opts.serialize(executed, args);
      kept.set(key, result);
      if (kept.size > maxKept) kept.delete(kept.keys().next().value as string);
    }
    return result;
  };

  return async (args: ExecutionArgs): Promise<ExecutionResult | PayloadStream> => {
    const stream = await createSourceEventStream(args);
    if (!(Symbol.asyncIterator in stream)) return stream as ExecutionResult;
    const source = stream as AsyncIterableIterator<SourceItem>;
    if (!isPushable(source)) {
      await source.return?.();
      throw new Error('A subscribe resolver returned a stream that cannot push: return a SubscriberStream.');
    }
    const key = operationKey(args);
    let operation = operations.get(key);
    if (!operation) operations.set(key, (operation = { id: nextOperationId++, key, users: 0 }));
    operation.users += 1;
    // The subscription holds its operation, not the key it was looked up by: a thousand subscribers keep one key.
    const shared = operation;
    const { id } = shared;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      if (--shared.users === 0) operations.delete(shared.key);
    };
    return {
      attach(sink) {
        source.attach({
          next: (delivery) => {
            const payload = resolveEvent(id, args, delivery);
            if (typeof payload === 'string') return sink.next(payload);
            // Resolved later (a platform read directly): the source holds what follows, so order is kept.
            payload.then(
              (text) => {
                if (!released && sink.next(text)) source.resume();
              },
              (e: unknown) => sink.end(e instanceof Error ? e : new Error(String(e))),
            );
            return false;
          },
          end: (error) => {
            release();
            sink.end(error);
          },
          many: (deliver) => sink.many(deliver),
        });
      },
      resume: () => source.resume(),
      return() {
        release();
        void source.return?.();
      },
    };
  };
}

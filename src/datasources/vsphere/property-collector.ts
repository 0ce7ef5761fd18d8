import { VsphereTransportError } from './errors.js';
import type { SoapClient } from './soap-client.js';
import type { ServiceContent } from './vim.js';
import { type MoRef, type XNode, child, children, elementXml, expandXml, moRefOf, moRefXml, textOf } from './xml.js';

// The PropertyCollector's change stream (vim25 CreateFilter and
// WaitForUpdatesEx), typed by hand like vim.ts; names are vSphere's own.

/** How a property changed: `assign` without a value means it is now unset. */
export type PropertyChangeOp = 'add' | 'remove' | 'assign' | 'indirectRemove';

export interface PropertyChange {
  /** A property path, possibly below a requested one: `runtime.powerState`, `config.hardware.device[4000]`. */
  name: string;
  op: PropertyChangeOp;
  /** The `<val>` element; absent when the property was unset or removed. */
  val: XNode | undefined;
}

export interface ObjectUpdate {
  kind: 'enter' | 'modify' | 'leave';
  obj: MoRef;
  changes: PropertyChange[];
  /** Requested paths the server could not read, with their fault type. */
  missing: { path: string; fault: string }[];
}

/** One WaitForUpdatesEx answer. */
export interface UpdateSet {
  /** Pass back in the next call to get what changed after this answer. */
  version: string;
  /** More updates are waiting: call again at once with `version`. */
  truncated: boolean;
  /**
   * Object updates per filter, in the order the server sent them, each
   * parsed as it is reached: a first answer holds the whole estate.
   */
  filters: { filter: MoRef; objects: Iterable<ObjectUpdate> }[];
}

function requireRef(node: XNode | undefined, what: string): MoRef {
  const ref = moRefOf(node);
  if (!ref) throw new VsphereTransportError('PROTOCOL', `the response has no ${what}`);
  return ref;
}

/** A collector of our own: its filters are ours alone, and destroying it destroys them. */
export async function createPropertyCollector(client: SoapClient, sc: ServiceContent): Promise<MoRef> {
  const res = await client.invoke('CreatePropertyCollector', moRefXml('_this', sc.propertyCollector));
  return requireRef(child(res, 'returnval'), 'property collector');
}

export async function destroyPropertyCollector(client: SoapClient, collector: MoRef): Promise<void> {
  await client.invoke('DestroyPropertyCollector', moRefXml('_this', collector));
}

/** `specXml` is a `<spec>` element (see containerFilterSpec). */
export async function createFilter(
  client: SoapClient,
  collector: MoRef,
  specXml: string,
  partialUpdates: boolean,
): Promise<MoRef> {
  const res = await client.invoke(
    'CreateFilter',
    moRefXml('_this', collector) + specXml + elementXml('partialUpdates', partialUpdates),
  );
  return requireRef(child(res, 'returnval'), 'property filter');
}

export async function destroyPropertyFilter(client: SoapClient, filter: MoRef): Promise<void> {
  await client.invoke('DestroyPropertyFilter', moRefXml('_this', filter));
}

/**
 * Waits up to `maxWaitSeconds` for changes after `version` ("" for the whole
 * current state of every filter; 0 s: answer at once); null when the wait
 * ended with nothing new. At most `maxObjectUpdates` objects per answer
 * (then `truncated`).
 */
export async function waitForUpdatesEx(
  client: SoapClient,
  collector: MoRef,
  version: string,
  options: { maxWaitSeconds: number; maxObjectUpdates: number },
): Promise<UpdateSet | null> {
  const res = await client.invoke(
    'WaitForUpdatesEx',
    moRefXml('_this', collector) +
      elementXml('version', version) +
      `<options>${elementXml('maxWaitSeconds', options.maxWaitSeconds)}` +
      `${elementXml('maxObjectUpdates', options.maxObjectUpdates)}</options>`,
    OBJECT_SETS,
  );
  const rv = child(res, 'returnval');
  return rv ? parseUpdateSet(rv) : null;
}

/** Ends the collector's pending WaitForUpdatesEx, which then fails with RequestCanceled. */
export async function cancelWaitForUpdates(client: SoapClient, collector: MoRef): Promise<void> {
  await client.invoke('CancelWaitForUpdates', moRefXml('_this', collector));
}

const OPS = new Set<string>(['add', 'remove', 'assign', 'indirectRemove']);
const KINDS = new Set<string>(['enter', 'modify', 'leave']);

const OBJECT_SETS: ReadonlySet<string> = new Set(['objectSet']);

/** `objectSet` elements left unparsed (see invoke's `deferred`), parsed one by one as they are iterated. */
function objectUpdates(sets: readonly XNode[]): Iterable<ObjectUpdate> {
  return {
    *[Symbol.iterator]() {
      for (const os of sets) yield objectUpdate(expandXml(os));
    },
  };
}

export function parseUpdateSet(rv: XNode): UpdateSet {
  return {
    version: textOf(child(rv, 'version')) ?? '',
    truncated: textOf(child(rv, 'truncated')) === 'true',
    filters: children(rv, 'filterSet').map((fs) => ({
      filter: requireRef(child(fs, 'filter'), 'filter'),
      objects: objectUpdates(children(fs, 'objectSet')),
    })),
  };
}

function objectUpdate(os: XNode): ObjectUpdate {
  const kind = textOf(child(os, 'kind')) ?? '';
  if (!KINDS.has(kind)) throw new VsphereTransportError('PROTOCOL', `unknown object update kind "${kind}"`);
  return {
    kind: kind as ObjectUpdate['kind'],
    obj: requireRef(child(os, 'obj'), 'obj'),
    changes: children(os, 'changeSet').map((c): PropertyChange => {
      const op = textOf(child(c, 'op')) ?? '';
      if (!OPS.has(op)) throw new VsphereTransportError('PROTOCOL', `unknown property change op "${op}"`);
      return { name: textOf(child(c, 'name')) ?? '', op: op as PropertyChangeOp, val: child(c, 'val') };
    }),
    missing: children(os, 'missingSet').map((m) => ({
      path: textOf(child(m, 'path')) ?? '',
      fault: child(child(m, 'fault'), 'fault')?.attrs['xsi:type'] ?? 'unknown',
    })),
  };
}

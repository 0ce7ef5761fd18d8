import type { PropertyChange } from './property-collector.js';
import { type XNode, child, xsiType } from './xml.js';

// Applies the PropertyCollector's changes to an object's properties as
// RetrievePropertiesEx gives them (requested path -> `<val>` element), so the
// mapping reads a watched object exactly as it reads a retrieved one.

/**
 * What became of one change: applied to the properties; ignored (a property
 * nobody asked for); or not understood, so the object's properties must be
 * read again.
 */
export type ChangeOutcome = 'applied' | 'ignored' | 'refetch';

type Segment = { field: string; key?: string } | { field?: undefined; key: string };

/** `.a.b[4000].c` or `["x"]` -> segments; null when the path does not parse. */
function segmentsOf(rest: string): Segment[] | null {
  const out: Segment[] = [];
  const step = /\.([^.[\]]+)|\[("(?:[^"\\]|\\.)*"|[^\]]*)\]/y;
  let at = 0;
  while (at < rest.length) {
    step.lastIndex = at;
    const m = step.exec(rest);
    if (!m) return null;
    at = step.lastIndex;
    if (m[1] !== undefined) {
      out.push({ field: m[1] });
    } else {
      const raw = m[2] ?? '';
      const key = raw.startsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw;
      const last = out[out.length - 1];
      // A key right after a field selects among that field's repeated elements.
      if (last?.field !== undefined && last.key === undefined) last.key = key;
      else out.push({ key });
    }
  }
  return out;
}

/** Whether an array item is the one a `[key]` names: its `key` (devices), or its text (strings, morefs). */
function isKeyed(item: XNode, key: string): boolean {
  const k = child(item, 'key');
  return k ? k.text === key : item.children.length === 0 && item.text === key;
}

const renamed = (node: XNode, name: string): XNode => ({ ...node, name });
const isArray = (node: XNode | undefined): boolean => xsiType(node)?.startsWith('ArrayOf') ?? false;

const PRIMITIVE_ITEMS: Record<string, string> = {
  String: 'string',
  Int: 'int',
  Long: 'long',
  Short: 'short',
  Byte: 'byte',
  Boolean: 'boolean',
};

/** Items of `ArrayOfVirtualDevice` are `<VirtualDevice>` elements; of `ArrayOfString`, `<string>`. */
function itemName(container: XNode, val: XNode): string {
  const first = container.children[0]?.name;
  if (first) return first;
  const item = xsiType(container)?.replace(/^ArrayOf/, '');
  if (item) return PRIMITIVE_ITEMS[item] ?? item;
  return xsiType(val)?.replace(/^xsd:/, '') ?? 'item';
}

/** Puts `items` where the first of `at` was (at the end when `at` is empty), removing `at`. */
function replaceAt(parent: XNode, at: readonly XNode[], items: readonly XNode[]): void {
  const out: XNode[] = [];
  let placed = false;
  for (const c of parent.children) {
    if (!at.includes(c)) out.push(c);
    else if (!placed) {
      out.push(...items);
      placed = true;
    }
  }
  if (!placed) out.push(...items);
  parent.children = out;
}

/**
 * Applies one change to `props`, keyed by the paths requested for the object
 * (`requested`). A change names a requested path (the whole value, as
 * vCenter reports it with partialUpdates off) or a path below one
 * (`snapshot.currentSnapshot`, `config.hardware.device[4000]`), which is
 * applied inside the stored value.
 */
export function applyPropertyChange(
  props: Map<string, XNode>,
  requested: readonly string[],
  change: PropertyChange,
): ChangeOutcome {
  const { name, op, val } = change;
  let root: string | undefined;
  for (const p of requested) {
    if (name === p || name.startsWith(`${p}.`) || name.startsWith(`${p}[`)) {
      if (root === undefined || p.length > root.length) root = p;
    }
  }
  if (root === undefined) {
    // An enclosing property (`config` when `config.hardware.device` was asked for): read them again.
    return requested.some((p) => p.startsWith(`${name}.`)) ? 'refetch' : 'ignored';
  }
  const removal = op === 'remove' || op === 'indirectRemove' || val === undefined;

  if (name === root) {
    if (removal) {
      props.delete(root);
      return 'applied';
    }
    if (op === 'add') {
      const container = props.get(root);
      if (!container || !isArray(container)) return 'refetch';
      container.children.push(renamed(val, itemName(container, val)));
      return 'applied';
    }
    props.set(root, val);
    return 'applied';
  }

  const segments = segmentsOf(name.slice(root.length));
  const top = props.get(root);
  if (!segments || segments.length === 0) return 'refetch';
  if (!top) return removal ? 'applied' : 'refetch';

  let node = top;
  for (let i = 0; i < segments.length - 1; i++) {
    const s = segments[i] as Segment;
    const next =
      s.field === undefined
        ? node.children.find((c) => isKeyed(c, s.key))
        : s.key === undefined
          ? child(node, s.field)
          : node.children.find((c) => c.name === s.field && isKeyed(c, s.key as string));
    if (!next) return removal ? 'applied' : 'refetch';
    node = next;
  }

  const last = segments[segments.length - 1] as Segment;
  if (last.field !== undefined && last.key === undefined) {
    const field = last.field;
    const existing = node.children.filter((c) => c.name === field);
    if (removal) {
      replaceAt(node, existing, []);
    } else if (op === 'add') {
      replaceAt(node, [], [renamed(val, field)]);
    } else {
      // An array field is repeated elements inside its data object.
      const items = isArray(val) ? val.children.map((c) => renamed(c, field)) : [renamed(val, field)];
      replaceAt(node, existing, items);
    }
    return 'applied';
  }

  // One item of an array: `field[key]` inside a data object, or `[key]` of the property itself.
  const key = last.key as string;
  const candidates = last.field === undefined ? node.children : node.children.filter((c) => c.name === last.field);
  const existing = candidates.filter((c) => isKeyed(c, key));
  if (removal) {
    replaceAt(node, existing, []);
    return 'applied';
  }
  if (last.field === undefined && !isArray(node)) return 'refetch';
  const elementName = last.field ?? itemName(node, val);
  replaceAt(node, existing, [renamed(val, elementName)]);
  return 'applied';
}

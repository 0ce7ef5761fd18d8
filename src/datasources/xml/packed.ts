import type { XNode } from './tokenizer.js';

// A compact, self-contained form of element trees kept for a long time (the
// vSphere watch keeps every watched object's properties). Parsed trees are
// several small objects per element, and their strings are slices that keep
// the whole SOAP answer they came from alive; the packed form is one flat
// string per object, and unpacking it (JSON.parse) is fast enough to do
// whenever an object changes.

/** [name, text, children?, attrs?], trailing empties left out. */
type Packed = [string, string, Packed[]?, Record<string, string>?];

function toPacked(node: XNode): Packed {
  const hasAttrs = Object.keys(node.attrs).length > 0;
  if (node.children.length === 0 && !hasAttrs) return [node.name, node.text];
  const children = node.children.map(toPacked);
  return hasAttrs ? [node.name, node.text, children, node.attrs] : [node.name, node.text, children];
}

function fromPacked([name, text, children, attrs]: Packed): XNode {
  return { name, text, attrs: attrs ?? {}, children: children ? children.map(fromPacked) : [] };
}

/** Named trees (a property path -> its `<val>`) as one string. */
export function packTrees(trees: ReadonlyMap<string, XNode>): string {
  const out: [string, Packed][] = [];
  for (const [name, node] of trees) out.push([name, toPacked(node)]);
  return JSON.stringify(out);
}

/** The trees packTrees packed, as new trees of their own. */
export function unpackTrees(packed: string): Map<string, XNode> {
  const entries = JSON.parse(packed) as [string, Packed][];
  return new Map(entries.map(([name, node]) => [name, fromPacked(node)]));
}

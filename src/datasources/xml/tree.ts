import { type XNode, expandXml, tokenizeXml } from './tokenizer.js';

export type { XNode };
export { expandXml };

/** Parses a document, leaving elements named in `deferred` for expandXml; throws on malformed or truncated XML. */
export function parseXml(xml: string, deferred?: ReadonlySet<string>): XNode {
  return tokenizeXml(xml, deferred);
}

/** The value of an attribute, or null. */
export function attrOf(node: XNode | undefined, name: string): string | null {
  return node?.attrs[name] ?? null;
}

export function child(node: XNode | undefined, name: string): XNode | undefined {
  return node?.children.find((c) => c.name === name);
}

export function children(node: XNode | undefined, name: string): XNode[] {
  return node ? node.children.filter((c) => c.name === name) : [];
}

/** Follows a path of element names, first match at each step. */
export function path(node: XNode | undefined, ...names: string[]): XNode | undefined {
  let current = node;
  for (const n of names) current = child(current, n);
  return current;
}

export function textOf(node: XNode | undefined): string | null {
  return node ? node.text : null;
}

export function intOf(node: XNode | undefined): number | null {
  if (!node) return null;
  const n = Number(node.text);
  return Number.isFinite(n) ? n : null;
}

export function boolOf(node: XNode | undefined): boolean | null {
  if (!node) return null;
  return node.text === 'true';
}

export function xsiType(node: XNode | undefined): string | null {
  return node?.attrs['xsi:type'] ?? null;
}

/** Escapes text for XML content and for attributes in either quote style. */
export function escapeXml(s: string): string {
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

import { tokenizeXml } from './xml-tokenizer.js';

/**
 * A SOAP response as a plain element tree. vim25 payloads are polymorphic
 * (xsi:type) and repeat elements freely, so mapping code reads them through
 * these accessors instead of guessing shapes from a JSON conversion.
 */
export interface XNode {
  /** Local name, namespace prefix removed. */
  name: string;
  attrs: Record<string, string>;
  text: string;
  children: XNode[];
}

/** Parses a document; throws on malformed or truncated XML. */
export function parseXml(xml: string): XNode {
  return tokenizeXml(xml);
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

/** A ManagedObjectReference: `<x type="VirtualMachine">vm-42</x>`. */
export interface MoRef {
  type: string;
  value: string;
}

export function moRefOf(node: XNode | undefined): MoRef | null {
  if (!node?.attrs['type']) return null;
  return { type: node.attrs['type'], value: node.text };
}

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** `<name type="Type">value</name>` for a managed object argument. */
export function moRefXml(name: string, ref: MoRef): string {
  return `<${name} type="${escapeXml(ref.type)}">${escapeXml(ref.value)}</${name}>`;
}

export function elementXml(name: string, value: string | number | boolean): string {
  return `<${name}>${escapeXml(String(value))}</${name}>`;
}

/** Serializes an element as received (for sending a device back, as ReconfigVM_Task's remove needs). */
export function nodeXml(node: XNode, name = node.name): string {
  const attrs = Object.entries(node.attrs)
    .filter(([k]) => !k.startsWith('xmlns'))
    .map(([k, v]) => ` ${k}="${escapeXml(v)}"`)
    .join('');
  const body = node.children.length > 0 ? node.children.map((c) => nodeXml(c)).join('') : escapeXml(node.text);
  return `<${name}${attrs}>${body}</${name}>`;
}

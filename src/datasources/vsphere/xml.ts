import { type XNode, escapeXml } from '../xml/tree.js';

export * from '../xml/tree.js';

/** A ManagedObjectReference: `<x type="VirtualMachine">vm-42</x>`. */
export interface MoRef {
  type: string;
  value: string;
}

export function moRefOf(node: XNode | undefined): MoRef | null {
  if (!node?.attrs['type']) return null;
  return { type: node.attrs['type'], value: node.text };
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

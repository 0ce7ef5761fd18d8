import { XMLParser } from 'fast-xml-parser';

import type { XNode } from '../../src/datasources/xml/tree.js';

// The reference for src/datasources/vsphere/xml-tokenizer.ts: the same tree,
// built through fast-xml-parser. Tests compare the two on real responses;
// the XML benchmark uses it as its baseline.

const parser = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: false,
  processEntities: true,
});

type Ordered = Record<string, unknown>;

function localName(qname: string): string {
  const colon = qname.indexOf(':');
  return colon < 0 ? qname : qname.slice(colon + 1);
}

function convert(entries: Ordered[]): XNode[] {
  const out: XNode[] = [];
  for (const entry of entries) {
    const key = Object.keys(entry).find((k) => k !== ':@');
    if (!key || key === '#text' || key.startsWith('?')) continue;
    const rawAttrs = (entry[':@'] as Record<string, string> | undefined) ?? {};
    const attrs: Record<string, string> = {};
    for (const [k, v] of Object.entries(rawAttrs)) attrs[k.startsWith('xmlns') ? k : localAttr(k)] = v;
    const body = (entry[key] as Ordered[]) ?? [];
    const text = body
      .filter((b) => '#text' in b)
      .map((b) => String(b['#text']))
      .join('');
    out.push({ name: localName(key), attrs, text, children: convert(body) });
  }
  return out;
}

// xsi:type keeps its prefix (it says which type a polymorphic value has);
// other attributes lose theirs.
function localAttr(k: string): string {
  return k.endsWith(':type') && k !== 'type' ? 'xsi:type' : localName(k);
}

/** The fast-xml-parser reading of a document, as the gateway did before its own tokenizer. */
export function parseXmlWithLibrary(xml: string): XNode {
  const nodes = convert(parser.parse(xml) as Ordered[]);
  const root = nodes[0];
  if (!root) throw new Error('empty XML document');
  return root;
}

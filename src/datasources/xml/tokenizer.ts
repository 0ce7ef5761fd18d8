// A small, strict XML reader for SOAP responses: elements, attributes, text,
// CDATA, comments and processing instructions, the five named entities and
// numeric references. No DTDs (SOAP forbids them). Builds the XNode tree in
// one pass; malformed or truncated input throws.

/**
 * An XML document as a plain element tree (SOAP responses, libvirt XML).
 * Payloads are polymorphic (xsi:type) and repeat elements freely, so mapping
 * code reads them through these accessors instead of guessing shapes.
 */
export interface XNode {
  /** Local name, namespace prefix removed. */
  name: string;
  attrs: Record<string, string>;
  text: string;
  children: XNode[];
  /**
   * For an element read as deferred (see tokenizeXml): its whole source,
   * not yet parsed (text and children empty until expanded).
   */
  source?: string;
}

const NAMED: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

function decode(s: string): string {
  if (!s.includes('&')) return s;
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-z]+);/g, (m, ref: string) => {
    if (ref.startsWith('#x')) return String.fromCodePoint(Number.parseInt(ref.slice(2), 16));
    if (ref.startsWith('#')) return String.fromCodePoint(Number.parseInt(ref.slice(1), 10));
    const named = NAMED[ref];
    if (named === undefined) throw new Error(`unknown entity ${m}`);
    return named;
  });
}

// A substring of 13 characters or more is, in V8, a slice that keeps the
// whole document alive; the mirrors keep values from documents of tens of
// megabytes for as long as the objects live. Strings a tree keeps are owned
// copies: names interned (they repeat), values copied.
const SLICE_MIN = 13;
function own(s: string): string {
  // Concatenating and slicing again flattens into a new string of the value alone.
  return s.length < SLICE_MIN ? s : (' ' + s).slice(1);
}

const NAMES = new Map<string, string>();
const MAX_NAMES = 10_000;
function interned(name: string): string {
  const known = NAMES.get(name);
  if (known !== undefined) return known;
  const copy = own(name);
  if (NAMES.size < MAX_NAMES) NAMES.set(copy, copy);
  return copy;
}

function localName(qname: string): string {
  const colon = qname.indexOf(':');
  return interned(colon < 0 ? qname : qname.slice(colon + 1));
}

// xsi:type keeps its prefix (it says which type a polymorphic value has);
// other attributes lose theirs.
function attrName(qname: string): string {
  if (qname.startsWith('xmlns')) return interned(qname);
  return qname.endsWith(':type') ? 'xsi:type' : localName(qname);
}

const ATTR = /([^\s=/>]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g;

/** Just past the end tag of the element whose content starts at `from`; nested ones of the same name are counted. */
function elementEnd(xml: string, from: number, qname: string): number {
  const open = `<${qname}`;
  const close = `</${qname}`;
  const ends = (at: number, chars: string) => chars.includes(xml[at] ?? '');
  let depth = 1;
  let at = from;
  while (depth > 0) {
    const lt = xml.indexOf('<', at);
    if (lt < 0) throw new Error(`unclosed <${qname}>`);
    const gt = xml.indexOf('>', lt);
    if (gt < 0) throw new Error('unterminated tag');
    if (xml.startsWith(close, lt) && ends(lt + close.length, ' \t\r\n>')) depth -= 1;
    else if (xml.startsWith(open, lt) && ends(lt + open.length, ' \t\r\n>/') && xml[gt - 1] !== '/') depth += 1;
    at = gt + 1;
  }
  return at;
}

/**
 * Parses a document. Elements named in `deferred` are not parsed: each keeps
 * its source (`source`) for expandXml, so that a large answer can be worked
 * through one element at a time instead of as one tree.
 */
export function tokenizeXml(xml: string, deferred?: ReadonlySet<string>): XNode {
  const root: XNode = { name: '#document', attrs: {}, text: '', children: [] };
  const stack: { node: XNode; qname: string }[] = [{ node: root, qname: '' }];
  let i = 0;
  const n = xml.length;
  while (i < n) {
    const lt = xml.indexOf('<', i);
    const textEnd = lt < 0 ? n : lt;
    if (textEnd > i) {
      const text = xml.slice(i, textEnd);
      const top = stack[stack.length - 1] as { node: XNode };
      if (stack.length > 1) top.node.text += decode(text);
      else if (text.trim() !== '') throw new Error('text outside the root element');
    }
    if (lt < 0) break;
    if (xml.startsWith('<?', lt)) {
      const end = xml.indexOf('?>', lt);
      if (end < 0) throw new Error('unterminated processing instruction');
      i = end + 2;
    } else if (xml.startsWith('<!--', lt)) {
      const end = xml.indexOf('-->', lt);
      if (end < 0) throw new Error('unterminated comment');
      i = end + 3;
    } else if (xml.startsWith('<![CDATA[', lt)) {
      const end = xml.indexOf(']]>', lt);
      if (end < 0) throw new Error('unterminated CDATA section');
      (stack[stack.length - 1] as { node: XNode }).node.text += xml.slice(lt + 9, end);
      i = end + 3;
    } else if (xml.startsWith('<!', lt)) {
      throw new Error('DTDs are not accepted');
    } else if (xml[lt + 1] === '/') {
      const end = xml.indexOf('>', lt);
      if (end < 0) throw new Error('unterminated end tag');
      const qname = xml.slice(lt + 2, end).trim();
      const open = stack.pop();
      if (!open || stack.length === 0 || open.qname !== qname) throw new Error(`unexpected </${qname}>`);
      open.node.text = own(open.node.text);
      i = end + 1;
    } else {
      const end = xml.indexOf('>', lt);
      if (end < 0) throw new Error('unterminated start tag');
      const selfClosing = xml[end - 1] === '/';
      const inner = xml.slice(lt + 1, selfClosing ? end - 1 : end);
      const space = inner.search(/\s/);
      const qname = space < 0 ? inner : inner.slice(0, space);
      if (qname === '') throw new Error('empty tag name');
      const attrs: Record<string, string> = {};
      if (space >= 0) {
        ATTR.lastIndex = 0;
        for (let m = ATTR.exec(inner); m; m = ATTR.exec(inner))
          attrs[attrName(m[1] as string)] = own(decode(m[2] ?? m[3] ?? ''));
      }
      const node: XNode = { name: localName(qname), attrs, text: '', children: [] };
      const parent = stack[stack.length - 1] as { node: XNode };
      if (stack.length === 1 && parent.node.children.length > 0) throw new Error('more than one root element');
      parent.node.children.push(node);
      if (!selfClosing && deferred?.has(node.name)) {
        const after = elementEnd(xml, end + 1, qname);
        node.source = xml.slice(lt, after);
        i = after;
        continue;
      }
      if (!selfClosing) stack.push({ node, qname });
      i = end + 1;
    }
  }
  if (stack.length !== 1) throw new Error(`unclosed <${(stack[stack.length - 1] as { qname: string }).qname}>`);
  const top = root.children[0];
  if (!top) throw new Error('empty XML document');
  return top;
}

/** A deferred element parsed (with what it holds); any other element as it is. */
export function expandXml(node: XNode): XNode {
  return node.source === undefined ? node : tokenizeXml(node.source);
}

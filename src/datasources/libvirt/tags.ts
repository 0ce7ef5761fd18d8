import { type XNode, children, escapeXml } from '../xml/tree.js';

/**
 * Tags live in the domain's `<metadata>` as an element of the gateway's own
 * namespace, so any libvirt tool can set them, for example
 * `virsh metadata web-1 --uri urn:virt-graph:tags:1 --key vg --set '<tags><tag>web</tag></tags>'`.
 * The prefix is the writer's choice; the namespace is what identifies them.
 */
export const TAGS_NAMESPACE = 'urn:virt-graph:tags:1';

const isTagsElement = (n: XNode) =>
  n.name === 'tags' && Object.entries(n.attrs).some(([k, v]) => k.startsWith('xmlns') && v === TAGS_NAMESPACE);

/** The tags of a domain, from its `<metadata>` element, in order and without repeats. */
export function tagsOf(metadata: XNode | undefined): string[] {
  const element = metadata?.children.find(isTagsElement);
  const tags = children(element, 'tag')
    .map((t) => t.text.trim())
    .filter(Boolean);
  return [...new Set(tags)];
}

// Whatever prefix a writer used, libvirt declares the namespace on the element itself.
const TAGS_ELEMENT = new RegExp(
  `<([A-Za-z_][\\w.-]*:)?tags\\b[^>]*=["']${TAGS_NAMESPACE.replace(/[.:]/g, '\\$&')}["'][^>]*(?:/>|>[\\s\\S]*?</\\1tags>)\\s*`,
);

/** A domain's XML with its tags replaced by `tags` (none: the element removed). */
export function withTags(domainXml: string, tags: readonly string[]): string {
  const element =
    tags.length === 0
      ? ''
      : `<vg:tags xmlns:vg="${TAGS_NAMESPACE}">${tags.map((t) => `<vg:tag>${escapeXml(t)}</vg:tag>`).join('')}</vg:tags>`;
  const cleared = domainXml.replace(TAGS_ELEMENT, '');
  if (!element) return cleared;
  if (/<metadata\s*\/>/.test(cleared)) return cleared.replace(/<metadata\s*\/>/, `<metadata>${element}</metadata>`);
  if (/<metadata>/.test(cleared)) return cleared.replace(/<metadata>/, `<metadata>${element}`);
  // <metadata> may come anywhere among the domain's top-level elements; right after <name> is always valid.
  return cleared.replace(/(<\/name>)/, `$1<metadata>${element}</metadata>`);
}

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type XNode, expandXml, tokenizeXml } from '../src/datasources/xml/tokenizer.js';
import { startTestGateway } from './helpers/gateway.js';
import { parseXmlWithLibrary } from './helpers/reference-xml.js';
import { startSoapProxy } from './helpers/soap-proxy.js';
import { type Vcsim, startVcsim } from './helpers/vcsim.js';

describe('the SOAP XML tokenizer', () => {
  let sim: Vcsim;
  let responses: string[] = [];

  beforeAll(async () => {
    sim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 2, host: 1, vm: 3, ds: 2, pg: 2 });
    const proxy = await startSoapProxy(sim.url, sim.certFile);
    const gw = await startTestGateway({
      platforms: [{ id: 'vc', kind: 'vsphere', url: proxy.url, username: sim.username, password: sim.password }],
    });
    await gw.query(`{ virtualMachines(first: 50) { nodes { name vcpus disks { target } nics { mac } snapshots { name } host { name cluster { name } } storage { name } networks { name } } }
      datacenters(first: 5) { nodes { name } } }`);
    await gw.query('mutation { startVm(input: { vmId: "not-an-id" }) { userErrors { code } } }');
    responses = proxy.responses();
    await gw.close();
    await proxy.close();
  });
  afterAll(() => sim?.stop());

  it('reads every response vcsim sent exactly as the fast-xml-parser reading does', () => {
    expect(responses.length).toBeGreaterThan(8);
    for (const r of responses) expect(tokenizeXml(r)).toEqual(parseXmlWithLibrary(r));
  });

  it('leaves deferred elements for later, and expanding one gives what a full read gives', () => {
    for (const r of responses) {
      const full = tokenizeXml(r);
      const deferred = tokenizeXml(r, new Set(['objectSet', 'returnval']));
      const expandAll = (n: XNode): XNode => {
        const e = expandXml(n);
        return { ...e, children: e.children.map(expandAll) };
      };
      expect(expandAll(deferred)).toEqual(full);
    }
    // Nested elements of the deferred name, self-closing ones among them, end where they should.
    const xml = '<r><s a="1"><s/><s><t>x</t></s></s><u>after</u></r>';
    const root = tokenizeXml(xml, new Set(['s']));
    expect(root.children.map((c) => c.name)).toEqual(['s', 'u']);
    expect(root.children[0]?.source).toBe('<s a="1"><s/><s><t>x</t></s></s>');
    expect(expandXml(root.children[0] as XNode)).toEqual(tokenizeXml(xml).children[0]);
    expect(() => tokenizeXml('<r><s><s></s></r>', new Set(['s']))).toThrow();
  });

  it('decodes entities, CDATA and single-quoted attributes, and keeps xsi:type', () => {
    const xml = `<?xml version="1.0"?><!-- c --><a:root xmlns:a="urn:x" xmlns:xsi="urn:xsi"><v xsi:type='xsd:string' k="&quot;q&quot;">1 &lt; 2 &amp;&#65;&#x42;</v><e/><c><![CDATA[<raw>]]></c></a:root>`;
    expect(tokenizeXml(xml)).toEqual({
      name: 'root',
      attrs: { 'xmlns:a': 'urn:x', 'xmlns:xsi': 'urn:xsi' },
      text: '',
      children: [
        { name: 'v', attrs: { 'xsi:type': 'xsd:string', k: '"q"' }, text: '1 < 2 &AB', children: [] },
        { name: 'e', attrs: {}, text: '', children: [] },
        { name: 'c', attrs: {}, text: '<raw>', children: [] },
      ],
    });
  });

  it.each([
    ['truncated', '<a><b>text</b><c>'],
    ['mismatched', '<a><b></a></b>'],
    ['two roots', '<a/><b/>'],
    ['text outside', 'junk<a/>'],
    ['unterminated tag', '<a><b'],
    ['a DTD', '<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>'],
    ['an unknown entity', '<a>&nope;</a>'],
    ['nothing', '   '],
  ])('refuses %s input', (_label, xml) => {
    expect(() => tokenizeXml(xml)).toThrow();
  });
});

// Reading one real RetrievePropertiesEx response (500 VMs with devices and
// guest facts, from vcsim): the gateway's tokenizer against fast-xml-parser
// (the baseline, what the gateway used before), in the same run.
import { pino } from 'pino';

import { VM_DETAIL_SPEC } from '../src/datasources/vsphere/mapping.js';
import { VsphereSession } from '../src/datasources/vsphere/session.js';
import { tokenizeXml } from '../src/datasources/xml/tokenizer.js';
import { parseXmlWithLibrary } from '../test/helpers/reference-xml.js';
import { startSoapProxy } from '../test/helpers/soap-proxy.js';
import { startVcsim } from '../test/helpers/vcsim.js';
import { median } from './median.js';

const sim = await startVcsim({ dc: 1, cluster: 1, clusterHost: 2, host: 1, vm: 250 });
const proxy = await startSoapProxy(sim.url, sim.certFile);
try {
  const session = await VsphereSession.open({
    url: proxy.url,
    username: sim.username,
    password: sim.password,
    logger: pino({ level: 'silent' }),
  });
  const refs = Object.keys(sim.oracle.vms).map((value) => ({ type: 'VirtualMachine', value }));
  await session.retrieveObjects(refs, [VM_DETAIL_SPEC]);
  await session.close();
  const body = proxy.responses().reduce((a, b) => (b.length > a.length ? b : a));
  const library = await median(async () => parseXmlWithLibrary(body), 9);
  const tokenizer = await median(async () => tokenizeXml(body), 9);
  console.log(
    `SOAP XML of ${refs.length} VMs' details (${(body.length / 1024 ** 2).toFixed(1)} MiB): fast-xml-parser (baseline) ${library.toFixed(1)} ms; ` +
      `tokenizer ${tokenizer.toFixed(1)} ms; speed-up x${(library / tokenizer).toFixed(1)}`,
  );
} finally {
  await proxy.close();
  await sim.stop();
}

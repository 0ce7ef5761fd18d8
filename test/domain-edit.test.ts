import { describe, expect, it } from 'vitest';

import { editDomainXml } from '../src/datasources/libvirt/domain-edit.js';
import { child, children, parseXml } from '../src/datasources/xml/tree.js';

const BASE = `<domain type='test'><name>a</name><memory unit='KiB'>1024</memory><currentMemory unit='KiB'>1024</currentMemory>
<vcpu placement='static'>1</vcpu><os><type arch='i686'>hvm</type></os><devices></devices></domain>`;

describe('editing a domain definition', () => {
  it('writes paths and names with quotes and ampersands as valid XML', () => {
    const xml = editDomainXml(BASE, {
      vcpus: null,
      coresPerSocket: null,
      memoryMiB: null,
      addDiskPaths: [{ path: "/images/o'brien & co.qcow2", format: 'qcow2' }],
      removeDiskTargets: [],
      addNetworks: ["lab's <net>"],
      removeNicMacs: [],
    });
    const devices = child(parseXml(xml), 'devices');
    expect(child(children(devices, 'disk')[0], 'source')?.attrs['file']).toBe("/images/o'brien & co.qcow2");
    expect(child(children(devices, 'interface')[0], 'source')?.attrs['network']).toBe("lab's <net>");
  });
});

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

const WITH_DEVICES = `<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>b</name>
<memory unit='KiB'>1024</memory><vcpu placement='static'>1</vcpu><os><type arch='x86_64'>hvm</type></os>
<devices>
  <disk type='file' device='disk'><source file='/a.qcow2'/><target dev='vda' bus='virtio'/></disk>
  <disk type='file' device='disk'><source file='/b.qcow2'/><target dev='vdb' bus='virtio'/></disk>
  <interface type='network'><mac address='52:54:00:AA:BB:CC'/><source network='default'/></interface>
  <!-- kept as written -->
</devices>
<qemu:commandline><qemu:arg value='-no-user-config'/></qemu:commandline>
</domain>`;

const NO_CHANGE = {
  vcpus: null,
  coresPerSocket: null,
  memoryMiB: null,
  addDiskPaths: [],
  removeDiskTargets: [],
  addNetworks: [],
  removeNicMacs: [],
};

const targets = (xml: string) =>
  children(child(parseXml(xml), 'devices'), 'disk').map((d) => child(d, 'target')?.attrs['dev']);

describe('removing devices from a domain definition', () => {
  it('compares disk targets exactly: "vd." and "vd(" name no disk, and nothing is removed', () => {
    for (const target of ['vd.', 'vd(', 'vd[a-z]', '.*']) {
      expect(() => editDomainXml(WITH_DEVICES, { ...NO_CHANGE, removeDiskTargets: [target] })).toThrow(
        `the VM has no disk ${target}`,
      );
    }
  });

  it('removes exactly the named disk and the NIC by MAC in any case, keeping what it does not touch', () => {
    const xml = editDomainXml(WITH_DEVICES, {
      ...NO_CHANGE,
      removeDiskTargets: ['vdb'],
      removeNicMacs: ['52:54:00:aa:bb:cc'],
    });
    expect(targets(xml)).toEqual(['vda']);
    expect(children(child(parseXml(xml), 'devices'), 'interface')).toEqual([]);
    expect(xml).toContain('<qemu:commandline><qemu:arg value="-no-user-config"/></qemu:commandline>');
    expect(xml).toContain('<!-- kept as written -->');
  });

  it('sets vCPUs, topology and memory where libvirt keeps them', () => {
    const xml = editDomainXml(WITH_DEVICES, { ...NO_CHANGE, vcpus: 4, coresPerSocket: 2, memoryMiB: 2048 });
    const domain = parseXml(xml);
    expect(child(domain, 'vcpu')?.text).toBe('4');
    expect(child(domain, 'vcpu')?.attrs['placement']).toBe('static');
    expect(child(child(domain, 'cpu'), 'topology')?.attrs).toMatchObject({ sockets: '2', cores: '2', threads: '1' });
    expect(child(domain, 'memory')?.text).toBe(String(2048 * 1024));
    expect(child(domain, 'currentMemory')?.text).toBe(String(2048 * 1024));
  });
});

import { DOMParser, type Document, type Element, XMLSerializer, onErrorStopParsing } from '@xmldom/xmldom';

import { OperationFailedError } from '../../model/operations.js';

// Edits of a domain's inactive XML for reconfigureVm, made on a DOM: what the
// caller names (disk targets, MAC addresses, paths) is compared or written as
// data, never spliced into a pattern, and everything the edit does not touch
// (namespaced elements, comments, unknown devices) is kept as libvirt wrote it.
// libvirt checks the result when it is defined.

export interface DomainEdit {
  vcpus: number | null;
  coresPerSocket: number | null;
  memoryMiB: number | null;
  /** Paths of new disk images to attach (already created). */
  addDiskPaths: { path: string; format: string }[];
  removeDiskTargets: string[];
  /** Names of networks to attach new NICs to. */
  addNetworks: string[];
  removeNicMacs: string[];
}

function childElements(parent: Element, name: string): Element[] {
  const out: Element[] = [];
  for (let n = parent.firstChild; n; n = n.nextSibling) {
    if (n.nodeType === n.ELEMENT_NODE && (n as Element).tagName === name) out.push(n as Element);
  }
  return out;
}

function firstChild(parent: Element, name: string): Element | undefined {
  return childElements(parent, name)[0];
}

/** The named child, created (appended) when missing. */
function ensureChild(doc: Document, parent: Element, name: string): Element {
  const existing = firstChild(parent, name);
  if (existing) return existing;
  const created = doc.createElement(name);
  parent.appendChild(created);
  return created;
}

function element(doc: Document, name: string, attrs: Record<string, string>, ...children: Element[]): Element {
  const e = doc.createElement(name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.appendChild(c);
  return e;
}

/** The target device name of a disk (`vda`), or null. */
function diskTarget(disk: Element): string | null {
  return firstChild(disk, 'target')?.getAttribute('dev') ?? null;
}

/** The MAC address of an interface, lower case, or null. */
function nicMac(nic: Element): string | null {
  return firstChild(nic, 'mac')?.getAttribute('address')?.toLowerCase() ?? null;
}

/** The next free virtio target name: vda, vdb, ... */
function nextTarget(used: Set<string>): string {
  for (let i = 0; i < 26; i++) {
    const name = `vd${String.fromCharCode(97 + i)}`;
    if (!used.has(name)) return name;
  }
  throw new OperationFailedError('no free virtio disk target is left (vda to vdz)', 'INVALID_INPUT');
}

function parseDomain(xml: string): Document {
  try {
    return new DOMParser({ onError: onErrorStopParsing }).parseFromString(xml, 'text/xml');
  } catch (e) {
    throw new OperationFailedError(`libvirt returned a domain definition that is not XML: ${(e as Error).message}`);
  }
}

export function editDomainXml(xml: string, edit: DomainEdit): string {
  const doc = parseDomain(xml);
  const domain = doc.documentElement;
  if (!domain || domain.tagName !== 'domain') throw new OperationFailedError('libvirt returned no <domain> definition');
  const devices = ensureChild(doc, domain, 'devices');

  if (edit.vcpus !== null) {
    // All of them online: the maximum and the current count become one.
    const vcpu = ensureChild(doc, domain, 'vcpu');
    vcpu.removeAttribute('current');
    vcpu.textContent = String(edit.vcpus);
  }
  if (edit.coresPerSocket !== null) {
    const vcpus = edit.vcpus ?? Number(firstChild(domain, 'vcpu')?.textContent ?? 1);
    if (vcpus % edit.coresPerSocket !== 0) {
      throw new OperationFailedError(
        `${vcpus} vCPUs do not divide into sockets of ${edit.coresPerSocket} cores`,
        'INVALID_INPUT',
      );
    }
    const topology = ensureChild(doc, ensureChild(doc, domain, 'cpu'), 'topology');
    topology.setAttribute('sockets', String(vcpus / edit.coresPerSocket));
    topology.setAttribute('dies', '1');
    topology.setAttribute('cores', String(edit.coresPerSocket));
    topology.setAttribute('threads', '1');
  }
  if (edit.memoryMiB !== null) {
    for (const name of ['memory', 'currentMemory']) {
      const e = ensureChild(doc, domain, name);
      e.setAttribute('unit', 'KiB');
      e.textContent = String(edit.memoryMiB * 1024);
    }
  }
  for (const target of edit.removeDiskTargets) {
    const disk = childElements(devices, 'disk').find((d) => diskTarget(d) === target);
    if (!disk) throw new OperationFailedError(`the VM has no disk ${target}`, 'INVALID_INPUT');
    devices.removeChild(disk);
  }
  for (const mac of edit.removeNicMacs) {
    const nic = childElements(devices, 'interface').find((i) => nicMac(i) === mac.toLowerCase());
    if (!nic) throw new OperationFailedError(`the VM has no NIC with MAC ${mac}`, 'INVALID_INPUT');
    devices.removeChild(nic);
  }
  const used = new Set(childElements(devices, 'disk').flatMap((d) => diskTarget(d) ?? []));
  for (const disk of edit.addDiskPaths) {
    const target = nextTarget(used);
    used.add(target);
    devices.appendChild(
      element(
        doc,
        'disk',
        { type: 'file', device: 'disk' },
        element(doc, 'driver', { name: 'qemu', type: disk.format }),
        element(doc, 'source', { file: disk.path }),
        element(doc, 'target', { dev: target, bus: 'virtio' }),
      ),
    );
  }
  for (const network of edit.addNetworks) {
    devices.appendChild(
      element(
        doc,
        'interface',
        { type: 'network' },
        element(doc, 'source', { network }),
        element(doc, 'model', { type: 'virtio' }),
      ),
    );
  }
  return new XMLSerializer().serializeToString(doc);
}

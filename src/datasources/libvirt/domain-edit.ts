import { OperationFailedError } from '../../model/operations.js';
import { escapeXml } from '../xml/tree.js';

// Edits of a domain's inactive XML for reconfigureVm. libvirt's own output is
// regular (one element per line, attributes in single quotes), which these
// edits rely on; the result is checked by libvirt when it is defined.

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

function blocks(xml: string, element: string): string[] {
  return [...xml.matchAll(new RegExp(`<${element}\\b[\\s\\S]*?</${element}>`, 'g'))].map((m) => m[0]);
}

/** The next free virtio target name: vda, vdb, ... */
function nextTarget(used: Set<string>): string {
  for (let i = 0; i < 26; i++) {
    const name = `vd${String.fromCharCode(97 + i)}`;
    if (!used.has(name)) return name;
  }
  throw new OperationFailedError('no free virtio disk target is left (vda to vdz)', 'INVALID_INPUT');
}

export function editDomainXml(xml: string, edit: DomainEdit): string {
  let out = xml;
  if (edit.vcpus !== null) {
    out = out.replace(/<vcpu\b[^>]*>\d+<\/vcpu>/, `<vcpu placement='static'>${edit.vcpus}</vcpu>`);
  }
  if (edit.coresPerSocket !== null) {
    const vcpus = edit.vcpus ?? Number(/<vcpu\b[^>]*>(\d+)<\/vcpu>/.exec(out)?.[1] ?? 1);
    if (vcpus % edit.coresPerSocket !== 0) {
      throw new OperationFailedError(
        `${vcpus} vCPUs do not divide into sockets of ${edit.coresPerSocket} cores`,
        'INVALID_INPUT',
      );
    }
    const topology = `<topology sockets='${vcpus / edit.coresPerSocket}' dies='1' cores='${edit.coresPerSocket}' threads='1'/>`;
    if (/<topology\b[^>]*\/>/.test(out)) out = out.replace(/<topology\b[^>]*\/>/, topology);
    else if (/<cpu\b[^>]*\/>/.test(out)) out = out.replace(/<cpu\b([^>]*)\/>/, `<cpu$1>${topology}</cpu>`);
    else if (/<cpu\b[^>]*>/.test(out)) out = out.replace(/<cpu\b([^>]*)>/, `<cpu$1>${topology}`);
    else out = out.replace(/<\/os>/, `</os>\n  <cpu>${topology}</cpu>`);
  }
  if (edit.memoryMiB !== null) {
    const kib = edit.memoryMiB * 1024;
    out = out
      .replace(/<memory\b[^>]*>\d+<\/memory>/, `<memory unit='KiB'>${kib}</memory>`)
      .replace(/<currentMemory\b[^>]*>\d+<\/currentMemory>/, `<currentMemory unit='KiB'>${kib}</currentMemory>`);
  }
  for (const target of edit.removeDiskTargets) {
    const disk = blocks(out, 'disk').find((d) => new RegExp(`<target dev=['"]${target}['"]`).test(d));
    if (!disk) throw new OperationFailedError(`the VM has no disk ${target}`, 'INVALID_INPUT');
    out = out.replace(disk, '');
  }
  for (const mac of edit.removeNicMacs) {
    const nic = blocks(out, 'interface').find((i) => new RegExp(`<mac address=['"]${mac}['"]`, 'i').test(i));
    if (!nic) throw new OperationFailedError(`the VM has no NIC with MAC ${mac}`, 'INVALID_INPUT');
    out = out.replace(nic, '');
  }
  const used = new Set(blocks(out, 'disk').flatMap((d) => /<target dev=['"]([^'"]+)['"]/.exec(d)?.[1] ?? []));
  const added: string[] = [];
  for (const disk of edit.addDiskPaths) {
    const target = nextTarget(used);
    used.add(target);
    added.push(
      `<disk type='file' device='disk'><driver name='qemu' type='${escapeXml(disk.format)}'/>` +
        `<source file='${escapeXml(disk.path)}'/><target dev='${target}' bus='virtio'/></disk>`,
    );
  }
  for (const network of edit.addNetworks) {
    added.push(`<interface type='network'><source network='${escapeXml(network)}'/><model type='virtio'/></interface>`);
  }
  if (added.length > 0) out = out.replace(/<\/devices>/, `${added.join('\n')}\n</devices>`);
  return out;
}

import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { vmDetails } from '../src/datasources/vsphere/mapping.js';
import type { VsphereSession } from '../src/datasources/vsphere/session.js';
import { invokeTask } from '../src/datasources/vsphere/vim.js';
import { type XNode, child, children, intOf, parseXml, path, textOf, xsiType } from '../src/datasources/vsphere/xml.js';
import { encodeId } from '../src/model/ids.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { succeed } from './helpers/mutations.js';
import { type Vcsim, adminSession, startVcsim, vspherePlatform } from './helpers/vcsim.js';

// How devices, storage and hosts reach the graph: names a frontend can act
// on (a disk's target, unique within its VM, which removeDiskTargets takes)
// and words that mean the same on every platform, checked against what
// vCenter (VMware's simulator) and libvirt (its test driver, read by virsh)
// report themselves.

/** libvirt's disk types: the words VmDisk.sourceType uses on every platform. */
const SOURCE_TYPES = ['file', 'block', 'network', 'volume', 'dir'];

interface Disk {
  device: string;
  target: string;
  bus: string | null;
  sourceType: string;
  source: string | null;
  format: string | null;
}

interface Vm {
  id: string;
  name: string;
  memoryMiB: number;
  maxMemoryMiB: number;
  disks: Disk[];
}

const reporter = { progress: () => {}, upstreamTask: () => {} };

describe('vSphere devices, storage and hosts, against vcsim', () => {
  let sim: Vcsim;
  let admin: VsphereSession;
  let gw: TestGateway;
  let rigged: string;
  let plain: string;

  const vmRef = (moref: string) => ({ type: 'VirtualMachine', value: moref });
  const add = (device: string, fileOperation = '') =>
    `<deviceChange><operation>add</operation>${fileOperation}${device}</deviceChange>`;

  /** The VM's devices as vCenter lists them (config.hardware.device). */
  async function devicesOf(moref: string): Promise<XNode[]> {
    const [o] = await admin.retrieveObjects(
      [vmRef(moref)],
      [{ type: 'VirtualMachine', paths: ['config.hardware.device'] }],
    );
    return children(o!.props.get('config.hardware.device'), 'VirtualDevice');
  }

  async function vm(moref: string): Promise<Vm> {
    const res = await gw.query<{ node: Vm }>(
      `query($id: ID!) { node(id: $id) { ... on VirtualMachine {
        id name memoryMiB maxMemoryMiB disks { device target bus sourceType source format }
      } } }`,
      { id: encodeId({ kind: 'VirtualMachine', platformId: 'vc', nativeId: moref }) },
    );
    expect(res.errors).toBeUndefined();
    return res.data!.node;
  }

  beforeAll(async () => {
    sim = await startVcsim({ dc: 1, cluster: 0, host: 1, vm: 2 });
    admin = await adminSession(sim);
    [rigged, plain] = Object.keys(sim.oracle.vms).sort() as [string, string];
    // Behind the gateway's back: a CD-ROM on each kind of controller with
    // each kind of backing (an ISO on SATA, a client device on IDE 0, an
    // empty drive on IDE 1), a disk on NVMe, and memory hot-add on.
    const spec =
      '<spec><memoryHotAddEnabled>true</memoryHotAddEnabled>' +
      add('<device xsi:type="VirtualAHCIController"><key>-10</key><busNumber>0</busNumber></device>') +
      add(
        '<device xsi:type="VirtualCdrom"><key>-11</key><backing xsi:type="VirtualCdromIsoBackingInfo">' +
          '<fileName>[LocalDS_0] iso/boot.iso</fileName></backing><controllerKey>-10</controllerKey><unitNumber>0</unitNumber></device>',
      ) +
      add(
        '<device xsi:type="VirtualCdrom"><key>-12</key><backing xsi:type="VirtualCdromRemotePassthroughBackingInfo">' +
          '<deviceName></deviceName><useAutoDetect>false</useAutoDetect><exclusive>false</exclusive></backing>' +
          '<controllerKey>200</controllerKey><unitNumber>0</unitNumber></device>',
      ) +
      add(
        '<device xsi:type="VirtualCdrom"><key>-13</key><backing xsi:type="VirtualCdromIsoBackingInfo"><fileName></fileName></backing>' +
          '<controllerKey>201</controllerKey><unitNumber>1</unitNumber></device>',
      ) +
      add('<device xsi:type="VirtualNVMEController"><key>-14</key><busNumber>0</busNumber></device>') +
      add(
        '<device xsi:type="VirtualDisk"><key>-15</key><backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[LocalDS_0]</fileName>' +
          '<diskMode>persistent</diskMode><thinProvisioned>true</thinProvisioned></backing>' +
          '<controllerKey>-14</controllerKey><unitNumber>0</unitNumber><capacityInKB>1024</capacityInKB></device>',
        '<fileOperation>create</fileOperation>',
      ) +
      '</spec>';
    await admin.tasks.wait(await invokeTask(admin.client, 'ReconfigVM_Task', vmRef(rigged), spec), reporter);
    gw = await startTestGateway({ platforms: [vspherePlatform(sim)] });
  }, 60_000);
  afterAll(async () => {
    await gw?.close();
    await admin?.close();
    await sim?.stop();
  });

  it('names each disk and CD-ROM by controller type, bus and unit, once per VM', async () => {
    const raw = await devicesOf(rigged);
    const key = (d: XNode) => textOf(child(d, 'key'));
    const controller = (d: XNode) => raw.find((c) => key(c) === textOf(child(d, 'controllerKey')))!;
    const cdroms = raw.filter((d) => xsiType(d) === 'VirtualCdrom');
    // vcsim's own CD-ROM sits on its disk's slot (SCSI 0, unit 0): vSphere would refuse that, the simulator does not.
    const [shared, sata, ide0, ide1] = cdroms;
    expect([shared, sata, ide0, ide1].map((d) => [xsiType(controller(d!)), intOf(child(d, 'unitNumber'))])).toEqual([
      ['ParaVirtualSCSIController', 0],
      ['VirtualAHCIController', 0],
      ['VirtualIDEController', 0],
      ['VirtualIDEController', 1],
    ]);
    expect(intOf(child(controller(ide1!), 'busNumber'))).toBe(1);

    const disks = (await vm(rigged)).disks;
    expect(disks.map((d) => [d.device, d.target, d.bus])).toEqual([
      ['CDROM', `scsi0:0#${key(shared!)}`, 'scsi'],
      ['DISK', 'scsi0:0', 'scsi'],
      ['CDROM', 'sata0:0', 'sata'],
      ['CDROM', 'ide0:0', 'ide'],
      ['CDROM', 'ide1:1', 'ide'],
      ['DISK', 'nvme0:0', 'nvme'],
    ]);
    const untouched = (await vm(plain)).disks;
    for (const d of [disks, untouched]) expect(new Set(d.map((x) => x.target)).size).toBe(d.length);
  });

  it("says where each device's data comes from in libvirt's words", async () => {
    const raw = await devicesOf(rigged);
    const backing = (type: string, nth = 0) => child(raw.filter((d) => xsiType(d) === type)[nth], 'backing');
    const disks = (await vm(rigged)).disks;
    expect(disks.map((d) => [d.target.replace(/#.*/, ''), d.sourceType, d.source, d.format])).toEqual([
      // vcsim's CD-ROM passes a host drive through (VirtualCdromAtapiBackingInfo).
      ['scsi0:0', 'block', textOf(child(backing('VirtualCdrom'), 'deviceName')), null],
      ['scsi0:0', 'file', textOf(child(backing('VirtualDisk'), 'fileName')), 'vmdk'],
      ['sata0:0', 'file', '[LocalDS_0] iso/boot.iso', 'iso'],
      // A client device: the drive of whoever runs the remote console.
      ['ide0:0', 'network', null, null],
      // No media: as libvirt gives an empty drive.
      ['ide1:1', 'file', null, null],
      ['nvme0:0', 'file', textOf(child(backing('VirtualDisk', 1), 'fileName')), 'vmdk'],
    ]);
    expect(xsiType(backing('VirtualCdrom'))).toBe('VirtualCdromAtapiBackingInfo');
    for (const d of [...disks, ...(await vm(plain)).disks]) expect(SOURCE_TYPES).toContain(d.sourceType);
  });

  it('removes exactly the devices the targets name, CD-ROMs included', async () => {
    const before = await vm(rigged);
    const shared = before.disks.find((d) => d.target.startsWith('scsi0:0#'))!;
    const diskLike = async () =>
      (await devicesOf(rigged))
        .filter((d) => ['VirtualDisk', 'VirtualCdrom'].includes(xsiType(d) ?? ''))
        .map((d) => [xsiType(child(d, 'backing')), intOf(child(d, 'controllerKey')), intOf(child(d, 'unitNumber'))]);
    await succeed(gw, 'reconfigureVm', { vmId: before.id, removeDiskTargets: [shared.target, 'sata0:0', 'ide0:0'] });
    expect(await diskLike()).toEqual([
      ['VirtualDiskFlatVer2BackingInfo', 202, 0],
      ['VirtualCdromIsoBackingInfo', 201, 1],
      ['VirtualDiskFlatVer2BackingInfo', expect.any(Number), 0],
    ]);
    await succeed(gw, 'reconfigureVm', { vmId: before.id, removeDiskTargets: ['scsi0:0'] });
    expect(await diskLike()).toEqual([
      ['VirtualCdromIsoBackingInfo', 201, 1],
      ['VirtualDiskFlatVer2BackingInfo', expect.any(Number), 0],
    ]);
    expect((await vm(rigged)).disks.map((d) => d.target)).toEqual(['ide1:1', 'nvme0:0']);
  });

  it('gives as maxMemoryMiB the memory a VM can have without a restart', async () => {
    const read = await admin.retrieveObjects(
      [vmRef(rigged), vmRef(plain)],
      [{ type: 'VirtualMachine', paths: ['config.hotPlugMemoryLimit', 'config.memoryHotAddEnabled'] }],
    );
    // vcsim reports the limit as 0, with hot-add on (the rigged VM) or unset.
    expect(read.map((o) => [o.obj.value, o.props.get('config.memoryHotAddEnabled')?.text ?? null]).sort()).toEqual(
      [
        [rigged, 'true'],
        [plain, null],
      ].sort(),
    );
    for (const o of read) expect(o.props.get('config.hotPlugMemoryLimit')?.text).toBe('0');
    for (const moref of [rigged, plain]) {
      const { memoryMiB, maxMemoryMiB } = await vm(moref);
      expect(memoryMiB).toBeGreaterThan(0);
      expect(maxMemoryMiB).toBe(memoryMiB);
    }
    // What vCenter reports of a VM with hot-add on: the limit, in MB.
    const facts = (props: Record<string, string>) =>
      vmDetails(
        {
          obj: vmRef('vm-1'),
          props: new Map(Object.entries(props).map(([k, v]) => [k, parseXml(`<val>${v}</val>`)])),
          missing: [],
        },
        null,
      ).maxMemoryMiB;
    const memory = { 'config.hardware.memoryMB': '4096' };
    expect(facts({ ...memory, 'config.memoryHotAddEnabled': 'true', 'config.hotPlugMemoryLimit': '16384' })).toBe(
      16384,
    );
    expect(facts({ ...memory, 'config.memoryHotAddEnabled': 'false', 'config.hotPlugMemoryLimit': '16384' })).toBe(
      4096,
    );
    expect(facts({ ...memory, 'config.memoryHotAddEnabled': 'true' })).toBe(4096);
    expect(facts(memory)).toBe(4096);
  });

  it('names the hypervisor and the datastore type in the neutral words, the raw ones beside', async () => {
    const hosts = await admin.retrieveAll([{ type: 'HostSystem', paths: ['config.product'] }]);
    const stores = await admin.retrieveAll([{ type: 'Datastore', paths: ['summary'] }]);
    const res = await gw.query<{
      hosts: { nodes: Record<string, unknown>[] };
      storage: { nodes: Record<string, unknown>[] };
    }>(`{
      hosts(first: 10) { nodes { hypervisorType rawHypervisorType vsphere { productName } } }
      storage(first: 10) { nodes { type rawType ... on Datastore { datastoreType maintenanceMode rawMaintenanceMode } } }
    }`);
    expect(res.errors).toBeUndefined();
    const productName = textOf(path(hosts[0]!.props.get('config.product'), 'name'));
    expect(productName).toBe('VMware ESXi');
    expect(res.data!.hosts.nodes).toEqual(
      hosts.map(() => ({ hypervisorType: 'ESXI', rawHypervisorType: productName, vsphere: { productName } })),
    );
    // vcsim's datastores are directories it calls OTHER; vSphere's own would be VMFS, NFS, vsan, ...
    expect(res.data!.storage.nodes).toEqual(
      stores.map((s) => {
        const summary = s.props.get('summary');
        expect(textOf(child(summary, 'type'))).toBe('OTHER');
        expect(textOf(child(summary, 'maintenanceMode'))).toBe('normal');
        return {
          type: 'OTHER',
          rawType: 'OTHER',
          datastoreType: 'OTHER',
          maintenanceMode: 'NORMAL',
          rawMaintenanceMode: 'normal',
        };
      }),
    );
  });
});

describe('libvirt storage pools and host, against the test driver', () => {
  let uri: string;
  let gw: TestGateway;
  const virsh = async (...args: string[]) =>
    (await promisify(execFile)('virsh', ['-c', uri, ...args], { encoding: 'utf8' })).stdout;

  // One pool of each kind libvirt's test driver accepts, with the StorageType each is.
  const POOLS: [name: string, xml: string, type: string][] = [
    ['p-dir', "<pool type='dir'>%<target><path>/srv/p-dir</path></target></pool>", 'DIRECTORY'],
    [
      'p-fs',
      "<pool type='fs'>%<source><device path='/dev/sdb1'/><format type='ext4'/></source><target><path>/srv/p-fs</path></target></pool>",
      'FILESYSTEM',
    ],
    [
      'p-nfs',
      "<pool type='netfs'>%<source><host name='nfs.example.com'/><dir path='/exports/vm'/><format type='nfs'/></source><target><path>/srv/p-nfs</path></target></pool>",
      'NFS',
    ],
    [
      'p-cifs',
      "<pool type='netfs'>%<source><host name='smb.example.com'/><dir path='vms'/><format type='cifs'/></source><target><path>/srv/p-cifs</path></target></pool>",
      'CIFS',
    ],
    [
      'p-lvm',
      "<pool type='logical'>%<source><name>vg0</name><format type='lvm2'/></source><target><path>/dev/vg0</path></target></pool>",
      'LVM',
    ],
    [
      'p-iscsi',
      "<pool type='iscsi'>%<source><host name='san.example.com'/><device path='iqn.2013-06.com.example:pool'/></source><target><path>/dev/disk/by-path</path></target></pool>",
      'ISCSI',
    ],
    [
      'p-rbd',
      "<pool type='rbd'>%<source><name>rbd</name><host name='ceph.example.com' port='6789'/></source></pool>",
      'RBD',
    ],
    [
      'p-disk',
      "<pool type='disk'>%<source><device path='/dev/sdc'/><format type='gpt'/></source><target><path>/dev</path></target></pool>",
      'DISK',
    ],
    ['p-zfs', "<pool type='zfs'>%<source><name>tank</name></source></pool>", 'ZFS'],
    [
      'p-vstorage',
      "<pool type='vstorage'>%<source><name>cluster1</name></source><target><path>/mnt/vstorage</path></target></pool>",
      'OTHER',
    ],
  ];

  beforeAll(async () => {
    const pools = POOLS.map(([name, xml], i) =>
      xml.replace('%', `<name>${name}</name><uuid>6e0c0000-0000-4000-8000-${String(i + 1).padStart(12, '0')}</uuid>`),
    ).join('\n  ');
    const file = join(mkdtempSync(join(tmpdir(), 'virt-graph-devices-')), 'node.xml');
    writeFileSync(
      file,
      `<?xml version='1.0'?>
<node>
  <cpu><mhz>2000</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads></cpu>
  <memory>4194304</memory>
  <domain type='test'>
    <name>media</name>
    <uuid>6e0c0001-0000-4000-8000-000000000001</uuid>
    <memory>1048576</memory>
    <vcpu>1</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='network' device='disk'>
        <driver name='qemu' type='raw'/>
        <source protocol='rbd' name='rbd/media-root'><host name='ceph.example.com'/></source>
        <target dev='vda' bus='virtio'/>
      </disk>
      <disk type='block' device='cdrom'><source dev='/dev/sr0'/><target dev='sda' bus='sata'/><readonly/></disk>
      <disk type='file' device='cdrom'><target dev='sdb' bus='sata'/><readonly/></disk>
    </devices>
  </domain>
  ${pools}
</node>
`,
    );
    uri = `test://${file}`;
    gw = await startTestGateway({ platforms: [{ id: 'lab', kind: 'libvirt', uri }] });
  }, 60_000);
  afterAll(() => gw?.close());

  it('names each pool type in the neutral words, the raw ones beside', async () => {
    const res = await gw.query<{ storage: { nodes: { name: string; type: string; rawType: string }[] } }>(
      '{ storage(first: 50) { nodes { name type rawType } } }',
    );
    expect(res.errors).toBeUndefined();
    const expected = await Promise.all(
      POOLS.map(async ([name, , type]) => {
        const rawType = /<pool type='([^']+)'/.exec(await virsh('pool-dumpxml', name))?.[1];
        return { name, type, rawType };
      }),
    );
    expect([...res.data!.storage.nodes].sort((a, b) => a.name.localeCompare(b.name))).toEqual(
      expected.sort((a, b) => a.name.localeCompare(b.name)),
    );
  });

  it('names the hypervisor as the driver reports it, and disks in the same words as vSphere', async () => {
    const res = await gw.query<{
      hosts: { nodes: { hypervisorType: string; rawHypervisorType: string }[] };
      virtualMachines: { nodes: { disks: Disk[] }[] };
    }>(`{
      hosts(first: 10) { nodes { hypervisorType rawHypervisorType } }
      virtualMachines(first: 10) { nodes { disks { device target bus sourceType source format } } }
    }`);
    expect(res.errors).toBeUndefined();
    const driver = /Using API: (\S+)/.exec(await virsh('version'))?.[1];
    expect(driver).toBe('TEST');
    expect(res.data!.hosts.nodes).toEqual([{ hypervisorType: 'TEST', rawHypervisorType: driver }]);
    const disks = res.data!.virtualMachines.nodes[0]!.disks;
    expect(disks.map((d) => [d.device, d.target, d.sourceType, d.source])).toEqual([
      ['DISK', 'vda', 'network', 'rbd://rbd/media-root'],
      ['CDROM', 'sda', 'block', '/dev/sr0'],
      ['CDROM', 'sdb', 'file', null],
    ]);
    for (const d of disks) expect(SOURCE_TYPES).toContain(d.sourceType);
  });
});

import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { compareLiveWithDirect } from './helpers/equivalence.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { GUEST, READY_MARKER, assertGuestBuilt, diskOverlay, guestAccel } from './helpers/guest.js';
import { holdGuestTurn } from './helpers/guest-turn.js';
import { finished, mutate, succeed } from './helpers/mutations.js';
import { type QemuLibvirtd, qemuLibvirtd } from './helpers/qemu-libvirtd.js';
import { eventually } from './helpers/subscriptions.js';

// libvirt's qemu driver with a real guest: a private libvirtd (system mode,
// its own directories and socket) runs a small Linux guest (Debian's kernel,
// a busybox init that answers the ACPI power button) under KVM where it
// boots, TCG otherwise. What the test driver cannot show: a graceful stop
// that the guest carries out itself, a reboot through the guest, pausing a
// running CPU, a snapshot with memory that comes back running.
let daemon: QemuLibvirtd;
let gw: TestGateway;
let vmId: string;
let serialLog: string;
const NAME = 'vg-guest-1';

const serial = () => {
  try {
    return readFileSync(serialLog, 'utf8');
  } catch {
    return '';
  }
};
const readyCount = () => serial().split(READY_MARKER).length - 1;

async function powerState(): Promise<string> {
  const res = await gw.query<{ node: { powerState: string } }>(
    'query($id: ID!) { node(id: $id) { ... on VirtualMachine { powerState } } }',
    { id: vmId },
  );
  return res.data!.node.powerState;
}

function domainXml(type: string, disk: string, guest = { name: NAME, serial: serialLog, acpi: true }): string {
  const { name, serial: log, acpi } = guest;
  return `<domain type='${type}'>
  <name>${name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${GUEST.kernel}</kernel>
    <initrd>${GUEST.initramfs}</initrd>
    <cmdline>${GUEST.cmdline}</cmdline>
  </os>
  <features>${acpi ? '<acpi/>' : ''}</features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <source network='vg-isolated'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='${log}' append='on'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='${log}' append='on'/>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>`;
}

holdGuestTurn();

beforeAll(async () => {
  assertGuestBuilt();
  const { domainType } = await guestAccel();
  daemon = qemuLibvirtd();
  await daemon.start();
  serialLog = join(daemon.dir, 'guest-serial.log');
  const files = join(daemon.dir, 'files');
  // An isolated network: a bridge (in the daemon's own network namespace), no DHCP, no route out.
  const net = join(daemon.dir, 'net.xml');
  const bridge = 'vgbr0';
  mkdirSync(files, { recursive: true });
  writeFileSync(net, `<network><name>vg-isolated</name><bridge name='${bridge}' stp='off'/></network>`);
  await daemon.virsh('net-define', net);
  await daemon.virsh('net-start', 'vg-isolated');
  // The guest's disk lives in a directory pool, so that clones can copy it.
  await daemon.virsh('pool-define-as', 'vg-files', 'dir', '--target', files);
  await daemon.virsh('pool-start', 'vg-files');
  const disk = await diskOverlay(files);
  await daemon.virsh('pool-refresh', 'vg-files');
  const xml = join(daemon.dir, 'domain.xml');
  writeFileSync(xml, domainXml(domainType, disk));
  await daemon.virsh('define', xml);
  await daemon.virsh('start', NAME);
  gw = await startTestGateway({
    platforms: [{ id: 'kvm', kind: 'libvirt', uri: daemon.uri, retryInitialMs: 50, retryMaxMs: 200 }],
  });
  await eventually(async () => {
    const res = await gw.query<{ virtualMachines: { nodes: { id: string; name: string }[] } }>(
      '{ virtualMachines { nodes { id name } } }',
    );
    const vm = res.data?.virtualMachines.nodes.find((n) => n.name === NAME);
    if (vm) vmId = vm.id;
    return vm !== undefined;
  }, 20_000);
  await eventually(() => readyCount() >= 1, 60_000);
}, 120_000);

afterAll(async () => {
  await gw?.close();
  await daemon?.virsh('destroy', NAME).catch(() => undefined);
  await daemon?.virsh('net-destroy', 'vg-isolated').catch(() => undefined);
  await daemon?.destroy();
});

describe('libvirt qemu driver with a real guest', () => {
  it('shows the running guest with its hardware', async () => {
    const res = await gw.query<{
      node: {
        powerState: string;
        vcpus: number;
        memoryMiB: number;
        disks: { target: string }[];
        nics: { model: string | null }[];
      };
    }>(
      'query($id: ID!) { node(id: $id) { ... on VirtualMachine { powerState vcpus memoryMiB disks { target } nics { model } } } }',
      {
        id: vmId,
      },
    );
    expect(res.errors).toBeUndefined();
    expect(res.data!.node).toMatchObject({ powerState: 'ON', vcpus: 1, memoryMiB: 256, disks: [{ target: 'vda' }] });
    expect(res.data!.node.nics).toHaveLength(1);
    // The guest saw its disk and NIC.
    expect(serial()).toMatch(/disks: .*vda/);
  });

  it('answers every field the same from the live inventory as from reading libvirt directly', async () => {
    await compareLiveWithDirect([{ id: 'kvm', kind: 'libvirt', uri: daemon.uri }]);
  }, 60_000);

  it('pauses and unpauses the running CPU', async () => {
    await succeed(gw, 'pauseVm', { vmId });
    expect(await powerState()).toBe('PAUSED');
    expect((await daemon.virsh('domstate', NAME)).trim()).toBe('paused');
    await succeed(gw, 'unpauseVm', { vmId });
    expect(await powerState()).toBe('ON');
  }, 60_000);

  it('reboots through the guest: it powers off by its own init and libvirt starts it again', async () => {
    const before = readyCount();
    await succeed(gw, 'rebootVm', { vmId });
    await eventually(() => readyCount() > before, 60_000);
    expect(await powerState()).toBe('ON');
  }, 90_000);

  it('takes a snapshot with memory and reverts to it running', async () => {
    const created = await succeed(gw, 'createSnapshot', { vmId, name: 'with-memory', includeMemory: true });
    const snapshotId = created.resultSnapshot!.id;
    await succeed(gw, 'stopVm', { vmId, force: true });
    expect(await powerState()).toBe('OFF');
    await succeed(gw, 'revertToSnapshot', { snapshotId });
    expect(await powerState()).toBe('ON');
    expect((await daemon.virsh('domstate', NAME)).trim()).toBe('running');
    await succeed(gw, 'deleteSnapshot', { snapshotId });
  }, 120_000);

  it('suspends to disk (managed save) and resumes where it was', async () => {
    const before = readyCount();
    await succeed(gw, 'suspendVm', { vmId });
    expect(await powerState()).toBe('SUSPENDED');
    expect(await daemon.virsh('dominfo', NAME)).toMatch(/Managed save:\s+yes/);
    await succeed(gw, 'resumeVm', { vmId });
    expect(await powerState()).toBe('ON');
    // Restored from its saved memory, not booted again.
    expect(readyCount()).toBe(before);
  }, 90_000);

  it('clones the guest with its disk copied, and the clone runs', async () => {
    // A running disk is not copied (libvirt clones need the source off).
    const running = await mutate(gw, 'cloneVm', { vmId, name: `${NAME}-clone` });
    expect(running.userErrors[0]).toMatchObject({ code: 'WRONG_STATE' });
    await succeed(gw, 'stopVm', { vmId, force: true });
    const task = await succeed(gw, 'cloneVm', { vmId, name: `${NAME}-clone`, powerOn: true });
    expect(task.state).toBe('SUCCEEDED');
    const res = await gw.query<{
      virtualMachines: {
        nodes: { id: string; name: string; powerState: string; disks: { source: string | null }[] }[];
      };
    }>('{ virtualMachines { nodes { id name powerState disks { source } } } }');
    const byName = new Map(res.data!.virtualMachines.nodes.map((n) => [n.name, n]));
    const copy = byName.get(`${NAME}-clone`)!;
    expect(copy.powerState).toBe('ON');
    expect(copy.disks[0]!.source).not.toBe(byName.get(NAME)!.disks[0]!.source);
    expect((await daemon.virsh('domstate', `${NAME}-clone`)).trim()).toBe('running');
    await succeed(gw, 'deleteVm', { vmId: copy.id, force: true });
    expect(await daemon.virsh('list', '--all', '--name')).not.toContain(`${NAME}-clone`);
    const before = readyCount();
    await succeed(gw, 'startVm', { vmId });
    await eventually(() => readyCount() > before, 60_000);
  }, 120_000);

  it('reconfigures a running guest: live within its maximums (the balloon), in its definition beyond them', async () => {
    const liveMemoryKiB = async () => Number(/Used memory:\s+(\d+) KiB/.exec(await daemon.virsh('dominfo', NAME))?.[1]);
    // Beyond what the running guest was started with: its next start.
    await succeed(gw, 'reconfigureVm', { vmId, vcpus: 2, memoryMiB: 320 });
    const inactive = await daemon.virsh('dumpxml', NAME, '--inactive');
    expect(inactive).toMatch(/<vcpu[^>]*>2<\/vcpu>/);
    expect(inactive).toMatch(/<memory unit='KiB'>327680<\/memory>/);
    expect((await daemon.virsh('vcpucount', NAME, '--live', '--active')).trim()).toBe('1');
    expect(await liveMemoryKiB()).toBe(262144);
    // Within them: at once, through the guest's balloon.
    await succeed(gw, 'reconfigureVm', { vmId, vcpus: 1, memoryMiB: 200 });
    // The guest gives its memory back as its balloon inflates.
    await eventually(async () => (await liveMemoryKiB()) === 204800, 20_000);
    await succeed(gw, 'reconfigureVm', { vmId, memoryMiB: 256 });
    await eventually(async () => (await liveMemoryKiB()) === 262144, 20_000);
  }, 60_000);

  it('creates a VM on the qemu driver that starts (a new disk in a pool, a NIC on a network)', async () => {
    const res = await gw.query<{
      platforms: { id: string }[];
      networks: { nodes: { id: string; name: string }[] };
      storage: { nodes: { id: string; name: string }[] };
    }>('{ platforms { id } networks { nodes { id name } } storage { nodes { id name } } }');
    expect(res.errors).toBeUndefined();
    const network = res.data!.networks.nodes.find((n) => n.name === 'vg-isolated')!;
    const pool = res.data!.storage.nodes.find((n) => n.name === 'vg-files')!;
    const task = await succeed(gw, 'createVm', {
      platformId: res.data!.platforms[0]!.id,
      name: 'vg-created',
      memoryMiB: 128,
      disks: [{ capacityBytes: 16 * 1024 * 1024, storageId: pool.id }],
      nics: [{ networkId: network.id }],
      powerOn: true,
    });
    expect(task.state).toBe('SUCCEEDED');
    expect((await daemon.virsh('domstate', 'vg-created')).trim()).toBe('running');
    const created = await gw.query<{ virtualMachines: { nodes: { id: string; name: string; powerState: string }[] } }>(
      '{ virtualMachines { nodes { id name powerState } } }',
    );
    const vm = created.data!.virtualMachines.nodes.find((n) => n.name === 'vg-created')!;
    expect(vm.powerState).toBe('ON');
    await succeed(gw, 'deleteVm', { vmId: vm.id, force: true });
  }, 90_000);

  it('keeps the guest running when libvirtd restarts, and the gateway reconnects to it', async () => {
    await daemon.stop();
    // QEMU is a process of its own: the guest goes on without its daemon.
    await eventually(async () => {
      const res = await gw.query<{ platforms: { status: string }[] }>('{ platforms { status } }');
      return res.data!.platforms[0]!.status !== 'CONNECTED';
    }, 20_000);
    await daemon.start();
    await eventually(async () => {
      const res = await gw.query<{ platforms: { status: string; inventoryState: string }[] }>(
        '{ platforms { status inventoryState } }',
      );
      return res.data!.platforms[0]!.status === 'CONNECTED' && res.data!.platforms[0]!.inventoryState === 'SYNCED';
    }, 30_000);
    expect((await daemon.virsh('domstate', NAME)).trim()).toBe('running');
    expect(await powerState()).toBe('ON');
    // And it is still the gateway's to operate.
    await succeed(gw, 'pauseVm', { vmId });
    await succeed(gw, 'unpauseVm', { vmId });
  }, 90_000);

  it('gives up a graceful stop at the deadline when the guest ignores it, and leaves the guest running', async () => {
    const { domainType } = await guestAccel();
    const files = join(daemon.dir, 'files');
    const log = join(daemon.dir, 'deaf-serial.log');
    const xml = join(daemon.dir, 'deaf.xml');
    // No ACPI: the power button never reaches the guest.
    writeFileSync(
      xml,
      domainXml(domainType, await diskOverlay(mkdtempSync(join(files, 'deaf-'))), {
        name: 'vg-deaf',
        serial: log,
        acpi: false,
      }),
    );
    await daemon.virsh('define', xml);
    await daemon.virsh('start', 'vg-deaf');
    const impatient = await startTestGateway({
      platforms: [{ id: 'kvm', kind: 'libvirt', uri: daemon.uri, gracefulStopTimeoutMs: 1_500 }],
    });
    try {
      let deaf = '';
      await eventually(async () => {
        const res = await impatient.query<{ virtualMachines: { nodes: { id: string; name: string }[] } }>(
          '{ virtualMachines { nodes { id name } } }',
        );
        deaf = res.data?.virtualMachines.nodes.find((n) => n.name === 'vg-deaf')?.id ?? '';
        return deaf !== '';
      }, 20_000);
      const payload = await mutate(impatient, 'stopVm', { vmId: deaf });
      expect(payload.userErrors).toEqual([]);
      const task = await finished(impatient, payload.task!.id, 30_000);
      expect(task).toMatchObject({ state: 'FAILED', error: { code: 'TIMEOUT' } });
      expect(task.error!.message).toMatch(/did not shut down within 2 s.*left running: stop it with force/);
      expect((await daemon.virsh('domstate', 'vg-deaf')).trim()).toBe('running');
    } finally {
      await impatient.close();
      await daemon.virsh('destroy', 'vg-deaf').catch(() => undefined);
      await daemon.virsh('undefine', 'vg-deaf').catch(() => undefined);
    }
  }, 90_000);

  it('stops gracefully: the guest powers itself off, read back through virsh', async () => {
    const payload = await mutate(gw, 'stopVm', { vmId });
    expect(payload.userErrors).toEqual([]);
    const task = await finished(gw, payload.task!.id, 90_000);
    expect(task.state, JSON.stringify(task.error)).toBe('SUCCEEDED');
    expect(await powerState()).toBe('OFF');
    expect((await daemon.virsh('domstate', NAME, '--reason')).trim()).toMatch(/shut off \(shutdown\)/);
    // The guest's own init carried it out.
    expect(serial()).toMatch(/reboot: Power down/);
    const before = readyCount();
    await succeed(gw, 'startVm', { vmId });
    await eventually(() => readyCount() > before, 60_000);
    expect(await powerState()).toBe('ON');
  }, 120_000);
});

describe('live migration between two libvirt hosts', () => {
  let peer: QemuLibvirtd;
  let both: TestGateway;

  beforeAll(async () => {
    // A second host: its own libvirtd, mount namespace, host name and disks, on the first one's network.
    const files = join(daemon.dir, 'files');
    peer = qemuLibvirtd('peer', { peerOf: daemon, privateDirs: [files] });
    await peer.start();
    await peer.virsh('pool-define-as', 'vg-files', 'dir', '--target', files);
    await peer.virsh('pool-start', 'vg-files');
    const net = join(peer.dir, 'net.xml');
    writeFileSync(net, "<network><name>vg-isolated</name><forward mode='bridge'/><bridge name='vgbr0'/></network>");
    await peer.virsh('net-define', net);
    await peer.virsh('net-start', 'vg-isolated');
    both = await startTestGateway({
      platforms: [
        { id: 'kvm', kind: 'libvirt', uri: daemon.uri },
        { id: 'kvm-peer', kind: 'libvirt', uri: peer.uri },
      ],
    });
    await eventually(async () => {
      const res = await both.query<{ platforms: { inventoryState: string }[] }>('{ platforms { inventoryState } }');
      return res.data!.platforms.every((p) => p.inventoryState === 'SYNCED');
    }, 20_000);
  }, 60_000);

  afterAll(async () => {
    await both?.close();
    await peer?.virsh('destroy', NAME).catch(() => undefined);
    await peer?.destroy();
  });

  it('moves the running guest to the other host without stopping it, its local disk copied along', async () => {
    const hosts = await both.query<{ platforms: { name: string; hosts: { nodes: { id: string }[] } }[] }>(
      '{ platforms { name hosts { nodes { id } } } }',
    );
    const target = hosts.data!.platforms.find((p) => p.name === 'kvm-peer')!.hosts.nodes[0]!.id;
    const before = readyCount();
    await succeed(both, 'migrateVm', { vmId, hostId: target });
    expect((await peer.virsh('domstate', NAME)).trim()).toBe('running');
    expect(await daemon.virsh('list', '--all', '--name')).not.toContain(NAME);
    const moved = await both.query<{
      virtualMachines: { nodes: { name: string; powerState: string; platform: { name: string } }[] };
    }>('{ virtualMachines { nodes { name powerState platform { name } } } }');
    expect(moved.data!.virtualMachines.nodes.filter((n) => n.name === NAME)).toEqual([
      { name: NAME, powerState: 'ON', platform: { name: 'kvm-peer' } },
    ]);
    // Live: the guest did not boot again.
    expect(readyCount()).toBe(before);
    // Its disk was copied into the other host's own directory (the same path, another file).
    await peer.virsh('pool-refresh', 'vg-files');
    expect(await peer.virsh('vol-list', 'vg-files')).toMatch(/\.qcow2/);
  }, 120_000);
});

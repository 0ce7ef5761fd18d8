import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  type DeclarationRow,
  type StatusRow,
  applied,
  condition,
  declaration,
  forgetVm,
  holdsFor,
  until,
  vmNamed,
} from './helpers/declarations.js';
import { type TestGateway, startTestGateway } from './helpers/gateway.js';
import { GUEST, READY_MARKER, assertGuestBuilt, guestAccel } from './helpers/guest.js';
import { holdGuestTurn } from './helpers/guest-turn.js';
import { succeed } from './helpers/mutations.js';
import { type QemuLibvirtd, qemuLibvirtd } from './helpers/qemu-libvirtd.js';
import { subscribe } from './helpers/subscriptions.js';

// RERUN_ON_FAILURE with a guest that really fails: a private libvirtd (qemu
// driver) runs the small Linux guest of live-qemu, and the test kills its
// QEMU process. libvirt then reports it shut off with reason `crashed`, and
// the reconciler starts it again; a stop that the guest carries out itself
// (ACPI, virsh shutdown) or that a caller makes (virsh destroy) stands.
// Checked by libvirt's own view (virsh, the domain's log) and the guest's
// serial console, not only by the gateway.

const NAME = 'vg-rerun';
const VCPUS = 1;
const MEMORY_MIB = 256;

/** Fast for tests: a resync every second, short backoffs. */
const RECONCILER = { resyncSeconds: 1, backoffInitialMs: 200, backoffMaxMs: 2_000 };

const VM_CHANGED = `subscription($f: VmChangeFilter) {
  vmChanged(filter: $f) { type changes previousPowerState powerState vm { powerState rawStateReason status { phase } } }
}`;

interface VmEvent {
  vmChanged: {
    type: string;
    changes: string[];
    previousPowerState: string | null;
    powerState: string | null;
    vm: { powerState: string; rawStateReason: string | null; status: { phase: string } } | null;
  };
}

let daemon: QemuLibvirtd;
let gw: TestGateway;
let platformId: string;
let vmId: string;
let serialLog: string;
/** The spec as last applied: a switch of run strategy applies over it. */
let current: DeclarationRow;

const read = (file: string) => {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
};
const serial = () => read(serialLog);
const readyCount = () => serial().split(READY_MARKER).length - 1;
/** What libvirtd wrote to the domain's log (it notes each stop with its reason). */
const domainLog = () => read(join(daemon.dir, 'log', 'qemu', `${NAME}.log`));
const domstate = async () => (await daemon.virsh('domstate', NAME, '--reason')).trim();
/** The operations the reconciler has run on the guest so far (from the gateway's log). */
const reconcilerActions = () =>
  gw
    .logs()
    .filter((l) => l['msg'] === 'reconciling a declared VM' && l['vm'] === NAME)
    .map((l) => `${String(l['mutation'])} (${String(l['runStrategy'])})`);

/** No NIC, no disk: the guest boots from its initramfs, and answers the ACPI power button. */
function domainXml(type: string): string {
  return `<domain type='${type}'>
  <name>${NAME}</name>
  <memory unit='MiB'>${MEMORY_MIB}</memory>
  <vcpu>${VCPUS}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${GUEST.kernel}</kernel>
    <initrd>${GUEST.initramfs}</initrd>
    <cmdline>${GUEST.cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='file'>
      <source path='${serialLog}' append='on'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='${serialLog}' append='on'/>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>`;
}

const spec = (runStrategy: string) => ({ vcpus: VCPUS, memoryMiB: MEMORY_MIB, disks: [], nics: [], runStrategy });

const facts = (s: StatusRow) =>
  Object.fromEntries(s.conditions.map((c) => [c.type, `${c.status} ${c.reason}`])) as Record<string, string>;

/** Converged: the VM is as declared and the reconciler has acted on this generation. */
const converged = (d: DeclarationRow | undefined, phase: string, power: string, ready: string): boolean =>
  d !== undefined &&
  d.vm?.powerState === power &&
  d.status.phase === phase &&
  condition(d.status, 'Converged')?.status === 'TRUE' &&
  condition(d.status, 'Ready')?.status === ready &&
  d.status.observedGeneration === d.spec.generation;

/** Applies the same hardware with another run strategy, over the declaration last read. */
async function switchTo(runStrategy: string): Promise<DeclarationRow> {
  current = await applied(gw, {
    platformId,
    name: NAME,
    spec: spec(runStrategy),
    resourceVersion: current.spec.resourceVersion,
  });
  return current;
}

holdGuestTurn();

beforeAll(async () => {
  assertGuestBuilt();
  const { domainType } = await guestAccel();
  daemon = qemuLibvirtd('rerun');
  await daemon.start();
  serialLog = join(daemon.dir, 'guest-serial.log');
  const xml = join(daemon.dir, 'domain.xml');
  writeFileSync(xml, domainXml(domainType));
  await daemon.virsh('define', xml);
  await daemon.virsh('start', NAME);
  gw = await startTestGateway({
    reconciler: RECONCILER,
    platforms: [{ id: 'kvm', kind: 'libvirt', uri: daemon.uri, retryInitialMs: 50, retryMaxMs: 200 }],
  });
  await until(
    'the live inventory is SYNCED',
    async () =>
      (await gw.query<{ platforms: { inventoryState: string }[] }>('{ platforms { inventoryState } }')).data
        ?.platforms[0]?.inventoryState,
    (s) => s === 'SYNCED',
    20_000,
  );
  const res = await gw.query<{ platforms: { id: string }[] }>('{ platforms { id } }');
  platformId = res.data!.platforms[0]!.id;
  vmId = (await until(
    `${NAME} in the inventory`,
    () => vmNamed(gw, NAME),
    (vm) => vm !== undefined,
    20_000,
  ))!.id;
  // A graceful stop needs the guest's acpid listening.
  await until(
    'the guest booted',
    async () => readyCount(),
    (n) => n >= 1,
    60_000,
    200,
  );
}, 120_000);

afterAll(async () => {
  if (gw && platformId) await forgetVm(gw, { platformId, name: NAME }).catch(() => undefined);
  await gw?.close();
  await daemon?.virsh('destroy', NAME).catch(() => undefined);
  await daemon?.virsh('undefine', NAME).catch(() => undefined);
  await daemon?.destroy();
});

describe('RERUN_ON_FAILURE on libvirt with a real guest', () => {
  it('adopts the running guest as declared, changing nothing', async () => {
    current = await applied(gw, { platformId, name: NAME, spec: spec('RERUN_ON_FAILURE') });
    expect(current.spec).toMatchObject({ runStrategy: 'RERUN_ON_FAILURE', generation: 1, vcpus: 1, memoryMiB: 256 });
    const adopted = (await until(
      `${NAME} adopted and converged, running`,
      () => declaration(gw, platformId, NAME),
      (d) => converged(d, 'RUNNING', 'ON', 'TRUE'),
      15_000,
    ))!;
    expect(adopted.vm!.id).toBe(vmId);
    expect(facts(adopted.status)).toMatchObject({ Ready: 'TRUE Running', Converged: 'TRUE Converged' });
    // The same domain, untouched: one of that name, not restarted, not reconfigured.
    expect((await daemon.virsh('list', '--all', '--name')).split('\n').filter((n) => n.trim() === NAME)).toHaveLength(
      1,
    );
    expect(await domstate()).toBe('running (booted)');
    expect(readyCount()).toBe(1);
    expect(await daemon.virsh('dominfo', NAME)).toMatch(/^CPU\(s\):\s+1$/m);
    expect(reconcilerActions()).toEqual([]);
  }, 30_000);

  it('starts the guest again when its QEMU process dies (libvirt: shut off, crashed)', async () => {
    const sub = subscribe<VmEvent>(gw.url, VM_CHANGED, { f: { vmIds: [vmId] } });
    try {
      await new Promise((r) => setTimeout(r, 300));
      const pid = Number(read(join(daemon.dir, 'run', 'qemu', `${NAME}.pid`)).trim());
      expect(pid).toBeGreaterThan(1);
      const booted = readyCount();
      const acted = reconcilerActions().length;
      process.kill(pid, 'SIGKILL');
      const killedAt = Date.now();
      await until(
        'libvirt noted the stop as a crash',
        async () => domainLog(),
        (log) => /shutting down, reason=crashed/.test(log),
        10_000,
      );
      await until('running again (virsh)', domstate, (s) => s.startsWith('running'), 10_000);
      expect(Date.now() - killedAt).toBeLessThan(5_000);
      // A new QEMU process, and the guest booted in it.
      expect(Number(read(join(daemon.dir, 'run', 'qemu', `${NAME}.pid`)).trim())).not.toBe(pid);
      await until(
        'the guest booted again',
        async () => readyCount(),
        (n) => n > booted,
        60_000,
        200,
      );

      await until(
        'vmChanged saw it off, then on, with a STATUS change',
        async () => sub.events.map((e) => e.vmChanged),
        (events) => {
          const off = events.findIndex((e) => e.powerState === 'OFF');
          return (
            off >= 0 &&
            events.slice(off + 1).some((e) => e.powerState === 'ON') &&
            events.some((e) => e.changes.includes('STATUS'))
          );
        },
        10_000,
      );
      expect(sub.errors).toEqual([]);
      const off = sub.events.find((e) => e.vmChanged.powerState === 'OFF')!.vmChanged;
      expect(off.previousPowerState).toBe('ON');
      // The gateway saw the crash as libvirt reported it: shut off, crashed; status FAILED. An event's VM
      // is read when it is sent: on a fast machine the guest may be running again by then.
      if (off.vm?.powerState === 'OFF')
        expect(off.vm).toMatchObject({ rawStateReason: 'crashed', status: { phase: 'FAILED' } });
      // The reconciler started it, once.
      expect(reconcilerActions().slice(acted)).toEqual(['startVm (RERUN_ON_FAILURE)']);
    } finally {
      await sub.close();
    }
    const again = (await until(
      `${NAME} converged again, running`,
      () => declaration(gw, platformId, NAME),
      (d) => converged(d, 'RUNNING', 'ON', 'TRUE'),
      10_000,
    ))!;
    expect(again.vm!.id).toBe(vmId);
    expect(again.spec.generation).toBe(1);
  }, 90_000);

  it("lets a stop from inside the guest (virsh shutdown) and a caller's destroy stand", async () => {
    const acted = reconcilerActions().length;
    const since = serial().length;
    await daemon.virsh('shutdown', NAME);
    await until('shut off by the guest (virsh)', domstate, (s) => s === 'shut off (shutdown)', 30_000);
    // The guest's own init powered it off.
    expect(serial().slice(since)).toMatch(/reboot: Power down/);
    await holdsFor('stays shut off after virsh shutdown', domstate, (s) => s === 'shut off (shutdown)', 4_000, 200);
    const stopped = (await until(
      `${NAME} STOPPED, as its run strategy leaves it`,
      () => declaration(gw, platformId, NAME),
      (d) => converged(d, 'STOPPED', 'OFF', 'FALSE'),
      5_000,
    ))!;
    // Declared RERUN_ON_FAILURE: ready when running; a stop that stands is no drift.
    expect(facts(stopped.status)).toMatchObject({ Ready: 'FALSE Stopped', Converged: 'TRUE Converged' });
    const vm = (await vmNamed(gw, NAME))!;
    expect(vm).toMatchObject({ powerState: 'OFF', phase: 'STOPPED', status: { phase: 'STOPPED' } });

    // A caller may start it (nothing to undo under this strategy), and destroy it behind the gateway's back.
    await succeed(gw, 'startVm', { vmId });
    expect(await domstate()).toMatch(/^running/);
    await daemon.virsh('destroy', NAME);
    expect(await domstate()).toBe('shut off (destroyed)');
    await holdsFor('stays shut off after virsh destroy', domstate, (s) => s === 'shut off (destroyed)', 3_000, 200);
    const destroyed = (await until(
      `${NAME} STOPPED after destroy`,
      () => declaration(gw, platformId, NAME),
      (d) => converged(d, 'STOPPED', 'OFF', 'FALSE'),
      5_000,
    ))!;
    expect(facts(destroyed.status)).toMatchObject({ Ready: 'FALSE Stopped', Converged: 'TRUE Converged' });
    // The reconciler did nothing about either stop.
    expect(reconcilerActions().slice(acted)).toEqual([]);
  }, 60_000);

  it('starts it when switched to ALWAYS, and stops it when switched to HALTED', async () => {
    const acted = reconcilerActions().length;
    const booted = readyCount();
    const always = await switchTo('ALWAYS');
    expect(always.spec).toMatchObject({ runStrategy: 'ALWAYS', generation: 2 });
    await until('started for ALWAYS (virsh)', domstate, (s) => s.startsWith('running'), 10_000);
    await until(
      `${NAME} converged, running`,
      () => declaration(gw, platformId, NAME),
      (d) => converged(d, 'RUNNING', 'ON', 'TRUE'),
      10_000,
    );
    // Booted, so that it answers the power button.
    await until(
      'the guest booted for ALWAYS',
      async () => readyCount(),
      (n) => n > booted,
      60_000,
      200,
    );

    const since = serial().length;
    const halted = await switchTo('HALTED');
    expect(halted.spec).toMatchObject({ runStrategy: 'HALTED', generation: 3 });
    await until('stopped for HALTED (virsh)', domstate, (s) => s.startsWith('shut off'), 30_000);
    const off = (await until(
      `${NAME} converged, halted`,
      () => declaration(gw, platformId, NAME),
      (d) => converged(d, 'STOPPED', 'OFF', 'TRUE'),
      10_000,
    ))!;
    expect(facts(off.status)).toMatchObject({ Ready: 'TRUE Halted', Converged: 'TRUE Converged' });
    // Gracefully: the guest powered itself off.
    expect(await domstate()).toBe('shut off (shutdown)');
    expect(serial().slice(since)).toMatch(/reboot: Power down/);
    await holdsFor('stays shut off when HALTED', domstate, (s) => s.startsWith('shut off'), 2_000, 200);
    expect(reconcilerActions().slice(acted)).toEqual(['startVm (ALWAYS)', 'stopVm (HALTED)']);
  }, 90_000);
});

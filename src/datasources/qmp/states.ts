import type { PowerState, VmPhase } from '../../model/vm.js';
import type { QmpRunState } from './protocol.js';

// QEMU's run states (`query-status`, RunState in qapi/run-state.json) in the
// neutral words. A QEMU process exists only while its VM does, so OFF is
// rare: only a QEMU started with -no-shutdown whose guest has shut down
// stays, in `shutdown`, until it is reset or quit.

export interface RunStateMapping {
  powerState: PowerState;
  phase: VmPhase;
}

const RUN_STATES: Record<string, RunStateMapping> = {
  running: { powerState: 'ON', phase: 'RUNNING' },
  // COLO (coarse-grained lock-stepping) fault tolerance: running, with a secondary in step.
  colo: { powerState: 'ON', phase: 'RUNNING' },
  paused: { powerState: 'PAUSED', phase: 'PAUSED' },
  // Started with -S and never run: `cont` starts the guest.
  prelaunch: { powerState: 'PAUSED', phase: 'STARTING' },
  // Stopped by a gdbstub breakpoint.
  debug: { powerState: 'PAUSED', phase: 'PAUSED' },
  // Stopped by a disk error (werror=stop/rerror=stop); `cont` retries.
  'io-error': { powerState: 'PAUSED', phase: 'PAUSED' },
  // A snapshot being saved (the vCPUs stop meanwhile) or loaded (and after a load of a stopped VM).
  'save-vm': { powerState: 'PAUSED', phase: 'PAUSED' },
  'restore-vm': { powerState: 'PAUSED', phase: 'PAUSED' },
  // Waiting for an incoming migration, or finishing an outgoing one.
  inmigrate: { powerState: 'PAUSED', phase: 'MIGRATING' },
  'finish-migrate': { powerState: 'PAUSED', phase: 'MIGRATING' },
  // Migrated away: this QEMU holds a VM that runs elsewhere now.
  postmigrate: { powerState: 'PAUSED', phase: 'STOPPED' },
  'internal-error': { powerState: 'PAUSED', phase: 'CRASHED' },
  'guest-panicked': { powerState: 'PAUSED', phase: 'CRASHED' },
  watchdog: { powerState: 'PAUSED', phase: 'CRASHED' },
  // The guest is in ACPI S3 (suspend to RAM); `system_wakeup` resumes it.
  suspended: { powerState: 'SUSPENDED', phase: 'PAUSED' },
  // The guest shut down and QEMU stays (-no-shutdown): off until a reset.
  shutdown: { powerState: 'OFF', phase: 'STOPPED' },
};

/** A run state in neutral words; one this QEMU's successors may add reads by `running`. */
export function runStateOf(status: QmpRunState, running: boolean): RunStateMapping {
  return RUN_STATES[status] ?? { powerState: running ? 'ON' : 'PAUSED', phase: 'UNKNOWN' };
}

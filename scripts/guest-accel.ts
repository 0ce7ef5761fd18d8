// Chooses, once per checkout, how the tests' guests run: KVM when it boots
// the guest, TCG otherwise (test/helpers/guest.ts keeps the verdict in
// .cache/guest/accel). run-tests.sh runs it before the suite: where /dev/kvm
// opens, the probe boots a guest under KVM and may wait out its whole timeout
// (15 s) for it. Inside the suite, that time and that QEMU would fall on the
// first file that boots a guest and on the files running beside it.
import { guestAccel } from '../test/helpers/guest.js';

const { accel, reason } = await guestAccel();
console.log(`test guests run under ${accel === 'kvm' ? 'KVM' : 'TCG'}: ${reason}`);

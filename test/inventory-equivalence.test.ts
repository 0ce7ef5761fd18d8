import { afterAll, beforeAll, describe, it } from 'vitest';

import { writeEstate } from './fixtures/libvirt-estate.js';
import { compareLiveWithDirect as compare } from './helpers/equivalence.js';
import { type Vcsim, startVcsim, vspherePlatform } from './helpers/vcsim.js';

// The live inventory must answer exactly what reading the platform directly
// answers (test/helpers/equivalence.ts).

describe('reads from the live inventory', () => {
  let sim: Vcsim;
  beforeAll(async () => {
    sim = await startVcsim({ dc: 2, cluster: 1, clusterHost: 2, host: 1, vm: 3, ds: 2, pg: 2 });
  });
  afterAll(() => sim?.stop());

  it('equal direct reads of a libvirt estate, field for field', async () => {
    await compare([{ id: 'kvm', kind: 'libvirt', uri: writeEstate({ vms: 40 }).uri }]);
  }, 60_000);

  it('equal direct reads of a vCenter, field for field', async () => {
    await compare([vspherePlatform(sim)]);
  }, 60_000);
});

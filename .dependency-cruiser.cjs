/**
 * The house's layer order, checked on every test run. Rooms, bottom first:
 *   model -> config -> observability -> access -> state -> datasources -> inventory -> metrics -> mutations
 *   -> declarations -> subscriptions -> resolvers (with generated/) -> server -> main.ts, cli/
 * A room imports only rooms below it (and itself). A platform folder
 * (datasources/<kind>/) is reached only through the provider interface and
 * the registry, and never imports another platform.
 * observability/ (the gateway's own metrics, traces and access log) sits low:
 * the protocol clients, the loaders and the transport all call its hooks.
 */
const ROOMS = [
  'model',
  'config',
  'observability',
  'access',
  'datasources',
  'inventory',
  'metrics',
  'mutations',
  'declarations',
  'subscriptions',
  'resolvers|generated',
  'server',
];

const layerRules = ROOMS.map((room, i) => {
  const above = ROOMS.slice(i + 1);
  const upper = [...above, 'main\\.ts', 'cli'].join('|');
  return {
    name: `no-upward-from-${room.split('|')[0]}`,
    severity: 'error',
    comment: `${room} sits below ${above.join(', ') || 'main'}; arrows point down only.`,
    from: { path: `^src/(${room})(/|\\.ts$)` },
    to: { path: `^src/(${upper})(/|\\.ts$)` },
  };
});

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'Import cycles (type imports included) knot rooms together.',
      from: {},
      to: { circular: true },
    },
    ...layerRules,
    {
      name: 'platform-only-through-registry',
      severity: 'error',
      comment: 'Outside a platform folder, only the registry knows platforms exist.',
      from: { path: '^src/', pathNot: ['^src/datasources/(vsphere|libvirt|qmp)/', '^src/datasources/registry\\.ts$'] },
      to: { path: '^src/datasources/(vsphere|libvirt|qmp)/' },
    },
    {
      name: 'no-platform-to-platform',
      severity: 'error',
      comment: 'A platform folder never imports another platform folder.',
      from: { path: '^src/datasources/(vsphere|libvirt|qmp)/' },
      to: { path: '^src/datasources/(vsphere|libvirt|qmp)/', pathNot: '^src/datasources/$1/' },
    },
    {
      name: 'no-unresolvable',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default'],
      extensions: ['.ts', '.js'],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};

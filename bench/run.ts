// Runs every benchmark in this folder, one after the other.
await import('./libvirt-batching.js');
await import('./vsphere-batching.js');
await import('./soap-xml.js');
// Live inventory and subscriptions (issue 7): several minutes, see BENCHMARKS.md.
await import('./live-inventory.js');
await import('./subscribers.js');
// Metrics: one sampling at 1,000 and 5,000 VMs against govmomi and the addon (about 3 minutes).
await import('./metrics-sampling.js');
await import('./authorization.js');
// Request throughput over HTTP against graphql-js in process (about 2 minutes).
await import('./request-throughput.js');
// Declared VMs: time to one more ready VM in a pool, warm standby, linked and full clone (about 3 minutes).
await import('./pool-ready.js');

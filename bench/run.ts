// Runs every benchmark in this folder, one after the other.
await import('./libvirt-batching.js');
await import('./vsphere-batching.js');
await import('./soap-xml.js');
// Live inventory and subscriptions (issue 7): several minutes, see BENCHMARKS.md.
await import('./live-inventory.js');
await import('./subscribers.js');

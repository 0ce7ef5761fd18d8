// Runs every benchmark in this folder, one after the other.
await import('./libvirt-batching.js');
await import('./vsphere-batching.js');
await import('./soap-xml.js');

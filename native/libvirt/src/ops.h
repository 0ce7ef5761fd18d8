// The operations behind Connection's methods. Each runs on a worker thread.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "connection.h"
#include "handles.h"

namespace vg {

// host_ops.cc
Value GetHostInfo(ConnState& st);
Value GetCapabilities(ConnState& st);
Value IsAlive(ConnState& st);
// The host's CPU times (ns, all CPUs) and memory (KiB, all cells):
// {time, cpu: {kernel, user, idle, iowait}, memory: {total, free, buffers,
// cached}}, a part the driver does not support as its error; `time` is when
// the CPU counters were read (ms since the epoch).
Value GetNodeStats(ConnState& st);

// domain_ops.cc
Value ListAllDomains(ConnState& st, unsigned int flags);
Value GetAllDomainStats(ConnState& st, unsigned int stats, unsigned int flags);
// Bulk stats of a few domains without asking for every domain's (one
// virDomainListGetStats): {time, domains: [record or error per UUID]}.
Value GetDomainStats(ConnState& st, const std::vector<std::string>& uuids, unsigned int stats,
                     unsigned int flags);
// How often each domain's guest balloon driver reports memory stats; true or the error per UUID.
Value SetMemoryStatsPeriod(ConnState& st, const std::vector<std::string>& uuids, int periodSeconds,
                           unsigned int flags);
Value LookupDomainByUuid(ConnState& st, const std::string& uuid);
Value LookupDomainByName(ConnState& st, const std::string& name);
Value GetDomainXmlDescs(ConnState& st, const std::vector<std::string>& uuids, unsigned int flags);
// Everything the graph shows of a few domains, read without listing them
// all: per UUID null (no such domain), the record, or the error.
Value ReadDomains(ConnState& st, const std::vector<std::string>& uuids);

// snapshot_ops.cc
Value ListDomainSnapshots(ConnState& st, const std::vector<std::string>& uuids);
// One domain's snapshots, parents first, each with its XML and whether it is current.
Value SnapshotsOf(ConnState& st, virDomainPtr dom);

// lifecycle_ops.cc
Value DomainLifecycle(ConnState& st, const std::string& uuid, const std::string& op, unsigned int flags);
// Sets a domain's vCPU count ("vcpus") or memory in KiB ("memory"): live, persistent or both, by flags.
Value DomainSetResource(ConnState& st, const std::string& uuid, const std::string& resource, unsigned long value,
                        unsigned int flags);
Value SnapshotCreate(ConnState& st, const std::string& uuid, const std::string& xml, unsigned int flags);
Value SnapshotRevert(ConnState& st, const std::string& uuid, const std::string& name, unsigned int flags);
Value SnapshotDelete(ConnState& st, const std::string& uuid, const std::string& name, unsigned int flags);
Value DefineXml(ConnState& st, const std::string& xml);
Value CloneVolume(ConnState& st, const std::string& sourcePath, const std::string& newName);

// migration_ops.cc
// Limits of one migration; 0 leaves a limit unset.
struct MigrateParams {
  unsigned long long bandwidthMiBps = 0;
};
// Blocks its worker until the migration job ends (succeeded, failed or aborted).
Value MigrateToUri(ConnState& st, const std::string& uuid, const std::string& destUri, unsigned int flags,
                   const MigrateParams& params);
// The domain's current job (virDomainGetJobStats): {type, params}; flags
// VIR_DOMAIN_JOB_STATS_COMPLETED read the last completed one instead.
Value GetJobStats(ConnState& st, const std::string& uuid, unsigned int flags);
// Aborts the domain's current job (a migration: the guest stays where it runs).
Value AbortJob(ConnState& st, const std::string& uuid);

// network_ops.cc
Value ListAllNetworks(ConnState& st, unsigned int flags);
// op: create, destroy, undefine.
Value NetworkLifecycle(ConnState& st, const std::string& uuid, const std::string& op);

// storage_ops.cc
Value ListAllStoragePools(ConnState& st, unsigned int flags);
Value ListStorageVolumes(ConnState& st, const std::vector<std::string>& poolUuids);
Value CreateVolume(ConnState& st, const std::string& poolUuid, const std::string& xml);
Value DeleteVolume(ConnState& st, const std::string& path);
// op: create, destroy, refresh.
Value PoolLifecycle(ConnState& st, const std::string& uuid, const std::string& op);

// Helpers shared by the *_ops.cc files.

std::vector<virDomainPtr> ResolveDomains(ConnState& st, DomainList& list,
                                         const std::vector<std::string>& uuids);
Value NoDomainError(const std::string& uuid);
// Reads each domain of a bulk call on a few threads: one entry per UUID, in
// order, holding what read() returned or the error for that domain alone.
Value ForEachDomain(ConnState& st, const std::vector<std::string>& uuids,
                    const std::function<Value(virDomainPtr)>& read);
Value DomainRef(virDomainPtr dom);
// Takes ownership of a libvirt-allocated string (freed here).
std::string TakeString(char* s);
// The wall clock in ms since the epoch, with its sub-millisecond part.
double NowMs();

}  // namespace vg

// Connection: the JS class around one virConnectPtr.
//
// Recipe for adding a call: write `Value OpName(ConnState&, args...)` in the
// *_ops.cc file of its libvirt object (it runs on a worker thread, must not
// touch N-API, calls state.Count() once per libvirt API call, throws
// LibvirtException on failure and frees libvirt objects through handles.h,
// after the error is read), declare it in ops.h, then bind it in
// Connection::Init with a method that reads the JS arguments and calls
// Schedule().
#pragma once

#include <libvirt/libvirt.h>
#include <napi.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include "events.h"
#include "value.h"

namespace vg {

// Shared by the JS object and every operation in flight, so that closing the
// connection from JS never frees it under a running worker: the last holder
// closes it.
class ConnState {
 public:
  explicit ConnState(virConnectPtr conn) : conn_(conn) {}
  ~ConnState();
  ConnState(const ConnState&) = delete;
  ConnState& operator=(const ConnState&) = delete;

  virConnectPtr conn() const { return conn_; }
  // One per libvirt API call made through this connection; read by tests
  // and benchmarks to prove that batching holds.
  void Count() { calls_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t calls() const { return calls_.load(std::memory_order_relaxed); }

  // Event subscriptions on this connection (events.cc).
  ConnEvents events;

 private:
  virConnectPtr conn_;
  std::atomic<uint64_t> calls_{0};
};

using Operation = std::function<Value(ConnState&)>;

class Connection : public Napi::ObjectWrap<Connection> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports);
  static Napi::Value Open(const Napi::CallbackInfo& info);
  explicit Connection(const Napi::CallbackInfo& info);

 private:
  // Runs op on the addon's worker pool; resolves with its Value, rejects with a LibvirtError.
  Napi::Value Schedule(Napi::Env env, Operation op);
  std::shared_ptr<ConnState> Require(Napi::Env env);

  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value IsOpen(const Napi::CallbackInfo& info);
  Napi::Value LibvirtCalls(const Napi::CallbackInfo& info);
  Napi::Value GetHostInfo(const Napi::CallbackInfo& info);
  Napi::Value GetCapabilities(const Napi::CallbackInfo& info);
  Napi::Value IsAlive(const Napi::CallbackInfo& info);
  Napi::Value ListAllDomains(const Napi::CallbackInfo& info);
  Napi::Value GetAllDomainStats(const Napi::CallbackInfo& info);
  Napi::Value GetDomainStats(const Napi::CallbackInfo& info);
  Napi::Value SetMemoryStatsPeriod(const Napi::CallbackInfo& info);
  Napi::Value GetNodeStats(const Napi::CallbackInfo& info);
  Napi::Value LookupDomainByUuid(const Napi::CallbackInfo& info);
  Napi::Value LookupDomainByName(const Napi::CallbackInfo& info);
  Napi::Value GetDomainXmlDescs(const Napi::CallbackInfo& info);
  Napi::Value ListDomainSnapshots(const Napi::CallbackInfo& info);
  Napi::Value ListAllNetworks(const Napi::CallbackInfo& info);
  Napi::Value ListAllStoragePools(const Napi::CallbackInfo& info);
  Napi::Value ListStorageVolumes(const Napi::CallbackInfo& info);
  Napi::Value DomainLifecycle(const Napi::CallbackInfo& info);
  Napi::Value DomainSetResource(const Napi::CallbackInfo& info);
  Napi::Value SnapshotCreate(const Napi::CallbackInfo& info);
  Napi::Value SnapshotRevert(const Napi::CallbackInfo& info);
  Napi::Value SnapshotDelete(const Napi::CallbackInfo& info);
  Napi::Value DefineXml(const Napi::CallbackInfo& info);
  Napi::Value MigrateToUri(const Napi::CallbackInfo& info);
  Napi::Value GetJobStats(const Napi::CallbackInfo& info);
  Napi::Value AbortJob(const Napi::CallbackInfo& info);
  Napi::Value CloneVolume(const Napi::CallbackInfo& info);
  Napi::Value CreateVolume(const Napi::CallbackInfo& info);
  Napi::Value DeleteVolume(const Napi::CallbackInfo& info);
  Napi::Value ReadDomains(const Napi::CallbackInfo& info);
  Napi::Value NetworkLifecycle(const Napi::CallbackInfo& info);
  Napi::Value PoolLifecycle(const Napi::CallbackInfo& info);
  Napi::Value SubscribeEvents(const Napi::CallbackInfo& info);

  std::shared_ptr<ConnState> state_;
};

}  // namespace vg

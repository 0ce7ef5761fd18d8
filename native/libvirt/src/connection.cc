#include "connection.h"

#include <libvirt/virterror.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "addon_data.h"
#include "errors.h"
#include "ops.h"

namespace vg {

ConnState::~ConnState() {
  if (conn_ == nullptr) return;
  // Registered callbacks hold references on conn_: without this, the
  // connection would stay open.
  DetachAllSubscriptions(*this);
  virConnectClose(conn_);
}

namespace {

// Resolves a deferred promise with the operation's Value, built off-thread.
class OperationJob : public Job {
 public:
  OperationJob(Napi::Env env, std::shared_ptr<ConnState> state, Operation op)
      : deferred_(Napi::Promise::Deferred::New(env)), state_(std::move(state)), op_(std::move(op)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() noexcept override {
    virResetLastError();
    failure_ = CaptureFailure([&] { result_ = op_(*state_); });
    // Drop our reference here so that a close() waiting on us closes on this
    // worker thread rather than on the JS thread.
    state_.reset();
  }

  void Complete(Napi::Env env) override {
    if (failure_) {
      deferred_.Reject(MakeJsError(env, *failure_).Value());
    } else {
      deferred_.Resolve(result_.ToJs(env));
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<ConnState> state_;
  Operation op_;
  Value result_;
  std::optional<LibvirtFailure> failure_;
};

struct Credentials {
  std::string username;
  std::string password;
};

int FillCredentials(virConnectCredentialPtr creds, unsigned int count, void* data) {
  auto* given = static_cast<Credentials*>(data);
  for (unsigned int i = 0; i < count; i++) {
    const std::string* answer = nullptr;
    switch (creds[i].type) {
      case VIR_CRED_AUTHNAME:
      case VIR_CRED_USERNAME:
        answer = &given->username;
        break;
      case VIR_CRED_PASSPHRASE:
      case VIR_CRED_NOECHOPROMPT:
        answer = &given->password;
        break;
      default:
        return -1;  // a credential we cannot answer without a person
    }
    if (answer->empty()) return -1;
    creds[i].result = strdup(answer->c_str());
    if (creds[i].result == nullptr) return -1;
    creds[i].resultlen = answer->size();
  }
  return 0;
}

class OpenJob : public Job {
 public:
  OpenJob(Napi::Env env, std::string uri, bool readOnly, Credentials creds)
      : deferred_(Napi::Promise::Deferred::New(env)),
        uri_(std::move(uri)),
        readOnly_(readOnly),
        creds_(std::move(creds)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() noexcept override {
    virResetLastError();
    // Done at addon load already; a connection opened before the event loop
    // is registered would never get events.
    EnsureEventLoop();
    int credTypes[] = {VIR_CRED_AUTHNAME, VIR_CRED_USERNAME, VIR_CRED_PASSPHRASE,
                       VIR_CRED_NOECHOPROMPT};
    virConnectAuth auth{credTypes, sizeof(credTypes) / sizeof(credTypes[0]), FillCredentials,
                        &creds_};
    virConnectPtr conn =
        virConnectOpenAuth(uri_.c_str(), &auth, readOnly_ ? VIR_CONNECT_RO : 0);
    if (conn == nullptr) {
      failure_ = LastFailure("virConnectOpenAuth");
      return;
    }
    try {
      state_ = std::make_shared<ConnState>(conn);
    } catch (const std::bad_alloc&) {
      virConnectClose(conn);
      failure_ = LibvirtFailure{VIR_ERR_NO_MEMORY, VIR_FROM_NONE, "out of memory"};
      return;
    }
    state_->Count();
  }

  void Complete(Napi::Env env) override {
    if (failure_) {
      deferred_.Reject(MakeJsError(env, *failure_).Value());
      return;
    }
    auto* holder = new std::shared_ptr<ConnState>(std::move(state_));
    auto external = Napi::External<std::shared_ptr<ConnState>>::New(
        env, holder, [](Napi::Env, std::shared_ptr<ConnState>* p) { delete p; });
    deferred_.Resolve(DataOf(env).connectionClass.New({external}));
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::string uri_;
  bool readOnly_;
  Credentials creds_;
  std::shared_ptr<ConnState> state_;
  std::optional<LibvirtFailure> failure_;
};

std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsString()) {
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  }
  return info[i].As<Napi::String>().Utf8Value();
}

unsigned int FlagsArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined()) return 0;
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "flags must be a number");
  return info[i].As<Napi::Number>().Uint32Value();
}

std::vector<std::string> StringListArg(const Napi::CallbackInfo& info, size_t i,
                                       const char* what) {
  if (info.Length() <= i || !info[i].IsArray()) {
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be an array of strings");
  }
  Napi::Array arr = info[i].As<Napi::Array>();
  std::vector<std::string> out;
  out.reserve(arr.Length());
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value v = arr.Get(k);
    if (!v.IsString()) {
      throw Napi::TypeError::New(info.Env(), std::string(what) + " must be an array of strings");
    }
    out.push_back(v.As<Napi::String>().Utf8Value());
  }
  return out;
}

}  // namespace

Napi::Object Connection::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(
      env, "Connection",
      {
          InstanceMethod<&Connection::Close>("close"),
          InstanceMethod<&Connection::IsOpen>("isOpen"),
          InstanceMethod<&Connection::LibvirtCalls>("libvirtCalls"),
          InstanceMethod<&Connection::GetHostInfo>("getHostInfo"),
          InstanceMethod<&Connection::GetCapabilities>("getCapabilities"),
          InstanceMethod<&Connection::IsAlive>("isAlive"),
          InstanceMethod<&Connection::ListAllDomains>("listAllDomains"),
          InstanceMethod<&Connection::GetAllDomainStats>("getAllDomainStats"),
          InstanceMethod<&Connection::GetDomainStats>("getDomainStats"),
          InstanceMethod<&Connection::SetMemoryStatsPeriod>("setMemoryStatsPeriod"),
          InstanceMethod<&Connection::GetNodeStats>("getNodeStats"),
          InstanceMethod<&Connection::LookupDomainByUuid>("lookupDomainByUuid"),
          InstanceMethod<&Connection::LookupDomainByName>("lookupDomainByName"),
          InstanceMethod<&Connection::GetDomainXmlDescs>("getDomainXmlDescs"),
          InstanceMethod<&Connection::ListDomainSnapshots>("listDomainSnapshots"),
          InstanceMethod<&Connection::ListAllNetworks>("listAllNetworks"),
          InstanceMethod<&Connection::ListAllStoragePools>("listAllStoragePools"),
          InstanceMethod<&Connection::ListStorageVolumes>("listStorageVolumes"),
          InstanceMethod<&Connection::DomainLifecycle>("domainLifecycle"),
          InstanceMethod<&Connection::DomainSetResource>("domainSetResource"),
          InstanceMethod<&Connection::SnapshotCreate>("snapshotCreate"),
          InstanceMethod<&Connection::SnapshotRevert>("snapshotRevert"),
          InstanceMethod<&Connection::SnapshotDelete>("snapshotDelete"),
          InstanceMethod<&Connection::DefineXml>("defineXml"),
          InstanceMethod<&Connection::MigrateToUri>("migrateToUri"),
          InstanceMethod<&Connection::GetJobStats>("getJobStats"),
          InstanceMethod<&Connection::AbortJob>("abortJob"),
          InstanceMethod<&Connection::CloneVolume>("cloneVolume"),
          InstanceMethod<&Connection::CreateVolume>("createVolume"),
          InstanceMethod<&Connection::DeleteVolume>("deleteVolume"),
          InstanceMethod<&Connection::ReadDomains>("readDomains"),
          InstanceMethod<&Connection::NetworkLifecycle>("networkLifecycle"),
          InstanceMethod<&Connection::PoolLifecycle>("poolLifecycle"),
          InstanceMethod<&Connection::SubscribeEvents>("subscribeEvents"),
      });
  DataOf(env).connectionClass = Napi::Persistent(ctor);
  exports.Set("Connection", ctor);
  exports.Set("open", Napi::Function::New(env, &Connection::Open, "open"));
  return exports;
}

Connection::Connection(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Connection>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "use open(uri) to create a Connection");
  }
  // Taken, not copied: the External lives until the next GC, and a copy
  // left in it would hold the connection open after close().
  state_ = std::move(*info[0].As<Napi::External<std::shared_ptr<ConnState>>>().Data());
}

Napi::Value Connection::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string uri = StringArg(info, 0, "uri");
  bool readOnly = false;
  Credentials creds;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object opts = info[1].As<Napi::Object>();
    readOnly = opts.Get("readOnly").ToBoolean().Value();
    if (opts.Get("username").IsString()) {
      creds.username = opts.Get("username").As<Napi::String>().Utf8Value();
    }
    if (opts.Get("password").IsString()) {
      creds.password = opts.Get("password").As<Napi::String>().Utf8Value();
    }
  }
  auto job = std::make_unique<OpenJob>(env, std::move(uri), readOnly, std::move(creds));
  Napi::Promise promise = job->Promise();
  DataOf(env).pool.Submit(env, std::move(job));
  return promise;
}

std::shared_ptr<ConnState> Connection::Require(Napi::Env env) {
  if (!state_) throw Napi::Error::New(env, "connection is closed");
  return state_;
}

Napi::Value Connection::Schedule(Napi::Env env, Operation op) {
  auto job = std::make_unique<OperationJob>(env, Require(env), std::move(op));
  Napi::Promise promise = job->Promise();
  DataOf(env).pool.Submit(env, std::move(job));
  return promise;
}

Napi::Value Connection::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!state_) {
    auto deferred = Napi::Promise::Deferred::New(env);
    deferred.Resolve(env.Undefined());
    return deferred.Promise();
  }
  std::shared_ptr<ConnState> last = std::move(state_);
  state_.reset();
  // The job holds the final reference (unless operations are still in
  // flight, in which case the last of them closes the connection). Event
  // subscriptions end now either way: their listeners learn it (a last
  // 'close' event) without waiting for calls in flight.
  auto job = std::make_unique<OperationJob>(env, std::move(last), [](ConnState& st) {
    DetachAllSubscriptions(st);
    return vg::Value();
  });
  Napi::Promise promise = job->Promise();
  DataOf(env).pool.Submit(env, std::move(job));
  return promise;
}

Napi::Value Connection::IsOpen(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), static_cast<bool>(state_));
}

Napi::Value Connection::LibvirtCalls(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), state_ ? static_cast<double>(state_->calls()) : 0);
}

Napi::Value Connection::GetHostInfo(const Napi::CallbackInfo& info) {
  return Schedule(info.Env(), [](ConnState& st) { return vg::GetHostInfo(st); });
}

Napi::Value Connection::GetCapabilities(const Napi::CallbackInfo& info) {
  return Schedule(info.Env(), [](ConnState& st) { return vg::GetCapabilities(st); });
}

Napi::Value Connection::IsAlive(const Napi::CallbackInfo& info) {
  return Schedule(info.Env(), [](ConnState& st) { return vg::IsAlive(st); });
}

Napi::Value Connection::ListAllDomains(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return Schedule(info.Env(), [flags](ConnState& st) { return vg::ListAllDomains(st, flags); });
}

Napi::Value Connection::GetAllDomainStats(const Napi::CallbackInfo& info) {
  unsigned int stats = FlagsArg(info, 0);
  unsigned int flags = FlagsArg(info, 1);
  return Schedule(info.Env(), [stats, flags](ConnState& st) {
    return vg::GetAllDomainStats(st, stats, flags);
  });
}

Napi::Value Connection::GetDomainStats(const Napi::CallbackInfo& info) {
  std::vector<std::string> uuids = StringListArg(info, 0, "uuids");
  unsigned int stats = FlagsArg(info, 1);
  unsigned int flags = FlagsArg(info, 2);
  return Schedule(info.Env(), [uuids = std::move(uuids), stats, flags](ConnState& st) {
    return vg::GetDomainStats(st, uuids, stats, flags);
  });
}

Napi::Value Connection::SetMemoryStatsPeriod(const Napi::CallbackInfo& info) {
  std::vector<std::string> uuids = StringListArg(info, 0, "uuids");
  if (info.Length() <= 1 || !info[1].IsNumber()) {
    throw Napi::TypeError::New(info.Env(), "periodSeconds must be a number");
  }
  double period = info[1].As<Napi::Number>().DoubleValue();
  // 0 turns the guest's reports off; libvirt takes an int.
  if (!(period >= 0) || period > 86400 || period != static_cast<int>(period)) {
    throw Napi::RangeError::New(info.Env(), "periodSeconds must be a whole number of seconds from 0 to 86400");
  }
  int seconds = static_cast<int>(period);
  unsigned int flags = FlagsArg(info, 2);
  return Schedule(info.Env(), [uuids = std::move(uuids), seconds, flags](ConnState& st) {
    return vg::SetMemoryStatsPeriod(st, uuids, seconds, flags);
  });
}

Napi::Value Connection::GetNodeStats(const Napi::CallbackInfo& info) {
  return Schedule(info.Env(), [](ConnState& st) { return vg::GetNodeStats(st); });
}

Napi::Value Connection::LookupDomainByUuid(const Napi::CallbackInfo& info) {
  std::string uuid = StringArg(info, 0, "uuid");
  return Schedule(info.Env(), [uuid](ConnState& st) { return vg::LookupDomainByUuid(st, uuid); });
}

Napi::Value Connection::LookupDomainByName(const Napi::CallbackInfo& info) {
  std::string name = StringArg(info, 0, "name");
  return Schedule(info.Env(), [name](ConnState& st) { return vg::LookupDomainByName(st, name); });
}

Napi::Value Connection::GetDomainXmlDescs(const Napi::CallbackInfo& info) {
  std::vector<std::string> uuids = StringListArg(info, 0, "uuids");
  unsigned int flags = FlagsArg(info, 1);
  return Schedule(info.Env(), [uuids = std::move(uuids), flags](ConnState& st) {
    return vg::GetDomainXmlDescs(st, uuids, flags);
  });
}

Napi::Value Connection::ListDomainSnapshots(const Napi::CallbackInfo& info) {
  std::vector<std::string> uuids = StringListArg(info, 0, "uuids");
  return Schedule(info.Env(), [uuids = std::move(uuids)](ConnState& st) {
    return vg::ListDomainSnapshots(st, uuids);
  });
}

Napi::Value Connection::ListAllNetworks(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return Schedule(info.Env(), [flags](ConnState& st) { return vg::ListAllNetworks(st, flags); });
}

Napi::Value Connection::ListAllStoragePools(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return Schedule(info.Env(),
                  [flags](ConnState& st) { return vg::ListAllStoragePools(st, flags); });
}

Napi::Value Connection::ListStorageVolumes(const Napi::CallbackInfo& info) {
  std::vector<std::string> pools = StringListArg(info, 0, "poolUuids");
  return Schedule(info.Env(), [pools = std::move(pools)](ConnState& st) {
    return vg::ListStorageVolumes(st, pools);
  });
}

Napi::Value Connection::DomainLifecycle(const Napi::CallbackInfo& info) {
  std::string uuid = StringArg(info, 0, "uuid");
  std::string op = StringArg(info, 1, "operation");
  unsigned int flags = FlagsArg(info, 2);
  return Schedule(info.Env(), [uuid, op, flags](ConnState& st) { return vg::DomainLifecycle(st, uuid, op, flags); });
}

Napi::Value Connection::DomainSetResource(const Napi::CallbackInfo& info) {
  std::string uuid = StringArg(info, 0, "uuid");
  std::string resource = StringArg(info, 1, "resource");
  if (info.Length() <= 2 || !info[2].IsNumber()) throw Napi::TypeError::New(info.Env(), "value must be a number");
  double number = info[2].As<Napi::Number>().DoubleValue();
  if (!(number >= 0) || number > 1e15) throw Napi::RangeError::New(info.Env(), "value out of range");
  unsigned long value = static_cast<unsigned long>(number);
  unsigned int flags = FlagsArg(info, 3);
  return Schedule(info.Env(), [uuid, resource, value, flags](ConnState& st) {
    return vg::DomainSetResource(st, uuid, resource, value, flags);
  });
}

Napi::Value Connection::SnapshotCreate(const Napi::CallbackInfo& info) {
  std::string uuid = StringArg(info, 0, "uuid");
  std::string xml = StringArg(info, 1, "xml");
  unsigned int flags = FlagsArg(info, 2);
  return Schedule(info.Env(), [uuid, xml, flags](ConnState& st) { return vg::SnapshotCreate(st, uuid, xml, flags); });
}

Napi::Value Connection::SnapshotRevert(const Napi::CallbackInfo& info) {
  std::string uuid = StringArg(info, 0, "uuid");
  std::string name = StringArg(info, 1, "name");
  unsigned int flags = FlagsArg(info, 2);
  return Schedule(info.Env(), [uuid, name, flags](ConnState& st) { return vg::SnapshotRevert(st, uuid, name, flags); });
}

Napi::Value Connection::SnapshotDelete(const Napi::CallbackInfo& info) {
  std::string uuid = StringArg(info, 0, "uuid");
  std::string name = StringArg(info, 1, "name");
  unsigned int flags = FlagsArg(info, 2);
  return Schedule(info.Env(), [uuid, name, flags](ConnState& st) { return vg::SnapshotDelete(st, uuid, name, flags); });
}

Napi::Value Connection::DefineXml(const Napi::CallbackInfo& info) {
  std::string xml = StringArg(info, 0, "xml");
  return Schedule(info.Env(), [xml](ConnState& st) { return vg::DefineXml(st, xml); });
}

Napi::Value Connection::MigrateToUri(const Napi::CallbackInfo& info) {
  std::string uuid = StringArg(info, 0, "uuid");
  std::string dest = StringArg(info, 1, "destUri");
  unsigned int flags = FlagsArg(info, 2);
  vg::MigrateParams params;
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    if (!info[3].IsObject()) throw Napi::TypeError::New(info.Env(), "params must be an object");
    Napi::Value bandwidth = info[3].As<Napi::Object>().Get("bandwidthMiBps");
    if (!bandwidth.IsUndefined()) {
      if (!bandwidth.IsNumber()) throw Napi::TypeError::New(info.Env(), "bandwidthMiBps must be a number");
      double mibps = bandwidth.As<Napi::Number>().DoubleValue();
      // libvirt takes whole MiB/s; 0 would mean "no limit", which the caller says by leaving it out.
      if (!(mibps >= 1) || mibps > 1e9 || mibps != static_cast<double>(static_cast<unsigned long long>(mibps))) {
        throw Napi::RangeError::New(info.Env(), "bandwidthMiBps must be a whole number from 1 to 1e9");
      }
      params.bandwidthMiBps = static_cast<unsigned long long>(mibps);
    }
  }
  return Schedule(info.Env(),
                  [uuid, dest, flags, params](ConnState& st) { return vg::MigrateToUri(st, uuid, dest, flags, params); });
}

Napi::Value Connection::GetJobStats(const Napi::CallbackInfo& info) {
  std::string uuid = StringArg(info, 0, "uuid");
  unsigned int flags = FlagsArg(info, 1);
  return Schedule(info.Env(), [uuid, flags](ConnState& st) { return vg::GetJobStats(st, uuid, flags); });
}

Napi::Value Connection::AbortJob(const Napi::CallbackInfo& info) {
  std::string uuid = StringArg(info, 0, "uuid");
  return Schedule(info.Env(), [uuid](ConnState& st) { return vg::AbortJob(st, uuid); });
}

Napi::Value Connection::CloneVolume(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "sourcePath");
  std::string name = StringArg(info, 1, "newName");
  return Schedule(info.Env(), [path, name](ConnState& st) { return vg::CloneVolume(st, path, name); });
}

Napi::Value Connection::CreateVolume(const Napi::CallbackInfo& info) {
  std::string pool = StringArg(info, 0, "poolUuid");
  std::string xml = StringArg(info, 1, "xml");
  return Schedule(info.Env(), [pool, xml](ConnState& st) { return vg::CreateVolume(st, pool, xml); });
}

Napi::Value Connection::DeleteVolume(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "path");
  return Schedule(info.Env(), [path](ConnState& st) { return vg::DeleteVolume(st, path); });
}

Napi::Value Connection::ReadDomains(const Napi::CallbackInfo& info) {
  std::vector<std::string> uuids = StringListArg(info, 0, "uuids");
  return Schedule(info.Env(), [uuids = std::move(uuids)](ConnState& st) { return vg::ReadDomains(st, uuids); });
}

Napi::Value Connection::NetworkLifecycle(const Napi::CallbackInfo& info) {
  std::string uuid = StringArg(info, 0, "uuid");
  std::string op = StringArg(info, 1, "operation");
  return Schedule(info.Env(), [uuid, op](ConnState& st) { return vg::NetworkLifecycle(st, uuid, op); });
}

Napi::Value Connection::PoolLifecycle(const Napi::CallbackInfo& info) {
  std::string uuid = StringArg(info, 0, "uuid");
  std::string op = StringArg(info, 1, "operation");
  return Schedule(info.Env(), [uuid, op](ConnState& st) { return vg::PoolLifecycle(st, uuid, op); });
}

Napi::Value Connection::SubscribeEvents(const Napi::CallbackInfo& info) {
  return vg::SubscribeEvents(info, Require(info.Env()));
}

}  // namespace vg

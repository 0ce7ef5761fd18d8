// libvirt events to JS.
//
// Recipe (the scheme of libvirt-go-module's callbacks.go, with N-API's
// thread-safe functions in place of cgo):
//
// - Event loop. virEventRegisterDefaultImpl() runs once per process, at
//   addon load (EnsureEventLoop), before any virConnectOpen*: the remote
//   driver adds a connection's socket to the event loop when it opens it,
//   and a connection opened earlier never gets events or a close callback.
//   One detached thread ("virt-graph-ev", every asynchronous signal blocked)
//   runs virEventRunDefaultImpl() forever; the libvirt callbacks below run
//   on it, except the close callback, which runs on whichever thread noticed
//   the close (a worker whose call hit end of file, say). Nothing here
//   depends on which. Keepalive stays off: nothing here calls virConnectSetKeepAlive
//   (libvirt 9.0's client could crash when keepalive closed a connection
//   under a waiting call). The daemon may still ping us: the event loop
//   answers.
//
// - Registry. A callback never gets a pointer from us: its opaque is a
//   registry ID (an integer cast to void*), looked up under the registry's
//   lock on every call. An ID maps to the subscriptions it feeds (one for
//   domain, network and pool callbacks; every subscription of the
//   connection for the close callback, since libvirt keeps one close
//   callback per connection). The freecb given to libvirt erases the ID
//   ("freeCallbackId"); we erase it too right after each deregistration, so
//   a callback that fires late, or a driver that never calls freecb (the
//   test driver has no close callbacks), finds nothing and drops the event.
//   Callbacks call no libvirt API but the local getters of the object they
//   get (name, UUID), and take no lock that is held across a libvirt call.
//
// - Delivery. Each subscription owns a thread-safe function around its JS
//   callback, unref'd (a subscription never keeps the process alive; the
//   watch's own timers do). The event thread builds a Value (JS-free) and
//   queues it with napi_call_threadsafe_function under the subscription's
//   lock; unsubscribing takes the same lock to release the function, so
//   nothing is queued after that, and the JS thread drops whatever was
//   queued before (the `unsubscribed` flag): no JS function is called after
//   unsubscribe() returns. Node's finalizer of the function clears it under
//   the lock too (environment teardown).
//
// - Lifetime. Registering and deregistering are RPCs on remote URIs, so
//   both run on the worker pool, serialized per connection by ConnEvents::mu
//   (never taken on the event thread). unsubscribe() deregisters explicitly;
//   closing the connection (Connection.close(), or the last reference going)
//   deregisters whatever is left first, since every registered callback
//   holds a reference on the virConnectPtr and virConnectClose would not
//   close it, and each subscription gets a last 'close' event. When the peer
//   closes the connection, libvirt calls the close callback once and frees
//   it; the callbacks stay registered until unsubscribe() or close, and
//   deregistering them on a dead connection forgets them locally before the
//   RPC fails.
//
// Events delivered, as plain objects:
//   { type: 'domain', event, uuid, name, ... } for lifecycle (code, detail:
//     virDomainEventType and its detail), reboot, device-added and
//     device-removed (alias), metadata-change (code: virDomainMetadataType,
//     nsuri), tunable and job-completed (params: names), balloon-change
//     (actualKiB), disk-change (alias, code: reason), block-job (disk, code:
//     type, detail: status);
//   { type: 'network', event: 'lifecycle', uuid, name, code, detail };
//   { type: 'pool', event: 'lifecycle' | 'refresh', uuid, name, code?, detail? };
//   { type: 'close', event: 'close', reason } (virConnectCloseReason: 0
//     error, 1 EOF, 2 keepalive, 3 client).
#include "events.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>

#include "addon_data.h"
#include "connection.h"
#include "errors.h"
#include "value.h"

namespace vg {

namespace {

enum class Source { Domain, Network, Pool };

struct LibvirtCallback {
  Source source;
  int callbackId;         // what libvirt's *EventRegisterAny returned
  uint64_t registration;  // our registry ID, the callback's opaque
};

// Subscriptions registered on a connection and not yet detached.
std::atomic<int64_t> attachedSubscriptions{0};

}  // namespace

struct Subscription {
  Subscription() = default;
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // Guards tsfn between the event thread, the thread that detaches, and
  // Node's finalizer.
  std::mutex mu;
  // Null once released or finalized: from then on nothing is queued.
  napi_threadsafe_function tsfn = nullptr;
  // JS thread only: set by unsubscribe(); events already queued are dropped.
  bool unsubscribed = false;
  // Guarded by the connection's ConnEvents::mu.
  std::vector<LibvirtCallback> callbacks;
};

namespace {

// --- the registry ----------------------------------------------------------

struct Registry {
  std::mutex mu;
  std::unordered_map<uint64_t, std::vector<std::shared_ptr<Subscription>>> byId;
  uint64_t next = 1;
};

// Never destroyed: the event thread may run a callback while the process exits.
Registry& TheRegistry() {
  static Registry* registry = new Registry();
  return *registry;
}

void* OpaqueOf(uint64_t id) { return reinterpret_cast<void*>(static_cast<uintptr_t>(id)); }
uint64_t IdOf(void* opaque) { return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(opaque)); }

uint64_t NewRegistration(const std::shared_ptr<Subscription>& sub) {
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  uint64_t id = r.next++;
  r.byId[id].push_back(sub);
  return id;
}

void EraseRegistration(uint64_t id) {
  Registry& r = TheRegistry();
  std::vector<std::shared_ptr<Subscription>> dropped;  // released outside the lock
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.byId.find(id);
  if (it == r.byId.end()) return;
  dropped.swap(it->second);
  r.byId.erase(it);
}

// libvirt's freecb: the callback behind this opaque is gone. libvirt's rule:
// no libvirt API from here.
void FreeRegistration(void* opaque) { EraseRegistration(IdOf(opaque)); }

// False when the registration is gone (libvirt freed it).
bool AddToRegistration(uint64_t id, const std::shared_ptr<Subscription>& sub) {
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.byId.find(id);
  if (it == r.byId.end()) return false;
  it->second.push_back(sub);
  return true;
}

// Subscriptions left on the registration, or -1 when it is gone.
int RemoveFromRegistration(uint64_t id, const Subscription* sub) {
  Registry& r = TheRegistry();
  std::shared_ptr<Subscription> dropped;
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.byId.find(id);
  if (it == r.byId.end()) return -1;
  auto& subs = it->second;
  auto pos = std::find_if(subs.begin(), subs.end(), [sub](const auto& s) { return s.get() == sub; });
  if (pos != subs.end()) {
    dropped = std::move(*pos);
    subs.erase(pos);
  }
  return static_cast<int>(subs.size());
}

std::vector<std::shared_ptr<Subscription>> SubscribersOf(void* opaque) {
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.byId.find(IdOf(opaque));
  return it == r.byId.end() ? std::vector<std::shared_ptr<Subscription>>() : it->second;
}

size_t RegistrationCount() {
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.byId.size();
}

// --- delivery ----------------------------------------------------------------

// Queues a copy of event for the subscription's JS callback. Call with sub.mu held.
void PostLocked(Subscription& sub, const Value& event) {
  if (sub.tsfn == nullptr) return;
  auto* copy = new Value(event);
  if (napi_call_threadsafe_function(sub.tsfn, copy, napi_tsfn_nonblocking) != napi_ok) delete copy;
}

void Deliver(void* opaque, const Value& event) {
  for (const std::shared_ptr<Subscription>& sub : SubscribersOf(opaque)) {
    std::lock_guard<std::mutex> lock(sub->mu);
    PostLocked(*sub, event);
  }
}

// Stops deliveries for good, after queueing `last` when given. Any thread.
void Release(Subscription& sub, const Value* last) {
  std::lock_guard<std::mutex> lock(sub.mu);
  if (sub.tsfn == nullptr) return;
  if (last != nullptr) PostLocked(sub, *last);
  // Under the lock: Node's finalizer (which takes it) cannot free tsfn first.
  napi_release_threadsafe_function(sub.tsfn, napi_tsfn_release);
  sub.tsfn = nullptr;
}

// Runs on the JS thread for each queued event; env is null when Node drains
// the queue at teardown.
void CallJs(napi_env env, napi_value callback, void* context, void* data) {
  std::unique_ptr<Value> event(static_cast<Value*>(data));
  if (env == nullptr || callback == nullptr) return;
  auto* sub = static_cast<Subscription*>(context);
  if (sub->unsubscribed) return;
  try {
    Napi::Function(env, callback).Call({event->ToJs(Napi::Env(env))});
  } catch (const Napi::Error& e) {
    // The listener threw: an uncaught exception, as for any event listener.
    try {
      if (!e.IsEmpty()) napi_throw(env, e.Value());
    } catch (...) {
    }
  } catch (...) {
  }
}

void FinalizeSubscription(napi_env, void* data, void*) {
  std::unique_ptr<std::shared_ptr<Subscription>> holder(static_cast<std::shared_ptr<Subscription>*>(data));
  std::lock_guard<std::mutex> lock((*holder)->mu);
  (*holder)->tsfn = nullptr;
}

// --- the callbacks (event thread) ---------------------------------------------

// Nothing may unwind through libvirt's C frames.
template <typename Fn>
void Guarded(Fn fn) noexcept {
  try {
    fn();
  } catch (...) {
  }
}

Value EventOf(const char* type, const char* event) {
  Value v = Value::Object();
  v.Set("type", Value::String(type));
  v.Set("event", Value::String(event));
  return v;
}

Value DomainEvent(virDomainPtr dom, const char* event) {
  Value v = EventOf("domain", event);
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(dom, uuid) == 0) v.Set("uuid", Value::String(uuid));
  const char* name = virDomainGetName(dom);
  if (name != nullptr) v.Set("name", Value::String(name));
  return v;
}

Value ParamNames(virTypedParameterPtr params, int nparams) {
  Value names = Value::Array();
  for (int i = 0; i < nparams; i++) names.Push(Value::String(params[i].field));
  return names;
}

int OnDomainLifecycle(virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque) {
  Guarded([&] {
    Value v = DomainEvent(dom, "lifecycle");
    v.Set("code", Value::Number(event));
    v.Set("detail", Value::Number(detail));
    Deliver(opaque, v);
  });
  return 0;
}

void OnDomainReboot(virConnectPtr, virDomainPtr dom, void* opaque) {
  Guarded([&] { Deliver(opaque, DomainEvent(dom, "reboot")); });
}

void DeviceEvent(virDomainPtr dom, const char* event, const char* alias, void* opaque) {
  Guarded([&] {
    Value v = DomainEvent(dom, event);
    if (alias != nullptr) v.Set("alias", Value::String(alias));
    Deliver(opaque, v);
  });
}

void OnDeviceAdded(virConnectPtr, virDomainPtr dom, const char* alias, void* opaque) {
  DeviceEvent(dom, "device-added", alias, opaque);
}

void OnDeviceRemoved(virConnectPtr, virDomainPtr dom, const char* alias, void* opaque) {
  DeviceEvent(dom, "device-removed", alias, opaque);
}

void OnMetadataChange(virConnectPtr, virDomainPtr dom, int type, const char* nsuri, void* opaque) {
  Guarded([&] {
    Value v = DomainEvent(dom, "metadata-change");
    v.Set("code", Value::Number(type));
    if (nsuri != nullptr) v.Set("nsuri", Value::String(nsuri));
    Deliver(opaque, v);
  });
}

void ParamsEvent(virDomainPtr dom, const char* event, virTypedParameterPtr params, int nparams, void* opaque) {
  Guarded([&] {
    Value v = DomainEvent(dom, event);
    v.Set("params", ParamNames(params, nparams));
    Deliver(opaque, v);
  });
}

void OnTunable(virConnectPtr, virDomainPtr dom, virTypedParameterPtr params, int nparams, void* opaque) {
  ParamsEvent(dom, "tunable", params, nparams, opaque);
}

void OnJobCompleted(virConnectPtr, virDomainPtr dom, virTypedParameterPtr params, int nparams, void* opaque) {
  ParamsEvent(dom, "job-completed", params, nparams, opaque);
}

void OnBalloonChange(virConnectPtr, virDomainPtr dom, unsigned long long actual, void* opaque) {
  Guarded([&] {
    Value v = DomainEvent(dom, "balloon-change");
    v.Set("actualKiB", Value::Number(static_cast<double>(actual)));
    Deliver(opaque, v);
  });
}

void OnDiskChange(virConnectPtr, virDomainPtr dom, const char*, const char*, const char* alias, int reason,
                  void* opaque) {
  Guarded([&] {
    Value v = DomainEvent(dom, "disk-change");
    if (alias != nullptr) v.Set("alias", Value::String(alias));
    v.Set("code", Value::Number(reason));
    Deliver(opaque, v);
  });
}

void OnBlockJob(virConnectPtr, virDomainPtr dom, const char* disk, int type, int status, void* opaque) {
  Guarded([&] {
    Value v = DomainEvent(dom, "block-job");
    if (disk != nullptr) v.Set("disk", Value::String(disk));
    v.Set("code", Value::Number(type));
    v.Set("detail", Value::Number(status));
    Deliver(opaque, v);
  });
}

void OnNetworkLifecycle(virConnectPtr, virNetworkPtr net, int event, int detail, void* opaque) {
  Guarded([&] {
    Value v = EventOf("network", "lifecycle");
    char uuid[VIR_UUID_STRING_BUFLEN];
    if (virNetworkGetUUIDString(net, uuid) == 0) v.Set("uuid", Value::String(uuid));
    const char* name = virNetworkGetName(net);
    if (name != nullptr) v.Set("name", Value::String(name));
    v.Set("code", Value::Number(event));
    v.Set("detail", Value::Number(detail));
    Deliver(opaque, v);
  });
}

Value PoolEvent(virStoragePoolPtr pool, const char* event) {
  Value v = EventOf("pool", event);
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virStoragePoolGetUUIDString(pool, uuid) == 0) v.Set("uuid", Value::String(uuid));
  const char* name = virStoragePoolGetName(pool);
  if (name != nullptr) v.Set("name", Value::String(name));
  return v;
}

void OnPoolLifecycle(virConnectPtr, virStoragePoolPtr pool, int event, int detail, void* opaque) {
  Guarded([&] {
    Value v = PoolEvent(pool, "lifecycle");
    v.Set("code", Value::Number(event));
    v.Set("detail", Value::Number(detail));
    Deliver(opaque, v);
  });
}

void OnPoolRefresh(virConnectPtr, virStoragePoolPtr pool, void* opaque) {
  Guarded([&] { Deliver(opaque, PoolEvent(pool, "refresh")); });
}

Value CloseEvent(int reason) {
  Value v = EventOf("close", "close");
  v.Set("reason", Value::Number(reason));
  return v;
}

// Called once, when the peer or an I/O error closed the connection; libvirt
// frees the registration right after (freecb).
void OnClose(virConnectPtr, int reason, void* opaque) {
  Guarded([&] { Deliver(opaque, CloseEvent(reason)); });
}

struct DomainEventSpec {
  int id;
  const char* name;
  virConnectDomainEventGenericCallback callback;
};

// Every domain event that can change what the graph shows of a domain.
const DomainEventSpec kDomainEvents[] = {
    {VIR_DOMAIN_EVENT_ID_LIFECYCLE, "lifecycle", VIR_DOMAIN_EVENT_CALLBACK(OnDomainLifecycle)},
    {VIR_DOMAIN_EVENT_ID_REBOOT, "reboot", VIR_DOMAIN_EVENT_CALLBACK(OnDomainReboot)},
    {VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, "device-added", VIR_DOMAIN_EVENT_CALLBACK(OnDeviceAdded)},
    {VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, "device-removed", VIR_DOMAIN_EVENT_CALLBACK(OnDeviceRemoved)},
    {VIR_DOMAIN_EVENT_ID_METADATA_CHANGE, "metadata-change", VIR_DOMAIN_EVENT_CALLBACK(OnMetadataChange)},
    {VIR_DOMAIN_EVENT_ID_TUNABLE, "tunable", VIR_DOMAIN_EVENT_CALLBACK(OnTunable)},
    {VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, "job-completed", VIR_DOMAIN_EVENT_CALLBACK(OnJobCompleted)},
    {VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE, "balloon-change", VIR_DOMAIN_EVENT_CALLBACK(OnBalloonChange)},
    {VIR_DOMAIN_EVENT_ID_DISK_CHANGE, "disk-change", VIR_DOMAIN_EVENT_CALLBACK(OnDiskChange)},
    {VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, "block-job", VIR_DOMAIN_EVENT_CALLBACK(OnBlockJob)},
};

// --- the event loop ------------------------------------------------------------

struct LoopState {
  std::once_flag once;
  bool running = false;
  std::string error;
};

LoopState& Loop() {
  static LoopState* state = new LoopState();
  return *state;
}

[[noreturn]] void RunLoop() {
  pthread_setname_np(pthread_self(), "virt-graph-ev");
  for (;;) {
    if (virEventRunDefaultImpl() < 0) {
      virResetLastError();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

// --- (de)registration (worker threads) -------------------------------------

bool Unsupported(const LibvirtFailure& f) {
  // Drivers without these events, and daemons older than the event ID.
  return f.code == VIR_ERR_NO_SUPPORT || f.code == VIR_ERR_OPERATION_UNSUPPORTED || f.code == VIR_ERR_INVALID_ARG;
}

int Deregister(virConnectPtr conn, const LibvirtCallback& cb) {
  switch (cb.source) {
    case Source::Domain:
      return virConnectDomainEventDeregisterAny(conn, cb.callbackId);
    case Source::Network:
      return virConnectNetworkEventDeregisterAny(conn, cb.callbackId);
    case Source::Pool:
      return virConnectStoragePoolEventDeregisterAny(conn, cb.callbackId);
  }
  return -1;
}

// Stops the subscription's deliveries and deregisters its callbacks. Call
// with st.events.mu held. Failures are ignored: on a closed connection
// libvirt forgets a callback before the RPC that fails.
void DetachLocked(ConnState& st, const std::shared_ptr<Subscription>& sub, const Value* last) {
  Release(*sub, last);
  for (const LibvirtCallback& cb : sub->callbacks) {
    st.Count();
    if (Deregister(st.conn(), cb) < 0) virResetLastError();
    EraseRegistration(cb.registration);
  }
  sub->callbacks.clear();
  ConnEvents& ev = st.events;
  auto pos = std::find(ev.subscriptions.begin(), ev.subscriptions.end(), sub);
  if (pos != ev.subscriptions.end()) {
    ev.subscriptions.erase(pos);
    attachedSubscriptions.fetch_sub(1);
  }
  if (ev.closeRegistration == 0) return;
  int left = RemoveFromRegistration(ev.closeRegistration, sub.get());
  if (left == 0) {
    st.Count();
    if (virConnectUnregisterCloseCallback(st.conn(), OnClose) < 0) virResetLastError();
    EraseRegistration(ev.closeRegistration);
    ev.closeRegistration = 0;
  } else if (left < 0) {
    ev.closeRegistration = 0;  // fired and freed by libvirt
  }
}

// The connection's close callback, shared by its subscriptions. Call with st.events.mu held.
void RegisterCloseLocked(ConnState& st, const std::shared_ptr<Subscription>& sub) {
  ConnEvents& ev = st.events;
  if (ev.closeRegistration != 0 && AddToRegistration(ev.closeRegistration, sub)) return;
  ev.closeRegistration = 0;
  uint64_t id = NewRegistration(sub);
  st.Count();
  if (virConnectRegisterCloseCallback(st.conn(), OnClose, OpaqueOf(id), FreeRegistration) < 0) {
    LibvirtFailure f = LastFailure("virConnectRegisterCloseCallback");
    EraseRegistration(id);
    throw LibvirtException(f);
  }
  ev.closeRegistration = id;
}

// Registers one callback; false when the driver lacks the event.
template <typename RegisterFn>
bool RegisterOne(ConnState& st, const std::shared_ptr<Subscription>& sub, Source source, const char* call,
                 RegisterFn registerFn) {
  uint64_t id = NewRegistration(sub);
  st.Count();
  int callbackId = registerFn(OpaqueOf(id));
  if (callbackId < 0) {
    // libvirt does not call freecb for a registration that failed.
    LibvirtFailure f = LastFailure(call);
    EraseRegistration(id);
    if (Unsupported(f)) return false;
    throw LibvirtException(f);
  }
  sub->callbacks.push_back(LibvirtCallback{source, callbackId, id});
  return true;
}

Value Register(ConnState& st, const std::shared_ptr<Subscription>& sub) {
  std::string loopError;
  if (!EnsureEventLoop(&loopError)) {
    throw LibvirtException(LibvirtFailure{VIR_ERR_INTERNAL_ERROR, VIR_FROM_EVENT,
                                          "libvirt's event loop is not running: " + loopError});
  }
  virConnectPtr conn = st.conn();
  std::lock_guard<std::mutex> lock(st.events.mu);
  st.events.subscriptions.push_back(sub);
  attachedSubscriptions.fetch_add(1);
  Value registered = Value::Array();
  try {
    RegisterCloseLocked(st, sub);
    registered.Push(Value::String("close"));
    for (const DomainEventSpec& spec : kDomainEvents) {
      bool ok = RegisterOne(st, sub, Source::Domain, "virConnectDomainEventRegisterAny", [&](void* opaque) {
        return virConnectDomainEventRegisterAny(conn, nullptr, spec.id, spec.callback, opaque, FreeRegistration);
      });
      if (ok) registered.Push(Value::String(std::string("domain:") + spec.name));
    }
    if (RegisterOne(st, sub, Source::Network, "virConnectNetworkEventRegisterAny", [&](void* opaque) {
          return virConnectNetworkEventRegisterAny(conn, nullptr, VIR_NETWORK_EVENT_ID_LIFECYCLE,
                                                   VIR_NETWORK_EVENT_CALLBACK(OnNetworkLifecycle), opaque,
                                                   FreeRegistration);
        })) {
      registered.Push(Value::String("network:lifecycle"));
    }
    if (RegisterOne(st, sub, Source::Pool, "virConnectStoragePoolEventRegisterAny", [&](void* opaque) {
          return virConnectStoragePoolEventRegisterAny(conn, nullptr, VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE,
                                                       VIR_STORAGE_POOL_EVENT_CALLBACK(OnPoolLifecycle), opaque,
                                                       FreeRegistration);
        })) {
      registered.Push(Value::String("pool:lifecycle"));
    }
    if (RegisterOne(st, sub, Source::Pool, "virConnectStoragePoolEventRegisterAny", [&](void* opaque) {
          return virConnectStoragePoolEventRegisterAny(conn, nullptr, VIR_STORAGE_POOL_EVENT_ID_REFRESH,
                                                       VIR_STORAGE_POOL_EVENT_CALLBACK(OnPoolRefresh), opaque,
                                                       FreeRegistration);
        })) {
      registered.Push(Value::String("pool:refresh"));
    }
  } catch (...) {
    DetachLocked(st, sub, nullptr);
    throw;
  }
  return registered;
}

// --- jobs -----------------------------------------------------------------------

Napi::Value ResolvedUndefined(Napi::Env env) {
  auto deferred = Napi::Promise::Deferred::New(env);
  deferred.Resolve(env.Undefined());
  return deferred.Promise();
}

class UnsubscribeJob : public Job {
 public:
  UnsubscribeJob(Napi::Env env, std::shared_ptr<ConnState> state, std::shared_ptr<Subscription> sub)
      : deferred_(Napi::Promise::Deferred::New(env)), state_(std::move(state)), sub_(std::move(sub)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() noexcept override {
    virResetLastError();
    try {
      std::lock_guard<std::mutex> lock(state_->events.mu);
      auto& subs = state_->events.subscriptions;
      if (std::find(subs.begin(), subs.end(), sub_) != subs.end()) DetachLocked(*state_, sub_, nullptr);
    } catch (...) {
    }
    // Closes the connection here, off the JS thread, when it was the last reference.
    state_.reset();
  }

  void Complete(Napi::Env env) override { deferred_.Resolve(env.Undefined()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<ConnState> state_;
  std::shared_ptr<Subscription> sub_;
};

Napi::Value Unsubscribe(Napi::Env env, const std::shared_ptr<Subscription>& sub,
                        const std::weak_ptr<ConnState>& weak) {
  sub->unsubscribed = true;
  Release(*sub, nullptr);
  std::shared_ptr<ConnState> state = weak.lock();
  // A connection already closed deregistered everything when it closed.
  if (!state) return ResolvedUndefined(env);
  auto job = std::make_unique<UnsubscribeJob>(env, std::move(state), sub);
  Napi::Promise promise = job->Promise();
  DataOf(env).pool.Submit(env, std::move(job));
  return promise;
}

class SubscribeJob : public Job {
 public:
  SubscribeJob(Napi::Env env, std::shared_ptr<ConnState> state, std::shared_ptr<Subscription> sub)
      : deferred_(Napi::Promise::Deferred::New(env)), state_(std::move(state)), weak_(state_), sub_(std::move(sub)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() noexcept override {
    virResetLastError();
    failure_ = CaptureFailure([&] { registered_ = Register(*state_, sub_); });
    // A connection closed meanwhile closes here, detaching this subscription too.
    state_.reset();
  }

  void Complete(Napi::Env env) override {
    if (failure_) {
      sub_->unsubscribed = true;
      Release(*sub_, nullptr);
      deferred_.Reject(MakeJsError(env, *failure_).Value());
      return;
    }
    Napi::Object out = Napi::Object::New(env);
    std::shared_ptr<Subscription> sub = sub_;
    std::weak_ptr<ConnState> weak = weak_;
    out.Set("unsubscribe", Napi::Function::New(
                               env, [sub, weak](const Napi::CallbackInfo& info) { return Unsubscribe(info.Env(), sub, weak); },
                               "unsubscribe"));
    out.Set("registered", registered_.ToJs(env));
    deferred_.Resolve(out);
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<ConnState> state_;
  std::weak_ptr<ConnState> weak_;
  std::shared_ptr<Subscription> sub_;
  Value registered_;
  std::optional<LibvirtFailure> failure_;
};

}  // namespace

bool EnsureEventLoop(std::string* error) {
  LoopState& s = Loop();
  std::call_once(s.once, [&s] {
    // First: libvirt's per-thread error slot does not exist before it.
    if (virInitialize() < 0) {
      s.error = "virInitialize failed";
      return;
    }
    if (virEventRegisterDefaultImpl() < 0) {
      s.error = LastFailure("virEventRegisterDefaultImpl").message;
      return;
    }
    // Asynchronous signals stay with Node's threads (as on the worker pool).
    sigset_t all;
    sigset_t previous;
    sigfillset(&all);
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP}) sigdelset(&all, sig);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    try {
      std::thread(RunLoop).detach();
      s.running = true;
    } catch (const std::system_error& e) {
      s.error = std::string("cannot start the event loop thread: ") + e.what();
    }
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  });
  if (!s.running && error != nullptr) *error = s.error;
  return s.running;
}

void DetachAllSubscriptions(ConnState& st) {
  std::lock_guard<std::mutex> lock(st.events.mu);
  if (st.events.subscriptions.empty() && st.events.closeRegistration == 0) return;
  Value last = CloseEvent(VIR_CONNECT_CLOSE_REASON_CLIENT);
  std::vector<std::shared_ptr<Subscription>> subs = st.events.subscriptions;
  for (const std::shared_ptr<Subscription>& sub : subs) DetachLocked(st, sub, &last);
  if (st.events.closeRegistration != 0) {
    st.Count();
    if (virConnectUnregisterCloseCallback(st.conn(), OnClose) < 0) virResetLastError();
    EraseRegistration(st.events.closeRegistration);
    st.events.closeRegistration = 0;
  }
}

Napi::Value SubscribeEvents(const Napi::CallbackInfo& info, std::shared_ptr<ConnState> state) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "callback must be a function");
  auto sub = std::make_shared<Subscription>();
  auto* holder = new std::shared_ptr<Subscription>(sub);
  napi_threadsafe_function tsfn = nullptr;
  napi_status status = napi_create_threadsafe_function(
      env, info[0], nullptr, Napi::String::New(env, "virt-graph:libvirt-events"), 0, 1, holder,
      FinalizeSubscription, sub.get(), CallJs, &tsfn);
  if (status != napi_ok) {
    delete holder;
    throw Napi::Error::New(env, "libvirt events: napi_create_threadsafe_function failed");
  }
  sub->tsfn = tsfn;
  // Events never keep the process alive.
  napi_unref_threadsafe_function(env, tsfn);
  try {
    auto job = std::make_unique<SubscribeJob>(env, std::move(state), sub);
    Napi::Promise promise = job->Promise();
    DataOf(env).pool.Submit(env, std::move(job));
    return promise;
  } catch (...) {
    sub->unsubscribed = true;
    Release(*sub, nullptr);
    throw;
  }
}

Napi::Value EventLoopInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string error;
  bool running = EnsureEventLoop(&error);
  Napi::Object out = Napi::Object::New(env);
  out.Set("running", Napi::Boolean::New(env, running));
  out.Set("error", running ? env.Null() : Napi::String::New(env, error));
  out.Set("subscriptions", Napi::Number::New(env, static_cast<double>(attachedSubscriptions.load())));
  out.Set("registrations", Napi::Number::New(env, static_cast<double>(RegistrationCount())));
  return out;
}

}  // namespace vg

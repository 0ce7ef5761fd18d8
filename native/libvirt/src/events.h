// libvirt's events (domain, network and storage pool changes, connection
// close), delivered to JS. See events.cc for the recipe.
#pragma once

#include <napi.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace vg {

class ConnState;
struct Subscription;

// Registers libvirt's default event implementation and starts the thread
// that runs it, once per process. Must happen before any virConnectOpen*:
// the remote driver hooks a connection's socket into the event loop at open
// time, and a connection opened before has no events (and no close
// callback). Called at addon load; false (with libvirt's reason) when
// libvirt refused, in which case connections work without events.
bool EnsureEventLoop(std::string* error = nullptr);

// What one connection keeps of its event subscriptions; lives in ConnState.
struct ConnEvents {
  // Serializes (de)registrations on this connection. Held across libvirt
  // calls (registering is an RPC on remote URIs); never taken by a libvirt
  // callback, so it cannot deadlock with the event loop thread.
  std::mutex mu;
  std::vector<std::shared_ptr<Subscription>> subscriptions;
  // libvirt allows one close callback per connection: it is registered with
  // the first subscription and fans out to all of them. Registry ID; 0 when
  // none is registered.
  uint64_t closeRegistration = 0;
};

// Deregisters every subscription of a connection that is about to be
// closed; each receives a last { type: 'close', reason: 3 (client) } event.
// Any thread; takes st's event lock.
void DetachAllSubscriptions(ConnState& st);

// Connection.subscribeEvents(callback): resolves with
// { unsubscribe(): Promise<void>, registered: string[] }.
Napi::Value SubscribeEvents(const Napi::CallbackInfo& info, std::shared_ptr<ConnState> state);

// The addon's eventLoop(): { running, error, subscriptions, registrations }.
Napi::Value EventLoopInfo(const Napi::CallbackInfo& info);

}  // namespace vg

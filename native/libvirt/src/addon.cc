#include <napi.h>

#include "addon_data.h"
#include "connection.h"
#include "errors.h"
#include "events.h"

namespace {

Napi::Value SetThreadPoolSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "size must be a number");
  double size = info[0].As<Napi::Number>().DoubleValue();
  if (!(size >= 1 && size <= vg::WorkerPool::kMaxSize) || size != static_cast<double>(static_cast<size_t>(size))) {
    throw Napi::RangeError::New(env, "size must be an integer from 1 to " + std::to_string(vg::WorkerPool::kMaxSize));
  }
  vg::DataOf(env).pool.Resize(static_cast<size_t>(size));
  return env.Undefined();
}

Napi::Value ThreadPool(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  vg::PoolStats stats = vg::DataOf(env).pool.Stats();
  Napi::Object out = Napi::Object::New(env);
  out.Set("size", Napi::Number::New(env, static_cast<double>(stats.size)));
  out.Set("threads", Napi::Number::New(env, static_cast<double>(stats.threads)));
  out.Set("busy", Napi::Number::New(env, static_cast<double>(stats.busy)));
  out.Set("queued", Napi::Number::New(env, static_cast<double>(stats.queued)));
  return out;
}

Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  vg::SilenceDefaultErrorHandler();
  // libvirt's event loop, before any connection is opened (see events.cc).
  // A failure leaves connections working without events; eventLoop() says why.
  vg::EnsureEventLoop();
  env.SetInstanceData(new vg::AddonData(env));
  unsigned long version = 0;
  virGetVersion(&version, nullptr, nullptr);
  exports.Set("libvirtVersion", Napi::Number::New(env, static_cast<double>(version)));
  exports.Set("setThreadPoolSize", Napi::Function::New(env, SetThreadPoolSize, "setThreadPoolSize"));
  exports.Set("threadPool", Napi::Function::New(env, ThreadPool, "threadPool"));
  exports.Set("eventLoop", Napi::Function::New(env, vg::EventLoopInfo, "eventLoop"));
  return vg::Connection::Init(env, exports);
}

}  // namespace

NODE_API_MODULE(virt_graph_libvirt, InitAddon)

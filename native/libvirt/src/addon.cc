#include <napi.h>

#include "connection.h"
#include "errors.h"

namespace {

Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  vg::SilenceDefaultErrorHandler();
  unsigned long version = 0;
  virGetVersion(&version, nullptr, nullptr);
  exports.Set("libvirtVersion", Napi::Number::New(env, static_cast<double>(version)));
  return vg::Connection::Init(env, exports);
}

}  // namespace

NODE_API_MODULE(virt_graph_libvirt, InitAddon)

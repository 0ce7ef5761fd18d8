// What the addon keeps per Node environment (the main thread and each
// worker_thread load their own instance), as N-API instance data.
#pragma once

#include <napi.h>

#include "worker_pool.h"

namespace vg {

struct AddonData {
  explicit AddonData(Napi::Env env) : pool(env) {}
  WorkerPool pool;
  Napi::FunctionReference connectionClass;
};

inline AddonData& DataOf(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace vg

#include <chrono>
#include <cstdlib>
#include <vector>

#include "errors.h"
#include "ops.h"

namespace vg {

std::string TakeString(char* s) {
  std::string out = s ? s : "";
  free(s);
  return out;
}

Value GetHostInfo(ConnState& st) {
  virConnectPtr conn = st.conn();
  Value out = Value::Object();

  st.Count();
  char* hostname = virConnectGetHostname(conn);
  if (hostname == nullptr) ThrowLast("virConnectGetHostname");
  out.Set("hostname", Value::String(TakeString(hostname)));

  st.Count();
  const char* type = virConnectGetType(conn);
  if (type == nullptr) ThrowLast("virConnectGetType");
  out.Set("hypervisorType", Value::String(type));

  unsigned long hvVersion = 0;
  st.Count();
  if (virConnectGetVersion(conn, &hvVersion) < 0) ThrowLast("virConnectGetVersion");
  out.Set("hypervisorVersion", Value::Number(static_cast<double>(hvVersion)));

  unsigned long libVersion = 0;
  st.Count();
  if (virConnectGetLibVersion(conn, &libVersion) < 0) ThrowLast("virConnectGetLibVersion");
  out.Set("libvirtVersion", Value::Number(static_cast<double>(libVersion)));

  virNodeInfo node;
  st.Count();
  if (virNodeGetInfo(conn, &node) < 0) ThrowLast("virNodeGetInfo");
  Value info = Value::Object();
  info.Set("model", Value::String(node.model));
  info.Set("memoryKiB", Value::Number(static_cast<double>(node.memory)));
  info.Set("cpus", Value::Number(node.cpus));
  info.Set("mhz", Value::Number(node.mhz));
  info.Set("numaNodes", Value::Number(node.nodes));
  info.Set("sockets", Value::Number(node.sockets));
  info.Set("cores", Value::Number(node.cores));
  info.Set("threads", Value::Number(node.threads));
  out.Set("node", std::move(info));

  st.Count();
  char* uri = virConnectGetURI(conn);
  if (uri == nullptr) ThrowLast("virConnectGetURI");
  out.Set("uri", Value::String(TakeString(uri)));
  return out;
}

Value GetCapabilities(ConnState& st) {
  st.Count();
  char* xml = virConnectGetCapabilities(st.conn());
  if (xml == nullptr) ThrowLast("virConnectGetCapabilities");
  return Value::String(TakeString(xml));
}

Value IsAlive(ConnState& st) {
  st.Count();
  int alive = virConnectIsAlive(st.conn());
  if (alive < 0) ThrowLast("virConnectIsAlive");
  return Value::Bool(alive == 1);
}

double NowMs() {
  return std::chrono::duration<double, std::milli>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace {

// The counters of one virNodeGet*Stats call as {field: value}. libvirt wants
// the exact number of fields its driver has (Linux: 4 each) or 0 to ask for
// it, so each costs two calls; `at` gets the time the values were read.
template <typename Stats, typename Getter>
Value NodeCounters(ConnState& st, const char* call, Getter get, double* at) {
  int n = 0;
  st.Count();
  if (get(nullptr, &n) < 0) ThrowLast(call);
  std::vector<Stats> params(static_cast<size_t>(n > 0 ? n : 0));
  Value out = Value::Object();
  if (n == 0) return out;
  double before = NowMs();
  st.Count();
  if (get(params.data(), &n) < 0) ThrowLast(call);
  if (at != nullptr) *at = before + (NowMs() - before) / 2;
  for (int i = 0; i < n; i++) {
    out.Set(params[i].field, Value::Number(static_cast<double>(params[i].value)));
  }
  return out;
}

// A part the driver does not support (the test driver has no memory
// counters) stands as its error, so the other part still arrives; any other
// failure (a connection that died) fails the whole call, as callers expect.
template <typename Read>
Value PartOrError(Read read) {
  try {
    return read();
  } catch (const LibvirtException& e) {
    if (e.failure().code != VIR_ERR_NO_SUPPORT) throw;
    return Value::Error(e.failure().code, e.failure().domain, e.failure().message);
  }
}

}  // namespace

Value GetNodeStats(ConnState& st) {
  virConnectPtr conn = st.conn();
  double at = 0;
  Value cpu = PartOrError([&] {
    return NodeCounters<virNodeCPUStats>(
        st, "virNodeGetCPUStats",
        [&](virNodeCPUStatsPtr params, int* n) {
          return virNodeGetCPUStats(conn, VIR_NODE_CPU_STATS_ALL_CPUS, params, n, 0);
        },
        &at);
  });
  double memoryAt = 0;
  Value memory = PartOrError([&] {
    return NodeCounters<virNodeMemoryStats>(
        st, "virNodeGetMemoryStats",
        [&](virNodeMemoryStatsPtr params, int* n) {
          return virNodeGetMemoryStats(conn, VIR_NODE_MEMORY_STATS_ALL_CELLS, params, n, 0);
        },
        &memoryAt);
  });
  Value out = Value::Object();
  // The CPU counters make the rates, so theirs is the time of the reading.
  out.Set("time", Value::Number(at != 0 ? at : memoryAt != 0 ? memoryAt : NowMs()));
  out.Set("cpu", std::move(cpu));
  out.Set("memory", std::move(memory));
  return out;
}

}  // namespace vg

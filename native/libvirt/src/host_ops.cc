#include <cstdlib>

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

}  // namespace vg

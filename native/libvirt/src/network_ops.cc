#include <libvirt/virterror.h>

#include <cstdlib>

#include "errors.h"
#include "ops.h"

namespace vg {

Value ListAllNetworks(ConnState& st, unsigned int flags) {
  NetworkList nets;
  st.Count();
  int n = virConnectListAllNetworks(st.conn(), &nets.items, flags);
  if (n < 0) ThrowLast("virConnectListAllNetworks");
  nets.count = n;
  Value out = Value::Array();
  for (int i = 0; i < nets.count; i++) {
    virNetworkPtr net = nets.items[i];
    char uuid[VIR_UUID_STRING_BUFLEN];
    Value rec = Value::Object();
    rec.Set("name", Value::String(virNetworkGetName(net)));
    if (virNetworkGetUUIDString(net, uuid) == 0) rec.Set("uuid", Value::String(uuid));
    st.Count();
    int active = virNetworkIsActive(net);
    if (active < 0) ThrowLast("virNetworkIsActive");
    rec.Set("active", Value::Bool(active == 1));
    st.Count();
    int persistent = virNetworkIsPersistent(net);
    if (persistent < 0) ThrowLast("virNetworkIsPersistent");
    rec.Set("persistent", Value::Bool(persistent == 1));
    int autostart = 0;
    st.Count();
    if (virNetworkGetAutostart(net, &autostart) < 0) ThrowLast("virNetworkGetAutostart");
    rec.Set("autostart", Value::Bool(autostart == 1));
    st.Count();
    char* xml = virNetworkGetXMLDesc(net, 0);
    if (xml == nullptr) ThrowLast("virNetworkGetXMLDesc");
    rec.Set("xml", Value::String(TakeString(xml)));
    out.Push(std::move(rec));
  }
  return out;
}

// Starts, stops or undefines a network: one libvirt call after the lookup.
Value NetworkLifecycle(ConnState& st, const std::string& uuid, const std::string& op) {
  st.Count();
  NetworkHandle net(virNetworkLookupByUUIDString(st.conn(), uuid.c_str()));
  if (!net) ThrowLast("virNetworkLookupByUUIDString");
  int rc;
  const char* call;
  st.Count();
  if (op == "create") {
    call = "virNetworkCreate";
    rc = virNetworkCreate(net.get());
  } else if (op == "destroy") {
    call = "virNetworkDestroy";
    rc = virNetworkDestroy(net.get());
  } else if (op == "undefine") {
    call = "virNetworkUndefine";
    rc = virNetworkUndefine(net.get());
  } else {
    throw LibvirtException(LibvirtFailure{VIR_ERR_INVALID_ARG, VIR_FROM_NETWORK, "unknown network operation '" + op + "'"});
  }
  if (rc < 0) ThrowLast(call);
  return Value::Bool(true);
}

}  // namespace vg

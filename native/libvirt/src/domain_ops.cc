#include <libvirt/virterror.h>

#include <cstdlib>
#include <unordered_map>

#include "errors.h"
#include "ops.h"
#include "typed_params.h"

namespace vg {

DomainList::~DomainList() {
  for (int i = 0; i < count; i++) virDomainFree(doms[i]);
  free(doms);
}

namespace {

struct DomainHandle {
  virDomainPtr dom = nullptr;
  ~DomainHandle() {
    if (dom) virDomainFree(dom);
  }
};

}  // namespace

// One listing resolves any number of UUIDs, where a lookup per UUID would be
// one driver call (an RPC on remote URIs) each. A UUID with no domain maps
// to nullptr.
std::vector<virDomainPtr> ResolveDomains(ConnState& st, DomainList& list,
                                         const std::vector<std::string>& uuids) {
  st.Count();
  list.count = virConnectListAllDomains(st.conn(), &list.doms, 0);
  if (list.count < 0) {
    list.count = 0;
    ThrowLast("virConnectListAllDomains");
  }
  std::unordered_map<std::string, virDomainPtr> byUuid;
  char uuid[VIR_UUID_STRING_BUFLEN];
  for (int i = 0; i < list.count; i++) {
    if (virDomainGetUUIDString(list.doms[i], uuid) == 0) byUuid.emplace(uuid, list.doms[i]);
  }
  std::vector<virDomainPtr> out;
  out.reserve(uuids.size());
  for (const std::string& u : uuids) {
    auto it = byUuid.find(u);
    out.push_back(it == byUuid.end() ? nullptr : it->second);
  }
  return out;
}

Value NoDomainError(const std::string& uuid) {
  return Value::Error(VIR_ERR_NO_DOMAIN, VIR_FROM_DOM, "no domain with matching uuid '" + uuid + "'");
}

// Name, UUID and id live in the virDomainPtr itself: no call to the driver.
Value DomainRef(virDomainPtr dom) {
  char uuid[VIR_UUID_STRING_BUFLEN];
  Value ref = Value::Object();
  ref.Set("name", Value::String(virDomainGetName(dom)));
  if (virDomainGetUUIDString(dom, uuid) == 0) ref.Set("uuid", Value::String(uuid));
  int id = static_cast<int>(virDomainGetID(dom));
  ref.Set("id", Value::Number(id));
  return ref;
}

Value ListAllDomains(ConnState& st, unsigned int flags) {
  DomainList list;
  st.Count();
  list.count = virConnectListAllDomains(st.conn(), &list.doms, flags);
  if (list.count < 0) {
    list.count = 0;
    ThrowLast("virConnectListAllDomains");
  }
  Value out = Value::Array();
  for (int i = 0; i < list.count; i++) out.Push(DomainRef(list.doms[i]));
  return out;
}

Value GetAllDomainStats(ConnState& st, unsigned int stats, unsigned int flags) {
  virDomainStatsRecordPtr* records = nullptr;
  st.Count();
  int n = virConnectGetAllDomainStats(st.conn(), stats, &records, flags);
  if (n < 0) ThrowLast("virConnectGetAllDomainStats");
  Value out = Value::Array();
  for (int i = 0; i < n; i++) {
    Value rec = DomainRef(records[i]->dom);
    rec.Set("params", TypedParamsToValue(records[i]->params, records[i]->nparams));
    out.Push(std::move(rec));
  }
  virDomainStatsRecordListFree(records);
  return out;
}

Value LookupDomainByUuid(ConnState& st, const std::string& uuid) {
  DomainHandle h;
  st.Count();
  h.dom = virDomainLookupByUUIDString(st.conn(), uuid.c_str());
  if (h.dom == nullptr) ThrowLast("virDomainLookupByUUIDString");
  return DomainRef(h.dom);
}

Value LookupDomainByName(ConnState& st, const std::string& name) {
  DomainHandle h;
  st.Count();
  h.dom = virDomainLookupByName(st.conn(), name.c_str());
  if (h.dom == nullptr) ThrowLast("virDomainLookupByName");
  return DomainRef(h.dom);
}

// libvirt has no bulk XML call; this batch crosses into the addon once,
// resolves the domains with one listing and reads their XML on one worker.
Value GetDomainXmlDescs(ConnState& st, const std::vector<std::string>& uuids, unsigned int flags) {
  DomainList list;
  std::vector<virDomainPtr> doms = ResolveDomains(st, list, uuids);
  Value out = Value::Array();
  for (size_t i = 0; i < uuids.size(); i++) {
    if (doms[i] == nullptr) {
      out.Push(NoDomainError(uuids[i]));
      continue;
    }
    st.Count();
    char* xml = virDomainGetXMLDesc(doms[i], flags);
    if (xml == nullptr) {
      LibvirtFailure f = LastFailure("virDomainGetXMLDesc");
      out.Push(Value::Error(f.code, f.domain, f.message));
      continue;
    }
    out.Push(Value::String(TakeString(xml)));
  }
  return out;
}

}  // namespace vg

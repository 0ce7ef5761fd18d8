#include <cstdlib>

#include "errors.h"
#include "ops.h"

namespace vg {

namespace {

struct SnapshotList {
  virDomainSnapshotPtr* snaps = nullptr;
  int count = 0;
  ~SnapshotList() {
    for (int i = 0; i < count; i++) virDomainSnapshotFree(snaps[i]);
    free(snaps);
  }
};

Value SnapshotsOf(ConnState& st, virDomainPtr dom) {
  SnapshotList list;
  st.Count();
  list.count = virDomainListAllSnapshots(dom, &list.snaps, 0);
  if (list.count < 0) {
    list.count = 0;
    ThrowLast("virDomainListAllSnapshots");
  }
  Value out = Value::Array();
  for (int i = 0; i < list.count; i++) {
    virDomainSnapshotPtr snap = list.snaps[i];
    Value rec = Value::Object();
    rec.Set("name", Value::String(virDomainSnapshotGetName(snap)));
    st.Count();
    char* xml = virDomainSnapshotGetXMLDesc(snap, 0);
    if (xml == nullptr) ThrowLast("virDomainSnapshotGetXMLDesc");
    rec.Set("xml", Value::String(TakeString(xml)));
    st.Count();
    int current = virDomainSnapshotIsCurrent(snap, 0);
    if (current < 0) ThrowLast("virDomainSnapshotIsCurrent");
    rec.Set("current", Value::Bool(current == 1));
    out.Push(std::move(rec));
  }
  return out;
}

}  // namespace

// One entry per requested domain: its snapshots, or the error for that domain.
Value ListDomainSnapshots(ConnState& st, const std::vector<std::string>& uuids) {
  Value out = Value::Array();
  for (const std::string& uuid : uuids) {
    st.Count();
    virDomainPtr dom = virDomainLookupByUUIDString(st.conn(), uuid.c_str());
    if (dom == nullptr) {
      LibvirtFailure f = LastFailure("virDomainLookupByUUIDString");
      out.Push(Value::Error(f.code, f.domain, f.message));
      continue;
    }
    try {
      out.Push(SnapshotsOf(st, dom));
    } catch (const LibvirtException& e) {
      out.Push(Value::Error(e.failure().code, e.failure().domain, e.failure().message));
    }
    virDomainFree(dom);
  }
  return out;
}

}  // namespace vg

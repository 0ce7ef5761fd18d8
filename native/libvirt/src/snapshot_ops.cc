#include <libvirt/virterror.h>

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

// The name of the current snapshot, or "" when the domain has none.
std::string CurrentSnapshotName(ConnState& st, virDomainPtr dom) {
  st.Count();
  virDomainSnapshotPtr current = virDomainSnapshotCurrent(dom, 0);
  if (current == nullptr) {
    LibvirtFailure f = LastFailure("virDomainSnapshotCurrent");
    if (f.code == VIR_ERR_NO_DOMAIN_SNAPSHOT) return "";
    throw LibvirtException(f);
  }
  std::string name = virDomainSnapshotGetName(current);
  virDomainSnapshotFree(current);
  return name;
}

Value SnapshotsOf(ConnState& st, virDomainPtr dom) {
  SnapshotList list;
  st.Count();
  // Topological order: parents before children, as the schema promises.
  list.count = virDomainListAllSnapshots(dom, &list.snaps, VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL);
  if (list.count < 0) {
    list.count = 0;
    ThrowLast("virDomainListAllSnapshots");
  }
  Value out = Value::Array();
  if (list.count == 0) return out;
  std::string current = CurrentSnapshotName(st, dom);
  for (int i = 0; i < list.count; i++) {
    virDomainSnapshotPtr snap = list.snaps[i];
    Value rec = Value::Object();
    std::string name = virDomainSnapshotGetName(snap);
    rec.Set("current", Value::Bool(name == current));
    rec.Set("name", Value::String(std::move(name)));
    st.Count();
    char* xml = virDomainSnapshotGetXMLDesc(snap, 0);
    if (xml == nullptr) ThrowLast("virDomainSnapshotGetXMLDesc");
    rec.Set("xml", Value::String(TakeString(xml)));
    out.Push(std::move(rec));
  }
  return out;
}

}  // namespace

// One entry per requested domain: its snapshots, or the error for that domain.
Value ListDomainSnapshots(ConnState& st, const std::vector<std::string>& uuids) {
  return ForEachDomain(st, uuids, [&](virDomainPtr dom) { return SnapshotsOf(st, dom); });
}

}  // namespace vg

#include <libvirt/virterror.h>

#include <cstdlib>

#include "errors.h"
#include "ops.h"

namespace vg {

namespace {

// The name of the current snapshot, or "" when the domain has none.
std::string CurrentSnapshotName(ConnState& st, virDomainPtr dom) {
  st.Count();
  SnapshotHandle current(virDomainSnapshotCurrent(dom, 0));
  if (!current) {
    LibvirtFailure f = LastFailure("virDomainSnapshotCurrent");
    if (f.code == VIR_ERR_NO_DOMAIN_SNAPSHOT) return "";
    throw LibvirtException(f);
  }
  return virDomainSnapshotGetName(current.get());
}

}  // namespace

Value SnapshotsOf(ConnState& st, virDomainPtr dom) {
  SnapshotList list;
  st.Count();
  // Topological order: parents before children, as the schema promises.
  int n = virDomainListAllSnapshots(dom, &list.items, VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL);
  if (n < 0) ThrowLast("virDomainListAllSnapshots");
  list.count = n;
  Value out = Value::Array();
  if (list.count == 0) return out;
  std::string current = CurrentSnapshotName(st, dom);
  for (int i = 0; i < list.count; i++) {
    virDomainSnapshotPtr snap = list.items[i];
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

// One entry per requested domain: its snapshots, or the error for that domain.
Value ListDomainSnapshots(ConnState& st, const std::vector<std::string>& uuids) {
  return ForEachDomain(st, uuids, [&](virDomainPtr dom) { return SnapshotsOf(st, dom); });
}

}  // namespace vg

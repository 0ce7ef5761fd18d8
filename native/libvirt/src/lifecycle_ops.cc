// Lifecycle and snapshot changes: each looks the domain up by UUID and makes
// one libvirt call, so a failure carries exactly libvirt's error.
#include <libvirt/virterror.h>

#include <cstdlib>
#include <string>

#include "errors.h"
#include "ops.h"

namespace vg {

namespace {

struct Domain {
  virDomainPtr dom = nullptr;
  Domain(ConnState& st, const std::string& uuid) {
    st.Count();
    dom = virDomainLookupByUUIDString(st.conn(), uuid.c_str());
    if (dom == nullptr) ThrowLast("virDomainLookupByUUIDString");
  }
  ~Domain() { virDomainFree(dom); }
  Domain(const Domain&) = delete;
  Domain& operator=(const Domain&) = delete;
};

struct Snapshot {
  virDomainSnapshotPtr snap = nullptr;
  Snapshot(ConnState& st, virDomainPtr dom, const std::string& name) {
    st.Count();
    snap = virDomainSnapshotLookupByName(dom, name.c_str(), 0);
    if (snap == nullptr) ThrowLast("virDomainSnapshotLookupByName");
  }
  ~Snapshot() { virDomainSnapshotFree(snap); }
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;
};

}  // namespace

Value DomainLifecycle(ConnState& st, const std::string& uuid, const std::string& op, unsigned int flags) {
  Domain d(st, uuid);
  int rc;
  const char* call;
  st.Count();
  if (op == "create") {
    call = "virDomainCreateWithFlags";
    rc = virDomainCreateWithFlags(d.dom, flags);
  } else if (op == "shutdown") {
    call = "virDomainShutdownFlags";
    rc = virDomainShutdownFlags(d.dom, flags);
  } else if (op == "destroy") {
    call = "virDomainDestroyFlags";
    rc = virDomainDestroyFlags(d.dom, flags);
  } else if (op == "reboot") {
    call = "virDomainReboot";
    rc = virDomainReboot(d.dom, flags);
  } else if (op == "reset") {
    call = "virDomainReset";
    rc = virDomainReset(d.dom, flags);
  } else if (op == "suspend") {
    call = "virDomainSuspend";
    rc = virDomainSuspend(d.dom);
  } else if (op == "resume") {
    call = "virDomainResume";
    rc = virDomainResume(d.dom);
  } else if (op == "managedSave") {
    call = "virDomainManagedSave";
    rc = virDomainManagedSave(d.dom, flags);
  } else if (op == "undefine") {
    call = "virDomainUndefineFlags";
    rc = virDomainUndefineFlags(d.dom, flags);
  } else {
    throw LibvirtException(LibvirtFailure{VIR_ERR_INVALID_ARG, VIR_FROM_NONE, "unknown domain operation '" + op + "'"});
  }
  if (rc < 0) ThrowLast(call);
  return Value::Bool(true);
}

Value SnapshotCreate(ConnState& st, const std::string& uuid, const std::string& xml, unsigned int flags) {
  Domain d(st, uuid);
  st.Count();
  virDomainSnapshotPtr snap = virDomainSnapshotCreateXML(d.dom, xml.c_str(), flags);
  if (snap == nullptr) ThrowLast("virDomainSnapshotCreateXML");
  std::string name = virDomainSnapshotGetName(snap);
  virDomainSnapshotFree(snap);
  return Value::String(std::move(name));
}

Value SnapshotRevert(ConnState& st, const std::string& uuid, const std::string& name, unsigned int flags) {
  Domain d(st, uuid);
  Snapshot s(st, d.dom, name);
  st.Count();
  if (virDomainRevertToSnapshot(s.snap, flags) < 0) ThrowLast("virDomainRevertToSnapshot");
  return Value::Bool(true);
}

Value SnapshotDelete(ConnState& st, const std::string& uuid, const std::string& name, unsigned int flags) {
  Domain d(st, uuid);
  Snapshot s(st, d.dom, name);
  st.Count();
  if (virDomainSnapshotDelete(s.snap, flags) < 0) ThrowLast("virDomainSnapshotDelete");
  return Value::Bool(true);
}

}  // namespace vg

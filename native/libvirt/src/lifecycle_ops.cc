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

namespace vg {

Value DefineXml(ConnState& st, const std::string& xml) {
  st.Count();
  virDomainPtr dom = virDomainDefineXML(st.conn(), xml.c_str());
  if (dom == nullptr) ThrowLast("virDomainDefineXML");
  Value ref = DomainRef(dom);
  virDomainFree(dom);
  return ref;
}

// Copies a volume (found by path) into a new volume of the same pool; the
// copy's path is returned. Drivers copy the data (qemu-img for qcow2).
Value CloneVolume(ConnState& st, const std::string& sourcePath, const std::string& newName) {
  st.Count();
  virStorageVolPtr source = virStorageVolLookupByPath(st.conn(), sourcePath.c_str());
  if (source == nullptr) ThrowLast("virStorageVolLookupByPath");
  st.Count();
  virStoragePoolPtr pool = virStoragePoolLookupByVolume(source);
  if (pool == nullptr) {
    LibvirtFailure f = LastFailure("virStoragePoolLookupByVolume");
    virStorageVolFree(source);
    throw LibvirtException(f);
  }
  st.Count();
  char* xml = virStorageVolGetXMLDesc(source, 0);
  std::string sourceXml = TakeString(xml);
  // The new volume is the source's definition under a new name, without its key and path.
  std::string out;
  size_t start = sourceXml.find("<name>");
  size_t end = sourceXml.find("</name>");
  if (xml == nullptr || start == std::string::npos || end == std::string::npos) {
    virStoragePoolFree(pool);
    virStorageVolFree(source);
    throw LibvirtException(LibvirtFailure{VIR_ERR_XML_ERROR, VIR_FROM_STORAGE, "cannot read the source volume's XML"});
  }
  out = sourceXml.substr(0, start + 6) + newName + sourceXml.substr(end);
  for (const char* tag : {"key", "path"}) {
    std::string open = std::string("<") + tag + ">";
    std::string close = std::string("</") + tag + ">";
    size_t a = out.find(open);
    size_t b = out.find(close);
    if (a != std::string::npos && b != std::string::npos && b > a) out.erase(a, b + close.size() - a);
  }
  st.Count();
  virStorageVolPtr copy = virStorageVolCreateXMLFrom(pool, out.c_str(), source, 0);
  virStoragePoolFree(pool);
  virStorageVolFree(source);
  if (copy == nullptr) ThrowLast("virStorageVolCreateXMLFrom");
  st.Count();
  char* path = virStorageVolGetPath(copy);
  virStorageVolFree(copy);
  if (path == nullptr) ThrowLast("virStorageVolGetPath");
  return Value::String(TakeString(path));
}

}  // namespace vg

namespace vg {

// Peer-to-peer migration: the source's libvirt connects to destUri itself.
Value MigrateToUri(ConnState& st, const std::string& uuid, const std::string& destUri, unsigned int flags) {
  Domain d(st, uuid);
  st.Count();
  if (virDomainMigrateToURI3(d.dom, destUri.c_str(), nullptr, 0, flags) < 0) ThrowLast("virDomainMigrateToURI3");
  return Value::Bool(true);
}

}  // namespace vg

// Lifecycle and snapshot changes: each looks the domain up by UUID and makes
// one libvirt call, so a failure carries exactly libvirt's error.
#include <libvirt/virterror.h>

#include <cstdlib>
#include <string>

#include "errors.h"
#include "ops.h"

namespace vg {

namespace {

DomainHandle LookupDomain(ConnState& st, const std::string& uuid) {
  st.Count();
  DomainHandle dom(virDomainLookupByUUIDString(st.conn(), uuid.c_str()));
  if (!dom) ThrowLast("virDomainLookupByUUIDString");
  return dom;
}

SnapshotHandle LookupSnapshot(ConnState& st, virDomainPtr dom, const std::string& name) {
  st.Count();
  SnapshotHandle snap(virDomainSnapshotLookupByName(dom, name.c_str(), 0));
  if (!snap) ThrowLast("virDomainSnapshotLookupByName");
  return snap;
}

}  // namespace

Value DomainLifecycle(ConnState& st, const std::string& uuid, const std::string& op, unsigned int flags) {
  DomainHandle dom = LookupDomain(st, uuid);
  int rc;
  const char* call;
  st.Count();
  if (op == "create") {
    call = "virDomainCreateWithFlags";
    rc = virDomainCreateWithFlags(dom.get(), flags);
  } else if (op == "shutdown") {
    call = "virDomainShutdownFlags";
    rc = virDomainShutdownFlags(dom.get(), flags);
  } else if (op == "destroy") {
    call = "virDomainDestroyFlags";
    rc = virDomainDestroyFlags(dom.get(), flags);
  } else if (op == "reboot") {
    call = "virDomainReboot";
    rc = virDomainReboot(dom.get(), flags);
  } else if (op == "reset") {
    call = "virDomainReset";
    rc = virDomainReset(dom.get(), flags);
  } else if (op == "suspend") {
    call = "virDomainSuspend";
    rc = virDomainSuspend(dom.get());
  } else if (op == "resume") {
    call = "virDomainResume";
    rc = virDomainResume(dom.get());
  } else if (op == "managedSave") {
    call = "virDomainManagedSave";
    rc = virDomainManagedSave(dom.get(), flags);
  } else if (op == "undefine") {
    call = "virDomainUndefineFlags";
    rc = virDomainUndefineFlags(dom.get(), flags);
  } else {
    throw LibvirtException(LibvirtFailure{VIR_ERR_INVALID_ARG, VIR_FROM_NONE, "unknown domain operation '" + op + "'"});
  }
  if (rc < 0) ThrowLast(call);
  return Value::Bool(true);
}

Value DomainSetResource(ConnState& st, const std::string& uuid, const std::string& resource, unsigned long value,
                        unsigned int flags) {
  DomainHandle dom = LookupDomain(st, uuid);
  st.Count();
  if (resource == "vcpus") {
    if (virDomainSetVcpusFlags(dom.get(), static_cast<unsigned int>(value), flags) < 0) ThrowLast("virDomainSetVcpusFlags");
  } else if (resource == "memory") {
    if (virDomainSetMemoryFlags(dom.get(), value, flags) < 0) ThrowLast("virDomainSetMemoryFlags");
  } else {
    throw LibvirtException(
        LibvirtFailure{VIR_ERR_INVALID_ARG, VIR_FROM_NONE, "unknown domain resource '" + resource + "'"});
  }
  return Value::Bool(true);
}

Value SnapshotCreate(ConnState& st, const std::string& uuid, const std::string& xml, unsigned int flags) {
  DomainHandle dom = LookupDomain(st, uuid);
  st.Count();
  SnapshotHandle snap(virDomainSnapshotCreateXML(dom.get(), xml.c_str(), flags));
  if (!snap) ThrowLast("virDomainSnapshotCreateXML");
  return Value::String(virDomainSnapshotGetName(snap.get()));
}

Value SnapshotRevert(ConnState& st, const std::string& uuid, const std::string& name, unsigned int flags) {
  DomainHandle dom = LookupDomain(st, uuid);
  SnapshotHandle snap = LookupSnapshot(st, dom.get(), name);
  st.Count();
  if (virDomainRevertToSnapshot(snap.get(), flags) < 0) ThrowLast("virDomainRevertToSnapshot");
  return Value::Bool(true);
}

Value SnapshotDelete(ConnState& st, const std::string& uuid, const std::string& name, unsigned int flags) {
  DomainHandle dom = LookupDomain(st, uuid);
  SnapshotHandle snap = LookupSnapshot(st, dom.get(), name);
  st.Count();
  if (virDomainSnapshotDelete(snap.get(), flags) < 0) ThrowLast("virDomainSnapshotDelete");
  return Value::Bool(true);
}

}  // namespace vg

namespace vg {

Value DefineXml(ConnState& st, const std::string& xml) {
  st.Count();
  DomainHandle dom(virDomainDefineXML(st.conn(), xml.c_str()));
  if (!dom) ThrowLast("virDomainDefineXML");
  return DomainRef(dom.get());
}

// Copies a volume (found by path) into a new volume of the same pool; the
// copy's path is returned. Drivers copy the data (qemu-img for qcow2).
Value CloneVolume(ConnState& st, const std::string& sourcePath, const std::string& newName) {
  st.Count();
  VolumeHandle source(virStorageVolLookupByPath(st.conn(), sourcePath.c_str()));
  if (!source) ThrowLast("virStorageVolLookupByPath");
  st.Count();
  PoolHandle pool(virStoragePoolLookupByVolume(source.get()));
  if (!pool) ThrowLast("virStoragePoolLookupByVolume");
  st.Count();
  char* xml = virStorageVolGetXMLDesc(source.get(), 0);
  if (xml == nullptr) ThrowLast("virStorageVolGetXMLDesc");
  std::string sourceXml = TakeString(xml);
  // The new volume is the source's definition under a new name, without its key and path.
  size_t start = sourceXml.find("<name>");
  size_t end = sourceXml.find("</name>");
  if (start == std::string::npos || end == std::string::npos) {
    throw LibvirtException(LibvirtFailure{VIR_ERR_XML_ERROR, VIR_FROM_STORAGE, "cannot read the source volume's XML"});
  }
  std::string out = sourceXml.substr(0, start + 6) + newName + sourceXml.substr(end);
  for (const char* tag : {"key", "path"}) {
    std::string open = std::string("<") + tag + ">";
    std::string close = std::string("</") + tag + ">";
    size_t a = out.find(open);
    size_t b = out.find(close);
    if (a != std::string::npos && b != std::string::npos && b > a) out.erase(a, b + close.size() - a);
  }
  st.Count();
  VolumeHandle copy(virStorageVolCreateXMLFrom(pool.get(), out.c_str(), source.get(), 0));
  if (!copy) ThrowLast("virStorageVolCreateXMLFrom");
  st.Count();
  char* path = virStorageVolGetPath(copy.get());
  if (path == nullptr) ThrowLast("virStorageVolGetPath");
  return Value::String(TakeString(path));
}

}  // namespace vg

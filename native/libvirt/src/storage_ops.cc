#include <libvirt/virterror.h>

#include <cstdlib>

#include "errors.h"
#include "ops.h"
#include "parallel.h"

namespace vg {

namespace {

Value PoolRecord(ConnState& st, virStoragePoolPtr pool) {
  char uuid[VIR_UUID_STRING_BUFLEN];
  Value rec = Value::Object();
  rec.Set("name", Value::String(virStoragePoolGetName(pool)));
  if (virStoragePoolGetUUIDString(pool, uuid) == 0) rec.Set("uuid", Value::String(uuid));

  virStoragePoolInfo info;
  st.Count();
  if (virStoragePoolGetInfo(pool, &info) < 0) ThrowLast("virStoragePoolGetInfo");
  rec.Set("state", Value::Number(info.state));
  rec.Set("capacity", Value::Number(static_cast<double>(info.capacity)));
  rec.Set("allocation", Value::Number(static_cast<double>(info.allocation)));
  rec.Set("available", Value::Number(static_cast<double>(info.available)));

  st.Count();
  int persistent = virStoragePoolIsPersistent(pool);
  if (persistent < 0) ThrowLast("virStoragePoolIsPersistent");
  rec.Set("persistent", Value::Bool(persistent == 1));
  int autostart = 0;
  st.Count();
  if (virStoragePoolGetAutostart(pool, &autostart) < 0) ThrowLast("virStoragePoolGetAutostart");
  rec.Set("autostart", Value::Bool(autostart == 1));
  st.Count();
  char* xml = virStoragePoolGetXMLDesc(pool, 0);
  if (xml == nullptr) ThrowLast("virStoragePoolGetXMLDesc");
  rec.Set("xml", Value::String(TakeString(xml)));
  return rec;
}

Value VolumesOf(ConnState& st, virStoragePoolPtr pool) {
  VolumeList list;
  st.Count();
  int n = virStoragePoolListAllVolumes(pool, &list.items, 0);
  if (n < 0) ThrowLast("virStoragePoolListAllVolumes");
  list.count = n;
  Value out = Value::ArrayOf(static_cast<size_t>(list.count));
  ParallelFor(static_cast<size_t>(list.count), [&](size_t i) {
    virStorageVolPtr vol = list.items[i];
    Value rec = Value::Object();
    rec.Set("name", Value::String(virStorageVolGetName(vol)));
    rec.Set("key", Value::String(virStorageVolGetKey(vol)));
    // The XML holds path, type, capacity and allocation: one call, not three.
    st.Count();
    char* xml = virStorageVolGetXMLDesc(vol, 0);
    if (xml == nullptr) ThrowLast("virStorageVolGetXMLDesc");
    rec.Set("xml", Value::String(TakeString(xml)));
    out.At(i) = std::move(rec);
  });
  return out;
}

}  // namespace

Value ListAllStoragePools(ConnState& st, unsigned int flags) {
  PoolList list;
  st.Count();
  int n = virConnectListAllStoragePools(st.conn(), &list.items, flags);
  if (n < 0) ThrowLast("virConnectListAllStoragePools");
  list.count = n;
  Value out = Value::Array();
  for (int i = 0; i < list.count; i++) out.Push(PoolRecord(st, list.items[i]));
  return out;
}

// One entry per requested pool: its volumes, or the error for that pool
// (an inactive pool cannot list volumes).
Value ListStorageVolumes(ConnState& st, const std::vector<std::string>& poolUuids) {
  Value out = Value::Array();
  for (const std::string& uuid : poolUuids) {
    st.Count();
    PoolHandle pool(virStoragePoolLookupByUUIDString(st.conn(), uuid.c_str()));
    if (!pool) {
      LibvirtFailure f = LastFailure("virStoragePoolLookupByUUIDString");
      out.Push(Value::Error(f.code, f.domain, f.message));
      continue;
    }
    try {
      out.Push(VolumesOf(st, pool.get()));
    } catch (const LibvirtException& e) {
      out.Push(Value::Error(e.failure().code, e.failure().domain, e.failure().message));
    }
  }
  return out;
}

}  // namespace vg

namespace vg {

// Creates a volume in a pool from its XML; resolves with the new volume's path.
Value CreateVolume(ConnState& st, const std::string& poolUuid, const std::string& xml) {
  st.Count();
  PoolHandle pool(virStoragePoolLookupByUUIDString(st.conn(), poolUuid.c_str()));
  if (!pool) ThrowLast("virStoragePoolLookupByUUIDString");
  st.Count();
  VolumeHandle vol(virStorageVolCreateXML(pool.get(), xml.c_str(), 0));
  if (!vol) ThrowLast("virStorageVolCreateXML");
  st.Count();
  char* path = virStorageVolGetPath(vol.get());
  if (path == nullptr) ThrowLast("virStorageVolGetPath");
  return Value::String(TakeString(path));
}

// Deletes the volume at a path (its data and its entry in its pool).
Value DeleteVolume(ConnState& st, const std::string& path) {
  st.Count();
  VolumeHandle vol(virStorageVolLookupByPath(st.conn(), path.c_str()));
  if (!vol) ThrowLast("virStorageVolLookupByPath");
  st.Count();
  if (virStorageVolDelete(vol.get(), 0) < 0) ThrowLast("virStorageVolDelete");
  return Value::Bool(true);
}

// Starts, stops or refreshes a pool: one libvirt call after the lookup.
Value PoolLifecycle(ConnState& st, const std::string& uuid, const std::string& op) {
  st.Count();
  PoolHandle pool(virStoragePoolLookupByUUIDString(st.conn(), uuid.c_str()));
  if (!pool) ThrowLast("virStoragePoolLookupByUUIDString");
  int rc;
  const char* call;
  st.Count();
  if (op == "create") {
    call = "virStoragePoolCreate";
    rc = virStoragePoolCreate(pool.get(), 0);
  } else if (op == "destroy") {
    call = "virStoragePoolDestroy";
    rc = virStoragePoolDestroy(pool.get());
  } else if (op == "refresh") {
    call = "virStoragePoolRefresh";
    rc = virStoragePoolRefresh(pool.get(), 0);
  } else {
    throw LibvirtException(LibvirtFailure{VIR_ERR_INVALID_ARG, VIR_FROM_STORAGE, "unknown pool operation '" + op + "'"});
  }
  if (rc < 0) ThrowLast(call);
  return Value::Bool(true);
}

}  // namespace vg

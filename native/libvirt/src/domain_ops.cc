#include <libvirt/virterror.h>

#include <cstdlib>
#include <functional>
#include <new>
#include <unordered_map>
#include <unordered_set>

#include "errors.h"
#include "ops.h"
#include "parallel.h"
#include "typed_params.h"

namespace vg {

// Up to this many UUIDs are looked up one by one; more are resolved with one
// listing, which costs one driver call (one RPC on remote URIs) whatever the
// number of domains, where lookups cost one each.
constexpr size_t kLookupLimit = 4;

// Resolves UUIDs to domains; a UUID with no domain maps to nullptr. Every
// pointer returned is owned by `list`.
std::vector<virDomainPtr> ResolveDomains(ConnState& st, DomainList& list,
                                         const std::vector<std::string>& uuids) {
  std::vector<virDomainPtr> out;
  out.reserve(uuids.size());
  if (uuids.size() <= kLookupLimit) {
    list.items = static_cast<virDomainPtr*>(calloc(uuids.size() + 1, sizeof(virDomainPtr)));
    if (list.items == nullptr) throw std::bad_alloc();
    for (const std::string& u : uuids) {
      st.Count();
      virDomainPtr dom = virDomainLookupByUUIDString(st.conn(), u.c_str());
      if (dom == nullptr) {
        LibvirtFailure f = LastFailure("virDomainLookupByUUIDString");
        if (f.code != VIR_ERR_NO_DOMAIN && f.code != VIR_ERR_INVALID_ARG) throw LibvirtException(f);
      } else {
        list.items[list.count++] = dom;
      }
      out.push_back(dom);
    }
    return out;
  }
  st.Count();
  int n = virConnectListAllDomains(st.conn(), &list.items, 0);
  if (n < 0) ThrowLast("virConnectListAllDomains");
  list.count = n;
  std::unordered_map<std::string, virDomainPtr> byUuid;
  char uuid[VIR_UUID_STRING_BUFLEN];
  for (int i = 0; i < list.count; i++) {
    if (virDomainGetUUIDString(list.items[i], uuid) == 0) byUuid.emplace(uuid, list.items[i]);
  }
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
  int n = virConnectListAllDomains(st.conn(), &list.items, flags);
  if (n < 0) ThrowLast("virConnectListAllDomains");
  list.count = n;
  Value out = Value::Array();
  for (int i = 0; i < list.count; i++) out.Push(DomainRef(list.items[i]));
  return out;
}

Value GetAllDomainStats(ConnState& st, unsigned int stats, unsigned int flags) {
  StatsRecords records;
  st.Count();
  int n = virConnectGetAllDomainStats(st.conn(), stats, records.out(), flags);
  if (n < 0) ThrowLast("virConnectGetAllDomainStats");
  Value out = Value::Array();
  for (int i = 0; i < n; i++) {
    Value rec = DomainRef(records[i]->dom);
    rec.Set("params", TypedParamsToValue(records[i]->params, records[i]->nparams));
    out.Push(std::move(rec));
  }
  return out;
}

Value GetDomainStats(ConnState& st, const std::vector<std::string>& uuids, unsigned int stats,
                     unsigned int flags) {
  DomainList list;
  std::vector<virDomainPtr> doms = ResolveDomains(st, list, uuids);
  // virDomainListGetStats wants a NULL-terminated array of distinct domains.
  std::vector<virDomainPtr> found;
  found.reserve(doms.size() + 1);
  std::unordered_set<virDomainPtr> seen;
  for (virDomainPtr dom : doms) {
    if (dom != nullptr && seen.insert(dom).second) found.push_back(dom);
  }
  found.push_back(nullptr);
  StatsRecords records;
  int n = 0;
  double at = NowMs();
  if (found.size() > 1) {
    double before = NowMs();
    st.Count();
    n = virDomainListGetStats(found.data(), stats, records.out(), flags);
    if (n < 0) ThrowLast("virDomainListGetStats");
    at = before + (NowMs() - before) / 2;
  }
  // Records come in the driver's order, each with a domain object of its own: matched by UUID.
  std::unordered_map<std::string, int> byUuid;
  char uuid[VIR_UUID_STRING_BUFLEN];
  for (int i = 0; i < n; i++) {
    if (virDomainGetUUIDString(records[i]->dom, uuid) == 0) byUuid.emplace(uuid, i);
  }
  Value out = Value::Object();
  out.Set("time", Value::Number(at));
  Value domains = Value::ArrayOf(uuids.size());
  for (size_t i = 0; i < uuids.size(); i++) {
    // By the domain's own UUID string: the one asked may be spelled otherwise (upper case, no dashes).
    auto it = byUuid.end();
    if (doms[i] != nullptr && virDomainGetUUIDString(doms[i], uuid) == 0) it = byUuid.find(uuid);
    if (it == byUuid.end()) {
      // Not found, or undefined between the lookup and the stats call (drivers skip those).
      domains.At(i) = NoDomainError(uuids[i]);
      continue;
    }
    virDomainStatsRecordPtr rec = records[it->second];
    Value entry = DomainRef(rec->dom);
    entry.Set("params", TypedParamsToValue(rec->params, rec->nparams));
    domains.At(i) = std::move(entry);
  }
  out.Set("domains", std::move(domains));
  return out;
}

Value SetMemoryStatsPeriod(ConnState& st, const std::vector<std::string>& uuids, int periodSeconds,
                           unsigned int flags) {
  return ForEachDomain(st, uuids, [&](virDomainPtr dom) {
    st.Count();
    if (virDomainSetMemoryStatsPeriod(dom, periodSeconds, flags) < 0) {
      ThrowLast("virDomainSetMemoryStatsPeriod");
    }
    return Value::Bool(true);
  });
}

Value LookupDomainByUuid(ConnState& st, const std::string& uuid) {
  st.Count();
  DomainHandle dom(virDomainLookupByUUIDString(st.conn(), uuid.c_str()));
  if (!dom) ThrowLast("virDomainLookupByUUIDString");
  return DomainRef(dom.get());
}

Value LookupDomainByName(ConnState& st, const std::string& name) {
  st.Count();
  DomainHandle dom(virDomainLookupByName(st.conn(), name.c_str()));
  if (!dom) ThrowLast("virDomainLookupByName");
  return DomainRef(dom.get());
}

Value ForEachDomain(ConnState& st, const std::vector<std::string>& uuids,
                    const std::function<Value(virDomainPtr)>& read) {
  DomainList list;
  std::vector<virDomainPtr> doms = ResolveDomains(st, list, uuids);
  Value out = Value::ArrayOf(uuids.size());
  ParallelFor(uuids.size(), [&](size_t i) {
    if (doms[i] == nullptr) {
      out.At(i) = NoDomainError(uuids[i]);
      return;
    }
    try {
      out.At(i) = read(doms[i]);
    } catch (const LibvirtException& e) {
      out.At(i) = Value::Error(e.failure().code, e.failure().domain, e.failure().message);
    }
  });
  return out;
}

// libvirt has no bulk XML call; this batch crosses into the addon once.
Value GetDomainXmlDescs(ConnState& st, const std::vector<std::string>& uuids, unsigned int flags) {
  return ForEachDomain(st, uuids, [&](virDomainPtr dom) {
    st.Count();
    char* xml = virDomainGetXMLDesc(dom, flags);
    if (xml == nullptr) ThrowLast("virDomainGetXMLDesc");
    return Value::String(TakeString(xml));
  });
}

namespace {

// One domain as the watch re-reads it after an event: what listVms,
// getVmDetails and getSnapshots give for it, from per-domain calls.
Value DomainRecord(ConnState& st, virDomainPtr dom) {
  Value rec = DomainRef(dom);
  int state = 0;
  int reason = 0;
  st.Count();
  if (virDomainGetState(dom, &state, &reason, 0) < 0) ThrowLast("virDomainGetState");
  rec.Set("state", Value::Number(state));
  rec.Set("reason", Value::Number(reason));
  st.Count();
  int persistent = virDomainIsPersistent(dom);
  if (persistent < 0) ThrowLast("virDomainIsPersistent");
  rec.Set("persistent", Value::Bool(persistent == 1));
  int autostart = 0;
  st.Count();
  if (virDomainGetAutostart(dom, &autostart) < 0) ThrowLast("virDomainGetAutostart");
  rec.Set("autostart", Value::Bool(autostart == 1));
  st.Count();
  char* xml = virDomainGetXMLDesc(dom, 0);
  if (xml == nullptr) ThrowLast("virDomainGetXMLDesc");
  rec.Set("xml", Value::String(TakeString(xml)));
  rec.Set("snapshots", SnapshotsOf(st, dom));
  return rec;
}

}  // namespace

Value ReadDomains(ConnState& st, const std::vector<std::string>& uuids) {
  DomainList list;
  std::vector<virDomainPtr> doms = ResolveDomains(st, list, uuids);
  Value out = Value::ArrayOf(uuids.size());
  ParallelFor(uuids.size(), [&](size_t i) {
    if (doms[i] == nullptr) return;  // gone: null
    try {
      out.At(i) = DomainRecord(st, doms[i]);
    } catch (const LibvirtException& e) {
      // Undefined between the lookup and the reads: gone too.
      if (e.failure().code == VIR_ERR_NO_DOMAIN) return;
      out.At(i) = Value::Error(e.failure().code, e.failure().domain, e.failure().message);
    }
  });
  return out;
}

}  // namespace vg

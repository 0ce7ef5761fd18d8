// Migration and the domain job it runs as: the migration itself (which
// blocks its worker thread until the job ends), and the calls another worker
// makes meanwhile to watch it (virDomainGetJobStats) or stop it
// (virDomainAbortJob). libvirt lets query and abort calls into a domain whose
// asynchronous migration job is running, so these never wait on it.
#include <libvirt/virterror.h>

#include <string>

#include "errors.h"
#include "ops.h"
#include "typed_params.h"

namespace vg {

namespace {

DomainHandle LookupDomain(ConnState& st, const std::string& uuid) {
  st.Count();
  DomainHandle dom(virDomainLookupByUUIDString(st.conn(), uuid.c_str()));
  if (!dom) ThrowLast("virDomainLookupByUUIDString");
  return dom;
}

// Typed parameters the caller builds (virTypedParamsAdd*), freed when the
// guard goes: after a failing call's error has been read (handles.h).
struct OwnedTypedParams {
  virTypedParameterPtr params = nullptr;
  int count = 0;
  int max = 0;
  OwnedTypedParams() = default;
  OwnedTypedParams(const OwnedTypedParams&) = delete;
  OwnedTypedParams& operator=(const OwnedTypedParams&) = delete;
  ~OwnedTypedParams() {
    if (params != nullptr) virTypedParamsFree(params, count);
  }
};

}  // namespace

// Peer-to-peer migration: the source's libvirt connects to destUri itself.
// The parameters are this migration's alone (virDomainMigrateSetMaxSpeed
// would stay on the domain for the migrations after it).
Value MigrateToUri(ConnState& st, const std::string& uuid, const std::string& destUri, unsigned int flags,
                   const MigrateParams& params) {
  DomainHandle dom = LookupDomain(st, uuid);
  OwnedTypedParams typed;
  if (params.bandwidthMiBps > 0 &&
      virTypedParamsAddULLong(&typed.params, &typed.count, &typed.max, VIR_MIGRATE_PARAM_BANDWIDTH,
                              params.bandwidthMiBps) < 0) {
    ThrowLast("virTypedParamsAddULLong");
  }
  st.Count();
  if (virDomainMigrateToURI3(dom.get(), destUri.c_str(), typed.params, typed.count, flags) < 0) {
    ThrowLast("virDomainMigrateToURI3");
  }
  return Value::Bool(true);
}

Value GetJobStats(ConnState& st, const std::string& uuid, unsigned int flags) {
  DomainHandle dom = LookupDomain(st, uuid);
  OwnedTypedParams stats;
  int type = VIR_DOMAIN_JOB_NONE;
  st.Count();
  if (virDomainGetJobStats(dom.get(), &type, &stats.params, &stats.count, flags) < 0) {
    ThrowLast("virDomainGetJobStats");
  }
  Value out = Value::Object();
  out.Set("type", Value::Number(type));
  out.Set("params", TypedParamsToValue(stats.params, stats.count));
  return out;
}

Value AbortJob(ConnState& st, const std::string& uuid) {
  DomainHandle dom = LookupDomain(st, uuid);
  st.Count();
  if (virDomainAbortJob(dom.get()) < 0) ThrowLast("virDomainAbortJob");
  return Value::Bool(true);
}

}  // namespace vg

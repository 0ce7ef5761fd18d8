#include "errors.h"

#include <libvirt/virterror.h>

namespace vg {

namespace {
void IgnoreError(void*, virErrorPtr) {}
}  // namespace

LibvirtFailure LastFailure(const char* call) {
  virErrorPtr err = virGetLastError();
  if (err == nullptr) {
    return LibvirtFailure{VIR_ERR_INTERNAL_ERROR, VIR_FROM_NONE,
                          std::string(call) + " failed without a libvirt error"};
  }
  LibvirtFailure failure{err->code, err->domain, err->message ? err->message : call};
  virResetLastError();
  return failure;
}

void ThrowLast(const char* call) { throw LibvirtException(LastFailure(call)); }

Napi::Error MakeJsError(Napi::Env env, const LibvirtFailure& failure) {
  Napi::Error error = Napi::Error::New(env, failure.message);
  error.Set("name", Napi::String::New(env, "LibvirtError"));
  error.Set("code", Napi::Number::New(env, failure.code));
  error.Set("domain", Napi::Number::New(env, failure.domain));
  return error;
}

void SilenceDefaultErrorHandler() { virSetErrorFunc(nullptr, IgnoreError); }

}  // namespace vg

// libvirt keeps its last error per thread, so an operation that fails on a
// worker thread reads the error on that same thread, straight after the call
// and before any other libvirt call: every public libvirt function, the
// *Free ones included, starts by clearing it (handles.h defers the frees).
#pragma once

#include <napi.h>

#include <libvirt/virterror.h>

#include <exception>
#include <optional>
#include <stdexcept>
#include <string>

namespace vg {

struct LibvirtFailure {
  int code;
  int domain;
  std::string message;
};

// Thrown inside worker operations; carried to JS as a rejected promise.
class LibvirtException : public std::runtime_error {
 public:
  explicit LibvirtException(LibvirtFailure failure)
      : std::runtime_error(failure.message), failure_(std::move(failure)) {}
  const LibvirtFailure& failure() const { return failure_; }

 private:
  LibvirtFailure failure_;
};

// Reads this thread's last libvirt error (or a generic one when libvirt set none).
LibvirtFailure LastFailure(const char* call);

// Throws LastFailure(call) as a LibvirtException.
[[noreturn]] void ThrowLast(const char* call);

// Runs a worker operation; what it throws becomes the failure its promise is
// rejected with, nothing when it succeeds. Never throws: worker threads must not.
template <typename Operation>
std::optional<LibvirtFailure> CaptureFailure(Operation&& operation) noexcept {
  try {
    operation();
    return std::nullopt;
  } catch (const LibvirtException& e) {
    return e.failure();
  } catch (const std::exception& e) {
    return LibvirtFailure{VIR_ERR_INTERNAL_ERROR, VIR_FROM_NONE, e.what()};
  } catch (...) {
    return LibvirtFailure{VIR_ERR_INTERNAL_ERROR, VIR_FROM_NONE, "unknown failure in the libvirt addon"};
  }
}

// A JS Error with `code`, `domain` and `codeName`, as the TS wrapper expects.
Napi::Error MakeJsError(Napi::Env env, const LibvirtFailure& failure);

// Stops libvirt from printing every error to stderr; errors reach JS instead.
void SilenceDefaultErrorHandler();

}  // namespace vg

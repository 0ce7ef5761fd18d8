// Runs the per-object reads of a bulk operation on a few threads. libvirt
// connections are thread-safe and the remote driver multiplexes concurrent
// calls over one socket, so N reads cost about N/threads round trips instead
// of N. libvirt's last error is per thread, which is what each body reads.
#pragma once

#include <libvirt/virterror.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace vg {

// Threads for one bulk operation. @default 8
constexpr size_t kBulkThreads = 8;
// Below this many objects per thread, extra threads cost more than they save.
constexpr size_t kMinPerThread = 16;

// Calls body(i) for every i in [0, n); the first exception is rethrown after
// all threads have finished.
template <typename Body>
void ParallelFor(size_t n, Body body) {
  size_t threads = std::min(kBulkThreads, (n + kMinPerThread - 1) / kMinPerThread);
  if (threads <= 1) {
    for (size_t i = 0; i < n; i++) body(i);
    return;
  }
  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  std::mutex failureLock;
  auto worker = [&] {
    virResetLastError();
    for (size_t i = next++; i < n; i = next++) {
      try {
        body(i);
      } catch (...) {
        std::lock_guard<std::mutex> guard(failureLock);
        if (!failure) failure = std::current_exception();
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (size_t t = 1; t < threads; t++) pool.emplace_back(worker);
  worker();
  for (std::thread& th : pool) th.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace vg

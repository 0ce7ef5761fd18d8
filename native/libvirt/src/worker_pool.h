// The addon's own threads for blocking libvirt calls.
//
// A libvirt call to a remote host holds its thread for a network round trip
// or more, so the calls cannot share libuv's pool: it has 4 threads unless
// UV_THREADPOOL_SIZE is set before the pool's first use, which an ES module
// cannot guarantee, and it also serves file I/O, DNS and crypto. This pool
// belongs to one Node environment (one per worker_thread), starts threads on
// demand up to its size, and hands each finished job back to the JS thread
// through a thread-safe function, which keeps the event loop alive only
// while a job is pending.
#pragma once

#include <napi.h>

#include <cstddef>
#include <memory>

namespace vg {

// One unit of work: Execute() on a pool thread, where N-API must not be
// touched, then Complete() on the JS thread of the environment that submitted
// it. A job whose environment is gone before it completes is destroyed
// without Complete(), on whichever thread holds it.
class Job {
 public:
  virtual ~Job() = default;
  virtual void Execute() noexcept = 0;
  virtual void Complete(Napi::Env env) = 0;
};

struct PoolState;

struct PoolStats {
  size_t size;     // most threads the pool will run
  size_t threads;  // threads started and not yet exited
  size_t busy;     // threads running a job
  size_t queued;   // jobs waiting for a thread
};

class WorkerPool {
 public:
  // Enough for a gateway's remote hosts to block on slow calls at once
  // without starving the others; threads are started only when needed.
  static constexpr size_t kDefaultSize = 16;
  static constexpr size_t kMaxSize = 1024;

  explicit WorkerPool(Napi::Env env);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // The rest is for the JS thread only.
  void Submit(Napi::Env env, std::unique_ptr<Job> job);
  // Growing starts threads for queued jobs at once; shrinking lets surplus
  // threads leave after their current job.
  void Resize(size_t size);
  PoolStats Stats() const;

 private:
  std::shared_ptr<PoolState> state_;
};

}  // namespace vg

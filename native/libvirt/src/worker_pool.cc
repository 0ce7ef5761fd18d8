#include "worker_pool.h"

#include <pthread.h>
#include <signal.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

namespace vg {

// Shared by the JS side and every pool thread. Threads are detached and hold
// a reference each, so neither the environment's teardown nor process exit
// ever waits for a libvirt call stuck on a host that stopped answering.
struct PoolState {
  std::mutex mu;
  std::condition_variable wake;
  std::deque<std::unique_ptr<Job>> queue;
  size_t size = WorkerPool::kDefaultSize;
  size_t threads = 0;
  size_t idle = 0;
  size_t busy = 0;
  // Set once the environment is torn down: from then on nothing is delivered
  // through tsfn (Node frees it right after its finalizer) and threads leave.
  bool closed = false;
  napi_threadsafe_function tsfn = nullptr;
  // Jobs submitted and not yet completed. JS thread only.
  size_t pending = 0;
};

namespace {

void Check(Napi::Env env, napi_status status, const char* what) {
  if (status != napi_ok) throw Napi::Error::New(env, std::string("libvirt worker pool: ") + what + " failed");
}

void RunThread(std::shared_ptr<PoolState> s) {
  // Named for ps, top and gdb (at most 15 characters).
  pthread_setname_np(pthread_self(), "virt-graph-lv");
  std::unique_lock<std::mutex> lock(s->mu);
  for (;;) {
    while (s->queue.empty() && !s->closed && s->threads <= s->size) {
      s->idle++;
      s->wake.wait(lock);
      s->idle--;
    }
    if (s->closed || s->threads > s->size) break;
    std::unique_ptr<Job> job = std::move(s->queue.front());
    s->queue.pop_front();
    s->busy++;
    lock.unlock();
    job->Execute();
    lock.lock();
    s->busy--;
    // Under the lock, so that the finalizer cannot free tsfn during the call.
    if (!s->closed && napi_call_threadsafe_function(s->tsfn, job.get(), napi_tsfn_nonblocking) == napi_ok) {
      job.release();
    } else {
      // Not delivered: destroyed here, outside the lock, since dropping the
      // last reference to a connection closes it over the network.
      lock.unlock();
      job.reset();
      lock.lock();
    }
  }
  s->threads--;
}

// Called with s->mu held. The new thread blocks every asynchronous signal so
// that SIGINT, SIGTERM or SIGCHLD reach Node's own threads and never
// interrupt a libvirt call waiting in poll().
bool StartThreadLocked(const std::shared_ptr<PoolState>& s) {
  sigset_t all;
  sigset_t previous;
  sigfillset(&all);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP}) sigdelset(&all, sig);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  bool started = true;
  s->threads++;
  try {
    std::thread(RunThread, s).detach();
  } catch (const std::system_error&) {
    s->threads--;
    started = false;
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return started;
}

// Starts threads for queued jobs no idle thread will take, within the size.
// Called with s->mu held; false when the system refused a thread.
bool StartThreadsLocked(const std::shared_ptr<PoolState>& s) {
  size_t uncovered = s->queue.size() > s->idle ? s->queue.size() - s->idle : 0;
  for (; uncovered > 0 && s->threads < s->size; uncovered--) {
    if (!StartThreadLocked(s)) return false;
  }
  return true;
}

// Runs on the JS thread, inside a handle scope Node opens. env is null when
// Node drains the queue at teardown; then only the job is freed.
void CallJs(napi_env env, napi_value, void* context, void* data) {
  std::unique_ptr<Job> job(static_cast<Job*>(data));
  if (env == nullptr) return;
  auto* s = static_cast<PoolState*>(context);
  if (--s->pending == 0) napi_unref_threadsafe_function(env, s->tsfn);
  // Nothing may propagate into Node from here. Complete() fails only when
  // N-API does, typically because a worker_thread is being terminated and
  // can run no JS; the error is rethrown where that is still possible.
  try {
    job->Complete(Napi::Env(env));
  } catch (const Napi::Error& e) {
    try {
      if (!e.IsEmpty()) napi_throw(env, e.Value());
    } catch (...) {
    }
  } catch (...) {
  }
}

void FinalizeTsfn(napi_env, void* data, void*) {
  std::unique_ptr<std::shared_ptr<PoolState>> holder(static_cast<std::shared_ptr<PoolState>*>(data));
  PoolState& s = **holder;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.closed = true;
    s.tsfn = nullptr;
  }
  s.wake.notify_all();
}

}  // namespace

WorkerPool::WorkerPool(Napi::Env env) : state_(std::make_shared<PoolState>()) {
  // The finalizer's reference keeps the state alive for CallJs until Node frees tsfn.
  auto* holder = new std::shared_ptr<PoolState>(state_);
  napi_status status =
      napi_create_threadsafe_function(env, nullptr, nullptr, Napi::String::New(env, "virt-graph:libvirt"), 0, 1,
                                      holder, FinalizeTsfn, state_.get(), CallJs, &state_->tsfn);
  if (status != napi_ok) delete holder;
  Check(env, status, "napi_create_threadsafe_function");
  // An idle pool must not keep the process alive; Submit refs it while jobs are pending.
  Check(env, napi_unref_threadsafe_function(env, state_->tsfn), "napi_unref_threadsafe_function");
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->closed = true;
  }
  state_->wake.notify_all();
}

void WorkerPool::Submit(Napi::Env env, std::unique_ptr<Job> job) {
  PoolState& s = *state_;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.queue.push_back(std::move(job));
    if (!StartThreadsLocked(state_) && s.threads == 0) {
      s.queue.pop_back();
      throw Napi::Error::New(env, "cannot start a thread for libvirt calls");
    }
  }
  s.wake.notify_one();
  if (s.pending++ == 0) Check(env, napi_ref_threadsafe_function(env, s.tsfn), "napi_ref_threadsafe_function");
}

void WorkerPool::Resize(size_t size) {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->size = size;
    StartThreadsLocked(state_);
  }
  state_->wake.notify_all();
}

PoolStats WorkerPool::Stats() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return PoolStats{state_->size, state_->threads, state_->busy, state_->queue.size()};
}

}  // namespace vg

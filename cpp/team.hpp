// rnnkit's own threads: a team that runs one sequence call together, with barriers between the
// phases of each time step.
//
// Why a team of our own: a time step is a short product followed by elementwise work, repeated
// T times; handing each phase to a pool (or to the BLAS's threads) costs a wake-up per phase.
// The team stays together for the whole sequence, each thread owning a slice of the recurrent
// weights (kept hot in its cache) and a slice of the batch rows, and meets the others at a
// spinning barrier. Between calls the workers sleep on a condition variable, so they never
// compete with NumPy's or the BLAS's threads for the cores. One call holds the team at a time;
// a concurrent call (from another Python thread) runs alone on its own thread, with bitwise the
// same results, because every output element is computed by the same code in the same order
// whatever the number of threads.
//
// Errors: kernels allocate before a run, not inside it, but should a thread of a run throw
// (std::bad_alloc included), the run is aborted: the other threads leave their barriers, and
// the first exception is rethrown to the caller (MemoryError for std::bad_alloc) once every
// thread has stopped. Nothing may escape a worker thread: that would terminate the process.
#pragma once

#include <pthread.h>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>
#include <vector>

#include "common.hpp"
#include "fp_env.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RNNKIT_PAUSE() _mm_pause()
#else
#define RNNKIT_PAUSE() std::this_thread::yield()
#endif

namespace rnnkit {

class Team;

// What one thread of a run sees: its index, the team size, and the barrier.
struct TeamContext {
  int tid = 0;
  int nthreads = 1;
  Team* team = nullptr;

  void barrier() const;

  // This thread's part [begin, end) of n items split into nthreads contiguous parts whose
  // boundaries are multiples of `align` (except n itself).
  std::pair<index_t, index_t> part(index_t n, index_t align = 1) const {
    const index_t blocks = (n + align - 1) / align;
    const index_t b0 = blocks * tid / nthreads, b1 = blocks * (tid + 1) / nthreads;
    return {std::min(n, b0 * align), std::min(n, b1 * align)};
  }
};

class Team {
 public:
  static Team& instance() {
    static Team* team = [] {
      Team* t = new Team();  // never destroyed: workers may be running at exit
      // A forked child (multiprocessing) has none of the parent's threads: start afresh
      // (fork_safety.hpp).
      pthread_atfork(nullptr, nullptr, [] { Team::instance().reset_after_fork(); });
      return t;
    }();
    return *team;
  }

  // The team serves one call at a time. A call first tries to reserve it (before it splits its
  // work among n threads); if another call holds it, the call runs on its own thread.
  std::unique_lock<std::mutex> try_reserve() {
    return std::unique_lock<std::mutex>(run_mutex_, std::try_to_lock);
  }

  // Runs fn on n threads, the caller being thread 0, and returns when all have finished. The
  // caller must hold the reservation.
  void run(int n, const std::function<void(const TeamContext&)>& fn) {
    if (n <= 1) {
      fn(TeamContext{0, 1, this});
      return;
    }
    ensure_workers(n - 1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &fn;
      job_threads_ = n;
      job_fp_control_ = read_fp_control();  // the workers compute under the caller's mode
      pending_ = n - 1;
      barrier_count_.store(0);
      ++generation_;
    }
    start_.notify_all();
    try {
      fn(TeamContext{0, n, this});
    } catch (...) {
      fail(std::current_exception());
    }
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
    std::exception_ptr error = std::move(error_);
    error_ = nullptr;
    aborted_.store(false);
    if (error) std::rethrow_exception(error);
  }

  // Barrier over the threads of the current run. Waiters spin briefly (the usual wait is well
  // under a microsecond), then sleep on a condition variable: on a busy machine a thread may
  // be descheduled, and a sleeping waiter frees its core for it instead of spinning against it.
  void barrier(int nthreads) {
    if (aborted_.load(std::memory_order_acquire)) throw Aborted();
    const std::uint32_t gen = barrier_gen_.load(std::memory_order_acquire);
    if (barrier_count_.fetch_add(1, std::memory_order_acq_rel) == nthreads - 1) {
      barrier_count_.store(0, std::memory_order_relaxed);
      {
        std::lock_guard<std::mutex> lock(barrier_mutex_);
        barrier_gen_.store(gen + 1, std::memory_order_release);
      }
      barrier_cv_.notify_all();
      return;
    }
    for (int spins = 0; spins < 2000; ++spins) {
      if (barrier_gen_.load(std::memory_order_acquire) != gen) return;
      if (aborted_.load(std::memory_order_acquire)) throw Aborted();
      RNNKIT_PAUSE();
    }
    std::unique_lock<std::mutex> lock(barrier_mutex_);
    barrier_cv_.wait(lock, [&] {
      return barrier_gen_.load(std::memory_order_acquire) != gen || aborted_.load(std::memory_order_acquire);
    });
    if (barrier_gen_.load(std::memory_order_acquire) == gen) throw Aborted();
  }

 private:
  Team() = default;

  // Thrown at a barrier of an aborted run, to unwind the threads still in it; never the error
  // reported.
  struct Aborted {};

  // Records a thread's exception (the first one wins) and aborts the run: the threads waiting
  // at a barrier leave it. Never throws.
  void fail(std::exception_ptr e) noexcept {
    bool aborted_by_us = false;
    try {
      std::rethrow_exception(e);
    } catch (const Aborted&) {
      aborted_by_us = true;  // a consequence of another thread's error, not an error
    } catch (...) {
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!aborted_by_us && !error_) error_ = e;
    }
    {
      std::lock_guard<std::mutex> lock(barrier_mutex_);
      aborted_.store(true, std::memory_order_release);
    }
    barrier_cv_.notify_all();
  }

  // In the child of a fork: the workers do not exist there, and a lock held by another
  // thread of the parent would never be released; rebuild the synchronisation objects.
  void reset_after_fork() {
    workers_.clear();
    new (&run_mutex_) std::mutex();
    new (&mutex_) std::mutex();
    new (&barrier_mutex_) std::mutex();
    new (&start_) std::condition_variable();
    new (&done_) std::condition_variable();
    new (&barrier_cv_) std::condition_variable();
    job_ = nullptr;
    job_threads_ = pending_ = 0;
    job_fp_control_ = 0;
    error_ = nullptr;
    aborted_.store(false);
    barrier_count_.store(0);
  }

  // A thread that cannot be started (its stack cannot be mapped: EAGAIN) is reported as
  // std::bad_alloc, i.e. MemoryError, like any other allocation that fails.
  void ensure_workers(int count) {
    while (int(workers_.size()) < count) {
      const int tid = int(workers_.size()) + 1;
      try {
        workers_.emplace_back([this, tid] { work(tid); });
      } catch (const std::system_error&) {
        throw std::bad_alloc();
      }
      workers_.back().detach();
    }
  }

  void work(int tid) {
    std::uint64_t seen = 0;
    for (;;) {
      const std::function<void(const TeamContext&)>* job;
      int n;
      std::uint64_t fp_control;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        start_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        job = job_;
        n = job_threads_;
        fp_control = job_fp_control_;
      }
      if (job && tid < n) {
        // An exception must not leave this thread (std::terminate): it goes to the caller.
        try {
          const FpControlScope fp(fp_control);
          (*job)(TeamContext{tid, n, this});
        } catch (...) {
          fail(std::current_exception());
        }
        std::lock_guard<std::mutex> lock(mutex_);
        if (--pending_ == 0) done_.notify_one();
      }
    }
  }

  std::mutex run_mutex_;  // one run at a time
  std::mutex mutex_;
  std::condition_variable start_, done_;
  const std::function<void(const TeamContext&)>* job_ = nullptr;
  int job_threads_ = 0;
  std::uint64_t job_fp_control_ = 0;
  int pending_ = 0;
  std::uint64_t generation_ = 0;
  std::vector<std::thread> workers_;
  std::mutex barrier_mutex_;
  std::condition_variable barrier_cv_;
  std::atomic<int> barrier_count_{0};
  std::atomic<std::uint32_t> barrier_gen_{0};
  std::exception_ptr error_;          // the run's first exception (under mutex_)
  std::atomic<bool> aborted_{false};  // a thread of the run has thrown
};

inline void TeamContext::barrier() const {
  if (nthreads > 1) team->barrier(nthreads);
}

}  // namespace rnnkit

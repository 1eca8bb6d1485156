// Stopping a long call early when Python has a signal pending (Ctrl-C).
//
// The kernels run with the GIL released, so Python's SIGINT handler only sets a flag that the
// interpreter looks at when it runs again: without polling, a 5-second call delays
// KeyboardInterrupt by up to 5 seconds. The loops (driver.hpp's time loops, the attention
// kernels' batch loops) call Interrupt::poll once per iteration on one thread; every
// kPollInterval it calls the hook the bindings installed (interrupt_python.hpp), which takes
// the GIL on Python's main thread (the only one that handles signals) and runs the pending
// signal handlers. If one raised, the loop stops early, the kernel returns, and the binding
// raises that exception once it holds the GIL again: outputs written halfway are dropped,
// never returned.
//
// This file knows nothing of Python: the hook is a plain function pointer, null (no polling)
// unless the bindings set it.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>

namespace rnnkit {

// Returns true if the call must stop (a Python exception is then pending on the calling thread).
using InterruptHook = bool (*)();

inline std::atomic<InterruptHook>& interrupt_hook() {
  static std::atomic<InterruptHook> hook{nullptr};
  return hook;
}

// Whether this thread is inside the hook (running Python signal handlers in the middle of a
// kernel call).
inline bool& in_interrupt_hook() {
  thread_local bool inside = false;
  return inside;
}

// One call's poller. poll() is called by one thread (the caller, thread 0 of a team run) once
// per loop iteration; requested() may be read by every thread of the run. In a team run the
// stop must be seen by all threads at the same step, or some would wait at a barrier for the
// others forever: thread 0 polls between two barriers of a step and every thread reads
// requested() at the top of the next step (after a barrier that follows the poll, before one
// that precedes thread 0's next poll).
class Interrupt {
 public:
  // Polls every 5 ms: Ctrl-C then takes effect within a few milliseconds (plus one step).
  static constexpr std::chrono::microseconds kPollInterval{5000};
  // The clock is read (about 25 ns) once per this many multiply-adds of work (about 15-30 us of
  // computing here), so a loop of tiny steps does not pay it per step.
  static constexpr double kWorkPerClockRead = double(1 << 18);

  // `work_per_iteration`: multiply-adds (or a like count) between two calls of poll(). Built at
  // the start of a kernel, before it takes any buffer: a signal handler that calls rnnkit while
  // a call on the same thread is polling gets an error instead of a run that would share (and
  // could reallocate) the interrupted call's per-thread scratch buffers.
  explicit Interrupt(double work_per_iteration)
      : hook_(interrupt_hook().load(std::memory_order_relaxed)),
        stride_(std::int64_t(std::max(1.0, kWorkPerClockRead / std::max(1.0, work_per_iteration)))),
        countdown_(stride_),
        next_(Clock::now() + kPollInterval) {
    if (in_interrupt_hook())
      throw std::runtime_error(
          "rnnkit was called from a signal handler that interrupted another rnnkit call on the same "
          "thread; call it after that call has returned");
  }

  void poll() {
    if (!hook_ || --countdown_ > 0) return;
    countdown_ = stride_;
    const Clock::time_point now = Clock::now();
    if (now < next_) return;
    in_interrupt_hook() = true;
    const bool stop = hook_();
    in_interrupt_hook() = false;
    // Taking the GIL waits while another Python thread runs (up to its switch interval, 5 ms):
    // the next poll then comes at least 50 times its cost later, which bounds the overhead at
    // 2% whatever the other threads do (and Ctrl-C still takes effect within ~0.25 s).
    const Clock::time_point after = Clock::now();
    next_ = after + std::max<Clock::duration>(kPollInterval, 50 * (after - now));
    if (stop) stop_.store(true, std::memory_order_relaxed);
  }

  bool requested() const { return stop_.load(std::memory_order_relaxed); }

  // Outside a team run, between long steps (whole-sequence products): polls if due, whatever
  // the stride; returns requested().
  bool poll_now() {
    countdown_ = 1;
    poll();
    return requested();
  }

 private:
  using Clock = std::chrono::steady_clock;
  InterruptHook hook_;
  std::int64_t stride_, countdown_;
  Clock::time_point next_;
  std::atomic<bool> stop_{false};
};

}  // namespace rnnkit

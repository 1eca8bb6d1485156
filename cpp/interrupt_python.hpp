// The Python side of interrupt.hpp: the hook that runs pending signal handlers from inside a
// kernel, and the check a binding makes once it holds the GIL again after the kernel.
#pragma once

#include <pthread.h>
#include <pybind11/pybind11.h>

#include <atomic>

#include "interrupt.hpp"

namespace rnnkit {

namespace detail {

// Python's main thread, the only one whose PyErr_CheckSignals runs handlers. Read from
// threading at import; in a forked child the forking thread becomes the main thread.
inline std::atomic<unsigned long>& python_main_thread() {
  static std::atomic<unsigned long> ident{0};
  return ident;
}

inline bool check_python_signals() {
  // Another thread would take the GIL for nothing (Python ignores signals there).
  if (PyThread_get_thread_ident() != python_main_thread().load(std::memory_order_relaxed)) return false;
  const PyGILState_STATE gil = PyGILState_Ensure();
  // Runs the handlers of pending signals; -1 when one raised (KeyboardInterrupt for Ctrl-C),
  // whose exception stays set on this thread until the binding raises it.
  const bool raised = PyErr_CheckSignals() != 0;
  PyGILState_Release(gil);
  return raised;
}

}  // namespace detail

// After a kernel, with the GIL held again: raise what a signal handler raised during it (the
// kernel stopped early, so its outputs must not be returned).
inline void raise_if_interrupted() {
  if (PyErr_Occurred()) throw pybind11::error_already_set();
}

// Installs the hook; called once at module import. Private binding `_set_interrupt_polling`
// turns polling off and on (tests, and measuring its cost).
inline void bind_interrupt(pybind11::module_& m) {
  detail::python_main_thread() =
      pybind11::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  pthread_atfork(nullptr, nullptr, [] { detail::python_main_thread() = PyThread_get_thread_ident(); });
  interrupt_hook() = &detail::check_python_signals;
  m.def(
      "_set_interrupt_polling",
      [](bool enabled) { interrupt_hook() = enabled ? &detail::check_python_signals : nullptr; },
      pybind11::arg("enabled"));
  m.def("_get_interrupt_polling", [] { return interrupt_hook().load() != nullptr; });
}

}  // namespace rnnkit

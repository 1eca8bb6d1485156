// Small definitions shared by the kernels.
#pragma once

#include <cstddef>

namespace rnnkit {

using index_t = std::ptrdiff_t;

// Hot elementwise loops are compiled for three ISA levels and picked at load time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(RNNKIT_NO_CLONES)
#define RNNKIT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RNNKIT_CLONES
#endif

// Elementwise code must be inlined into the target-cloned loops that call it, so that it is
// compiled (and vectorised) for each clone's ISA rather than once for the baseline.
#define RNNKIT_INLINE __attribute__((always_inline)) inline

// p + n, or null when p is null (arithmetic on a null pointer is undefined).
template <class T>
inline T* offset(T* p, index_t n) {
  return p ? p + n : nullptr;
}

}  // namespace rnnkit

// Raw memory for rnnkit's long-lived buffers: the block cache (memory.hpp) and the scratch pool
// (pooled_buffer.hpp).
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>

namespace rnnkit {

// Large blocks (kLargeBytes and up) are mapped from the OS directly and unmapped when freed.
// Why: through malloc, blocks of a few MiB land on the heap once glibc's mmap threshold has
// risen (it follows the largest block freed, up to 32 MiB), and freed heap memory stays
// resident: 60 training steps of different lengths kept 633 MiB after every array was gone.
constexpr std::size_t kLargeBytes = std::size_t(1) << 20;

// Null when the memory cannot be had. 64-byte aligned (page aligned when large).
inline void* allocate_block(std::size_t bytes) noexcept {
  if (bytes < kLargeBytes) return std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

inline void free_block(void* p, std::size_t bytes) noexcept {
  if (!p) return;
  if (bytes < kLargeBytes)
    std::free(p);
  else
    munmap(p, bytes);
}

}  // namespace rnnkit

// Subnormal numbers flushed to zero for the duration of every kernel call.
//
// Why: an x86 core takes a microcode assist for an arithmetic operation whose input or result is
// subnormal, about a hundred times the cost of the operation. Vanishing gradients are exactly
// such numbers: a vanilla RNN's backward at T=100, B=64, I=2, H=64 took 26.9 ms with W_hh of
// scale 0.3 against 2.6 ms at scale 1. With flushing on, subnormal inputs read as zero (DAZ)
// and subnormal results are written as zero (FTZ), as in torch.set_flush_denormal(True).
//
// The setting is the process's (rnnkit.set_flush_denormal), on by default. A kernel call sets
// it in the calling thread's control register on entry and restores the caller's register on
// exit; rnnkit's team threads run each job under the register of the call that started it
// (team.hpp), so a user's own floating-point mode is never changed behind their back.
#pragma once

#include <atomic>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace rnnkit {

inline std::atomic<bool>& flush_denormal_setting() {
  static std::atomic<bool> enabled{true};
  return enabled;
}

// The calling thread's floating-point control register: MXCSR on x86, FPCR on AArch64.
inline std::uint64_t read_fp_control() {
#if defined(__x86_64__) || defined(__i386__)
  return _mm_getcsr();
#elif defined(__aarch64__)
  std::uint64_t fpcr;
  __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
  return fpcr;
#else
  return 0;
#endif
}

inline void write_fp_control(std::uint64_t value) {
#if defined(__x86_64__) || defined(__i386__)
  _mm_setcsr(unsigned(value));
#elif defined(__aarch64__)
  __asm__ volatile("msr fpcr, %0" : : "r"(value));
#else
  (void)value;
#endif
}

// The control register's flush bits: FTZ (bit 15) and DAZ (bit 6) of MXCSR; FZ (bit 24) of FPCR.
inline constexpr std::uint64_t kFlushBits =
#if defined(__x86_64__) || defined(__i386__)
    0x8040;
#elif defined(__aarch64__)
    std::uint64_t(1) << 24;
#else
    0;
#endif

// Sticky exception flags that share the register (MXCSR bits 0-5); NumPy clears them at will,
// so comparisons of the mode leave them out. FPCR holds none (they are in FPSR).
inline constexpr std::uint64_t kFpStatusBits =
#if defined(__x86_64__) || defined(__i386__)
    0x3F;
#else
    0;
#endif

// Whether this build can flush subnormals at all (x86 and AArch64).
inline constexpr bool kCanFlushDenormal = kFlushBits != 0;

// Sets the thread's control register to `value` for its lifetime, then restores the old one.
class FpControlScope {
 public:
  explicit FpControlScope(std::uint64_t value) : saved_(read_fp_control()) {
    if (value != saved_) write_fp_control(value);
  }
  ~FpControlScope() {
    if (read_fp_control() != saved_) write_fp_control(saved_);
  }
  FpControlScope(const FpControlScope&) = delete;
  FpControlScope& operator=(const FpControlScope&) = delete;

 private:
  std::uint64_t saved_;
};

// The register a kernel call runs under: the caller's, with the flush bits set when the
// process's setting is on.
inline std::uint64_t kernel_fp_control() {
  const std::uint64_t caller = read_fp_control();
  return flush_denormal_setting().load(std::memory_order_relaxed) ? caller | kFlushBits : caller;
}

// One kernel call's floating-point environment (see the top of this file).
struct KernelFpScope : FpControlScope {
  KernelFpScope() : FpControlScope(kernel_fp_control()) {}
};

}  // namespace rnnkit

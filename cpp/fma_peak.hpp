// The machine's arithmetic ceiling, measured: multiply-adds per second of one thread when
// nothing but independent FMAs on registers run. The benchmark prints it so that its GFLOP/s
// can be read against what the core can do at all (not only against another GEMM).
#pragma once

#include <algorithm>
#include <chrono>

#include "common.hpp"
#include "simd.hpp"

namespace rnnkit {

// GFLOP/s (2 flops per multiply-add) of 12 independent chains of vector FMAs, the best of a
// few runs of about `seconds` / 5 each. Twelve chains cover the FMA latency times the number
// of FMA units of current x86 and ARM cores.
template <int W, class T>
RNNKIT_INLINE double fma_peak_gflops_w(double seconds) {
  using Vec = typename Simd<T, W>::Vec;
  constexpr int kChains = 12, L = Simd<T, W>::kLanes;
  constexpr long kInner = 1 << 14;
  Vec acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = Vec{} + T(c);
  Vec a = Vec{} + T(0.999999), b = Vec{} + T(1e-7);
  double best = 0;
  for (int run = 0; run < 5; ++run) {
    const auto start = std::chrono::steady_clock::now();
    long iterations = 0;
    double elapsed = 0;
    do {
      for (long i = 0; i < kInner; ++i)
        for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * a + b;
      // Opaque to the optimiser, so the chains are neither hoisted nor folded away.
      __asm__ volatile("" : "+m"(acc), "+m"(a), "+m"(b));
      iterations += kInner;
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    } while (elapsed < seconds / 5);
    best = std::max(best, 2.0 * kChains * L * double(iterations) / elapsed / 1e9);
  }
  return best;
}

// With the vectors the kernels use (vector_bytes()).
template <class T>
double fma_peak_gflops(double seconds) {
  double gflops = 0;
  with_vectors(vector_bytes(), [&](auto bytes) RNNKIT_KERNEL {
    gflops = fma_peak_gflops_w<decltype(bytes)::value, T>(seconds);
  });
  return gflops;
}

}  // namespace rnnkit

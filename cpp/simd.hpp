// SIMD helpers shared by the kernels: a vector of W bytes of T as a GCC vector extension, the
// run-time choice of W (and of the instruction set the code using it is compiled for), unaligned
// loads and stores, and an L x L transpose in registers.
//
// Why the width is a template parameter and not one 64-byte type compiled for every ISA: GCC
// keeps a vector wider than the target's registers in memory. On an AVX2-only core (AMD EPYC
// Zen 3) the 64-byte kernels compiled for AVX2 ran at 3.5 GFLOP/s per core, the same code with
// 32-byte vectors at 99.6 (12 independent FMA chains), and a (200, 64, 16, 256) LSTM forward
// took 2.5 s.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <utility>

#include "common.hpp"
#include "cpu_info.hpp"

namespace rnnkit {

// W bytes of T: L = W / sizeof(T) lanes.
template <class T, int W>
struct Simd {
  static constexpr int kLanes = W / int(sizeof(T));
  typedef T Vec __attribute__((vector_size(W)));
};

// The width as a type, the argument a kernel body receives from with_vectors.
template <int W>
using VectorBytes = std::integral_constant<int, W>;

// Vector widths the build can dispatch to: on x86-64 with GCC, 64 (AVX-512, x86-64-v4), 32
// (AVX2 + FMA, x86-64-v3) and 16 (SSE2); elsewhere only the width of the compiler's target.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(RNNKIT_NO_CLONES)
#define RNNKIT_VECTOR_DISPATCH 1
#elif defined(__AVX512F__)
constexpr int kTargetVectorBytes = 64;
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kTargetVectorBytes = 32;
#else
constexpr int kTargetVectorBytes = 16;
#endif

// The widest vectors this CPU runs (and the OS saves).
inline int cpu_vector_bytes() {
#ifdef RNNKIT_VECTOR_DISPATCH
  static const int bytes = __builtin_cpu_supports("x86-64-v4") && cpu_info().avx512f                  ? 64
                           : __builtin_cpu_supports("x86-64-v3") && cpu_info().avx2 && cpu_info().fma ? 32
                                                                                                      : 16;
  return bytes;
#else
  return kTargetVectorBytes;
#endif
}

// Whether with_vectors runs code of this width here: every width up to the CPU's where the build
// dispatches, else only the compiler target's.
inline bool runs_vector_bytes(int bytes) {
#ifdef RNNKIT_VECTOR_DISPATCH
  return (bytes == 16 || bytes == 32 || bytes == 64) && bytes <= cpu_vector_bytes();
#else
  return bytes == kTargetVectorBytes;
#endif
}

// 0: the CPU's widest; else a narrower width to use instead (set through a private binding, so
// that the tests run every width's code on the CPU they have).
inline std::atomic<int>& vector_bytes_override() {
  static std::atomic<int> bytes{0};
  return bytes;
}

// The vector width the kernels use now.
inline int vector_bytes() {
  const int forced = vector_bytes_override().load(std::memory_order_relaxed);
  return forced ? forced : cpu_vector_bytes();
}

// A kernel body is a lambda marked RNNKIT_KERNEL taking VectorBytes<W>: inlined into the
// function with_vectors picks, it is compiled for that function's instruction set.
#define RNNKIT_KERNEL __attribute__((always_inline))

#ifdef RNNKIT_VECTOR_DISPATCH
template <class Kernel>
__attribute__((target("arch=x86-64-v4"))) void run_with_64_byte_vectors(Kernel& kernel) {
  kernel(VectorBytes<64>{});
}
template <class Kernel>
__attribute__((target("arch=x86-64-v3"))) void run_with_32_byte_vectors(Kernel& kernel) {
  kernel(VectorBytes<32>{});
}
template <class Kernel>
void run_with_16_byte_vectors(Kernel& kernel) {
  kernel(VectorBytes<16>{});
}
#endif

// Runs kernel(VectorBytes<bytes>{}) compiled for the instruction set of that width. `bytes`
// is vector_bytes() or a width recorded with data laid out for it (PackedPanels).
template <class Kernel>
void with_vectors(int bytes, Kernel&& kernel) {
#ifdef RNNKIT_VECTOR_DISPATCH
  if (bytes == 64) return run_with_64_byte_vectors(kernel);
  if (bytes == 32) return run_with_32_byte_vectors(kernel);
  run_with_16_byte_vectors(kernel);
#else
  (void)bytes;
  kernel(VectorBytes<kTargetVectorBytes>{});
#endif
}

template <class V, class T>
RNNKIT_INLINE V load_vec(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <class V, class T>
RNNKIT_INLINE void store_vec(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

#if defined(__GNUC__) && !defined(__clang__)
// An L x L transpose in registers (L = lanes of one vector): log2(L) butterfly stages; at stage
// s, rows i and i+s (i without bit s) swap their s-lane blocks. The lane masks are constants.
template <class T, int W>
struct LaneMask {
  typedef int type __attribute__((vector_size(W)));
};
template <int W>
struct LaneMask<double, W> {
  typedef long long type __attribute__((vector_size(W)));
};

// Lane l of the new row i (low) or i+s (high), indexing the pair (row i: 0..L-1, row i+s: L..2L-1).
constexpr int butterfly_lane(int L, int s, bool high, int l) {
  if (!high) return (l & s) ? L + l - s : l;
  return (l & s) ? L + l : l + s;
}
template <class T, int W, int S, bool High, std::size_t... P>
constexpr typename LaneMask<T, W>::type butterfly_mask(std::index_sequence<P...>) {
  return typename LaneMask<T, W>::type{butterfly_lane(Simd<T, W>::kLanes, S, High, int(P))...};
}
template <class T, int W, int S, bool High>
constexpr typename LaneMask<T, W>::type kButterfly =
    butterfly_mask<T, W, S, High>(std::make_index_sequence<Simd<T, W>::kLanes>());

template <class T, int W, int S = 1, class Vec>
RNNKIT_INLINE void butterfly_stages(Vec* r) {
  if constexpr (S < Simd<T, W>::kLanes) {
    for (int i = 0; i < Simd<T, W>::kLanes; ++i) {
      if (i & S) continue;
      const Vec low = __builtin_shuffle(r[i], r[i + S], kButterfly<T, W, S, false>);
      const Vec high = __builtin_shuffle(r[i], r[i + S], kButterfly<T, W, S, true>);
      r[i] = low;
      r[i + S] = high;
    }
    butterfly_stages<T, W, 2 * S>(r);
  }
}
#endif

// dst (L, L; rows ldd apart) = transpose of src (L, L; rows lds apart). __builtin_shuffle is
// GCC's; other compilers get the plain loop.
template <int W, class T>
RNNKIT_INLINE void transpose_block(const T* src, index_t lds, T* dst, index_t ldd) {
  constexpr int L = Simd<T, W>::kLanes;
#if defined(__GNUC__) && !defined(__clang__)
  using Vec = typename Simd<T, W>::Vec;
  Vec r[L];
  for (int i = 0; i < L; ++i) r[i] = load_vec<Vec>(src + i * lds);
  butterfly_stages<T, W>(r);
  for (int i = 0; i < L; ++i) store_vec(dst + i * ldd, r[i]);
#else
  for (int i = 0; i < L; ++i)
    for (int j = 0; j < L; ++j) dst[j * ldd + i] = src[i * lds + j];
#endif
}

}  // namespace rnnkit

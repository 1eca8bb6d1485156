// SIMD helpers shared by the kernels: one 512-bit vector of T as a GCC vector extension (so the
// same source compiles to AVX-512, AVX2 or SSE code in each target clone), unaligned loads and
// stores, and an L x L transpose in registers.
#pragma once

#include <cstddef>
#include <cstring>
#include <utility>

#include "common.hpp"

namespace rnnkit {

template <class T>
struct SimdTraits {
  static constexpr int kLanes = 64 / sizeof(T);  // one 512-bit register's worth
  typedef T Vec __attribute__((vector_size(64)));
};

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
template <class T>
struct LaneMask {
  typedef int type __attribute__((vector_size(64)));
};
template <>
struct LaneMask<double> {
  typedef long long type __attribute__((vector_size(64)));
};

// Lane l of the new row i (low) or i+s (high), indexing the pair (row i: 0..L-1, row i+s: L..2L-1).
constexpr int butterfly_lane(int L, int s, bool high, int l) {
  if (!high) return (l & s) ? L + l - s : l;
  return (l & s) ? L + l : l + s;
}
template <class T, int S, bool High, std::size_t... P>
constexpr typename LaneMask<T>::type butterfly_mask(std::index_sequence<P...>) {
  return typename LaneMask<T>::type{butterfly_lane(SimdTraits<T>::kLanes, S, High, int(P))...};
}
template <class T, int S, bool High>
constexpr typename LaneMask<T>::type kButterfly =
    butterfly_mask<T, S, High>(std::make_index_sequence<SimdTraits<T>::kLanes>());

template <class T, int S = 1, class Vec>
RNNKIT_INLINE void butterfly_stages(Vec* r) {
  if constexpr (S < SimdTraits<T>::kLanes) {
    for (int i = 0; i < SimdTraits<T>::kLanes; ++i) {
      if (i & S) continue;
      const Vec low = __builtin_shuffle(r[i], r[i + S], kButterfly<T, S, false>);
      const Vec high = __builtin_shuffle(r[i], r[i + S], kButterfly<T, S, true>);
      r[i] = low;
      r[i + S] = high;
    }
    butterfly_stages<T, 2 * S>(r);
  }
}
#endif

// dst (L, L; rows ldd apart) = transpose of src (L, L; rows lds apart). __builtin_shuffle is
// GCC's; other compilers get the plain loop.
template <class T>
RNNKIT_INLINE void transpose_block(const T* src, index_t lds, T* dst, index_t ldd) {
  constexpr int L = SimdTraits<T>::kLanes;
#if defined(__GNUC__) && !defined(__clang__)
  using Vec = typename SimdTraits<T>::Vec;
  Vec r[L];
  for (int i = 0; i < L; ++i) r[i] = load_vec<Vec>(src + i * lds);
  butterfly_stages<T>(r);
  for (int i = 0; i < L; ++i) store_vec(dst + i * ldd, r[i]);
#else
  for (int i = 0; i < L; ++i)
    for (int j = 0; j < L; ++j) dst[j * ldd + i] = src[i * lds + j];
#endif
}

}  // namespace rnnkit

// A register-blocked GEMM for the recurrent step at small batch: C (n, N) = A (n, K) @ Bk (K, N)
// (+ beta * C), every matrix row-major with a leading dimension.
//
// Why: at batch 1..8 a BLAS call per time step spends most of its time packing the weight
// matrix and on call overhead; the product itself is a few microseconds. Here the weights are
// read straight from a (K, N) layout that the driver prepares once per sequence (and that stays
// in cache across steps), and each K step updates a tile of rows x 2 vectors held in registers.
// GCC vector extensions give SIMD code at every ISA level of the target clones.
#pragma once

#include <cstddef>
#include <cstring>

#include "common.hpp"

namespace rnnkit {

template <class T>
struct SimdTraits {
  static constexpr int kLanes = 64 / sizeof(T);  // one 512-bit register's worth
  typedef T Vec __attribute__((vector_size(64)));
};

template <class V, class T>
inline V load_vec(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <class V, class T>
inline void store_vec(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// Rows i0..i0+R-1, columns j0..j0+2*L-1 (L lanes), full tile.
template <int R, class T>
inline void small_gemm_tile(index_t i0, index_t j0, index_t K, const T* A, index_t lda, const T* Bk,
                            index_t ldb, T beta, T* C, index_t ldc) {
  using Vec = typename SimdTraits<T>::Vec;
  constexpr int L = SimdTraits<T>::kLanes;
  Vec acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) {
    acc0[r] = Vec{} ;
    acc1[r] = Vec{};
    if (beta != T(0)) {
      acc0[r] = beta * load_vec<Vec>(C + (i0 + r) * ldc + j0);
      acc1[r] = beta * load_vec<Vec>(C + (i0 + r) * ldc + j0 + L);
    }
  }
  for (index_t k = 0; k < K; ++k) {
    const Vec b0 = load_vec<Vec>(Bk + k * ldb + j0);
    const Vec b1 = load_vec<Vec>(Bk + k * ldb + j0 + L);
    for (int r = 0; r < R; ++r) {
      const T a = A[(i0 + r) * lda + k];
      acc0[r] += a * b0;
      acc1[r] += a * b1;
    }
  }
  for (int r = 0; r < R; ++r) {
    store_vec(C + (i0 + r) * ldc + j0, acc0[r]);
    store_vec(C + (i0 + r) * ldc + j0 + L, acc1[r]);
  }
}

template <class T>
RNNKIT_CLONES void small_gemm(index_t n, index_t N, index_t K, const T* A, index_t lda, const T* Bk,
                              index_t ldb, T beta, T* C, index_t ldc) {
  constexpr int L = SimdTraits<T>::kLanes;
  const index_t N_full = N - N % (2 * L);
  for (index_t j0 = 0; j0 < N_full; j0 += 2 * L) {
    index_t i = 0;
    for (; i + 4 <= n; i += 4) small_gemm_tile<4>(i, j0, K, A, lda, Bk, ldb, beta, C, ldc);
    for (; i < n; ++i) small_gemm_tile<1>(i, j0, K, A, lda, Bk, ldb, beta, C, ldc);
  }
  if (N_full == N) return;
  // Remaining columns (fewer than two vectors): plain loops, vectorised by the compiler.
  for (index_t i = 0; i < n; ++i) {
    T* c = C + i * ldc;
    for (index_t j = N_full; j < N; ++j) c[j] = beta == T(0) ? T(0) : beta * c[j];
    for (index_t k = 0; k < K; ++k) {
      const T a = A[i * lda + k];
      const T* b = Bk + k * ldb;
      for (index_t j = N_full; j < N; ++j) c[j] += a * b[j];
    }
  }
}

}  // namespace rnnkit

// The one place that names the BLAS. Everything else calls rnnkit::gemm, so swapping the
// backend is a change to this file only. Backend: scipy-openblas32 (symbols carry `scipy_`).
#pragma once

#include <cblas.h>

#include <cstddef>

namespace rnnkit {

// C = beta * C, the whole GEMM when K == 0 (BLAS builds differ on accepting K == 0).
template <class T>
inline void scale_matrix(int M, int N, T beta, T* C, int ldc) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) C[std::size_t(i) * ldc + j] = beta == T(0) ? T(0) : beta * C[std::size_t(i) * ldc + j];
}

// Row-major C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C, with leading dimensions.
// Empty problems are handled here, since some BLAS builds reject M, N or K equal to 0.
inline void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                 int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_matrix(M, N, beta, C, ldc);
  scipy_cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C,
                    ldc);
}

inline void gemm(bool trans_a, bool trans_b, int M, int N, int K, double alpha, const double* A,
                 int lda, const double* B, int ldb, double beta, double* C, int ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_matrix(M, N, beta, C, ldc);
  scipy_cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C,
                    ldc);
}

inline void blas_set_num_threads(int n) { scipy_openblas_set_num_threads(n); }
inline int blas_get_num_threads() { return scipy_openblas_get_num_threads(); }

}  // namespace rnnkit

// The one place that names the BLAS. Everything else calls rnnkit::gemm, so swapping the
// backend is a change to this file only. Backend: scipy-openblas32 (symbols carry `scipy_`).
#pragma once

#include <cblas.h>

#include <pthread.h>

#include <cstddef>
#include <mutex>

namespace rnnkit {

// C = beta * C, the whole GEMM when K == 0 (BLAS builds differ on accepting K == 0).
template <class T>
inline void scale_matrix(int M, int N, T beta, T* C, int ldc) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j)
      C[std::size_t(i) * ldc + j] = beta == T(0) ? T(0) : beta * C[std::size_t(i) * ldc + j];
}

inline void blas_set_num_threads(int n) { scipy_openblas_set_num_threads(n); }
inline int blas_get_num_threads() { return scipy_openblas_get_num_threads(); }

// Small products run on one BLAS thread: waking the pool's sleeping workers costs more than they
// save below about 8M multiply-adds. The BLAS has no per-call thread count, so the pool is set
// to one thread while any such product runs and restored after the last one (a large product
// running at the same moment in another thread may then use one thread: slower, never wrong).
class SerialBlas {
 public:
  SerialBlas() {
    std::lock_guard<std::mutex> lock(mutex());
    settle_after_fork();
    if (depth()++ == 0) {
      saved() = blas_get_num_threads();
      if (saved() > 1) blas_set_num_threads(1);
    }
  }
  ~SerialBlas() {
    std::lock_guard<std::mutex> lock(mutex());
    if (--depth() == 0 && saved() > 1) blas_set_num_threads(saved());
  }
  static constexpr double kMaxWork = double(1 << 23);  // multiply-adds
  static bool wanted(int M, int N, int K) { return double(M) * N * K < kMaxWork; }
  // Sets the pool's size; while small products run, it takes effect when the last one ends.
  static void set_threads(int n) {
    std::lock_guard<std::mutex> lock(mutex());
    settle_after_fork();
    if (depth() > 0)
      saved() = n;
    else
      blas_set_num_threads(n);
  }
  // The thread count the user configured, also while a small product has lowered it.
  static int configured_threads() {
    std::lock_guard<std::mutex> lock(mutex());
    settle_after_fork();
    return depth() > 0 ? saved() : blas_get_num_threads();
  }

 private:
  static std::mutex& mutex() {
    static std::mutex m;
    // Held across fork (fork_safety.hpp). The child has no thread inside a small product: the
    // count those lowered goes back to the configured one at the child's next use (not in the
    // handler itself, which must not start the BLAS's threads).
    static const bool registered = [] {
      pthread_atfork([] { m.lock(); }, [] { m.unlock(); },
                     [] {
                       restore_after_fork() = depth() > 0 && saved() > 1;
                       depth() = 0;
                       m.unlock();
                     });
      return true;
    }();
    (void)registered;
    return m;
  }
  static bool& restore_after_fork() {
    static bool r = false;
    return r;
  }
  static void settle_after_fork() {
    if (!restore_after_fork()) return;
    restore_after_fork() = false;
    blas_set_num_threads(saved());
  }
  static int& depth() {
    static int d = 0;
    return d;
  }
  static int& saved() {
    static int s = 1;
    return s;
  }
};

// The backend's GEMM for each precision (row-major, both operands optionally transposed).
inline void blas_gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                      const float* B, int ldb, float beta, float* C, int ldc) {
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K,
                    alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void blas_gemm(bool ta, bool tb, int M, int N, int K, double alpha, const double* A, int lda,
                      const double* B, int ldb, double beta, double* C, int ldc) {
  scipy_cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K,
                    alpha, A, lda, B, ldb, beta, C, ldc);
}

// Row-major C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C, with leading dimensions.
// Empty problems are handled here, since some BLAS builds reject M, N or K equal to 0.
template <class T>
void gemm(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A, int lda, const T* B, int ldb,
          T beta, T* C, int ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_matrix(M, N, beta, C, ldc);
  if (SerialBlas::wanted(M, N, K)) {
    SerialBlas serial;
    return blas_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  blas_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace rnnkit

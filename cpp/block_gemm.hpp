// rnnkit's GEMM for two of the driver's whole-sequence products, the forward's input projection
// X W_ih^T and the backward's dx = dG W_ih: C (M, N) = A (M, K) @ op(B) (K, N), op(B) = B or
// B^T, all row-major, C overwritten.
//
// Why not the BLAS: on the per-step kernel's register tiles (small_gemm.hpp) these products ran
// 4-11% faster than OpenBLAS's sgemm on the benchmark's shapes (e.g. 105 vs 96 GFLOP/s at
// 6400 x 512 x 512, one thread), and OpenBLAS first zeroes C. (The weight gradients dG^T X,
// whose A is transposed, stay with the BLAS: there this kernel was not faster.)
//
// Blocking: K in blocks of kKc; for each block the columns of op(B) are packed into panels two
// vectors wide (PackedPanels), then rows of A are taken kMc at a time, panel by panel, so that
// one panel (kKc x 2 vectors, 64 KiB in float) and the kMc rows of A (256 KiB) stay in L2 while
// the tiles run over them.
//
// Threads: each thread of a team run computes its own columns of C (parts aligned to whole
// panels) from its own panels; no barrier. A column's arithmetic (tile shape, order of the K
// blocks and of k within them) does not depend on the number of threads, so results are
// bitwise the same at any thread count.
#pragma once

#include <algorithm>
#include <vector>

#include "common.hpp"
#include "small_gemm.hpp"
#include "team.hpp"

namespace rnnkit {

// C rows [0, M) (+)= A (M, P.K) @ P, rows in blocks of mc, each block panel by panel.
// Row tiles of `tile_rows` (8 or 4), leftover rows one at a time.
template <class T>
void block_gemm_rows(index_t M, index_t mc, int tile_rows, const T* A, index_t lda, const PackedPanels<T>& P,
                     T beta, T* C, index_t ldc) {
  with_vectors(P.vector_bytes, [&](auto bytes) RNNKIT_KERNEL {
    constexpr int W = decltype(bytes)::value;
    for (index_t i0 = 0; i0 < M; i0 += mc) {
      const index_t i1 = std::min(M, i0 + mc);
      for (index_t j0 = 0; j0 < P.N; j0 += P.width) {
        index_t i = i0;
        if (tile_rows == 8)
          for (; i + 8 <= i1; i += 8) small_gemm_panel<W, 8, 2>(i, j0, A, lda, P, beta, C, ldc);
        for (; i + 4 <= i1; i += 4) small_gemm_panel<W, 4, 2>(i, j0, A, lda, P, beta, C, ldc);
        for (; i < i1; ++i) small_gemm_panel<W, 1, 2>(i, j0, A, lda, P, beta, C, ldc);
      }
    }
  });
}

template <class T>
struct BlockGemm {
  static constexpr index_t kKc = 512;       // K block
  static constexpr index_t kMc = 128;       // rows of A per block
  static constexpr index_t kPanelRows = 4;  // batch size whose panel width is two vectors

  bool trans_b;
  index_t M, N, K;
  const T* A;
  index_t lda;
  const T* B;  // op(B) = B (K, N) or B^T with B (N, K)
  index_t ldb;
  T* C;
  index_t ldc;
  int tile_rows;                        // 8 or 4 (PackedKernelChoice::tile_rows)
  std::vector<PackedPanels<T>> panels;  // per thread: its columns of one K block of op(B)

  static index_t panel_width() { return PackedPanels<T>::width_for(kPanelRows); }

  // Sizes every thread's panels before the run, so that an allocation failure is reported on
  // the calling thread.
  void prepare(int nthreads) {
    panels.resize(std::size_t(nthreads));
    for (int t = 0; t < nthreads; ++t) {
      const auto [c0, c1] = TeamContext{t, nthreads, nullptr}.part(N, panel_width());
      if (c1 > c0) panels[std::size_t(t)].allocate(std::min(K, kKc), c1 - c0, kPanelRows);
    }
  }

  // This thread's columns of C.
  void run(const TeamContext& ctx) {
    const auto [c0, c1] = ctx.part(N, panel_width());
    if (c1 <= c0) return;
    PackedPanels<T>& P = panels[std::size_t(ctx.tid)];
    for (index_t k0 = 0; k0 < K; k0 += kKc) {
      // Rows [k0, k0 + kc) of op(B): columns of B for B^T, rows of B otherwise.
      P.K = std::min(kKc, K - k0);
      P.N = c1 - c0;
      P.fill(trans_b ? B + k0 : B + k0 * ldb, ldb, trans_b, c0);
      block_gemm_rows(M, kMc, tile_rows, A + k0, lda, P, k0 == 0 ? T(0) : T(1), C + c0, ldc);
    }
  }
};

}  // namespace rnnkit

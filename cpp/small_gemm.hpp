// A register-blocked GEMM for the recurrent step at small batch: C (n, N) = A (n, K) @ M (K, N)
// (+ beta * C), A and C row-major with leading dimensions, M packed (PackedPanels).
//
// Why: at batch 1..8 a BLAS call per time step spends most of its time packing the weight
// matrix and on call overhead; the product itself is a few microseconds. Here the weights are
// packed once per sequence into column panels whose K rows are contiguous, so a tile streams
// its panel front to back (and the panels stay in cache across steps), and each k updates a
// tile of R rows x V vectors held in registers. The vectors are as wide as the CPU's (simd.hpp:
// 64 bytes with AVX-512, 32 with AVX2, 16 otherwise), and the panels are laid out for that width.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <utility>

#include "common.hpp"
#include "pooled_buffer.hpp"
#include "simd.hpp"

namespace rnnkit {

// panel (K, w) = transpose of rows (w, K; rows ldw apart): L x L blocks are transposed in
// registers (the scalar transpose this replaces took 20 us of a 250 us batch-1 LSTM call), the
// edges one by one.
template <int W, class T>
RNNKIT_INLINE void transpose_into_panel(const T* rows, index_t ldw, index_t K, index_t w, T* panel) {
  constexpr index_t L = Simd<T, W>::kLanes;
  index_t jb = 0;
  for (; jb + L <= w; jb += L) {
    index_t k = 0;
    for (; k + L <= K; k += L) transpose_block<W>(rows + jb * ldw + k, ldw, panel + k * w + jb, w);
    for (; k < K; ++k)
      for (index_t j = 0; j < L; ++j) panel[k * w + jb + j] = rows[(jb + j) * ldw + k];
  }
  for (; jb < w; ++jb)
    for (index_t k = 0; k < K; ++k) panel[k * w + jb] = rows[jb * ldw + k];
}

// M (K, N) as panels of `width` columns (a multiple of the vector length): panel p holds columns
// [p*width, (p+1)*width) as K contiguous rows of `width`; the last panel holds what is left
// (narrower). The width matches the tile: 8 accumulators are R rows x V vectors, so a batch of
// one uses 8-vector panels and a batch of four or more 2-vector panels. The vector length is
// the one in use when the panels are sized (vector_bytes()), and the kernels reading them use it.
template <class T>
struct PackedPanels {
  index_t K = 0, N = 0, width = 0;
  int vector_bytes = 0;  // the width of the vectors the panels are laid out for
  PooledBuffer<T> data;  // kept between calls (pooled_buffer.hpp)

  // The panel width for a batch of this many rows (8 accumulators = rows x vectors).
  static index_t width_for(index_t batch, int bytes = rnnkit::vector_bytes()) {
    return (batch >= 4 ? 2 : batch >= 2 ? 4 : 8) * index_t(bytes / int(sizeof(T)));
  }

  // Sizes the storage for K x N (done by the caller, so an allocation failure is reported).
  void allocate(index_t K_, index_t N_, index_t batch) {
    K = K_;
    N = N_;
    vector_bytes = rnnkit::vector_bytes();
    width = width_for(batch, vector_bytes);
    data.resize(std::size_t(K * N));
  }

  // Fills in columns [col0, col0 + N) of M = W^T (transposed) or M = W, W row-major with
  // leading dimension ldw. Run by the thread that will use the panels, so they land in its
  // cache.
  void fill(const T* W, index_t ldw, bool transposed, index_t col0) {
    if (!transposed) {
      for (index_t j0 = 0; j0 < N; j0 += width) {
        const index_t w = std::min(width, N - j0);
        T* panel = data.data() + j0 * K;
        for (index_t k = 0; k < K; ++k) std::copy_n(W + k * ldw + col0 + j0, w, panel + k * w);
      }
      return;
    }
    with_vectors(vector_bytes, [&](auto bytes) RNNKIT_KERNEL {
      for (index_t j0 = 0; j0 < N; j0 += width)
        transpose_into_panel<decltype(bytes)::value>(W + (col0 + j0) * ldw, ldw, K, std::min(width, N - j0),
                                                     data.data() + j0 * K);
    });
  }
};

// C[i0 : i0+R, j0 : j0+V*L] (+)= A[i0 : i0+R, :] @ panel, where `panel` points at column j0 of a
// panel whose rows are `stride` apart. R*V accumulators stay in registers.
template <int W, int R, int V, class T>
RNNKIT_INLINE void small_gemm_tile(index_t i0, index_t j0, index_t K, const T* A, index_t lda, const T* panel,
                                   index_t stride, T beta, T* C, index_t ldc) {
  using Vec = typename Simd<T, W>::Vec;
  constexpr int L = Simd<T, W>::kLanes;
  Vec acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      acc[r][v] = beta == T(0) ? Vec{} : beta * load_vec<Vec>(C + (i0 + r) * ldc + j0 + v * L);
  for (index_t k = 0; k < K; ++k) {
    const T* row = panel + k * stride;
    Vec b[V];
    for (int v = 0; v < V; ++v) b[v] = load_vec<Vec>(row + v * L);
    for (int r = 0; r < R; ++r) {
      const T a = A[(i0 + r) * lda + k];
      for (int v = 0; v < V; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) store_vec(C + (i0 + r) * ldc + j0 + v * L, acc[r][v]);
}

// Rows [i0, i0 + R) times the panel at column j0 of M: a full panel by V-vector tiles; the last,
// narrower panel one vector at a time and its last columns (fewer than one vector) by a plain loop.
template <int W, int R, int V, class T>
RNNKIT_INLINE void small_gemm_panel(index_t i0, index_t j0, const T* A, index_t lda, const PackedPanels<T>& M,
                                    T beta, T* C, index_t ldc) {
  constexpr int L = Simd<T, W>::kLanes;
  const index_t K = M.K, w = std::min<index_t>(V * L, M.N - j0);  // this panel's width
  const T* panel = M.data.data() + j0 * K;
  if (w == V * L) return small_gemm_tile<W, R, V>(i0, j0, K, A, lda, panel, w, beta, C, ldc);
  index_t j = 0;
  for (; j + L <= w; j += L) small_gemm_tile<W, R, 1>(i0, j0 + j, K, A, lda, panel + j, w, beta, C, ldc);
  if (j == w) return;
  for (index_t i = i0; i < i0 + R; ++i) {
    T* c = C + i * ldc + j0;
    for (index_t jj = j; jj < w; ++jj) c[jj] = beta == T(0) ? T(0) : beta * c[jj];
    for (index_t k = 0; k < K; ++k) {
      const T a = A[i * lda + k];
      for (index_t jj = j; jj < w; ++jj) c[jj] += a * panel[k * w + jj];
    }
  }
}

// How the packed kernel walks a product. Every choice computes each element of C with the same
// operations in the same order (one FMA chain over k), so all give bitwise the same result;
// they differ only in speed, which depends on the processor (cpu_info.hpp, packed_choice()).
struct PackedKernelChoice {
  // Rows of a register tile on two-vector panels: 4 (8 accumulators) or 8 (16). A core with two
  // FMA units and a 4-cycle latency needs 8 FMAs in flight just to stay busy; 16 accumulators
  // also halve how often the weights are streamed per step. Needs 32 vector registers.
  int tile_rows = 4;
  // Panel by panel, all row groups of a panel before the next (each panel read from memory once
  // per product), instead of row group by row group over all panels (the weights read once per
  // row group): the former when the packed weights do not fit the core's L2.
  bool panel_major = false;
};

// Rows [i0, i0 + R) times the panel at j0, R chosen at run time (8 or 4 on two-vector panels,
// 2 on four-vector panels, else 1).
template <int W, int V, class T>
RNNKIT_INLINE void small_gemm_group(int R, index_t i0, index_t j0, const T* A, index_t lda,
                                    const PackedPanels<T>& M, T beta, T* C, index_t ldc) {
  if constexpr (V == 2) {
    if (R == 8) return small_gemm_panel<W, 8, 2>(i0, j0, A, lda, M, beta, C, ldc);
    if (R == 4) return small_gemm_panel<W, 4, 2>(i0, j0, A, lda, M, beta, C, ldc);
  }
  if constexpr (V <= 4) {
    if (R == 2) return small_gemm_panel<W, 2, V>(i0, j0, A, lda, M, beta, C, ldc);
  }
  small_gemm_panel<W, 1, V>(i0, j0, A, lda, M, beta, C, ldc);
}

// The row groups of n rows: full tiles of R rows, then (each pass over the rows left streams all
// of M again) the rest in as few groups as possible.
inline int next_group(index_t left, int R) {
  for (int r = R; r > 1; r /= 2)
    if (left >= r) return r;
  return 1;
}

template <int W, int V, class T>
RNNKIT_INLINE void small_gemm_v(index_t n, const T* A, index_t lda, const PackedPanels<T>& M, T beta, T* C,
                                index_t ldc, const PackedKernelChoice& choice) {
  const int R = V == 2 ? choice.tile_rows : 8 / V;
  if (!choice.panel_major) {
    for (index_t i = 0; i < n;) {
      const int r = next_group(n - i, R);
      for (index_t j0 = 0; j0 < M.N; j0 += M.width) small_gemm_group<W, V>(r, i, j0, A, lda, M, beta, C, ldc);
      i += r;
    }
    return;
  }
  for (index_t j0 = 0; j0 < M.N; j0 += M.width) {
    for (index_t i = 0; i < n;) {
      const int r = next_group(n - i, R);
      small_gemm_group<W, V>(r, i, j0, A, lda, M, beta, C, ldc);
      i += r;
    }
  }
}

// C (n, M.N) = A (n, M.K) @ M (+ beta C).
template <class T>
void small_gemm(index_t n, const T* A, index_t lda, const PackedPanels<T>& M, T beta, T* C, index_t ldc,
                const PackedKernelChoice& choice) {
  with_vectors(M.vector_bytes, [&](auto bytes) RNNKIT_KERNEL {
    constexpr int W = decltype(bytes)::value;
    switch (M.width / Simd<T, W>::kLanes) {
      case 8:
        return small_gemm_v<W, 8>(n, A, lda, M, beta, C, ldc, choice);
      case 4:
        return small_gemm_v<W, 4>(n, A, lda, M, beta, C, ldc, choice);
      default:
        return small_gemm_v<W, 2>(n, A, lda, M, beta, C, ldc, choice);
    }
  });
}

}  // namespace rnnkit

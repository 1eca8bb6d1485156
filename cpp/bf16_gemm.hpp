// The products of precision="bf16": C (n, N) (+)= bf16(A) (n, K) @ bf16(M) (K, N), the inputs
// rounded to bfloat16 (round to nearest even), the products summed in float32 ("bf32" in other
// libraries). Everything else (the cells, the states, the outputs) stays float32.
//
// Why: a product of two bfloat16 numbers is exact in float32, and the x86 dot-product
// instructions do more of them per instruction than an FMA: VDPBF16PS (AVX512-BF16) 32
// multiply-adds where an FMA does 16, TDPBF16PS (AMX) a 16 x 32 by 32 x 16 tile product; the
// weights take half the bytes (a larger W_hh stays in L2). Whether that is faster depends on
// the core: on the Intel Xeon with AMX measured in bench/RESULTS.md VDPBF16PS issues at a
// quarter of the FMA rate (half the float32 multiply-adds per second) and only AMX gains;
// AMD documents Zen 4's at the FMA rate.
//
// Layout: both instructions take M as pairs of rows, k = 2kk and 2kk+1, side by side: one 32-bit
// lane of M's packed row kk holds (bf16 M[2kk][j], bf16 M[2kk+1][j]) (low half: even k), and A
// as the same pairs along its rows, which is simply A's row in bfloat16. So one packing serves
// both kernels: PairPanels, panels of `width` columns of such pair rows, their K/2 rounded up to
// a multiple of 16 with zero pairs (a whole number of AMX tiles deep).
//
// Kernels (chosen at run time from CPUID, forced by a private binding for the tests):
//   amx          AMX tiles for the blocks of 16 rows x 16 columns, 2 x 2 tiles (32 x 32 of C)
//                at a time; rows and columns left over (fewer than 16) on avx512_bf16.
//   avx512_bf16  register tiles of R rows x V vectors as in small_gemm.hpp, VDPBF16PS.
// Each element of C is one chain over k whose order depends only on the kernel and on which
// block of 16 the element's row and column fall in: not on the thread count.
//
// Rounding: VDPBF16PS and TDPBF16PS treat subnormal bfloat16 inputs as zero, so the rounding
// here flushes subnormal floats to (signed) zero too, and rnnkit.reference does the same.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.hpp"
#include "cpu_info.hpp"
#include "pooled_buffer.hpp"
#include "simd.hpp"
#include "small_gemm.hpp"
#include "team.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define RNNKIT_HAVE_BF16_KERNELS 1
#define RNNKIT_BF16_TARGET __attribute__((target("arch=x86-64-v4,avx512bf16")))
#define RNNKIT_AMX_TARGET __attribute__((target("arch=x86-64-v4,avx512bf16,amx-tile,amx-bf16")))
#endif

namespace rnnkit {

using bf16_pair = std::uint32_t;  // two bfloat16: low half the even k, high half the odd k

// float -> bfloat16, round to nearest even; NaN stays a (quiet) NaN; subnormals -> signed zero.
inline std::uint16_t to_bf16(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) == 0) return std::uint16_t((u & 0x80000000u) >> 16);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return std::uint16_t((u >> 16) | 0x40);
  u += 0x7FFFu + ((u >> 16) & 1);
  return std::uint16_t(u >> 16);
}

// The float a bfloat16 stands for (exact).
inline float from_bf16(std::uint16_t b) {
  const std::uint32_t u = std::uint32_t(b) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// to_bf16 lane by lane on the bits u of floats (a vector of W bytes of uint32). (W, not the
// vector type, is the template parameter: GCC drops a vector type's attribute in deduction.)
template <int W, class U = typename Simd<std::uint32_t, W>::Vec>
RNNKIT_INLINE U bf16_bits(U u) {
  const U exponent = u & 0x7F800000u, magnitude = u & 0x7FFFFFFFu;
  const U rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  U r = magnitude > 0x7F800000u ? (u >> 16) | 0x40u : rounded;
  return exponent == 0u ? (u & 0x80000000u) >> 16 : r;
}

// out[0, n) = to_bf16(a[0, n)), in vectors of the CPU's width.
template <int W>
RNNKIT_INLINE void to_bf16_vec(const float* a, index_t n, std::uint16_t* out) {
  using U = typename Simd<std::uint32_t, W>::Vec;
  using H = typename Simd<std::uint16_t, W / 2>::Vec;
  constexpr index_t L = W / 4;
  index_t i = 0;
  for (; i + L <= n; i += L) store_vec(out + i, __builtin_convertvector(bf16_bits<W>(load_vec<U>(a + i)), H));
  for (; i < n; ++i) out[i] = to_bf16(a[i]);
}

// out[0, n) = the floats of to_bf16(a[0, n)) (out may be a).
inline void round_to_bf16(const float* a, index_t n, float* out) {
  with_vectors(vector_bytes(), [&](auto bytes) RNNKIT_KERNEL {
    constexpr int W = decltype(bytes)::value;
    using U = typename Simd<std::uint32_t, W>::Vec;
    constexpr index_t L = W / 4;
    index_t i = 0;
    for (; i + L <= n; i += L) store_vec(out + i, bf16_bits<W>(load_vec<U>(a + i)) << 16);
    for (; i < n; ++i) out[i] = from_bf16(to_bf16(a[i]));
  });
}

// Rows of A (n, K; rows lda apart) as pair rows of K2p >= K/2 pairs (zeros past K), ld2 apart.
inline void to_bf16_pair_rows(index_t n, index_t K, const float* A, index_t lda, index_t K2p, bf16_pair* out,
                              index_t ld2) {
  with_vectors(vector_bytes(), [&](auto bytes) RNNKIT_KERNEL {
    for (index_t i = 0; i < n; ++i) {
      auto* row = reinterpret_cast<std::uint16_t*>(out + i * ld2);
      to_bf16_vec<decltype(bytes)::value>(A + i * lda, K, row);
      std::fill(row + K, row + 2 * K2p, std::uint16_t(0));
    }
  });
}

// out[0, n) = to_bf16(a[0, n)).
inline void to_bf16_row(const float* a, index_t n, std::uint16_t* out) {
  with_vectors(vector_bytes(),
               [&](auto bytes) RNNKIT_KERNEL { to_bf16_vec<decltype(bytes)::value>(a, n, out); });
}

// Which kernel runs the bf16 products.
enum class Bf16Kernel { kNone, kAvx512Bf16, kAmx };

inline const char* bf16_kernel_name(Bf16Kernel k) {
  return k == Bf16Kernel::kAmx ? "amx" : k == Bf16Kernel::kAvx512Bf16 ? "avx512_bf16" : "none";
}

// Linux lets a process use AMX's tile data only after asking (arch_prctl ARCH_REQ_XCOMP_PERM
// for XFEATURE_XTILEDATA); asked once, for the whole process.
inline bool amx_permitted() {
#ifdef RNNKIT_HAVE_BF16_KERNELS
  static const bool ok = [] {
    if (!cpu_info().amx_bf16 || !cpu_info().avx512_bf16) return false;
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
#else
  return false;
#endif
}

// The best kernel this CPU runs.
inline Bf16Kernel cpu_bf16_kernel() {
#ifdef RNNKIT_HAVE_BF16_KERNELS
  if (amx_permitted()) return Bf16Kernel::kAmx;
  if (cpu_info().avx512_bf16) return Bf16Kernel::kAvx512Bf16;
#endif
  return Bf16Kernel::kNone;
}

inline bool runs_bf16_kernel(Bf16Kernel k) {
  if (k == Bf16Kernel::kNone) return false;
  const Bf16Kernel best = cpu_bf16_kernel();
  return k == Bf16Kernel::kAmx ? best == Bf16Kernel::kAmx : best != Bf16Kernel::kNone;
}

// kNone: the CPU's best; else a kernel forced (private binding) so the tests run each one.
inline std::atomic<int>& bf16_kernel_override() {
  static std::atomic<int> k{int(Bf16Kernel::kNone)};
  return k;
}

inline Bf16Kernel bf16_kernel() {
  const auto forced = Bf16Kernel(bf16_kernel_override().load(std::memory_order_relaxed));
  return forced != Bf16Kernel::kNone ? forced : cpu_bf16_kernel();
}

// M (K, N) as pair panels (see the top of the file): panel p holds columns [p*width, ...) as
// K2p rows of `width` pairs (the last panel narrower).
struct PairPanels {
  static constexpr index_t kDepth = 16;  // K2p is a multiple of this (AMX tile rows)
  index_t K = 0, K2p = 0, N = 0, width = 0;
  PooledBuffer<bf16_pair> data;
  PooledBuffer<bf16_pair> row_pairs;  // one panel's rows of W in pairs, while transposing

  static index_t pairs_for(index_t K) { return (K / 2 + K % 2 + kDepth - 1) / kDepth * kDepth; }
  // Panel width for a batch: as PackedPanels with 64-byte vectors of 16 pairs.
  static index_t width_for(index_t batch) { return (batch >= 4 ? 2 : batch >= 2 ? 4 : 8) * 16; }

  void allocate(index_t K_, index_t N_, index_t batch) {
    K = K_;
    K2p = pairs_for(K);
    N = N_;
    width = width_for(batch);
    data.resize(std::size_t(K2p * N));
    row_pairs.resize(std::size_t(K2p * width));
  }

  // Fills in columns [col0, col0 + N) of M = W^T (transposed) or M = W, W (., ldw) row-major.
  void fill(const float* W, index_t ldw, bool transposed, index_t col0) {
    for (index_t j0 = 0; j0 < N; j0 += width) {
      const index_t w = std::min(width, N - j0);
      bf16_pair* panel = data.data() + j0 * K2p;
      if (transposed) {  // column j of M is row j of W: its pairs, then transposed in registers
        to_bf16_pair_rows(w, K, W + (col0 + j0) * ldw, ldw, K2p, row_pairs.data(), K2p);
        with_vectors(vector_bytes(), [&](auto bytes) RNNKIT_KERNEL {
          transpose_into_panel<decltype(bytes)::value>(row_pairs.data(), K2p, K2p, w, panel);
        });
        continue;
      }
      // Pair row kk interleaves rows 2kk and 2kk+1 of W.
      auto* lo = reinterpret_cast<std::uint16_t*>(row_pairs.data());
      std::uint16_t* hi = lo + w;
      for (index_t kk = 0; kk < K2p; ++kk) {
        const index_t k = 2 * kk;
        if (k < K)
          to_bf16_row(W + k * ldw + col0 + j0, w, lo);
        else
          std::fill_n(lo, w, std::uint16_t(0));
        if (k + 1 < K)
          to_bf16_row(W + (k + 1) * ldw + col0 + j0, w, hi);
        else
          std::fill_n(hi, w, std::uint16_t(0));
        bf16_pair* out = panel + kk * w;
        for (index_t j = 0; j < w; ++j) out[j] = bf16_pair(lo[j]) | (bf16_pair(hi[j]) << 16);
      }
    }
  }
};

#ifdef RNNKIT_HAVE_BF16_KERNELS
// C[i0 : i0+R, j0 : j0+16V] (+)= A2 rows @ panel (rows `stride` apart), on VDPBF16PS; the last
// vector's columns masked by `last` (all 16 where the tile is whole).
template <int R, int V>
RNNKIT_BF16_TARGET RNNKIT_INLINE void dpbf16_tile(index_t i0, index_t j0, index_t K2, const bf16_pair* A2,
                                                  index_t lda2, const bf16_pair* panel, index_t stride,
                                                  float beta, float* C, index_t ldc, __mmask16 last) {
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) {
      const __mmask16 m = v == V - 1 ? last : __mmask16(0xFFFF);
      acc[r][v] = beta == 0.0f ? _mm512_setzero_ps()
                               : _mm512_mul_ps(_mm512_set1_ps(beta),
                                               _mm512_maskz_loadu_ps(m, C + (i0 + r) * ldc + j0 + 16 * v));
    }
  for (index_t kk = 0; kk < K2; ++kk) {
    __m512i b[V];
    for (int v = 0; v < V; ++v) {
      const __mmask16 m = v == V - 1 ? last : __mmask16(0xFFFF);
      b[v] = _mm512_maskz_loadu_epi32(m, panel + kk * stride + 16 * v);
    }
    for (int r = 0; r < R; ++r) {
      const __m512i a = _mm512_set1_epi32(int(A2[(i0 + r) * lda2 + kk]));
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)a, (__m512bh)b[v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) {
      const __mmask16 m = v == V - 1 ? last : __mmask16(0xFFFF);
      _mm512_mask_storeu_ps(C + (i0 + r) * ldc + j0 + 16 * v, m, acc[r][v]);
    }
}

// Rows [i0, i0 + R) times the panel at j0 (width w): a whole tile of V vectors where the panel
// is full, else vector by vector, the last one masked.
template <int R, int V>
RNNKIT_BF16_TARGET RNNKIT_INLINE void dpbf16_panel(index_t i0, index_t j0, const bf16_pair* A2, index_t lda2,
                                                   const PairPanels& M, float beta, float* C, index_t ldc) {
  const index_t w = std::min<index_t>(M.width, M.N - j0), K2 = (M.K + 1) / 2;
  const bf16_pair* panel = M.data.data() + j0 * M.K2p;
  if (w == 16 * V) return dpbf16_tile<R, V>(i0, j0, K2, A2, lda2, panel, w, beta, C, ldc, __mmask16(0xFFFF));
  for (index_t j = 0; j < w; j += 16) {
    const index_t left = std::min<index_t>(16, w - j);
    dpbf16_tile<R, 1>(i0, j0 + j, K2, A2, lda2, panel + j, w, beta, C, ldc, __mmask16((1u << left) - 1));
  }
}

template <int V>
RNNKIT_BF16_TARGET RNNKIT_INLINE void dpbf16_group(int R, index_t i0, index_t j0, const bf16_pair* A2,
                                                   index_t lda2, const PairPanels& M, float beta, float* C,
                                                   index_t ldc) {
  if constexpr (V == 2) {
    if (R == 8) return dpbf16_panel<8, 2>(i0, j0, A2, lda2, M, beta, C, ldc);
    if (R == 4) return dpbf16_panel<4, 2>(i0, j0, A2, lda2, M, beta, C, ldc);
  }
  if constexpr (V <= 4) {
    if (R == 2) return dpbf16_panel<2, V>(i0, j0, A2, lda2, M, beta, C, ldc);
  }
  dpbf16_panel<1, V>(i0, j0, A2, lda2, M, beta, C, ldc);
}

// Rows [i0, i1) x all columns, row group by row group (each group streams all the panels, as
// small_gemm_v's default walk).
template <int V>
RNNKIT_BF16_TARGET void dpbf16_rows(index_t i0, index_t i1, const bf16_pair* A2, index_t lda2,
                                    const PairPanels& M, float beta, float* C, index_t ldc, int tile_rows) {
  const int R = V == 2 ? tile_rows : 8 / V;
  for (index_t i = i0; i < i1;) {
    const int r = next_group(i1 - i, R);
    for (index_t j0 = 0; j0 < M.N; j0 += M.width) dpbf16_group<V>(r, i, j0, A2, lda2, M, beta, C, ldc);
    i += r;
  }
}

inline void dpbf16_gemm(index_t i0, index_t i1, const bf16_pair* A2, index_t lda2, const PairPanels& M,
                        float beta, float* C, index_t ldc, int tile_rows) {
  switch (M.width / 16) {
    case 8:
      return dpbf16_rows<8>(i0, i1, A2, lda2, M, beta, C, ldc, tile_rows);
    case 4:
      return dpbf16_rows<4>(i0, i1, A2, lda2, M, beta, C, ldc, tile_rows);
    default:
      return dpbf16_rows<2>(i0, i1, A2, lda2, M, beta, C, ldc, tile_rows);
  }
}

// AMX: palette 1, eight tiles of 16 rows x 64 bytes. Tiles 0-3 hold C (rows 0-15 / 16-31 x
// columns 0-15 / 16-31 of a 32 x 32 block: 0, 1 / 2, 3), 4-5 A (16 rows x 16 pairs each), 6-7
// M (16 pair rows x 16 columns each).
struct alignas(64) AmxTileConfig {
  std::uint8_t palette_id = 1, start_row = 0, reserved[14] = {};
  std::uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  std::uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// A block of (16 RT) x (16 CT) of C, RT, CT in {1, 2}, over the whole depth K2p. The tiles are
// stored to a small buffer and added into C (beta 0 or 1) with vector stores: stored straight
// into C, whose rows are G*H floats apart (8 KiB for an LSTM of H = 512, so a tile's 16 rows
// fall into one L1 set), the stores took a third of a (100, 64, 512) LSTM's time.
template <int RT, int CT>
RNNKIT_AMX_TARGET RNNKIT_INLINE void amx_block(index_t K2p, const bf16_pair* A2, index_t lda2,
                                               const bf16_pair* panel, index_t stride, float beta, float* C,
                                               index_t ldc) {
  const index_t sa = lda2 * 4, sb = stride * 4;
  alignas(64) float out[4][16 * 16];
  _tile_zero(0);
  if constexpr (CT > 1) _tile_zero(1);
  if constexpr (RT > 1) _tile_zero(2);
  if constexpr (RT > 1 && CT > 1) _tile_zero(3);
  // Each load right before the first product that reads it (tiles are not renamed: a load waits
  // for the products still reading its tile).
  for (index_t kc = 0; kc < K2p; kc += 16) {
    _tile_loadd(4, A2 + kc, sa);
    _tile_loadd(6, panel + kc * stride, sb);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (CT > 1) {
      _tile_loadd(7, panel + kc * stride + 16, sb);
      _tile_dpbf16ps(1, 4, 7);
    }
    if constexpr (RT > 1) {
      _tile_loadd(5, A2 + 16 * lda2 + kc, sa);
      _tile_dpbf16ps(2, 5, 6);
    }
    if constexpr (RT > 1 && CT > 1) _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, out[0], 64);
  if constexpr (CT > 1) _tile_stored(1, out[1], 64);
  if constexpr (RT > 1) _tile_stored(2, out[2], 64);
  if constexpr (RT > 1 && CT > 1) _tile_stored(3, out[3], 64);
  __asm__ volatile("" ::: "memory");
  for (int rt = 0; rt < RT; ++rt)
    for (int ct = 0; ct < CT; ++ct)
      for (int r = 0; r < 16; ++r) {
        float* c = C + (16 * rt + r) * ldc + 16 * ct;
        const __m512 v = _mm512_load_ps(out[2 * rt + ct] + 16 * r);
        _mm512_storeu_ps(c, beta == 0.0f ? v : _mm512_add_ps(_mm512_loadu_ps(c), v));
      }
}

// Rows [0, n): blocks of 16 x 16 on AMX (32 x 32 at a time); what is left (the last n % 16
// rows, each panel's last N % 16 columns) on VDPBF16PS.
//
// Walk: columns in blocks whose packed weights fill a quarter of L2 (half left more of them to
// be evicted by the rows of C written meanwhile: 490-620 against 610-640 GFLOP/s on the
// products below), each block row group (32 rows)
// by row group, each row group panel by panel. A row group's pair rows (32 KiB at K = 512) stay
// in L1 across the block's panels and the block stays in L2 across the row groups, so a tile
// product's two loads come from L1 (A) and L2 (M) and every weight is read from memory once
// per product. (A 2 x 2 tile step loads 4 KiB per 4 products, 64 bytes a cycle: from L2 alone
// it starved; measured on the (64 x 512) x (512 x 2048) product of a (100, 64, 512) LSTM step:
// 315-370 GFLOP/s walking row groups inside each panel, 510-590 with this walk, one thread,
// Intel Xeon with AMX, 2 MiB L2.)
RNNKIT_AMX_TARGET inline void amx_gemm(index_t n, const bf16_pair* A2, index_t lda2, const PairPanels& M,
                                       float beta, float* C, index_t ldc, int tile_rows) {
  // The tile instructions are asm statements that do not tell the compiler which memory they
  // read and write: compiler barriers around them.
  __asm__ volatile("" ::: "memory");
  const AmxTileConfig config;
  _tile_loadconfig(&config);
  const index_t n16 = n / 16 * 16;
  const index_t panel_bytes = M.K2p * M.width * 4;
  const index_t block_cols =
      std::max<index_t>(1, index_t(0.25 * double(cpu_info().l2_or_default()) / double(panel_bytes))) *
      M.width;
  for (index_t b0 = 0; b0 < M.N; b0 += block_cols) {
    const index_t b1 = std::min(M.N, b0 + block_cols);
    for (index_t i = 0; i < n16;) {
      const bool two = i + 32 <= n16;
      const bf16_pair* a = A2 + i * lda2;
      for (index_t j0 = b0; j0 < b1; j0 += M.width) {
        const index_t w = std::min<index_t>(M.width, M.N - j0);
        const bf16_pair* panel = M.data.data() + j0 * M.K2p;
        float* c = C + i * ldc + j0;
        index_t j = 0;
        for (; j + 32 <= w; j += 32) {
          if (two)
            amx_block<2, 2>(M.K2p, a, lda2, panel + j, w, beta, c + j, ldc);
          else
            amx_block<1, 2>(M.K2p, a, lda2, panel + j, w, beta, c + j, ldc);
        }
        if (j + 16 <= w) {
          if (two)
            amx_block<2, 1>(M.K2p, a, lda2, panel + j, w, beta, c + j, ldc);
          else
            amx_block<1, 1>(M.K2p, a, lda2, panel + j, w, beta, c + j, ldc);
        }
      }
      i += two ? 32 : 16;
    }
  }
  _tile_release();
  __asm__ volatile("" ::: "memory");
  if (n16 < n) dpbf16_gemm(n16, n, A2, lda2, M, beta, C, ldc, tile_rows);
  if (n16 == 0) return;
  // Columns past each panel's last whole 16 (only the last panel can have them: the others are
  // a multiple of 16 wide).
  const index_t last_j0 = (M.N - 1) / M.width * M.width, w = M.N - last_j0;
  if (w % 16 == 0) return;
  const index_t jb = w / 16 * 16;
  for (index_t i = 0; i < n16;) {
    const int r = next_group(n16 - i, 8);
    const index_t lda = lda2;
    const bf16_pair* panel = M.data.data() + last_j0 * M.K2p;
    const index_t K2 = (M.K + 1) / 2;
    const __mmask16 mask = __mmask16((1u << (w - jb)) - 1);
    if (r == 8)
      dpbf16_tile<8, 1>(i, last_j0 + jb, K2, A2, lda, panel + jb, w, beta, C, ldc, mask);
    else if (r == 4)
      dpbf16_tile<4, 1>(i, last_j0 + jb, K2, A2, lda, panel + jb, w, beta, C, ldc, mask);
    else if (r == 2)
      dpbf16_tile<2, 1>(i, last_j0 + jb, K2, A2, lda, panel + jb, w, beta, C, ldc, mask);
    else
      dpbf16_tile<1, 1>(i, last_j0 + jb, K2, A2, lda, panel + jb, w, beta, C, ldc, mask);
    i += r;
  }
}
#endif

// C (n, M.N) (+)= A2 (n pair rows, lda2 apart) @ M with the given kernel (beta 0 or 1).
inline void bf16_gemm(Bf16Kernel kernel, index_t n, const bf16_pair* A2, index_t lda2, const PairPanels& M,
                      float beta, float* C, index_t ldc, int tile_rows) {
  if (n <= 0 || M.N <= 0) return;
#ifdef RNNKIT_HAVE_BF16_KERNELS
  if (kernel == Bf16Kernel::kAmx) return amx_gemm(n, A2, lda2, M, beta, C, ldc, tile_rows);
  if (kernel == Bf16Kernel::kAvx512Bf16) return dpbf16_gemm(0, n, A2, lda2, M, beta, C, ldc, tile_rows);
#else
  (void)A2, (void)lda2, (void)beta, (void)C, (void)ldc, (void)tile_rows;
#endif
  (void)kernel;
  throw std::logic_error("precision='bf16': no bfloat16 kernel runs on this CPU");
}

// A whole-sequence product in bf16, C (M, N) = A (M, K) @ op(B) (op(B) = B (K, N) or B^T with
// B (N, K)), C overwritten: A converted to pair rows once (split by rows over the team), then
// each thread packs its own columns of op(B) and computes them for all rows.
struct Bf16BlockGemm {
  static constexpr index_t kPanelRows = 4;  // a batch whose panels are two vectors wide
  bool trans_b;
  index_t M, N, K;
  const float* A;
  index_t lda;
  const float* B;
  index_t ldb;
  float* C;
  index_t ldc;
  Bf16Kernel kernel;
  int tile_rows;
  PooledBuffer<bf16_pair> A2;
  std::vector<PairPanels> panels;

  void prepare(int nthreads) {
    A2.resize(std::size_t(M * PairPanels::pairs_for(K)));
    panels.resize(std::size_t(nthreads));
    for (int t = 0; t < nthreads; ++t) {
      const auto [c0, c1] = TeamContext{t, nthreads, nullptr}.part(N, PairPanels::width_for(kPanelRows));
      if (c1 > c0) panels[std::size_t(t)].allocate(K, c1 - c0, kPanelRows);
    }
  }

  void run(const TeamContext& ctx) {
    const index_t K2p = PairPanels::pairs_for(K);
    const auto [r0, r1] = ctx.part(M);
    to_bf16_pair_rows(r1 - r0, K, A + r0 * lda, lda, K2p, A2.data() + r0 * K2p, K2p);
    ctx.barrier();
    const auto [c0, c1] = ctx.part(N, PairPanels::width_for(kPanelRows));
    if (c1 <= c0) return;
    PairPanels& P = panels[std::size_t(ctx.tid)];
    P.fill(B, ldb, trans_b, c0);
    bf16_gemm(kernel, M, A2.data(), K2p, P, 0.0f, C + c0, ldc, tile_rows);
  }
};

}  // namespace rnnkit

// The one sequence driver: forward and backprop-through-time for any cell of cells.hpp.
//
// Forward:  gx = X W_ih^T for all T*B rows in one GEMM; then per step one recurrent GEMM
//           (two for the split cell) and the cell's fused elementwise part.
// Backward: per step (in reverse order) the cell's elementwise part and one GEMM for
//           dh_{t-1}; after the loop dx, dW_ih, dW_hh and the bias gradients come from
//           whole-sequence GEMMs and sums over the saved gate gradients.
//
// Projection (LSTM with proj_size P, PyTorch's LSTMP): the cell's output m_t (H) is mapped to
// the recurrent state h_t = m_t W_hr^T (P) by one more GEMM per step; W_hh is then (G*H, P).
// Backward maps dh_t to dm_t = dh_t W_hr before the cell, and dW_hr = sum_t dh_t^T m_t.
//
// Variable lengths: batch rows are visited in order of decreasing length (`rows`), so the
// rows active at time t are always the first n_active[t] of that order and each step's GEMM
// works on those rows only: the cost follows the number of valid steps. A row's state is
// simply left alone while it is inactive, which gives PyTorch's packed-sequence semantics in
// both directions: forward stops at each row's last step; reverse starts there from h0.
//
// Threads: below a batch size limit the per-step products use rnnkit's packed kernel
// (small_gemm.hpp) and the whole time loop runs on rnnkit's team (team.hpp): each thread owns
// a slice of the product's output columns (and of the packed weights) and a slice of the batch
// rows for the elementwise part, with a barrier between phases. Above the limit, the per-step
// products go to the BLAS (with its own threads) and the elementwise part runs on the caller.
// The whole-sequence GEMMs run before or after the time loop: the input projection and dx on
// rnnkit's blocked kernel (block_gemm.hpp), split by columns over the team (a short
// sequence's projection inside the loop's run instead, on the packed kernel); the weight
// gradients on the BLAS with its own threads.
//
// Interrupts (interrupt.hpp): the caller polls for a pending Python signal once per step; when a
// handler raised, every thread leaves the time loop at the top of the next step and the call
// returns at once with its outputs unfinished, for the binding to raise instead of returning
// them. Cost: a clock read every few steps (interrupt.hpp); LSTM T=50, B=1, H=128 inference
// forward, float32, 1 thread, 206 us a call: polling on vs off (_core._set_interrupt_polling),
// alternating batches of 50 calls in one process, medians of 300 batches each: +0.29% and
// -0.13% in two runs, i.e. below the machine's noise (12 clock reads, ~0.3 us, expected).
//
// Memory: every buffer is allocated before the time loop; nothing is allocated inside it.
// Layout of saved arrays is by time index t and original batch row b, so the whole-sequence
// GEMMs see plain (T*B, .) matrices whichever the direction.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <tuple>
#include <vector>

#include "bf16_gemm.hpp"
#include "blas.hpp"
#include "block_gemm.hpp"
#include "cells.hpp"
#include "common.hpp"
#include "cpu_info.hpp"
#include "interrupt.hpp"
#include "small_gemm.hpp"
#include "team.hpp"

namespace rnnkit {

// Sizes and options of one sequence call (letters as in cells.hpp).
struct SeqShape {
  index_t T, B, I, H;
  index_t S;  // size of the recurrent state h: H, or P with an LSTM projection
  bool reverse;
  const std::int64_t* lengths;  // (B) or nullptr: every row runs all T steps
};

// Visiting order of batch rows and the number of active rows at each time index.
struct RowSchedule {
  std::vector<index_t> rows;      // (B) original row index of the r-th visited row
  std::vector<index_t> n_active;  // (T) rows with length > t

  explicit RowSchedule(const SeqShape& s) : rows(s.B), n_active(s.T, s.B) {
    std::iota(rows.begin(), rows.end(), index_t(0));
    if (!s.lengths) return;
    std::stable_sort(rows.begin(), rows.end(),
                     [&](index_t a, index_t b) { return s.lengths[a] > s.lengths[b]; });
    for (index_t t = 0; t < s.T; ++t) {
      index_t n = 0;
      while (n < s.B && s.lengths[rows[n]] > t) ++n;
      n_active[t] = n;
    }
  }
  // Time index of processing step k (forward order).
  static index_t time_of(const SeqShape& s, index_t k) { return s.reverse ? s.T - 1 - k : k; }
};

// Large per-call buffers (the inference-mode input projection, the backward's gate gradients)
// come from PooledBuffer's pool and go back to it when the call ends: fresh multi-megabyte
// allocations cost a page fault per 4 KiB on first touch, which measured at about a tenth of a
// training step. The pool keeps at most PooledBuffer::kMaxPooledBytes; a larger buffer (a long
// inference sequence) is freed at the end of its call instead of staying resident. Not zeroed.
template <class T>
T* scratch(PooledBuffer<T>& buf, index_t n) {
  buf.resize(std::size_t(n));
  return buf.data();
}

// Up to this many batch rows, the per-step products use rnnkit's packed kernel on rnnkit's team
// instead of the BLAS. Settable (for tests and benchmarks) through a private binding.
inline std::atomic<index_t>& small_batch_limit() {
  static std::atomic<index_t> limit{128};
  return limit;
}

// The team splits a step only if the step has at least this many multiply-adds: a barrier costs
// about a microsecond here, which smaller steps do not repay. (Waking the sleeping workers costs
// ~35 us per call besides; spinning workers instead would make a batch-1 LSTM step pay off from
// 32K, but they fight any other pool that spins, torch's OpenMP threads in the benchmark, and
// then ran small calls 1.4-1.8x slower at 2 threads than at 1.) Settable (for tests) through a
// private binding.
inline std::atomic<index_t>& team_min_work() {
  static std::atomic<index_t> work{index_t(1) << 20};
  return work;
}

// The packed kernel's walk for this processor (small_gemm.hpp, PackedKernelChoice), from CPUID:
// 16-accumulator tiles where the kernels use AVX-512 (32 vector registers); panel-major order when
// one thread's packed weights of a product take more than half the core's L2 (read from CPUID
// leaf 4 / 0x8000001D: 1 MiB on Zen 4, 2 MiB on Sapphire Rapids), so that each panel comes
// from memory once per step instead of once per row group. A private binding forces either
// choice (tests run every variant; they give bitwise the same results).
struct KernelOverride {
  std::atomic<int> tile_rows{0};     // 0: from the CPU; else 4 or 8
  std::atomic<int> panel_major{-1};  // -1: from the CPU and the size; else 0 or 1
};
inline KernelOverride& kernel_override() {
  static KernelOverride o;
  return o;
}

// 8 x 2 tiles need 16 accumulators + 2 panel rows + 1 broadcast: only AVX-512 has the 32
// vector registers (AVX2 has 16).
inline int default_tile_rows() { return vector_bytes() == 64 ? 8 : 4; }

template <class T>
PackedKernelChoice packed_choice(index_t packed_elements) {
  PackedKernelChoice c;
  const KernelOverride& o = kernel_override();
  const int rows = o.tile_rows.load(std::memory_order_relaxed);
  c.tile_rows = rows ? rows : default_tile_rows();
  const int major = o.panel_major.load(std::memory_order_relaxed);
  c.panel_major = major >= 0 ? major == 1
                             : double(packed_elements) * sizeof(T) > 0.5 * double(cpu_info().l2_or_default());
  return c;
}

// Up to this many multiply-adds, the forward's input projection runs on the packed kernel (and
// the per-step products' threads) instead of the BLAS: the same size below which the BLAS runs
// on one thread (SerialBlas).
constexpr double kSmallProjectionWork = SerialBlas::kMaxWork;

// One thread's share of a per-step product C (n, N) = A (n, K) @ M (+ beta C), where M is a
// weight matrix W or its transpose (W^T for the forward's h W_hh^T, W itself for the
// backward's dg W_hh). Packed mode: this thread computes columns [c0, c1) from its own packed
// copy of those columns of M. BLAS mode: one thread computes everything with the BLAS.
// With precision="bf16" (float32 only) the slice's columns of M are packed as bfloat16 pairs
// instead (bf16_gemm.hpp), and A's rows are rounded to bfloat16 pairs at each product, by each
// thread for itself (n x K conversions against n x K x N / threads multiply-adds).
template <class T>
struct StepProduct {
  const T* W = nullptr;
  index_t K = 0, N = 0, ldw = 0, c0 = 0, c1 = 0;
  bool transposed = false, packed_mode = false;
  PackedPanels<T> panels;
  PackedKernelChoice choice;
  Bf16Kernel bf16 = Bf16Kernel::kNone;  // kNone: float32 products
  PairPanels pairs;
  mutable PooledBuffer<bf16_pair> a_pairs;  // A's rows as pairs (apply's scratch)

  // Called by the caller for each thread before the run: sizes the slice's storage.
  void prepare(const T* W_, index_t K_, index_t N_, index_t ldw_, bool transposed_, bool packed,
               index_t batch, int tid, int nthreads, Bf16Kernel bf16_) {
    W = W_;
    K = K_;
    N = N_;
    ldw = ldw_;
    transposed = transposed_;
    packed_mode = packed;
    bf16 = bf16_;
    if (!W) return;
    if (!packed_mode) {
      c0 = 0;
      c1 = N;
      return;
    }
    const TeamContext ctx{tid, nthreads, nullptr};
    if (bf16 != Bf16Kernel::kNone) {
      std::tie(c0, c1) = ctx.part(N, PairPanels::width_for(batch));
      pairs.allocate(K, c1 - c0, batch);
      a_pairs.resize(std::size_t(batch * pairs.K2p));
      choice = packed_choice<float>(pairs.K2p * (c1 - c0));
      return;
    }
    std::tie(c0, c1) = ctx.part(N, PackedPanels<T>::width_for(batch));
    panels.allocate(K, c1 - c0, batch);
    choice = packed_choice<T>(K * (c1 - c0));
  }
  // Called by the owning thread inside the run.
  void pack() {
    if (!W || !packed_mode) return;
    if constexpr (std::is_same_v<T, float>) {
      if (bf16 != Bf16Kernel::kNone) return pairs.fill(W, ldw, transposed, c0);
    }
    panels.fill(W, ldw, transposed, c0);
  }
  void apply(index_t n, const T* A, index_t lda, T beta, T* C, index_t ldc) const {
    if (!W) return;
    if constexpr (std::is_same_v<T, float>) {
      if (bf16 != Bf16Kernel::kNone) {
        if (c1 <= c0) return;
        to_bf16_pair_rows(n, K, A, lda, pairs.K2p, a_pairs.data(), pairs.K2p);
        return bf16_gemm(bf16, n, a_pairs.data(), pairs.K2p, pairs, beta, C + c0, ldc, choice.tile_rows);
      }
    }
    if (packed_mode) {
      if (c1 > c0) small_gemm(n, A, lda, panels, beta, C + c0, ldc, choice);
    } else {
      gemm(false, transposed, int(n), int(N), int(K), T(1), A, int(lda), W, int(ldw), beta, C, int(ldc));
    }
  }
};

// How a call runs: on the team with packed products, or on the caller with BLAS products.
struct RunPlan {
  bool packed;
  int nthreads;
  std::unique_lock<std::mutex> reservation;  // of the team, when nthreads > 1

  // A sequence call: packed products up to the batch limit, on the team when a step has work
  // enough to split.
  // precision="bf16" has no BLAS: its products are always packed.
  RunPlan(index_t B, index_t work_per_step, bool bf16 = false)
      : RunPlan(bf16 || B <= small_batch_limit().load(),
                (bf16 || B <= small_batch_limit().load()) && work_per_step >= team_min_work().load()) {}

  RunPlan(bool packed_, bool split) : packed(packed_) {
    // The team has as many threads as the BLAS pool, so one setting (rnnkit.set_num_threads,
    // or threadpoolctl's limit on the BLAS) controls both.
    nthreads = split ? std::max(1, SerialBlas::configured_threads()) : 1;
    if (nthreads > 1) {
      reservation = Team::instance().try_reserve();
      if (!reservation.owns_lock()) nthreads = 1;  // another call has the team
    }
  }

  // Gives the team back (before the call's whole-sequence products, which reserve it anew).
  void release() {
    if (reservation.owns_lock()) reservation.unlock();
    nthreads = 1;
  }

  template <class F>
  void run(const F& body) const {
    if (nthreads > 1)
      Team::instance().run(nthreads, body);
    else
      body(TeamContext{0, 1, nullptr});
  }
};

// Products with at least this many rows go to rnnkit's blocked kernel; fewer rows to the BLAS
// (packing op(B) would cost more than it saves), except the forward's input projection (below).
constexpr index_t kBlockGemmMinRows = 32;

// Whether the forward's input projection x W_ih^T (T*B rows) runs inside the time loop's run on
// the packed kernel (see sequence_forward). Any number of rows: a projection of few rows (a short
// chunk of a stream, a single step) must give bitwise what the same rows give inside a longer
// sequence, and the packed and blocked kernels compute each element with the same FMA chain
// over k in the same order, while the BLAS does not (its few-row kernels sum in another order).
inline bool small_projection_for(index_t T, index_t B, index_t GH, index_t I) {
  return B <= small_batch_limit().load() && double(T * B) * double(GH) * double(I) < kSmallProjectionWork;
}

// A whole-sequence product C (M, N) = A (M, K) @ op(B), op(B) = B (K, N) or B^T (B (N, K)), C
// overwritten: on rnnkit's blocked kernel (block_gemm.hpp), split by columns over the team when
// it has at least 8 steps' worth of team_min_work (8M multiply-adds by default: the size below
// which the BLAS too runs on one thread). Fewer than kBlockGemmMinRows rows go to the BLAS
// unless few_rows_on_blas is false (the forward's input projection: bitwise the same whatever
// the number of rows).
// With a bf16 kernel (float32 only), on that kernel at any size (bf16_gemm.hpp).
template <class T>
void sequence_gemm(bool trans_b, index_t M, index_t N, index_t K, const T* A, index_t lda, const T* B,
                   index_t ldb, T* C, index_t ldc, bool few_rows_on_blas = true,
                   Bf16Kernel bf16 = Bf16Kernel::kNone) {
  if constexpr (std::is_same_v<T, float>) {
    if (bf16 != Bf16Kernel::kNone && M > 0 && N > 0) {
      if (K == 0) return scale_matrix(int(M), int(N), 0.0f, C, int(ldc));
      Bf16BlockGemm product{trans_b, M, N, K, A, lda, B, ldb, C, ldc, bf16, packed_choice<T>(0).tile_rows,
                            {},      {}};
      const RunPlan plan(true, double(M) * N * K >= 8.0 * double(team_min_work().load()));
      product.prepare(plan.nthreads);
      plan.run([&](const TeamContext& ctx) { product.run(ctx); });
      return;
    }
  }
  if ((few_rows_on_blas && M < kBlockGemmMinRows) || K == 0) {
    gemm(false, trans_b, int(M), int(N), int(K), T(1), A, int(lda), B, int(ldb), T(0), C, int(ldc));
    return;
  }
  BlockGemm<T> product{trans_b, M, N, K, A, lda, B, ldb, C, ldc, packed_choice<T>(0).tile_rows, {}};
  const RunPlan plan(true, double(M) * N * K >= 8.0 * double(team_min_work().load()));
  product.prepare(plan.nthreads);
  plan.run([&](const TeamContext& ctx) { product.run(ctx); });
}

// Per-thread products for one weight operand.
template <class T>
struct StepProducts {
  std::vector<StepProduct<T>> parts;
  StepProducts(const RunPlan& plan, const T* W, index_t K, index_t N, index_t ldw, bool transposed,
               index_t batch, Bf16Kernel bf16)
      : parts(std::size_t(plan.nthreads)) {
    for (int t = 0; t < plan.nthreads; ++t)
      parts[std::size_t(t)].prepare(W, K, N, ldw, transposed, plan.packed, batch, t, plan.nthreads, bf16);
  }
  StepProduct<T>& operator[](int tid) { return parts[std::size_t(tid)]; }
};

// Pointers of a forward call. Saved arrays (hprev, cprev, gates, extra) are null in
// inference mode; the driver then uses one step's scratch instead. hprev is also null where
// saves_hprev() says backward does without it.
// Whether a training forward saves h_{t-1}: not for a cell whose saved gates are h_t itself,
// unless lengths make the previous step's row ambiguous (a short row's state is carried).
template <class Cell>
bool saves_hprev(const SeqShape& s) {
  return !(Cell::kGatesAreState && !s.lengths);
}

template <class T>
struct ForwardArgs {
  const T* x;                           // (T, B, I)
  const T* h0;                          // (B, H) or null (zeros)
  const T* c0;                          // (B, H) or null; LSTM only
  const T* W_ih;                        // (G*H, I)
  const T* W_hh;                        // (G*H, H)
  const T* b_ih;                        // (G*H) or null
  const T* b_hh;                        // (G*H) or null
  const T* W_hr;                        // (P, H) projection or null
  T* y;                                 // (T, B, S) out
  T* h_T;                               // (B, S) out
  T* c_T;                               // (B, H) out; LSTM only
  T* hprev;                             // (T, B, S) saved h_{t-1} per time index, or null
  T* cprev;                             // (T, B, H) saved c_{t-1}, or null
  T* gates;                             // (T, B, G*H) saved activated gates, or null
  T* extra;                             // (T, B, H) saved cell-specific row, or null
  T* m;                                 // (T, B, H) saved unprojected output (projection only), or null
  Bf16Kernel bf16 = Bf16Kernel::kNone;  // precision="bf16" (float32): the kernel of its products
  T clip = T(0);                        // the bound of a Clip cell (cells.hpp)
  T* keep = nullptr;                    // (T, B, G*H) saved clip mask of a Clip cell, or null
  const T* peep = nullptr;              // (3*H) peephole weights of a Peep LSTM cell, or null
};

// One step's buffers, each at its time index: gates and y are indexed by original batch row b,
// gh, h, c and reset_h by visiting position r (see RowSchedule). extra/c/reset_h may be null.
template <class T>
struct StepForward {
  T* gates;                 // (B, G*H)
  const T* gh;              // (n, G*H)
  const T* b_ih;            // (G*H)
  const T* b_hh;            // (G*H)
  T* h;                     // (B, H) (the cell's output m with a projection)
  T* c;                     // (B, H)
  T* y;                     // (B, H)
  T* extra;                 // (B, H)
  T* reset_h;               // (B, H)
  T clip = T(0);            // Clip cells only
  T* keep = nullptr;        // (B, G*H), Clip cells only
  const T* peep = nullptr;  // (3*H), Peep LSTM cells only
};

// Visiting positions [r0, r1) of one step.
template <class Cell, class T>
RNNKIT_CLONES void forward_rows(index_t r0, index_t r1, index_t H, const index_t* rows,
                                const StepForward<T>& s, int part) {
  const index_t GH = Cell::G * H;
  for (index_t r = r0; r < r1; ++r) {
    const index_t b = rows[r];
    T* gates = s.gates + b * GH;
    const T* gh = s.gh + r * GH;
    T* h = s.h + r * H;
    T* c = offset(s.c, r * H);
    T* y = s.y + b * H;
    T* extra = offset(s.extra, b * H);
    T* reset_h = offset(s.reset_h, r * H);
    T* keep = offset(s.keep, b * GH);
    if constexpr (Cell::kSplitRecurrent) {
      if (part == 1)
        Cell::forward_part1(int(H), gates, gh, s.b_ih, s.b_hh, h, c, y, extra, reset_h, s.clip, keep, s.peep);
      else
        Cell::forward_part2(int(H), gates, gh, s.b_ih, s.b_hh, h, c, y, extra, reset_h, s.clip, keep, s.peep);
    } else {
      (void)part;
      Cell::forward(int(H), gates, gh, s.b_ih, s.b_hh, h, c, y, extra, reset_h, s.clip, keep, s.peep);
    }
  }
}

template <class Cell, class T>
void sequence_forward(const SeqShape& s, const ForwardArgs<T>& p) {
  constexpr int G = Cell::G;
  const index_t T_ = s.T, B = s.B, I = s.I, H = s.H, S = s.S, GH = G * H;
  Interrupt interrupt(double(B) * GH * S);  // first: it refuses a call from a signal handler
  const bool training = p.gates != nullptr;
  const bool project = p.W_hr != nullptr;
  const RowSchedule sched(s);
  const index_t* rows = sched.rows.data();

  // Buffers: the input projection for all steps (in training it lives in the gates array: each
  // cell row reads its pre-activations and overwrites them with the activated gates), one
  // step's recurrent projection, the state in visiting order, zero biases when a bias is
  // absent, and inference-mode scratch.
  PooledBuffer<T> gx_buf;
  T* gx = training ? p.gates : scratch(gx_buf, T_ * B * GH);
  std::vector<T> gh(std::size_t(B * GH));
  std::vector<T> h(std::size_t(B * S), T(0)), c(Cell::kHasCellState ? std::size_t(B * H) : 0, T(0));
  std::vector<T> zero_bias(std::size_t(GH), T(0));
  std::vector<T> reset_h(Cell::kSplitRecurrent ? std::size_t(B * H) : 0);
  std::vector<T> extra_scratch(training || !Cell::kHasExtra ? 0 : std::size_t(B * H));
  std::vector<T> m_rows(project ? std::size_t(B * H) : 0);  // cell output, visiting order
  std::vector<T> m_scratch(project && !training ? std::size_t(B * H) : 0);
  std::vector<T> keep_scratch(Cell::kClip && !training ? std::size_t(B * GH) : 0);
  const T* b_ih = p.b_ih ? p.b_ih : zero_bias.data();
  const T* b_hh = p.b_hh ? p.b_hh : zero_bias.data();

  for (index_t r = 0; r < B; ++r) {
    const index_t b = rows[r];
    if (p.h0) std::copy_n(p.h0 + b * S, S, h.data() + r * S);
    if (Cell::kHasCellState && p.c0) std::copy_n(p.c0 + b * H, H, c.data() + r * H);
  }
  if (s.lengths) std::fill_n(p.y, T_ * B * S, T(0));  // padded steps of short rows stay zero

  // The input projection x W_ih^T of all steps. A small one (batch of one, short sequences,
  // single steps) runs inside the time loop's run on the packed kernel, split by columns like
  // the steps' products (106 vs 83 GFLOP/s for the BLAS at 50 x 512 x 128); any other before
  // it, on the blocked kernel. Never on the BLAS: each element is the same FMA chain over k on
  // either kernel, so a time step's projection is bitwise the same whether the call holds the
  // whole sequence or a chunk of it (streaming, nn/recurrent.py).
  const bool small_projection = small_projection_for(T_, B, GH, I);
  if (!small_projection) sequence_gemm(true, T_ * B, GH, I, p.x, I, p.W_ih, I, gx, GH, false, p.bf16);

  // Recurrent products: h W_hh^T (the split cell: r,z blocks from h, n block from r*h) and the
  // projection m W_hr^T, each split by output columns over the threads.
  constexpr index_t kSplit = Cell::kSplitRecurrent ? 1 : 0;
  const index_t GH1 = GH - kSplit * H;  // columns whose product takes h_{t-1}
  const RunPlan plan(B, B * GH * S, p.bf16 != Bf16Kernel::kNone);
  StepProducts<T> rec(plan, p.W_hh, S, GH1, S, true, B, p.bf16);
  StepProducts<T> in_proj(plan, small_projection ? p.W_ih : nullptr, I, GH, I, true, T_ * B, p.bf16);
  StepProducts<T> rec_n(plan, kSplit ? p.W_hh + GH1 * H : nullptr, H, H, H, true, B, p.bf16);
  StepProducts<T> proj(plan, p.W_hr, H, S, H, true, B, p.bf16);

  plan.run([&](const TeamContext& ctx) {
    const int tid = ctx.tid;
    if (small_projection) {
      in_proj[tid].pack();
      in_proj[tid].apply(T_ * B, p.x, I, T(0), gx, GH);
      ctx.barrier();
    }
    rec[tid].pack();
    rec_n[tid].pack();
    proj[tid].pack();
    for (index_t k = 0; k < T_; ++k) {
      if (interrupt.requested()) break;  // read by all threads here; set before a barrier below
      const index_t t = RowSchedule::time_of(s, k);
      const index_t n = sched.n_active[t];
      const auto [r0, r1] = ctx.part(n);  // this thread's rows for the elementwise phases
      const index_t tBH = t * B * H, tBS = t * B * S;
      // Without projection the cell writes the new state in place and y directly; with it the
      // cell writes m_t (visiting order, plus the saved copy) and the product below makes h_t.
      StepForward<T> base{gx + t * B * GH,
                          gh.data(),
                          b_ih,
                          b_hh,
                          project ? m_rows.data() : h.data(),
                          Cell::kHasCellState ? c.data() : nullptr,
                          project ? (training ? p.m + tBH : m_scratch.data()) : p.y + tBS,
                          Cell::kHasExtra ? (training ? p.extra + tBH : extra_scratch.data()) : nullptr,
                          Cell::kSplitRecurrent ? reset_h.data() : nullptr,
                          p.clip,
                          Cell::kClip ? (training ? p.keep + t * B * GH : keep_scratch.data()) : nullptr,
                          p.peep};
      rec[tid].apply(n, h.data(), S, T(0), gh.data(), GH);
      ctx.barrier();
      if (p.hprev) {  // h_{t-1} (and c_{t-1}) of this thread's rows, for backward
        for (index_t r = r0; r < r1; ++r) {
          std::copy_n(h.data() + r * S, S, p.hprev + tBS + rows[r] * S);
          if constexpr (Cell::kHasCellState) std::copy_n(c.data() + r * H, H, p.cprev + tBH + rows[r] * H);
        }
      }
      if constexpr (Cell::kSplitRecurrent) {
        forward_rows<Cell>(r0, r1, H, rows, base, 1);
        ctx.barrier();
        rec_n[tid].apply(n, reset_h.data(), H, T(0), gh.data() + GH1, GH);
        ctx.barrier();
        forward_rows<Cell>(r0, r1, H, rows, base, 2);
      } else {
        forward_rows<Cell>(r0, r1, H, rows, base, 0);
      }
      if (tid == 0) interrupt.poll();  // between this step's barriers (see interrupt.hpp)
      ctx.barrier();
      if (project) {
        proj[tid].apply(n, m_rows.data(), H, T(0), h.data(), S);
        ctx.barrier();
        for (index_t r = r0; r < r1; ++r) std::copy_n(h.data() + r * S, S, p.y + tBS + rows[r] * S);
      }
    }
  });
  if (interrupt.requested()) return;  // the binding raises; the outputs are dropped

  for (index_t r = 0; r < B; ++r) {
    std::copy_n(h.data() + r * S, S, p.h_T + rows[r] * S);
    if constexpr (Cell::kHasCellState) std::copy_n(c.data() + r * H, H, p.c_T + rows[r] * H);
  }
}

// Pointers of a backward call: the forward's inputs and saved arrays, the incoming
// gradients and the outputs. Gradient outputs are overwritten (not accumulated).
template <class T>
struct BackwardArgs {
  const T* dy;     // (T, B, S) or null (zero)
  const T* dh_T;   // (B, S) or null
  const T* dc_T;   // (B, H) or null; LSTM only
  const T* x;      // (T, B, I)
  const T* W_ih;   // (G*H, I)
  const T* W_hh;   // (G*H, S)
  const T* W_hr;   // (P, H) or null
  const T* hprev;  // (T, B, S), or null (then h_{t-1} is the previous step's gates row or h0)
  const T* h0;     // (B, S) or null (zeros); used only when hprev is null
  const T* cprev;  // (T, B, H) LSTM only
  const T* gates;  // (T, B, G*H)
  const T* extra;  // (T, B, H) or null
  const T* m;      // (T, B, H) projection only
  T* dx;           // (T, B, I)
  T* dh0;          // (B, S)
  T* dc0;          // (B, H) LSTM only
  T* dW_ih;        // (G*H, I)
  T* dW_hh;        // (G*H, S)
  T* db_ih;        // (G*H) or null (no bias)
  T* db_hh;        // (G*H) or null
  T* dW_hr;        // (P, H) projection only
  Bf16Kernel bf16 = Bf16Kernel::kNone;  // as the forward's
  const T* keep = nullptr;              // (T, B, G*H) the forward's clip mask (Clip cells)
  const T* peep = nullptr;              // (3*H) the forward's peephole weights (Peep LSTM cells)
  T* dpeep = nullptr;                   // (3*H) out: their gradient (Peep LSTM cells)
};

// One backward step's buffers: dy, gates, extra, h_prev, c_prev and dgx by original row b;
// dh, dc, dg and d_reset_h by visiting position r.
template <class T>
struct StepBackward {
  const T* dy;         // (B, H)
  const T* gates;      // (B, G*H)
  const T* extra;      // (B, H)
  const T* h_prev;     // (B, H)
  const T* c_prev;     // (B, H)
  T* dh;               // (B, H)
  T* dc;               // (B, H)
  T* dgx;              // (B, G*H)
  T* dg;               // (n, G*H)
  const T* d_reset_h;  // (n, H)
  const T* keep;       // (B, G*H) or null
  const T* peep;       // (3*H) or null
};

template <class Cell, class T>
RNNKIT_CLONES void backward_rows(index_t r0, index_t r1, index_t H, const index_t* rows,
                                 const StepBackward<T>& s, int part) {
  const index_t GH = Cell::G * H;
  for (index_t r = r0; r < r1; ++r) {
    const index_t b = rows[r];
    const T* dy = s.dy + b * H;
    const T* gates = s.gates + b * GH;
    const T* extra = offset(s.extra, b * H);
    const T* h_prev = offset(s.h_prev, b * H);
    const T* c_prev = offset(s.c_prev, b * H);
    T* dh = s.dh + r * H;
    T* dc = offset(s.dc, r * H);
    T* dgx = s.dgx + b * GH;
    T* dg = s.dg + r * GH;
    const T* d_reset_h = offset(s.d_reset_h, r * H);
    const T* keep = offset(s.keep, b * GH);
    if constexpr (Cell::kSplitRecurrent) {
      if (part == 1)
        Cell::backward_part1(int(H), dy, gates, extra, h_prev, c_prev, dh, dc, dgx, dg, d_reset_h, keep,
                             s.peep);
      else
        Cell::backward_part2(int(H), dy, gates, extra, h_prev, c_prev, dh, dc, dgx, dg, d_reset_h, keep,
                             s.peep);
    } else {
      (void)part;
      Cell::backward(int(H), dy, gates, extra, h_prev, c_prev, dh, dc, dgx, dg, d_reset_h, keep, s.peep);
    }
  }
}

// out (N) = sum over the M rows of A (M, N; leading dimension lda); accumulated in the working
// precision, row by row so the inner loop vectorises.
template <class T>
RNNKIT_CLONES void sum_rows(index_t M, index_t N, const T* A, index_t lda, T* out) {
  std::fill_n(out, N, T(0));
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) out[j] += A[i * lda + j];
}

template <class Cell, class T>
void sequence_backward(const SeqShape& s, const BackwardArgs<T>& p) {
  constexpr int G = Cell::G;
  const index_t T_ = s.T, B = s.B, I = s.I, H = s.H, S = s.S, GH = G * H, TB = s.T * s.B;
  Interrupt interrupt(double(B) * GH * S);  // first: it refuses a call from a signal handler
  const bool project = p.W_hr != nullptr;
  const RowSchedule sched(s);
  const index_t* rows = sched.rows.data();

  // Gate gradients for all steps (input side; recurrent side too when they differ), one
  // step's recurrent gate gradient in visiting order, carried state gradients.
  // (Rows past a sequence's length are never written but are read by the whole-sequence GEMMs,
  // so with lengths the pooled buffers are zeroed first.)
  PooledBuffer<T> dgx_buf, dgh_last_buf, dh_seq_buf, xv_buf;
  T* dgx = scratch(dgx_buf, TB * GH);
  // The recurrent side's gradient of the last gate block, where it differs (reset-after GRU).
  T* dgh_last = Cell::kSeparateRecurrentGrad ? scratch(dgh_last_buf, TB * H) : nullptr;
  std::vector<T> dg(std::size_t(B * GH));
  std::vector<T> dh(std::size_t(B * S), T(0)), dc(Cell::kHasCellState ? std::size_t(B * H) : 0, T(0));
  std::vector<T> d_reset_h(Cell::kSplitRecurrent ? std::size_t(B * H) : 0);
  std::vector<T> zero_dy(p.dy && !project ? 0 : std::size_t(B * H), T(0));
  std::vector<T> dm(project ? std::size_t(B * H) : 0);          // dL/dm_t, visiting order
  T* dh_seq = project ? scratch(dh_seq_buf, TB * S) : nullptr;  // dL/dh_t for dW_hr
  if (s.lengths) {
    std::fill_n(dgx, TB * GH, T(0));
    if (dgh_last) std::fill_n(dgh_last, TB * H, T(0));
    if (dh_seq) std::fill_n(dh_seq, TB * S, T(0));
  }
  // x as the weight-gradient GEMM sees it: padded steps must not reach dW_ih, and a zero gate
  // gradient does not cancel a NaN or inf there, so with lengths they are zeroed in a copy.
  const T* x_valid = p.x;
  if (s.lengths) {
    T* xv = scratch(xv_buf, TB * I);
    for (index_t t = 0; t < T_; ++t)
      for (index_t b = 0; b < B; ++b) {
        const T* src = p.x + (t * B + b) * I;
        T* dst = xv + (t * B + b) * I;
        if (s.lengths[b] > t)
          std::copy_n(src, I, dst);
        else
          std::fill_n(dst, I, T(0));
      }
    x_valid = xv;
  }

  for (index_t r = 0; r < B; ++r) {
    const index_t b = rows[r];
    if (p.dh_T) std::copy_n(p.dh_T + b * S, S, dh.data() + r * S);
    if (Cell::kHasCellState && p.dc_T) std::copy_n(p.dc_T + b * H, H, dc.data() + r * H);
  }

  // Per-step products: dh_{t-1} = dg W_hh (the split cell: d(r*h) = dg_n W_hn first, then the
  // r,z blocks), and dm = dh W_hr, each split by output columns over the threads.
  constexpr index_t kSplit = Cell::kSplitRecurrent ? 1 : 0;
  const index_t GH1 = GH - kSplit * H;
  RunPlan plan(B, B * GH * S, p.bf16 != Bf16Kernel::kNone);
  StepProducts<T> rec(plan, p.W_hh, GH1, S, S, false, B, p.bf16);
  StepProducts<T> rec_n(plan, kSplit ? p.W_hh + GH1 * H : nullptr, H, H, H, false, B, p.bf16);
  StepProducts<T> proj(plan, p.W_hr, S, H, H, false, B, p.bf16);

  plan.run([&](const TeamContext& ctx) {
    const int tid = ctx.tid;
    rec[tid].pack();
    rec_n[tid].pack();
    proj[tid].pack();
    for (index_t k = T_ - 1; k >= 0; --k) {
      if (interrupt.requested()) break;  // read by all threads here; set before a barrier below
      const index_t t = RowSchedule::time_of(s, k);
      const index_t n = sched.n_active[t];
      const auto [r0, r1] = ctx.part(n);
      const index_t tBH = t * B * H, tBS = t * B * S;
      if (project) {  // dh_t = carried + dy_t; dm_t = dh_t W_hr; the cell then sees dm_t only
        for (index_t r = r0; r < r1; ++r) {
          T* d = dh.data() + r * S;
          if (p.dy) {
            const T* dyr = p.dy + tBS + rows[r] * S;
            for (index_t j = 0; j < S; ++j) d[j] += dyr[j];
          }
          std::copy_n(d, S, dh_seq + tBS + rows[r] * S);
        }
        ctx.barrier();
        proj[tid].apply(n, dh.data(), S, T(0), dm.data(), H);
        ctx.barrier();
      }
      StepBackward<T> base{p.dy && !project ? p.dy + tBH : zero_dy.data(),
                           p.gates + t * B * GH,
                           Cell::kHasExtra ? p.extra + tBH : nullptr,
                           project ? nullptr : offset(p.hprev, tBS),
                           Cell::kHasCellState ? p.cprev + tBH : nullptr,
                           project ? dm.data() : dh.data(),
                           Cell::kHasCellState ? dc.data() : nullptr,
                           dgx + t * B * GH,
                           dg.data(),
                           Cell::kSplitRecurrent ? d_reset_h.data() : nullptr,
                           Cell::kClip ? p.keep + t * B * GH : nullptr,
                           p.peep};
      if constexpr (Cell::kSplitRecurrent) {
        backward_rows<Cell>(r0, r1, H, rows, base, 1);
        ctx.barrier();
        rec_n[tid].apply(n, dg.data() + GH1, GH, T(0), d_reset_h.data(), H);
        ctx.barrier();
        backward_rows<Cell>(r0, r1, H, rows, base, 2);
        ctx.barrier();
        rec[tid].apply(n, dg.data(), GH, T(1), dh.data(), S);
      } else {
        backward_rows<Cell>(r0, r1, H, rows, base, 0);
        if constexpr (Cell::kSeparateRecurrentGrad) {
          for (index_t r = r0; r < r1; ++r)
            std::copy_n(dg.data() + r * GH + GH - H, H, dgh_last + tBH + rows[r] * H);
        }
        ctx.barrier();
        rec[tid].apply(n, dg.data(), GH, Cell::kDirectStateGrad ? T(1) : T(0), dh.data(), S);
      }
      if (tid == 0) interrupt.poll();  // after this step's first barrier (see interrupt.hpp)
      ctx.barrier();
    }
  });
  if (interrupt.requested()) return;  // the binding raises; the outputs are dropped

  plan.release();
  for (index_t r = 0; r < B; ++r) {
    std::copy_n(dh.data() + r * S, S, p.dh0 + rows[r] * S);
    if constexpr (Cell::kHasCellState) std::copy_n(dc.data() + r * H, H, p.dc0 + rows[r] * H);
  }

  // Peephole gradients: i and f saw c_{t-1}, o saw c_t = f c_{t-1} + i g (from the saved gates);
  // summed over the valid rows after the loop, one thread, in a fixed order (never rounded).
  if constexpr (Cell::kPeep) {
    std::fill_n(p.dpeep, 3 * H, T(0));
    T* dp_i = p.dpeep;
    T* dp_f = p.dpeep + H;
    T* dp_o = p.dpeep + 2 * H;
    for (index_t t = 0; t < T_; ++t)
      for (index_t b = 0; b < B; ++b) {
        if (s.lengths && s.lengths[b] <= t) continue;
        const index_t row = t * B + b;
        const T* d = dgx + row * GH;
        const T* gt = p.gates + row * GH;
        const T* cp = p.cprev + row * H;
        for (index_t j = 0; j < H; ++j) {
          const T c_t = gt[H + j] * cp[j] + gt[j] * gt[2 * H + j];
          dp_i[j] += d[j] * cp[j];
          dp_f[j] += d[H + j] * cp[j];
          dp_o[j] += d[3 * H + j] * c_t;
        }
      }
  }

  // Bias gradients: sums of the gate gradients (never rounded).
  if (p.db_ih) sum_rows(TB, GH, dgx, GH, p.db_ih);
  if (p.db_hh) {
    if constexpr (Cell::kSeparateRecurrentGrad) {
      sum_rows(TB, GH - H, dgx, GH, p.db_hh);
      sum_rows(TB, H, dgh_last, H, p.db_hh + GH - H);
    } else if (p.db_ih) {
      std::copy_n(p.db_ih, GH, p.db_hh);  // the same sum: both biases enter every gate alike
    } else {
      sum_rows(TB, GH, dgx, GH, p.db_hh);
    }
  }

  // Whole-sequence GEMMs over the T*B rows (each can take a good part of the call: polled
  // between them).
  // With precision="bf16" every operand of a weight gradient is rounded to bfloat16 (the
  // gradients in place, after the bias sums above read them; the saved arrays in copies) and the
  // products, exact in float32, are summed by the BLAS in float32.
  const bool bf16 = p.bf16 != Bf16Kernel::kNone;
  PooledBuffer<T> x_bf16, h_bf16, extra_bf16, m_bf16, h0_bf16;
  auto rounded = [&](const T* a, index_t n, PooledBuffer<T>& copy) -> const T* {
    if (!bf16 || !a) return a;
    if constexpr (std::is_same_v<T, float>) round_to_bf16(a, n, scratch(copy, n));
    return copy.data();
  };
  if (bf16) {
    if constexpr (std::is_same_v<T, float>) {
      round_to_bf16(dgx, TB * GH, dgx);
      if (dgh_last) round_to_bf16(dgh_last, TB * H, dgh_last);
      if (dh_seq) round_to_bf16(dh_seq, TB * S, dh_seq);
    }
    x_valid = rounded(x_valid, TB * I, x_bf16);
  }
  const T* hprev = rounded(p.hprev, TB * S, h_bf16);
  sequence_gemm(false, TB, I, GH, dgx, GH, p.W_ih, I, p.dx, I, true, p.bf16);
  if (interrupt.poll_now()) return;
  gemm(true, false, int(GH), int(I), int(TB), T(1), dgx, int(GH), x_valid, int(I), T(0), p.dW_ih, int(I));
  if (interrupt.poll_now()) return;
  if constexpr (Cell::kSplitRecurrent) {  // r,z blocks saw h_{t-1}; the n block saw r * h_{t-1}
    gemm(true, false, int(GH1), int(H), int(TB), T(1), dgx, int(GH), hprev, int(H), T(0), p.dW_hh, int(H));
    gemm(true, false, int(H), int(H), int(TB), T(1), dgx + GH1, int(GH), rounded(p.extra, TB * H, extra_bf16),
         int(H), T(0), p.dW_hh + GH1 * H, int(H));
  } else if constexpr (Cell::kSeparateRecurrentGrad) {  // all blocks saw h_{t-1}; the last's
    const index_t GHl = GH - H;                         // gradient differs on that side
    gemm(true, false, int(GHl), int(S), int(TB), T(1), dgx, int(GH), hprev, int(S), T(0), p.dW_hh, int(S));
    gemm(true, false, int(H), int(S), int(TB), T(1), dgh_last, int(H), hprev, int(S), T(0), p.dW_hh + GHl * S,
         int(S));
  } else if (hprev) {
    gemm(true, false, int(GH), int(S), int(TB), T(1), dgx, int(GH), hprev, int(S), T(0), p.dW_hh, int(S));
  } else {  // h_{t-1} = gates row of the step before (in processing order), h0 at the first step
    const index_t BGH = B * GH, first = s.reverse ? T_ - 1 : 0;
    const T* dg_shifted = s.reverse ? dgx : dgx + BGH;     // steps with a previous step
    const T* gates = rounded(p.gates, TB * GH, h_bf16);    // (the gates are h_t here)
    const T* h_shifted = s.reverse ? gates + BGH : gates;  // ... and that previous step
    gemm(true, false, int(GH), int(S), int(std::max<index_t>(T_ - 1, 0) * B), T(1), dg_shifted, int(GH),
         h_shifted, int(S), T(0), p.dW_hh, int(S));
    if (p.h0 && T_ > 0)
      gemm(true, false, int(GH), int(S), int(B), T(1), dgx + first * BGH, int(GH),
           rounded(p.h0, B * S, h0_bf16), int(S), T(1), p.dW_hh, int(S));
  }
  if (project)
    gemm(true, false, int(S), int(H), int(TB), T(1), dh_seq, int(S), rounded(p.m, TB * H, m_bf16), int(H),
         T(0), p.dW_hr, int(H));
}

}  // namespace rnnkit

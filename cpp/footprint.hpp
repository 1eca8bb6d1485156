// What one sequence call allocates, in bytes, before it allocates it: the Python layer's size
// check (ops/recurrent.py, through the private binding _core._sequence_terms) compares it with
// the memory available and raises MemoryError naming the bytes instead of letting the call be
// killed half-way (the bundled OpenBLAS calls exit(1) when its buffer cannot be allocated).
//
// Each term below is one allocation of bindings.cpp's forward/backward or of driver.hpp's
// sequence_forward/sequence_backward, from the same shapes and in the same order; a change to
// those allocations must be mirrored here (tests/test_memory_limits.py checks that a call's
// peak address space stays within the count).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "block_gemm.hpp"
#include "cells.hpp"
#include "common.hpp"
#include "driver.hpp"

namespace rnnkit {

// The bundled OpenBLAS allocates one GEMM buffer per calling thread on its first product and
// keeps it: BUFFER_SIZE, 32 MiB on x86-64 (measured: the address space grows by 32.2 MiB at the
// first sgemm), plus page alignment. Every call that may use the BLAS budgets it, since the
// calling thread's buffer may not exist yet.
constexpr std::size_t kBlasBufferBytes = std::size_t(33) << 20;

// One allocation: what it is, how many elements of how many bytes. (Terms, not a total: each
// count fits 64 bits once the GEMM sizes are checked, a sum in bytes may not; Python adds them.)
struct Term {
  const char* name;
  std::size_t count;
  std::size_t itemsize;
};
using Terms = std::vector<Term>;

struct SequenceCall {
  index_t T, B, I, H, S;  // S: the state size (H, or P with a projection)
  bool training;          // forward: keep the workspace
  bool lengths;           // variable lengths given
  bool project;           // LSTM projection W_hr
  bool dy;                // backward: dy given (else zeros are made)
  bool b_ih, b_hh;        // backward: bias gradients wanted
  bool bf16 = false;      // precision="bf16" (float32): bf16_gemm.hpp's pair panels and scratch
  bool clip = false;      // the Clip cell: its mask (saved, or one step's scratch)
};

// precision="bf16": the pair panels of a K x N product (all threads' columns; each thread's
// panel scratch besides), and its A rows as pairs for n rows (per thread for a per-step product,
// once for a whole-sequence one).
inline std::size_t pair_panel_elements(index_t K, index_t N, int nthreads = 2) {
  const index_t K2p = PairPanels::pairs_for(K);
  return std::size_t(K2p * N + nthreads * K2p * PairPanels::width_for(1));
}
inline std::size_t pair_row_elements(index_t n, index_t K) {
  return std::size_t(n * PairPanels::pairs_for(K));
}

// Elements rnnkit's blocked kernel packs for C (M, N) = A (M, K) @ op(B) (sequence_gemm).
inline std::size_t sequence_gemm_elements(index_t M, index_t N, index_t K, bool few_rows_on_blas = true) {
  if ((few_rows_on_blas && M < kBlockGemmMinRows) || K == 0) return 0;      // the BLAS (budgeted separately)
  return std::size_t(std::min(K, BlockGemm<float>::kKc)) * std::size_t(N);  // all threads' panels
}

template <class Cell, class T>
Terms sequence_forward_terms(const SequenceCall& c) {
  const std::size_t T_ = c.T, B = c.B, I = c.I, H = c.H, S = c.S, GH = Cell::G * c.H;
  const std::size_t GH1 = GH - (Cell::kSplitRecurrent ? H : 0);
  const SeqShape shape{c.T, c.B, c.I, c.H, c.S, false, nullptr};
  bool packed = c.B <= small_batch_limit().load();
  Terms terms;
  auto add = [&](const char* name, std::size_t count) { terms.push_back({name, count, sizeof(T)}); };
  // bindings.cpp forward: the outputs
  add("y", T_ * B * S);
  add("h_T", B * S);
  if (Cell::kHasCellState) add("c_T", B * H);
  if (c.training) {  // the workspace
    if (c.lengths || saves_hprev<Cell>(shape)) add("hprev", T_ * B * S);
    add("gates", T_ * B * GH);
    if (Cell::kHasCellState) add("cprev", T_ * B * H);
    if (Cell::kHasExtra) add("extra", T_ * B * H);
    if (c.clip) add("keep", T_ * B * GH);
    if (c.project) add("m", T_ * B * H);
    if (c.lengths) terms.push_back({"lengths (the workspace's copy)", B, sizeof(std::int64_t)});
  }
  // driver.hpp sequence_forward
  if (!c.training) add("gx (pooled scratch)", T_ * B * GH);
  add("gh, h, zero_bias", B * GH + B * S + GH);
  if (Cell::kHasCellState) add("c", B * H);
  if (Cell::kSplitRecurrent) add("reset_h", B * H);
  if (!c.training && Cell::kHasExtra) add("extra_scratch", B * H);
  if (!c.training && c.clip) add("keep_scratch", B * GH);
  if (c.project) add("m_rows", B * H);
  if (c.project && !c.training) add("m_scratch", B * H);
  const bool small_projection = small_projection_for(c.T, c.B, index_t(GH), c.I);
  if (c.bf16) {  // pair panels (4-byte pairs) and A's rows as pairs, 2 threads' worth
    auto pairs = [&](const char* name, std::size_t count) { terms.push_back({name, count, 4}); };
    if (!small_projection) {
      pairs("x W_ih^T (x as pairs)", pair_row_elements(c.T * c.B, c.I));
      pairs("x W_ih^T (panels)", pair_panel_elements(c.I, index_t(GH)));
    }
    pairs("rec", pair_panel_elements(c.S, index_t(GH1)) + 2 * pair_row_elements(c.B, c.S));
    if (small_projection)
      pairs("in_proj", pair_panel_elements(c.I, index_t(GH)) + 2 * pair_row_elements(c.T * c.B, c.I));
    if (Cell::kSplitRecurrent)
      pairs("rec_n", pair_panel_elements(c.H, c.H) + 2 * pair_row_elements(c.B, c.H));
    if (c.project) pairs("proj", pair_panel_elements(c.H, c.S) + 2 * pair_row_elements(c.B, c.H));
    packed = false;  // (no float32 panels)
  } else if (!small_projection) {
    add("x W_ih^T", sequence_gemm_elements(c.T * c.B, index_t(GH), c.I, false));
  }
  if (packed) {  // per-thread packed weights
    add("rec", S * GH1);
    if (small_projection) add("in_proj", I * GH);
    if (Cell::kSplitRecurrent) add("rec_n", H * H);
    if (c.project) add("proj", H * S);
  }
  terms.push_back({"row schedule", T_ + B, sizeof(index_t)});
  terms.push_back({"BLAS buffer", kBlasBufferBytes, 1});
  return terms;
}

template <class Cell, class T>
Terms sequence_backward_terms(const SequenceCall& c) {
  const std::size_t T_ = c.T, B = c.B, I = c.I, H = c.H, S = c.S, GH = Cell::G * c.H, TB = T_ * B;
  const std::size_t GH1 = GH - (Cell::kSplitRecurrent ? H : 0);
  const bool packed = c.B <= small_batch_limit().load() && !c.bf16;
  Terms terms;
  auto add = [&](const char* name, std::size_t count) { terms.push_back({name, count, sizeof(T)}); };
  // bindings.cpp backward: the gradients
  add("dx", TB * I);
  add("dh0", B * S);
  add("dW_ih", GH * I);
  add("dW_hh", GH * S);
  if (c.project) add("dW_hr", S * H);
  if (Cell::kHasCellState) add("dc0", B * H);
  if (c.b_ih) add("db_ih", GH);
  if (c.b_hh) add("db_hh", GH);
  // driver.hpp sequence_backward
  add("dgx (pooled scratch)", TB * GH);
  if (Cell::kSeparateRecurrentGrad) add("dgh_last (pooled)", TB * H);
  add("dg, dh", B * GH + B * S);
  if (Cell::kHasCellState) add("dc", B * H);
  if (Cell::kSplitRecurrent) add("d_reset_h", B * H);
  if (!c.dy || c.project) add("zero_dy", B * H);
  if (c.project) add("dm", B * H);
  if (c.project) add("dh_seq (pooled)", TB * S);
  if (c.lengths) add("x_valid (pooled)", TB * I);
  if (packed) {  // per-thread packed weights
    add("rec", GH1 * S);
    if (Cell::kSplitRecurrent) add("rec_n", H * H);
    if (c.project) add("proj", S * H);
  }
  if (c.bf16) {  // pair panels and rows; the weight gradients' operands rounded into copies
    auto pairs = [&](const char* name, std::size_t count) { terms.push_back({name, count, 4}); };
    pairs("rec", pair_panel_elements(index_t(GH1), c.S) + 2 * pair_row_elements(c.B, index_t(GH)));
    if (Cell::kSplitRecurrent)
      pairs("rec_n", pair_panel_elements(c.H, c.H) + 2 * pair_row_elements(c.B, c.H));
    if (c.project) pairs("proj", pair_panel_elements(c.S, c.H) + 2 * pair_row_elements(c.B, c.S));
    pairs("dx = dG W_ih (dG as pairs)", pair_row_elements(c.T * c.B, index_t(GH)));
    pairs("dx = dG W_ih (panels)", pair_panel_elements(index_t(GH), c.I));
    add("x rounded", TB * I);
    add("h_{t-1} rounded (or the gates)", TB * std::max(S, GH));
    if (Cell::kSplitRecurrent) add("r * h_{t-1} rounded", TB * H);
    if (c.project) add("m rounded", TB * H);
    add("h0 rounded", B * S);
  } else {
    add("dx = dG W_ih", sequence_gemm_elements(c.T * c.B, c.I, index_t(GH)));
  }
  terms.push_back({"row schedule", T_ + B, sizeof(index_t)});
  terms.push_back({"BLAS buffer", kBlasBufferBytes, 1});  // the weight gradients' GEMMs
  return terms;
}

template <class Cell>
Terms sequence_terms(bool backward, bool float64, const SequenceCall& c) {
  if (float64)
    return backward ? sequence_backward_terms<Cell, double>(c) : sequence_forward_terms<Cell, double>(c);
  return backward ? sequence_backward_terms<Cell, float>(c) : sequence_forward_terms<Cell, float>(c);
}

}  // namespace rnnkit

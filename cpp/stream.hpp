// Streaming inference of one layer (one direction, forward order): the weights are packed once,
// when the stream is made, and each call runs a chunk of T >= 1 steps from the state the last
// call left, on the calling thread.
//
// Why: a sequence call packs its weights (small_gemm.hpp, PackedPanels) for every call; at one
// step per call (batch 1, I = H = 128) that packing and the call's setup took most of the
// ~20 us of a step, against ~3 us per step inside a 50-step call.
//
// Bitwise: each step is computed as sequence_forward (driver.hpp) computes it for the same
// batch when its per-step products are packed (B <= small_batch_limit(); the Python side uses
// this stream only then): the input projection and the recurrent products on the packed kernel
// (each element the same FMA chain over k as the blocked kernel, whatever the tile, panel width
// or column split), the cell's elementwise part through the same forward_rows. So a sequence fed
// in chunks of any length gives bitwise what one call on the whole sequence gives.
#pragma once

#include <algorithm>
#include <numeric>
#include <vector>

#include "driver.hpp"

namespace rnnkit {

// A stream of one layer, type-erased over the cell (the binding holds it by dtype only).
template <class T>
struct LayerStreamBase {
  virtual ~LayerStreamBase() = default;
  // y (T_, B, S) = the layer's outputs for x (T_, B, I); h (B, S) and c (B, H) are the state,
  // read and written in place. Returns false when interrupted (the state is then mid-chunk).
  virtual bool run(index_t T_, const T* x, T* y, T* h, T* c) = 0;
};

template <class Cell, class T>
struct LayerStream final : LayerStreamBase<T> {
  static constexpr index_t kSplit = Cell::kSplitRecurrent ? 1 : 0;
  index_t B, I, H, S, GH, GH1;
  bool project;
  // The input projection's panels for a call's T*B rows: as wide as the batch's (a step at batch
  // 1: one row, 8-vector panels), and for B < 4 also two vectors wide for chunks of 4 or more
  // rows (8-row tiles: a 50-step chunk at batch 1 ran 5.1 us a step on the 8-vector panels,
  // which take one row at a time). Either gives the same bits (small_gemm.hpp).
  PackedPanels<T> in_proj, in_proj_rows, rec, rec_n, proj;
  PackedKernelChoice in_choice, in_rows_choice, rec_choice, rec_n_choice, proj_choice;
  std::vector<T> b_ih, b_hh;  // copies (zeros when absent)
  std::vector<T> gh, reset_h, extra_scratch, m_rows, m_scratch, keep_scratch;
  T clip;                     // the bound of a Clip cell
  std::vector<index_t> rows;  // the identity: every row runs every step
  PooledBuffer<T> gx_buf;

  // W_ih (G*H, I), W_hh (G*H, S), b_ih, b_hh (G*H) or null, W_hr (S, H) or null; copied.
  LayerStream(index_t B_, index_t I_, index_t H_, index_t S_, const T* W_ih, const T* W_hh, const T* b_ih_,
              const T* b_hh_, const T* W_hr, T clip_ = T(0))
      : B(B_),
        I(I_),
        H(H_),
        S(S_),
        GH(Cell::G * H_),
        GH1(Cell::G * H_ - kSplit * H_),
        project(W_hr != nullptr),
        clip(clip_) {
    auto pack = [&](PackedPanels<T>& P, PackedKernelChoice& choice, const T* W, index_t K, index_t N,
                    index_t ldw, index_t rows_ = 0) {
      P.allocate(K, N, rows_ ? rows_ : B);
      P.fill(W, ldw, true, 0);
      choice = packed_choice<T>(K * N);
    };
    pack(in_proj, in_choice, W_ih, I, GH, I);
    if (B < 4) pack(in_proj_rows, in_rows_choice, W_ih, I, GH, I, 4);
    pack(rec, rec_choice, W_hh, S, GH1, S);
    if (kSplit) pack(rec_n, rec_n_choice, W_hh + GH1 * H, H, H, H);
    if (project) pack(proj, proj_choice, W_hr, H, S, H);
    b_ih.assign(std::size_t(GH), T(0));
    b_hh.assign(std::size_t(GH), T(0));
    if (b_ih_) std::copy_n(b_ih_, GH, b_ih.data());
    if (b_hh_) std::copy_n(b_hh_, GH, b_hh.data());
    gh.resize(std::size_t(B * GH));
    if (Cell::kSplitRecurrent) reset_h.resize(std::size_t(B * H));
    if (Cell::kHasExtra) extra_scratch.resize(std::size_t(B * H));
    if (Cell::kClip) keep_scratch.resize(std::size_t(B * GH));
    if (project) {
      m_rows.resize(std::size_t(B * H));
      m_scratch.resize(std::size_t(B * H));
    }
    rows.resize(std::size_t(B));
    std::iota(rows.begin(), rows.end(), index_t(0));
  }

  bool run(index_t T_, const T* x, T* y, T* h, T* c) override {
    Interrupt interrupt(double(B) * GH * S);
    T* gx = scratch(gx_buf, T_ * B * GH);
    if (B < 4 && T_ * B >= 4)
      small_gemm(T_ * B, x, I, in_proj_rows, T(0), gx, GH, in_rows_choice);
    else
      small_gemm(T_ * B, x, I, in_proj, T(0), gx, GH, in_choice);
    for (index_t t = 0; t < T_; ++t) {
      if (interrupt.requested()) return false;
      const index_t tBS = t * B * S;
      const StepForward<T> base{gx + t * B * GH,
                                gh.data(),
                                b_ih.data(),
                                b_hh.data(),
                                project ? m_rows.data() : h,
                                Cell::kHasCellState ? c : nullptr,
                                project ? m_scratch.data() : y + tBS,
                                Cell::kHasExtra ? extra_scratch.data() : nullptr,
                                Cell::kSplitRecurrent ? reset_h.data() : nullptr,
                                clip,
                                Cell::kClip ? keep_scratch.data() : nullptr};
      small_gemm(B, h, S, rec, T(0), gh.data(), GH, rec_choice);
      if constexpr (Cell::kSplitRecurrent) {
        forward_rows<Cell>(0, B, H, rows.data(), base, 1);
        small_gemm(B, reset_h.data(), H, rec_n, T(0), gh.data() + GH1, GH, rec_n_choice);
        forward_rows<Cell>(0, B, H, rows.data(), base, 2);
      } else {
        forward_rows<Cell>(0, B, H, rows.data(), base, 0);
      }
      interrupt.poll();
      if (project) {
        small_gemm(B, m_rows.data(), H, proj, T(0), h, S, proj_choice);
        std::copy_n(h, B * S, y + tBS);
      }
    }
    return !interrupt.requested();
  }
};

}  // namespace rnnkit

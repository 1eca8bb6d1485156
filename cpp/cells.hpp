// The cells: only their elementwise parts. The sequence driver (driver.hpp) does the GEMMs,
// the time loop, variable lengths and the workspace; a cell says how one batch row of H units
// turns pre-activations into the new state (forward) and how a state gradient turns into
// gate gradients (backward).
//
// Letters: T time steps, B batch, I input size, H hidden size, G gates (1 rnn, 4 lstm, 3 gru).
// Gate order and weight layout are PyTorch's: LSTM i,f,g,o; GRU r,z,n; W_ih (G*H, I),
// W_hh (G*H, H). Row pointers below point at one batch row; a "(G*H)" row holds the G gate
// blocks of H units one after another.
//
// What a cell declares:
//   G                      number of gate blocks
//   kHasCellState          carries c besides h (LSTM)
//   kDirectStateGrad       dh_{t-1} has a term besides dgates @ W_hh (GRU: dh_t * z)
//   kSeparateRecurrentGrad the recurrent side's gate gradient differs from the input side's in
//                          the last gate block (reset-after GRU: the n block is scaled by r)
//   kSplitRecurrent        the last gate block's recurrent GEMM takes a cell-made input
//                          (reset-before GRU: (r * h) W_hn^T), so a step has two GEMMs and
//                          the cell's work comes in two parts around the second one
//   kHasExtra              saves one more (H) row per step for backward
//   kGatesAreState         the saved gates row is h_t itself (vanilla RNN), so h_{t-1} need not
//                          be saved: it is the previous step's gates row (or h0)
//   kClip                  the template argument Clip: ONNX's clip, every activation's input
//                          bounded to [-clip, clip] (a compile-time choice, so the cells without
//                          it run the unchanged loops)
//   kPeep                  LSTM peepholes (ONNX's P), likewise a compile-time choice
#pragma once

#include "common.hpp"
#include "vecmath.hpp"

namespace rnnkit {

// The per-row signatures, shared by every cell (a cell ignores what it does not use; every
// pointer is __restrict so the loops vectorise, and none of them alias):
//
//   forward(H, gates, gh, b_ih, b_hh, h, c, y, extra, reset_h, clip, keep)
//     gates (G*H)  in: x_t W_ih^T; out: the activated gates (saved for backward)
//     gh (G*H)     h_{t-1} W_hh^T;  b_ih, b_hh (G*H) biases (zeros when absent)
//     h, c (H)     in: the previous state; out: the new state.  y (H) out: h_t
//     extra (H)    out: a cell-specific row saved for backward
//     reset_h (H)  out: the input of the split recurrent GEMM (reset-before GRU: r * h_{t-1})
//     clip         the bound (Clip cells only)
//     keep (G*H)   out (Clip cells only): 1 where a gate's pre-activation was within the bound,
//                  0 where it was cut (saved for backward: its gradient is zero there)
//     peep (3*H)   the peephole weights of the i, f, o gates (Peep LSTM cells only)
//
//   backward(H, dy, gates, extra, h_prev, c_prev, dh, dc, dgx, dg, d_reset_h, keep)
//     dy (H) gradient of y_t; gates, extra, h_prev, c_prev as saved by forward
//     dh (H)       in: the carried gradient of h_t; out: the direct part of dL/dh_{t-1}
//                  (the driver then adds dg @ W_hh);  dc (H) likewise for c
//     dgx (G*H)    out: input-side gate gradient (for dx, dW_ih, db_ih)
//     dg (G*H)     out: recurrent-side gate gradient (for dh_{t-1}, dW_hh, db_hh)
//     d_reset_h (H) in (split cell, part two): the gradient of reset_h
//     keep (G*H)   as saved by forward (Clip cells only)
//     peep (3*H)   as forward's (Peep LSTM cells only)

// Gate blocks of one row are H apart: iteration j touches only index j of each block, so no
// iteration depends on another. The compiler cannot prove that for a runtime H; tell it.
#define RNNKIT_IVDEP _Pragma("GCC ivdep")

#define RNNKIT_FORWARD_ARGS(T)                                                                               \
  int H, T *__restrict gates, const T *__restrict gh, const T *__restrict b_ih, const T *__restrict b_hh,    \
      T *__restrict h, T *__restrict c, T *__restrict y, T *__restrict extra, T *__restrict reset_h, T clip, \
      T *__restrict keep, const T *__restrict peep
#define RNNKIT_BACKWARD_ARGS(T)                                                                     \
  int H, const T *__restrict dy, const T *__restrict gates, const T *__restrict extra,              \
      const T *__restrict h_prev, const T *__restrict c_prev, T *__restrict dh, T *__restrict dc,   \
      T *__restrict dgx, T *__restrict dg, const T *__restrict d_reset_h, const T *__restrict keep, \
      const T *__restrict peep

// ONNX's clip: an activation's input a bounded to [-clip, clip]; *keep records whether a was
// within (1: the gradient passes, as through a clamp at its bounds) or cut (0). NaN stays NaN.
template <bool Clip, class T>
RNNKIT_INLINE T bound(T a, T clip, T* __restrict keep) {
  if constexpr (Clip) {
    *keep = (a >= -clip && a <= clip) ? T(1) : T(0);
    return a < -clip ? -clip : (a > clip ? clip : a);
  } else {
    (void)clip;
    (void)keep;
    return a;
  }
}

// The gradient d of a bounded input: zero where forward cut it.
template <bool Clip, class T>
RNNKIT_INLINE T kept(T d, const T* __restrict keep) {
  if constexpr (Clip) {
    return d * *keep;
  } else {
    (void)keep;
    return d;
  }
}

// Vanilla RNN: h_t = act(x W_ih^T + b_ih + h W_hh^T + b_hh).
template <bool Relu, bool Clip = false>
struct RnnCell {
  static constexpr int G = 1;
  static constexpr bool kClip = Clip;
  static constexpr bool kPeep = false;
  static constexpr bool kHasCellState = false, kDirectStateGrad = false, kSeparateRecurrentGrad = false,
                        kSplitRecurrent = false, kHasExtra = false, kGatesAreState = true;

  template <class T>
  RNNKIT_INLINE static void forward(RNNKIT_FORWARD_ARGS(T)) {
    RNNKIT_IVDEP
    for (int j = 0; j < H; ++j) {
      const T pre = bound<Clip>(gates[j] + b_ih[j] + gh[j] + b_hh[j], clip, keep + j);
      const T h_new = Relu ? (pre < T(0) ? T(0) : pre) : tanh_(pre);  // relu(NaN) = NaN
      h[j] = h_new;
      y[j] = h_new;
      gates[j] = h_new;  // the derivative of act is a function of its output
    }
  }

  template <class T>
  RNNKIT_INLINE static void backward(RNNKIT_BACKWARD_ARGS(T)) {
    RNNKIT_IVDEP
    for (int j = 0; j < H; ++j) {
      const T dh_t = dh[j] + dy[j];
      const T h = gates[j];
      const T da = kept<Clip>(Relu ? (h > T(0) ? dh_t : T(0)) : dh_t * (T(1) - h * h), keep + j);
      dgx[j] = da;
      dg[j] = da;
    }
  }
};

// LSTM: [i f g o] = [σ σ tanh σ](x W_ih^T + b_ih + h W_hh^T + b_hh),
// c_t = f c_{t-1} + i g, h_t = o tanh(c_t). Saves the gates and tanh(c_t).
// Coupled (ONNX's input_forget = 1): f = 1 - i; the f block's pre-activation is not used (its
// gradient is zero), as in onnxruntime.
// Peep (ONNX's P): the i and f pre-activations add peep_i c_{t-1}, peep_f c_{t-1}, the o
// pre-activation adds peep_o c_t (inside the clip, as onnxruntime; Coupled: peep_f unused).
template <bool Clip = false, bool Coupled = false, bool Peep = false>
struct LstmCell {
  static constexpr int G = 4;
  static constexpr bool kClip = Clip;
  static constexpr bool kPeep = Peep;
  // Gate blocks of a (G*H) row, in PyTorch's order (block k holds units [k*H, (k+1)*H)).
  static constexpr int kI = 0, kF = 1, kG = 2, kO = 3;
  // Blocks of the peephole row (3*H): i, f, o.
  static constexpr int kPI = 0, kPF = 1, kPO = 2;
  static constexpr bool kHasCellState = true, kDirectStateGrad = false, kSeparateRecurrentGrad = false,
                        kSplitRecurrent = false, kHasExtra = true, kGatesAreState = false;

  // peep_k * c where the cell has peepholes, else nothing (the default cell's sums unchanged).
  template <class T>
  RNNKIT_INLINE static T peephole(T a, const T* __restrict peep, T c) {
    if constexpr (Peep) {
      return a + *peep * c;
    } else {
      (void)peep;
      (void)c;
      return a;
    }
  }

  template <class T>
  RNNKIT_INLINE static void forward(RNNKIT_FORWARD_ARGS(T)) {
    RNNKIT_IVDEP
    for (int j = 0; j < H; ++j) {
      const T c_prev = c[j];
      const T i = sigmoid_(
          bound<Clip>(peephole(gates[kI * H + j] + b_ih[kI * H + j] + gh[kI * H + j] + b_hh[kI * H + j],
                               peep + kPI * H + j, c_prev),
                      clip, keep + kI * H + j));
      T f;
      if constexpr (Coupled) {
        f = T(1) - i;
        if constexpr (Clip) keep[kF * H + j] = T(0);  // no input of its own: nothing passes
      } else {
        f = sigmoid_(
            bound<Clip>(peephole(gates[kF * H + j] + b_ih[kF * H + j] + gh[kF * H + j] + b_hh[kF * H + j],
                                 peep + kPF * H + j, c_prev),
                        clip, keep + kF * H + j));
      }
      const T g = tanh_(bound<Clip>(gates[kG * H + j] + b_ih[kG * H + j] + gh[kG * H + j] + b_hh[kG * H + j],
                                    clip, keep + kG * H + j));
      const T c_new = f * c_prev + i * g;
      const T o = sigmoid_(
          bound<Clip>(peephole(gates[kO * H + j] + b_ih[kO * H + j] + gh[kO * H + j] + b_hh[kO * H + j],
                               peep + kPO * H + j, c_new),
                      clip, keep + kO * H + j));
      const T tc = tanh_(c_new);
      const T h_new = o * tc;
      c[j] = c_new;
      h[j] = h_new;
      y[j] = h_new;
      gates[kI * H + j] = i;
      gates[kF * H + j] = f;
      gates[kG * H + j] = g;
      gates[kO * H + j] = o;
      extra[j] = tc;
    }
  }

  template <class T>
  RNNKIT_INLINE static void backward(RNNKIT_BACKWARD_ARGS(T)) {
    RNNKIT_IVDEP
    for (int j = 0; j < H; ++j) {
      const T i = gates[kI * H + j], f = gates[kF * H + j], g = gates[kG * H + j], o = gates[kO * H + j];
      const T tc = extra[j];
      const T dh_t = dh[j] + dy[j];
      const T dout = kept<Clip>(dh_t * tc * o * (T(1) - o), keep + kO * H + j);
      T dc_t = dc[j] + dh_t * o * (T(1) - tc * tc);
      if constexpr (Peep) dc_t += dout * peep[kPO * H + j];  // o saw c_t
      T di, df;
      if constexpr (Coupled) {  // c_t = (1 - i) c_{t-1} + i g
        di = kept<Clip>(dc_t * (g - c_prev[j]) * i * (T(1) - i), keep + kI * H + j);
        df = T(0);
      } else {
        di = kept<Clip>(dc_t * g * i * (T(1) - i), keep + kI * H + j);
        df = kept<Clip>(dc_t * c_prev[j] * f * (T(1) - f), keep + kF * H + j);
      }
      const T dgg = kept<Clip>(dc_t * i * (T(1) - g * g), keep + kG * H + j);
      if constexpr (Peep)  // i and f saw c_{t-1}
        dc[j] = dc_t * f + di * peep[kPI * H + j] + df * peep[kPF * H + j];
      else
        dc[j] = dc_t * f;
      dgx[kI * H + j] = dg[kI * H + j] = di;
      dgx[kF * H + j] = dg[kF * H + j] = df;
      dgx[kG * H + j] = dg[kG * H + j] = dgg;
      dgx[kO * H + j] = dg[kO * H + j] = dout;
    }
  }
};

// GRU, reset after the recurrent matmul (PyTorch, cuDNN, Keras reset_after=True):
// r, z = σ(x W_i{r,z}^T + b_i{r,z} + h W_h{r,z}^T + b_h{r,z}),
// n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn)), h_t = (1 - z) n + z h_{t-1}.
// Saves r, z, n and (h W_hn^T + b_hn).
template <bool Clip = false>
struct GruResetAfterCell {
  static constexpr int G = 3;
  static constexpr bool kClip = Clip;
  static constexpr bool kPeep = false;
  static constexpr int kR = 0, kZ = 1, kN = 2;  // gate blocks, PyTorch's order
  static constexpr bool kHasCellState = false, kDirectStateGrad = true, kSeparateRecurrentGrad = true,
                        kSplitRecurrent = false, kHasExtra = true, kGatesAreState = false;

  template <class T>
  RNNKIT_INLINE static void forward(RNNKIT_FORWARD_ARGS(T)) {
    RNNKIT_IVDEP
    for (int j = 0; j < H; ++j) {
      const T r = sigmoid_(bound<Clip>(
          gates[kR * H + j] + b_ih[kR * H + j] + gh[kR * H + j] + b_hh[kR * H + j], clip, keep + kR * H + j));
      const T z = sigmoid_(bound<Clip>(
          gates[kZ * H + j] + b_ih[kZ * H + j] + gh[kZ * H + j] + b_hh[kZ * H + j], clip, keep + kZ * H + j));
      const T ghn = gh[kN * H + j] + b_hh[kN * H + j];
      const T n = tanh_(bound<Clip>(gates[kN * H + j] + b_ih[kN * H + j] + r * ghn, clip, keep + kN * H + j));
      const T h_new = (T(1) - z) * n + z * h[j];
      h[j] = h_new;
      y[j] = h_new;
      gates[kR * H + j] = r;
      gates[kZ * H + j] = z;
      gates[kN * H + j] = n;
      extra[j] = ghn;
    }
  }

  template <class T>
  RNNKIT_INLINE static void backward(RNNKIT_BACKWARD_ARGS(T)) {
    RNNKIT_IVDEP
    for (int j = 0; j < H; ++j) {
      const T r = gates[kR * H + j], z = gates[kZ * H + j], n = gates[kN * H + j];
      const T dh_t = dh[j] + dy[j];
      const T dan = kept<Clip>(dh_t * (T(1) - z) * (T(1) - n * n), keep + kN * H + j);
      const T daz = kept<Clip>(dh_t * (h_prev[j] - n) * z * (T(1) - z), keep + kZ * H + j);
      const T dar = kept<Clip>(dan * extra[j] * r * (T(1) - r), keep + kR * H + j);
      dh[j] = dh_t * z;
      dgx[kR * H + j] = dg[kR * H + j] = dar;
      dgx[kZ * H + j] = dg[kZ * H + j] = daz;
      dgx[kN * H + j] = dan;
      dg[kN * H + j] = dan * r;
    }
  }
};

// GRU, reset before the recurrent matmul (the textbook form, Keras reset_after=False):
// n = tanh(x W_in^T + b_in + (r h_{t-1}) W_hn^T + b_hn). The n block's recurrent GEMM needs
// r, so a step is: GEMM for r,z; part one (r, z, r*h); GEMM for n; part two (n, h_t).
// Saves r, z, n and r * h_{t-1}.
template <bool Clip = false>
struct GruResetBeforeCell {
  static constexpr int G = 3;
  static constexpr bool kClip = Clip;
  static constexpr bool kPeep = false;
  static constexpr int kR = 0, kZ = 1, kN = 2;  // gate blocks, PyTorch's order
  static constexpr bool kHasCellState = false, kDirectStateGrad = true, kSeparateRecurrentGrad = false,
                        kSplitRecurrent = true, kHasExtra = true, kGatesAreState = false;

  template <class T>
  RNNKIT_INLINE static void forward_part1(RNNKIT_FORWARD_ARGS(T)) {
    RNNKIT_IVDEP
    for (int j = 0; j < H; ++j) {
      const T r = sigmoid_(bound<Clip>(
          gates[kR * H + j] + b_ih[kR * H + j] + gh[kR * H + j] + b_hh[kR * H + j], clip, keep + kR * H + j));
      const T z = sigmoid_(bound<Clip>(
          gates[kZ * H + j] + b_ih[kZ * H + j] + gh[kZ * H + j] + b_hh[kZ * H + j], clip, keep + kZ * H + j));
      const T rh = r * h[j];
      gates[kR * H + j] = r;
      gates[kZ * H + j] = z;
      reset_h[j] = rh;
      extra[j] = rh;
    }
  }

  template <class T>
  RNNKIT_INLINE static void forward_part2(RNNKIT_FORWARD_ARGS(T)) {
    RNNKIT_IVDEP
    for (int j = 0; j < H; ++j) {
      const T z = gates[kZ * H + j];
      const T n = tanh_(bound<Clip>(gates[kN * H + j] + b_ih[kN * H + j] + gh[kN * H + j] + b_hh[kN * H + j],
                                    clip, keep + kN * H + j));
      const T h_new = (T(1) - z) * n + z * h[j];
      h[j] = h_new;
      y[j] = h_new;
      gates[kN * H + j] = n;
    }
  }

  // Part one: everything that does not need d(r*h): the z and n blocks and the z*dh term.
  template <class T>
  RNNKIT_INLINE static void backward_part1(RNNKIT_BACKWARD_ARGS(T)) {
    RNNKIT_IVDEP
    for (int j = 0; j < H; ++j) {
      const T z = gates[kZ * H + j], n = gates[kN * H + j];
      const T dh_t = dh[j] + dy[j];
      const T dan = kept<Clip>(dh_t * (T(1) - z) * (T(1) - n * n), keep + kN * H + j);
      const T daz = kept<Clip>(dh_t * (h_prev[j] - n) * z * (T(1) - z), keep + kZ * H + j);
      dh[j] = dh_t * z;
      dgx[kZ * H + j] = dg[kZ * H + j] = daz;
      dgx[kN * H + j] = dg[kN * H + j] = dan;
    }
  }

  // Part two: d(r*h) = dan W_hn is known; it feeds r's gradient and h_{t-1}'s.
  template <class T>
  RNNKIT_INLINE static void backward_part2(RNNKIT_BACKWARD_ARGS(T)) {
    RNNKIT_IVDEP
    for (int j = 0; j < H; ++j) {
      const T r = gates[kR * H + j];
      const T drh = d_reset_h[j];
      const T dar = kept<Clip>(drh * h_prev[j] * r * (T(1) - r), keep + kR * H + j);
      dh[j] += drh * r;
      dgx[kR * H + j] = dg[kR * H + j] = dar;
    }
  }
};

}  // namespace rnnkit

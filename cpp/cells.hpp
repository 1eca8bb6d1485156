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
//   kSeparateRecurrentGrad the recurrent side's gate gradient differs from the input side's
//                          (reset-after GRU: the n block is scaled by r)
//   kSplitRecurrent        the last gate block's recurrent GEMM takes a cell-made input
//                          (reset-before GRU: (r * h) W_hn^T), so a step has two GEMMs and
//                          the cell's work comes in two parts around the second one
//   kHasExtra              saves one more (H) row per step for backward
#pragma once

#include "vecmath.hpp"

namespace rnnkit {

// One batch row of a forward step. Inputs: gx = x_t W_ih^T (G*H), gh = h_{t-1} W_hh^T (G*H),
// the biases (G*H, zeros when absent). h (and c) hold the previous state on entry and the new
// state on exit. y receives h_t. gates and extra receive what backward needs.
template <class T>
struct RowForward {
  const T* gx;
  const T* gh;
  const T* b_ih;
  const T* b_hh;
  T* h;
  T* c;
  T* y;
  T* gates;    // (G*H) activated gates
  T* extra;    // (H) cell-specific saved row
  T* reset_h;  // (H) input of the split recurrent GEMM (reset-before GRU: r * h_{t-1})
};

// One batch row of a backward step. dh holds the carried gradient of h_t on entry (dy_t is
// added here) and the direct part of the gradient of h_{t-1} on exit (the driver then adds
// dg @ W_hh). dc likewise for c. dgx receives the input-side gate gradient (for dx, dW_ih,
// db_ih), dg the recurrent-side one (for dh_{t-1}, dW_hh, db_hh). For the split cell,
// d_reset_h is the gradient of reset_h (from the second GEMM), read in part two.
template <class T>
struct RowBackward {
  const T* dy;
  const T* gates;
  const T* extra;
  const T* h_prev;
  const T* c_prev;
  T* dh;
  T* dc;
  T* dgx;
  T* dg;
  const T* d_reset_h;
};

// Vanilla RNN: h_t = act(x W_ih^T + b_ih + h W_hh^T + b_hh).
template <bool Relu>
struct RnnCell {
  static constexpr int G = 1;
  static constexpr bool kHasCellState = false, kDirectStateGrad = false,
                        kSeparateRecurrentGrad = false, kSplitRecurrent = false,
                        kHasExtra = false;

  template <class T>
  static inline void forward(int H, const RowForward<T>& a) {
    for (int j = 0; j < H; ++j) {
      const T pre = a.gx[j] + a.b_ih[j] + a.gh[j] + a.b_hh[j];
      const T h = Relu ? (pre < T(0) ? T(0) : pre) : tanh_(pre);  // relu(NaN) = NaN
      a.h[j] = h;
      a.y[j] = h;
      a.gates[j] = h;  // the derivative of act is a function of its output
    }
  }

  template <class T>
  static inline void backward(int H, const RowBackward<T>& a) {
    for (int j = 0; j < H; ++j) {
      const T dh = a.dh[j] + a.dy[j];
      const T h = a.gates[j];
      const T da = Relu ? (h > T(0) ? dh : T(0)) : dh * (T(1) - h * h);
      a.dgx[j] = da;
      a.dg[j] = da;
    }
  }
};

// LSTM: [i f g o] = [σ σ tanh σ](x W_ih^T + b_ih + h W_hh^T + b_hh),
// c_t = f c_{t-1} + i g, h_t = o tanh(c_t). Saves the gates and tanh(c_t).
struct LstmCell {
  static constexpr int G = 4;
  static constexpr bool kHasCellState = true, kDirectStateGrad = false,
                        kSeparateRecurrentGrad = false, kSplitRecurrent = false,
                        kHasExtra = true;

  template <class T>
  static inline void forward(int H, const RowForward<T>& a) {
    for (int j = 0; j < H; ++j) {
      const T i = sigmoid_(a.gx[j] + a.b_ih[j] + a.gh[j] + a.b_hh[j]);
      const T f = sigmoid_(a.gx[H + j] + a.b_ih[H + j] + a.gh[H + j] + a.b_hh[H + j]);
      const T g = tanh_(a.gx[2 * H + j] + a.b_ih[2 * H + j] + a.gh[2 * H + j] + a.b_hh[2 * H + j]);
      const T o = sigmoid_(a.gx[3 * H + j] + a.b_ih[3 * H + j] + a.gh[3 * H + j] + a.b_hh[3 * H + j]);
      const T c = f * a.c[j] + i * g;
      const T tc = tanh_(c);
      const T h = o * tc;
      a.c[j] = c;
      a.h[j] = h;
      a.y[j] = h;
      a.gates[j] = i;
      a.gates[H + j] = f;
      a.gates[2 * H + j] = g;
      a.gates[3 * H + j] = o;
      a.extra[j] = tc;
    }
  }

  template <class T>
  static inline void backward(int H, const RowBackward<T>& a) {
    for (int j = 0; j < H; ++j) {
      const T i = a.gates[j], f = a.gates[H + j], g = a.gates[2 * H + j], o = a.gates[3 * H + j];
      const T tc = a.extra[j];
      const T dh = a.dh[j] + a.dy[j];
      const T dc = a.dc[j] + dh * o * (T(1) - tc * tc);
      const T di = dc * g * i * (T(1) - i);
      const T df = dc * a.c_prev[j] * f * (T(1) - f);
      const T dgg = dc * i * (T(1) - g * g);
      const T dout = dh * tc * o * (T(1) - o);
      a.dc[j] = dc * f;
      a.dgx[j] = a.dg[j] = di;
      a.dgx[H + j] = a.dg[H + j] = df;
      a.dgx[2 * H + j] = a.dg[2 * H + j] = dgg;
      a.dgx[3 * H + j] = a.dg[3 * H + j] = dout;
    }
  }
};

// GRU, reset after the recurrent matmul (PyTorch, cuDNN, Keras reset_after=True):
// r, z = σ(x W_i{r,z}^T + b_i{r,z} + h W_h{r,z}^T + b_h{r,z}),
// n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn)), h_t = (1 - z) n + z h_{t-1}.
// Saves r, z, n and (h W_hn^T + b_hn).
struct GruResetAfterCell {
  static constexpr int G = 3;
  static constexpr bool kHasCellState = false, kDirectStateGrad = true,
                        kSeparateRecurrentGrad = true, kSplitRecurrent = false,
                        kHasExtra = true;

  template <class T>
  static inline void forward(int H, const RowForward<T>& a) {
    for (int j = 0; j < H; ++j) {
      const T r = sigmoid_(a.gx[j] + a.b_ih[j] + a.gh[j] + a.b_hh[j]);
      const T z = sigmoid_(a.gx[H + j] + a.b_ih[H + j] + a.gh[H + j] + a.b_hh[H + j]);
      const T ghn = a.gh[2 * H + j] + a.b_hh[2 * H + j];
      const T n = tanh_(a.gx[2 * H + j] + a.b_ih[2 * H + j] + r * ghn);
      const T h = (T(1) - z) * n + z * a.h[j];
      a.h[j] = h;
      a.y[j] = h;
      a.gates[j] = r;
      a.gates[H + j] = z;
      a.gates[2 * H + j] = n;
      a.extra[j] = ghn;
    }
  }

  template <class T>
  static inline void backward(int H, const RowBackward<T>& a) {
    for (int j = 0; j < H; ++j) {
      const T r = a.gates[j], z = a.gates[H + j], n = a.gates[2 * H + j];
      const T dh = a.dh[j] + a.dy[j];
      const T dan = dh * (T(1) - z) * (T(1) - n * n);
      const T daz = dh * (a.h_prev[j] - n) * z * (T(1) - z);
      const T dar = dan * a.extra[j] * r * (T(1) - r);
      a.dh[j] = dh * z;
      a.dgx[j] = a.dg[j] = dar;
      a.dgx[H + j] = a.dg[H + j] = daz;
      a.dgx[2 * H + j] = dan;
      a.dg[2 * H + j] = dan * r;
    }
  }
};

// GRU, reset before the recurrent matmul (the textbook form, Keras reset_after=False):
// n = tanh(x W_in^T + b_in + (r h_{t-1}) W_hn^T + b_hn). The n block's recurrent GEMM needs
// r, so a step is: GEMM for r,z; part one (r, z, r*h); GEMM for n; part two (n, h_t).
// Saves r, z, n and r * h_{t-1}.
struct GruResetBeforeCell {
  static constexpr int G = 3;
  static constexpr bool kHasCellState = false, kDirectStateGrad = true,
                        kSeparateRecurrentGrad = false, kSplitRecurrent = true,
                        kHasExtra = true;

  template <class T>
  static inline void forward_part1(int H, const RowForward<T>& a) {
    for (int j = 0; j < H; ++j) {
      const T r = sigmoid_(a.gx[j] + a.b_ih[j] + a.gh[j] + a.b_hh[j]);
      const T z = sigmoid_(a.gx[H + j] + a.b_ih[H + j] + a.gh[H + j] + a.b_hh[H + j]);
      const T rh = r * a.h[j];
      a.gates[j] = r;
      a.gates[H + j] = z;
      a.reset_h[j] = rh;
      a.extra[j] = rh;
    }
  }

  template <class T>
  static inline void forward_part2(int H, const RowForward<T>& a) {
    for (int j = 0; j < H; ++j) {
      const T z = a.gates[H + j];
      const T n = tanh_(a.gx[2 * H + j] + a.b_ih[2 * H + j] + a.gh[2 * H + j] + a.b_hh[2 * H + j]);
      const T h = (T(1) - z) * n + z * a.h[j];
      a.h[j] = h;
      a.y[j] = h;
      a.gates[2 * H + j] = n;
    }
  }

  // Part one: everything that does not need d(r*h): the z and n blocks and the z*dh term.
  template <class T>
  static inline void backward_part1(int H, const RowBackward<T>& a) {
    for (int j = 0; j < H; ++j) {
      const T z = a.gates[H + j], n = a.gates[2 * H + j];
      const T dh = a.dh[j] + a.dy[j];
      const T dan = dh * (T(1) - z) * (T(1) - n * n);
      const T daz = dh * (a.h_prev[j] - n) * z * (T(1) - z);
      a.dh[j] = dh * z;
      a.dgx[H + j] = a.dg[H + j] = daz;
      a.dgx[2 * H + j] = a.dg[2 * H + j] = dan;
    }
  }

  // Part two: d(r*h) = dan W_hn is known; it feeds r's gradient and h_{t-1}'s.
  template <class T>
  static inline void backward_part2(int H, const RowBackward<T>& a) {
    for (int j = 0; j < H; ++j) {
      const T r = a.gates[j];
      const T drh = a.d_reset_h[j];
      const T dar = drh * a.h_prev[j] * r * (T(1) - r);
      a.dh[j] += drh * r;
      a.dgx[j] = a.dg[j] = dar;
    }
  }
};

}  // namespace rnnkit

// Attention kernels: scores, masked softmax, weighted sum, and their backward.
//
// Letters: B batch, T query (target) steps, S source (memory) steps, A attention size,
// H query/key size, Hv value size. All arrays are row-major and batch-first:
//
//   query projection qp (B, T, A)   key projection kp (B, S, A)   v (A)       (additive)
//   query q (B, T, H)               keys k (B, S, H)              scale       (dot)
//   values (B, S, Hv)   mask (B, S) 1 = attend, 0 = padding (or null: all)
//   weights w (B, T, S)   context ctx (B, T, Hv)
//
// Additive (Bahdanau):   e[b,t,j] = v . tanh(qp[b,t] + kp[b,j])
// Dot (Luong):           e[b,t,j] = scale * q[b,t] . k[b,j]
//   ("general" is dot against keys projected once per sequence: the Python layer does it)
// Then w[b,t,:] = softmax over the unmasked j of e[b,t,:] (0 at masked j; a row with no
// unmasked j gets all-zero weights and a zero context), ctx[b,t] = sum_j w[b,t,j] values[b,j].
//
// Backward takes the gradients of ctx and (optionally) of w, and the forward's w: the additive
// kernel recomputes tanh(qp + kp) rather than keeping a (B, T, S, A) array. Masked positions
// are skipped entirely, so padding costs nothing and gets exactly zero gradient.
//
// Few query steps (the decoder's one step at a time): plain loops, vectorised over the feature
// dimension. Many query steps: per batch row the products become GEMMs (rnnkit::gemm).
//
// Long calls stop early on Ctrl-C (interrupt.hpp): each kernel polls once per batch row and
// returns with its outputs unfinished if a signal handler raised (the binding then raises).
//
// Scratch: the kernels allocate nothing; the caller passes their scratch (AttentionScratch,
// sized by *_scratch_elements), allocated before the GIL is released. Why: an exception cannot
// leave a target-cloned function (RNNKIT_CLONES) safely: GCC's dispatcher is treated as not
// throwing, so a std::bad_alloc thrown inside skipped the callers' destructors (the GIL was
// never re-taken: a crash instead of MemoryError).
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "blas.hpp"
#include "common.hpp"
#include "interrupt.hpp"
#include "vecmath.hpp"

namespace rnnkit {

// From this many query steps on, the per-row products use the BLAS.
constexpr index_t kAttentionGemmSteps = 8;

// sum of x[0..n) in 2L interleaved partial sums (partial l adds x[l], x[l + 2L], ...; then a
// block of L into partials [0, L)), folded to L and added in order, L = 64 / sizeof(T): the
// same additions on every CPU. The partial sums are independent, so GCC vectorises the inner
// loops at the width of each target clone (a plain loop would not vectorise: float addition is
// not associative and we do not compile with -ffast-math).
template <class T>
RNNKIT_INLINE T sum_(const T* __restrict x, index_t n) {
  constexpr int L = 64 / int(sizeof(T));
  T acc[2 * L] = {};
  index_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L)
    for (int l = 0; l < 2 * L; ++l) acc[l] += x[i + l];
  if (i + L <= n) {
    for (int l = 0; l < L; ++l) acc[l] += x[i + l];
    i += L;
  }
  T s = T(0);
  for (int l = 0; l < L; ++l) s += acc[l] + acc[L + l];
  for (; i < n; ++i) s += x[i];
  return s;
}

// a . b over [0, n), summed as sum_ sums.
template <class T>
RNNKIT_INLINE T dot_(const T* __restrict a, const T* __restrict b, index_t n) {
  constexpr int L = 64 / int(sizeof(T));
  T acc[2 * L] = {};
  index_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L)
    for (int l = 0; l < 2 * L; ++l) acc[l] += a[i + l] * b[i + l];
  if (i + L <= n) {
    for (int l = 0; l < L; ++l) acc[l] += a[i + l] * b[i + l];
    i += L;
  }
  T s = T(0);
  for (int l = 0; l < L; ++l) s += acc[l] + acc[L + l];
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y += alpha * x
template <class T>
RNNKIT_INLINE void axpy_(T alpha, const T* __restrict x, T* __restrict y, index_t n) {
  for (index_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

inline bool attends(const std::uint8_t* mask, index_t j) { return !mask || mask[j]; }

// w (S) = masked softmax of e (S). Masked entries of e are not read.
template <class T>
RNNKIT_INLINE void masked_softmax_row(index_t S, const T* e, const std::uint8_t* mask, T* w) {
  T m = -std::numeric_limits<T>::infinity();
  bool any = false;
  for (index_t j = 0; j < S; ++j)
    if (attends(mask, j)) {
      m = any ? (e[j] > m ? e[j] : m) : e[j];  // NaN in the first score propagates
      any = true;
    }
  if (!any) {
    for (index_t j = 0; j < S; ++j) w[j] = T(0);
    return;
  }
  T sum = T(0);
  for (index_t j = 0; j < S; ++j) {
    const T p = attends(mask, j) ? exp_(e[j] - m) : T(0);
    w[j] = p;
    sum += p;
  }
  const T inv = T(1) / sum;
  for (index_t j = 0; j < S; ++j) w[j] *= inv;
}

// de (S) = gradient of the scores from dw (S) (total gradient of the weights) and w (S):
// de_j = w_j (dw_j - sum_k w_k dw_k). Masked entries get 0.
template <class T>
RNNKIT_INLINE void softmax_backward_row(index_t S, const T* w, const T* dw, const std::uint8_t* mask, T* de) {
  T s = T(0);
  for (index_t j = 0; j < S; ++j)
    if (attends(mask, j)) s += w[j] * dw[j];
  for (index_t j = 0; j < S; ++j) de[j] = attends(mask, j) ? w[j] * (dw[j] - s) : T(0);
}

// ------------------------------------------------------------------ shared: context and dw

// ctx_b (T, Hv) = w_b (T, S) @ values_b (S, Hv) for one batch row.
template <class T>
RNNKIT_INLINE void context_rows(index_t T_, index_t S, index_t Hv, const T* w, const T* values,
                                const std::uint8_t* mask, T* ctx) {
  if (T_ >= kAttentionGemmSteps) {
    gemm(false, false, int(T_), int(Hv), int(S), T(1), w, int(S), values, int(Hv), T(0), ctx, int(Hv));
    return;
  }
  for (index_t t = 0; t < T_; ++t) {
    T* c = ctx + t * Hv;
    for (index_t i = 0; i < Hv; ++i) c[i] = T(0);
    for (index_t j = 0; j < S; ++j)
      if (attends(mask, j)) axpy_(w[t * S + j], values + j * Hv, c, Hv);
  }
}

// For one batch row: dw_total (T, S) = dw (or 0) + dctx @ values^T (masked entries unused),
// and dvalues (S, Hv) = w^T @ dctx.
template <class T>
RNNKIT_INLINE void context_backward_rows(index_t T_, index_t S, index_t Hv, const T* w, const T* values,
                                         const T* dctx, const T* dw, const std::uint8_t* mask, T* dw_total,
                                         T* dvalues) {
  if (T_ >= kAttentionGemmSteps) {
    if (dw) std::memcpy(dw_total, dw, sizeof(T) * std::size_t(T_ * S));
    if (dctx) {
      gemm(false, true, int(T_), int(S), int(Hv), T(1), dctx, int(Hv), values, int(Hv), dw ? T(1) : T(0),
           dw_total, int(S));
      gemm(true, false, int(S), int(Hv), int(T_), T(1), w, int(S), dctx, int(Hv), T(0), dvalues, int(Hv));
    } else {
      if (!dw) std::fill_n(dw_total, T_ * S, T(0));
      std::fill_n(dvalues, S * Hv, T(0));
    }
    return;
  }
  std::fill_n(dvalues, S * Hv, T(0));
  for (index_t t = 0; t < T_; ++t) {
    const T* dc = dctx ? dctx + t * Hv : nullptr;
    for (index_t j = 0; j < S; ++j) {
      T g = dw ? dw[t * S + j] : T(0);
      if (dc && attends(mask, j)) {
        g += dot_(dc, values + j * Hv, Hv);
        axpy_(w[t * S + j], dc, dvalues + j * Hv, Hv);
      }
      dw_total[t * S + j] = g;
    }
  }
}

// ------------------------------------------------------------------ additive

// e (S) = v . tanh(qp (A) + kp[j] (A)) for the unmasked j; tmp (A) scratch.
template <class T>
RNNKIT_INLINE void additive_scores_row(index_t S, index_t A, const T* __restrict qp, const T* __restrict kp,
                                       const T* __restrict v, const std::uint8_t* mask, T* __restrict e,
                                       T* __restrict tmp) {
  for (index_t j = 0; j < S; ++j) {
    if (!attends(mask, j)) continue;
    const T* k = kp + j * A;
    for (index_t a = 0; a < A; ++a) tmp[a] = v[a] * tanh_(qp[a] + k[a]);
    e[j] = sum_(tmp, A);
  }
}

// One (t, j) pair's backward: th = tanh(qp + k), g = de * v * (1 - th^2);
// dq += g, dk += g, dv += de * th. (A function with restrict parameters, so that the loop
// vectorises: restrict on block-scope pointers is not used by GCC's alias analysis.)
template <class T>
RNNKIT_INLINE void additive_backward_row(index_t A, T de, const T* __restrict qp, const T* __restrict k,
                                         const T* __restrict v, T* __restrict dq, T* __restrict dk,
                                         T* __restrict dv) {
  for (index_t a = 0; a < A; ++a) {
    const T th = tanh_(qp[a] + k[a]);
    const T g = de * v[a] * (T(1) - th * th);
    dq[a] += g;
    dk[a] += g;
    dv[a] += de * th;
  }
}

template <class T>
struct AdditiveArgs {
  index_t B, T_, S, A, Hv;
  const T* qp;               // (B, T, A)
  const T* kp;               // (B, S, A)
  const T* v;                // (A)
  const T* values;           // (B, S, Hv)
  const std::uint8_t* mask;  // (B, S) or null
};

// Scratch of a kernel call: two buffers, sizes from the *_scratch_elements functions.
template <class T>
struct AttentionScratch {
  T* a;
  T* b;
};

// Scratch sizes {a, b} of each kernel (e and tmp; dw_total and de).
inline std::pair<index_t, index_t> additive_forward_scratch_elements(index_t S, index_t A) { return {S, A}; }
inline std::pair<index_t, index_t> additive_backward_scratch_elements(index_t T_, index_t S) {
  return {T_ * S, S};
}
inline std::pair<index_t, index_t> dot_forward_scratch_elements(index_t T_, index_t S) { return {T_ * S, 0}; }
inline std::pair<index_t, index_t> dot_backward_scratch_elements(index_t T_, index_t S) {
  return {T_ * S, T_ * S};
}

// ctx (B, T, Hv), w (B, T, S) out.
template <class T>
RNNKIT_CLONES void additive_attention_forward(const AdditiveArgs<T>& p, T* ctx, T* w,
                                              AttentionScratch<T> scratch) {
  const index_t T_ = p.T_, S = p.S, A = p.A, Hv = p.Hv;
  Interrupt interrupt(double(T_) * S * (A + Hv));
  T* e = scratch.a;    // (S) scores of one query step
  T* tmp = scratch.b;  // (A)
  for (index_t b = 0; b < p.B; ++b) {
    interrupt.poll();
    if (interrupt.requested()) return;
    const std::uint8_t* mask = p.mask ? p.mask + b * S : nullptr;
    const T* kp = p.kp + b * S * A;
    T* wb = w + b * T_ * S;
    for (index_t t = 0; t < T_; ++t) {
      additive_scores_row(S, A, p.qp + (b * T_ + t) * A, kp, p.v, mask, e, tmp);
      masked_softmax_row(S, e, mask, wb + t * S);
    }
    context_rows(T_, S, Hv, wb, p.values + b * S * Hv, mask, ctx + b * T_ * Hv);
  }
}

// dctx (B, T, Hv) or null, dw (B, T, S) or null, w (B, T, S) from forward.
// Out: dqp (B, T, A), dkp (B, S, A), dv (A), dvalues (B, S, Hv).
template <class T>
RNNKIT_CLONES void additive_attention_backward(const AdditiveArgs<T>& p, const T* dctx, const T* dw,
                                               const T* w, T* dqp, T* dkp, T* dv, T* dvalues,
                                               AttentionScratch<T> scratch) {
  const index_t T_ = p.T_, S = p.S, A = p.A, Hv = p.Hv;
  Interrupt interrupt(double(T_) * S * (2 * A + Hv));
  T* dw_total = scratch.a;  // (T, S)
  T* de = scratch.b;        // (S)
  std::fill_n(dv, A, T(0));
  for (index_t b = 0; b < p.B; ++b) {
    interrupt.poll();
    if (interrupt.requested()) return;
    const std::uint8_t* mask = p.mask ? p.mask + b * S : nullptr;
    const T* wb = w + b * T_ * S;
    const T* kp = p.kp + b * S * A;
    T* dkpb = dkp + b * S * A;
    std::fill_n(dkpb, S * A, T(0));
    context_backward_rows(T_, S, Hv, wb, p.values + b * S * Hv, offset(dctx, b * T_ * Hv),
                          offset(dw, b * T_ * S), mask, dw_total, dvalues + b * S * Hv);
    for (index_t t = 0; t < T_; ++t) {
      softmax_backward_row(S, wb + t * S, dw_total + t * S, mask, de);
      const T* qp = p.qp + (b * T_ + t) * A;
      T* dq = dqp + (b * T_ + t) * A;
      std::fill_n(dq, A, T(0));
      for (index_t j = 0; j < S; ++j)
        if (attends(mask, j)) additive_backward_row(A, de[j], qp, kp + j * A, p.v, dq, dkpb + j * A, dv);
    }
  }
}

// ------------------------------------------------------------------ dot

template <class T>
struct DotArgs {
  index_t B, T_, S, H, Hv;
  const T* q;                // (B, T, H)
  const T* k;                // (B, S, H)
  const T* values;           // (B, S, Hv)
  const std::uint8_t* mask;  // (B, S) or null
  T scale;
};

template <class T>
RNNKIT_CLONES void dot_attention_forward(const DotArgs<T>& p, T* ctx, T* w, AttentionScratch<T> scratch) {
  const index_t T_ = p.T_, S = p.S, H = p.H, Hv = p.Hv;
  Interrupt interrupt(double(T_) * S * (H + Hv));
  T* e = scratch.a;  // (T, S) scores of one batch row
  for (index_t b = 0; b < p.B; ++b) {
    interrupt.poll();
    if (interrupt.requested()) return;
    const std::uint8_t* mask = p.mask ? p.mask + b * S : nullptr;
    const T* qb = p.q + b * T_ * H;
    const T* kb = p.k + b * S * H;
    T* wb = w + b * T_ * S;
    if (T_ >= kAttentionGemmSteps) {
      gemm(false, true, int(T_), int(S), int(H), p.scale, qb, int(H), kb, int(H), T(0), e, int(S));
    } else {
      for (index_t t = 0; t < T_; ++t)
        for (index_t j = 0; j < S; ++j)
          if (attends(mask, j)) e[t * S + j] = p.scale * dot_(qb + t * H, kb + j * H, H);
    }
    for (index_t t = 0; t < T_; ++t) masked_softmax_row(S, e + t * S, mask, wb + t * S);
    context_rows(T_, S, Hv, wb, p.values + b * S * Hv, mask, ctx + b * T_ * Hv);
  }
}

// Out: dq (B, T, H), dk (B, S, H), dvalues (B, S, Hv).
template <class T>
RNNKIT_CLONES void dot_attention_backward(const DotArgs<T>& p, const T* dctx, const T* dw, const T* w, T* dq,
                                          T* dk, T* dvalues, AttentionScratch<T> scratch) {
  const index_t T_ = p.T_, S = p.S, H = p.H, Hv = p.Hv;
  Interrupt interrupt(double(T_) * S * (2 * H + Hv));
  T* dw_total = scratch.a;  // (T, S)
  T* de = scratch.b;        // (T, S)
  for (index_t b = 0; b < p.B; ++b) {
    interrupt.poll();
    if (interrupt.requested()) return;
    const std::uint8_t* mask = p.mask ? p.mask + b * S : nullptr;
    const T* wb = w + b * T_ * S;
    const T* qb = p.q + b * T_ * H;
    const T* kb = p.k + b * S * H;
    T* dqb = dq + b * T_ * H;
    T* dkb = dk + b * S * H;
    context_backward_rows(T_, S, Hv, wb, p.values + b * S * Hv, offset(dctx, b * T_ * Hv),
                          offset(dw, b * T_ * S), mask, dw_total, dvalues + b * S * Hv);
    for (index_t t = 0; t < T_; ++t) softmax_backward_row(S, wb + t * S, dw_total + t * S, mask, de + t * S);
    if (T_ >= kAttentionGemmSteps) {
      // masked entries of de are 0, so the full products are exact
      gemm(false, false, int(T_), int(H), int(S), p.scale, de, int(S), kb, int(H), T(0), dqb, int(H));
      gemm(true, false, int(S), int(H), int(T_), p.scale, de, int(S), qb, int(H), T(0), dkb, int(H));
      continue;
    }
    std::fill_n(dqb, T_ * H, T(0));
    std::fill_n(dkb, S * H, T(0));
    for (index_t t = 0; t < T_; ++t)
      for (index_t j = 0; j < S; ++j) {
        if (!attends(mask, j)) continue;
        const T g = p.scale * de[t * S + j];
        axpy_(g, kb + j * H, dqb + t * H, H);
        axpy_(g, qb + t * H, dkb + j * H, H);
      }
  }
}

}  // namespace rnnkit

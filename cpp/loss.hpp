// Softmax and the fused softmax cross-entropy (loss and gradient in one pass over the logits).
// Letters: N rows, C classes. Stable: each row is shifted by its maximum before exp.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "common.hpp"
#include "vecmath.hpp"

namespace rnnkit {

// probs (N, C) = softmax(logits (N, C)) along each row.
template <class T>
RNNKIT_CLONES void softmax(index_t N, index_t C, const T* logits, T* probs) {
  for (index_t i = 0; i < N; ++i) {
    const T* o = logits + i * C;
    T* p = probs + i * C;
    T m = -std::numeric_limits<T>::infinity();
    for (index_t j = 0; j < C; ++j) m = o[j] > m ? o[j] : m;
    T sum = T(0);
    for (index_t j = 0; j < C; ++j) {
      p[j] = exp_(o[j] - m);
      sum += p[j];
    }
    const T inv = T(1) / sum;
    for (index_t j = 0; j < C; ++j) p[j] *= inv;
  }
}

// Per-row losses (N) and dlogits (N, C) of L = sum_i scale * (logsumexp(o_i) - o_i[y_i]) over
// rows whose target is not ignore_index; ignored rows get loss 0 and gradient 0.
// scale is 1 for "sum"/"none" and 1/count for "mean". Targets are checked by the caller.
template <class T>
RNNKIT_CLONES void softmax_cross_entropy(index_t N, index_t C, const T* logits, const std::int64_t* targets,
                                         std::int64_t ignore_index, T scale, T* row_loss, T* dlogits) {
  for (index_t i = 0; i < N; ++i) {
    const T* o = logits + i * C;
    T* d = dlogits + i * C;
    const std::int64_t y = targets[i];
    if (y == ignore_index) {
      row_loss[i] = T(0);
      for (index_t j = 0; j < C; ++j) d[j] = T(0);
      continue;
    }
    T m = -std::numeric_limits<T>::infinity();
    for (index_t j = 0; j < C; ++j) m = o[j] > m ? o[j] : m;
    T sum = T(0);
    for (index_t j = 0; j < C; ++j) {
      d[j] = exp_(o[j] - m);
      sum += d[j];
    }
    row_loss[i] = (m - o[y]) + std::log(sum);  // small terms first: m can be large
    const T inv = scale / sum;
    for (index_t j = 0; j < C; ++j) d[j] *= inv;
    d[y] -= scale;
  }
}

}  // namespace rnnkit

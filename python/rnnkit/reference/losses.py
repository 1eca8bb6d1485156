"""NumPy oracles of :mod:`rnnkit.ops.losses`: softmax and the softmax cross-entropy
(``docs/rnn-equations.md``, section 2.7).

Letters: N rows, C classes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .._types import CrossEntropyResult

__all__ = ["softmax", "softmax_cross_entropy"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; logits (..., C) -> probabilities (..., C).

    Subtracting the row maximum first keeps exp() from overflowing; it does not
    change the result because softmax is invariant to adding a constant per row.
    """
    logits = np.asarray(logits)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_cross_entropy(
    logits: np.ndarray, targets: npt.ArrayLike, *, ignore_index: int = -100, reduction: str = "mean"
) -> CrossEntropyResult:
    """Cross-entropy of softmax(logits) against integer class targets, with its gradient.

    logits (N, C); targets (N,) integers in [0, C) or ``ignore_index``. A row whose target
    is ``ignore_index`` contributes 0 loss and 0 gradient. reduction:

    * "mean": divide the summed loss by the number of non-ignored rows (if there are
      none: loss nan and dlogits zeros, as PyTorch does);
    * "sum": the summed loss;
    * "none": loss (N,) per row; dlogits is then the gradient of loss.sum().

    Returns CrossEntropyResult(loss: scalar of the logits dtype, or (N,); dlogits (N, C)),
    dlogits being the gradient of the returned loss.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    logits = np.asarray(logits)
    targets = np.asarray(targets)
    N, C = logits.shape
    dtype = logits.dtype
    valid = targets != ignore_index
    if np.any((targets[valid] < 0) | (targets[valid] >= C)):
        raise ValueError(f"targets must lie in [0, {C}) or equal ignore_index={ignore_index}")
    rows, cls = np.flatnonzero(valid), targets[valid].astype(np.intp)

    # log softmax with the usual max shift: log p = s - log(sum(exp(s))), s = logits - max
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    row_loss = np.zeros(N, dtype=dtype)
    row_loss[rows] = -log_probs[rows, cls]

    # d(-log p_target)/d logits = softmax - one_hot(target), for kept rows only
    dlogits = np.zeros_like(logits)
    dlogits[rows] = np.exp(log_probs[rows])
    dlogits[rows, cls] -= 1

    if reduction == "none":
        return CrossEntropyResult(row_loss, dlogits)
    if reduction == "sum":
        return CrossEntropyResult(dtype.type(row_loss.sum()), dlogits)
    n_valid = rows.size
    if n_valid == 0:
        return CrossEntropyResult(dtype.type(np.nan), np.zeros_like(logits))
    return CrossEntropyResult(dtype.type(row_loss.sum() / n_valid), dlogits / dtype.type(n_valid))

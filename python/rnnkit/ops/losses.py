"""Softmax and the fused softmax cross-entropy (one C++ pass gives the loss and its gradient).

Letters: N rows (for a sequence model, T*B flattened), C classes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .. import _core
from .. import _validate as v
from .._types import CrossEntropyResult

__all__ = ["softmax", "softmax_cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")


def softmax(logits: npt.ArrayLike) -> np.ndarray:
    """Softmax over the last axis, numerically stable. logits (..., C) -> probabilities (..., C)."""
    logits = v.float_array("logits", logits)
    if logits.ndim == 0:
        raise ValueError("logits: expected at least 1 dimension (..., C), got a scalar")
    flat = logits.reshape(-1, logits.shape[-1]) if logits.size else logits.reshape(0, logits.shape[-1])
    return _core.softmax(np.ascontiguousarray(flat)).reshape(logits.shape)


def softmax_cross_entropy(
    logits: npt.ArrayLike, targets: npt.ArrayLike, *, ignore_index: int = -100, reduction: str = "mean"
) -> CrossEntropyResult:
    """Cross-entropy of softmax(logits) against integer class targets, and its gradient.

    ``loss_i = logsumexp(logits_i) - logits_i[targets_i]``; rows whose target equals
    ``ignore_index`` (padding) contribute no loss and no gradient.

    Args: logits (N, C) float32/float64; targets (N,) integers in [0, C) or ignore_index;
    reduction: "mean" (over the non-ignored rows; nan if there are none, as PyTorch),
    "sum", or "none" (per-row losses).

    Returns ``CrossEntropyResult(loss, dlogits)``: loss is a scalar of the logits' dtype (or
    (N,) for "none"); dlogits (N, C) is the gradient of the reduced loss (of ``loss.sum()``
    for "none").

    Examples
    --------
    >>> logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> loss, dlogits = rnnkit.softmax_cross_entropy(logits, np.array([0, 2]))
    >>> round(float(loss), 6)  # (-log(e^2 / (e^2 + 2)) - log(1/3)) / 2
    0.669079
    >>> np.round(dlogits, 4)  # (softmax - onehot) / N
    array([[-0.1065,  0.0533,  0.0533],
           [ 0.1667,  0.1667, -0.3333]])
    """
    logits = v.float_array("logits", logits)
    v.check_ndim("logits", logits, 2, "(N, C)")
    N, C = logits.shape
    v.choice("reduction", reduction, _REDUCTIONS)
    t = v.integer_array("targets", targets)
    v.check_shape("targets", t, (N,), "(N,)")
    v.int_arg("ignore_index", ignore_index, minimum=None)
    bad = (t != ignore_index) & ((t < 0) | (t >= C))
    if bad.any():
        raise ValueError(
            f"targets: expected class indices in [0, C) = [0, {C}) or "
            f"ignore_index={ignore_index}, got {t[bad][:5].tolist()}"
        )
    t = np.ascontiguousarray(t, dtype=np.int64)
    count = int(np.count_nonzero(t != ignore_index))
    scale = 1.0 / count if (reduction == "mean" and count > 0) else 1.0
    row_loss, dlogits = _core.softmax_cross_entropy(logits, t, int(ignore_index), scale)
    if reduction == "none":
        return CrossEntropyResult(row_loss, dlogits)
    total = row_loss.sum(dtype=np.float64)
    if reduction == "mean":
        total = total / count if count > 0 else np.nan
    return CrossEntropyResult(logits.dtype.type(total), dlogits)

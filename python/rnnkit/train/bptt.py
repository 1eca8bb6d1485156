"""Truncated backprop through time: a long sequence in chunks of k steps.

Shape letters: T time steps, B batch, I input size, k the truncation length.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy.typing as npt

from .. import _validate as v
from .clipping import clip_grad_norm
from .optim import Optimizer

__all__ = ["truncated_bptt"]


def truncated_bptt(
    model: Any,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    k: int,
    loss: Any,
    optimizer: Optimizer | None = None,
    *,
    state: Any = None,
    clip_norm: float | None = None,
) -> tuple[float, Any]:
    """Walk a long sequence in chunks of k steps, carrying the hidden state forward and
    cutting the gradient at every chunk border.

    For each chunk c (x[c*k:(c+1)*k]): forward from the carried state, loss on that chunk's
    targets, backward (no gradient flows into the state the chunk started from), then, with an
    ``optimizer``, optional clipping and one update per chunk (gradients are zeroed before each
    chunk). Without an optimizer the chunks' gradients accumulate into .grad (the truncated
    gradient of the summed chunk losses); nothing is zeroed.

    model: ``y_hat = model(x_chunk, state=s)`` (T_c, B, O) with ``model.final_state`` after
    forward and ``model.backward(dy)`` (e.g. SequenceRegressor(..., many_to_many=True));
    x (T, B, I); y (T, B, ...) per-step targets; k >= 1; loss a loss module; state the
    initial state or None. Returns ``(mean chunk loss weighted by chunk length, final state)``.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k: expected an int >= 1 (steps per chunk), got {k!r}")
    x = v.as_array("x", x)
    y = v.as_array("y", y)
    if x.ndim < 2:
        raise ValueError(f"x: expected (T, B, I), got shape {x.shape}")
    if y.shape[:2] != x.shape[:2]:
        raise ValueError(f"y: expected the same (T, B) = {x.shape[:2]} as x, got {y.shape}")
    T = x.shape[0]
    total, s = 0.0, state
    for start in range(0, T, int(k)):
        stop = min(start + int(k), T)
        if optimizer is not None:
            optimizer.zero_grad()
        out = model(x[start:stop], state=s)
        value = loss(out, y[start:stop])
        model.backward(loss.backward())
        s = model.final_state  # a plain array: the next chunk's gradient stops here
        if optimizer is not None:
            if clip_norm is not None:
                clip_grad_norm(model.parameters(), clip_norm)
            optimizer.step()
        total += float(value) * (stop - start)
    return total / T, s

"""Gradient-flow diagnostics: how much of the loss's gradient reaches each time step.

:func:`gradient_norms_through_time` returns ``||dL/dh_t||`` for every step t of a
single-layer :class:`rnnkit.models.SequenceRegressor` / ``SequenceClassifier``. For a
many-to-one loss (on the last state only) this is the gradient carried back through the
recurrence, the quantity that vanishes (or explodes) geometrically in a vanilla RNN and that
the LSTM's / GRU's additive, gated state updates can keep (Hochreiter 1991; Bengio et al. 1994).

Shape letters: T time steps, B batch, I input size, H hidden size, O output size.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .. import _validate as v
from ..models import SequenceRegressor
from ..nn import CrossEntropyLoss, MSELoss

__all__ = ["gradient_norms_through_time"]


def gradient_norms_through_time(
    model: SequenceRegressor,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    loss: MSELoss | CrossEntropyLoss | None = None,
    per_sequence: bool = False,
) -> np.ndarray:
    """``||dL/dh_t||`` for t = 0 .. T-1, h_t being the state after step t.

    model: a SequenceRegressor / SequenceClassifier with one layer, one direction;
    x (T, B, I); y its targets ((B, O) / (B,) classes, or per step with many_to_many);
    loss: a loss module (default: the model's ``default_loss()``, MSE or cross-entropy).
    dL/dh_t is the total derivative (through the head where h_t is read out, and through every
    later step); for the LSTM it is w.r.t. h_t with c_t as a separate state.

    Runs the model's recurrent module step by step (:meth:`rnnkit.nn.LSTM.step` and
    ``step_backward``, one loop over time) and changes no parameter gradient. Returns a
    float64 array (T,) of Frobenius norms over the batch, or (T, B) per-sequence norms with
    per_sequence=True.
    """
    rnn, head = model.rnn, model.head
    if rnn.num_layers != 1 or rnn.num_directions != 1:
        raise ValueError(
            "model: gradient_norms_through_time needs a single-layer, unidirectional recurrent module"
        )
    x = v.as_array("x", x)
    if x.dtype != model.dtype:
        raise TypeError(f"x: expected dtype {model.dtype.name} (the model's dtype), got {x.dtype}")
    if x.ndim != 3 or x.shape[2] != rnn.input_size:
        raise ValueError(f"x: expected shape (T, B, I) with I = {rnn.input_size}, got {x.shape}")
    loss = model.default_loss() if loss is None else loss
    T, B, _ = x.shape
    lstm = rnn.CELL.has_cell_state
    grads = [p.grad.copy() for p in rnn.parameters()]  # step_backward adds into them
    rnn.clear_steps()
    try:
        state = None
        steps = []
        for t in range(T):
            h, state = rnn.step(x[t], state, keep=True)
            steps.append(h)
        hs = np.stack(steps)  # (T, B, H)
        W_out = head.weight.data  # (O, H)
        if model.many_to_many:
            pred = head.apply(hs)
            loss(pred, y)
            dh_read = loss.backward() @ W_out  # (T, B, H)
        else:
            pred = head.apply(hs[-1])
            loss(pred, y)
            dh_read = np.zeros_like(hs)
            dh_read[-1] = loss.backward() @ W_out
        norms = np.zeros((T, B) if per_sequence else T)
        dh_next, dc_next = None, None  # gradients from step t+1 w.r.t. h_t (and c_t), (1, B, H)
        for t in reversed(range(T)):
            dh = dh_read[t] if dh_next is None else dh_read[t] + dh_next[0]
            d64 = dh.astype(np.float64)
            norms[t] = np.sqrt((d64 * d64).sum(axis=-1)) if per_sequence else np.sqrt((d64 * d64).sum())
            if t == 0:
                break
            # h_t is the step's output and its state: dh enters once, as the output's gradient
            if lstm:
                _, (dh_next, dc_next) = rnn.step_backward(dh, (None, dc_next))
            else:
                _, dh_next = rnn.step_backward(dh, None)
    finally:
        rnn.clear_steps()
        for p, g in zip(rnn.parameters(), grads):
            p.grad[...] = g
    return norms

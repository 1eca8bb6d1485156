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

from .recurrent import (gru_cell_backward, gru_cell_forward, lstm_cell_backward,
                        lstm_cell_forward, rnn_cell_backward, rnn_cell_forward)

__all__ = ["gradient_norms_through_time"]


def gradient_norms_through_time(model, x, y, *, loss=None, per_sequence=False):
    """``||dL/dh_t||`` for t = 0 .. T-1, h_t being the state after step t.

    model: a SequenceRegressor / SequenceClassifier with one layer, one direction;
    x (T, B, I); y its targets ((B, O) / (B,) classes, or per step with many_to_many);
    loss: a loss module (default: the model's ``default_loss()``, MSE or cross-entropy).
    dL/dh_t is the total derivative (through the head where h_t is read out, and through every
    later step); for the LSTM it is w.r.t. h_t with c_t as a separate state.

    Runs the model's own weights step by step with the cell kernels (one loop over time) and
    changes no parameter gradient. Returns a float64 array (T,) of Frobenius norms over the
    batch, or (T, B) per-sequence norms with per_sequence=True.
    """
    rnn, head = model.rnn, model.head
    if rnn.num_layers != 1 or rnn.num_directions != 1:
        raise ValueError("model: gradient_norms_through_time needs a single-layer, "
                         "unidirectional recurrent module")
    x = np.asarray(x)
    if x.dtype != model.dtype:
        raise TypeError(f"x: expected dtype {model.dtype.name} (the model's dtype), got {x.dtype}")
    if x.ndim != 3 or x.shape[2] != rnn.input_size:
        raise ValueError(f"x: expected shape (T, B, I) with I = {rnn.input_size}, got {x.shape}")
    loss = model.default_loss() if loss is None else loss
    cell = model.cell
    w = (rnn.weight_ih_l0.data, rnn.weight_hh_l0.data,
         rnn.bias_ih_l0.data if rnn.bias else None, rnn.bias_hh_l0.data if rnn.bias else None)
    T, B, _ = x.shape
    H = rnn.hidden_size
    h = np.zeros((B, H), x.dtype)
    c = np.zeros((B, H), x.dtype)
    hs, caches = [], []
    for t in range(T):
        if cell == "lstm":
            (h, c), cache = lstm_cell_forward(x[t], h, c, *w)
        elif cell == "gru":
            h, cache = gru_cell_forward(x[t], h, *w, reset_after=rnn.reset_after)
        else:
            h, cache = rnn_cell_forward(x[t], h, *w, nonlinearity=rnn.nonlinearity)
        hs.append(h)
        caches.append(cache)
    hs = np.stack(hs)  # (T, B, H)
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
    dh_next, dc_next = None, None  # gradients from step t+1 w.r.t. h_t (and c_t)
    for t in reversed(range(T)):
        dh = dh_read[t] if dh_next is None else dh_read[t] + dh_next
        d64 = dh.astype(np.float64)
        norms[t] = np.sqrt((d64 * d64).sum(axis=-1)) if per_sequence else np.sqrt((d64 * d64).sum())
        if t == 0:
            break
        if cell == "lstm":
            g = lstm_cell_backward(dh, dc_next, caches[t])
            dh_next, dc_next = g.dh, g.dc
        elif cell == "gru":
            dh_next = gru_cell_backward(dh, caches[t]).dh
        else:
            dh_next = rnn_cell_backward(dh, caches[t]).dh
    return norms

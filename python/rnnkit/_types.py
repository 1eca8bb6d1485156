"""Result types shared by the C++-backed API and the NumPy reference.

Shape letters, used in every docstring of the package::

    T   time steps
    B   batch size
    I   input size
    H   hidden size
    G   gates per cell: 1 for the plain RNN, 4 for the LSTM (i, f, g, o),
        3 for the GRU (r, z, n)

Weights use PyTorch's layout: ``W_ih`` is (G*H, I), ``W_hh`` is (G*H, H) and the
biases ``b_ih``, ``b_hh`` are (G*H,), gate blocks stacked in the order above.

Every gradient field has the shape of the argument it is the gradient of.
Bias gradients are ``None`` when the forward pass was run without that bias.
"""

from typing import NamedTuple, Optional

import numpy as np

__all__ = [
    "CellGrads",
    "SequenceGrads",
    "LSTMCellGrads",
    "LSTMSequenceGrads",
    "LSTMProjSequenceGrads",
    "LSTMPeepSequenceGrads",
    "CrossEntropyResult",
    "AdditiveAttentionGrads",
    "DotAttentionGrads",
    "GeneralAttentionGrads",
]


class CellGrads(NamedTuple):
    """Gradients of one RNN or GRU cell step (``rnn_cell_backward``, ``gru_cell_backward``)."""

    dx: np.ndarray  # (B, I)
    dh: np.ndarray  # (B, H)      gradient w.r.t. the incoming state h
    dW_ih: np.ndarray  # (G*H, I)
    dW_hh: np.ndarray  # (G*H, H)
    db_ih: Optional[np.ndarray]  # (G*H,) or None
    db_hh: Optional[np.ndarray]  # (G*H,) or None


class SequenceGrads(NamedTuple):
    """Gradients of a whole RNN or GRU sequence (``rnn_backward``, ``gru_backward``)."""

    dx: np.ndarray  # (T, B, I)   zero at padded positions
    dh0: np.ndarray  # (B, H)
    dW_ih: np.ndarray  # (G*H, I)
    dW_hh: np.ndarray  # (G*H, H)
    db_ih: Optional[np.ndarray]  # (G*H,) or None
    db_hh: Optional[np.ndarray]  # (G*H,) or None


class LSTMCellGrads(NamedTuple):
    """Gradients of one LSTM cell step (``lstm_cell_backward``)."""

    dx: np.ndarray  # (B, I)
    dh: np.ndarray  # (B, H)      gradient w.r.t. the incoming hidden state h
    dc: np.ndarray  # (B, H)      gradient w.r.t. the incoming cell state c
    dW_ih: np.ndarray  # (4*H, I)
    dW_hh: np.ndarray  # (4*H, H)
    db_ih: Optional[np.ndarray]  # (4*H,) or None
    db_hh: Optional[np.ndarray]  # (4*H,) or None


class LSTMSequenceGrads(NamedTuple):
    """Gradients of a whole LSTM sequence (``lstm_backward``)."""

    dx: np.ndarray  # (T, B, I)   zero at padded positions
    dh0: np.ndarray  # (B, H)
    dc0: np.ndarray  # (B, H)
    dW_ih: np.ndarray  # (4*H, I)
    dW_hh: np.ndarray  # (4*H, H)
    db_ih: Optional[np.ndarray]  # (4*H,) or None
    db_hh: Optional[np.ndarray]  # (4*H,) or None


class LSTMProjSequenceGrads(NamedTuple):
    """Gradients of a whole LSTM sequence with a projection (``lstm_backward`` after
    ``lstm_forward(..., W_hr=...)``); P is the projection size, the state h is (B, P)."""

    dx: np.ndarray  # (T, B, I)   zero at padded positions
    dh0: np.ndarray  # (B, P)
    dc0: np.ndarray  # (B, H)
    dW_ih: np.ndarray  # (4*H, I)
    dW_hh: np.ndarray  # (4*H, P)
    db_ih: Optional[np.ndarray]  # (4*H,) or None
    db_hh: Optional[np.ndarray]  # (4*H,) or None
    dW_hr: np.ndarray  # (P, H)


class LSTMPeepSequenceGrads(NamedTuple):
    """Gradients of a whole LSTM sequence with peepholes (``lstm_backward`` after
    ``lstm_forward(..., W_peep=...)``): the fields of ``LSTMProjSequenceGrads`` (``dW_hr`` None
    without a projection) plus ``dW_peep``."""

    dx: np.ndarray  # (T, B, I)   zero at padded positions
    dh0: np.ndarray  # (B, S)     S = P with a projection, else H
    dc0: np.ndarray  # (B, H)
    dW_ih: np.ndarray  # (4*H, I)
    dW_hh: np.ndarray  # (4*H, S)
    db_ih: Optional[np.ndarray]  # (4*H,) or None
    db_hh: Optional[np.ndarray]  # (4*H,) or None
    dW_hr: Optional[np.ndarray]  # (P, H) or None
    dW_peep: np.ndarray  # (3, H)     rows i, f, o


class CrossEntropyResult(NamedTuple):
    """Softmax cross-entropy loss and its gradient (``softmax_cross_entropy``).

    ``loss`` is a scalar for ``reduction="mean"`` / ``"sum"`` and (N,) for ``"none"``;
    ``dlogits`` (N, C) is the gradient of the returned loss (of ``loss.sum()`` for "none").
    """

    loss: np.ndarray  # () or (N,)
    dlogits: np.ndarray  # (N, C)


# Attention (rnnkit.ops.attention and its oracle); letters as there: B batch, T query steps,
# S memory steps, Hq / Hk / Hv query / key / value sizes, A attention size.


class AdditiveAttentionGrads(NamedTuple):
    """Gradients of :func:`additive_attention_forward`'s inputs."""

    dquery: np.ndarray  # (B, T, Hq) or (B, Hq)
    dkeys: np.ndarray  # (B, S, Hk)
    dvalues: np.ndarray  # (B, S, Hv)
    dW_q: np.ndarray  # (A, Hq)
    dW_k: np.ndarray  # (A, Hk)
    dv: np.ndarray  # (A,)
    db: Optional[np.ndarray]  # (A,) or None


class DotAttentionGrads(NamedTuple):
    """Gradients of :func:`dot_attention_forward`'s inputs."""

    dquery: np.ndarray  # (B, T, H) or (B, H)
    dkeys: np.ndarray  # (B, S, H)
    dvalues: np.ndarray  # (B, S, Hv)


class GeneralAttentionGrads(NamedTuple):
    """Gradients of :func:`general_attention_forward`'s inputs."""

    dquery: np.ndarray  # (B, T, Hq) or (B, Hq)
    dkeys: np.ndarray  # (B, S, Hk)
    dvalues: np.ndarray  # (B, S, Hv)
    dW_a: np.ndarray  # (Hq, Hk)

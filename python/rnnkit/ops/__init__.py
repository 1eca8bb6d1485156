"""Functional kernels, no state: arrays in, arrays (and a workspace / cache for backward) out.

* :mod:`.recurrent`: RNN, LSTM, GRU cells and whole sequences, forward and backward.
* :mod:`.attention`: additive, dot and general attention, forward and backward.
* :mod:`.losses`: softmax and the fused softmax cross-entropy.

ops imports only the compiled module ``rnnkit._core``, ``rnnkit._validate``, the result types
(``rnnkit._types``) and the cell table (``rnnkit._cells``); :mod:`rnnkit.reference` mirrors it
file by file in plain NumPy.
"""

from .attention import (
    AttentionCache,
    additive_attention_backward,
    additive_attention_forward,
    dot_attention_backward,
    dot_attention_forward,
    general_attention_backward,
    general_attention_forward,
    lengths_to_mask,
)
from .losses import softmax, softmax_cross_entropy
from .recurrent import (
    Workspace,
    gru_backward,
    gru_cell_backward,
    gru_cell_forward,
    gru_forward,
    lstm_backward,
    lstm_cell_backward,
    lstm_cell_forward,
    lstm_forward,
    rnn_backward,
    rnn_cell_backward,
    rnn_cell_forward,
    rnn_forward,
)

__all__ = [
    "Workspace",
    "rnn_forward",
    "rnn_backward",
    "rnn_cell_forward",
    "rnn_cell_backward",
    "lstm_forward",
    "lstm_backward",
    "lstm_cell_forward",
    "lstm_cell_backward",
    "gru_forward",
    "gru_backward",
    "gru_cell_forward",
    "gru_cell_backward",
    "softmax",
    "softmax_cross_entropy",
    "AttentionCache",
    "lengths_to_mask",
    "additive_attention_forward",
    "additive_attention_backward",
    "dot_attention_forward",
    "dot_attention_backward",
    "general_attention_forward",
    "general_attention_backward",
]

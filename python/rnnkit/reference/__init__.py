"""Plain NumPy reference implementations ("oracles") of every rnnkit kernel, mirroring
:mod:`rnnkit.ops` file by file: :mod:`.recurrent` (RNN, LSTM, GRU cells and sequences),
:mod:`.attention` and :mod:`.losses`. Same signatures as the compiled kernels; written the
textbook way (one Python loop over time); never imports the compiled module.

The recurrent oracles and the losses are also available here directly
(``rnnkit.reference.lstm_forward``), as before the split.
"""

from . import attention, losses, recurrent
from .losses import softmax, softmax_cross_entropy
from .recurrent import (
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
    "rnn_cell_forward",
    "rnn_cell_backward",
    "rnn_forward",
    "rnn_backward",
    "lstm_cell_forward",
    "lstm_cell_backward",
    "lstm_forward",
    "lstm_backward",
    "gru_cell_forward",
    "gru_cell_backward",
    "gru_forward",
    "gru_backward",
    "softmax",
    "softmax_cross_entropy",
    "attention",
    "losses",
    "recurrent",
]

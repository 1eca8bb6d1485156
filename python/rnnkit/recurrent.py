"""Former home of these names, kept so that old imports keep working: they live in
:mod:`rnnkit.ops.recurrent` now (import them from there)."""

from .ops.recurrent import (
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
]

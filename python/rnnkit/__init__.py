"""rnnkit: fast, exact recurrent neural network kernels for NumPy.

Vanilla RNN (tanh, relu), LSTM and GRU (PyTorch's reset-after form and the textbook
reset-before form): fused C++ forward and backprop through time over whole sequences, with
PyTorch's weight layout, float32 and float64. ``rnnkit.reference`` holds plain NumPy
implementations of every kernel with the same signatures.

Shape letters: T time steps, B batch, I input size, H hidden size, G gate blocks.
"""

from __future__ import annotations

import os as _os

# Idle OpenBLAS workers spin before sleeping; with NumPy's own OpenBLAS in the same process the
# two pools fight over the cores when calls interleave. A short spin avoids that (see
# bench/RESULTS.md); a value the user set wins. Read once, when the library loads.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

# Load the shared OpenBLAS (RTLD_GLOBAL) before the extension that links it.
import scipy_openblas32 as _scipy_openblas32  # noqa: E402,F401

from . import _core  # noqa: E402
from ._types import (  # noqa: E402
    CellGrads,
    CrossEntropyResult,
    LSTMCellGrads,
    LSTMProjSequenceGrads,
    LSTMSequenceGrads,
    SequenceGrads,
)
from .ops.losses import softmax, softmax_cross_entropy  # noqa: E402
from .ops.recurrent import (  # noqa: E402
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

# The layers (ops -> nn -> models -> train; reference beside ops), and the former flat modules,
# kept as re-exports so that every old import path works.
from . import nn, ops, reference  # noqa: E402
from . import models, train  # noqa: E402
from . import (  # noqa: E402
    attention,
    decoding,
    diagnostics,
    layers,
    optim,
    recurrent,
    reference_attention,
    sampling,
    seq2seq,
    training,
)
from .train import clip_grad_norm, clip_grad_value  # noqa: E402
__version__ = "0.1.0"


def set_num_threads(n: int) -> None:
    """Set the number of threads rnnkit's kernels use (its team and its BLAS pool). n >= 1."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n: expected an int, got {n!r}")
    if n < 1:
        raise ValueError(f"n: expected at least 1, got {n}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads rnnkit's kernels use."""
    return _core.get_num_threads()


__all__ = [
    "CellGrads", "CrossEntropyResult", "LSTMCellGrads", "LSTMProjSequenceGrads", "LSTMSequenceGrads", "SequenceGrads",
    "Workspace", "get_num_threads", "gru_backward", "gru_cell_backward", "gru_cell_forward",
    "gru_forward", "lstm_backward", "lstm_cell_backward", "lstm_cell_forward", "lstm_forward",
    "rnn_backward", "rnn_cell_backward", "rnn_cell_forward", "rnn_forward", "set_num_threads",
    "softmax", "softmax_cross_entropy", "clip_grad_norm", "clip_grad_value", "__version__",
    # the layers
    "ops", "reference", "nn", "models", "train",
    # former flat modules (re-exports of the layers above)
    "attention", "decoding", "diagnostics", "layers", "optim", "recurrent",
    "reference_attention", "sampling", "seq2seq", "training",
]

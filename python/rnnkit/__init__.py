"""rnnkit: fast, exact recurrent neural network kernels for NumPy.

Vanilla RNN (tanh, relu), LSTM and GRU (PyTorch's reset-after form and the textbook
reset-before form): fused C++ forward and backprop through time over whole sequences, with
PyTorch's weight layout, float32 and float64. ``rnnkit.reference`` holds plain NumPy
implementations of every kernel with the same signatures.

Shape letters: T time steps, B batch, I input size, H hidden size, G gate blocks.
"""

from __future__ import annotations

import operator as _operator
import os as _os
import warnings as _warnings

# Idle OpenBLAS workers spin before sleeping; with NumPy's own OpenBLAS in the same process the
# two pools fight over the cores when calls interleave. A short spin avoids that (see
# bench/RESULTS.md); a value the user set wins. Read once, when the library loads.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

# Load the shared OpenBLAS (RTLD_GLOBAL) before the extension that links it.
import scipy_openblas32 as _scipy_openblas32  # noqa: F401

# The layers (ops -> nn -> models -> distributed -> train; reference beside ops), and the former flat modules,
# kept as re-exports so that every old import path works.
from . import (
    _core,
    _validate,
    attention,
    decoding,
    diagnostics,
    distributed,
    flax,
    keras,
    layers,
    models,
    nn,
    onnx,
    ops,
    optim,
    recurrent,
    reference,
    reference_attention,
    sampling,
    seq2seq,
    train,
    training,
)
from ._types import (
    CellGrads,
    CrossEntropyResult,
    LSTMCellGrads,
    LSTMPeepSequenceGrads,
    LSTMProjSequenceGrads,
    LSTMSequenceGrads,
    SequenceGrads,
)
from .ops.losses import softmax, softmax_cross_entropy
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
from .train import clip_grad_norm, clip_grad_value

__version__ = "0.1.0"


# More threads than this is surely a mistake (each is a real thread of rnnkit's team).
_MAX_THREADS = 1024


def _usable_cores() -> int:
    try:
        return len(_os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return _os.cpu_count() or 1


def set_num_threads(n: int) -> None:
    """Set the number of threads rnnkit's kernels use (its team and its BLAS pool).

    ``n`` is any integral number (Python or NumPy int) from 1 to 1024; more
    than four threads per usable core oversubscribes the cores (measured: 64 threads on 2 cores
    ran 74-101x slower) and gives a RuntimeWarning.
    """
    if isinstance(n, bool) or not hasattr(type(n), "__index__"):
        raise TypeError(f"n: expected an int, got {n!r}")
    n = _operator.index(n)
    if n < 1:
        raise ValueError(f"n: expected at least 1, got {n}")
    if n > _MAX_THREADS:
        raise ValueError(f"n: expected at most {_MAX_THREADS}, got {n}")
    usable = _usable_cores()
    if n > 4 * usable:
        _warnings.warn(
            f"n: {n} threads on {usable} usable cores oversubscribes them (more than 4 "
            f"per core); rnnkit will run much slower than with {usable}",
            RuntimeWarning,
            stacklevel=2,
        )
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads rnnkit's kernels use."""
    return _core.get_num_threads()


def set_flush_denormal(enabled: bool) -> bool:
    """Flush subnormal floats to zero inside rnnkit's kernel calls (on by default).

    Subnormal numbers (below 1.2e-38 in float32, 2.2e-308 in float64) cost a microcode assist
    per operation on Intel x86 cores; vanishing gradients are made of them, and made a vanilla
    RNN's backward ten times slower on a Sapphire Rapids core (AMD Zen 4 showed no penalty).
    With flushing on, a kernel reads subnormal inputs as zero and writes subnormal results as
    zero; the caller's own floating-point mode is restored when the call returns.
    ``torch.set_flush_denormal`` is the same switch. Returns whether the
    setting is now ``enabled`` (False only when asking for flushing on a CPU without it).
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected a bool, got {enabled!r}")
    return bool(_core.set_flush_denormal(bool(enabled)))


def get_flush_denormal() -> bool:
    """Whether rnnkit's kernels flush subnormal floats to zero (see set_flush_denormal)."""
    return bool(_core.get_flush_denormal())


def memory_stats() -> dict[str, int]:
    """Memory rnnkit keeps between calls, in bytes: a dict with

    * ``cached_bytes``: blocks of freed result arrays (outputs, workspaces, gradients) kept for
      reuse, so that repeated calls of one size skip the page faults of fresh memory;
    * ``scratch_bytes``: pooled scratch buffers of the kernels (gate gradients, packed weights);
    * ``cache_limit``: the most ``cached_bytes`` can reach (:func:`set_cache_limit`);
    * ``scratch_limit``: the most ``scratch_bytes`` can reach (a larger buffer, e.g. a long
      sequence's, is freed when its call returns).

    Memory still referenced by live arrays (a workspace you keep) is not included.
    """
    return {k: int(v) for k, v in _core._memory_stats().items()}


def empty_cache() -> None:
    """Free every cached block and pooled scratch buffer (see :func:`memory_stats`). Arrays in
    use are not affected; later calls allocate afresh (and refill the cache)."""
    _core._empty_cache()


def set_cache_limit(nbytes: int) -> None:
    """Set the most bytes of freed result arrays rnnkit keeps for reuse (default 256 MiB, which
    holds the blocks of a training step of LSTM T=100, B=64, I=H=512 in float32). Blocks beyond
    it are freed at once, least recently used first; 0 disables the cache."""
    _core._set_cache_limit(min(_validate.int_arg("nbytes", nbytes, minimum=0), _validate.INTP_MAX))


__all__ = [
    "CellGrads",
    "CrossEntropyResult",
    "LSTMCellGrads",
    "LSTMPeepSequenceGrads",
    "LSTMProjSequenceGrads",
    "LSTMSequenceGrads",
    "SequenceGrads",
    "Workspace",
    "get_flush_denormal",
    "get_num_threads",
    "gru_backward",
    "gru_cell_backward",
    "gru_cell_forward",
    "gru_forward",
    "lstm_backward",
    "lstm_cell_backward",
    "lstm_cell_forward",
    "lstm_forward",
    "rnn_backward",
    "rnn_cell_backward",
    "rnn_cell_forward",
    "rnn_forward",
    "set_flush_denormal",
    "set_num_threads",
    "softmax",
    "softmax_cross_entropy",
    "clip_grad_norm",
    "clip_grad_value",
    "memory_stats",
    "empty_cache",
    "set_cache_limit",
    "__version__",
    # the layers
    "ops",
    "reference",
    "nn",
    "models",
    "distributed",
    "train",
    "onnx",  # ONNX import / export (needs the optional onnx package when called)
    # interchange with other frameworks (their packages are imported on first use)
    "keras",
    "flax",
    # former flat modules (re-exports of the layers above)
    "attention",
    "decoding",
    "diagnostics",
    "layers",
    "optim",
    "recurrent",
    "reference_attention",
    "sampling",
    "seq2seq",
    "training",
]

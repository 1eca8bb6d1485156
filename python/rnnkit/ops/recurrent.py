"""Recurrent cells and whole sequences, functional: forward and backprop through time, fused in C++.

Shape letters (used in every docstring of rnnkit):
    T time steps, B batch size, I input size, H hidden size,
    G gate blocks: 1 for the vanilla RNN, 4 for the LSTM (i, f, g, o), 3 for the GRU (r, z, n).

The equations and weight layouts the kernels implement: ``docs/rnn-equations.md``.
Weights follow PyTorch's layout and gate order: ``W_ih (G*H, I)``, ``W_hh (G*H, H)``,
``b_ih (G*H,)``, ``b_hh (G*H,)``, so a PyTorch ``state_dict`` loads unchanged. Every array of a
call shares one dtype, float32 or float64, and results have it too. Biases may be None (no
bias), and so may initial states (zeros) and incoming gradients (zero).

Sequence functions return ``(y, final_state, workspace)``; the workspace holds what backward
needs. It keeps the inputs by reference: modifying x, h0 or a weight in place before backward
makes backward raise ValueError (checked on a sample of each array), so pass a copy of a buffer
you refill. ``lengths`` is copied.
``training=False`` keeps nothing and returns None for it. Backward results are NamedTuples
(:mod:`rnnkit._types`); bias gradients are None where the bias was None.

Variable lengths: ``lengths (B,)`` integers in [1, T]. Sequence b runs its first lengths[b]
steps only: ``y[t, b] = 0`` for t >= lengths[b], its final state is the state after its own last
step, and with ``reverse=True`` it starts from its initial state at t = lengths[b] - 1, as
PyTorch's packed sequences do.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from .. import _core
from .. import _validate as v
from .._cells import GRU_CELL, LSTM_CELL, RNN_CELL, cell_spec
from .._types import (
    CellGrads,
    LSTMCellGrads,
    LSTMPeepSequenceGrads,
    LSTMProjSequenceGrads,
    LSTMSequenceGrads,
    SequenceGrads,
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

_RNN, _LSTM, _GRU = RNN_CELL.name, LSTM_CELL.name, GRU_CELL.name


@dataclass(frozen=True, eq=False)
class Workspace:
    """What a training-mode forward saved for its backward. Opaque to users.

    ``cell`` is the family name (:mod:`rnnkit._cells`); ``options`` holds nonlinearity /
    reset_after; ``single_step`` marks the cache of a ``*_cell_forward`` call. ``saved`` is the
    compiled module's record (``_core.SavedSequence``, laid out in ``cpp/workspace.hpp``): the
    forward's inputs by reference, a copy of ``lengths``, and the arrays the forward wrote for
    backward (read-only): h_{t-1} per step (T, B, H), c_{t-1} (LSTM), the activated gates
    (T, B, G*H) and one cell-specific (T, B, H) array. Its fields cannot be changed; backward
    raises ValueError if x, h0 or a weight it references was modified in place since the
    forward (checked on a sample of each array's elements).
    """

    cell: str
    options: dict
    single_step: bool
    saved: _core.SavedSequence = field(repr=False)

    @property
    def x(self) -> np.ndarray:
        return self.saved.x

    @property
    def W_ih(self) -> np.ndarray:
        return self.saved.W_ih

    @property
    def W_hh(self) -> np.ndarray:
        return self.saved.W_hh

    @property
    def W_hr(self) -> np.ndarray | None:
        return self.saved.W_hr

    @property
    def lengths(self) -> np.ndarray | None:
        return self.saved.lengths

    @property
    def reverse(self) -> bool:
        return self.saved.reverse

    @property
    def has_b_ih(self) -> bool:
        return self.saved.has_b_ih

    @property
    def has_b_hh(self) -> bool:
        return self.saved.has_b_hh

    @property
    def dtype(self) -> np.dtype:
        return self.saved.dtype

    @property
    def clip(self) -> float | None:
        """The forward's ``clip=`` bound, or None."""
        return self.saved.clip

    @property
    def precision(self) -> str:
        """The forward's ``precision=`` ("float32" or "bf16"); backward computes in the same."""
        return self.saved.precision

    @property
    def projected(self) -> bool:
        return self.saved.W_hr is not None

    @property
    def hidden_size(self) -> int:
        return self.W_hr.shape[1] if self.W_hr is not None else self.W_hh.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes held by the saved per-step arrays (the inputs are references)."""
        return self.saved.nbytes

    def __repr__(self) -> str:
        T, B, I = self.x.shape
        return (
            f"Workspace(cell={self.cell!r}, options={self.options}, T={T}, B={B}, I={I}, "
            f"H={self.hidden_size}, dtype={self.dtype.name}, precision={self.precision!r}, "
            f"reverse={self.reverse})"
        )


class _SequenceArgs(NamedTuple):
    """A sequence forward's arguments as checked: contiguous arrays of x's dtype."""

    x: np.ndarray
    states: list[np.ndarray | None]
    W_ih: np.ndarray
    W_hh: np.ndarray
    b_ih: np.ndarray | None
    b_hh: np.ndarray | None
    lengths: np.ndarray | None
    W_hr: np.ndarray | None
    precision: str
    clip: float | None


# What the size check names: every buffer a call allocates (cpp/footprint.hpp lists them).
_FORWARD_BUFFERS = "the call's outputs, workspace and scratch (incl. the BLAS buffer)"
_BACKWARD_BUFFERS = "the call's gradients and scratch (incl. the BLAS buffer)"


@functools.lru_cache(maxsize=256)
def _call_bytes(*args):
    """The bytes of a call's allocations: the compiled module's own list (cpp/footprint.hpp),
    summed in Python ints (no overflow). Cached: a training loop repeats its shapes, and the
    list costs a few microseconds to build."""
    return sum(int(count) * int(itemsize) for _, count, itemsize in _core._sequence_terms(*args[1:]))


def _check_call_memory(arg, cell, options, backward, dtype, T, B, I, H, P, **flags):
    """MemoryError (ValueError on overflow) naming ``arg`` and the bytes, before anything is
    allocated, when a call's buffers would not fit (:func:`rnnkit._validate.check_bytes`)."""
    nbytes = _call_bytes(
        _core._get_small_batch_limit(),  # packed weights or not: part of the count
        cell,
        bool(options.get("reset_after", True)),
        backward,
        dtype == np.float64,
        T,
        B,
        I,
        H,
        P,
        flags.get("training", True),
        flags.get("lengths", False),
        flags.get("project", False),
        flags.get("dy", False),
        flags.get("b_ih", False),
        flags.get("b_hh", False),
        flags.get("bf16", False),
        flags.get("clip", False),
    )
    v.check_bytes(
        arg, nbytes, _BACKWARD_BUFFERS if backward else _FORWARD_BUFFERS, f" of {np.dtype(dtype).name}"
    )


def _check_backward_memory(ws, dy):
    T, B, I = ws.x.shape
    _check_call_memory(
        "workspace",
        ws.cell,
        ws.options,
        True,
        ws.dtype,
        T,
        B,
        I,
        ws.hidden_size,
        ws.W_hh.shape[1],
        lengths=ws.lengths is not None,
        project=ws.projected,
        dy=dy is not None,
        b_ih=ws.has_b_ih,
        b_hh=ws.has_b_hh,
        bf16=ws.precision == "bf16",
        clip=ws.clip is not None,
    )


def _check_sequence_args(
    cell,
    x,
    states,
    W_ih,
    W_hh,
    b_ih,
    b_hh,
    lengths,
    reverse,
    training,
    W_hr=None,
    options=None,
    precision="float32",
    clip=None,
) -> _SequenceArgs:
    """Validate a sequence forward's arguments; return them as contiguous arrays.

    ``states`` lists (name, array) of initial states; with a projection W_hr (P, H) the first
    one (h0) is (B, P) and the recurrent weight W_hh is (G*H, P). ``options`` are the cell's
    and ``precision`` the call's (they change what the call allocates).
    """
    G = cell_spec(cell).gates
    gh = f"{G}*H" if G > 1 else "H"
    x = v.float_array("x", x)
    dtype = x.dtype
    v.check_ndim("x", x, 3, "(T, B, I)")
    T, B, I = x.shape
    W_hh = v.float_array("W_hh", W_hh, dtype)
    if W_hr is not None:
        W_hr = v.float_array("W_hr", W_hr, dtype)
        v.check_ndim("W_hr", W_hr, 2, "(P, H)")
        P, H = W_hr.shape
        v.check_shape("W_hh", W_hh, (G * H, P), f"({gh}, P)")
    else:
        v.check_ndim("W_hh", W_hh, 2, f"({gh}, H)")
        H = P = v.hidden_size_of(W_hh, G)
        v.check_shape("W_hh", W_hh, (G * H, H), f"({gh}, H)")
    W_ih = v.float_array("W_ih", W_ih, dtype)
    v.check_shape("W_ih", W_ih, (G * H, I), f"({gh}, I)")
    b_ih = v.optional_float_array("b_ih", b_ih, dtype)
    b_hh = v.optional_float_array("b_hh", b_hh, dtype)
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is not None:
            v.check_shape(name, b, (G * H,), f"({gh},)")
    checked_states = []
    for k, (name, s) in enumerate(states):
        s = v.optional_float_array(name, s, dtype)
        if s is not None:
            projected = k == 0 and W_hr is not None
            v.check_shape(name, s, (B, P if projected else H), "(B, P)" if projected else "(B, H)")
        checked_states.append(s)
    lengths = v.lengths_array(lengths, T, B)
    v.flag("reverse", reverse)
    v.flag("training", training)
    precision = v.precision(precision, dtype)
    clip = v.clip(clip)
    v.check_gemm_sizes(**{"T*B": T * B, "G*H": G * H, "I": I})
    _check_call_memory(
        "x",
        cell,
        options or {},
        False,
        dtype,
        T,
        B,
        I,
        H,
        P,
        training=bool(training),
        lengths=lengths is not None,
        project=W_hr is not None,
        bf16=precision == "bf16",
        clip=clip is not None,
    )
    return _SequenceArgs(x, checked_states, W_ih, W_hh, b_ih, b_hh, lengths, W_hr, precision, clip)


def _workspace(cell, options, saved, single_step=False):
    return None if saved is None else Workspace(cell, options, single_step, saved)


def _check_workspace(workspace, cell, fn, single_step):
    """The workspace must come from a training-mode forward of the same cell family."""
    if workspace is None:
        raise ValueError(
            f"workspace: got None; {fn} needs the workspace of a forward run with "
            "training=True (training=False keeps none)"
        )
    if not isinstance(workspace, Workspace):
        raise TypeError(
            f"workspace: expected the Workspace returned by {cell}_forward, got {type(workspace).__name__}"
        )
    if workspace.cell != cell:
        raise ValueError(
            f"workspace: it comes from a {workspace.cell} forward, but {fn} needs one from a {cell} forward"
        )
    if workspace.single_step != single_step:
        made_by = f"{cell}_cell_forward" if workspace.single_step else f"{cell}_forward"
        raise ValueError(f"workspace: it comes from {made_by} and cannot be used by {fn}")
    if not isinstance(workspace.saved, _core.SavedSequence):
        raise TypeError(
            f"workspace: its saved state is a {type(workspace.saved).__name__}, but a workspace "
            "must come unmodified from its forward"
        )


def _check_grads(ws, named):
    """Incoming gradients: None or arrays of the workspace's dtype and the matching shape."""
    T, B, _ = ws.x.shape
    S = ws.W_hh.shape[1]  # state size: H, or P with a projection
    H = ws.hidden_size
    out = []
    for name, g, single in named:
        g = v.optional_float_array(name, g, ws.dtype)
        if g is not None:
            n = S if name != "dc_T" else H
            sym = "P" if (n == S and ws.projected) else "H"
            if single:
                v.check_shape(name, g, (B, n), f"(B, {sym})")
            else:
                v.check_shape(name, g, (T, B, n), f"(T, B, {sym})")
        out.append(g)
    return out


# ----------------------------------------------------------------------------- vanilla RNN


def rnn_forward(
    x: npt.ArrayLike,
    h0: npt.ArrayLike | None,
    W_ih: npt.ArrayLike,
    W_hh: npt.ArrayLike,
    b_ih: npt.ArrayLike | None,
    b_hh: npt.ArrayLike | None,
    *,
    nonlinearity: str = "tanh",
    reverse: bool = False,
    lengths: npt.ArrayLike | None = None,
    training: bool = True,
    precision: str = "float32",
    clip: float | None = None,
) -> tuple[np.ndarray, np.ndarray, Workspace | None]:
    """Vanilla RNN over a sequence: ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``.

    Args: x (T, B, I); h0 (B, H) or None; W_ih (H, I); W_hh (H, H); b_ih, b_hh (H,) or None;
    nonlinearity "tanh" or "relu"; reverse: run t = T-1 .. 0; lengths (B,) or None;
    training: keep the workspace for :func:`rnn_backward`; precision: "float32" (the products in
    the arrays' own precision) or "bf16" (float32 arrays: every product's inputs rounded to
    bfloat16, sums in float32; on CPUs with AVX512-BF16 or AMX; backward uses the same);
    clip: None, or ONNX's cell clip, a bound > 0: the activation's input is clamped to
    [-clip, clip] (its gradient is zero where it was cut).

    Returns ``(y, h_T, workspace)``: y (T, B, H) every step's state, h_T (B, H) the final one.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> T, B, I, H = 5, 2, 3, 4
    >>> x = rng.standard_normal((T, B, I))
    >>> W_ih, W_hh = rng.standard_normal((H, I)), rng.standard_normal((H, H))
    >>> y, h_T, ws = rnnkit.rnn_forward(x, None, W_ih, W_hh, None, None)
    >>> y.shape, h_T.shape, bool(np.array_equal(y[-1], h_T))
    ((5, 2, 4), (2, 4), True)
    >>> h = np.zeros((B, H))  # the equation, one step at a time
    >>> for t in range(T):
    ...     h = np.tanh(x[t] @ W_ih.T + h @ W_hh.T)
    >>> bool(np.allclose(h, h_T))
    True
    >>> g = rnnkit.rnn_backward(np.ones_like(y), None, ws)
    >>> g.dx.shape, g.dW_hh.shape, g.db_ih is None
    ((5, 2, 3), (4, 4), True)
    """
    v.choice("nonlinearity", nonlinearity, ("tanh", "relu"))
    a = _check_sequence_args(
        _RNN,
        x,
        [("h0", h0)],
        W_ih,
        W_hh,
        b_ih,
        b_hh,
        lengths,
        reverse,
        training,
        precision=precision,
        clip=clip,
    )
    y, h_T, _, saved = _core.rnn_forward(
        a.x,
        a.states[0],
        a.W_ih,
        a.W_hh,
        a.b_ih,
        a.b_hh,
        a.lengths,
        nonlinearity,
        bool(reverse),
        bool(training),
        precision=a.precision,
        clip=a.clip,
    )
    ws = _workspace(_RNN, {"nonlinearity": nonlinearity}, saved)
    return y, h_T, ws


def rnn_backward(dy: npt.ArrayLike | None, dh_T: npt.ArrayLike | None, workspace: Workspace) -> SequenceGrads:
    """Backprop through time for :func:`rnn_forward`.

    Args: dy (T, B, H) gradient of the loss w.r.t. y, or None; dh_T (B, H) w.r.t. h_T, or None;
    workspace from ``rnn_forward(..., training=True)``.

    Returns ``SequenceGrads(dx (T, B, I), dh0 (B, H), dW_ih (H, I), dW_hh (H, H), db_ih, db_hh)``.
    """
    _check_workspace(workspace, _RNN, "rnn_backward", single_step=False)
    return _rnn_backward(dy, dh_T, workspace)


def _rnn_backward(dy, dh_T, ws):
    dy, dh_T = _check_grads(ws, [("dy", dy, False), ("dh_T", dh_T, True)])
    _check_backward_memory(ws, dy)
    dx, dh0, _, dW_ih, dW_hh, db_ih, db_hh, _, _ = _core.rnn_backward(dy, dh_T, ws.saved)
    return SequenceGrads(dx, dh0, dW_ih, dW_hh, db_ih, db_hh)


def rnn_cell_forward(
    x: npt.ArrayLike,
    h: npt.ArrayLike | None,
    W_ih: npt.ArrayLike,
    W_hh: npt.ArrayLike,
    b_ih: npt.ArrayLike | None,
    b_hh: npt.ArrayLike | None,
    *,
    nonlinearity: str = "tanh",
    precision: str = "float32",
) -> tuple[np.ndarray, Workspace]:
    """One vanilla RNN step: ``h_next = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``.

    Args: x (B, I); h (B, H) or None; W_ih (H, I); W_hh (H, H); b_ih, b_hh (H,) or None.
    Returns ``(h_next (B, H), cache)``; pass the cache to :func:`rnn_cell_backward`.
    """
    x = _cell_input(x)
    h = _cell_state("h", h, x, W_hh, _RNN)
    y, h_next, ws = rnn_forward(x, h, W_ih, W_hh, b_ih, b_hh, nonlinearity=nonlinearity, precision=precision)
    return h_next, _as_cell_cache(ws)


def rnn_cell_backward(dh_next: npt.ArrayLike | None, cache: Workspace) -> CellGrads:
    """Backward of :func:`rnn_cell_forward`.

    Args: dh_next (B, H) gradient w.r.t. h_next; cache from rnn_cell_forward.
    Returns ``CellGrads(dx (B, I), dh (B, H), dW_ih, dW_hh, db_ih, db_hh)``.
    """
    _check_workspace(cache, _RNN, "rnn_cell_backward", single_step=True)
    dh_next = _cell_grad("dh_next", dh_next, cache)
    g = _rnn_backward(None, dh_next, cache)
    return CellGrads(g.dx[0], g.dh0, g.dW_ih, g.dW_hh, g.db_ih, g.db_hh)


# ----------------------------------------------------------------------------- LSTM


def lstm_forward(
    x: npt.ArrayLike,
    h0: npt.ArrayLike | None,
    c0: npt.ArrayLike | None,
    W_ih: npt.ArrayLike,
    W_hh: npt.ArrayLike,
    b_ih: npt.ArrayLike | None,
    b_hh: npt.ArrayLike | None,
    *,
    W_hr: npt.ArrayLike | None = None,
    reverse: bool = False,
    lengths: npt.ArrayLike | None = None,
    training: bool = True,
    precision: str = "float32",
    clip: float | None = None,
    input_forget: bool = False,
    W_peep: npt.ArrayLike | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], Workspace | None]:
    """LSTM over a sequence (PyTorch's equations, gate order i, f, g, o):

    ``[i f g o] = [σ σ tanh σ](x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``,
    ``c_t = f c_{t-1} + i g``, ``h_t = o tanh(c_t)``.

    With a projection ``W_hr (P, H)`` (PyTorch's ``proj_size``): ``h_t = (o tanh(c_t)) W_hr^T``,
    so h0, y and h_T have P columns instead of H, and W_hh is (4*H, P).

    Args: x (T, B, I); h0, c0 (B, H) or None; W_ih (4*H, I); W_hh (4*H, H);
    b_ih, b_hh (4*H,) or None; W_hr (P, H) or None; reverse; lengths (B,) or None; training;
    precision "float32" or "bf16" (as :func:`rnn_forward`); clip None or a bound > 0 (ONNX's:
    the four gates' pre-activations clamped to [-clip, clip]; c_t is not); input_forget: ONNX's
    coupled input and forget gates, ``f = 1 - i`` (the f block's weights and biases are then
    unused, their gradients zero); W_peep (3, H) or None: peepholes (ONNX's P, rows in rnnkit's
    order i, f, o): the i and f pre-activations add ``W_peep[0] * c_{t-1}`` and
    ``W_peep[1] * c_{t-1}``, the o pre-activation ``W_peep[2] * c_t`` (inside the clip; with
    input_forget ``W_peep[1]`` is unused).
    Returns ``(y (T, B, H), (h_T (B, H), c_T (B, H)), workspace)``.

    Examples
    --------
    The fused kernel against its NumPy oracle, :func:`rnnkit.reference.lstm_forward`:

    >>> rng = np.random.default_rng(0)
    >>> T, B, I, H = 6, 3, 4, 5
    >>> x = rng.standard_normal((T, B, I)).astype(np.float32)
    >>> W_ih = (0.3 * rng.standard_normal((4 * H, I))).astype(np.float32)
    >>> W_hh = (0.3 * rng.standard_normal((4 * H, H))).astype(np.float32)
    >>> b = np.zeros(4 * H, np.float32)
    >>> y, (h_T, c_T), ws = rnnkit.lstm_forward(x, None, None, W_ih, W_hh, b, b)
    >>> y_ref, (h_ref, c_ref), _ = rnnkit.reference.lstm_forward(x, None, None, W_ih, W_hh, b, b)
    >>> y.shape, c_T.shape, y.dtype
    ((6, 3, 5), (3, 5), dtype('float32'))
    >>> bool(np.allclose(y, y_ref, atol=1e-5) and np.allclose(c_T, c_ref, atol=1e-5))
    True
    """
    input_forget = v.flag("input_forget", input_forget)
    a = _check_sequence_args(
        _LSTM,
        x,
        [("h0", h0), ("c0", c0)],
        W_ih,
        W_hh,
        b_ih,
        b_hh,
        lengths,
        reverse,
        training,
        W_hr,
        precision=precision,
        clip=clip,
    )
    (h0, c0) = a.states
    if W_peep is not None:
        W_peep = v.float_array("W_peep", W_peep, a.x.dtype)
        v.check_shape("W_peep", W_peep, (3, a.W_ih.shape[0] // 4), "(3, H)")
    y, h_T, c_T, saved = _core.lstm_forward(
        a.x,
        h0,
        c0,
        a.W_ih,
        a.W_hh,
        a.b_ih,
        a.b_hh,
        a.W_hr,
        a.lengths,
        bool(reverse),
        bool(training),
        precision=a.precision,
        clip=a.clip,
        input_forget=input_forget,
        W_peep=W_peep,
    )
    ws = _workspace(_LSTM, {}, saved)
    return y, (h_T, c_T), ws


def lstm_backward(
    dy: npt.ArrayLike | None, dh_T: npt.ArrayLike | None, dc_T: npt.ArrayLike | None, workspace: Workspace
) -> LSTMSequenceGrads | LSTMProjSequenceGrads | LSTMPeepSequenceGrads:
    """Backprop through time for :func:`lstm_forward`.

    Args: dy (T, B, H) or None; dh_T, dc_T (B, H) or None; workspace from a training forward.
    Returns ``LSTMSequenceGrads(dx (T, B, I), dh0 (B, H), dc0 (B, H), dW_ih (4*H, I),
    dW_hh (4*H, H), db_ih, db_hh)``; with a projection, ``LSTMProjSequenceGrads`` with the
    same fields (h-sized ones P wide) plus ``dW_hr (P, H)``; with peepholes (``W_peep``),
    ``LSTMPeepSequenceGrads``: those fields (``dW_hr`` None without a projection) plus
    ``dW_peep (3, H)``.
    """
    _check_workspace(workspace, _LSTM, "lstm_backward", single_step=False)
    return _lstm_backward(dy, dh_T, dc_T, workspace)


def _lstm_backward(dy, dh_T, dc_T, ws):
    dy, dh_T, dc_T = _check_grads(ws, [("dy", dy, False), ("dh_T", dh_T, True), ("dc_T", dc_T, True)])
    _check_backward_memory(ws, dy)
    dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh, dW_hr, dW_peep = _core.lstm_backward(dy, dh_T, dc_T, ws.saved)
    if dW_peep is not None:  # returned exactly when the forward had peepholes (W_peep)
        return LSTMPeepSequenceGrads(dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh, dW_hr, dW_peep)
    if dW_hr is not None:  # returned exactly when the forward projected (W_hr)
        return LSTMProjSequenceGrads(dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh, dW_hr)
    return LSTMSequenceGrads(dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh)


def lstm_cell_forward(
    x: npt.ArrayLike,
    h: npt.ArrayLike | None,
    c: npt.ArrayLike | None,
    W_ih: npt.ArrayLike,
    W_hh: npt.ArrayLike,
    b_ih: npt.ArrayLike | None,
    b_hh: npt.ArrayLike | None,
    *,
    precision: str = "float32",
) -> tuple[tuple[np.ndarray, np.ndarray], Workspace]:
    """One LSTM step. Args: x (B, I); h, c (B, H) or None; weights and precision as
    :func:`lstm_forward`.

    Returns ``((h_next (B, H), c_next (B, H)), cache)``.
    """
    x = _cell_input(x)
    h = _cell_state("h", h, x, W_hh, _LSTM)
    c = _cell_state("c", c, x, W_hh, _LSTM)
    y, (h_next, c_next), ws = lstm_forward(x, h, c, W_ih, W_hh, b_ih, b_hh, precision=precision)
    return (h_next, c_next), _as_cell_cache(ws)


def lstm_cell_backward(
    dh_next: npt.ArrayLike | None, dc_next: npt.ArrayLike | None, cache: Workspace
) -> LSTMCellGrads:
    """Backward of :func:`lstm_cell_forward`.

    Args: dh_next, dc_next (B, H) or None; cache from lstm_cell_forward.
    Returns ``LSTMCellGrads(dx (B, I), dh (B, H), dc (B, H), dW_ih, dW_hh, db_ih, db_hh)``.
    """
    _check_workspace(cache, _LSTM, "lstm_cell_backward", single_step=True)
    dh_next = _cell_grad("dh_next", dh_next, cache)
    dc_next = _cell_grad("dc_next", dc_next, cache)
    g = _lstm_backward(None, dh_next, dc_next, cache)
    return LSTMCellGrads(g.dx[0], g.dh0, g.dc0, g.dW_ih, g.dW_hh, g.db_ih, g.db_hh)


# ----------------------------------------------------------------------------- GRU


def gru_forward(
    x: npt.ArrayLike,
    h0: npt.ArrayLike | None,
    W_ih: npt.ArrayLike,
    W_hh: npt.ArrayLike,
    b_ih: npt.ArrayLike | None,
    b_hh: npt.ArrayLike | None,
    *,
    reset_after: bool = True,
    reverse: bool = False,
    lengths: npt.ArrayLike | None = None,
    training: bool = True,
    precision: str = "float32",
    clip: float | None = None,
) -> tuple[np.ndarray, np.ndarray, Workspace | None]:
    """GRU over a sequence (gate order r, z, n):

    ``r, z = σ(x_t W_i{r,z}^T + b_i{r,z} + h_{t-1} W_h{r,z}^T + b_h{r,z})``,
    ``h_t = (1 - z) n + z h_{t-1}``, with
    ``n = tanh(x_t W_in^T + b_in + r (h_{t-1} W_hn^T + b_hn))`` if reset_after (PyTorch, cuDNN),
    ``n = tanh(x_t W_in^T + b_in + (r h_{t-1}) W_hn^T + b_hn)`` otherwise (the textbook form).

    Args: x (T, B, I); h0 (B, H) or None; W_ih (3*H, I); W_hh (3*H, H); b_ih, b_hh (3*H,) or
    None; reset_after; reverse; lengths (B,) or None; training; precision "float32" or "bf16"
    (as :func:`rnn_forward`); clip None or a bound > 0 (ONNX's: the pre-activations of r, z and
    n clamped to [-clip, clip], n's whole argument in either form).
    Returns ``(y (T, B, H), h_T (B, H), workspace)``.
    """
    v.flag("reset_after", reset_after)
    a = _check_sequence_args(
        _GRU,
        x,
        [("h0", h0)],
        W_ih,
        W_hh,
        b_ih,
        b_hh,
        lengths,
        reverse,
        training,
        options={"reset_after": bool(reset_after)},
        precision=precision,
        clip=clip,
    )
    y, h_T, _, saved = _core.gru_forward(
        a.x,
        a.states[0],
        a.W_ih,
        a.W_hh,
        a.b_ih,
        a.b_hh,
        a.lengths,
        bool(reset_after),
        bool(reverse),
        bool(training),
        precision=a.precision,
        clip=a.clip,
    )
    ws = _workspace(_GRU, {"reset_after": bool(reset_after)}, saved)
    return y, h_T, ws


def gru_backward(dy: npt.ArrayLike | None, dh_T: npt.ArrayLike | None, workspace: Workspace) -> SequenceGrads:
    """Backprop through time for :func:`gru_forward`.

    Args: dy (T, B, H) or None; dh_T (B, H) or None; workspace from a training forward.
    Returns ``SequenceGrads(dx (T, B, I), dh0 (B, H), dW_ih (3*H, I), dW_hh (3*H, H), db_ih,
    db_hh)``.
    """
    _check_workspace(workspace, _GRU, "gru_backward", single_step=False)
    return _gru_backward(dy, dh_T, workspace)


def _gru_backward(dy, dh_T, ws):
    dy, dh_T = _check_grads(ws, [("dy", dy, False), ("dh_T", dh_T, True)])
    _check_backward_memory(ws, dy)
    dx, dh0, _, dW_ih, dW_hh, db_ih, db_hh, _, _ = _core.gru_backward(dy, dh_T, ws.saved)
    return SequenceGrads(dx, dh0, dW_ih, dW_hh, db_ih, db_hh)


def gru_cell_forward(
    x: npt.ArrayLike,
    h: npt.ArrayLike | None,
    W_ih: npt.ArrayLike,
    W_hh: npt.ArrayLike,
    b_ih: npt.ArrayLike | None,
    b_hh: npt.ArrayLike | None,
    *,
    reset_after: bool = True,
    precision: str = "float32",
) -> tuple[np.ndarray, Workspace]:
    """One GRU step. Args: x (B, I); h (B, H) or None; weights and precision as
    :func:`gru_forward`.

    Returns ``(h_next (B, H), cache)``.
    """
    x = _cell_input(x)
    h = _cell_state("h", h, x, W_hh, _GRU)
    y, h_next, ws = gru_forward(x, h, W_ih, W_hh, b_ih, b_hh, reset_after=reset_after, precision=precision)
    return h_next, _as_cell_cache(ws)


def gru_cell_backward(dh_next: npt.ArrayLike | None, cache: Workspace) -> CellGrads:
    """Backward of :func:`gru_cell_forward`.

    Args: dh_next (B, H) or None; cache from gru_cell_forward.
    Returns ``CellGrads(dx (B, I), dh (B, H), dW_ih, dW_hh, db_ih, db_hh)``.
    """
    _check_workspace(cache, _GRU, "gru_cell_backward", single_step=True)
    dh_next = _cell_grad("dh_next", dh_next, cache)
    g = _gru_backward(None, dh_next, cache)
    return CellGrads(g.dx[0], g.dh0, g.dW_ih, g.dW_hh, g.db_ih, g.db_hh)


# ----------------------------------------------------------------------------- cell helpers
# A cell step is the sequence driver with T = 1: one code path, one set of kernels.


def _cell_input(x):
    x = v.float_array("x", x)
    v.check_ndim("x", x, 2, "(B, I)")
    return x[None]


def _cell_state(name, s, x, W_hh, cell):
    """A cell's incoming state: (B, H), checked here so the message names the cell argument."""
    if s is None:
        return None
    s = v.float_array(name, s, x.dtype)
    W_hh = v.as_array("W_hh", W_hh)
    # H comes from W_hh; if W_hh itself is malformed the sequence forward reports it.
    if W_hh.ndim == 2 and W_hh.shape[0] == cell_spec(cell).gates * W_hh.shape[1]:
        v.check_shape(name, s, (x.shape[1], W_hh.shape[1]), "(B, H)")
    return s


def _cell_grad(name, g, ws):
    if g is None:
        return None
    g = v.float_array(name, g, ws.dtype)
    v.check_shape(name, g, (ws.x.shape[1], ws.W_hh.shape[1]), "(B, H)")
    return g


def _as_cell_cache(ws):
    return replace(ws, single_step=True)


# ----------------------------------------------------------------------------- streaming


# A stream of one layer (forward direction, inference): ``y = layer.run(x)`` with x (T, B, I)
# C-contiguous of the weights' dtype, T >= 1, gives y (T, B, H_out) and advances the state
# arrays ``layer.h`` (B, H_out) and ``layer.c`` (B, H; LSTM, else None), which the caller reads
# and writes in place. Made by the ``_*_layer_stream`` functions below from weights the caller
# (rnnkit.nn's Stream) has checked; run() checks x's shape only. Up to the packed-kernel batch
# limit it is the compiled stream (cpp/stream.hpp: weights packed once, no per-call setup);
# above it, one sequence call per chunk. Either computes each step bitwise as a whole-sequence
# forward of the same batch does, so chunks of any length give what one call gives.
class LayerStream(Protocol):
    h: np.ndarray
    c: np.ndarray | None

    def run(self, x: np.ndarray) -> np.ndarray: ...


class _CallLayerStream:
    """A layer stream above the packed-kernel batch limit, or with precision="bf16": one sequence
    call per chunk. (With "bf16" a chunk's outputs equal the whole sequence's to float32
    accumulation error, not bitwise: which rows the AMX kernel takes in blocks of 16 depends
    on the call's number of rows.)"""

    def __init__(self, call, B, sizes, dtype):
        self._call = call  # (x, h, c) -> (y, h_T, c_T)
        self.h = np.zeros((B, sizes[0]), dtype)
        self.c = np.zeros((B, sizes[1]), dtype) if len(sizes) > 1 else None

    def run(self, x):
        y, h_T, c_T = self._call(x, self.h, self.c)
        np.copyto(self.h, h_T)
        if self.c is not None:
            np.copyto(self.c, c_T)
        return y


def _compiled(batch):
    return batch <= _core._get_small_batch_limit()


def _rnn_layer_stream(
    W_ih, W_hh, b_ih, b_hh, nonlinearity, batch, precision="float32", clip=None
) -> LayerStream:
    if _compiled(batch) and precision == "float32":
        return _core.rnn_stream(W_ih, W_hh, b_ih, b_hh, nonlinearity, batch, clip=clip)

    def call(x, h, c):
        y, h_T, _, _ = _core.rnn_forward(
            x, h, W_ih, W_hh, b_ih, b_hh, None, nonlinearity, False, False, precision=precision, clip=clip
        )
        return y, h_T, None

    return _CallLayerStream(call, batch, (W_hh.shape[1],), W_hh.dtype)


def _lstm_layer_stream(
    W_ih, W_hh, b_ih, b_hh, W_hr, batch, precision="float32", clip=None, input_forget=False, W_peep=None
) -> LayerStream:
    # The compiled stream has no peephole cell: with peepholes each chunk runs the sequence kernel.
    if _compiled(batch) and precision == "float32" and W_peep is None:
        return _core.lstm_stream(W_ih, W_hh, b_ih, b_hh, W_hr, batch, clip=clip, input_forget=input_forget)

    def call(x, h, c):
        y, h_T, c_T, _ = _core.lstm_forward(
            x,
            h,
            c,
            W_ih,
            W_hh,
            b_ih,
            b_hh,
            W_hr,
            None,
            False,
            False,
            precision=precision,
            clip=clip,
            input_forget=input_forget,
            W_peep=W_peep,
        )
        return y, h_T, c_T

    H = W_hh.shape[0] // LSTM_CELL.gates
    return _CallLayerStream(call, batch, (W_hh.shape[1], H), W_hh.dtype)


def _gru_layer_stream(
    W_ih, W_hh, b_ih, b_hh, reset_after, batch, precision="float32", clip=None
) -> LayerStream:
    if _compiled(batch) and precision == "float32":
        return _core.gru_stream(W_ih, W_hh, b_ih, b_hh, reset_after, batch, clip=clip)

    def call(x, h, c):
        y, h_T, _, _ = _core.gru_forward(
            x, h, W_ih, W_hh, b_ih, b_hh, None, reset_after, False, False, precision=precision, clip=clip
        )
        return y, h_T, None

    return _CallLayerStream(call, batch, (W_hh.shape[1],), W_hh.dtype)

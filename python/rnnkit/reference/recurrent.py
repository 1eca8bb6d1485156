"""Plain NumPy reference implementations ("oracles") of :mod:`rnnkit.ops.recurrent`.

The tests trust these functions, so they are written the textbook way: one Python
loop over time, per-step matmuls ``x @ W.T``, and each line readable next to the
equations in ``docs/rnn-equations.md`` sections 2.1-2.6 (its first section gives the
weight layouts). Speed is not a goal. They use only NumPy and never import the compiled
module.

Shape letters (defined on the documentation's first page, ``docs/index.md``, and in
``rnnkit._types``): T time steps, B batch, I input
size, H hidden size, G gates (1 rnn, 4 lstm, 3 gru). Weights use PyTorch's layout:
``W_ih`` (G*H, I), ``W_hh`` (G*H, H), ``b_ih`` / ``b_hh`` (G*H,), gate blocks
stacked in PyTorch's order: LSTM ``i, f, g, o``; GRU ``r, z, n``.

Equations (row-vector form, sigma = logistic sigmoid, * = elementwise)::

    RNN    h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh),       act = tanh or relu
    LSTM   [a_i|a_f|a_g|a_o] = x W_ih^T + b_ih + h W_hh^T + b_hh
           i, f, g, o = sigma(a_i), sigma(a_f), tanh(a_g), sigma(a_o)
           c' = f * c + i * g          h' = o * tanh(c')
    GRU    [gi_r|gi_z|gi_n] = x W_ih^T + b_ih
           r = sigma(gi_r + h W_hr^T + b_hr)      z = sigma(gi_z + h W_hz^T + b_hz)
           reset_after=True  (PyTorch): n = tanh(gi_n + r * (h W_hn^T + b_hn))
           reset_after=False (textbook): n = tanh(gi_n + (r * h) W_hn^T + b_hn)
           h' = (1 - z) * n + z * h

Conventions shared by every function here and by the C++-backed API:

* Outputs have the dtype of the inputs (float32 or float64); the maths runs in it.
* ``precision="bf16"`` (the kernels' bfloat16 mode): every matmul's two operands are rounded
  to bfloat16 exactly as the kernels round them (``_round_bf16``: to float32, then to nearest
  even; subnormals to zero), and everything runs in float64: results are float64, so a
  kernel is compared with this to float32 accumulation error, not to a bfloat16 tolerance.
* ``h0`` / ``c0`` may be None (zeros); ``b_ih`` / ``b_hh`` may be None (no bias,
  and the matching ``db_*`` is None); ``dy``, ``dh_T``, ``dc_T`` may be None (zeros).
* ``reverse=True`` processes t = T-1 .. 0; ``y[t]`` is still indexed by time.
* ``lengths`` (B,) integers with 1 <= L_b <= T: sequence b runs only its own first
  L_b time steps, as a PyTorch packed sequence does. ``y[t, b] = 0`` for t >= L_b,
  the final state is the state after b's own last step, and with ``reverse=True``
  sequence b starts from h0 at t = L_b - 1. Padded x never influences anything,
  padded dy is ignored and dx is zero there.
* Forward returns ``(outputs, cache)``; backward takes ``(d_outputs, cache)`` and
  returns fresh gradient arrays. The cache / workspace is a plain dict with a
  ``"cell"`` key; ``training=False`` returns workspace None, and a backward given
  None or another cell's workspace raises ValueError.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .._cells import GRU_CELL, LSTM_CELL, RNN_CELL
from .._types import (
    CellGrads,
    LSTMCellGrads,
    LSTMPeepSequenceGrads,
    LSTMProjSequenceGrads,
    LSTMSequenceGrads,
    SequenceGrads,
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
]

_RNN, _LSTM, _GRU = RNN_CELL.name, LSTM_CELL.name, GRU_CELL.name


# ----------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------


def _sigmoid(a):
    # 1 / (1 + exp(-a)) is exact to the last bit for a >= 0 and correct for a < 0
    # too: exp(-a) overflows to inf for very negative a and 1 / inf = 0 is the
    # right limit, so the overflow warning is silenced rather than worked around.
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-a))


def _dsigmoid(s):
    """sigma'(a) written with the saved output s = sigma(a)."""
    return s * (1 - s)


def _dtanh(t):
    """tanh'(a) written with the saved output t = tanh(a)."""
    return 1 - t * t


def _round_bf16(a):
    """``a`` rounded to bfloat16 as the kernels round it, as float64: first to float32 (the
    kernels' states are float32), then to nearest even on the 16 high bits; NaN stays NaN and
    subnormal floats become signed zero (the bfloat16 dot-product instructions treat subnormal
    inputs as zero)."""
    u = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    rounded = np.where((u & 0x7FFFFFFF) > 0x7F800000, u | 0x400000, rounded)  # NaN: quiet
    rounded = np.where((u & 0x7F800000) == 0, u & 0x80000000, rounded)  # subnormal: zero
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


def _mm(a, b, precision):
    """a @ b, with precision="bf16" on operands rounded to bfloat16 (float64 arithmetic)."""
    if precision == "bf16":
        return _round_bf16(a) @ _round_bf16(b)
    return a @ b


def _inputs_for(precision, *arrays):
    """The arrays in the dtype the maths runs in: float64 for "bf16" (None stays None)."""
    if precision not in ("float32", "bf16"):
        raise ValueError(f"precision must be 'float32' or 'bf16', got {precision!r}")
    if precision == "float32":
        return arrays
    return tuple(None if a is None else np.asarray(a, dtype=np.float64) for a in arrays)


def _affine(x, W, b, precision="float32"):
    """x @ W.T (+ b): the PyTorch row-vector layout, W stored (out, in)."""
    out = _mm(x, W.T, precision)
    if b is not None:
        out = out + b
    return out


def _bound(a, clip):
    """ONNX's clip: ``a`` clamped to [-clip, clip] (unchanged for clip None), and the mask
    where it was within the bound (1) or cut (0): the clamp's derivative."""
    if clip is None:
        return a, None
    return np.clip(a, -clip, clip), (np.abs(a) <= clip).astype(a.dtype)


def _kept(d, keep):
    """A pre-activation's gradient through the clamp: zero where forward cut it."""
    return d if keep is None else d * keep


def _zeros_state(state, batch, hidden, dtype):
    """Return ``state``, or zeros (B, H) when it is None."""
    if state is None:
        return np.zeros((batch, hidden), dtype=dtype)
    return state


def _bias_grad(d_gates, bias):
    """Gradient of a bias added to every row: the batch sum; None when there is no bias."""
    return None if bias is None else d_gates.sum(axis=0)


def _check_cache(cache, cell, kind):
    """Make sure a backward got the cache of its own forward (cell and kind)."""
    if cache is None:
        raise ValueError(
            f"{cell} backward got workspace None: run the forward with training=True "
            "to keep what the backward needs"
        )
    if not isinstance(cache, dict) or cache.get("cell") != cell or cache.get("kind") != kind:
        got = (cache.get("cell"), cache.get("kind")) if isinstance(cache, dict) else type(cache)
        raise ValueError(f"{cell} {kind} backward got a cache/workspace from {got}")
    return cache


# ----------------------------------------------------------------------------------
# Cells: one time step, x (B, I), h and c (B, H)
# ----------------------------------------------------------------------------------


def rnn_cell_forward(
    x: np.ndarray,
    h: np.ndarray | None,
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    b_ih: np.ndarray | None,
    b_hh: np.ndarray | None,
    *,
    nonlinearity: str = "tanh",
    precision: str = "float32",
    clip: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One vanilla RNN step: h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh).

    x (B, I); h (B, H) or None (zeros); W_ih (H, I); W_hh (H, H);
    b_ih, b_hh (H,) or None; nonlinearity "tanh" or "relu"; precision "float32" or "bf16";
    clip None or ONNX's bound: act's input clamped to [-clip, clip].
    Returns (h_next (B, H), cache).
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    x, h, W_ih, W_hh, b_ih, b_hh = _inputs_for(precision, x, h, W_ih, W_hh, b_ih, b_hh)
    h = _zeros_state(h, x.shape[0], W_hh.shape[1], x.dtype)
    a, keep = _bound(_affine(x, W_ih, b_ih, precision) + _affine(h, W_hh, b_hh, precision), clip)
    h_next = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)
    cache = {
        "cell": _RNN,
        "kind": "cell",
        "nonlinearity": nonlinearity,
        "precision": precision,
        "x": x,
        "h": h,
        "W_ih": W_ih,
        "W_hh": W_hh,
        "b_ih": b_ih,
        "b_hh": b_hh,
        "a": a,
        "keep": keep,
        "h_next": h_next,
    }
    return h_next, cache


def rnn_cell_backward(dh_next: np.ndarray | None, cache: dict[str, Any]) -> CellGrads:
    """Backward of ``rnn_cell_forward`` (docs/rnn-equations.md, section 2.5).

    dh_next (B, H) or None (zeros): gradient w.r.t. h_next.
    Returns CellGrads(dx (B, I), dh (B, H), dW_ih (H, I), dW_hh (H, H), db_ih, db_hh (H,) or None).
    """
    c = _check_cache(cache, _RNN, "cell")
    x, h, W_ih, W_hh = c["x"], c["h"], c["W_ih"], c["W_hh"]
    if dh_next is None:
        dh_next = np.zeros_like(c["h_next"])
    if c["nonlinearity"] == "tanh":
        da = dh_next * _dtanh(c["h_next"])
    else:
        # relu'(a) = 1 for a > 0 and 0 otherwise (0 at the kink, as PyTorch does)
        da = dh_next * (c["a"] > 0)
    da = _kept(da, c["keep"])
    p = c["precision"]
    return CellGrads(
        dx=_mm(da, W_ih, p),
        dh=_mm(da, W_hh, p),
        dW_ih=_mm(da.T, x, p),
        dW_hh=_mm(da.T, h, p),
        db_ih=_bias_grad(da, c["b_ih"]),
        db_hh=_bias_grad(da, c["b_hh"]),
    )


def lstm_cell_forward(
    x: np.ndarray,
    h: np.ndarray | None,
    c: np.ndarray | None,
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    b_ih: np.ndarray | None,
    b_hh: np.ndarray | None,
    *,
    precision: str = "float32",
    clip: float | None = None,
    input_forget: bool = False,
) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """One LSTM step, PyTorch gate order i, f, g, o.

    x (B, I); h, c (B, H) or None (zeros); W_ih (4H, I); W_hh (4H, H);
    b_ih, b_hh (4H,) or None; precision "float32" or "bf16"; clip None or ONNX's bound: the
    four gates' pre-activations clamped to [-clip, clip] (c_next, tanh's input in h_next, is not);
    input_forget: ONNX's coupled gates, f = 1 - i (the f block's pre-activation is unused).
    Returns ((h_next (B, H), c_next (B, H)), cache).
    """
    return _lstm_step(x, h, c, W_ih, W_hh, b_ih, b_hh, precision, clip, input_forget, None)


def _lstm_step(x, h, c, W_ih, W_hh, b_ih, b_hh, precision, clip, input_forget, W_peep):
    """``lstm_cell_forward`` with peepholes W_peep (3, H) (rows i, f, o) or None."""
    x, h, c, W_ih, W_hh, b_ih, b_hh = _inputs_for(precision, x, h, c, W_ih, W_hh, b_ih, b_hh)
    B, H = x.shape[0], W_hh.shape[1]
    h = _zeros_state(h, B, H, x.dtype)
    c = _zeros_state(c, B, H, x.dtype)
    gates = _affine(x, W_ih, b_ih, precision) + _affine(h, W_hh, b_hh, precision)  # (B, 4H) [a_i|a_f|a_g|a_o]
    if W_peep is None:
        gates, keep = _bound(gates, clip)
        a_i, a_f, a_g, a_o = np.split(gates, 4, axis=1)
        i, f, g, o = _sigmoid(a_i), _sigmoid(a_f), np.tanh(a_g), _sigmoid(a_o)
        if input_forget:
            f = 1 - i
        c_next = f * c + i * g
    else:  # peepholes: i and f see c, o sees c_next (each inside the clip, as ONNX)
        a_i, a_f, a_g, a_o = np.split(gates, 4, axis=1)
        ifg, keep_ifg = _bound(np.concatenate([a_i + W_peep[0] * c, a_f + W_peep[1] * c, a_g], axis=1), clip)
        a_i, a_f, a_g = np.split(ifg, 3, axis=1)
        i, f, g = _sigmoid(a_i), _sigmoid(a_f), np.tanh(a_g)
        if input_forget:
            f = 1 - i
        c_next = f * c + i * g
        a_o, keep_o = _bound(a_o + W_peep[2] * c_next, clip)
        o = _sigmoid(a_o)
        keep = None if keep_ifg is None else np.concatenate([keep_ifg, keep_o], axis=1)
    tc = np.tanh(c_next)
    h_next = o * tc
    cache = {
        "cell": _LSTM,
        "kind": "cell",
        "precision": precision,
        "x": x,
        "h": h,
        "c": c,
        "W_ih": W_ih,
        "W_hh": W_hh,
        "b_ih": b_ih,
        "b_hh": b_hh,
        "i": i,
        "f": f,
        "g": g,
        "o": o,
        "tc": tc,
        "keep": keep,
        "input_forget": input_forget,
        "W_peep": W_peep,
        "c_next": c_next,
    }
    return (h_next, c_next), cache


def lstm_cell_backward(
    dh_next: np.ndarray | None, dc_next: np.ndarray | None, cache: dict[str, Any]
) -> LSTMCellGrads:
    """Backward of ``lstm_cell_forward`` (docs/rnn-equations.md, section 2.5).

    dh_next, dc_next (B, H) or None (zeros): gradients w.r.t. h_next and c_next.
    Returns LSTMCellGrads(dx (B, I), dh (B, H), dc (B, H), dW_ih (4H, I), dW_hh (4H, H),
    db_ih, db_hh (4H,) or None).
    """
    return _lstm_step_backward(dh_next, dc_next, cache)[0]


def _lstm_step_backward(dh_next, dc_next, cache):
    """``lstm_cell_backward`` of a ``_lstm_step`` cache: (LSTMCellGrads, dW_peep (3, H) or None)."""
    k = _check_cache(cache, _LSTM, "cell")
    x, h, c, W_ih, W_hh = k["x"], k["h"], k["c"], k["W_ih"], k["W_hh"]
    W_peep = k["W_peep"]
    i, f, g, o, tc = k["i"], k["f"], k["g"], k["o"], k["tc"]
    if dh_next is None:
        dh_next = np.zeros_like(tc)
    if dc_next is None:
        dc_next = np.zeros_like(tc)
    do = dh_next * tc
    # c_next reaches the loss directly (dc_next) and through h_next = o * tanh(c_next)
    dc_total = dc_next + dh_next * o * _dtanh(tc)
    if W_peep is not None:  # ... and through o's peephole
        keep_o = None if k["keep"] is None else k["keep"][:, 3 * tc.shape[1] :]
        dc_total = dc_total + _kept(do * _dsigmoid(o), keep_o) * W_peep[2]
    di = dc_total * g
    df = dc_total * c
    if k["input_forget"]:  # f = 1 - i: f's gradient reaches i, and f's own input has none
        di = di - df
        df = np.zeros_like(df)
    dg = dc_total * i
    dc = dc_total * f
    # back through the gate nonlinearities, blocks kept in the i, f, g, o order
    dA = np.concatenate(
        [
            di * _dsigmoid(i),
            df if k["input_forget"] else df * _dsigmoid(f),
            dg * _dtanh(g),
            do * _dsigmoid(o),
        ],
        axis=1,
    )  # (B, 4H)
    dA = _kept(dA, k["keep"])
    dW_peep = None
    if W_peep is not None:  # i and f saw c, o saw c_next
        dA_i, dA_f, _, dA_o = np.split(dA, 4, axis=1)
        dc = dc + dA_i * W_peep[0] + dA_f * W_peep[1]
        dW_peep = np.stack([(dA_i * c).sum(0), (dA_f * c).sum(0), (dA_o * k["c_next"]).sum(0)])
    p = k["precision"]
    grads = LSTMCellGrads(
        dx=_mm(dA, W_ih, p),
        dh=_mm(dA, W_hh, p),
        dc=dc,
        dW_ih=_mm(dA.T, x, p),
        dW_hh=_mm(dA.T, h, p),
        db_ih=_bias_grad(dA, k["b_ih"]),
        db_hh=_bias_grad(dA, k["b_hh"]),
    )
    return grads, dW_peep


def gru_cell_forward(
    x: np.ndarray,
    h: np.ndarray | None,
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    b_ih: np.ndarray | None,
    b_hh: np.ndarray | None,
    *,
    reset_after: bool = True,
    precision: str = "float32",
    clip: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One GRU step, PyTorch gate order r, z, n.

    reset_after=True is PyTorch's form  n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn));
    reset_after=False is the textbook form n = tanh(x W_in^T + b_in + (r * h) W_hn^T + b_hn).
    Both then take h' = (1 - z) * n + z * h.

    x (B, I); h (B, H) or None (zeros); W_ih (3H, I); W_hh (3H, H); b_ih, b_hh (3H,) or None;
    precision "float32" or "bf16"; clip None or ONNX's bound: the arguments of r's and z's
    sigmoids and of n's tanh (all of it, in either form) clamped to [-clip, clip].
    Returns (h_next (B, H), cache).
    """
    x, h, W_ih, W_hh, b_ih, b_hh = _inputs_for(precision, x, h, W_ih, W_hh, b_ih, b_hh)
    H = W_hh.shape[1]
    h = _zeros_state(h, x.shape[0], H, x.dtype)
    gi_r, gi_z, gi_n = np.split(_affine(x, W_ih, b_ih, precision), 3, axis=1)  # each (B, H)
    if reset_after:
        # one matmul of h for all three gates; r then scales the whole n-block incl. b_hn
        gh_r, gh_z, gh_n = np.split(_affine(h, W_hh, b_hh, precision), 3, axis=1)
        a_r, keep_r = _bound(gi_r + gh_r, clip)
        a_z, keep_z = _bound(gi_z + gh_z, clip)
        r, z = _sigmoid(a_r), _sigmoid(a_z)
        rh = None
        a_n, keep_n = _bound(gi_n + r * gh_n, clip)
        n = np.tanh(a_n)
    else:
        # r has to be known before the n-block matmul, because r scales h itself
        b_rz = None if b_hh is None else b_hh[: 2 * H]
        b_hn = None if b_hh is None else b_hh[2 * H :]
        gh_r, gh_z = np.split(_affine(h, W_hh[: 2 * H], b_rz, precision), 2, axis=1)
        a_r, keep_r = _bound(gi_r + gh_r, clip)
        a_z, keep_z = _bound(gi_z + gh_z, clip)
        r, z = _sigmoid(a_r), _sigmoid(a_z)
        rh = r * h
        gh_n = _affine(rh, W_hh[2 * H :], b_hn, precision)
        a_n, keep_n = _bound(gi_n + gh_n, clip)
        n = np.tanh(a_n)
    h_next = (1 - z) * n + z * h
    cache = {
        "cell": _GRU,
        "kind": "cell",
        "reset_after": reset_after,
        "precision": precision,
        "x": x,
        "h": h,
        "W_ih": W_ih,
        "W_hh": W_hh,
        "b_ih": b_ih,
        "b_hh": b_hh,
        "r": r,
        "z": z,
        "n": n,
        "gh_n": gh_n,
        "rh": rh,
        "keep": (keep_r, keep_z, keep_n),
    }
    return h_next, cache


def gru_cell_backward(dh_next: np.ndarray | None, cache: dict[str, Any]) -> CellGrads:
    """Backward of ``gru_cell_forward`` (docs/rnn-equations.md, sections 2.5 and 2.6).

    dh_next (B, H) or None (zeros): gradient w.r.t. h_next.
    Returns CellGrads(dx (B, I), dh (B, H), dW_ih (3H, I), dW_hh (3H, H),
    db_ih, db_hh (3H,) or None).
    """
    k = _check_cache(cache, _GRU, "cell")
    x, h, W_ih, W_hh = k["x"], k["h"], k["W_ih"], k["W_hh"]
    r, z, n = k["r"], k["z"], k["n"]
    p = k["precision"]
    H = W_hh.shape[1]
    if dh_next is None:
        dh_next = np.zeros_like(n)
    # h' = (1 - z) * n + z * h
    dn = dh_next * (1 - z)
    dz = dh_next * (h - n)
    dh = dh_next * z
    keep_r, keep_z, keep_n = k["keep"]
    da_n = _kept(dn * _dtanh(n), keep_n)  # gradient w.r.t. the argument of tanh in n
    da_z = _kept(dz * _dsigmoid(z), keep_z)
    if k["reset_after"]:
        # n = tanh(gi_n + r * gh_n), gh_n = h W_hn^T + b_hn
        da_r = _kept(da_n * k["gh_n"] * _dsigmoid(r), keep_r)
        d_gi = np.concatenate([da_r, da_z, da_n], axis=1)  # (B, 3H)
        d_gh = np.concatenate([da_r, da_z, da_n * r], axis=1)  # (B, 3H)
        dh = dh + _mm(d_gh, W_hh, p)
        dW_hh = _mm(d_gh.T, h, p)
        db_hh = _bias_grad(d_gh, k["b_hh"])
    else:
        # n = tanh(gi_n + (r * h) W_hn^T + b_hn): r and h meet before the matmul
        d_rh = _mm(da_n, W_hh[2 * H :], p)  # gradient w.r.t. r * h
        da_r = _kept(d_rh * h * _dsigmoid(r), keep_r)
        dh = dh + d_rh * r
        d_gi = np.concatenate([da_r, da_z, da_n], axis=1)  # (B, 3H)
        d_gh_rz = d_gi[:, : 2 * H]  # the r and z blocks multiply h itself
        dh = dh + _mm(d_gh_rz, W_hh[: 2 * H], p)
        dW_hh = np.concatenate([_mm(d_gh_rz.T, h, p), _mm(da_n.T, k["rh"], p)], axis=0)
        # b_hr, b_hz, b_hn sit next to gi_r, gi_z, gi_n: same gradient as b_ih
        db_hh = _bias_grad(d_gi, k["b_hh"])
    return CellGrads(
        dx=_mm(d_gi, W_ih, p),
        dh=dh,
        dW_ih=_mm(d_gi.T, x, p),
        dW_hh=dW_hh,
        db_ih=_bias_grad(d_gi, k["b_ih"]),
        db_hh=db_hh,
    )


# ----------------------------------------------------------------------------------
# Sequences: one driver for the time loop, the cells above as plug-ins
# ----------------------------------------------------------------------------------


def _check_lengths(lengths, T, B):
    """None, or an integer (B,) array with 1 <= L_b <= T."""
    if lengths is None:
        return None
    lengths = np.asarray(lengths)
    if lengths.shape != (B,) or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths must be an integer array of shape ({B},), got {lengths!r}")
    if lengths.size and (lengths.min() < 1 or lengths.max() > T):
        raise ValueError(f"lengths must lie in [1, T={T}], got {lengths!r}")
    return lengths


def _time_order(T, reverse):
    """The time steps in the order the forward pass processes them."""
    return range(T - 1, -1, -1) if reverse else range(T)


def _active_rows(t, lengths, B):
    """Indices of the sequences that run at time t (those with t < L_b).

    Always an integer index array, never a slice, so ``state[rows]`` is a copy: the
    cache of a step must not change when the driver later updates the state in place.
    Running the cell on these rows only (instead of masking afterwards) means padded
    x can hold anything, even inf/nan, without touching the results.
    """
    if lengths is None:
        return np.arange(B)
    return np.flatnonzero(t < lengths)


def _forward_driver(cell, step, x, init_states, W_ih, W_hh, b_ih, b_hh, lengths, reverse, training):
    """Run ``step`` over time; shared by rnn_forward, lstm_forward and gru_forward.

    step(x_t (b, I), *states (b, H)) -> (new_states tuple, cache) runs one cell on the
    active rows. y[t] is the first state (h) after step t. A sequence's state stays
    put at the steps where it is not active, which gives PyTorch's packed-sequence
    semantics in both directions: forward, sequence b stops after t = L_b - 1;
    reverse, it still holds h0 when the loop reaches t = L_b - 1.
    Returns (y (T, B, H), final states list, workspace or None).
    """
    T, B = x.shape[0], x.shape[1]
    lengths = _check_lengths(lengths, T, B)
    states = [s.astype(x.dtype, copy=True) for s in init_states]  # updated row-wise below
    y = np.zeros((T, B, W_hh.shape[1]), dtype=x.dtype)
    caches, rows_at = [None] * T, [None] * T
    for t in _time_order(T, reverse):
        rows = _active_rows(t, lengths, B)
        new_states, caches[t] = step(x[t, rows], *(s[rows] for s in states))
        for state, new in zip(states, new_states):
            state[rows] = new
        y[t, rows] = new_states[0]
        rows_at[t] = rows
    if not training:
        return y, states, None
    workspace = {
        "cell": cell,
        "kind": "sequence",
        "reverse": reverse,
        "x_shape": x.shape,
        "dtype": x.dtype,
        "W_ih": W_ih,
        "W_hh": W_hh,
        "b_ih": b_ih,
        "b_hh": b_hh,
        "caches": caches,  # caches[t]: the cell cache of step t (its active rows only)
        "rows": rows_at,  # rows[t]: which batch rows ran at step t
    }
    return y, states, workspace


def _backward_driver(cell, step_backward, dy, d_final_states, workspace):
    """Backpropagation through time; shared by rnn_backward, lstm_backward and gru_backward.

    step_backward(*d_states (b, H), cache) -> CellGrads / LSTMCellGrads of one step.
    d_final_states: gradients w.r.t. the final states (each (B, H) or None).
    Returns (dx (T, B, I), list of d initial states, dW_ih, dW_hh, db_ih, db_hh).
    """
    ws = _check_cache(workspace, cell, "sequence")
    T, B, I = ws["x_shape"]
    dtype = ws["dtype"]
    H = ws["W_hh"].shape[1]
    if dy is None:
        dy = np.zeros((T, B, H), dtype=dtype)
    # d_states[k][b] = gradient w.r.t. state k of sequence b as it leaves the current step
    d_states = [
        np.zeros((B, H), dtype=dtype) if d is None else np.array(d, dtype=dtype, copy=True)
        for d in d_final_states
    ]
    dx = np.zeros((T, B, I), dtype=dtype)
    dW_ih = np.zeros_like(ws["W_ih"])
    dW_hh = np.zeros_like(ws["W_hh"])
    db_ih = None if ws["b_ih"] is None else np.zeros_like(ws["b_ih"])
    db_hh = None if ws["b_hh"] is None else np.zeros_like(ws["b_hh"])
    # visit the steps in the opposite order of the forward pass
    for t in reversed(_time_order(T, ws["reverse"])):
        rows = ws["rows"][t]
        d_here = [d[rows] for d in d_states]
        d_here[0] = d_here[0] + dy[t, rows]  # y[t] is h after step t: both gradients add up
        g = step_backward(*d_here, ws["caches"][t])
        dx[t, rows] = g.dx
        # g = (dx, dh[, dc], ...): the gradients w.r.t. the states this step started from
        for d_state, d_prev in zip(d_states, g[1 : 1 + len(d_states)]):
            d_state[rows] = d_prev
        dW_ih += g.dW_ih
        dW_hh += g.dW_hh
        if db_ih is not None:
            db_ih += g.db_ih
        if db_hh is not None:
            db_hh += g.db_hh
    return dx, d_states, dW_ih, dW_hh, db_ih, db_hh


def rnn_forward(
    x: np.ndarray,
    h0: np.ndarray | None,
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    b_ih: np.ndarray | None,
    b_hh: np.ndarray | None,
    *,
    nonlinearity: str = "tanh",
    reverse: bool = False,
    lengths: npt.ArrayLike | None = None,
    training: bool = True,
    precision: str = "float32",
    clip: float | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
    """Vanilla RNN over a sequence: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh).

    x (T, B, I); h0 (B, H) or None; W_ih (H, I); W_hh (H, H); b_ih, b_hh (H,) or None;
    nonlinearity "tanh" or "relu"; lengths (B,) or None; precision "float32" or "bf16";
    clip None or a bound (``rnn_cell_forward``).
    Returns (y (T, B, H), h_T (B, H), workspace dict, or None when training=False).
    """
    x, h0, W_ih, W_hh, b_ih, b_hh = _inputs_for(precision, x, h0, W_ih, W_hh, b_ih, b_hh)
    h0 = _zeros_state(h0, x.shape[1], W_hh.shape[1], x.dtype)

    def step(x_t, h):
        h_next, cache = rnn_cell_forward(
            x_t, h, W_ih, W_hh, b_ih, b_hh, nonlinearity=nonlinearity, precision=precision, clip=clip
        )
        return (h_next,), cache

    y, (h_T,), ws = _forward_driver(_RNN, step, x, [h0], W_ih, W_hh, b_ih, b_hh, lengths, reverse, training)
    return y, h_T, ws


def rnn_backward(dy: np.ndarray | None, dh_T: np.ndarray | None, workspace: dict[str, Any]) -> SequenceGrads:
    """Backward of ``rnn_forward``.

    dy (T, B, H) or None; dh_T (B, H) or None; workspace from rnn_forward(training=True).
    Returns SequenceGrads(dx (T, B, I), dh0 (B, H), dW_ih (H, I), dW_hh (H, H),
    db_ih, db_hh (H,) or None).
    """
    dx, (dh0,), dW_ih, dW_hh, db_ih, db_hh = _backward_driver(_RNN, rnn_cell_backward, dy, [dh_T], workspace)
    return SequenceGrads(dx, dh0, dW_ih, dW_hh, db_ih, db_hh)


def lstm_forward(
    x: np.ndarray,
    h0: np.ndarray | None,
    c0: np.ndarray | None,
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    b_ih: np.ndarray | None,
    b_hh: np.ndarray | None,
    *,
    W_hr: np.ndarray | None = None,
    reverse: bool = False,
    lengths: npt.ArrayLike | None = None,
    training: bool = True,
    precision: str = "float32",
    clip: float | None = None,
    input_forget: bool = False,
    W_peep: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], dict[str, Any] | None]:
    """LSTM over a sequence (gate order i, f, g, o).

    x (T, B, I); h0, c0 (B, H) or None; W_ih (4H, I); W_hh (4H, H); b_ih, b_hh (4H,) or None;
    lengths (B,) or None.
    With a projection W_hr (P, H) (PyTorch's proj_size): m_t = o * tanh(c_t) is the cell's
    output and h_t = m_t W_hr^T, so h0, y and h_T have P columns and W_hh is (4H, P).
    precision "float32" or "bf16"; clip None or a bound, input_forget (``lstm_cell_forward``).
    W_peep (3, H) or None: peepholes, rows i, f, o: the i and f pre-activations add
    W_peep[0] * c_{t-1}, W_peep[1] * c_{t-1}, the o pre-activation W_peep[2] * c_t (inside the
    clip; with input_forget W_peep[1] is unused).
    Returns (y (T, B, H), (h_T (B, H), c_T (B, H)), workspace dict, or None when training=False).
    """
    x, h0, c0, W_ih, W_hh, b_ih, b_hh, W_hr, W_peep = _inputs_for(
        precision, x, h0, c0, W_ih, W_hh, b_ih, b_hh, W_hr, W_peep
    )
    B, H = x.shape[1], W_ih.shape[0] // 4
    P = H if W_hr is None else W_hr.shape[0]
    h0 = _zeros_state(h0, B, P, x.dtype)
    c0 = _zeros_state(c0, B, H, x.dtype)

    def step(x_t, h, c):
        (m, c_next), cache = _lstm_step(
            x_t, h, c, W_ih, W_hh, b_ih, b_hh, precision, clip, input_forget, W_peep
        )
        if W_hr is None:
            return (m, c_next), cache
        return (_mm(m, W_hr.T, precision), c_next), {
            "cell": _LSTM,
            "kind": "cell",
            "cell_cache": cache,
            "m": m,
        }

    y, (h_T, c_T), ws = _forward_driver(
        _LSTM, step, x, [h0, c0], W_ih, W_hh, b_ih, b_hh, lengths, reverse, training
    )
    if ws is not None:
        ws["W_hr"] = W_hr
        ws["W_peep"] = W_peep
        ws["precision"] = precision
    return y, (h_T, c_T), ws


def lstm_backward(
    dy: np.ndarray | None, dh_T: np.ndarray | None, dc_T: np.ndarray | None, workspace: dict[str, Any]
) -> LSTMSequenceGrads | LSTMProjSequenceGrads | LSTMPeepSequenceGrads:
    """Backward of ``lstm_forward``.

    dy (T, B, H) or None; dh_T, dc_T (B, H) or None; workspace from lstm_forward(training=True).
    Returns LSTMSequenceGrads(dx (T, B, I), dh0 (B, H), dc0 (B, H), dW_ih (4H, I),
    dW_hh (4H, H), db_ih, db_hh (4H,) or None); with a projection, LSTMProjSequenceGrads with
    the same fields (h-sized ones P wide) and dW_hr (P, H); with peepholes (W_peep),
    LSTMPeepSequenceGrads: those fields (dW_hr None without a projection) and dW_peep (3, H).
    """
    ws = _check_cache(workspace, _LSTM, "sequence")
    W_hr = ws.get("W_hr")
    W_peep = ws.get("W_peep")
    p = ws["precision"]
    # h_t = m_t W_hr^T: dm_t = dh_t W_hr feeds the cell, and dW_hr sums dh_t^T m_t; dW_peep sums
    # each step's peephole gradient.
    dW_hr = None if W_hr is None else np.zeros_like(W_hr)
    dW_peep = None if W_peep is None else np.zeros_like(W_peep)

    def step_backward(dh, dc, cache):
        nonlocal dW_hr, dW_peep
        if W_hr is not None:
            dW_hr = dW_hr + _mm(dh.T, cache["m"], p)
            dh, cache = _mm(dh, W_hr, p), cache["cell_cache"]
        grads, dW_peep_t = _lstm_step_backward(dh, dc, cache)
        if dW_peep_t is not None:
            dW_peep = dW_peep + dW_peep_t
        return grads

    if W_hr is not None and dc_T is None:  # the driver sizes missing gradients like h (P); c is H wide
        dc_T = np.zeros((ws["x_shape"][1], W_hr.shape[1]), dtype=ws["dtype"])
    dx, (dh0, dc0), dW_ih, dW_hh, db_ih, db_hh = _backward_driver(
        _LSTM, step_backward, dy, [dh_T, dc_T], workspace
    )
    if dW_peep is not None:
        return LSTMPeepSequenceGrads(dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh, dW_hr, dW_peep)
    if dW_hr is not None:
        return LSTMProjSequenceGrads(dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh, dW_hr)
    return LSTMSequenceGrads(dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh)


def gru_forward(
    x: np.ndarray,
    h0: np.ndarray | None,
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    b_ih: np.ndarray | None,
    b_hh: np.ndarray | None,
    *,
    reset_after: bool = True,
    reverse: bool = False,
    lengths: npt.ArrayLike | None = None,
    training: bool = True,
    precision: str = "float32",
    clip: float | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
    """GRU over a sequence (gate order r, z, n; see ``gru_cell_forward`` for reset_after and clip).

    x (T, B, I); h0 (B, H) or None; W_ih (3H, I); W_hh (3H, H); b_ih, b_hh (3H,) or None;
    lengths (B,) or None; precision "float32" or "bf16"; clip None or a bound.
    Returns (y (T, B, H), h_T (B, H), workspace dict, or None when training=False).
    """
    x, h0, W_ih, W_hh, b_ih, b_hh = _inputs_for(precision, x, h0, W_ih, W_hh, b_ih, b_hh)
    h0 = _zeros_state(h0, x.shape[1], W_hh.shape[1], x.dtype)

    def step(x_t, h):
        h_next, cache = gru_cell_forward(
            x_t, h, W_ih, W_hh, b_ih, b_hh, reset_after=reset_after, precision=precision, clip=clip
        )
        return (h_next,), cache

    y, (h_T,), ws = _forward_driver(_GRU, step, x, [h0], W_ih, W_hh, b_ih, b_hh, lengths, reverse, training)
    return y, h_T, ws


def gru_backward(dy: np.ndarray | None, dh_T: np.ndarray | None, workspace: dict[str, Any]) -> SequenceGrads:
    """Backward of ``gru_forward``.

    dy (T, B, H) or None; dh_T (B, H) or None; workspace from gru_forward(training=True).
    Returns SequenceGrads(dx (T, B, I), dh0 (B, H), dW_ih (3H, I), dW_hh (3H, H),
    db_ih, db_hh (3H,) or None).
    """
    dx, (dh0,), dW_ih, dW_hh, db_ih, db_hh = _backward_driver(_GRU, gru_cell_backward, dy, [dh_T], workspace)
    return SequenceGrads(dx, dh0, dW_ih, dW_hh, db_ih, db_hh)

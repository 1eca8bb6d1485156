"""Flax recurrent cells' parameters as rnnkit modules, and back.

* :func:`from_linen` / :func:`to_linen`: the parameter tree of a ``flax.linen`` ``LSTMCell`` or
  ``OptimizedLSTMCell`` (same parameters), ``GRUCell``, of an ``nn.RNN`` over one, or of an
  ``nn.Bidirectional`` of two;
* :func:`from_nnx` / :func:`to_nnx`: a ``flax.nnx`` ``LSTMCell``, ``OptimizedLSTMCell`` or
  ``GRUCell`` object (from_nnx also an ``nnx.RNN`` or ``nnx.Bidirectional`` over them).

Only arrays are read and written (as NumPy); jax and flax are imported by the nnx functions
when called, not with rnnkit. Layouts, the exact mapping and what is refused:
docs/interop-keras-flax.md. In short:

* linen's LSTM has per-gate ``Dense`` layers: input kernels ``ii, if, ig, io`` (I, H) without
  bias, hidden kernels ``hi, hf, hg, ho`` (H, H) with bias: ``W_ih`` is the input kernels
  transposed and stacked in torch's order i, f, g, o, and one bias = b_ih + b_hh;
* linen's GRU has input biases on r, z, n and a hidden bias on n only (``ir, iz, in`` with
  bias, ``hr, hz`` without, ``hn`` with): torch's (reset-after) GRU exactly, the r and z hidden
  biases joining the input ones;
* nnx's GRUCell has no hidden bias on n (b_hn), which sits inside ``r * (...)``: an rnnkit GRU
  converts to it exactly only when b_hn = 0, and :func:`to_nnx` refuses otherwise;
* linen's LSTM carry is ``(c, h)``; rnnkit's state is ``(h, c)``;
* the cells' activations (``gate_fn``, ``activation_fn``) are attributes of the module, not
  parameters: the conversion holds for the defaults, sigmoid and tanh.

Shape letters: I input size, H hidden size, G gate blocks (4 LSTM, 3 GRU).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from . import _validate as v
from .nn import GRU, LSTM

__all__ = ["from_linen", "to_linen", "from_nnx", "to_nnx"]

Gated = Union[LSTM, GRU]

# linen's Dense names per gate, in torch's gate order
_LSTM_IN = ("ii", "if", "ig", "io")
_LSTM_HID = ("hi", "hf", "hg", "ho")
_GRU_IN = ("ir", "iz", "in")
_GRU_HID = ("hr", "hz", "hn")
# nnx's LSTMCell attributes ("if" is a Python keyword)
_NNX_LSTM_IN = ("ii", "if_", "ig", "io")


def _array(name: str, a: Any) -> np.ndarray:
    arr = np.asarray(a)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {arr.dtype}")
    return arr


def _leaf(tree: Mapping, path: tuple[str, ...], where: str) -> np.ndarray:
    node: Any = tree
    for i, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node:
            have = sorted(node) if isinstance(node, Mapping) else type(node).__name__
            raise ValueError(f"params: {where}missing {'/'.join(path[: i + 1])!r}; found {have}")
        node = node[key]
    return _array(f"params: {where}{'/'.join(path)}", node)


def _unwrap(params: Any) -> Mapping:
    """The tree below ``{'params': ...}`` (a variables dict) and ``{'cell': ...}`` (nn.RNN)."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected a mapping (a flax parameter tree), got {type(params).__name__}")
    while len(params) == 1 and next(iter(params)) in ("params", "cell"):
        params = params[next(iter(params))]
        if not isinstance(params, Mapping):
            raise TypeError(f"params: expected a mapping below the top key, got {type(params).__name__}")
    return params


def _linen_cell(cell: Mapping, where: str) -> tuple[type[Gated], dict[str, np.ndarray]]:
    """One linen cell tree -> (rnnkit class, torch-layout weights)."""
    keys = set(cell)
    if keys == set(_LSTM_IN + _LSTM_HID):
        W_ih = np.concatenate([_leaf(cell, (g, "kernel"), where).T for g in _LSTM_IN])
        W_hh = np.concatenate([_leaf(cell, (g, "kernel"), where).T for g in _LSTM_HID])
        b_hh = np.concatenate([_leaf(cell, (g, "bias"), where) for g in _LSTM_HID])
        return LSTM, {"weight_ih": W_ih, "weight_hh": W_hh, "bias_ih": np.zeros_like(b_hh), "bias_hh": b_hh}
    if keys == set(_GRU_IN + _GRU_HID):
        W_ih = np.concatenate([_leaf(cell, (g, "kernel"), where).T for g in _GRU_IN])
        W_hh = np.concatenate([_leaf(cell, (g, "kernel"), where).T for g in _GRU_HID])
        b_ih = np.concatenate([_leaf(cell, (g, "bias"), where) for g in _GRU_IN])
        b_hn = _leaf(cell, ("hn", "bias"), where)
        b_hh = np.concatenate([np.zeros_like(b_hn), np.zeros_like(b_hn), b_hn])
        return GRU, {"weight_ih": W_ih, "weight_hh": W_hh, "bias_ih": b_ih, "bias_hh": b_hh}
    raise ValueError(
        f"params: {where}expected the parameters of a linen LSTMCell / OptimizedLSTMCell "
        f"({', '.join(_LSTM_IN + _LSTM_HID)}) or GRUCell ({', '.join(_GRU_IN + _GRU_HID)}), "
        f"got keys {sorted(keys)}"
    )


def _dtype_of(weights: dict[str, np.ndarray], dtype: npt.DTypeLike | None) -> np.dtype:
    if dtype is not None:
        return v.dtype_arg(dtype)
    stored = weights["weight_ih"].dtype
    if stored not in v.FLOAT_DTYPES:
        raise TypeError(
            f"params: the arrays are {stored}; rnnkit computes in float32 or float64: pass "
            "dtype=np.float32 (or np.float64) to convert them"
        )
    return np.dtype(stored)


def _build(cls: type[Gated], directions: list[dict], batch_first: bool, dtype: np.dtype) -> Gated:
    G_H, I = directions[0]["weight_ih"].shape
    H = directions[0]["weight_hh"].shape[1]
    module = cls(I, H, batch_first=batch_first, bidirectional=len(directions) == 2, dtype=dtype, seed=0)
    module.load_state_dict(
        {
            cls._name(kind, 0, d): a.astype(dtype, copy=False)
            for d, w in enumerate(directions)
            for kind, a in w.items()
        }
    )
    return module


def from_linen(params: Any, *, batch_first: bool = True, dtype: npt.DTypeLike | None = None) -> LSTM | GRU:
    """The rnnkit module of a flax.linen LSTM or GRU parameter tree.

    Parameters
    ----------
    params : mapping
        A linen ``LSTMCell`` / ``OptimizedLSTMCell`` / ``GRUCell``'s parameters (``ii``, ``hi``,
        ... each ``{'kernel', 'bias'}``), optionally under ``'params'`` (the variables dict)
        and ``'cell'`` (an ``nn.RNN``); or an ``nn.Bidirectional``'s
        ``{'forward_rnn': ..., 'backward_rnn': ...}`` (both the same cell, concatenated outputs).
    batch_first : bool
        The module's layout: True (default) matches ``nn.RNN`` (``time_major=False``),
        x (B, T, I); False x (T, B, I).
    dtype : numpy dtype, optional
        float32 or float64; default the dtype of the arrays.

    Returns
    -------
    rnnkit.nn.LSTM or rnnkit.nn.GRU (reset-after, torch's form) with one layer: its ``out`` is
    ``nn.RNN``'s output; its final state ``h_n[0]`` is the carry (for the LSTM the carry is
    ``(c, h)`` = ``(c_n[0], h_n[0])``).
    """
    tree = _unwrap(params)
    flag = v.flag("batch_first", batch_first)
    if set(tree) == {"forward_rnn", "backward_rnn"}:
        parts = [_linen_cell(_unwrap(tree[k]), f"{k}: ") for k in ("forward_rnn", "backward_rnn")]
        (cls, fwd), (bcls, bwd) = parts
        shapes = [{k: a.shape for k, a in w.items()} for w in (fwd, bwd)]
        if bcls is not cls or shapes[0] != shapes[1]:
            raise ValueError(
                "params: forward_rnn and backward_rnn hold different cells "
                f"({cls.__name__} {shapes[0]['weight_hh']}, {bcls.__name__} {shapes[1]['weight_hh']}); "
                "an rnnkit bidirectional module has one configuration for both"
            )
        return _build(cls, [fwd, bwd], flag, _dtype_of(fwd, dtype))
    cls, weights = _linen_cell(tree, "")
    return _build(cls, [weights], flag, _dtype_of(weights, dtype))


def _check_gated(module: Any, target: str) -> None:
    if not isinstance(module, (LSTM, GRU)):
        raise TypeError(f"module: expected an rnnkit.nn LSTM or GRU, got {type(module).__name__}")
    if isinstance(module, LSTM) and module.proj_size:
        raise ValueError(
            f"module: proj_size = {module.proj_size}; {target}'s LSTM cells have no projection, so an "
            "LSTM with proj_size > 0 does not convert"
        )
    if isinstance(module, LSTM) and module.peepholes:
        raise ValueError(
            f"module: peepholes = True; {target}'s LSTM cells have no peephole connections, so an "
            "LSTM with peepholes does not convert"
        )
    if isinstance(module, GRU) and not module.reset_after:
        raise ValueError(
            f"module: reset_after=False (the textbook GRU, (r * h) W_hn^T); {target}'s GRUCell is "
            "the reset-after form r * (h W_hn^T + b_hn), so this GRU does not convert"
        )
    module._check_parameters()


def _torch_weights(module: Gated, layer: int, direction: int) -> dict[str, np.ndarray]:
    """One layer-direction's weights, zero biases where the module has none."""
    w = module._weights(layer, direction)
    G_H = w["weight_ih"].shape[0]
    zero = np.zeros(G_H, module.dtype)
    return {
        "weight_ih": w["weight_ih"],
        "weight_hh": w["weight_hh"],
        "bias_ih": zero if w["bias_ih"] is None else w["bias_ih"],
        "bias_hh": zero if w["bias_hh"] is None else w["bias_hh"],
    }


def _linen_tree(w: dict[str, np.ndarray], is_lstm: bool) -> dict[str, dict[str, np.ndarray]]:
    G = 4 if is_lstm else 3
    W_i, W_h = np.split(w["weight_ih"], G), np.split(w["weight_hh"], G)
    b_i, b_h = np.split(w["bias_ih"], G), np.split(w["bias_hh"], G)
    tree: dict[str, dict[str, np.ndarray]] = {}
    if is_lstm:
        for k, (gi, gh) in enumerate(zip(_LSTM_IN, _LSTM_HID)):
            tree[gi] = {"kernel": np.ascontiguousarray(W_i[k].T)}
            tree[gh] = {"kernel": np.ascontiguousarray(W_h[k].T), "bias": b_i[k] + b_h[k]}
        return tree
    for k, (gi, gh) in enumerate(zip(_GRU_IN, _GRU_HID)):
        # r and z: the hidden bias joins the input one; n: b_hn stays inside r * (...)
        tree[gi] = {"kernel": np.ascontiguousarray(W_i[k].T), "bias": b_i[k] + (b_h[k] if k < 2 else 0)}
        tree[gh] = {"kernel": np.ascontiguousarray(W_h[k].T)}
    tree["hn"]["bias"] = b_h[2].copy()
    return tree


def _layer_index(module: Gated, layer: Any) -> int:
    k = v.int_arg("layer", layer, minimum=0)
    if k >= module.num_layers:
        raise ValueError(f"layer: expected 0 <= layer < num_layers = {module.num_layers}, got {k}")
    return k


def to_linen(module: LSTM | GRU, layer: int = 0) -> dict[str, Any]:
    """The linen parameter tree of layer ``layer`` of an rnnkit LSTM or GRU (NumPy arrays).

    One direction: the cell's tree (``LSTMCell`` / ``OptimizedLSTMCell`` or ``GRUCell``:
    ``cell.apply({'params': tree}, carry, x_t)``; ``nn.RNN(cell)`` takes
    ``{'params': {'cell': tree}}``). Bidirectional: ``{'forward_rnn': {'cell': ...},
    'backward_rnn': {'cell': ...}}`` for ``nn.Bidirectional(nn.RNN(cell), nn.RNN(cell))``.
    A module without biases gets zero biases.

    Refused: LSTM projections (``proj_size > 0``) and peepholes, the reset-before GRU (``reset_after=False``:
    linen's GRUCell is reset-after), ``layer`` out of range.
    """
    _check_gated(module, "flax.linen")
    k = _layer_index(module, layer)
    is_lstm = isinstance(module, LSTM)
    trees = [_linen_tree(_torch_weights(module, k, d), is_lstm) for d in range(module.num_directions)]
    if len(trees) == 1:
        return trees[0]
    return {"forward_rnn": {"cell": trees[0]}, "backward_rnn": {"cell": trees[1]}}


# ----------------------------------------------------------------------------- nnx


def _nnx_kind(cell: Any) -> str:
    """'LSTMCell', 'OptimizedLSTMCell' or 'GRUCell' for an nnx cell object, else TypeError."""
    from flax import nnx  # optional and slow: imported on first use only

    for name in ("LSTMCell", "OptimizedLSTMCell", "GRUCell"):
        if type(cell) is getattr(nnx, name):
            return name
    raise TypeError(
        f"cell: expected a flax.nnx LSTMCell, OptimizedLSTMCell or GRUCell, got {type(cell).__name__}"
    )


def _get(param: Any) -> np.ndarray:
    return np.asarray(param[...])


def _nnx_cell_weights(cell: Any) -> tuple[type[Gated], dict[str, np.ndarray]]:
    """(rnnkit class, torch-layout weights) of one nnx cell."""
    kind = _nnx_kind(cell)
    if kind == "LSTMCell":
        W_ih = np.concatenate([_get(getattr(cell, g).kernel).T for g in _NNX_LSTM_IN])
        W_hh = np.concatenate([_get(getattr(cell, g).kernel).T for g in _LSTM_HID])
        b_hh = np.concatenate([_get(getattr(cell, g).bias) for g in _LSTM_HID])
        return LSTM, {"weight_ih": W_ih, "weight_hh": W_hh, "bias_ih": np.zeros_like(b_hh), "bias_hh": b_hh}
    W_ih, W_hh = _get(cell.dense_i.kernel).T, _get(cell.dense_h.kernel).T
    if kind == "OptimizedLSTMCell":  # dense_h carries the bias
        b_hh = _get(cell.dense_h.bias)
        return LSTM, {"weight_ih": W_ih, "weight_hh": W_hh, "bias_ih": np.zeros_like(b_hh), "bias_hh": b_hh}
    b_ih = _get(cell.dense_i.bias)  # GRUCell: dense_i carries the bias, r, z, n
    return GRU, {"weight_ih": W_ih, "weight_hh": W_hh, "bias_ih": b_ih, "bias_hh": np.zeros_like(b_ih)}


def from_nnx(cell: Any, *, batch_first: bool | None = None, dtype: npt.DTypeLike | None = None) -> LSTM | GRU:
    """The rnnkit module of a flax.nnx recurrent cell, ``nnx.RNN`` or ``nnx.Bidirectional``.

    Parameters
    ----------
    cell : nnx.LSTMCell, OptimizedLSTMCell or GRUCell; an nnx.RNN over one (``reverse=False``);
        an nnx.Bidirectional of two such RNNs over cells of one kind and size, merging by
        concatenation (its default ``merge_fn``)
    batch_first : bool, optional
        The module's layout; default ``not time_major`` of an RNN / Bidirectional, else True.
    dtype : numpy dtype, optional
        float32 or float64; default the dtype of the parameters.

    Returns
    -------
    rnnkit.nn.LSTM or GRU (reset-after) with one layer, bidirectional for a Bidirectional.
    nnx's GRUCell has no hidden bias on n, so the module's b_hn is zero.
    """
    from flax import nnx  # optional and slow: imported on first use only

    time_major = getattr(cell, "time_major", False)
    if type(cell) is nnx.Bidirectional:
        default_merge = inspect.signature(nnx.Bidirectional.__init__).parameters["merge_fn"].default
        if cell.merge_fn is not default_merge:
            raise ValueError(
                "cell: merge_fn: expected the default (concatenation, as rnnkit's out), "
                f"got {cell.merge_fn!r}"
            )
        cells = [
            _nnx_rnn_cell(cell.forward_rnn, "forward_rnn"),
            _nnx_rnn_cell(cell.backward_rnn, "backward_rnn"),
        ]
    elif type(cell) is nnx.RNN:
        cells = [_nnx_rnn_cell(cell, "cell")]
    else:
        cells = [cell]
    parts = [_nnx_cell_weights(c) for c in cells]
    cls = parts[0][0]
    if len(parts) == 2 and (
        parts[1][0] is not cls or parts[1][1]["weight_hh"].shape != parts[0][1]["weight_hh"].shape
    ):
        raise ValueError(
            "cell: forward_rnn and backward_rnn hold different cells; an rnnkit bidirectional module "
            "has one configuration for both"
        )
    layout = (not time_major) if batch_first is None else v.flag("batch_first", batch_first)
    return _build(cls, [w for _, w in parts], layout, _dtype_of(parts[0][1], dtype))


def _nnx_rnn_cell(rnn: Any, name: str) -> Any:
    """The cell of an nnx.RNN run forwards (the Bidirectional runs its backward one reversed)."""
    if name != "backward_rnn" and getattr(rnn, "reverse", False):
        raise ValueError(
            f"{name}: reverse=True; run the module over x[:, ::-1] (x[::-1] time-major) instead, "
            "or convert an nnx.Bidirectional"
        )
    return rnn.cell


def to_nnx(module: LSTM | GRU, cell: Any, layer: int = 0) -> None:
    """Write layer ``layer`` of a unidirectional rnnkit LSTM or GRU into a flax.nnx cell of the
    same sizes (LSTMCell or OptimizedLSTMCell for an LSTM, GRUCell for a GRU), in place.

    nnx's GRUCell computes ``n = tanh(x W_in^T + b_in + r * (h W_hn^T))``: it has no b_hn, so
    a GRU converts exactly only when its b_hn is zero; otherwise ValueError (use
    :func:`to_linen`: linen's GRUCell has b_hn). Also refused: what :func:`to_linen` refuses,
    bidirectional modules (convert each direction's weights to its own cell via a one-direction
    copy), a cell of another kind or size.
    """
    import jax.numpy as jnp  # optional and slow: imported on first use only

    _check_gated(module, "flax.nnx")
    kind = _nnx_kind(cell)
    if module.bidirectional:
        raise ValueError(
            "module: bidirectional; an nnx cell holds one direction: convert each direction apart"
        )
    want = ("GRUCell",) if isinstance(module, GRU) else ("LSTMCell", "OptimizedLSTMCell")
    if kind not in want:
        raise TypeError(
            f"cell: expected a flax.nnx {' or '.join(want)} for {type(module).__name__}, got {kind}"
        )
    k = _layer_index(module, layer)
    w = _torch_weights(module, k, 0)
    I = w["weight_ih"].shape[1]
    H = module.hidden_size
    if (cell.in_features, cell.hidden_features) != (I, H):
        raise ValueError(
            f"cell: expected in_features = {I} and hidden_features = {H} (the module's layer {k}), "
            f"got {cell.in_features} and {cell.hidden_features}"
        )
    if kind == "GRUCell":
        b_hn = w["bias_hh"][2 * H :]
        if np.any(b_hn != 0):
            raise ValueError(
                "module: b_hn (bias_hh's n block) is not zero (max |b_hn| = "
                f"{float(np.abs(b_hn).max()):.3g}); flax.nnx's GRUCell has no hidden bias on n, "
                "which sits inside r * (h W_hn^T + b_hn), so this GRU converts exactly only when "
                "b_hn = 0; use rnnkit.flax.to_linen (linen's GRUCell has b_hn)"
            )
        bias = w["bias_ih"] + np.concatenate([w["bias_hh"][: 2 * H], np.zeros(H, module.dtype)])
        updates = [
            (cell.dense_i.kernel, w["weight_ih"].T),
            (cell.dense_i.bias, bias),
            (cell.dense_h.kernel, w["weight_hh"].T),
        ]
    elif kind == "OptimizedLSTMCell":
        updates = [
            (cell.dense_i.kernel, w["weight_ih"].T),
            (cell.dense_h.kernel, w["weight_hh"].T),
            (cell.dense_h.bias, w["bias_ih"] + w["bias_hh"]),
        ]
    else:
        tree = _linen_tree(w, True)
        updates = []
        for gi, attr in zip(_LSTM_IN, _NNX_LSTM_IN):
            updates.append((getattr(cell, attr).kernel, tree[gi]["kernel"]))
        for gh in _LSTM_HID:
            dense = getattr(cell, gh)
            updates += [(dense.kernel, tree[gh]["kernel"]), (dense.bias, tree[gh]["bias"])]
    for param, value in updates:
        param[...] = jnp.asarray(value, dtype=param[...].dtype)

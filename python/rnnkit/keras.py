"""Keras 3 recurrent layers as rnnkit modules, and back.

* :func:`from_layer` converts a built ``keras.layers.LSTM``, ``GRU`` (``reset_after`` True or
  False), ``SimpleRNN``, a ``keras.layers.RNN`` over one of their cells or a stack of them
  (a multi-layer module), or a ``Bidirectional``
  wrapper of one of these, into the rnnkit module that computes the same thing
  (``batch_first=True``, as Keras layers are batch-major);
* :func:`load` does it for every recurrent layer of a ``.keras`` file;
* :func:`to_weights` gives the list of arrays ``layer.set_weights`` takes for a Keras layer of
  the same configuration.

The conversion only reads and writes the weights as NumPy arrays, so it works with any Keras
backend (torch, jax, tensorflow); keras is imported when one of these functions is called, not
with rnnkit. The exact layouts and what is refused: docs/interop-keras-flax.md.

Keras stores ``kernel (I, G*H)`` and ``recurrent_kernel (H, G*H)``, the transposes of torch's
``weight_ih (G*H, I)`` and ``weight_hh (G*H, H)``, and one bias: the LSTM's gates are in
torch's order (i, f, g, o), the GRU's in the order z, r, n (torch: r, z, n); a reset-after GRU
has a bias (2, 3*H) = [input; recurrent], a reset-before GRU one bias (3*H,) on the input side.

What the rnnkit module returns, against the Keras layer's outputs (x (B, T, I), batch-first):

* ``out (B, T, D*H)`` is Keras's output with ``return_sequences=True``; without it Keras returns
  the last step, ``out[:, -1]`` for one direction, and for a Bidirectional layer
  ``concat(h_n[0], h_n[1])`` (its backward half is the backward layer's final state);
* ``return_state=True`` adds Keras's final states: ``h_n[0]`` (and for the LSTM ``c_n[0]``), the
  forward direction's then the backward's for a Bidirectional layer (``h_n[1]``, ``c_n[1]``);
* Keras's ``initial_state=[h, c]`` is rnnkit's ``hx=(h[None], c[None])``;
* a Keras mask of post-padded sequences (``Masking`` or ``mask_zero`` with the padding at the
  end) is rnnkit's ``lengths`` (past each length rnnkit's outputs are zero, as Keras's are with
  ``zero_output_for_mask=True``; without it Keras repeats the last valid output there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from . import _validate as v
from .nn import GRU, LSTM, RNN
from .nn.module import Module

__all__ = ["GoBackwards", "MergeDirections", "from_layer", "load", "to_weights"]

Recurrent = Union[RNN, LSTM, GRU]


def _gate_blocks(a: np.ndarray, order: Sequence[int], axis: int) -> np.ndarray:
    """Reorder the H-sized gate blocks of ``a`` along ``axis``."""
    blocks = np.split(a, len(order), axis=axis)
    return np.concatenate([blocks[k] for k in order], axis=axis)


# Keras's GRU blocks z, r, n against torch's r, z, n: a swap of the first two, its own inverse.
_GRU_SWAP = (1, 0, 2)


class GoBackwards(Module):
    """A unidirectional rnnkit module run over the time-reversed input, as a Keras layer with
    ``go_backwards=True`` runs: ``out, state = m(x, ...)`` is ``module(x[:, ::-1], ...)``
    (batch-first), so ``out[:, t]`` is the output after reading ``x[:, T-1-t]``, in Keras's
    order. The state arguments are the module's; ``lengths`` is refused (Keras reverses the
    padded sequence as a whole, padding first). ``backward`` returns dx in x's order.
    """

    def __init__(self, module: RNN | LSTM | GRU) -> None:
        if not isinstance(module, (RNN, LSTM, GRU)) or module.bidirectional:
            raise TypeError(f"module: expected a unidirectional rnnkit.nn RNN, LSTM or GRU, got {module!r}")
        super().__init__()
        self.module = module
        self.dtype = module.dtype

    def _flip(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a[:, ::-1] if self.module.batch_first else a[::-1])

    def forward(self, x: npt.ArrayLike, state: Any = None, lengths: None = None) -> Any:
        """x (B, T, I) batch-first (or (T, B, I)); state as the module's forward takes it.
        Returns ``(out, final state)`` of the module over the reversed sequence."""
        if lengths is not None:
            raise ValueError(
                "lengths: not supported by GoBackwards (Keras's go_backwards reverses the padded "
                "sequence as a whole); use a Bidirectional layer's reverse direction instead"
            )
        x = v.as_array("x", x)
        if x.ndim != 3:
            raise ValueError(f"x: expected 3 dimensions {self.module._x_symbolic()}, got shape {x.shape}")
        return self.module(self._flip(x), state)

    def backward(self, dout: Any, dstate: Any = None) -> Any:
        """As the module's backward; dx is returned in the order of forward's x."""
        dx, d0 = self.module.backward(dout, dstate)
        return self._flip(dx), d0

    def __repr__(self) -> str:
        return f"GoBackwards({self.module!r})"


class MergeDirections(Module):
    """A bidirectional rnnkit module whose two directions' outputs are merged as Keras's
    ``Bidirectional(merge_mode=...)`` merges them: with ``out (B, T, 2*H)`` the module's
    output, forward half ``f`` and backward half ``b`` (each (B, T, H)), ``m(x, ...)`` returns
    ``f + b`` ("sum"), ``f * b`` ("mul") or ``(f + b) / 2`` ("ave"), (B, T, H), and the
    module's final states unchanged. ``backward(dout (B, T, H), dstate)`` goes through the
    merge into the module's backward and returns its ``(dx, d initial states)``.
    """

    MODES = ("sum", "mul", "ave")

    def __init__(self, module: RNN | LSTM | GRU, mode: str) -> None:
        if not isinstance(module, (RNN, LSTM, GRU)) or not module.bidirectional:
            raise TypeError(f"module: expected a bidirectional rnnkit.nn RNN, LSTM or GRU, got {module!r}")
        super().__init__()
        self.module = module
        self.mode = v.choice("mode", mode, self.MODES)
        self.dtype = module.dtype

    def forward(self, x: npt.ArrayLike, state: Any = None, lengths: npt.ArrayLike | None = None) -> Any:
        """x (B, T, I) batch-first (or (T, B, I)); state and lengths as the module's forward
        takes them. Returns ``(merged out (B, T, H), final state)``."""
        self._cache = None
        out, final = self.module(x, state, lengths)
        H = out.shape[-1] // 2
        f, b = out[..., :H], out[..., H:]
        merged = f + b if self.mode == "sum" else f * b if self.mode == "mul" else (f + b) / 2
        if self.training:
            self._cache = (f, b)
        return np.ascontiguousarray(merged, dtype=self.dtype), final

    def backward(self, dout: Any, dstate: Any = None) -> Any:
        """dout like forward's merged out, or None; dstate as the module's backward takes it.
        Returns the module's ``(dx, d initial states)``."""
        f, b = self._need_cache()
        if dout is None:
            return self.module.backward(None, dstate)
        dout = v.float_array("dout", dout, self.dtype)
        v.check_shape("dout", dout, f.shape, "(B, T, H)" if self.module.batch_first else "(T, B, H)")
        if self.mode == "sum":
            halves = (dout, dout)
        elif self.mode == "mul":
            halves = (dout * b, dout * f)
        else:
            halves = (dout / 2, dout / 2)
        return self.module.backward(np.concatenate(halves, axis=-1), dstate)

    def __repr__(self) -> str:
        return f"MergeDirections({self.module!r}, {self.mode!r})"


# ----------------------------------------------------------------------------- Keras -> rnnkit


def _keras():
    # optional and slow: imported on first use only
    import keras

    return keras


def _activation_name(config: dict, key: str) -> str:
    act = config.get(key)
    return act if isinstance(act, str) else repr(act)


def _cells_of(layer: Any, keras: Any) -> tuple[list[Any], type[Recurrent]]:
    """The Keras cells of a recurrent layer (one, or a StackedRNNCells' list, first cell at the
    bottom) and the rnnkit class they convert to."""
    kl = keras.layers
    if not isinstance(layer, kl.RNN):
        raise TypeError(
            f"layer: expected a Keras LSTM, GRU, SimpleRNN, RNN or Bidirectional layer, "
            f"got {type(layer).__name__} {getattr(layer, 'name', '')!r}"
        )
    cells = list(layer.cell.cells) if type(layer.cell) is kl.StackedRNNCells else [layer.cell]
    families = {kl.LSTMCell: LSTM, kl.GRUCell: GRU, kl.SimpleRNNCell: RNN}
    kinds = {type(c) for c in cells}
    if len(kinds) != 1 or next(iter(kinds)) not in families:
        names = ", ".join(type(c).__name__ for c in cells)
        raise ValueError(
            f"layer {layer.name!r}: its cells are {names}; expected LSTMCell, GRUCell or "
            "SimpleRNNCell, one or stacked cells of one kind (custom cells do not convert)"
        )
    return cells, families[next(iter(kinds))]


def _cell_options(name: str, cell: Any, cls: type[Recurrent]) -> dict:
    """The rnnkit constructor options of one Keras cell; refuses what rnnkit does not compute
    exactly."""
    config = cell.get_config()
    act = _activation_name(config, "activation")
    options: dict[str, Any] = {"bias": bool(config["use_bias"])}
    if cls is RNN:
        if act not in ("tanh", "relu"):
            raise ValueError(
                f"layer {name!r}: activation: expected 'tanh' or 'relu' (rnnkit's RNN "
                f"nonlinearities), got {act!r}"
            )
        options["nonlinearity"] = act
    else:
        if act != "tanh":
            raise ValueError(f"layer {name!r}: activation: expected 'tanh' (the default), got {act!r}")
        rec = _activation_name(config, "recurrent_activation")
        if rec != "sigmoid":
            raise ValueError(
                f"layer {name!r}: recurrent_activation: expected 'sigmoid' (the default of Keras 3; "
                f"Keras 2's 'hard_sigmoid' is not computed by rnnkit), got {rec!r}"
            )
    if cls is GRU:
        options["reset_after"] = bool(config["reset_after"])
    return options


def _options(layer: Any, keras: Any) -> tuple[type[Recurrent], dict, list[Any]]:
    """(rnnkit class, constructor options, cells) of one Keras recurrent layer."""
    cells, cls = _cells_of(layer, keras)
    name = layer.name
    if not layer.built:
        raise ValueError(
            f"layer {name!r}: not built, so it has no weights yet; call it on an input or "
            "build(input_shape) first"
        )
    per_cell = [(_cell_options(name, c, cls), c.units) for c in cells]
    if any(p != per_cell[0] for p in per_cell):
        raise ValueError(
            f"layer {name!r}: its stacked cells differ ({per_cell}, as (options, units) per cell); "
            "the layers of an rnnkit module share one configuration"
        )
    return cls, per_cell[0][0], cells


def _numpy(variable: Any, keras: Any) -> np.ndarray:
    """A copy of a Keras variable's value (a torch, jax or tensorflow tensor) as NumPy."""
    return np.array(v.as_array(variable.path, variable.value, copied=True))


def _torch_weights(cls: type[Recurrent], cell: Any, options: dict, keras: Any) -> dict[str, np.ndarray]:
    """kind -> array in torch's layout for one Keras cell."""
    kernel = _numpy(cell.kernel, keras).T  # (G*H, I)
    recurrent = _numpy(cell.recurrent_kernel, keras).T  # (G*H, H)
    bias = _numpy(cell.bias, keras) if options["bias"] else None
    if cls is GRU:
        kernel = _gate_blocks(kernel, _GRU_SWAP, 0)
        recurrent = _gate_blocks(recurrent, _GRU_SWAP, 0)
        if bias is not None:
            bias = _gate_blocks(bias, _GRU_SWAP, -1)
    w = {"weight_ih": kernel, "weight_hh": recurrent}
    if bias is not None:
        if bias.ndim == 2:  # reset-after GRU: (2, 3*H) = [input; recurrent]
            w["bias_ih"], w["bias_hh"] = bias[0], bias[1]
        else:  # Keras has one bias: all of it on the input side
            w["bias_ih"], w["bias_hh"] = bias, np.zeros_like(bias)
    return w


def _module_dtype(name: str, cell: Any, keras: Any, dtype: npt.DTypeLike | None) -> np.dtype:
    if dtype is not None:
        return v.dtype_arg(dtype)
    stored = _numpy(cell.kernel, keras).dtype
    if stored not in v.FLOAT_DTYPES:
        raise TypeError(
            f"layer {name!r}: its weights are {stored}; rnnkit computes in float32 or float64: "
            "pass dtype=np.float32 (or np.float64) to convert them"
        )
    return np.dtype(stored)


def from_layer(
    layer: Any, *, dtype: npt.DTypeLike | None = None
) -> RNN | LSTM | GRU | GoBackwards | MergeDirections:
    """The rnnkit module computing what a built Keras recurrent layer computes.

    Parameters
    ----------
    layer : keras.layers.LSTM, GRU, SimpleRNN, RNN (over one LSTMCell, GRUCell or
        SimpleRNNCell, or a stack of cells of one kind and size) or Bidirectional (of one
        of these over one cell, ``merge_mode`` 'concat', 'sum', 'mul' or 'ave')
        A built layer (it has weights).
    dtype : numpy dtype, optional
        float32 or float64; default the dtype of the layer's weights.

    Returns
    -------
    rnnkit.nn.LSTM, GRU or RNN with ``batch_first=True`` (``bidirectional=True`` for a
    Bidirectional layer, ``num_layers=L`` for L stacked cells: Keras's states of cell k are
    row k of h_n / c_n), or a :class:`GoBackwards` around one for a layer with
    ``go_backwards=True``, or a :class:`MergeDirections` around a bidirectional one for
    ``merge_mode`` 'sum', 'mul' or 'ave'. ``out (B, T, D*H)`` (``(B, T, H)`` merged) is Keras's
    output with ``return_sequences=True``; the module docstring maps the other outputs.

    Refused (ValueError naming the layer and the option): activations other than tanh (tanh or
    relu for SimpleRNN), recurrent activations other than sigmoid, custom cells, stacked cells
    that differ, ``merge_mode=None`` (Keras then returns the two directions as a list: take
    ``out[..., :H]`` and ``out[..., H:]`` of the 'concat' conversion), Bidirectional layers
    whose two directions differ or that run stacked cells.
    Keras's ``dropout`` / ``recurrent_dropout`` act in training only and are not carried over.
    """
    keras = _keras()
    if isinstance(layer, keras.layers.Bidirectional):
        return _from_bidirectional(layer, keras, dtype)
    cls, options, cells = _options(layer, keras)
    weights = [[_torch_weights(cls, c, options, keras)] for c in cells]
    dt = _module_dtype(layer.name, cells[0], keras, dtype)
    module = _build(cls, options, weights, dt)
    return GoBackwards(module) if layer.go_backwards else module


def _build(cls: type[Recurrent], options: dict, layers: list[list[dict]], dtype: np.dtype) -> Recurrent:
    """The rnnkit module of ``layers`` (per layer: directions [forward] or [forward, backward],
    each kind -> array in torch's layout)."""
    I = layers[0][0]["weight_ih"].shape[1]
    H = layers[0][0]["weight_hh"].shape[1]
    module: Recurrent = cls(
        I,
        H,
        num_layers=len(layers),
        batch_first=True,
        bidirectional=len(layers[0]) == 2,
        dtype=dtype,
        seed=0,
        **options,
    )
    state = {
        cls._name(kind, k, d): a.astype(dtype, copy=False)
        for k, directions in enumerate(layers)
        for d, w in enumerate(directions)
        for kind, a in w.items()
    }
    module.load_state_dict(state)
    return module


def _from_bidirectional(layer: Any, keras: Any, dtype: npt.DTypeLike | None) -> Recurrent | MergeDirections:
    name = layer.name
    if layer.merge_mode not in ("concat", *MergeDirections.MODES):
        raise ValueError(
            f"layer {name!r}: merge_mode: expected 'concat', 'sum', 'mul' or 'ave', got "
            f"{layer.merge_mode!r} (None returns the two directions as a list: convert a copy "
            "with merge_mode='concat' and take the halves out[..., :H], out[..., H:])"
        )
    fwd, bwd = layer.forward_layer, layer.backward_layer
    cls, options, fcells = _options(fwd, keras)
    bcls, boptions, bcells = _options(bwd, keras)
    if len(fcells) > 1 or len(bcells) > 1:
        raise ValueError(
            f"layer {name!r}: a Bidirectional over stacked cells runs each direction through the "
            "whole stack, while a bidirectional rnnkit stack concatenates both directions between "
            "layers; use one Bidirectional layer per cell"
        )
    fcell, bcell = fcells[0], bcells[0]
    if fwd.go_backwards or not bwd.go_backwards:
        raise ValueError(
            f"layer {name!r}: expected a forward layer with go_backwards=False and a backward "
            f"layer with go_backwards=True, got {fwd.go_backwards} and {bwd.go_backwards}"
        )
    if (bcls, boptions, bcell.units) != (cls, options, fcell.units):
        raise ValueError(
            f"layer {name!r}: its directions differ ({type(fwd).__name__} {fcell.units} units "
            f"{options} forward, {type(bwd).__name__} {bcell.units} units {boptions} backward); "
            "an rnnkit bidirectional module has one configuration for both"
        )
    dt = _module_dtype(name, fcell, keras, dtype)
    weights = [[_torch_weights(cls, c, options, keras) for c in (fcell, bcell)]]
    module = _build(cls, options, weights, dt)
    return module if layer.merge_mode == "concat" else MergeDirections(module, layer.merge_mode)


def _recurrent_layers(model: Any, keras: Any) -> list[Any]:
    """Every recurrent layer (RNN or Bidirectional) of a model, nested models included."""
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(_recurrent_layers(layer, keras))
    return found


def load(
    path: Any, *, dtype: npt.DTypeLike | None = None
) -> list[tuple[str, RNN | LSTM | GRU | GoBackwards | MergeDirections]]:
    """Every recurrent layer of a ``.keras`` file as ``(layer name, rnnkit module)`` pairs, in
    the model's layer order (nested models included); see :func:`from_layer`.

    The file is loaded by ``keras.saving.load_model(path, compile=False)``, so custom layers
    must be registered with Keras as for loading the model itself. A recurrent layer that does
    not convert raises the ValueError of :func:`from_layer`.
    """
    keras = _keras()
    model = keras.saving.load_model(path, compile=False)
    return [(layer.name, from_layer(layer, dtype=dtype)) for layer in _recurrent_layers(model, keras)]


# ----------------------------------------------------------------------------- rnnkit -> Keras


def to_weights(module: RNN | LSTM | GRU | GoBackwards | MergeDirections, layer: int = 0) -> list[np.ndarray]:
    """The arrays ``keras_layer.set_weights`` takes for layer ``layer`` of an rnnkit module.

    For each direction (forward, then backward: Keras's Bidirectional order):
    ``kernel (I, G*H)``, ``recurrent_kernel (H, G*H)`` and, with ``bias=True``, the bias: (G*H,)
    = b_ih + b_hh, or for a reset-after GRU (2, 3*H) = [b_ih; b_hh] (GRU blocks reordered to
    Keras's z, r, n). A reset-before GRU converts exactly too: its b_hn is added outside the
    reset gate, so it joins the input bias. The Keras layer must have the same configuration:
    units H, ``use_bias``, ``reset_after``, ``activation='relu'`` for a relu RNN.

    Refused: LSTM projections (``proj_size > 0``: Keras has none), LSTM peepholes (likewise),
    ``layer`` out of range.
    """
    if isinstance(module, (GoBackwards, MergeDirections)):
        module = module.module
    if not isinstance(module, (RNN, LSTM, GRU)):
        raise TypeError(f"module: expected an rnnkit.nn RNN, LSTM or GRU, got {type(module).__name__}")
    if module.proj_size:
        raise ValueError(
            f"module: proj_size = {module.proj_size}; Keras's LSTM has no projection, so an "
            "LSTM with proj_size > 0 does not convert"
        )
    if getattr(module, "peepholes", False):
        raise ValueError(
            "module: peepholes = True; Keras's LSTM has no peephole connections, so an LSTM with "
            "peepholes does not convert"
        )
    k = v.int_arg("layer", layer, minimum=0)
    if k >= module.num_layers:
        raise ValueError(f"layer: expected 0 <= layer < num_layers = {module.num_layers}, got {k}")
    module._check_parameters()
    # Keras's GRU blocks are z, r, n; the other families share torch's order
    order = _GRU_SWAP if isinstance(module, GRU) else tuple(range(module.CELL.gates))
    out: list[np.ndarray] = []
    for d in range(module.num_directions):
        w = {kind: _gate_blocks(a, order, 0) for kind, a in module._weights(k, d).items() if a is not None}
        out += [np.ascontiguousarray(w["weight_ih"].T), np.ascontiguousarray(w["weight_hh"].T)]
        if module.bias:
            b_ih, b_hh = w["bias_ih"], w["bias_hh"]
            if isinstance(module, GRU) and module.reset_after:
                out.append(np.stack([b_ih, b_hh]))
            else:  # one bias (a reset-before GRU's b_hn acts outside r, so it joins b_in)
                out.append(b_ih + b_hh)
    return out

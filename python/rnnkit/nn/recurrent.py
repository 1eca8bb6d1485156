"""Multi-layer, optionally bidirectional recurrent modules with torch.nn's interface.

``RNN``, ``LSTM`` and ``GRU`` take torch.nn's constructor arguments, use torch's parameter names
(``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0``, ...) and layouts, so a torch
``state_dict`` loads unchanged, and compute what torch computes. Each module is a thin loop over
layers and directions around the fused C++ kernels of :mod:`rnnkit.ops.recurrent`; backward is
explicit::

    lstm = rnnkit.nn.LSTM(10, 20, num_layers=2, bidirectional=True, seed=0)
    out, (h_n, c_n) = lstm(x, lengths=lengths)         # x (T, B, 10)
    dx, (dh0, dc0) = lstm.backward(dout, (dh_n, None))  # adds into every parameter's .grad

One time step at a time (decoders, streaming; any stack of layers, with or without projection,
one direction): ``out_t, state = m.step(x_t, state)`` and, in reverse order of the steps,
``dx_t, dstate = m.step_backward(dout_t, dstate)``. The state has the layout of ``h_n``
(``(h_n, c_n)`` for the LSTM), so a forward's final state can be continued step by step.

Streaming inference (one direction): ``stream = m.stream(batch=B)``, then ``y = stream(x_chunk)``
chunk after chunk carries the state across calls and gives, bitwise, what one eval-mode forward
over the concatenated sequence gives; see :class:`Stream`.

This file and :mod:`rnnkit._cells` are where the cell families meet their classes:
:func:`module_class` maps a family name to RNN, LSTM or GRU.

Shape letters (used in every docstring and comment of this module):

    T   time steps                  L   num_layers
    B   batch size                  D   directions: 2 if bidirectional else 1
    I   input size                  P   LSTM projection size (proj_size > 0)
    H   hidden size                 H_out = P with a projection, else H

``out`` is (T, B, D*H_out), or (B, T, D*H_out) with ``batch_first``: the last layer's output,
[forward, backward] concatenated per time step. Final states ``h_n`` are (L*D, B, H_out), row
``layer*D + direction``; the LSTM's ``c_n`` is (L*D, B, H). Unbatched input (T, I) goes with
states (L*D, H_out) and gives out (T, D*H_out), as in torch.

``lengths`` (B,) (1 <= lengths[b] <= T) runs sequence b over its first lengths[b] steps only,
as a torch packed sequence would: ``out`` is zero at padded positions, ``h_n`` holds each
sequence's own last state, and the reverse direction starts at each sequence's last step.

Training mode (the default) keeps the kernels' workspaces of the last forward for
:meth:`backward` (they refer to the input and the weight arrays: do not modify those in place
before backward) and applies inter-layer dropout; ``eval()`` does neither.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from .. import _validate as v
from .._cells import CELLS, GRU_CELL, LSTM_CELL, RNN_CELL, Cell, cell_spec
from ..ops.recurrent import (
    LayerStream,
    Workspace,
    _gru_layer_stream,
    _lstm_layer_stream,
    _rnn_layer_stream,
    gru_backward,
    gru_forward,
    lstm_backward,
    lstm_forward,
    rnn_backward,
    rnn_forward,
)
from .module import Module, Parameter

__all__ = ["RNN", "LSTM", "GRU", "Stream", "module_class"]

# Parameter kinds in torch's order within one layer and direction, and the field of the
# kernels' backward NamedTuple holding each one's gradient.
_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "weight_peep")
_GRAD_FIELD = {
    "weight_ih": "dW_ih",
    "weight_hh": "dW_hh",
    "bias_ih": "db_ih",
    "bias_hh": "db_hh",
    "weight_hr": "dW_hr",
    "weight_peep": "dW_peep",
}


class _RNNBase(Module):
    """Shared logic of RNN, LSTM and GRU. Subclasses set ``CELL`` (their row of the cell table)
    and implement ``_kernel_forward`` / ``_kernel_backward`` (one layer, one direction)."""

    CELL: ClassVar[Cell]  # the cell family: gate blocks G, state names ("h",) or ("h", "c")

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers,
        bias,
        batch_first,
        dropout,
        bidirectional,
        proj_size,
        dtype,
        seed,
        precision="float32",
        clip=None,
    ):
        self.input_size = v.int_arg("input_size", input_size)
        self.hidden_size = v.int_arg("hidden_size", hidden_size)
        self.num_layers = v.int_arg("num_layers", num_layers)
        self.bias = v.flag("bias", bias)
        self.batch_first = v.flag("batch_first", batch_first)
        self.bidirectional = v.flag("bidirectional", bidirectional)
        self.proj_size = v.int_arg("proj_size", proj_size, minimum=0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size: expected 0 (no projection) or less than hidden_size = "
                f"{self.hidden_size}, got {self.proj_size}"
            )
        self.dropout = v.probability("dropout", dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(
                f"dropout={self.dropout} has no effect with num_layers=1: dropout acts "
                "on the output of every layer but the last",
                stacklevel=3,
            )
        self.dtype = v.dtype_arg(dtype)
        # "float32", or "bf16": the products' inputs rounded to bfloat16 (ops.recurrent).
        self.precision = v.precision(precision, self.dtype)
        # ONNX's cell clip: None, or the bound of every activation's input (ops.recurrent).
        self.clip = v.clip(clip)
        v.check_rnn_module_sizes(
            type(self).__name__,
            self.CELL.gates,
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.num_directions,
            self.proj_size,
            self.bias,
            self.dtype,
        )
        self.training = True
        self._rng = np.random.default_rng(seed)  # initialisation, then dropout masks
        # What forward keeps for backward is per thread (Module._cache: the last training
        # forward's {"layers", "shape", "unbatched"}; Module._steps: the step tape, per step run
        # with keep, its layers' workspaces).
        self._params: dict[str, Parameter] = {}  # name -> Parameter, in torch's order
        bound = 1 / np.sqrt(self.hidden_size)
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                for kind, (shape, symbolic) in self._shapes(layer).items():
                    name = self._name(kind, layer, direction)
                    data = self._rng.uniform(-bound, bound, shape).astype(self.dtype)
                    self._param(name, data, symbolic)
        # per (layer, direction): the parameter names by kind (None where absent), and the
        # (Parameter, gradient field) pairs a backward adds into
        self._names = [
            [
                {
                    kind: (n if n in self._params else None)
                    for kind in _KINDS
                    for n in [self._name(kind, layer, d)]
                }
                for d in range(self.num_directions)
            ]
            for layer in range(self.num_layers)
        ]
        self._grad_fields = [
            [
                [(self._params[n], _GRAD_FIELD[kind]) for kind, n in names.items() if n is not None]
                for names in per_layer
            ]
            for per_layer in self._names
        ]

    # ------------------------------------------------------------------ structure

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _out_size(self):
        """H_out: the size of h (and of each direction's output)."""
        return self.proj_size or self.hidden_size

    def _state_sizes(self):
        """Size of each recurrent state: (H_out,) or, for the LSTM, (H_out, H)."""
        return (self._out_size, self.hidden_size)[: len(self.CELL.state_names)]

    def _shapes(self, layer):
        """kind -> (shape, symbolic shape) of one direction's parameters of ``layer``."""
        G, H, D = self.CELL.gates, self.hidden_size, self.num_directions
        gh = f"{G}*H" if G > 1 else "H"
        h_out = "P" if self.proj_size else "H"
        if layer == 0:
            n_in, sym_in = self.input_size, "I"
        else:
            n_in, sym_in = D * self._out_size, f"D*{h_out}" if D > 1 else h_out
        shapes: dict[str, tuple[tuple[int, ...], str]] = {
            "weight_ih": ((G * H, n_in), f"({gh}, {sym_in})"),
            "weight_hh": ((G * H, self._out_size), f"({gh}, {h_out})"),
        }
        if self.bias:
            shapes["bias_ih"] = ((G * H,), f"({gh},)")
            shapes["bias_hh"] = ((G * H,), f"({gh},)")
        if self.proj_size:
            shapes["weight_hr"] = ((self.proj_size, H), "(P, H)")
        if getattr(self, "peepholes", False):  # LSTM only: rows i, f, o
            shapes["weight_peep"] = ((3, H), "(3, H)")
        return shapes

    @staticmethod
    def _name(kind, layer, direction):
        return f"{kind}_l{layer}" + ("_reverse" if direction else "")

    def _weights(self, layer, direction):
        """kind -> array for the kernels; absent biases / projection are None."""
        params = self._params
        return {
            kind: None if n is None else params[n].data for kind, n in self._names[layer][direction].items()
        }

    def _add_grads(self, layer, direction, g):
        """Add one layer-direction's kernel gradients ``g`` into the parameters' .grad."""
        for p, field in self._grad_fields[layer][direction]:
            p.accumulate(getattr(g, field))

    # One layer and direction through the kernels, defined by each cell family's class:
    # (x, states, weights, **kw) -> (y, final states, workspace); (dy, d_states, ws) -> (grads,
    # initial-state grads).
    _kernel_forward: Callable[..., tuple[np.ndarray, tuple[np.ndarray, ...], Workspace | None]]
    _kernel_backward: Callable[..., tuple[Any, tuple[np.ndarray, ...]]]

    # ------------------------------------------------------------------ forward / backward

    def _forward(self, x, states, lengths):
        """x (T, B, I) or (B, T, I) or unbatched (T, I); states: one array or None per state
        (each (L*D, B, size) or unbatched (L*D, size)). Returns (out, tuple of final states)."""
        self._cache = None  # free the previous workspaces before making new ones
        self._check_parameters()
        x = v.as_array("x", x)
        self._check_dtype("x", x)
        user_shape = x.shape
        if x.ndim not in (2, 3):
            raise ValueError(
                f"x: expected 3 dimensions {self._x_symbolic()} or 2 (T, I) (unbatched), got shape {x.shape}"
            )
        unbatched = x.ndim == 2
        if unbatched:
            if lengths is not None:
                raise ValueError(
                    "lengths: not supported with unbatched input x (T, I); use x of shape (T, 1, I)"
                )
            x = x[:, None]  # (T, 1, I)
        elif self.batch_first:
            x = x.transpose(1, 0, 2)  # (B, T, I) -> (T, B, I)
        T, B, I = x.shape
        if I != self.input_size:
            raise ValueError(
                f"x: expected input size I = {self.input_size} (last dimension), got shape {user_shape}"
            )
        lengths = v.lengths_array(lengths, T, B)
        states = [
            self._check_state(n + "0", s, size, B, unbatched)
            for n, s, size in zip(self.CELL.state_names, states, self._state_sizes())
        ]

        D, L = self.num_directions, self.num_layers
        use_dropout = self.training and self.dropout > 0
        finals: list[list[np.ndarray]] = [[] for _ in states]  # per state: L*D arrays (B, size)
        layers = []  # per layer: (workspaces per direction, dropout mask or None)
        inp = x  # (T, B, I), then (T, B, D*H_out)
        for layer in range(L):
            ys, workspaces = [], []
            for d in range(D):
                k = layer * D + d
                y, final, ws = self._kernel_forward(
                    inp,
                    [None if s is None else s[k] for s in states],
                    self._weights(layer, d),
                    reverse=bool(d),
                    lengths=lengths,
                    training=self.training,
                    precision=self.precision,
                    clip=self.clip,
                )
                ys.append(y)  # (T, B, H_out)
                workspaces.append(ws)
                for f, s in zip(finals, final):
                    f.append(s)
            out = ys[0] if D == 1 else np.concatenate(ys, axis=2)  # (T, B, D*H_out)
            mask = None
            if use_dropout and layer < L - 1:
                mask = self._dropout_mask(out.shape)
                out = out * mask
            layers.append((workspaces, mask))
            inp = out

        if self.training:
            self._cache = {"layers": layers, "shape": (T, B), "unbatched": unbatched}
        stacked = [np.stack(f) for f in finals]  # each (L*D, B, size)
        return self._to_user(out, unbatched), tuple(self._state_to_user(f, unbatched) for f in stacked)

    def _backward(self, dout, d_states):
        """dout like out (or None); d_states: one array or None per final state.
        Adds the parameter gradients into .grad; returns (dx, tuple of initial-state grads)."""
        if not self.training:
            raise RuntimeError(
                f"{type(self).__name__}.backward: the module is in eval mode, "
                "which keeps no workspace; call train() and run forward again"
            )
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward: no forward to differentiate; "
                "run forward in training mode first"
            )
        cache = self._cache
        T, B = cache["shape"]
        unbatched = cache["unbatched"]
        D, L, H_out = self.num_directions, self.num_layers, self._out_size
        if dout is not None:
            dout = v.as_array("dout", dout)
            self._check_dtype("dout", dout)
            if unbatched:
                v.check_shape("dout", dout, (T, D * H_out), "(T, D*H_out)")
                dout = dout[:, None]
            elif self.batch_first:
                v.check_shape("dout", dout, (B, T, D * H_out), "(B, T, D*H_out)")
                dout = dout.transpose(1, 0, 2)
            else:
                v.check_shape("dout", dout, (T, B, D * H_out), "(T, B, D*H_out)")
        d_states = [
            self._check_state(n, s, size, B, unbatched)
            for n, s, size in zip(
                ("d" + n + "_n" for n in self.CELL.state_names), d_states, self._state_sizes()
            )
        ]

        d_init = [np.zeros((L * D, B, size), self.dtype) for size in self._state_sizes()]
        d_out = dout  # gradient w.r.t. the current layer's output (T, B, D*H_out), or None
        for layer in reversed(range(L)):
            workspaces, mask = cache["layers"][layer]
            if mask is not None and d_out is not None:
                d_out = d_out * mask
            d_in = None  # gradient w.r.t. the layer's input, summed over directions
            for d in range(D):
                k = layer * D + d
                dy = None if d_out is None else d_out[:, :, d * H_out : (d + 1) * H_out]
                g, d_first = self._kernel_backward(
                    dy, [None if s is None else s[k] for s in d_states], workspaces[d]
                )
                self._add_grads(layer, d, g)
                for acc, s in zip(d_init, d_first):
                    acc[k] = s
                d_in = g.dx if d_in is None else d_in + g.dx
            d_out = d_in
        return self._to_user(d_out, unbatched), tuple(self._state_to_user(s, unbatched) for s in d_init)

    # ------------------------------------------------------------------ one step

    def step(self, x_t: Any, state: Any = None, *, keep: bool | None = None) -> tuple[Any, Any]:
        """One time step of the whole layer stack: ``out_t, state = module.step(x_t, state)``.

        x_t (B, I); state as forward's final state (RNN / GRU: h (L, B, H_out); LSTM:
        (h (L, B, H_out), c (L, B, H)), either may be None), or None (zeros). Returns
        ``(out_t (B, H_out), state)``: the top layer's output and the new state, shaped like the
        state given. Running ``step`` over t = 0 .. T-1 computes what ``forward`` computes over
        the sequence (inter-layer dropout draws its masks per step).

        keep (default: the module's training mode) keeps what :meth:`step_backward` needs on
        the module's step tape; :meth:`clear_steps` and ``eval()`` empty it. A bidirectional
        module cannot step (its reverse direction starts from the sequence's end): ValueError.
        """
        self._check_can_step("step")
        keep = self.training if keep is None else v.flag("keep", keep)
        x_t = v.as_array("x_t", x_t)
        self._check_dtype("x_t", x_t)
        if x_t.ndim != 2 or x_t.shape[1] != self.input_size:
            raise ValueError(f"x_t: expected shape (B, I) with I = {self.input_size}, got {x_t.shape}")
        B = x_t.shape[0]
        names = self.CELL.state_names
        states = [
            self._check_state(n, s, size, B, False)
            for n, s, size in zip(
                names, (state,) if len(names) == 1 else _pair("state", state), self._state_sizes()
            )
        ]
        L = self.num_layers
        dropout = self.training and self.dropout > 0
        finals: list[list[np.ndarray]] = [[] for _ in names]
        layers = []
        inp = x_t[None]  # (1, B, I), then (1, B, H_out)
        for layer in range(L):
            y, final, ws = self._kernel_forward(
                inp,
                [None if s is None else s[layer] for s in states],
                self._weights(layer, 0),
                reverse=False,
                lengths=None,
                training=keep,
                precision=self.precision,
                clip=self.clip,
            )
            for f, s in zip(finals, final):
                f.append(s)
            mask = None
            if dropout and layer < L - 1:
                mask = self._dropout_mask(y.shape)
                y = y * mask
            layers.append((ws, mask))
            inp = y
        if keep:
            self._steps.append(layers)
        new = tuple(f[0][None] if L == 1 else np.stack(f) for f in finals)  # each (L, B, size)
        return inp[0], (new[0] if len(names) == 1 else new)

    def step_backward(self, dout_t: Any, dstate: Any = None) -> tuple[np.ndarray, Any]:
        """Backward of the most recent :meth:`step` kept on the tape (which it removes):
        ``dx_t, dstate_prev = module.step_backward(dout_t, dstate)``.

        dout_t (B, H_out) the gradient w.r.t. that step's out_t, or None; dstate shaped like its
        new state (LSTM: a pair, either may be None), or None. Adds the parameter gradients into
        .grad. Returns ``(dx_t (B, I), dstate_prev)``, dstate_prev shaped like the state the step
        started from. Calling it once per step, last step first, is backprop through time.
        """
        self._check_can_step("step_backward")
        if not self._steps:
            raise RuntimeError(
                f"{type(self).__name__}.step_backward: no step to differentiate; "
                "run step in training mode (or with keep=True) first"
            )
        layers = self._steps[-1]
        B = layers[0][0].x.shape[1]
        names = self.CELL.state_names
        H_out = self._out_size
        if dout_t is not None:
            dout_t = v.as_array("dout_t", dout_t)
            self._check_dtype("dout_t", dout_t)
            v.check_shape("dout_t", dout_t, (B, H_out), "(B, H_out)")
        d_states = [
            self._check_state("d" + n, s, size, B, False)
            for n, s, size in zip(
                names, (dstate,) if len(names) == 1 else _pair("dstate", dstate), self._state_sizes()
            )
        ]
        self._steps.pop()
        L = self.num_layers
        d_prev = [np.empty((L, B, size), self.dtype) for size in self._state_sizes()]
        d_out = None if dout_t is None else dout_t[None]  # (1, B, H_out)
        for layer in reversed(range(L)):
            ws, mask = layers[layer]
            if mask is not None and d_out is not None:
                d_out = d_out * mask
            g, d_first = self._kernel_backward(d_out, [None if s is None else s[layer] for s in d_states], ws)
            self._add_grads(layer, 0, g)
            for acc, s in zip(d_prev, d_first):
                acc[layer] = s
            d_out = g.dx
        assert d_out is not None  # num_layers >= 1: the loop ran and set it to a dx
        return d_out[0], (d_prev[0] if len(names) == 1 else tuple(d_prev))

    def stream(self, batch: int = 1) -> Stream:
        """A :class:`Stream` of ``batch`` rows over this module: ``y = stream(x_chunk)``.

        Inference only: no workspace and no dropout whatever the module's mode. The weights are
        checked and packed here (later changes to the parameters are not seen: make a new
        stream). A bidirectional module cannot stream (its reverse direction starts from the
        sequence's end): ValueError.
        """
        return Stream(self, batch)

    # (layer, batch) -> one layer's stream of ``batch`` rows (forward direction), for Stream;
    # defined by each cell family's class
    _layer_stream: Callable[..., LayerStream]

    def clear_steps(self) -> None:
        """Empty the step tape (the steps kept for :meth:`step_backward`)."""
        self._steps = []

    def _check_can_step(self, what):
        if self.bidirectional:
            raise ValueError(
                f"{type(self).__name__}.{what}: a bidirectional module cannot run "
                "step by step: its reverse direction starts from the end of the "
                "sequence; run forward over the whole sequence instead"
            )

    def _dropout_mask(self, shape):
        """Keep each element with probability 1 - p, scaled by 1 / (1 - p) (torch's dropout)."""
        keep = self._rng.random(shape) >= self.dropout
        scale = 0.0 if self.dropout == 1 else 1 / (1 - self.dropout)
        return keep * self.dtype.type(scale)

    # ------------------------------------------------------------------ checks and layouts

    def _x_symbolic(self):
        return "(B, T, I)" if self.batch_first else "(T, B, I)"

    def _check_dtype(self, name, a):
        if a.dtype != self.dtype:
            raise TypeError(f"{name}: expected dtype {self.dtype.name} (the module's dtype), got {a.dtype}")

    def _check_state(self, name, s, size, B, unbatched):
        """None, or a state-shaped array of the module dtype; returned as (L*D, B, size)."""
        if s is None:
            return None
        s = v.as_array(name, s)
        self._check_dtype(name, s)
        LD = self.num_layers * self.num_directions
        letter = "H" if size == self.hidden_size else "P"
        if unbatched:
            v.check_shape(name, s, (LD, size), f"(num_layers*D, {letter})")
            return s[:, None]
        v.check_shape(name, s, (LD, B, size), f"(num_layers*D, B, {letter})")
        return s

    def _check_parameters(self):
        """Parameters may have been reassigned by the user: check dtype and shape by name."""
        for layer in range(self.num_layers):
            for d in range(self.num_directions):
                for kind, (shape, symbolic) in self._shapes(layer).items():
                    p = self._params[self._name(kind, layer, d)]
                    if not isinstance(p.data, np.ndarray) or p.data.dtype != self.dtype:
                        raise TypeError(
                            f"{p.name}: expected a {self.dtype.name} numpy array, "
                            f"got {type(p.data).__name__} of dtype "
                            f"{getattr(p.data, 'dtype', None)}"
                        )
                    v.check_shape(p.name, p.data, shape, symbolic)

    def _to_user(self, a, unbatched):
        """(T, B, n) -> the caller's layout: (T, n) unbatched, (B, T, n) batch-first."""
        if unbatched:
            return a[:, 0]
        if self.batch_first:
            return np.ascontiguousarray(a.transpose(1, 0, 2))
        return a

    @staticmethod
    def _state_to_user(s, unbatched):
        return s[:, 0] if unbatched else s

    def __repr__(self):
        args = [str(self.input_size), str(self.hidden_size)]
        for name, default in (
            ("num_layers", 1),
            ("bias", True),
            ("batch_first", False),
            ("dropout", 0.0),
            ("bidirectional", False),
            ("proj_size", 0),
        ):
            if getattr(self, name) != default:
                args.append(f"{name}={getattr(self, name)}")
        args += self._extra_repr()
        if self.dtype != np.float32:
            args.append(f"dtype={self.dtype.name}")
        if self.precision != "float32":
            args.append(f"precision={self.precision!r}")
        if self.clip is not None:
            args.append(f"clip={self.clip}")
        return f"{type(self).__name__}({', '.join(args)})"

    def _extra_repr(self):
        return []


def module_class(cell: str | Cell, name: str = "cell") -> type[RNN] | type[LSTM] | type[GRU]:
    """The recurrent module class of a cell family: "rnn" -> RNN, "lstm" -> LSTM, "gru" -> GRU
    (ValueError naming ``name`` for anything else)."""
    return _MODULES[cell_spec(cell, name).name]


class RNN(_RNNBase):
    """Elman RNN, ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``, act tanh or relu.

    ``out, h_n = rnn(x, h0=None, lengths=None)``; ``dx, dh0 = rnn.backward(dout, dh_n=None)``.
    ``clip`` (RNN, LSTM, GRU): None, or ONNX's cell clip, a bound > 0 on every activation's input
    (:func:`rnnkit.rnn_forward`).
    """

    CELL = RNN_CELL

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        dtype: npt.DTypeLike = np.float32,
        seed: int | np.random.SeedSequence | None = None,
        precision: str = "float32",
        clip: float | None = None,
    ) -> None:
        self.nonlinearity = v.choice("nonlinearity", nonlinearity, RNN_CELL.options["nonlinearity"])
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,
            dtype,
            seed,
            precision,
            clip,
        )

    def forward(
        self, x: npt.ArrayLike, h0: npt.ArrayLike | None = None, lengths: npt.ArrayLike | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """x (T, B, I) or (B, T, I) batch-first or (T, I); h0 (L*D, B, H) or None;
        lengths (B,) or None. Returns ``(out (T, B, D*H), h_n (L*D, B, H))``."""
        out, (h_n,) = self._forward(x, (h0,), lengths)
        return out, h_n

    def backward(
        self, dout: npt.ArrayLike | None, dh_n: npt.ArrayLike | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """dout like out, or None; dh_n (L*D, B, H) or None. Adds into every .grad.
        Returns ``(dx like x, dh0 (L*D, B, H))``."""
        dx, (dh0,) = self._backward(dout, (dh_n,))
        return dx, dh0

    def _kernel_forward(self, x, states, w, **kw):
        y, h_T, ws = rnn_forward(
            x,
            states[0],
            w["weight_ih"],
            w["weight_hh"],
            w["bias_ih"],
            w["bias_hh"],
            nonlinearity=self.nonlinearity,
            **kw,
        )
        return y, (h_T,), ws

    def _kernel_backward(self, dy, d_states, ws):
        g = rnn_backward(dy, d_states[0], ws)
        return g, (g.dh0,)

    def _layer_stream(self, layer, batch):
        w = self._weights(layer, 0)
        return _rnn_layer_stream(
            w["weight_ih"],
            w["weight_hh"],
            w["bias_ih"],
            w["bias_hh"],
            self.nonlinearity,
            batch,
            self.precision,
            self.clip,
        )

    def _extra_repr(self):
        return [] if self.nonlinearity == "tanh" else [f"nonlinearity={self.nonlinearity!r}"]


class LSTM(_RNNBase):
    """LSTM (torch's equations and gate order i, f, g, o), optionally with a projection:
    with proj_size = P > 0, ``h_t = (o_t * tanh(c_t)) W_hr^T`` has size P (c_t keeps size H).

    ``out, (h_n, c_n) = lstm(x, (h0, c0)=None, lengths=None)``;
    ``dx, (dh0, dc0) = lstm.backward(dout, (dh_n, dc_n)=None)``; any state may be None.
    ``clip`` as :class:`RNN`'s; ``input_forget=True``: ONNX's coupled gates, ``f = 1 - i`` (the
    forget blocks' parameters are unused and get zero gradients). ``peepholes=True``: ONNX's
    peepholes, a parameter ``weight_peep_l{k}`` (3, H) per layer and direction, rows i, f, o: the
    i and f pre-activations add ``weight_peep[0] * c_{t-1}``, ``weight_peep[1] * c_{t-1}``, the o
    pre-activation ``weight_peep[2] * c_t`` (:func:`rnnkit.lstm_forward`'s ``W_peep``).

    Examples
    --------
    >>> lstm = rnnkit.nn.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0)
    >>> x = np.zeros((7, 2, 3), np.float32)  # (T, B, I)
    >>> out, (h_n, c_n) = lstm(x, lengths=np.array([7, 5]))
    >>> out.shape, h_n.shape, c_n.shape  # (T, B, D*H), (L*D, B, H)
    ((7, 2, 8), (4, 2, 4), (4, 2, 4))
    >>> bool((out[5:, 1] == 0).all())  # past sequence 1's length
    True
    >>> dx, (dh0, dc0) = lstm.backward(np.ones_like(out))
    >>> dx.shape, lstm.weight_hh_l1_reverse.grad.shape
    ((7, 2, 3), (16, 4))
    """

    CELL = LSTM_CELL

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        dtype: npt.DTypeLike = np.float32,
        seed: int | np.random.SeedSequence | None = None,
        precision: str = "float32",
        clip: float | None = None,
        input_forget: bool = False,
        peepholes: bool = False,
    ) -> None:
        # ONNX's coupled input and forget gates: f = 1 - i (the f blocks' parameters unused).
        self.input_forget = v.flag("input_forget", input_forget)
        # ONNX's peepholes: one (3, H) parameter per layer and direction (set before the base
        # class makes the parameters from _shapes).
        self.peepholes = v.flag("peepholes", peepholes)
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            dtype,
            seed,
            precision,
            clip,
        )

    def forward(
        self,
        x: npt.ArrayLike,
        hx: Sequence[npt.ArrayLike | None] | None = None,
        lengths: npt.ArrayLike | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """x (T, B, I) or (B, T, I) batch-first or (T, I); hx = (h0 (L*D, B, H_out),
        c0 (L*D, B, H)), either may be None, or None; lengths (B,) or None.
        Returns ``(out (T, B, D*H_out), (h_n (L*D, B, H_out), c_n (L*D, B, H)))``."""
        out, (h_n, c_n) = self._forward(x, _pair("hx", hx), lengths)
        return out, (h_n, c_n)

    def backward(
        self, dout: npt.ArrayLike | None, dhx: Sequence[npt.ArrayLike | None] | None = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """dout (T, B, D*H_out) like out, or None; dhx = (dh_n, dc_n) shaped like (h_n, c_n),
        (L*D, B, H_out) and (L*D, B, H), either may be None, or None. Adds into every .grad.
        Returns ``(dx, (dh0, dc0))``: dx (T, B, I) like x, dh0 and dc0 like h0 and c0."""
        dx, (dh0, dc0) = self._backward(dout, _pair("dhx", dhx))
        return dx, (dh0, dc0)

    def _kernel_forward(self, x, states, w, **kw):
        proj = {"W_hr": w["weight_hr"]} if self.proj_size else {}
        if self.peepholes:
            proj["W_peep"] = w["weight_peep"]
        y, (h_T, c_T), ws = lstm_forward(
            x,
            states[0],
            states[1],
            w["weight_ih"],
            w["weight_hh"],
            w["bias_ih"],
            w["bias_hh"],
            **proj,
            input_forget=self.input_forget,
            **kw,
        )
        return y, (h_T, c_T), ws

    def _kernel_backward(self, dy, d_states, ws):
        g = lstm_backward(dy, d_states[0], d_states[1], ws)
        return g, (g.dh0, g.dc0)

    def _extra_repr(self):
        return (["input_forget=True"] if self.input_forget else []) + (
            ["peepholes=True"] if self.peepholes else []
        )

    def _layer_stream(self, layer, batch):
        w = self._weights(layer, 0)
        return _lstm_layer_stream(
            w["weight_ih"],
            w["weight_hh"],
            w["bias_ih"],
            w["bias_hh"],
            w["weight_hr"],
            batch,
            self.precision,
            self.clip,
            self.input_forget,
            w["weight_peep"],
        )


def _pair(name, hx):
    """None or a pair (h, c) -> a tuple of two (each possibly None)."""
    if hx is None:
        return (None, None)
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(
            f"{name}: expected a pair (h, c) (either may be None) or None, got "
            f"{type(hx).__name__}" + (f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else "")
        )
    return tuple(hx)


class GRU(_RNNBase):
    """GRU (gate order r, z, n). reset_after=True is torch's form
    ``n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))``; False the textbook form
    ``n = tanh(x W_in^T + b_in + (r * h) W_hn^T + b_hn)`` (same parameters).

    ``out, h_n = gru(x, h0=None, lengths=None)``; ``dx, dh0 = gru.backward(dout, dh_n=None)``.
    """

    CELL = GRU_CELL

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        reset_after: bool = True,
        dtype: npt.DTypeLike = np.float32,
        seed: int | np.random.SeedSequence | None = None,
        precision: str = "float32",
        clip: float | None = None,
    ) -> None:
        self.reset_after = v.flag("reset_after", reset_after)
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,
            dtype,
            seed,
            precision,
            clip,
        )

    def forward(
        self, x: npt.ArrayLike, h0: npt.ArrayLike | None = None, lengths: npt.ArrayLike | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`RNN.forward`: returns ``(out (T, B, D*H), h_n (L*D, B, H))``."""
        out, (h_n,) = self._forward(x, (h0,), lengths)
        return out, h_n

    def backward(
        self, dout: npt.ArrayLike | None, dh_n: npt.ArrayLike | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`RNN.backward`: returns ``(dx like x, dh0 (L*D, B, H))``."""
        dx, (dh0,) = self._backward(dout, (dh_n,))
        return dx, dh0

    def _kernel_forward(self, x, states, w, **kw):
        y, h_T, ws = gru_forward(
            x,
            states[0],
            w["weight_ih"],
            w["weight_hh"],
            w["bias_ih"],
            w["bias_hh"],
            reset_after=self.reset_after,
            **kw,
        )
        return y, (h_T,), ws

    def _kernel_backward(self, dy, d_states, ws):
        g = gru_backward(dy, d_states[0], ws)
        return g, (g.dh0,)

    def _layer_stream(self, layer, batch):
        w = self._weights(layer, 0)
        return _gru_layer_stream(
            w["weight_ih"],
            w["weight_hh"],
            w["bias_ih"],
            w["bias_hh"],
            self.reset_after,
            batch,
            self.precision,
            self.clip,
        )

    def _extra_repr(self):
        return [] if self.reset_after else ["reset_after=False"]


class Stream:
    """Streaming inference over a recurrent module: the sequence arrives in chunks.

    ``stream = module.stream(batch=B)`` (any RNN / LSTM / GRU of one direction: any num_layers,
    LSTM projection, batch_first); ``y = stream(x_chunk)`` with x_chunk (T_chunk, B, I), or
    (B, T_chunk, I) with the module's batch_first, T_chunk >= 1, or a single step (B, I),
    returns the top layer's outputs of that chunk, (T_chunk, B, H_out) / (B, T_chunk, H_out) /
    (B, H_out) like its input, and carries every layer's state to the next call. Over any
    chunking the outputs are bitwise those of one eval-mode ``module(x)`` on the concatenated
    sequence (the kernels compute a step alike whatever the call's length, cpp/driver.hpp); with
    ``precision="bf16"`` they equal it to float32 accumulation error (one sequence call per
    chunk and layer).

    Inference only, whatever the module's mode: no workspace (nothing to backward), no dropout.
    The state starts at zero; ``stream.reset(rows=None)`` zeroes all rows or the given row
    indices (a new utterance in one slot of the batch). ``stream.state`` is a copy shaped like
    the module's final state, h (L, B, H_out), LSTM (h (L, B, H_out), c (L, B, H)); assigning
    it (same shapes and dtype, checked and copied) continues from that state.

    The module's weights are checked and packed (copied) once, when the stream is made: later
    changes to the module's parameters are not seen (make a new stream). Each call checks only
    x's type, dtype and shape, and runs one compiled call per layer (cpp/stream.hpp; above the
    packed-kernel batch limit, one sequence call per layer). Not for several threads at once;
    after Ctrl-C inside a call the state is mid-chunk (reset or set it).

    Examples
    --------
    >>> gru = rnnkit.nn.GRU(3, 4, num_layers=2, seed=0).eval()
    >>> x = np.random.default_rng(0).standard_normal((10, 1, 3)).astype(np.float32)  # (T, B, I)
    >>> whole, _ = gru(x)
    >>> stream = gru.stream(batch=1)
    >>> parts = [stream(x[:4]), stream(x[4]), stream(x[5:])]  # a chunk, one step (B, I), a chunk
    >>> [p.shape for p in parts]
    [(4, 1, 4), (1, 4), (5, 1, 4)]
    >>> bool(np.array_equal(np.concatenate([parts[0], parts[1][None], parts[2]]), whole))
    True
    """

    def __init__(self, module: _RNNBase, batch: int = 1) -> None:
        if not isinstance(module, _RNNBase):
            raise TypeError(f"module: expected an rnnkit.nn RNN, LSTM or GRU, got {type(module).__name__}")
        if module.bidirectional:
            raise ValueError(
                f"{type(module).__name__}.stream: a bidirectional module cannot stream: its "
                "reverse direction starts from the end of the sequence, which a stream has not "
                "seen yet; run forward over the whole sequence instead"
            )
        module._check_parameters()
        self._module = module
        self.batch = v.int_arg("batch", batch)
        self._dtype = module.dtype
        self._I = module.input_size
        self._batch_first = module.batch_first
        self._layers = [module._layer_stream(layer, self.batch) for layer in range(module.num_layers)]
        self._names = module.CELL.state_names
        self._sizes = module._state_sizes()
        self._x_3d = "(B, T_chunk, I)" if self._batch_first else "(T_chunk, B, I)"

    def __call__(self, x: npt.ArrayLike) -> np.ndarray:
        """x_chunk (T_chunk, B, I) / (B, T_chunk, I) batch-first / one step (B, I) -> the top
        layer's outputs of the chunk, shaped like x with H_out for I."""
        if type(x) is not np.ndarray:
            x = v.as_array("x", x)
        if x.dtype != self._dtype:
            raise TypeError(f"x: expected dtype {self._dtype.name} (the module's dtype), got {x.dtype}")
        B, I = self.batch, self._I
        if x.ndim == 2:
            if x.shape != (B, I):
                raise ValueError(f"x: expected shape (B, I) = ({B}, {I}) for one step, got {x.shape}")
            inp = x[None]
        elif x.ndim == 3:
            b_axis = 0 if self._batch_first else 1
            if x.shape[b_axis] != B or x.shape[2] != I or x.shape[1 - b_axis] < 1:
                raise ValueError(
                    f"x: expected shape {self._x_3d} with B = {B}, I = {I}, T_chunk >= 1, got {x.shape}"
                )
            inp = x.transpose(1, 0, 2) if self._batch_first else x
        else:
            raise ValueError(
                f"x: expected 3 dimensions {self._x_3d} or 2 (B, I) (one step), got shape {x.shape}"
            )
        if not inp.flags.c_contiguous:
            inp = np.ascontiguousarray(inp)
        for layer in self._layers:
            inp = layer.run(inp)
        if x.ndim == 2:
            return inp[0]
        return np.ascontiguousarray(inp.transpose(1, 0, 2)) if self._batch_first else inp

    def _arrays(self, k: int) -> list[np.ndarray]:
        """State k (0: h, 1: c) of every layer: the layers' own arrays, (B, size) each."""
        return [layer.h if k == 0 else layer.c for layer in self._layers]  # type: ignore[misc]

    def reset(self, rows: npt.ArrayLike | None = None) -> None:
        """Zero the state of every row (rows None) or of the given row indices, an integer
        array (N,) of rows in [0, B)."""
        idx: Any = slice(None) if rows is None else v.index_array("rows", rows, self.batch)
        for k in range(len(self._names)):
            for a in self._arrays(k):
                a[idx] = 0

    @property
    def state(self) -> Any:
        """A copy of the state: h (L, B, H_out), LSTM (h (L, B, H_out), c (L, B, H))."""
        stacked = tuple(np.stack(self._arrays(k)) for k in range(len(self._names)))
        return stacked[0] if len(stacked) == 1 else stacked

    @state.setter
    def state(self, value: Any) -> None:
        names = self._names
        given = (value,) if len(names) == 1 else _pair("state", value)
        L, B = len(self._layers), self.batch
        checked = []
        for n, s, size in zip(names, given, self._sizes):
            if s is None:
                raise TypeError(f"state: {n} is None; expected an array (use reset() for zeros)")
            s = v.as_array(n, s)
            if s.dtype != self._dtype:
                raise TypeError(f"{n}: expected dtype {self._dtype.name} (the module's dtype), got {s.dtype}")
            letter = "H" if size == self._module.hidden_size else "P"
            v.check_shape(n, s, (L, B, size), f"(num_layers, B, {letter})")
            checked.append(s)
        for k, s in enumerate(checked):  # all checked first: a bad c leaves h alone
            for layer, a in enumerate(self._arrays(k)):
                a[...] = s[layer]

    def __repr__(self) -> str:
        return f"Stream({type(self._module).__name__}, batch={self.batch})"


_MODULES: dict[str, type[RNN] | type[LSTM] | type[GRU]] = {
    RNN.CELL.name: RNN,
    LSTM.CELL.name: LSTM,
    GRU.CELL.name: GRU,
}
assert set(_MODULES) == set(CELLS), "every family of the cell table has its module class"

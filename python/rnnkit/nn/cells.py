"""Single-step recurrent cells with torch.nn's interface: ``RNNCell``, ``LSTMCell``, ``GRUCell``.

Each cell takes torch.nn's constructor arguments (``input_size, hidden_size, bias=True``, the
RNN's ``nonlinearity``), has torch's parameter names and layouts (``weight_ih (G*H, I)``,
``weight_hh (G*H, H)``, ``bias_ih``, ``bias_hh (G*H,)``), so ``cell.load_state_dict(
torch_cell.state_dict())`` loads unchanged, and computes one time step as torch's cells do::

    cell = rnnkit.nn.LSTMCell(10, 20, seed=0)
    h, c = cell(x, (h, c))                       # x (B, 10), h and c (B, 20); None: zeros
    dx, (dh, dc) = cell.backward(dh_next, dc_next)  # adds into every parameter's .grad

Shape letters: B batch size, I input size, H hidden size, G gate blocks (1 RNN, 4 LSTM in order
i, f, g, o, 3 GRU in order r, z, n). x is (B, I) with states (B, H), or unbatched (I,) with
states (H,) and results unbatched too.

A step is the fused sequence kernel of :mod:`rnnkit.ops.recurrent` with T = 1. Training mode
(the default) keeps the last forward's workspace (per thread) for :meth:`backward`, which may be
called more than once (each call adds its gradients); the workspace refers to the input and the
weight arrays, so modifying those in place before backward makes backward raise ValueError.
``eval()`` keeps nothing and runs the kernels' inference path, with the same results bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from .. import _validate as v
from .._cells import CELLS, GRU_CELL, LSTM_CELL, RNN_CELL, Cell
from ..ops.recurrent import (
    Workspace,
    gru_backward,
    gru_forward,
    lstm_backward,
    lstm_forward,
    rnn_backward,
    rnn_forward,
)
from .module import Module, Parameter
from .recurrent import _pair

__all__ = ["RNNCell", "LSTMCell", "GRUCell"]

# Parameter names in torch's order, and the field of the kernels' backward NamedTuple holding
# each one's gradient.
_GRAD_FIELD = {"weight_ih": "dW_ih", "weight_hh": "dW_hh", "bias_ih": "db_ih", "bias_hh": "db_hh"}


class _CellBase(Module):
    """Shared logic of RNNCell, LSTMCell and GRUCell. Subclasses set ``CELL`` (their row of the
    cell table) and implement ``_kernel_forward`` / ``_kernel_backward``."""

    CELL: ClassVar[Cell]

    def __init__(self, input_size, hidden_size, bias, dtype, seed, precision="float32"):
        self.input_size = v.int_arg("input_size", input_size)
        self.hidden_size = v.int_arg("hidden_size", hidden_size)
        self.bias = v.flag("bias", bias)
        self.dtype = v.dtype_arg(dtype)
        self.precision = v.precision(precision, self.dtype)  # as nn.RNN's
        G = self.CELL.gates
        v.check_rnn_module_sizes(
            type(self).__name__, G, self.input_size, self.hidden_size, 1, 1, 0, self.bias, self.dtype
        )
        self.training = True
        # Module._cache (per thread): the last training forward's (workspace, B, unbatched)
        rng = np.random.default_rng(seed)
        bound = 1 / np.sqrt(self.hidden_size)
        self._params: dict[str, Parameter] = {}
        for name, (shape, symbolic) in self._shapes().items():
            self._param(name, rng.uniform(-bound, bound, shape).astype(self.dtype), symbolic)

    def _shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """name -> (shape, symbolic shape) of the parameters, in torch's order."""
        G, H, I = self.CELL.gates, self.hidden_size, self.input_size
        gh = f"{G}*H" if G > 1 else "H"
        shapes: dict[str, tuple[tuple[int, ...], str]] = {
            "weight_ih": ((G * H, I), f"({gh}, I)"),
            "weight_hh": ((G * H, H), f"({gh}, H)"),
        }
        if self.bias:
            shapes["bias_ih"] = ((G * H,), f"({gh},)")
            shapes["bias_hh"] = ((G * H,), f"({gh},)")
        return shapes

    def _weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(W_ih, W_hh, b_ih, b_hh) for the kernels; absent biases are None."""
        p = self._params
        return (
            p["weight_ih"].data,
            p["weight_hh"].data,
            p["bias_ih"].data if self.bias else None,
            p["bias_hh"].data if self.bias else None,
        )

    # One step through the kernels, defined by each family's class: (x (1, B, I), states (B, H)
    # or None, training) -> (next states, workspace); (d_states, ws) -> (grads, state grads).
    _kernel_forward: Callable[..., tuple[tuple[np.ndarray, ...], Workspace | None]]
    _kernel_backward: Callable[..., tuple[Any, tuple[np.ndarray, ...]]]

    # ------------------------------------------------------------------ forward / backward

    def _forward(self, x, states):
        """x (B, I) or unbatched (I,); states: one array or None per state ((B, H) or (H,)).
        Returns the tuple of next states, shaped like x's batch."""
        self._cache = None  # free the previous workspace before making a new one
        self._check_parameters()
        x = self._check_input("x", x)
        if x.ndim not in (1, 2):
            raise ValueError(f"x: expected 2 dimensions (B, I) or 1 (I,) (unbatched), got shape {x.shape}")
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"x: expected input size I = {self.input_size} (last dimension), got shape {x.shape}"
            )
        unbatched = x.ndim == 1
        B = 1 if unbatched else x.shape[0]
        states = [self._check_state(n, s, B, unbatched) for n, s in zip(self.CELL.state_names, states)]
        x3 = x[None, None] if unbatched else x[None]  # (1, B, I)
        nxt, ws = self._kernel_forward(x3, states, self.training)
        if self.training:
            self._cache = (ws, B, unbatched)
        return tuple(s[0] if unbatched else s for s in nxt)

    def _backward(self, d_next):
        """d_next: one array or None per next state. Adds the parameter gradients into .grad;
        returns (dx, tuple of the incoming states' gradients), shaped like the forward's."""
        ws, B, unbatched = self._need_cache()
        d_states = [
            self._check_state(f"d{n}_next", d, B, unbatched) for n, d in zip(self.CELL.state_names, d_next)
        ]
        g, d_prev = self._kernel_backward(d_states, ws)
        for name, p in self._params.items():
            p.accumulate(getattr(g, _GRAD_FIELD[name]))
        dx = g.dx[0]  # (B, I)
        if unbatched:
            return dx[0], tuple(d[0] for d in d_prev)
        return dx, d_prev

    # ------------------------------------------------------------------ checks

    def _check_state(self, name, s, B, unbatched):
        """None, or a (B, H) array of the module's dtype ((H,) unbatched), returned as (B, H)."""
        if s is None:
            return None
        s = self._check_input(name, s)
        if unbatched:
            v.check_shape(name, s, (self.hidden_size,), "(H,)")
            return s[None]
        v.check_shape(name, s, (B, self.hidden_size), "(B, H)")
        return s

    def _check_parameters(self):
        """Parameters may have been reassigned by the user: check dtype and shape by name."""
        for name, (shape, symbolic) in self._shapes().items():
            p = self._params[name]
            if not isinstance(p.data, np.ndarray) or p.data.dtype != self.dtype:
                raise TypeError(
                    f"{p.name}: expected a {self.dtype.name} numpy array, got {type(p.data).__name__} "
                    f"of dtype {getattr(p.data, 'dtype', None)}"
                )
            v.check_shape(p.name, p.data, shape, symbolic)

    def __repr__(self) -> str:
        args = [str(self.input_size), str(self.hidden_size)]
        if not self.bias:
            args.append("bias=False")
        args += self._extra_repr()
        if self.dtype != np.float32:
            args.append(f"dtype={self.dtype.name}")
        if self.precision != "float32":
            args.append(f"precision={self.precision!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    def _extra_repr(self) -> list[str]:
        return []


class RNNCell(_CellBase):
    """Elman RNN cell, ``h_next = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``, act tanh or relu.

    ``h_next = cell(x, h=None)``; ``dx, dh = cell.backward(dh_next)``.
    """

    CELL = RNN_CELL

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        *,
        dtype: npt.DTypeLike = np.float32,
        seed: int | np.random.SeedSequence | None = None,
        precision: str = "float32",
    ) -> None:
        self.nonlinearity = v.choice("nonlinearity", nonlinearity, RNN_CELL.options["nonlinearity"])
        super().__init__(input_size, hidden_size, bias, dtype, seed, precision)

    def forward(self, x: npt.ArrayLike, h: npt.ArrayLike | None = None) -> np.ndarray:
        """x (B, I) or (I,); h (B, H) or (H,), or None (zeros). Returns h_next (B, H) or (H,)."""
        (h_next,) = self._forward(x, (h,))
        return h_next

    def backward(self, dh_next: npt.ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
        """dh_next (B, H) or (H,), like h_next, or None (zero). Adds into every .grad.
        Returns ``(dx, dh)``: dx (B, I) or (I,) like x, dh (B, H) or (H,) like h_next."""
        dx, (dh,) = self._backward((dh_next,))
        return dx, dh

    def _kernel_forward(self, x, states, training):
        _, h_next, ws = rnn_forward(
            x,
            states[0],
            *self._weights(),
            nonlinearity=self.nonlinearity,
            training=training,
            precision=self.precision,
        )
        return (h_next,), ws

    def _kernel_backward(self, d_states, ws):
        g = rnn_backward(None, d_states[0], ws)
        return g, (g.dh0,)

    def _extra_repr(self):
        return [] if self.nonlinearity == "tanh" else [f"nonlinearity={self.nonlinearity!r}"]


class LSTMCell(_CellBase):
    """LSTM cell (torch's equations, gate order i, f, g, o):
    ``c_next = f c + i g``, ``h_next = o tanh(c_next)``.

    ``h_next, c_next = cell(x, (h, c)=None)``; ``dx, (dh, dc) = cell.backward(dh_next, dc_next)``;
    any state or gradient may be None.
    """

    CELL = LSTM_CELL

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        dtype: npt.DTypeLike = np.float32,
        seed: int | np.random.SeedSequence | None = None,
        precision: str = "float32",
    ) -> None:
        super().__init__(input_size, hidden_size, bias, dtype, seed, precision)

    def forward(
        self, x: npt.ArrayLike, hx: Sequence[npt.ArrayLike | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """x (B, I) or (I,); hx = (h, c), each (B, H) or (H,) or None, or None (zeros).
        Returns ``(h_next, c_next)``, each (B, H) or (H,)."""
        h_next, c_next = self._forward(x, _pair("hx", hx))
        return h_next, c_next

    def backward(
        self, dh_next: npt.ArrayLike | None, dc_next: npt.ArrayLike | None = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """dh_next, dc_next (B, H) or (H,), like h_next and c_next, either may be None (zero).
        Adds into every .grad. Returns ``(dx, (dh, dc))``: dx (B, I) or (I,) like x, dh and dc
        (B, H) or (H,) like h_next and c_next."""
        dx, (dh, dc) = self._backward((dh_next, dc_next))
        return dx, (dh, dc)

    def _kernel_forward(self, x, states, training):
        _, (h_next, c_next), ws = lstm_forward(
            x, states[0], states[1], *self._weights(), training=training, precision=self.precision
        )
        return (h_next, c_next), ws

    def _kernel_backward(self, d_states, ws):
        g = lstm_backward(None, d_states[0], d_states[1], ws)
        return g, (g.dh0, g.dc0)


class GRUCell(_CellBase):
    """GRU cell (gate order r, z, n), ``h_next = (1 - z) n + z h``. reset_after=True is torch's
    form ``n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))``; False the textbook form
    ``n = tanh(x W_in^T + b_in + (r * h) W_hn^T + b_hn)`` (same parameters).

    ``h_next = cell(x, h=None)``; ``dx, dh = cell.backward(dh_next)``.
    """

    CELL = GRU_CELL

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        reset_after: bool = True,
        dtype: npt.DTypeLike = np.float32,
        seed: int | np.random.SeedSequence | None = None,
        precision: str = "float32",
    ) -> None:
        self.reset_after = v.flag("reset_after", reset_after)
        super().__init__(input_size, hidden_size, bias, dtype, seed, precision)

    def forward(self, x: npt.ArrayLike, h: npt.ArrayLike | None = None) -> np.ndarray:
        """As :meth:`RNNCell.forward`: returns h_next (B, H) or (H,)."""
        (h_next,) = self._forward(x, (h,))
        return h_next

    def backward(self, dh_next: npt.ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`RNNCell.backward`: dh_next (B, H) or (H,), or None; returns ``(dx, dh)``,
        dx (B, I) or (I,) like x, dh (B, H) or (H,) like h_next."""
        dx, (dh,) = self._backward((dh_next,))
        return dx, dh

    def _kernel_forward(self, x, states, training):
        _, h_next, ws = gru_forward(
            x,
            states[0],
            *self._weights(),
            reset_after=self.reset_after,
            training=training,
            precision=self.precision,
        )
        return (h_next,), ws

    def _kernel_backward(self, d_states, ws):
        g = gru_backward(None, d_states[0], ws)
        return g, (g.dh0,)

    def _extra_repr(self):
        return [] if self.reset_after else ["reset_after=False"]


_CELL_MODULES: dict[str, type[_CellBase]] = {c.CELL.name: c for c in (RNNCell, LSTMCell, GRUCell)}
assert set(_CELL_MODULES) == set(CELLS), "every family of the cell table has its cell module"

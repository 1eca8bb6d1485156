"""Multi-layer, optionally bidirectional recurrent modules with torch.nn's interface.

``RNN``, ``LSTM`` and ``GRU`` take torch.nn's constructor arguments, use torch's parameter names
(``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0``, ...) and layouts, so a torch
``state_dict`` loads unchanged, and compute what torch computes. Each module is a thin loop over
layers and directions around the fused C++ kernels of :mod:`rnnkit.recurrent`; backward is
explicit::

    lstm = rnnkit.nn.LSTM(10, 20, num_layers=2, bidirectional=True, seed=0)
    out, (h_n, c_n) = lstm(x, lengths=lengths)         # x (T, B, 10)
    dx, (dh0, dc0) = lstm.backward(dout, (dh_n, None))  # adds into every parameter's .grad

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

import numbers
import warnings

import numpy as np

from . import _validate as v
from .recurrent import (gru_backward, gru_forward, lstm_backward, lstm_forward, rnn_backward,
                        rnn_forward)

__all__ = ["Parameter", "RNN", "LSTM", "GRU"]

# Parameter kinds in torch's order within one layer and direction, and the field of the
# kernels' backward NamedTuple holding each one's gradient.
_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
_GRAD_FIELD = {"weight_ih": "dW_ih", "weight_hh": "dW_hh", "bias_ih": "db_ih",
               "bias_hh": "db_hh", "weight_hr": "dW_hr"}


class Parameter:
    """A named trainable array: ``data`` and its gradient ``grad`` (zeros, same shape/dtype)."""

    __slots__ = ("name", "data", "grad")

    def __init__(self, name, data):
        self.name = name
        self.data = data
        self.grad = np.zeros_like(data)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={self.data.shape}, dtype={self.data.dtype.name})"


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


class _RNNBase:
    """Shared logic of RNN, LSTM and GRU. Subclasses set ``_gates`` and ``_state_names`` and
    implement ``_kernel_forward`` / ``_kernel_backward`` (one layer, one direction)."""

    _gates: int  # gate blocks G: 1 RNN, 4 LSTM, 3 GRU
    _state_names: tuple  # ("h",) or ("h", "c")

    def __init__(self, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                 bidirectional, proj_size, dtype, seed):
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        self.bias = v.flag("bias", bias)
        self.batch_first = v.flag("batch_first", batch_first)
        self.bidirectional = v.flag("bidirectional", bidirectional)
        self.proj_size = _positive_int("proj_size", proj_size, minimum=0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size: expected 0 (no projection) or less than hidden_size = "
                             f"{self.hidden_size}, got {self.proj_size}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) \
                or not 0 <= dropout <= 1:
            raise ValueError(f"dropout: expected a probability in [0, 1], got {dropout!r}")
        self.dropout = float(dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(f"dropout={self.dropout} has no effect with num_layers=1: dropout acts "
                          "on the output of every layer but the last", stacklevel=3)
        self.dtype = np.dtype(dtype)
        if self.dtype not in v.FLOAT_DTYPES:
            raise TypeError(f"dtype: expected float32 or float64, got {self.dtype}")
        v.check_rnn_module_sizes(type(self).__name__, self._gates, self.input_size,
                                 self.hidden_size, self.num_layers, self.num_directions,
                                 self.proj_size, self.bias, self.dtype)
        self.training = True
        self._rng = np.random.default_rng(seed)  # initialisation, then dropout masks
        self._cache = None  # what the last training forward saved for backward
        self._params = {}  # name -> Parameter, in torch's order
        self._symbolic = {}  # name -> symbolic shape for error messages, e.g. "(4*H, D*H)"
        bound = 1 / np.sqrt(self.hidden_size)
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                for kind, (shape, symbolic) in self._shapes(layer).items():
                    name = self._name(kind, layer, direction)
                    data = self._rng.uniform(-bound, bound, shape).astype(self.dtype)
                    self._params[name] = Parameter(name, data)
                    self._symbolic[name] = symbolic

    # ------------------------------------------------------------------ structure

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def _out_size(self):
        """H_out: the size of h (and of each direction's output)."""
        return self.proj_size or self.hidden_size

    def _state_sizes(self):
        """Size of each recurrent state: (H_out,) or, for the LSTM, (H_out, H)."""
        return (self._out_size, self.hidden_size)[:len(self._state_names)]

    def _shapes(self, layer):
        """kind -> (shape, symbolic shape) of one direction's parameters of ``layer``."""
        G, H, D = self._gates, self.hidden_size, self.num_directions
        gh = f"{G}*H" if G > 1 else "H"
        h_out = "P" if self.proj_size else "H"
        if layer == 0:
            n_in, sym_in = self.input_size, "I"
        else:
            n_in, sym_in = D * self._out_size, f"D*{h_out}" if D > 1 else h_out
        shapes = {"weight_ih": ((G * H, n_in), f"({gh}, {sym_in})"),
                  "weight_hh": ((G * H, self._out_size), f"({gh}, {h_out})")}
        if self.bias:
            shapes["bias_ih"] = ((G * H,), f"({gh},)")
            shapes["bias_hh"] = ((G * H,), f"({gh},)")
        if self.proj_size:
            shapes["weight_hr"] = ((self.proj_size, H), "(P, H)")
        return shapes

    @staticmethod
    def _name(kind, layer, direction):
        return f"{kind}_l{layer}" + ("_reverse" if direction else "")

    def _weights(self, layer, direction):
        """kind -> array for the kernels; absent biases / projection are None."""
        names = {kind: self._name(kind, layer, direction) for kind in _KINDS}
        return {kind: self._params[n].data if n in self._params else None
                for kind, n in names.items()}

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def __getattr__(self, name):  # torch-style access: lstm.weight_hh_l0
        params = self.__dict__.get("_params", {})
        if name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    # ------------------------------------------------------------------ parameters

    def named_parameters(self):
        """[(name, Parameter)] in torch's order."""
        return list(self._params.items())

    def parameters(self):
        """[Parameter] in torch's order."""
        return list(self._params.values())

    def zero_grad(self):
        """Set every parameter's .grad to zero (in place)."""
        for p in self._params.values():
            p.grad[...] = 0

    def state_dict(self):
        """{name: copy of the parameter's array}, torch's names and order."""
        return {name: p.data.copy() for name, p in self._params.items()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays (anything np.asarray accepts, e.g. torch tensors) into the parameters,
        converted to the module's dtype. All entries are checked before any is loaded.

        strict: the keys must be exactly the module's (else ValueError listing the missing and
        unexpected ones); with strict=False those are ignored. Returns
        ``(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict: expected a mapping of names to arrays, got "
                            f"{type(state_dict).__name__}")
        missing = [k for k in self._params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in self._params]
        if strict and (missing or unexpected):
            raise ValueError(f"state_dict: keys do not match {type(self).__name__}'s parameters;"
                             f" missing keys: {missing}, unexpected keys: {unexpected}")
        loaded = {}
        for name, p in self._params.items():
            if name not in state_dict:
                continue
            arr = np.asarray(state_dict[name])
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise TypeError(f"{name}: expected a real-valued array, got dtype {arr.dtype}")
            v.check_shape(name, arr, p.data.shape, self._symbolic[name])
            loaded[name] = np.array(arr, dtype=self.dtype, copy=True, order="C")
        for name, arr in loaded.items():
            self._params[name].data = arr  # fresh arrays: a pending workspace stays consistent
        return missing, unexpected

    # ------------------------------------------------------------------ modes

    def train(self, mode=True):
        """Training mode (mode=True): keep workspaces for backward, apply dropout."""
        self.training = v.flag("mode", mode)
        if not self.training:
            self._cache = None
        return self

    def eval(self):
        """Inference mode: no workspaces (backward raises), no dropout."""
        return self.train(False)

    # ------------------------------------------------------------------ forward / backward

    def _forward(self, x, states, lengths):
        """x (T, B, I) or (B, T, I) or unbatched (T, I); states: one array or None per state
        (each (L*D, B, size) or unbatched (L*D, size)). Returns (out, tuple of final states)."""
        self._cache = None  # free the previous workspaces before making new ones
        self._check_parameters()
        x = np.asarray(x)
        self._check_dtype("x", x)
        user_shape = x.shape
        if x.ndim not in (2, 3):
            raise ValueError(f"x: expected 3 dimensions {self._x_symbolic()} or 2 (T, I) "
                             f"(unbatched), got shape {x.shape}")
        unbatched = x.ndim == 2
        if unbatched:
            if lengths is not None:
                raise ValueError("lengths: not supported with unbatched input x (T, I); "
                                 "use x of shape (T, 1, I)")
            x = x[:, None]  # (T, 1, I)
        elif self.batch_first:
            x = x.transpose(1, 0, 2)  # (B, T, I) -> (T, B, I)
        T, B, I = x.shape
        if I != self.input_size:
            raise ValueError(f"x: expected input size I = {self.input_size} (last dimension), "
                             f"got shape {user_shape}")
        lengths = v.lengths_array(lengths, T, B)
        states = [self._check_state(n + "0", s, size, B, unbatched)
                  for n, s, size in zip(self._state_names, states, self._state_sizes())]

        D, L = self.num_directions, self.num_layers
        use_dropout = self.training and self.dropout > 0
        finals = [[] for _ in states]  # per state: L*D arrays (B, size)
        layers = []  # per layer: (workspaces per direction, dropout mask or None)
        inp = x  # (T, B, I), then (T, B, D*H_out)
        for layer in range(L):
            ys, workspaces = [], []
            for d in range(D):
                k = layer * D + d
                y, final, ws = self._kernel_forward(
                    inp, [None if s is None else s[k] for s in states], self._weights(layer, d),
                    reverse=bool(d), lengths=lengths, training=self.training)
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
        finals = [np.stack(f) for f in finals]  # each (L*D, B, size)
        return self._to_user(out, unbatched), tuple(self._state_to_user(f, unbatched)
                                                    for f in finals)

    def _backward(self, dout, d_states):
        """dout like out (or None); d_states: one array or None per final state.
        Adds the parameter gradients into .grad; returns (dx, tuple of initial-state grads)."""
        if not self.training:
            raise RuntimeError(f"{type(self).__name__}.backward: the module is in eval mode, "
                               "which keeps no workspace; call train() and run forward again")
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward: no forward to differentiate; "
                               "run forward in training mode first")
        cache = self._cache
        T, B = cache["shape"]
        unbatched = cache["unbatched"]
        D, L, H_out = self.num_directions, self.num_layers, self._out_size
        if dout is not None:
            dout = np.asarray(dout)
            self._check_dtype("dout", dout)
            if unbatched:
                v.check_shape("dout", dout, (T, D * H_out), "(T, D*H_out)")
                dout = dout[:, None]
            elif self.batch_first:
                v.check_shape("dout", dout, (B, T, D * H_out), "(B, T, D*H_out)")
                dout = dout.transpose(1, 0, 2)
            else:
                v.check_shape("dout", dout, (T, B, D * H_out), "(T, B, D*H_out)")
        d_states = [self._check_state(n, s, size, B, unbatched)
                    for n, s, size in zip(("d" + n + "_n" for n in self._state_names),
                                          d_states, self._state_sizes())]

        d_init = [np.zeros((L * D, B, size), self.dtype) for size in self._state_sizes()]
        d_out = dout  # gradient w.r.t. the current layer's output (T, B, D*H_out), or None
        for layer in reversed(range(L)):
            workspaces, mask = cache["layers"][layer]
            if mask is not None and d_out is not None:
                d_out = d_out * mask
            d_in = None  # gradient w.r.t. the layer's input, summed over directions
            for d in range(D):
                k = layer * D + d
                dy = None if d_out is None else d_out[:, :, d * H_out:(d + 1) * H_out]
                g, d_first = self._kernel_backward(
                    dy, [None if s is None else s[k] for s in d_states], workspaces[d])
                for kind in self._shapes(layer):
                    self._params[self._name(kind, layer, d)].grad += getattr(g, _GRAD_FIELD[kind])
                for acc, s in zip(d_init, d_first):
                    acc[k] = s
                d_in = g.dx if d_in is None else d_in + g.dx
            d_out = d_in
        return self._to_user(d_out, unbatched), tuple(self._state_to_user(s, unbatched)
                                                      for s in d_init)

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
            raise TypeError(f"{name}: expected dtype {self.dtype.name} (the module's dtype), got "
                            f"{a.dtype}")

    def _check_state(self, name, s, size, B, unbatched):
        """None, or a state-shaped array of the module dtype; returned as (L*D, B, size)."""
        if s is None:
            return None
        s = np.asarray(s)
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
                        raise TypeError(f"{p.name}: expected a {self.dtype.name} numpy array, "
                                        f"got {type(p.data).__name__} of dtype "
                                        f"{getattr(p.data, 'dtype', None)}")
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
        for name, default in (("num_layers", 1), ("bias", True), ("batch_first", False),
                              ("dropout", 0.0), ("bidirectional", False), ("proj_size", 0)):
            if getattr(self, name) != default:
                args.append(f"{name}={getattr(self, name)}")
        args += self._extra_repr()
        if self.dtype != np.float32:
            args.append(f"dtype={self.dtype.name}")
        return f"{type(self).__name__}({', '.join(args)})"

    def _extra_repr(self):
        return []


class RNN(_RNNBase):
    """Elman RNN, ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``, act tanh or relu.

    ``out, h_n = rnn(x, h0=None, lengths=None)``; ``dx, dh0 = rnn.backward(dout, dh_n=None)``.
    """

    _gates = 1
    _state_names = ("h",)

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, *, dtype=np.float32,
                 seed=None):
        self.nonlinearity = v.choice("nonlinearity", nonlinearity, ("tanh", "relu"))
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, dtype, seed)

    def forward(self, x, h0=None, lengths=None):
        """x (T, B, I) or (B, T, I) batch-first or (T, I); h0 (L*D, B, H) or None;
        lengths (B,) or None. Returns ``(out (T, B, D*H), h_n (L*D, B, H))``."""
        out, (h_n,) = self._forward(x, (h0,), lengths)
        return out, h_n

    def backward(self, dout, dh_n=None):
        """dout like out, or None; dh_n (L*D, B, H) or None. Adds into every .grad.
        Returns ``(dx like x, dh0 (L*D, B, H))``."""
        dx, (dh0,) = self._backward(dout, (dh_n,))
        return dx, dh0

    def _kernel_forward(self, x, states, w, **kw):
        y, h_T, ws = rnn_forward(x, states[0], w["weight_ih"], w["weight_hh"], w["bias_ih"],
                                 w["bias_hh"], nonlinearity=self.nonlinearity, **kw)
        return y, (h_T,), ws

    def _kernel_backward(self, dy, d_states, ws):
        g = rnn_backward(dy, d_states[0], ws)
        return g, (g.dh0,)

    def _extra_repr(self):
        return [] if self.nonlinearity == "tanh" else [f"nonlinearity={self.nonlinearity!r}"]


class LSTM(_RNNBase):
    """LSTM (torch's equations and gate order i, f, g, o), optionally with a projection:
    with proj_size = P > 0, ``h_t = (o_t * tanh(c_t)) W_hr^T`` has size P (c_t keeps size H).

    ``out, (h_n, c_n) = lstm(x, (h0, c0)=None, lengths=None)``;
    ``dx, (dh0, dc0) = lstm.backward(dout, (dh_n, dc_n)=None)``; any state may be None.
    """

    _gates = 4
    _state_names = ("h", "c")

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, *, dtype=np.float32, seed=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, dtype, seed)

    def forward(self, x, hx=None, lengths=None):
        """x (T, B, I) or (B, T, I) batch-first or (T, I); hx = (h0 (L*D, B, H_out),
        c0 (L*D, B, H)), either may be None, or None; lengths (B,) or None.
        Returns ``(out (T, B, D*H_out), (h_n (L*D, B, H_out), c_n (L*D, B, H)))``."""
        out, (h_n, c_n) = self._forward(x, _pair("hx", hx), lengths)
        return out, (h_n, c_n)

    def backward(self, dout, dhx=None):
        """dout like out, or None; dhx = (dh_n, dc_n) shaped like (h_n, c_n), either may be
        None, or None. Adds into every .grad. Returns ``(dx like x, (dh0, dc0))``."""
        dx, (dh0, dc0) = self._backward(dout, _pair("dhx", dhx))
        return dx, (dh0, dc0)

    def _kernel_forward(self, x, states, w, **kw):
        proj = {"W_hr": w["weight_hr"]} if self.proj_size else {}
        y, (h_T, c_T), ws = lstm_forward(x, states[0], states[1], w["weight_ih"], w["weight_hh"],
                                         w["bias_ih"], w["bias_hh"], **proj, **kw)
        return y, (h_T, c_T), ws

    def _kernel_backward(self, dy, d_states, ws):
        g = lstm_backward(dy, d_states[0], d_states[1], ws)
        return g, (g.dh0, g.dc0)


def _pair(name, hx):
    """None or a pair (h, c) -> a tuple of two (each possibly None)."""
    if hx is None:
        return (None, None)
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"{name}: expected a pair (h, c) (either may be None) or None, got "
                        f"{type(hx).__name__}" + (f" of length {len(hx)}"
                                                  if isinstance(hx, (tuple, list)) else ""))
    return tuple(hx)


class GRU(_RNNBase):
    """GRU (gate order r, z, n). reset_after=True is torch's form
    ``n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))``; False the textbook form
    ``n = tanh(x W_in^T + b_in + (r * h) W_hn^T + b_hn)`` (same parameters).

    ``out, h_n = gru(x, h0=None, lengths=None)``; ``dx, dh0 = gru.backward(dout, dh_n=None)``.
    """

    _gates = 3
    _state_names = ("h",)

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, reset_after=True, dtype=np.float32,
                 seed=None):
        self.reset_after = v.flag("reset_after", reset_after)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, dtype, seed)

    def forward(self, x, h0=None, lengths=None):
        """As :meth:`RNN.forward`: returns ``(out (T, B, D*H), h_n (L*D, B, H))``."""
        out, (h_n,) = self._forward(x, (h0,), lengths)
        return out, h_n

    def backward(self, dout, dh_n=None):
        """As :meth:`RNN.backward`: returns ``(dx like x, dh0 (L*D, B, H))``."""
        dx, (dh0,) = self._backward(dout, (dh_n,))
        return dx, dh0

    def _kernel_forward(self, x, states, w, **kw):
        y, h_T, ws = gru_forward(x, states[0], w["weight_ih"], w["weight_hh"], w["bias_ih"],
                                 w["bias_hh"], reset_after=self.reset_after, **kw)
        return y, (h_T,), ws

    def _kernel_backward(self, dy, d_states, ws):
        g = gru_backward(dy, d_states[0], ws)
        return g, (g.dh0,)

    def _extra_repr(self):
        return [] if self.reset_after else ["reset_after=False"]


# The feed-forward building blocks live in layers.py (they need Parameter from here); they are
# part of rnnkit.nn too.
from .layers import CrossEntropyLoss, Dropout, Embedding, Linear, MSELoss  # noqa: E402

__all__ += ["Linear", "Embedding", "Dropout", "CrossEntropyLoss", "MSELoss"]

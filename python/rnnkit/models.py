"""Models built from rnnkit's modules.

* :class:`OutputRecurrentRNN` -- recurrence from the previous *target* (or output) to the
  hidden state instead of hidden to hidden::

      h_t = tanh(b + x_t W^T + y_{t-1} U^T),      o_t = h_t V^T + c

  With teacher forcing the ground truth y_{t-1} is the input at step t, so all T steps are
  independent: training is a few batched GEMMs over T*B rows with no loop over time.
  :meth:`~OutputRecurrentRNN.generate` runs open-loop on the model's own outputs.
* :class:`RecurrentDecoder` -- the hidden-recurrent counterpart (an rnnkit.nn RNN/LSTM/GRU
  fed the previous target): same interface, used as the benchmark baseline and with
  scheduled sampling.
* :class:`SequenceRegressor` / :class:`SequenceClassifier` -- an rnnkit.nn recurrent module
  plus a :class:`~rnnkit.layers.Linear` head, many-to-one (from each sequence's last state)
  or many-to-many.

Step protocol (used by :mod:`rnnkit.sampling` for scheduled sampling; implemented by
OutputRecurrentRNN and RecurrentDecoder): ``discrete``; ``initial_state(B)``;
``start_input(B, start)``; ``step(prev, x_t, state) -> (out_t, state, cache)``;
``step_backward(dout_t, dstate, cache) -> (dprev, dx_t, dstate)`` (adds into the ``.grad``
of the parameters; ``dprev`` is None for token inputs); ``feedback(out_t, rng, greedy,
temperature)`` -> the next input made from an output.

Shape letters: T time steps, B batch, I input size (of the optional extra input x), H hidden
size, V vocabulary size (token targets), O output size (real-valued targets), E embedding
size. Token targets are integer arrays (T, B); real-valued targets are (T, B, O).

Teacher-forced training and open-loop generation::

    model = OutputRecurrentRNN(256, vocab_size=V, embedding_dim=64, seed=0)
    ce, opt = rnnkit.nn.CrossEntropyLoss(), rnnkit.optim.Adam(model, lr=1e-3)
    opt.zero_grad()
    logits = model(model.teacher_inputs(y))    # y (T, B) -> logits (T, B, V), no time loop
    loss = ce(logits, y)
    model.backward(ce.backward())
    opt.step()
    tokens = model.generate(50, batch_size=4, greedy=False, temperature=0.8, seed=1)
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _validate as v
from . import nn
from .layers import (CrossEntropyLoss, Embedding, Linear, Module, MSELoss, _dtype_arg,
                     _index_array, _int_arg, scatter_add_rows)
from .recurrent import (gru_cell_backward, gru_cell_forward, lstm_cell_backward,
                        lstm_cell_forward, rnn_cell_backward, rnn_cell_forward)

__all__ = ["OutputRecurrentRNN", "RecurrentDecoder", "SequenceRegressor", "SequenceClassifier",
           "Seq2Seq", "shift_right", "sample_tokens"]


def _seeds(seed, n):
    """n independent integer seeds derived from ``seed`` (None stays random)."""
    ss = np.random.SeedSequence(seed)
    return [int(s.generate_state(1, np.uint64)[0]) for s in ss.spawn(n)]


def sample_tokens(logits, rng=None, *, greedy=True, temperature=1.0):
    """Tokens (B,) from logits (B, V): argmax if greedy, else one draw per row from
    softmax(logits / temperature) (vectorised inverse-CDF sampling with ``rng``)."""
    if greedy:
        return np.argmax(logits, axis=-1).astype(np.int64)
    if not temperature > 0:
        raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
    z = logits.astype(np.float64) / float(temperature)
    z -= z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    cdf = np.cumsum(p, axis=-1)
    u = rng.random(logits.shape[:-1] + (1,)) * cdf[..., -1:]
    tok = (cdf <= u).sum(axis=-1)
    return np.minimum(tok, logits.shape[-1] - 1).astype(np.int64)


def shift_right(y, start):
    """Teacher-forcing inputs: y (T, B) tokens or (T, B, O) values -> y_prev of the same
    shape with ``y_prev[0] = start`` (broadcast to (B,) / (B, O)) and ``y_prev[t] = y[t-1]``."""
    y = np.asarray(y)
    if y.ndim < 2:
        raise ValueError(f"y: expected (T, B) or (T, B, O), got shape {y.shape}")
    out = np.empty_like(y)
    out[0] = start
    out[1:] = y[:-1]
    return out


def _check_sampling_opts(greedy, temperature):
    v.flag("greedy", greedy)
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
            or not temperature > 0:
        raise ValueError(f"temperature: expected a positive number, got {temperature!r}")


class _AutoregressiveBase(Module):
    """Shared input handling of the two decoders (previous targets and the optional x)."""

    def _init_io(self, hidden_size, vocab_size, output_size, input_size, embedding_dim, dtype):
        self.hidden_size = _int_arg("hidden_size", hidden_size)
        if (vocab_size is None) == (output_size is None):
            raise ValueError("vocab_size, output_size: give exactly one (vocab_size V for token "
                             "targets, output_size O for real-valued targets)")
        self.vocab_size = None if vocab_size is None else _int_arg("vocab_size", vocab_size)
        self.output_size = None if output_size is None else _int_arg("output_size", output_size)
        self.input_size = _int_arg("input_size", input_size, minimum=0)
        if embedding_dim is not None:
            if vocab_size is None:
                raise ValueError("embedding_dim: only for token targets (vocab_size)")
            embedding_dim = _int_arg("embedding_dim", embedding_dim)
        self.embedding_dim = embedding_dim
        self.dtype = _dtype_arg(dtype)

    @property
    def discrete(self):
        """True for token targets (vocab_size), False for real-valued ones (output_size)."""
        return self.vocab_size is not None

    @property
    def n_out(self):
        """V or O: the size of each step's output."""
        return self.vocab_size if self.discrete else self.output_size

    def _check_prev(self, name, prev, lead):
        """Previous targets: tokens (*lead) in [0, V), or values (*lead, O)."""
        if self.discrete:
            prev = _index_array(name, prev, self.vocab_size)
            if lead is not None and prev.shape != lead:
                raise ValueError(f"{name}: expected token shape {self._lead_sym(lead)} = {lead}, "
                                 f"got {prev.shape}")
            if prev.ndim not in (1, 2):
                raise ValueError(f"{name}: expected tokens (T, B), got shape {prev.shape}")
            return prev
        prev = self._check_input(name, prev)
        if lead is None:
            if prev.ndim not in (2, 3) or prev.shape[-1] != self.output_size:
                raise ValueError(f"{name}: expected shape (T, B, O) with O = {self.output_size},"
                                 f" got {prev.shape}")
        else:
            v.check_shape(name, prev, lead + (self.output_size,), self._lead_sym(lead, "O"))
        return prev

    @staticmethod
    def _lead_sym(lead, last=None):
        """Symbolic shape: (T, B) / (B,), with a trailing letter: (T, B, I) / (B, I)."""
        letters = ["T", "B"] if len(lead) == 2 else ["B"]
        if last is None:
            return f"({', '.join(letters)})" if len(letters) > 1 else "(B,)"
        return f"({', '.join(letters + [last])})"

    def _check_x(self, name, x, lead):
        if self.input_size == 0:
            if x is not None:
                raise ValueError(f"{name}: this model has input_size = 0 (no extra input); "
                                 "pass None")
            return None
        if x is None:
            raise ValueError(f"{name}: expected an array {self._lead_sym(lead, 'I')} with "
                             f"I = {self.input_size}, got None")
        x = self._check_input(name, x)
        v.check_shape(name, x, lead + (self.input_size,), self._lead_sym(lead, "I"))
        return x

    def start_input(self, B, start=None):
        """The input of step 0: tokens (B,) (``start`` an int or (B,), default 0) or values
        (B, O) (``start`` broadcastable to (B, O), default zeros)."""
        if self.discrete:
            s = np.zeros(B, np.int64) if start is None else np.broadcast_to(
                _index_array("start", start, self.vocab_size), (B,)).astype(np.int64)
            return s
        if start is None:
            return np.zeros((B, self.output_size), self.dtype)
        s = np.asarray(start)
        if s.dtype != self.dtype:
            raise TypeError(f"start: expected dtype {self.dtype.name}, got {s.dtype}")
        try:
            return np.array(np.broadcast_to(s, (B, self.output_size)))
        except ValueError:
            raise ValueError(f"start: expected a shape broadcastable to (B, O) = "
                             f"{(B, self.output_size)}, got {s.shape}") from None

    def teacher_inputs(self, y, start=None):
        """Teacher-forcing inputs from targets: y (T, B) or (T, B, O) -> y_prev (same shape),
        ``y_prev[0]`` = :meth:`start_input`, ``y_prev[t] = y[t-1]``."""
        y = self._check_prev("y", y, None)
        if y.ndim != (2 if self.discrete else 3):
            raise ValueError(f"y: expected shape {'(T, B)' if self.discrete else '(T, B, O)'}, "
                             f"got {y.shape}")
        return shift_right(y, self.start_input(y.shape[1], start))

    def feedback(self, out, rng=None, greedy=True, temperature=1.0):
        """The next step's input made from this step's output (B, V) or (B, O): a token (B,)
        (argmax, or sampled with temperature) or the output itself."""
        if self.discrete:
            return sample_tokens(out, rng, greedy=greedy, temperature=temperature)
        return out

    def generate(self, steps, *, x=None, batch_size=None, start=None, greedy=True,
                 temperature=1.0, seed=None, return_outputs=False):
        """Open-loop generation: each step's input is the model's previous output.

        Args: steps T; x (T, B, I) when input_size > 0 (else None, and batch_size B is
        needed); start: the step-0 input (see :meth:`start_input`); greedy (argmax) or sampled
        from softmax(logits / temperature) with a generator seeded by ``seed``.
        Returns tokens (T, B) int64 (or values (T, B, O)); with return_outputs also the raw
        outputs (T, B, V) / (T, B, O).
        """
        T = _int_arg("steps", steps)
        _check_sampling_opts(greedy, temperature)
        if x is not None or self.input_size:
            shape = None if x is None else np.shape(x)
            if shape is None or len(shape) != 3 or shape[0] != T:
                raise ValueError(f"x: expected shape (T, B, I) with T = steps = {T}, I = "
                                 f"{self.input_size}, got {shape}")
            B = shape[1]
            x = self._check_x("x", x, (T, B))
        else:
            if batch_size is None:
                raise ValueError("batch_size: needed when the model has no input x")
            B = _int_arg("batch_size", batch_size)
        rng = np.random.default_rng(seed)
        prev = self.start_input(B, start)
        state = self.initial_state(B)
        fed, outs = [], []
        for t in range(T):
            o, state, _ = self.step(prev, None if x is None else x[t], state, keep=False)
            prev = self.feedback(o, rng, greedy, temperature)
            fed.append(prev)
            outs.append(o)
        result = np.stack(fed)
        return (result, np.stack(outs)) if return_outputs else result


class OutputRecurrentRNN(_AutoregressiveBase):
    """Output-to-hidden recurrence: ``h_t = tanh(b + x_t W^T + y_{t-1} U^T)``,
    ``o_t = h_t V^T + c``.

    Token targets (``vocab_size=V``): ``y_{t-1} U^T`` is an embedding lookup -- ``embed``
    (V, H) (the one-hot product written as a lookup), or with ``embedding_dim=E`` an
    ``embed`` (V, E) followed by ``U`` (H, E). ``o_t`` are logits (V,).
    Real-valued targets (``output_size=O``): ``U`` is a linear map (H, O); ``o_t`` (O,).
    ``input_size=I`` > 0 adds the input term ``x_t W^T`` (W (H, I)); 0 means none.

    Parameters (dotted names): ``b`` (H,), ``W.weight`` (H, I), ``embed.weight``,
    ``U.weight``, ``out.weight`` (V or O, H) = the seed's V, ``out.bias`` = c.

    ``o = model(y_prev (T, B) or (T, B, O), x (T, B, I) or None)`` runs all T*B steps at once
    (teacher forcing: ``y_prev = model.teacher_inputs(y)``); ``dx, dy_prev =
    model.backward(do)``; :meth:`generate` runs open-loop.
    """

    def __init__(self, hidden_size, *, vocab_size=None, output_size=None, input_size=0,
                 embedding_dim=None, dtype=np.float32, seed=None):
        self._init_io(hidden_size, vocab_size, output_size, input_size, embedding_dim, dtype)
        H, dt = self.hidden_size, self.dtype
        s = _seeds(seed, 5)
        k = 1 / np.sqrt(H)
        self.b = self._param("b", np.random.default_rng(s[0]).uniform(-k, k, H).astype(dt))
        self.W = Linear(self.input_size, H, bias=False, dtype=dt, seed=s[1]) \
            if self.input_size else None
        if self.discrete:
            E = embedding_dim or H
            self.embed = Embedding(self.vocab_size, E, dtype=dt, seed=s[2])
            self.U = Linear(E, H, bias=False, dtype=dt, seed=s[3]) if embedding_dim else None
        else:
            self.embed = None
            self.U = Linear(self.output_size, H, bias=False, dtype=dt, seed=s[3])
        self.out = Linear(H, self.n_out, dtype=dt, seed=s[4])
        self._cache = None

    # ------------------------------------------------------------------ the step maths
    # One code path for any leading shape: (T, B) for a whole sequence, (B,) for one step.

    def _buf(self, name, shape, dtype, reuse):
        """A scratch array: a fresh one, or (reuse) one kept in the module across calls of the
        whole-sequence forward/backward, so that training does not fault in megabytes of new
        pages every step. Never handed to the caller."""
        if not reuse:
            return np.empty(shape, dtype)
        bufs = self.__dict__.setdefault("_buffers", {})
        b = bufs.get(name)
        if b is None or b.shape != shape or b.dtype != dtype:
            b = bufs[name] = np.empty(shape, dtype)
        return b

    def _core(self, prev, x, reuse=False):
        H = self.hidden_size
        if self.discrete and (self.U is None or self._use_table(prev.size)):
            # For a token, b + y_{t-1} U^T is a row of the table (V, H) = b + embed U^T (or
            # b + embed without U): one small GEMM instead of one over all T*B rows when
            # V <= T*B, and one gather. Exact: the same sums.
            e = "table"
            table = (self.embed.weight.data @ self.U.weight.data.T if self.U is not None
                     else self.embed.weight.data) + self.b.data
            a = self._buf("a", prev.shape + (H,), self.dtype, reuse)
            np.take(table, prev, axis=0, out=a)
        elif self.discrete:
            e = self.embed.weight.data[prev]  # (..., E)
            a = self.U.apply(e)
            a += self.b.data
        else:
            e = None
            a = self.U.apply(prev)
            a += self.b.data
        if self.W is not None:
            a += self.W.apply(x)
        h = np.tanh(a, out=a)  # (..., H)
        o = self.out.apply(h)  # (..., V or O)
        return o, (prev, x, e, h)

    def _use_table(self, n_rows):
        return self.vocab_size <= n_rows

    def _core_backward(self, do, cache, reuse=False):
        prev, x, e, h = cache
        H = self.hidden_size
        n = h.size // H
        W_out = self.out.weight.data
        do2 = do.reshape(n, -1)
        h2 = h.reshape(n, H)
        self.out.weight.grad += do2.T @ h2
        self.out.bias.grad += do2.sum(axis=0)
        da = self._buf("da", (n, H), h.dtype, reuse)
        np.matmul(do2, W_out, out=da)  # dh
        tmp = self._buf("tmp", (n, H), h.dtype, reuse)
        np.multiply(h2, h2, out=tmp)  # da = dh * (1 - h^2)
        np.subtract(1, tmp, out=tmp)
        da *= tmp
        lead = h.shape[:-1]
        dx = self.W.accumulate(x, da.reshape(lead + (H,))) if self.W is not None else None
        if isinstance(e, str):  # the table path: scatter da into (V, H); every row lands there
            dtable = scatter_add_rows(np.zeros((self.vocab_size, H), da.dtype),
                                      prev.reshape(-1), da, work=tmp)
            self.b.grad += dtable.sum(axis=0)
            if self.U is not None:
                self.U.weight.grad += dtable.T @ self.embed.weight.data
                self.embed.weight.grad += dtable @ self.U.weight.data
            else:
                self.embed.weight.grad += dtable
            return dx, None
        self.b.grad += da.sum(axis=0)
        da = da.reshape(lead + (H,))
        if self.discrete:
            self.embed.accumulate(prev, self.U.accumulate(e, da))
            return dx, None
        return dx, self.U.accumulate(prev, da)

    # ------------------------------------------------------------------ whole sequence

    def forward(self, y_prev, x=None):
        """Teacher-forced (or any given inputs) forward over all steps at once.

        y_prev (T, B) tokens or (T, B, O) values (the input of each step); x (T, B, I) or
        None. Returns o (T, B, V) logits or (T, B, O) outputs.
        """
        self._cache = None
        y_prev = self._check_prev("y_prev", y_prev, None)
        if y_prev.ndim != (2 if self.discrete else 3):
            raise ValueError(f"y_prev: expected shape "
                             f"{'(T, B)' if self.discrete else '(T, B, O)'}, got {y_prev.shape}")
        x = self._check_x("x", x, y_prev.shape[:2])
        o, cache = self._core(y_prev, x, reuse=True)
        if self.training:
            self._cache = cache
        return o

    def backward(self, dout):
        """dout (T, B, V) or (T, B, O). Adds every parameter gradient into .grad.
        Returns ``(dx (T, B, I) or None, dy_prev (T, B, O) or None for tokens)``."""
        cache = self._need_cache()
        dout = self._check_input("dout", dout)
        lead = cache[3].shape[:-1]
        v.check_shape("dout", dout, lead + (self.n_out,), "(T, B, V)" if self.discrete
                      else "(T, B, O)")
        return self._core_backward(dout, cache, reuse=True)

    # ------------------------------------------------------------------ step protocol

    def initial_state(self, B):
        """No hidden-to-hidden recurrence: the state is None."""
        return None

    def step(self, prev, x_t, state=None, keep=True):
        """One step: prev (B,) tokens or (B, O); x_t (B, I) or None.
        Returns ``(o_t (B, V) or (B, O), None, cache)`` (cache None unless keep)."""
        o, cache = self._core(prev, x_t)
        return o, None, (cache if keep else None)

    def step_backward(self, dout_t, dstate, cache):
        """Returns ``(dprev (B, O) or None, dx_t (B, I) or None, None)``; adds into .grad."""
        dx, dprev = self._core_backward(dout_t, cache)
        return dprev, dx, None

    def __repr__(self):
        what = f"vocab_size={self.vocab_size}" if self.discrete else \
            f"output_size={self.output_size}"
        extra = f", input_size={self.input_size}" if self.input_size else ""
        extra += f", embedding_dim={self.embedding_dim}" if self.embedding_dim else ""
        return f"OutputRecurrentRNN({self.hidden_size}, {what}{extra})"


_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def _cell_class(cell):
    v.choice("cell", cell, tuple(_CELLS))
    return _CELLS[cell]


class RecurrentDecoder(_AutoregressiveBase):
    """Hidden-to-hidden recurrence fed the previous target: the input of step t is
    ``[x_t, e(y_{t-1})]`` (I + E) into an rnnkit.nn RNN/LSTM/GRU (one layer, hidden size H),
    then ``o_t = h_t V^T + c``. ``e`` is an Embedding (V, E) (E defaults to H) for tokens, the
    identity for real values (E = O).

    Same interface as :class:`OutputRecurrentRNN`: ``o = model(y_prev, x)`` (the whole
    sequence in the fused C++ kernel), ``backward(dout)``, :meth:`generate`, step protocol
    (per-step cell kernels). Children: ``embed``, ``rnn``, ``out``.
    """

    def __init__(self, hidden_size, *, cell="gru", vocab_size=None, output_size=None,
                 input_size=0, embedding_dim=None, dtype=np.float32, seed=None):
        self._init_io(hidden_size, vocab_size, output_size, input_size, embedding_dim, dtype)
        self.cell = cell
        cls = _cell_class(cell)
        s = _seeds(seed, 3)
        if self.discrete:
            E = embedding_dim or self.hidden_size
            self.embed = Embedding(self.vocab_size, E, dtype=self.dtype, seed=s[0])
        else:
            E, self.embed = self.output_size, None
        self._E = E
        self.rnn = cls(self.input_size + E, self.hidden_size, dtype=self.dtype, seed=s[1])
        self.out = Linear(self.hidden_size, self.n_out, dtype=self.dtype, seed=s[2])
        self._cache = None

    def _inputs(self, prev, x):
        e = self.embed.weight.data[prev] if self.discrete else prev
        return e if x is None else np.concatenate([x, e], axis=-1)

    def _d_inputs(self, prev, dinp):
        dx = dinp[..., :self.input_size] if self.input_size else None
        de = dinp[..., self.input_size:]
        if self.discrete:
            self.embed.accumulate(prev, de)
            return dx, None
        return dx, np.ascontiguousarray(de)

    def forward(self, y_prev, x=None, state=None):
        """y_prev (T, B) or (T, B, O); x (T, B, I) or None; state: the rnn's initial state
        (h0 (1, B, H), or (h0, c0) for the LSTM) or None. Returns o (T, B, V or O)."""
        self._cache = None
        y_prev = self._check_prev("y_prev", y_prev, None)
        if y_prev.ndim != (2 if self.discrete else 3):
            raise ValueError(f"y_prev: expected shape "
                             f"{'(T, B)' if self.discrete else '(T, B, O)'}, got {y_prev.shape}")
        x = self._check_x("x", x, y_prev.shape[:2])
        hs, self.final_state = self.rnn(self._inputs(y_prev, x), state)
        o = self.out.forward(hs) if self.training else self.out.apply(hs)
        if self.training:
            self._cache = y_prev
        return o

    def backward(self, dout):
        """dout (T, B, V or O). Returns ``(dx (T, B, I) or None, dy_prev or None)``."""
        y_prev = self._need_cache()
        dout = self._check_input("dout", dout)
        dh = self.out.backward(dout)
        dinp, _ = self.rnn.backward(dh)
        return self._d_inputs(y_prev, dinp)

    # ------------------------------------------------------------------ step protocol

    def _w(self):
        r = self.rnn
        return (r.weight_ih_l0.data, r.weight_hh_l0.data, r.bias_ih_l0.data, r.bias_hh_l0.data)

    def initial_state(self, B):
        z = np.zeros((B, self.hidden_size), self.dtype)
        return (z, z) if self.cell == "lstm" else z

    def step(self, prev, x_t, state, keep=True):
        """One step: prev (B,) or (B, O); x_t (B, I) or None; state h (B, H) (LSTM: (h, c)).
        Returns ``(o_t, new state, cache)``."""
        inp = self._inputs(prev, x_t)
        w = self._w()
        if self.cell == "lstm":
            (h, c), cc = lstm_cell_forward(inp, state[0], state[1], *w)
            new = (h, c)
        elif self.cell == "gru":
            h, cc = gru_cell_forward(inp, state, *w, reset_after=self.rnn.reset_after)
            new = h
        else:
            h, cc = rnn_cell_forward(inp, state, *w, nonlinearity=self.rnn.nonlinearity)
            new = h
        return self.out.apply(h), new, ((prev, h, cc) if keep else None)

    def step_backward(self, dout_t, dstate, cache):
        """Returns ``(dprev or None, dx_t or None, dstate for the previous step)``."""
        prev, h, cc = cache
        dh = self.out.accumulate(h, dout_t)
        r = self.rnn
        if self.cell == "lstm":
            if dstate is not None:
                dh = dh + dstate[0]
            g = lstm_cell_backward(dh, None if dstate is None else dstate[1], cc)
            dprev_state = (g.dh, g.dc)
        else:
            if dstate is not None:
                dh = dh + dstate
            g = (gru_cell_backward if self.cell == "gru" else rnn_cell_backward)(dh, cc)
            dprev_state = g.dh
        r.weight_ih_l0.grad += g.dW_ih
        r.weight_hh_l0.grad += g.dW_hh
        r.bias_ih_l0.grad += g.db_ih
        r.bias_hh_l0.grad += g.db_hh
        dx, dprev = self._d_inputs(prev, g.dx)
        return dprev, dx, dprev_state

    def __repr__(self):
        what = f"vocab_size={self.vocab_size}" if self.discrete else \
            f"output_size={self.output_size}"
        return f"RecurrentDecoder({self.hidden_size}, cell={self.cell!r}, {what})"


class SequenceRegressor(Module):
    """An rnnkit.nn recurrent module plus a Linear head.

    ``y = model(x (T, B, I), state=None, lengths=None)``: many-to-one (default) gives
    y (B, O) from each sequence's last state of the top layer; ``many_to_many=True`` gives
    y (T, B, O) from every step. ``dx = model.backward(dy)``. After a forward,
    ``model.final_state`` is the rnn's final state (h_n (L, B, H), or (h_n, c_n) for the
    LSTM), to be passed as ``state`` to the next chunk (truncated BPTT).

    cell: "rnn", "lstm" or "gru"; ``forget_bias`` is added to the LSTM's forget-gate bias
    (GRU: the update-gate z bias, which keeps the state) at initialisation: a positive value
    makes the cell remember by default. Children: ``rnn``, ``head``.
    """

    default_loss = MSELoss

    def __init__(self, cell, input_size, hidden_size, output_size=1, *, num_layers=1,
                 many_to_many=False, forget_bias=0.0, nonlinearity="tanh", dtype=np.float32,
                 seed=None):
        cls = _cell_class(cell)
        self.cell = cell
        self.many_to_many = v.flag("many_to_many", many_to_many)
        self.dtype = _dtype_arg(dtype)
        self.output_size = _int_arg("output_size", output_size)
        s = _seeds(seed, 2)
        kw = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.rnn = cls(input_size, hidden_size, num_layers, dtype=self.dtype, seed=s[0], **kw)
        self.hidden_size = self.rnn.hidden_size
        self.head = Linear(self.hidden_size, self.output_size, dtype=self.dtype, seed=s[1])
        if isinstance(forget_bias, bool) or not isinstance(forget_bias, numbers.Real):
            raise TypeError(f"forget_bias: expected a number, got {forget_bias!r}")
        if forget_bias:
            if cell == "rnn":
                raise ValueError("forget_bias: only for cell='lstm' or 'gru' (gated cells)")
            H = self.hidden_size
            for layer in range(self.rnn.num_layers):
                if self.rnn.bias:
                    getattr(self.rnn, f"bias_ih_l{layer}").data[H:2 * H] += forget_bias
        self.final_state = None
        self._cache = None

    def forward(self, x, state=None, lengths=None):
        """x (T, B, I); state: h0 (L, B, H) / (h0, c0) for the LSTM, or None; lengths (B,).
        Returns y (B, O), or (T, B, O) if many_to_many."""
        self._cache = None
        out, self.final_state = self.rnn(x, state, lengths)  # out (T, B, H)
        if self.many_to_many:
            feats = out
        else:
            h_n = self.final_state[0] if self.cell == "lstm" else self.final_state
            feats = h_n[-1]  # (B, H): top layer, each sequence's last step
        y = self.head.apply(feats)
        if self.training:
            self._cache = (feats, out.shape)
        return y

    def backward(self, dy):
        """dy like y. Adds every parameter gradient into .grad; returns dx (T, B, I)."""
        feats, out_shape = self._need_cache()
        dy = self._check_input("dy", dy)
        v.check_shape("dy", dy, feats.shape[:-1] + (self.output_size,),
                      "(T, B, O)" if self.many_to_many else "(B, O)")
        dfeat = self.head.accumulate(feats, dy)
        if self.many_to_many:
            dx, _ = self.rnn.backward(dfeat, None)
        else:
            L, B = self.rnn.num_layers, dy.shape[0]
            dh_n = np.zeros((L, B, self.hidden_size), self.dtype)
            dh_n[-1] = dfeat
            dx, _ = self.rnn.backward(None, (dh_n, None) if self.cell == "lstm" else dh_n)
        return dx

    def __repr__(self):
        return (f"{type(self).__name__}({self.rnn!r}, head={self.head!r}"
                + (", many_to_many=True" if self.many_to_many else "") + ")")


class SequenceClassifier(SequenceRegressor):
    """:class:`SequenceRegressor` whose head gives class logits: y (B, C) or (T, B, C) for
    ``num_classes=C``; train with :class:`~rnnkit.layers.CrossEntropyLoss`."""

    default_loss = CrossEntropyLoss

    def __init__(self, cell, input_size, hidden_size, num_classes, **kw):
        super().__init__(cell, input_size, hidden_size, num_classes, **kw)
        self.num_classes = self.output_size

    def predict(self, x, state=None, lengths=None):
        """Class indices (B,) or (T, B) (argmax of the logits), without keeping a cache."""
        was = self.training
        self.eval()
        try:
            return np.argmax(self.forward(x, state, lengths), axis=-1)
        finally:
            self.train(was)


# The encoder-decoder lives in seq2seq.py (it builds on the modules above).
from .seq2seq import Seq2Seq  # noqa: E402

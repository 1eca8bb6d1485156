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

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import _validate as v
from .._cells import GRU_CELL
from ..nn import Embedding, Linear, Module, module_class
from ..nn.layers import scatter_add_rows
from .sampling import sample_tokens

__all__ = ["OutputRecurrentRNN", "RecurrentDecoder", "shift_right", "seeds"]


def seeds(seed: int | None, n: int) -> list[int]:
    """n independent integer seeds derived from ``seed`` (None stays random)."""
    ss = np.random.SeedSequence(seed)
    return [int(s.generate_state(1, np.uint64)[0]) for s in ss.spawn(n)]


def shift_right(y: npt.ArrayLike, start: npt.ArrayLike) -> np.ndarray:
    """Teacher-forcing inputs: y (T, B) tokens or (T, B, O) values -> y_prev of the same
    shape with ``y_prev[0] = start`` (broadcast to (B,) / (B, O)) and ``y_prev[t] = y[t-1]``."""
    y = v.as_array("y", y)
    if y.ndim < 2:
        raise ValueError(f"y: expected (T, B) or (T, B, O), got shape {y.shape}")
    out = np.empty_like(y)
    out[0] = start
    out[1:] = y[:-1]
    return out


class _AutoregressiveBase(Module):
    """Shared input handling of the two decoders (previous targets and the optional x)."""

    vocab_size: int | None  # V for token targets, else None
    output_size: int | None  # O for real-valued targets, else None

    def _init_io(self, hidden_size, vocab_size, output_size, input_size, embedding_dim, dtype):
        self.hidden_size = v.int_arg("hidden_size", hidden_size)
        if (vocab_size is None) == (output_size is None):
            raise ValueError(
                "vocab_size, output_size: give exactly one (vocab_size V for token "
                "targets, output_size O for real-valued targets)"
            )
        self.vocab_size = None if vocab_size is None else v.int_arg("vocab_size", vocab_size)
        self.output_size = None if output_size is None else v.int_arg("output_size", output_size)
        self.input_size = v.int_arg("input_size", input_size, minimum=0)
        if embedding_dim is not None:
            if vocab_size is None:
                raise ValueError("embedding_dim: only for token targets (vocab_size)")
            embedding_dim = v.int_arg("embedding_dim", embedding_dim)
        self.embedding_dim = embedding_dim
        self.dtype = v.dtype_arg(dtype)

    @property
    def discrete(self) -> bool:
        """True for token targets (vocab_size), False for real-valued ones (output_size)."""
        return self.vocab_size is not None

    @property
    def n_out(self) -> int:
        """V or O: the size of each step's output."""
        n = self.vocab_size if self.vocab_size is not None else self.output_size
        assert n is not None  # _init_io sets exactly one of the two
        return n

    # The step protocol, defined by each model: initial_state(B) -> state;
    # step(prev, x_t, state, keep=True) -> (out_t, state, cache).
    initial_state: Callable[..., Any]
    step: Callable[..., tuple[np.ndarray, Any, Any]]

    def _check_prev_sequence(self, y_prev: Any) -> np.ndarray:
        """The inputs of every step: tokens (T, B) or values (T, B, O)."""
        y_prev = self._check_prev("y_prev", y_prev, None)
        if y_prev.ndim != (2 if self.discrete else 3):
            raise ValueError(
                f"y_prev: expected shape {'(T, B)' if self.discrete else '(T, B, O)'}, got {y_prev.shape}"
            )
        return y_prev

    def _check_prev(self, name: str, prev: Any, lead: tuple[int, ...] | None) -> np.ndarray:
        """Previous targets: tokens (*lead) in [0, V), or values (*lead, O)."""
        if self.vocab_size is not None:  # discrete
            prev = v.index_array(name, prev, self.vocab_size)
            if lead is not None and prev.shape != lead:
                raise ValueError(
                    f"{name}: expected token shape {self._lead_sym(lead)} = {lead}, got {prev.shape}"
                )
            if prev.ndim not in (1, 2):
                raise ValueError(f"{name}: expected tokens (T, B), got shape {prev.shape}")
            return prev
        prev = self._check_input(name, prev)
        if lead is None:
            if prev.ndim not in (2, 3) or prev.shape[-1] != self.output_size:
                raise ValueError(
                    f"{name}: expected shape (T, B, O) with O = {self.output_size}, got {prev.shape}"
                )
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

    def _check_x(self, name: str, x: Any, lead: tuple[int, ...]) -> np.ndarray | None:
        if self.input_size == 0:
            if x is not None:
                raise ValueError(f"{name}: this model has input_size = 0 (no extra input); pass None")
            return None
        if x is None:
            raise ValueError(
                f"{name}: expected an array {self._lead_sym(lead, 'I')} with I = {self.input_size}, got None"
            )
        x = self._check_input(name, x)
        v.check_shape(name, x, lead + (self.input_size,), self._lead_sym(lead, "I"))
        return x

    def start_input(self, B: int, start: npt.ArrayLike | None = None) -> np.ndarray:
        """The input of step 0: tokens (B,) (``start`` an int or (B,), default 0) or values
        (B, O) (``start`` broadcastable to (B, O), default zeros)."""
        if self.vocab_size is not None:  # discrete
            s = (
                np.zeros(B, np.int64)
                if start is None
                else np.broadcast_to(v.index_array("start", start, self.vocab_size), (B,)).astype(np.int64)
            )
            return s
        O = self.n_out
        if start is None:
            return np.zeros((B, O), self.dtype)
        s = v.as_array("start", start)
        if s.dtype != self.dtype:
            raise TypeError(f"start: expected dtype {self.dtype.name}, got {s.dtype}")
        try:
            return np.array(np.broadcast_to(s, (B, O)))
        except ValueError:
            raise ValueError(
                f"start: expected a shape broadcastable to (B, O) = {(B, O)}, got {s.shape}"
            ) from None

    def teacher_inputs(self, y: npt.ArrayLike, start: npt.ArrayLike | None = None) -> np.ndarray:
        """Teacher-forcing inputs from targets: y (T, B) or (T, B, O) -> y_prev (same shape),
        ``y_prev[0]`` = :meth:`start_input`, ``y_prev[t] = y[t-1]``."""
        y = self._check_prev("y", y, None)
        if y.ndim != (2 if self.discrete else 3):
            raise ValueError(f"y: expected shape {'(T, B)' if self.discrete else '(T, B, O)'}, got {y.shape}")
        return shift_right(y, self.start_input(y.shape[1], start))

    def feedback(
        self,
        out: np.ndarray,
        rng: np.random.Generator | None = None,
        greedy: bool = True,
        temperature: float = 1.0,
    ) -> np.ndarray:
        """The next step's input made from this step's output (B, V) or (B, O): a token (B,)
        (argmax, or sampled with temperature) or the output itself."""
        if self.discrete:
            return sample_tokens(out, rng, greedy=greedy, temperature=temperature)
        return out

    def generate(
        self,
        steps: int,
        *,
        x: npt.ArrayLike | None = None,
        batch_size: int | None = None,
        start: npt.ArrayLike | None = None,
        greedy: bool = True,
        temperature: float = 1.0,
        seed: int | None = None,
        return_outputs: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Open-loop generation: each step's input is the model's previous output.

        Args: steps T; x (T, B, I) when input_size > 0 (else None, and batch_size B is
        needed); start: the step-0 input (see :meth:`start_input`); greedy (argmax) or sampled
        from softmax(logits / temperature) with a generator seeded by ``seed``.
        Returns tokens (T, B) int64 (or values (T, B, O)); with return_outputs also the raw
        outputs (T, B, V) / (T, B, O).
        """
        T = v.int_arg("steps", steps)
        v.sampling_options(greedy, temperature)
        if x is not None or self.input_size:
            shape = None if x is None else np.shape(x)
            if shape is None or len(shape) != 3 or shape[0] != T:
                raise ValueError(
                    f"x: expected shape (T, B, I) with T = steps = {T}, I = {self.input_size}, got {shape}"
                )
            B = shape[1]
            x = self._check_x("x", x, (T, B))
        else:
            if batch_size is None:
                raise ValueError("batch_size: needed when the model has no input x")
            B = v.int_arg("batch_size", batch_size)
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

    def __init__(
        self,
        hidden_size: int,
        *,
        vocab_size: int | None = None,
        output_size: int | None = None,
        input_size: int = 0,
        embedding_dim: int | None = None,
        dtype: npt.DTypeLike = np.float32,
        seed: int | None = None,
    ) -> None:
        self._init_io(hidden_size, vocab_size, output_size, input_size, embedding_dim, dtype)
        H, dt = self.hidden_size, self.dtype
        s = seeds(seed, 5)
        k = 1 / np.sqrt(H)
        self.b = self._param("b", np.random.default_rng(s[0]).uniform(-k, k, H).astype(dt))
        self.W = Linear(self.input_size, H, bias=False, dtype=dt, seed=s[1]) if self.input_size else None
        # tokens: embed (V, E), and U (H, E) with embedding_dim; real values: U (H, O), no embed
        self.embed: Embedding | None
        self.U: Linear | None
        if self.vocab_size is not None:  # discrete
            E = embedding_dim or H
            self.embed = Embedding(self.vocab_size, E, dtype=dt, seed=s[2])
            self.U = Linear(E, H, bias=False, dtype=dt, seed=s[3]) if embedding_dim else None
        else:
            self.embed = None
            self.U = Linear(self.n_out, H, bias=False, dtype=dt, seed=s[3])
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
        embed, U = self.embed, self.U  # embed is set exactly for token targets (discrete)
        e: np.ndarray | str | None
        if embed is not None and (U is None or self._use_table(prev.size)):
            # For a token, b + y_{t-1} U^T is a row of the table (V, H) = b + embed U^T (or
            # b + embed without U): one small GEMM instead of one over all T*B rows when
            # V <= T*B, and one gather. Exact: the same sums.
            e = "table"
            table = (
                embed.weight.data @ U.weight.data.T if U is not None else embed.weight.data
            ) + self.b.data
            a = self._buf("a", prev.shape + (H,), self.dtype, reuse)
            np.take(table, prev, axis=0, out=a)
        elif embed is not None:
            assert U is not None  # tokens without the table: embedding_dim was given, so U exists
            e = emb = embed.weight.data[prev]  # (..., E)
            a = U.apply(emb)
            a += self.b.data
        else:
            assert U is not None  # real-valued targets: U (H, O) always exists
            e = None
            a = U.apply(prev)
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
        out_bias = self.out.bias
        assert out_bias is not None  # the output layer is made with a bias (c)
        self.out.weight.accumulate(do2.T @ h2)
        out_bias.accumulate(do2.sum(axis=0))
        da = self._buf("da", (n, H), h.dtype, reuse)
        np.matmul(do2, W_out, out=da)  # dh
        tmp = self._buf("tmp", (n, H), h.dtype, reuse)
        np.multiply(h2, h2, out=tmp)  # da = dh * (1 - h^2)
        np.subtract(1, tmp, out=tmp)
        da *= tmp
        lead = h.shape[:-1]
        dx = self.W.accumulate(x, da.reshape(lead + (H,))) if self.W is not None else None
        embed, U = self.embed, self.U  # embed is set exactly for token targets (discrete)
        if isinstance(e, str):  # the table path: scatter da into (V, H); every row lands there
            assert embed is not None  # the table path is taken for tokens only
            dtable = scatter_add_rows(np.zeros((self.n_out, H), da.dtype), prev.reshape(-1), da, work=tmp)
            self.b.accumulate(dtable.sum(axis=0))
            if U is not None:
                U.weight.accumulate(dtable.T @ embed.weight.data)
                embed.weight.accumulate(dtable @ U.weight.data)
            else:
                embed.weight.accumulate(dtable)
            return dx, None
        assert U is not None  # off the table path U exists (tokens with embedding_dim, or values)
        self.b.accumulate(da.sum(axis=0))
        da = da.reshape(lead + (H,))
        if embed is not None:
            embed.accumulate(prev, U.accumulate(e, da))
            return dx, None
        return dx, U.accumulate(prev, da)

    # ------------------------------------------------------------------ whole sequence

    def forward(self, y_prev: npt.ArrayLike, x: npt.ArrayLike | None = None) -> np.ndarray:
        """Teacher-forced (or any given inputs) forward over all steps at once.

        y_prev (T, B) tokens or (T, B, O) values (the input of each step); x (T, B, I) or
        None. Returns o (T, B, V) logits or (T, B, O) outputs.
        """
        self._cache = None
        y_prev = self._check_prev_sequence(y_prev)
        x = self._check_x("x", x, y_prev.shape[:2])
        o, cache = self._core(y_prev, x, reuse=True)
        if self.training:
            self._cache = cache
        return o

    def backward(self, dout: npt.ArrayLike) -> tuple[np.ndarray | None, np.ndarray | None]:
        """dout (T, B, V) or (T, B, O). Adds every parameter gradient into .grad.
        Returns ``(dx (T, B, I) or None, dy_prev (T, B, O) or None for tokens)``."""
        cache = self._need_cache()
        dout = self._check_input("dout", dout)
        lead = cache[3].shape[:-1]
        v.check_shape("dout", dout, lead + (self.n_out,), "(T, B, V)" if self.discrete else "(T, B, O)")
        return self._core_backward(dout, cache, reuse=True)

    # ------------------------------------------------------------------ step protocol

    def initial_state(self, B: int) -> None:
        """No hidden-to-hidden recurrence: the state is None."""
        return None

    def step(
        self, prev: np.ndarray, x_t: np.ndarray | None, state: None = None, keep: bool = True
    ) -> tuple[np.ndarray, None, Any]:
        """One step: prev (B,) tokens or (B, O); x_t (B, I) or None.
        Returns ``(o_t (B, V) or (B, O), None, cache)`` (cache None unless keep)."""
        o, cache = self._core(prev, x_t)
        return o, None, (cache if keep else None)

    def step_backward(
        self, dout_t: np.ndarray, dstate: None, cache: Any
    ) -> tuple[np.ndarray | None, np.ndarray | None, None]:
        """Returns ``(dprev (B, O) or None, dx_t (B, I) or None, None)``; adds into .grad."""
        dx, dprev = self._core_backward(dout_t, cache)
        return dprev, dx, None

    def __repr__(self):
        what = f"vocab_size={self.vocab_size}" if self.discrete else f"output_size={self.output_size}"
        extra = f", input_size={self.input_size}" if self.input_size else ""
        extra += f", embedding_dim={self.embedding_dim}" if self.embedding_dim else ""
        return f"OutputRecurrentRNN({self.hidden_size}, {what}{extra})"


class RecurrentDecoder(_AutoregressiveBase):
    """Hidden-to-hidden recurrence fed the previous target: the input of step t is
    ``[x_t, e(y_{t-1})]`` (I + E) into an rnnkit.nn RNN/LSTM/GRU (one layer, hidden size H),
    then ``o_t = h_t V^T + c``. ``e`` is an Embedding (V, E) (E defaults to H) for tokens, the
    identity for real values (E = O).

    Same interface as :class:`OutputRecurrentRNN`: ``o = model(y_prev, x)`` (the whole
    sequence in the fused C++ kernel), ``backward(dout)``, :meth:`generate`, step protocol
    (the rnn's own :meth:`~rnnkit.nn.LSTM.step`). Children: ``embed``, ``rnn``, ``out``.
    """

    def __init__(
        self,
        hidden_size: int,
        *,
        cell: str = GRU_CELL.name,
        vocab_size: int | None = None,
        output_size: int | None = None,
        input_size: int = 0,
        embedding_dim: int | None = None,
        dtype: npt.DTypeLike = np.float32,
        seed: int | None = None,
    ) -> None:
        self._init_io(hidden_size, vocab_size, output_size, input_size, embedding_dim, dtype)
        cls = module_class(cell)
        self.cell = cls.CELL.name
        s = seeds(seed, 3)
        self.embed: Embedding | None
        if self.vocab_size is not None:  # discrete
            E = embedding_dim or self.hidden_size
            self.embed = Embedding(self.vocab_size, E, dtype=self.dtype, seed=s[0])
        else:
            E, self.embed = self.n_out, None
        self._E = E
        self.rnn = cls(self.input_size + E, self.hidden_size, dtype=self.dtype, seed=s[1])
        self.out = Linear(self.hidden_size, self.n_out, dtype=self.dtype, seed=s[2])
        self._cache = None

    def _inputs(self, prev, x):
        e = self.embed.weight.data[prev] if self.embed is not None else prev  # tokens: embedded
        return e if x is None else np.concatenate([x, e], axis=-1)

    def _d_inputs(self, prev, dinp):
        dx = dinp[..., : self.input_size] if self.input_size else None
        de = dinp[..., self.input_size :]
        if self.embed is not None:  # discrete
            self.embed.accumulate(prev, de)
            return dx, None
        return dx, np.ascontiguousarray(de)

    def forward(self, y_prev: npt.ArrayLike, x: npt.ArrayLike | None = None, state: Any = None) -> np.ndarray:
        """y_prev (T, B) or (T, B, O); x (T, B, I) or None; state: the rnn's initial state
        (h0 (1, B, H), or (h0, c0) for the LSTM) or None. Returns o (T, B, V or O)."""
        self._cache = None
        y_prev = self._check_prev_sequence(y_prev)
        x = self._check_x("x", x, y_prev.shape[:2])
        hs, self.final_state = self.rnn(self._inputs(y_prev, x), state)
        o = self.out.forward(hs) if self.training else self.out.apply(hs)
        if self.training:
            self._cache = y_prev
        return o

    def backward(self, dout: npt.ArrayLike) -> tuple[np.ndarray | None, np.ndarray | None]:
        """dout (T, B, V or O). Returns ``(dx (T, B, I) or None, dy_prev or None)``."""
        y_prev = self._need_cache()
        dout = self._check_input("dout", dout)
        dh = self.out.backward(dout)
        dinp, _ = self.rnn.backward(dh)
        return self._d_inputs(y_prev, dinp)

    # ------------------------------------------------------------------ step protocol

    def initial_state(self, B: int) -> None:
        """The rnn's zero state (None); starts a new sequence (empties the rnn's step tape)."""
        self.rnn.clear_steps()
        return None

    def step(
        self, prev: np.ndarray, x_t: np.ndarray | None, state: Any, keep: bool = True
    ) -> tuple[np.ndarray, Any, Any]:
        """One step: prev (B,) or (B, O); x_t (B, I) or None; state: the rnn's state (h (1, B, H),
        for the LSTM (h, c)) or None. Returns ``(o_t, new state, cache)``; with keep, the rnn
        keeps its part on its step tape (:meth:`rnnkit.nn.LSTM.step`)."""
        h, state = self.rnn.step(self._inputs(prev, x_t), state, keep=keep)
        return self.out.apply(h), state, ((prev, h) if keep else None)

    def step_backward(
        self, dout_t: np.ndarray, dstate: Any, cache: Any
    ) -> tuple[np.ndarray | None, np.ndarray | None, Any]:
        """dout_t (B, V) or (B, O): the gradient w.r.t. this step's output. Returns
        ``(dprev, dx_t, dstate)``: dprev (B, O) for real-valued inputs (None for tokens), dx_t
        (B, I) or None, and the state's gradient for the previous step; adds into .grad."""
        prev, h = cache
        dh = self.out.accumulate(h, dout_t)
        dinp, dstate_prev = self.rnn.step_backward(dh, dstate)
        dx, dprev = self._d_inputs(prev, dinp)
        return dprev, dx, dstate_prev

    def __repr__(self):
        what = f"vocab_size={self.vocab_size}" if self.discrete else f"output_size={self.output_size}"
        return f"RecurrentDecoder({self.hidden_size}, cell={self.cell!r}, {what})"

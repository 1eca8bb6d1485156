"""Encoder-decoder with attention: :class:`Seq2Seq`.

Shape letters: S source steps, T target steps, B batch, N rows of a decoding batch (B, or
B*K with K beams), E embedding size, He encoder hidden size, D encoder directions (2 if
bidirectional), M = D*He the memory (encoder output) size, H decoder hidden size, F the size
of the fed vector, V the target vocabulary, Vs the source vocabulary. Tokens are integer
arrays, time-major like the rest of rnnkit: ``src (S, B)``, ``tgt (T, B)``.

The model, step t of the decoder (Luong et al., 2015, with input feeding)::

    x_t   = [E_tgt[y_{t-1}] ; f_{t-1}]              y_{-1} = bos, f_{-1} = 0
    s_t   = cell(x_t, s_{t-1})                       any cell: "rnn", "lstm" or "gru"
    c_t, a_t = attention(s_t, memory, mask)          additive, dot or general; a_t (S,)
    h~_t  = tanh(W_c [s_t ; c_t] + b_c)              the attentional state (H)
    logits_t = W_o h~_t + b_o                        (V)
    f_t   = h~_t  (input_feeding="attentional")  or  c_t  ("context")  or nothing (None)

The memory is the encoder's output: an rnnkit.nn RNN/LSTM/GRU (``encoder_layers`` layers,
optionally bidirectional) over the source embeddings, run over each sequence's own length
(``src_lengths``); padded steps are masked out of the attention. The decoder starts from
``s_0 = tanh(W_h [h_fwd ; h_bwd] + b_h)`` of the encoder's final states (top layer); an LSTM
decoder after an LSTM encoder also gets ``c_0 = W_cc [c_fwd ; c_bwd] + b_cc`` (else c_0 = 0).
Without attention (``attention=None``) the logits come from s_t directly and nothing is fed:
the classic encoder-decoder whose only link to the source is s_0.

Options that change the equations above (the defaults are the equations above):

* ``bridge``: "linear_tanh" (s_0 as above), "copy" (s_0 = [h_fwd ; h_bwd], and c_0 the
  encoder's final c for LSTM to LSTM; needs M = H) or None (s_0 = 0, c_0 = 0).
* ``combine=False``: no W_c; logits_t = W_o s_t + b_o (input feeding "context" or None).
* ``combine_embedding=True`` (Bahdanau et al., 2015's output from ``[s_t ; c_t ; y_{t-1}]``,
  without its maxout): the combine layer also reads the fed token's embedding,
  ``h~_t = tanh(W_c [s_t ; c_t ; E_tgt[y_{t-1}]] + b_c)`` (W_c is (H, H + M + E)).
* ``attention_bias=True``: additive attention with both projections biased,
  ``v . tanh(W_q s + b_q + W_k m_j + b_k)`` (two torch.nn.Linear layers).
* ``attention_before_step=True`` (Bahdanau et al., 2015; the PyTorch translation tutorial's
  ``AttnDecoderRNN``), with input_feeding=None::

      c_t, a_t = attention(s_{t-1}, memory, mask)      at t = 0 over s_0
      s_t   = cell([E_tgt[y_{t-1}] ; c_t], s_{t-1})     the decoder's input is E + M wide
      logits_t = W_o tanh(W_c [s_t ; c_t] + b_c) + b_o  (combine=True) or W_o s_t + b_o

* ``padding_idx=None``: embeddings without a zero, gradient-free padding row.
* ``embedding_dropout=p``: in training-mode forwards, both embeddings' outputs are multiplied
  by masks of 0 and 1/(1-p) (drawn per forward; backward goes through the same masks).
* ``batch_first=True``: tokens ``src (B, S)``, ``tgt (B, T)``, logits and dlogits (B, T, V)
  (:meth:`Seq2Seq.encode` and the decoding functions take ``src (B, S)`` too).

Training: ``logits = model(src, tgt, src_lengths)`` (T, B, V), where step t predicts tgt[t]
from bos, tgt[0], ..., tgt[t-1] (teacher forcing). ``tgt`` holds each target followed by
``eos_id`` and padded with ``pad_id``; the loss :meth:`Seq2Seq.make_loss` ignores padding.
``model.backward(dlogits)`` adds exact gradients into every parameter's ``.grad`` (through the
decoder steps, the attention, the bridge and the encoder). Scheduled sampling (Bengio et al.,
2015): with ``teacher_prob=p < 1`` (or a schedule from :mod:`rnnkit.models.sampling` set with
:meth:`Seq2Seq.set_scheduled_sampling`) the input at step t >= 1 is the ground truth with
probability p per sequence and step, else the model's own previous prediction (argmax, or
sampled); backward is exact for the path taken (a fed token carries no gradient).

Decoding: :meth:`Seq2Seq.encode` and :meth:`Seq2Seq.decode_step` (batched over N rows) are
what :mod:`rnnkit.models.decoding` (greedy search, beam search) is built on.

For :func:`rnnkit.train.fit`, ``model(x)`` also accepts one tuple
``x = (src, tgt, src_lengths)`` and the targets are ``y = tgt``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import numpy.typing as npt

from .. import _validate as _v
from .._cells import LSTM_CELL
from ..nn import (
    AdditiveAttention,
    AttentionMemory,
    CrossEntropyLoss,
    DotAttention,
    Embedding,
    Linear,
    Module,
    make_attention,
    module_class,
)
from ..ops.attention import lengths_to_mask
from .decoding import DecodeResult, beam_search, greedy_decode
from .sampling import SamplingPlan, teacher_forcing_mask

__all__ = ["Seq2Seq", "DecoderState", "Encoded"]

_FEEDS = ("attentional", "context", None)
_BRIDGES = ("linear_tanh", "copy", None)


@dataclass(eq=False)
class DecoderState:
    """The decoder's state between steps: h (N, H), c (N, H) for an LSTM decoder (else None),
    feed (N, F) the vector fed into the next step (None without input feeding)."""

    h: np.ndarray
    c: np.ndarray | None
    feed: np.ndarray | None

    def take(self, idx: np.ndarray) -> DecoderState:
        """The state of rows ``idx`` (N,) (reordering / repeating rows, e.g. for beams):
        every array goes from (B, ...) to (N, ...)."""
        return DecoderState(
            self.h[idx],
            None if self.c is None else self.c[idx],
            None if self.feed is None else self.feed[idx],
        )


@dataclass(eq=False)
class Encoded:
    """:meth:`Seq2Seq.encode`'s result: the attention memory (None without attention), the
    decoder's initial state, and the source lengths (B,) (S each if none were given)."""

    memory: AttentionMemory | None
    state: DecoderState
    src_lengths: np.ndarray

    @property
    def batch_size(self) -> int:
        return self.state.h.shape[0]

    def take(self, idx: np.ndarray) -> Encoded:
        """Rows ``idx`` (N,) of everything (e.g. ``np.repeat(np.arange(B), K)`` for K beams):
        every array goes from (B, ...) to (N, ...)."""
        return Encoded(
            None if self.memory is None else self.memory.take(idx),
            self.state.take(idx),
            self.src_lengths[idx],
        )


class Seq2Seq(Module):
    """Encoder-decoder with attention (see the module docstring for the equations).

    Args:
        src_vocab, tgt_vocab: vocabulary sizes Vs and V (token ids in [0, V)).
        embedding_dim: E, for both embeddings (``src_embed``, ``tgt_embed``; the pad row is 0).
        hidden_size: H, the decoder's hidden size (and h~'s).
        encoder_cell, decoder_cell: "rnn", "lstm" or "gru" (decoder_cell defaults to the
            encoder's).
        encoder_hidden_size: He (default H // 2 if bidirectional else H, so that M = H).
        encoder_layers, bidirectional: the encoder's depth and directions.
        attention: "additive" (Bahdanau), "dot", "general", "concat" (Luong's three scores;
            "concat", v . tanh(W_a [s_t ; m_j]), is "additive" without biases) or None.
        attention_size: A of additive attention (default H).
        input_feeding: "attentional" (feed h~_{t-1}), "context" (feed c_{t-1}) or None;
            ignored (None) without attention.
        bridge: "linear_tanh", "copy" or None (zeros): how s_0 (and c_0) come from the
            encoder's final states (ValueError for "copy" unless M = H).
        combine: with attention, logits from h~_t (True) or from s_t (False).
        combine_embedding: the combine layer also reads E_tgt[y_{t-1}] (needs combine).
        attention_bias: additive attention's b_q and b_k (both, or neither).
        attention_before_step: attend from s_{t-1} and feed c_t into the step (module
            docstring); needs input_feeding=None.
        padding_idx: the embeddings' padding row: "pad_id" (the default: pad_id) or None.
        embedding_dropout: dropout probability p in [0, 1) on both embeddings (training only).
        batch_first: tokens (B, S), (B, T) and logits (B, T, V) instead of time-major.
        pad_id, bos_id, eos_id: special target tokens (pad_id also pads sources).
        dtype: float32 or float64. seed: initialisation.

    Children (dotted parameter names): ``src_embed``, ``tgt_embed``, ``encoder``,
    ``bridge`` (and ``bridge_c``), ``decoder`` (an rnnkit.nn module, one layer, whose
    ``weight_ih_l0`` takes ``[E ; F]``), ``attention``, ``combine`` (W_c), ``out`` (W_o).
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        *,
        embedding_dim: int = 64,
        hidden_size: int = 128,
        encoder_cell: str = LSTM_CELL.name,
        decoder_cell: str | None = None,
        encoder_hidden_size: int | None = None,
        encoder_layers: int = 1,
        bidirectional: bool = True,
        attention: str | None = "additive",
        attention_size: int | None = None,
        input_feeding: str | None = "attentional",
        bridge: str | None = "linear_tanh",
        combine: bool = True,
        combine_embedding: bool = False,
        attention_bias: bool = False,
        attention_before_step: bool = False,
        padding_idx: int | str | None = "pad_id",
        embedding_dropout: float = 0.0,
        batch_first: bool = False,
        pad_id: int = 0,
        bos_id: int = 1,
        eos_id: int = 2,
        dtype: npt.DTypeLike = np.float32,
        seed: int | None = None,
    ) -> None:
        self.src_vocab = _v.int_arg("src_vocab", src_vocab)
        self.tgt_vocab = _v.int_arg("tgt_vocab", tgt_vocab)
        E = self.embedding_dim = _v.int_arg("embedding_dim", embedding_dim)
        H = self.hidden_size = _v.int_arg("hidden_size", hidden_size)
        encoder_cls = module_class(encoder_cell, "encoder_cell")
        decoder_cls = module_class(decoder_cell or encoder_cell, "decoder_cell")
        self.encoder_cell, self.decoder_cell = encoder_cls.CELL.name, decoder_cls.CELL.name
        self.bidirectional = _v.flag("bidirectional", bidirectional)
        D = 2 if self.bidirectional else 1
        if encoder_hidden_size is None:
            encoder_hidden_size = max(1, H // D)
        He = self.encoder_hidden_size = _v.int_arg("encoder_hidden_size", encoder_hidden_size)
        self.encoder_layers = _v.int_arg("encoder_layers", encoder_layers)
        if attention is not None:
            _v.choice("attention", attention, ("additive", "dot", "general", "concat"))
            if attention == "concat" and attention_bias:
                raise ValueError(
                    "attention_bias: Luong's 'concat' score v . tanh(W_a [s_t ; m_j]) has no biases; "
                    "use attention='additive' with attention_bias=True, got True"
                )
        self.attention_kind = attention
        _v.choice("input_feeding", input_feeding, _FEEDS)
        self.input_feeding = input_feeding if attention is not None else None
        self.bridge_kind = _v.choice("bridge", bridge, _BRIDGES)
        self.has_combine = _v.flag("combine", combine) and attention is not None
        self.combine_embedding = _v.flag("combine_embedding", combine_embedding)
        if self.combine_embedding and not self.has_combine:
            raise ValueError(
                "combine_embedding: expected False without the combine layer (combine=False or "
                "attention=None): it adds the token's embedding to that layer's input, got True"
            )
        self.attention_before_step = _v.flag("attention_before_step", attention_before_step)
        self.embedding_dropout = _v.real("embedding_dropout", embedding_dropout, 0.0, 1.0, hi_open=True)
        self.batch_first = _v.flag("batch_first", batch_first)
        if self.attention_before_step and attention is None:
            raise ValueError(
                "attention_before_step: expected False without attention (attention=None), got True"
            )
        if self.attention_before_step and self.input_feeding is not None:
            raise ValueError(
                "input_feeding: expected None with attention_before_step=True (the step's input "
                f"already holds the context), got {input_feeding!r}"
            )
        if not self.has_combine and self.input_feeding == "attentional":
            raise ValueError(
                "input_feeding: 'attentional' feeds the combine layer's output; with combine=False "
                "expected 'context' or None, got 'attentional'"
            )
        for name, tok in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
            if (
                isinstance(tok, bool)
                or not isinstance(tok, numbers.Integral)
                or not 0 <= int(tok) < self.tgt_vocab
            ):
                raise ValueError(
                    f"{name}: expected a token id in [0, tgt_vocab) = [0, {self.tgt_vocab}), got {tok!r}"
                )
        if pad_id >= self.src_vocab:
            raise ValueError(
                f"pad_id: expected a token id in [0, src_vocab) = "
                f"[0, {self.src_vocab}) (sources are padded with it too), got "
                f"{pad_id}"
            )
        self.pad_id, self.bos_id, self.eos_id = int(pad_id), int(bos_id), int(eos_id)
        if isinstance(padding_idx, str):
            _v.choice("padding_idx", padding_idx, ("pad_id",))
            padding_idx = self.pad_id
        self.dtype = _v.dtype_arg(dtype)
        M = self.memory_size = D * He
        F = {"attentional": H, "context": M, None: 0}[self.input_feeding]
        self.feed_size = F
        if self.attention_before_step:
            F = M  # the decoder's input is [E_tgt[y_{t-1}] ; c_t]
        if self.bridge_kind == "copy" and M != H:
            raise ValueError(
                f"bridge: 'copy' needs the encoder's final state size D*He = {M} to equal "
                f"hidden_size = {H}; set encoder_hidden_size (or bidirectional), or use 'linear_tanh'"
            )
        if attention == "dot" and M != H:
            raise ValueError(
                f"attention: 'dot' needs the memory size D*He = {M} to equal "
                f"hidden_size = {H}; set encoder_hidden_size, or use 'general'"
            )

        ss = np.random.SeedSequence(seed).spawn(10)
        dt = self.dtype
        self.src_embed = Embedding(self.src_vocab, E, padding_idx=padding_idx, dtype=dt, seed=_seed(ss[0]))
        self.tgt_embed = Embedding(self.tgt_vocab, E, padding_idx=padding_idx, dtype=dt, seed=_seed(ss[1]))
        self.encoder = encoder_cls(
            E, He, self.encoder_layers, bidirectional=self.bidirectional, dtype=dt, seed=_seed(ss[2])
        )
        both_c = encoder_cls.CELL.has_cell_state and decoder_cls.CELL.has_cell_state
        linear = self.bridge_kind == "linear_tanh"
        self.bridge = Linear(M, H, dtype=dt, seed=_seed(ss[3])) if linear else None
        self.bridge_c = Linear(M, H, dtype=dt, seed=_seed(ss[4])) if linear and both_c else None
        self.copy_c = self.bridge_kind == "copy" and both_c  # c_0 = the encoder's final c
        self.decoder = decoder_cls(E + F, H, dtype=dt, seed=_seed(ss[5]))
        self.attention: AdditiveAttention | DotAttention | None
        self.combine: Linear | None = None
        self.attention = None
        if attention is not None:
            kind = "additive" if attention == "concat" else attention  # the same score
            self.attention = make_attention(
                kind, H, M, attention_size, bias=_v.flag("attention_bias", attention_bias),
                dtype=dt, seed=_seed(ss[6]),
            )  # fmt: skip
            if self.has_combine:
                Ez = E if self.combine_embedding else 0  # [s_t ; c_t (; E_tgt[y_{t-1}])]
                self.combine = Linear(H + M + Ez, H, dtype=dt, seed=_seed(ss[7]))
        self.out = Linear(H, self.tgt_vocab, dtype=dt, seed=_seed(ss[8]))
        self._dropout_rng = np.random.default_rng(ss[9])  # embedding dropout masks
        self.plan: SamplingPlan | None = None  # scheduled sampling (set_scheduled_sampling)
        self.last_teacher_prob = 1.0
        self._cache = None

    # ------------------------------------------------------------------ configuration

    def make_loss(self) -> CrossEntropyLoss:
        """The training loss: mean cross-entropy over the non-padding target tokens."""
        return CrossEntropyLoss(ignore_index=self.pad_id)

    def set_scheduled_sampling(
        self,
        schedule: Callable[[int], float] | None,
        *,
        seed: int = 0,
        greedy: bool = True,
        temperature: float = 1.0,
    ) -> None:
        """Use scheduled sampling in training-mode forwards that get no ``teacher_prob``: the
        i-th such forward feeds the ground truth with probability ``schedule(i)`` (e.g.
        ``rnnkit.sampling.InverseSigmoidDecay(k)``), coins from a generator seeded by
        (seed, i), the model's own token by argmax (greedy) or sampled with ``temperature``.
        ``schedule=None`` returns to teacher forcing. Resets the step count to 0."""
        if schedule is not None and not callable(schedule):
            raise TypeError(
                f"schedule: expected a callable i -> probability or None, got {type(schedule).__name__}"
            )
        plan = SamplingPlan(schedule or (lambda i: 1.0), seed=seed, greedy=greedy, temperature=temperature)
        self.plan = plan if schedule is not None else None

    @property
    def schedule(self) -> Callable[[int], float] | None:
        """The scheduled-sampling schedule (None: teacher forcing)."""
        return None if self.plan is None else self.plan.schedule

    @property
    def sampling_step(self) -> int:
        """How many training forwards the schedule has served."""
        return 0 if self.plan is None else self.plan.step_count

    # ------------------------------------------------------------------ checks

    def _check_tokens(self, name: str, tok: Any, V: int, sym: str) -> np.ndarray:
        """Token ids (2-D) as time-major (steps, B) (transposed from (B, steps) if batch_first)."""
        tok = _v.index_array(name, tok, V)
        if self.batch_first:
            sym = "(" + ", ".join(reversed(sym[1:-1].split(", "))) + ")"
        if tok.ndim != 2:
            raise ValueError(f"{name}: expected token ids of shape {sym}, got shape {tok.shape}")
        return np.ascontiguousarray(tok.T) if self.batch_first else tok

    def _dropout_mask(self, shape: tuple[int, ...], train: bool) -> np.ndarray | None:
        """Embedding dropout's mask (0 or 1/(1-p)) of ``shape``, or None (eval, or p = 0)."""
        p = self.embedding_dropout
        if not train or p == 0:
            return None
        return (self._dropout_rng.random(shape) >= p).astype(self.dtype) / self.dtype.type(1 - p)

    def _check_src(self, src: Any, src_lengths: Any) -> tuple[np.ndarray, np.ndarray | None]:
        src = self._check_tokens("src", src, self.src_vocab, "(S, B)")
        S, B = src.shape
        if S == 0:
            shape = src.T.shape if self.batch_first else src.shape  # as given
            raise ValueError(f"src: expected at least one source step, got shape {shape}")
        return src, _v.lengths_array(src_lengths, S, B)

    # ------------------------------------------------------------------ encoder

    def _encode(self, src, src_lengths, train=False):
        """Runs the encoder (keeping its workspace in training mode) and the bridge; ``train``:
        embedding dropout. Returns (Encoded, what backward needs)."""
        S, B = src.shape
        D = 2 if self.bidirectional else 1
        x = self.src_embed.weight.data[src]  # (S, B, E)
        drop = self._dropout_mask(x.shape, train)
        if drop is not None:
            x = x * drop
        out, final = self.encoder(x, None, src_lengths)  # out (S, B, M)
        h_n, c_n = final if self.encoder.CELL.has_cell_state else (final, None)
        h_last = np.concatenate(list(h_n[-D:]), axis=1)  # (B, M): [forward ; backward]
        if self.bridge is not None:
            h0 = np.tanh(self.bridge.apply(h_last))
        elif self.bridge_kind == "copy":
            h0 = h_last.copy()
        else:
            h0 = np.zeros((B, self.hidden_size), self.dtype)
        c_last = c0 = None
        if self.decoder.CELL.has_cell_state:
            if self.bridge_c is not None or self.copy_c:
                assert c_n is not None  # both exist only when the encoder has a cell state
                c_last = np.concatenate(list(c_n[-D:]), axis=1)
                c0 = self.bridge_c.apply(c_last) if self.bridge_c is not None else c_last.copy()
            else:
                c0 = np.zeros((B, self.hidden_size), self.dtype)
        feed = np.zeros((B, self.feed_size), self.dtype) if self.input_feeding else None
        mem = None
        if self.attention is not None:
            mask = None if src_lengths is None else lengths_to_mask(src_lengths, S)
            mem = self.attention.memory(np.ascontiguousarray(out.transpose(1, 0, 2)), None, mask)
        lengths = src_lengths if src_lengths is not None else np.full(B, S, np.int64)
        enc = Encoded(mem, DecoderState(h0, c0, feed), lengths)
        return enc, dict(src=src, h_last=h_last, c_last=c_last, h0=h0, S=S, B=B, drop=drop)

    def _encode_backward(self, ecache, dmem, dh0, dc0):
        D = 2 if self.bidirectional else 1
        L, He, B = self.encoder_layers, self.encoder_hidden_size, ecache["B"]
        h0 = ecache["h0"]
        dh_n = np.zeros((L * D, B, He), self.dtype)
        if self.bridge_kind is not None:
            if self.bridge is not None:
                dh_last = self.bridge.accumulate(ecache["h_last"], dh0 * (1 - h0 * h0))  # (B, M)
            else:
                dh_last = dh0  # copy
            for d in range(D):
                dh_n[(L - 1) * D + d] = dh_last[:, d * He : (d + 1) * He]
        # dh_n, or (dh_n, dc_n) for an encoder with a cell state: what its family's backward takes
        d_final: Any = dh_n
        if self.encoder.CELL.has_cell_state:
            dc_n = None
            if (self.bridge_c is not None or self.copy_c) and dc0 is not None:
                if self.bridge_c is not None:
                    dc_last = self.bridge_c.accumulate(ecache["c_last"], dc0)
                else:
                    dc_last = dc0
                dc_n = np.zeros((L * D, B, He), self.dtype)
                for d in range(D):
                    dc_n[(L - 1) * D + d] = dc_last[:, d * He : (d + 1) * He]
            d_final = (dh_n, dc_n)
        dout = None if dmem is None else np.ascontiguousarray(dmem.transpose(1, 0, 2))
        dx, _ = self.encoder.backward(dout, d_final)  # (S, B, E)
        if ecache["drop"] is not None:
            dx = dx * ecache["drop"]
        self.src_embed.accumulate(ecache["src"], dx)

    # ------------------------------------------------------------------ decoder step

    def _cell(self, x, h, c, keep):
        """One decoder step (:meth:`rnnkit.nn.LSTM.step`): x (N, E+F), h, c (N, H) (c None but
        for an LSTM decoder). Returns (h, c or None, None); with keep, the decoder keeps its
        part on its step tape."""
        if c is not None:
            h2, (h_n, c_n) = self.decoder.step(x, (h[None], c[None]), keep=keep)
            return h2, c_n[0], None
        h2, _ = self.decoder.step(x, h[None], keep=keep)
        return h2, None, None

    def _cell_backward(self, dh, dc, cache):
        """Backward of the most recent kept decoder step: dh, dc (N, H) (dc None but for an LSTM
        decoder). Returns (dx (N, E+F), dh_prev, dc_prev or None); adds the weight gradients."""
        if self.decoder.CELL.has_cell_state:
            dx, (dh_prev, dc_prev) = self.decoder.step_backward(dh, (None, None if dc is None else dc[None]))
            return dx, dh_prev[0], dc_prev[0]
        dx, dh_prev = self.decoder.step_backward(dh, None)
        return dx, dh_prev[0], None

    def _step(self, tok, state, mem, keep, drop=None):
        """One decoder step for tokens (N,) from ``state`` (``drop`` (N, E): the embedding's
        dropout mask, or None). Returns (o (N, H) the input of the output layer, new
        DecoderState, attention weights (N, S) or None, cache)."""
        e = self.tgt_embed.weight.data[tok]  # (N, E)
        if drop is not None:
            e = e * drop
        if self.attention is None:
            h, c, ccache = self._cell(e, state.h, state.c, keep)
            return h, DecoderState(h, c, None), None, ((tok, ccache) if keep else None)
        if self.attention_before_step:  # c_t from s_{t-1}, then s_t = cell([e ; c_t], s_{t-1})
            ctx, w, acache = self.attention.attend(state.h, mem, keep=keep)
            h, c, ccache = self._cell(np.concatenate([e, ctx], axis=1), state.h, state.c, keep)
        else:  # s_t = cell([e ; f_{t-1}], s_{t-1}), then c_t from s_t
            x = e if state.feed is None else np.concatenate([e, state.feed], axis=1)
            h, c, ccache = self._cell(x, state.h, state.c, keep)
            ctx, w, acache = self.attention.attend(h, mem, keep=keep)
        z = ht = None
        o = h
        if self.combine is not None:
            parts = [h, ctx, e] if self.combine_embedding else [h, ctx]
            z = np.concatenate(parts, axis=1)  # (N, H + M (+ E))
            o = ht = np.tanh(self.combine.apply(z))
        feed = {"attentional": ht, "context": ctx, None: None}[self.input_feeding]
        cache = (tok, ccache, acache, z, ht) if keep else None
        return o, DecoderState(h, c, feed), w, cache

    # ------------------------------------------------------------------ training

    def forward(
        self,
        src: npt.ArrayLike,
        tgt: npt.ArrayLike | None = None,
        src_lengths: npt.ArrayLike | None = None,
        *,
        teacher_prob: float | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Teacher-forced (or scheduled-sampling) forward.

        Args: src (S, B) source tokens (padded with pad_id past each length); tgt (T, B)
        target tokens (each target followed by eos_id, then pad_id); src_lengths (B,) in
        [1, S] or None (all S); teacher_prob: probability of feeding the ground truth (None:
        the schedule of :meth:`set_scheduled_sampling` in training mode, else 1); rng: a numpy
        Generator for the coins (default: seeded by the schedule's seed and step).
        ``src`` may also be a tuple ``(src, tgt, src_lengths)`` (for rnnkit.training.fit).

        Returns logits (T, B, V): step t scores tgt[t] given the source and the previous
        inputs. In training mode keeps what :meth:`backward` needs. With batch_first, src
        (B, S), tgt (B, T) and logits (B, T, V).
        """
        if tgt is None and isinstance(src, tuple):
            if len(src) not in (2, 3):
                raise TypeError("src: a tuple must be (src, tgt) or (src, tgt, src_lengths)")
            src, tgt, src_lengths = (tuple(src) + (None,))[:3]
        if tgt is None:
            raise TypeError("tgt: expected target tokens (T, B), got None")
        self._cache = None
        self.decoder.clear_steps()  # the decoder's step tape belongs to this forward alone
        src, src_lengths = self._check_src(src, src_lengths)
        tgt = self._check_tokens("tgt", tgt, self.tgt_vocab, "(T, B)")
        S, B = src.shape
        T = tgt.shape[0]
        if tgt.shape[1] != B:
            shape = tgt.T.shape if self.batch_first else tgt.shape
            sym = "(B, T)" if self.batch_first else "(T, B)"
            raise ValueError(f"tgt: expected batch size B = {B} (src's) in shape {sym}, got {shape}")
        coins, rng = self._coins(T, B, teacher_prob, rng)
        keep = self.training
        enc, ecache = self._encode(src, src_lengths, train=keep)
        drop = self._dropout_mask((T, B, self.embedding_dim), keep)
        state, mem = enc.state, enc.memory
        outs, caches, toks = [], [], np.empty((T, B), np.int64)
        logits_steps: list[np.ndarray] = []  # per step, when sampling (coins)
        pred: np.ndarray | None = None  # the model's own tokens of the previous step (sampling)
        for t in range(T):
            tok: np.ndarray
            if t == 0:
                tok = np.full(B, self.bos_id, np.int64)
            elif coins is None:
                tok = tgt[t - 1]
            else:
                assert pred is not None  # set at step t-1 whenever coins are drawn
                tok = np.where(coins[t], tgt[t - 1], pred)
            toks[t] = tok
            o, state, _, cache = self._step(tok, state, mem, keep, None if drop is None else drop[t])
            outs.append(o)
            caches.append(cache)
            if coins is not None:
                lg = self.out.apply(o)
                logits_steps.append(lg)
                if t + 1 < T:
                    pred = self._own_tokens(lg, rng)
        O = np.stack(outs)  # (T, B, H)
        logits = np.stack(logits_steps) if coins is not None else self.out.apply(O)
        if keep:
            self._cache = dict(enc=enc, ecache=ecache, O=O, caches=caches, toks=toks, drop=drop)
        return np.ascontiguousarray(logits.transpose(1, 0, 2)) if self.batch_first else logits

    def _coins(self, T, B, teacher_prob, rng):
        """The teacher-forcing coins (T, B) (None: teacher forcing throughout) and the rng."""
        if teacher_prob is None:
            if self.plan is None or not self.training:
                return None, None
            teacher_prob, plan_rng = self.plan.next()
            rng = plan_rng if rng is None else rng
        teacher_prob = _v.probability("teacher_prob", teacher_prob)
        self.last_teacher_prob = teacher_prob
        if teacher_prob == 1:
            return None, None
        if rng is None:
            rng = np.random.default_rng()
        return teacher_forcing_mask(T, B, teacher_prob, rng), rng

    def _own_tokens(self, logits, rng):
        """The model's own next tokens (B,) from logits (B, V), as decoding makes them: pad and
        bos are never chosen; argmax, or sampled from softmax(logits / temperature)."""
        logits = logits.copy()
        logits[:, [self.pad_id, self.bos_id]] = -np.inf
        plan = self.plan or SamplingPlan(lambda i: 1.0)
        return plan.own_tokens(logits, rng)

    def backward(self, dlogits: npt.ArrayLike) -> None:
        """dlogits (T, B, V): the gradient of the loss w.r.t. forward's logits. Adds exact
        gradients into every parameter's ``.grad``. Returns None (tokens have no gradient).
        With batch_first, dlogits (B, T, V)."""
        cache = self._need_cache()
        dlogits = self._check_input("dlogits", dlogits)
        O, caches = cache["O"], cache["caches"]
        T, B, _ = O.shape
        if self.batch_first:
            _v.check_shape("dlogits", dlogits, (B, T, self.tgt_vocab), "(B, T, V)")
            dlogits = np.ascontiguousarray(dlogits.transpose(1, 0, 2))
        else:
            _v.check_shape("dlogits", dlogits, (T, B, self.tgt_vocab), "(T, B, V)")
        enc = cache["enc"]
        mem = enc.memory
        do = self.out.accumulate(O, dlogits)  # (T, B, H)
        E, H = self.embedding_dim, self.hidden_size
        att, combine = self.attention, self.combine  # combine only with the attention
        grads = att.new_grads(mem) if att is not None else None
        de = np.empty((T, B, E), self.dtype)
        dpres, zs = [], []
        dfeed = dh_next = dc_next = None
        W_c = combine.weight.data if combine is not None else None
        for t in reversed(range(T)):
            de_out = None  # the combine layer's gradient of the token's embedding
            if att is None or grads is None:  # (grads exist exactly with the attention)
                tok, ccache = caches[t]
                dh = do[t]
                dctx = None
            else:
                tok, ccache, acache, z, ht = caches[t]
                if W_c is not None:  # o_t = h~_t = tanh(W_c [s_t ; c_t] + b_c)
                    dht = do[t]
                    if self.input_feeding == "attentional" and dfeed is not None:
                        dht = dht + dfeed
                    dpre = dht * (1 - ht * ht)
                    dpres.append(dpre)
                    zs.append(z)
                    dz = dpre @ W_c  # (B, H + M (+ E))
                    M = self.memory_size
                    dh, dctx = dz[:, :H], dz[:, H : H + M]
                    if self.combine_embedding:
                        de_out = dz[:, H + M :]
                else:  # o_t = s_t
                    dh, dctx = do[t], None
                if self.input_feeding == "context" and dfeed is not None:
                    dctx = dfeed if dctx is None else dctx + dfeed
                if not self.attention_before_step and dctx is not None:
                    dh = dh + att.attend_backward(dctx, None, acache, grads)
            if dh_next is not None:
                dh = dh + dh_next
            dx, dh_next, dc_next = self._cell_backward(dh, dc_next, ccache)
            de[t] = dx[:, :E]
            if de_out is not None:
                de[t] += de_out  # the embedding also entered the combine layer
            dfeed = dx[:, E:] if self.input_feeding else None
            if self.attention_before_step:  # c_t = attend(s_{t-1}): into s_{t-1}'s gradient
                assert att is not None and grads is not None
                dctx = dx[:, E:] if dctx is None else dctx + dx[:, E:]
                dh_next = dh_next + att.attend_backward(dctx, None, acache, grads)
        if cache["drop"] is not None:
            de *= cache["drop"]
        self.tgt_embed.accumulate(cache["toks"], de)
        dmem = None
        if att is not None and grads is not None:
            if combine is not None:
                Z = np.stack(zs[::-1]).reshape(T * B, -1)
                DP = np.stack(dpres[::-1]).reshape(T * B, -1)
                assert combine.bias is not None  # made biased
                combine.weight.accumulate(DP.T @ Z)
                combine.bias.accumulate(DP.sum(axis=0))
            dkeys, dvalues = att.memory_backward(mem, grads)
            dmem = dkeys + dvalues
        self._encode_backward(cache["ecache"], dmem, dh_next, dc_next)
        return None

    # ------------------------------------------------------------------ inference

    def encode(self, src: npt.ArrayLike, src_lengths: npt.ArrayLike | None = None) -> Encoded:
        """Encode a batch for decoding (keeps no workspace: sets the encoder to eval mode for
        the call; no dropout). src (S, B) ((B, S) if batch_first); src_lengths (B,) or None.
        Returns an :class:`Encoded`."""
        src, src_lengths = self._check_src(src, src_lengths)
        was = self.encoder.training
        self.encoder.eval()
        try:
            enc, _ = self._encode(src, src_lengths)
        finally:
            self.encoder.train(was)
        return enc

    def decode_step(
        self, tokens: npt.ArrayLike, state: DecoderState, memory: AttentionMemory | None = None
    ) -> tuple[np.ndarray, DecoderState, np.ndarray | None]:
        """One decoder step for N rows: tokens (N,) the previous tokens (bos first), state a
        :class:`DecoderState` (``Encoded.state`` first), memory the ``Encoded.memory`` rows
        matching (None without attention). Returns ``(logits (N, V), new state, attention
        weights (N, S) or None)``; keeps nothing."""
        tokens = _v.index_array("tokens", tokens, self.tgt_vocab)
        if tokens.ndim != 1 or tokens.shape[0] != state.h.shape[0]:
            raise ValueError(
                f"tokens: expected shape (N,) with N = {state.h.shape[0]} (the "
                f"state's rows), got {tokens.shape}"
            )
        o, state, w, _ = self._step(tokens, state, memory, keep=False)
        return self.out.apply(o), state, w

    def greedy(self, src: npt.ArrayLike, src_lengths: npt.ArrayLike | None = None, **kw: Any) -> DecodeResult:
        """Greedy decoding of src (S, B) token ids with src_lengths (B,):
        :func:`rnnkit.models.greedy_decode` (same keywords)."""
        return greedy_decode(self, src, src_lengths, **kw)

    def beam_search(
        self, src: npt.ArrayLike, src_lengths: npt.ArrayLike | None = None, **kw: Any
    ) -> DecodeResult:
        """Beam search over src (S, B) token ids with src_lengths (B,):
        :func:`rnnkit.models.beam_search` (same keywords)."""
        return beam_search(self, src, src_lengths, **kw)

    def __repr__(self):
        enc = (
            f"{self.encoder_cell}(He={self.encoder_hidden_size}, "
            f"layers={self.encoder_layers}{', bidirectional' if self.bidirectional else ''})"
        )
        return (
            f"Seq2Seq(src_vocab={self.src_vocab}, tgt_vocab={self.tgt_vocab}, "
            f"E={self.embedding_dim}, encoder={enc}, decoder={self.decoder_cell}"
            f"(H={self.hidden_size}), attention={self.attention_kind!r}, "
            f"input_feeding={self.input_feeding!r})"
        )


def _seed(ss):
    """An int seed from a SeedSequence (rnnkit.nn modules take ints / None)."""
    return int(ss.generate_state(1, np.uint64)[0])

"""Decoding for :class:`rnnkit.models.Seq2Seq`: greedy search and beam search, batched.

Shape letters: B batch, S source steps, L decoded steps, K beam width, V target vocabulary.
Token arrays are time-major (L, B) like the rest of rnnkit.

Both searches run the decoder one step at a time for all rows at once (beam search over
B*K rows: the encoder output is repeated per beam once, and each step reorders the decoder
states by the surviving beams' parents with one gather); nothing loops over batch rows or
beams in Python. A hypothesis ends with ``eos_id`` (kept in the output, counted in its length)
or at ``max_len`` tokens; the positions after its end hold ``pad_id``. Scores are sums of the
tokens' log-probabilities (float64).

Length normalisation (Wu et al., 2016): hypotheses are compared by
``score / lp(length)``, ``lp(n) = ((5 + n) / 6) ** alpha`` (alpha = ``length_penalty``; 0
compares raw log-probabilities, larger alpha favours longer outputs).

Beam search keeps finished hypotheses in the beam: at step t the K best of {every live
hypothesis extended by every token, every finished hypothesis kept as it is} are kept, live
extensions (all of length t+1) ranked by their raw score and finished ones by the raw score
their normalised score would need at length t+1 -- that is, everything is compared by its
normalised score. It stops when all K hypotheses of every batch row are finished, or after
max_len steps. With K = 1 this is exactly greedy search.

The model: a :class:`rnnkit.models.Seq2Seq`, or any object with this protocol (a model built
by hand from rnnkit's modules, say):

* ``pad_id``, ``bos_id``, ``eos_id``, ``tgt_vocab`` (V); optionally ``batch_first``;
* ``training``, ``eval()`` and ``train(mode)`` (the searches run in eval mode and restore it);
* ``encode(src, src_lengths)`` returning an object with ``batch_size`` (B), ``state``,
  ``memory`` and ``take(idx)`` (its rows ``idx`` (N,), e.g. repeated for the beams), whose
  ``state`` has ``take(idx)`` too (beam search reorders it by the surviving beams' parents);
* ``decode_step(tokens (N,), state, memory)`` returning ``(logits (N, V), new state,
  attention weights (N, S) or None)``.

:func:`score_sequences` also calls ``model(src, tgt, src_lengths)`` for teacher-forced logits
(T, B, V).
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .. import _validate as _v

__all__ = ["DecodeResult", "greedy_decode", "beam_search", "score_sequences", "length_penalty"]


class DecodeResult(NamedTuple):
    """A decoding's output (best hypothesis per row; with ``return_all`` an extra K axis,
    hypotheses best first)."""

    tokens: np.ndarray  # (L, B) [or (L, B, K)] int64: tokens, eos included, then pad_id
    lengths: np.ndarray  # (B,) [or (B, K)]: tokens up to and including eos
    scores: np.ndarray  # (B,) [or (B, K)] float64: sum of the tokens' log-probabilities
    normalized_scores: np.ndarray  # scores / lp(lengths)
    attention: np.ndarray | None  # (L, B, S) [or (L, B, K, S)] weights per token, or None
    eos_id: int

    def as_lists(self, drop_eos: bool = True) -> list[list[int]]:
        """The best hypotheses as lists of token ids (B lists; with an eos dropped)."""
        tok = self.tokens if self.tokens.ndim == 2 else self.tokens[:, :, 0]
        n = self.lengths if self.lengths.ndim == 1 else self.lengths[:, 0]
        out = []
        for b in range(tok.shape[1]):
            seq = tok[: n[b], b].tolist()
            if drop_eos and seq and seq[-1] == self.eos_id:
                seq = seq[:-1]
            out.append(seq)
        return out


def length_penalty(n: npt.ArrayLike, alpha: float) -> np.ndarray:
    """GNMT's length penalty ``((5 + n) / 6) ** alpha`` (1 when alpha is 0), elementwise:
    n (...) lengths -> float64 (...)."""
    n = np.asarray(n, dtype=np.float64)
    return np.ones_like(n) if alpha == 0 else ((5.0 + n) / 6.0) ** alpha


def _log_softmax(logits):
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return z


def _token_logp(model, logits):
    """Log-probabilities (N, V) float64 of the next token; pad and bos are never emitted
    (they are not targets), so theirs are -inf (the others are not renormalised)."""
    logp = _log_softmax(logits)
    logp[:, [model.pad_id, model.bos_id]] = -np.inf
    return logp


def _options(model, src, max_len, alpha):
    src = _v.as_array("src", src)
    batch_first = getattr(model, "batch_first", False)
    if src.ndim != 2:
        sym = "(B, S)" if batch_first else "(S, B)"
        raise ValueError(f"src: expected token ids of shape {sym}, got shape {src.shape}")
    if max_len is None:
        max_len = 2 * src.shape[1 if batch_first else 0] + 10
    max_len = _v.int_arg("max_len", max_len)
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not float(alpha) >= 0:
        raise ValueError(f"length_penalty: expected a number >= 0, got {alpha!r}")
    return max_len, float(alpha)


class _EvalMode:
    """Run the model in eval mode (no caches), restoring its mode afterwards."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was)


def greedy_decode(
    model: Any,
    src: npt.ArrayLike,
    src_lengths: npt.ArrayLike | None = None,
    *,
    max_len: int | None = None,
    length_penalty: float = 0.0,
    return_attention: bool = False,
) -> DecodeResult:
    """Greedy search: at each step the most probable token (argmax).

    Args: model a Seq2Seq or a model of the protocol above; src (S, B); src_lengths (B,) or
    None; max_len (default 2*S + 10);
    length_penalty alpha (only for ``normalized_scores``); return_attention: also the
    attention weights (L, B, S) of each produced token.
    Returns a :class:`DecodeResult` with tokens (L, B). Runs in eval mode (drops a pending
    training cache of the model).
    """
    max_len, alpha = _options(model, src, max_len, length_penalty)
    with _EvalMode(model):
        enc = model.encode(src, src_lengths)
        B = enc.batch_size
        state, mem = enc.state, enc.memory
        tok = np.full(B, model.bos_id, np.int64)
        done = np.zeros(B, bool)
        lengths = np.zeros(B, np.int64)
        scores = np.zeros(B)
        toks, atts = [], []
        rows = np.arange(B)
        for _ in range(max_len):
            logits, state, w = model.decode_step(tok, state, mem)
            logp = _token_logp(model, logits)
            nxt = np.argmax(logp, axis=1)
            scores = np.where(done, scores, scores + logp[rows, nxt])
            lengths += ~done
            nxt = np.where(done, model.pad_id, nxt)
            toks.append(nxt)
            if return_attention and w is not None:
                atts.append(np.where(done[:, None], 0, w))
            done = done | (nxt == model.eos_id)
            tok = nxt
            if done.all():
                break
    att = np.stack(atts) if atts else None
    return DecodeResult(np.stack(toks), lengths, scores, scores / _lp(lengths, alpha), att, model.eos_id)


def _lp(n, alpha):
    return length_penalty(n, alpha)


def _topk(keys, K):
    """Indices (B, K) of the K largest entries of each row of keys (B, C), largest first,
    ties broken by the lower index (as np.argmax)."""
    C = keys.shape[1]
    if C <= 4096 or K * 8 >= C:
        return np.argsort(-keys, axis=1, kind="stable")[:, :K]
    part = np.argpartition(-keys, K - 1, axis=1)[:, :K]
    vals = np.take_along_axis(keys, part, axis=1)
    order = np.lexsort((part, -vals), axis=-1)
    return np.take_along_axis(part, order, axis=1)


def beam_search(
    model: Any,
    src: npt.ArrayLike,
    src_lengths: npt.ArrayLike | None = None,
    *,
    beam_width: int = 5,
    max_len: int | None = None,
    length_penalty: float = 0.0,
    return_all: bool = False,
    return_attention: bool = False,
) -> DecodeResult:
    """Beam search (see the module docstring), batched over B rows x K beams.

    Args: model a Seq2Seq or a model of the protocol above; src (S, B); src_lengths (B,) or
    None; beam_width K >= 1; max_len
    (default 2*S + 10); length_penalty alpha >= 0; return_all: all K hypotheses per row (best
    first) instead of the best; return_attention: the attention weights of each token.
    Returns a :class:`DecodeResult`. Runs in eval mode (drops a pending training cache).
    """
    K = _v.int_arg("beam_width", beam_width)
    max_len, alpha = _options(model, src, max_len, length_penalty)
    pad, eos = model.pad_id, model.eos_id
    with _EvalMode(model):
        enc = model.encode(src, src_lengths)
        B = enc.batch_size
        V = model.tgt_vocab
        encK = enc.take(np.repeat(np.arange(B), K))  # row b*K + k: batch row b
        state, mem = encK.state, encK.memory
        scores = np.full((B, K), -np.inf)
        scores[:, 0] = 0.0  # one live hypothesis (the empty one) per row at the start
        done = np.zeros((B, K), bool)
        lengths = np.zeros((B, K), np.int64)
        tok = np.full(B * K, model.bos_id, np.int64)
        base = (np.arange(B) * K)[:, None]
        hist_tok, hist_parent, hist_att = [], [], []
        for t in range(max_len):
            logits, state, w = model.decode_step(tok, state, mem)
            cand = scores[:, :, None] + _token_logp(model, logits).reshape(B, K, V)  # (B, K, V)
            if done.any():
                # a finished hypothesis has one continuation, itself (pad, score unchanged),
                # ranked by the raw score of length t+1 with the same normalised score
                kept = scores * (_lp(t + 1, alpha) / _lp(np.maximum(lengths, 1), alpha))
                cand[done] = -np.inf
                cand[done, pad] = kept[done]
            flat = cand.reshape(B, K * V)
            top = _topk(flat, K)  # (B, K)
            parent, token = top // V, top % V
            parent_done = np.take_along_axis(done, parent, axis=1)
            scores = np.where(
                parent_done, np.take_along_axis(scores, parent, axis=1), np.take_along_axis(flat, top, axis=1)
            )
            lengths = np.where(parent_done, np.take_along_axis(lengths, parent, axis=1), t + 1)
            token = np.where(parent_done, pad, token)
            done = parent_done | (token == eos)
            rows = (base + parent).reshape(-1)
            state = state.take(rows)
            hist_tok.append(token)
            hist_parent.append(parent)
            if return_attention and w is not None:
                hist_att.append(np.where(parent_done.reshape(-1, 1), 0, w[rows]))
            tok = token.reshape(-1)
            if done.all():
                break
    norm = scores / _lp(np.maximum(lengths, 1), alpha)
    order = np.argsort(-norm, axis=1, kind="stable")  # (B, K) best first
    L = len(hist_tok)
    tokens = np.empty((L, B, K), np.int64)
    att = np.empty((L, B, K, hist_att[0].shape[-1])) if hist_att else None
    cur = order
    bidx = np.arange(B)[:, None]
    for t in reversed(range(L)):
        tokens[t] = np.take_along_axis(hist_tok[t], cur, axis=1)
        if att is not None:
            att[t] = hist_att[t].reshape(B, K, -1)[bidx, cur]
        cur = np.take_along_axis(hist_parent[t], cur, axis=1)
    lengths = np.take_along_axis(lengths, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    norm = np.take_along_axis(norm, order, axis=1)
    if att is not None:
        att = att.astype(model.dtype)
    if not return_all:
        tokens, lengths, scores, norm = tokens[:, :, 0], lengths[:, 0], scores[:, 0], norm[:, 0]
        att = None if att is None else att[:, :, 0]
    n = max(int(lengths.max()), 1)  # steps past every returned hypothesis's end: all padding
    return DecodeResult(tokens[:n], lengths, scores, norm, None if att is None else att[:n], eos)


def score_sequences(
    model: Any, src: npt.ArrayLike, tgt: npt.ArrayLike, src_lengths: npt.ArrayLike | None = None
) -> np.ndarray:
    """Sum of the log-probabilities (B,) float64 that the model gives the targets tgt (T, B)
    (each a hypothesis ending with eos, or cut at T, then padded with pad_id), by
    teacher forcing; pad positions count nothing. Runs in eval mode."""
    tgt = _v.as_array("tgt", tgt)
    with _EvalMode(model):
        logits = model(src, tgt, src_lengths)
    logp = _log_softmax(logits)
    picked = np.take_along_axis(logp, tgt[..., None].astype(np.int64), axis=2)[..., 0]
    return np.where(tgt == model.pad_id, 0.0, picked).sum(axis=0)

"""Attention: additive (Bahdanau) and multiplicative (Luong: dot, general), with a mask for
padded memory (encoder) steps; forward and exact backward, the hot part fused in C++.

Shape letters: B batch, T query (target) steps, S source (memory) steps, Hq query size,
Hk key size, Hv value size, A attention size. Queries are ``(B, T, Hq)``, or ``(B, Hq)`` for
a single step (a decoder step): then the context is ``(B, Hv)`` and the weights ``(B, S)``.
Keys ``(B, S, Hk)`` and values ``(B, S, Hv)`` are batch-first (in a sequence-to-sequence
model both are the encoder outputs: pass the same array twice and add the two gradients).

Scores, for query q_t and key k_j (j < S):

    additive   e_tj = v . tanh(W_q q_t + b + W_k k_j)      W_q (A, Hq), W_k (A, Hk), v (A,), b (A,)
    dot        e_tj = scale * q_t . k_j                    (Hq = Hk; scale 1 is Luong's dot)
    general    e_tj = q_t^T W_a k_j                        W_a (Hq, Hk)

then ``weights[:, t] = softmax_j(e_tj)`` over the unmasked j (0 at masked j) and
``context_t = sum_j weights_tj values_j``. ``mask (B, S)``: True (or nonzero) where the memory
step is real, False at padding; None attends everywhere; :func:`lengths_to_mask` makes one from
lengths. A row with no unmasked step gets all-zero weights and a zero context.

Forward functions return ``(context, weights, cache)``; backward takes the gradients of the
context and of the weights (either may be None) and the cache, and returns a NamedTuple of
fresh arrays, one per input (``db`` None without a bias). Keys, values and projections of the
keys are computed once per call (one GEMM); the scores, masked softmax and weighted sums run
in C++ (``rnnkit._core.attention_*``), batched over B and T with the GIL released.

The module classes :class:`AdditiveAttention`, :class:`DotAttention` and
:class:`GeneralAttention` hold the parameters (:class:`rnnkit.nn.Parameter`, gradients
accumulated into ``.grad``) and add a step interface for decoders that attend once per step:
``mem = attn.memory(keys, values, mask)`` projects the keys once per sequence,
``context, weights, cache = attn.attend(query, mem)`` per step, and in backward
``attn.attend_backward(dcontext, dweights, cache, mem_grads)`` per step then
``attn.memory_backward(mem, mem_grads)`` once.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import numpy as np

from . import _core
from . import _validate as _v
from . import nn as _nn  # noqa: F401  (before layers: nn and layers import each other)
from .layers import Linear, Module, _dtype_arg, _int_arg

__all__ = [
    "additive_attention_forward", "additive_attention_backward",
    "dot_attention_forward", "dot_attention_backward",
    "general_attention_forward", "general_attention_backward",
    "lengths_to_mask", "AdditiveAttentionGrads", "DotAttentionGrads", "GeneralAttentionGrads",
    "AttentionCache", "AttentionMemory", "MemoryGrads",
    "AdditiveAttention", "DotAttention", "GeneralAttention", "make_attention",
]


class AdditiveAttentionGrads(NamedTuple):
    """Gradients of :func:`additive_attention_forward`'s inputs."""

    dquery: np.ndarray  # (B, T, Hq) or (B, Hq)
    dkeys: np.ndarray  # (B, S, Hk)
    dvalues: np.ndarray  # (B, S, Hv)
    dW_q: np.ndarray  # (A, Hq)
    dW_k: np.ndarray  # (A, Hk)
    dv: np.ndarray  # (A,)
    db: Optional[np.ndarray]  # (A,) or None


class DotAttentionGrads(NamedTuple):
    """Gradients of :func:`dot_attention_forward`'s inputs."""

    dquery: np.ndarray  # (B, T, H) or (B, H)
    dkeys: np.ndarray  # (B, S, H)
    dvalues: np.ndarray  # (B, S, Hv)


class GeneralAttentionGrads(NamedTuple):
    """Gradients of :func:`general_attention_forward`'s inputs."""

    dquery: np.ndarray  # (B, T, Hq) or (B, Hq)
    dkeys: np.ndarray  # (B, S, Hk)
    dvalues: np.ndarray  # (B, S, Hv)
    dW_a: np.ndarray  # (Hq, Hk)


# ============================================================================ validation

def lengths_to_mask(lengths, S):
    """mask (B, S) bool, True at j < lengths[b]: lengths (B,) integers in [0, S]."""
    S = _int_arg("S", S, minimum=0)
    arr = np.asarray(lengths)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"lengths: expected an integer array, got dtype {arr.dtype}")
    _v.check_ndim("lengths", arr, 1, "(B,)")
    if arr.size and (arr.min() < 0 or arr.max() > S):
        bad = arr[(arr < 0) | (arr > S)]
        raise ValueError(f"lengths: every length must satisfy 0 <= length <= S = {S}, got "
                         f"{bad.tolist()[:5]}")
    return np.arange(S)[None, :] < arr[:, None]


def _mask_u8(mask, B, S):
    """None, or the mask (B, S) as C-contiguous uint8 (1 = attend) for the kernels."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype != np.bool_ and not np.issubdtype(m.dtype, np.integer):
        raise TypeError(f"mask: expected a bool (or 0/1 integer) array, got dtype {m.dtype}")
    _v.check_shape("mask", m, (B, S), "(B, S)")
    if m.dtype == np.bool_:
        return np.ascontiguousarray(m).view(np.uint8)
    return np.ascontiguousarray(m != 0).view(np.uint8)


def _check_qkv(query, keys, values, key_size_must_match=False):
    """query (B, T, Hq) or (B, Hq), keys (B, S, Hk), values (B, S, Hv): returns
    (query as (B, T, Hq), keys, values, squeezed?)."""
    query = _v.float_array("query", query)
    dtype = query.dtype
    if query.ndim not in (2, 3):
        raise ValueError(f"query: expected 3 dimensions (B, T, Hq) or 2 (B, Hq) (one step), got "
                         f"shape {query.shape}")
    squeeze = query.ndim == 2
    q3 = query[:, None, :] if squeeze else query
    B, _, Hq = q3.shape
    keys = _v.float_array("keys", keys, dtype)
    _v.check_ndim("keys", keys, 3, "(B, S, Hk)")
    if keys.shape[0] != B:
        raise ValueError(f"keys: expected batch size B = {B} (query's), got shape {keys.shape}")
    S, Hk = keys.shape[1:]
    if key_size_must_match and Hk != Hq:
        raise ValueError(f"keys: expected shape (B, S, H) with H = {Hq} (query's size: dot "
                         f"attention needs equal sizes), got {keys.shape}")
    values = _v.float_array("values", values, dtype)
    _v.check_ndim("values", values, 3, "(B, S, Hv)")
    if values.shape[:2] != (B, S):
        raise ValueError(f"values: expected shape (B, S, Hv) with (B, S) = {(B, S)} (keys'), got "
                         f"{values.shape}")
    return np.ascontiguousarray(q3), keys, values, squeeze


@dataclass(frozen=True, eq=False)
class AttentionCache:
    """What a training-mode forward keeps for backward. Opaque to users; ``arrays`` refer to
    the inputs (do not modify them in place before backward)."""

    kind: str  # "additive", "dot" or "general"
    squeeze: bool  # the query was (B, Hq): gradients come back 2-d
    arrays: dict = field(repr=False)

    def __repr__(self):
        q = self.arrays["query"]
        w = self.arrays["w"]
        return (f"AttentionCache(kind={self.kind!r}, B={w.shape[0]}, T={w.shape[1]}, "
                f"S={w.shape[2]}, Hq={q.shape[2]}, dtype={q.dtype.name})")


def _check_cache(cache, kind, fn):
    if cache is None:
        raise ValueError(f"cache: got None; {fn} needs the cache of a forward run with "
                         "training=True (training=False keeps none)")
    if not isinstance(cache, AttentionCache):
        raise TypeError(f"cache: expected the AttentionCache returned by {kind}_attention_forward,"
                        f" got {type(cache).__name__}")
    if cache.kind != kind:
        raise ValueError(f"cache: it comes from {cache.kind}_attention_forward, but {fn} needs "
                         f"one from {kind}_attention_forward")


def _check_upstream(cache, dcontext, dweights):
    """dcontext like the context, dweights like the weights (each may be None): as 3-d arrays."""
    a = cache.arrays
    dtype = a["query"].dtype
    B, T, S = a["w"].shape
    Hv = a["values"].shape[2]
    out = []
    for name, g, last, sym in (("dcontext", dcontext, Hv, "Hv"), ("dweights", dweights, S, "S")):
        if g is not None:
            g = _v.float_array(name, g, dtype)
            if cache.squeeze:
                _v.check_shape(name, g, (B, last), f"(B, {sym})")
                g = g[:, None, :]
            else:
                _v.check_shape(name, g, (B, T, last), f"(B, T, {sym})")
            g = np.ascontiguousarray(g)
        out.append(g)
    return out


def _flat(a):
    return a.reshape(-1, a.shape[-1])


def _squeeze(a, squeeze):
    return a[:, 0] if squeeze else a


# ============================================================================ additive

def additive_attention_forward(query, keys, values, W_q, W_k, v, b=None, *, mask=None,
                               training=True):
    """Additive (Bahdanau) attention, ``e_tj = v . tanh(W_q q_t + b + W_k k_j)``.

    Args: query (B, T, Hq) or (B, Hq); keys (B, S, Hk); values (B, S, Hv); W_q (A, Hq);
    W_k (A, Hk); v (A,); b (A,) or None; mask (B, S) bool or None; training: keep the cache
    for :func:`additive_attention_backward`.

    Returns ``(context (B, T, Hv), weights (B, T, S), cache)`` ((B, Hv), (B, S) for a 2-d
    query; cache None if not training).
    """
    q3, keys, values, squeeze = _check_qkv(query, keys, values)
    dtype = q3.dtype
    B, T, Hq = q3.shape
    S, Hk = keys.shape[1:]
    W_q = _v.float_array("W_q", W_q, dtype)
    _v.check_ndim("W_q", W_q, 2, "(A, Hq)")
    A = W_q.shape[0]
    _v.check_shape("W_q", W_q, (A, Hq), "(A, Hq)")
    W_k = _v.float_array("W_k", W_k, dtype)
    _v.check_shape("W_k", W_k, (A, Hk), "(A, Hk)")
    v = _v.float_array("v", v, dtype)
    _v.check_shape("v", v, (A,), "(A,)")
    b = _v.optional_float_array("b", b, dtype)
    if b is not None:
        _v.check_shape("b", b, (A,), "(A,)")
    m = _mask_u8(mask, B, S)
    _v.flag("training", training)
    _v.check_gemm_sizes(**{"B*S": B * S, "B*T": B * T})
    qp = (_flat(q3) @ W_q.T).reshape(B, T, A)
    if b is not None:
        qp += b
    kp = (_flat(keys) @ W_k.T).reshape(B, S, A)
    ctx, w = _core.attention_additive_forward(qp, kp, v, values, m)
    cache = None
    if training:
        cache = AttentionCache("additive", squeeze, dict(
            query=q3, keys=keys, values=values, W_q=W_q, W_k=W_k, v=v, has_b=b is not None,
            qp=qp, kp=kp, mask=m, w=w))
    return _squeeze(ctx, squeeze), _squeeze(w, squeeze), cache


def additive_attention_backward(dcontext, dweights, cache):
    """Backward of :func:`additive_attention_forward`.

    Args: dcontext like the context or None; dweights like the weights or None; cache.
    Returns ``AdditiveAttentionGrads(dquery, dkeys, dvalues, dW_q, dW_k, dv, db)``.
    """
    _check_cache(cache, "additive", "additive_attention_backward")
    dctx, dw = _check_upstream(cache, dcontext, dweights)
    a = cache.arrays
    dqp, dkp, dv, dvalues = _core.attention_additive_backward(
        dctx, dw, a["qp"], a["kp"], a["v"], a["values"], a["w"], a["mask"])
    B, T, Hq = a["query"].shape
    dquery = (_flat(dqp) @ a["W_q"]).reshape(B, T, Hq)
    dW_q = _flat(dqp).T @ _flat(a["query"])
    db = _flat(dqp).sum(axis=0) if a["has_b"] else None
    dkeys = (_flat(dkp) @ a["W_k"]).reshape(a["keys"].shape)
    dW_k = _flat(dkp).T @ _flat(a["keys"])
    return AdditiveAttentionGrads(_squeeze(dquery, cache.squeeze), dkeys, dvalues, dW_q, dW_k,
                                  dv, db)


# ============================================================================ dot / general

def _check_scale(scale):
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not np.isfinite(scale):
        raise TypeError(f"scale: expected a finite number, got {scale!r}")
    return float(scale)


def dot_attention_forward(query, keys, values, *, mask=None, scale=1.0, training=True):
    """Dot-product (Luong "dot") attention, ``e_tj = scale * q_t . k_j``.

    Args: query (B, T, H) or (B, H); keys (B, S, H); values (B, S, Hv); mask (B, S) or None;
    scale a number (1: Luong; 1/sqrt(H): scaled dot product); training.
    Returns ``(context (B, T, Hv), weights (B, T, S), cache)`` (2-d query: (B, Hv), (B, S)).
    """
    q3, keys, values, squeeze = _check_qkv(query, keys, values, key_size_must_match=True)
    B, T, _ = q3.shape
    S = keys.shape[1]
    m = _mask_u8(mask, B, S)
    scale = _check_scale(scale)
    _v.flag("training", training)
    ctx, w = _core.attention_dot_forward(q3, keys, values, m, scale)
    cache = None
    if training:
        cache = AttentionCache("dot", squeeze, dict(query=q3, keys=keys, values=values, mask=m,
                                                    w=w, scale=scale))
    return _squeeze(ctx, squeeze), _squeeze(w, squeeze), cache


def dot_attention_backward(dcontext, dweights, cache):
    """Backward of :func:`dot_attention_forward`: ``DotAttentionGrads(dquery, dkeys, dvalues)``."""
    _check_cache(cache, "dot", "dot_attention_backward")
    dctx, dw = _check_upstream(cache, dcontext, dweights)
    a = cache.arrays
    dq, dk, dvalues = _core.attention_dot_backward(dctx, dw, a["query"], a["keys"], a["values"],
                                                   a["w"], a["mask"], a["scale"])
    return DotAttentionGrads(_squeeze(dq, cache.squeeze), dk, dvalues)


def general_attention_forward(query, keys, values, W_a, *, mask=None, training=True):
    """Luong's "general" attention, ``e_tj = q_t^T W_a k_j``: the keys are projected once,
    ``k'_j = W_a k_j`` (Hq), then dot attention of the queries against them.

    Args: query (B, T, Hq) or (B, Hq); keys (B, S, Hk); values (B, S, Hv); W_a (Hq, Hk);
    mask (B, S) or None; training.
    Returns ``(context (B, T, Hv), weights (B, T, S), cache)`` (2-d query: (B, Hv), (B, S)).
    """
    q3, keys, values, squeeze = _check_qkv(query, keys, values)
    B, T, Hq = q3.shape
    S, Hk = keys.shape[1:]
    W_a = _v.float_array("W_a", W_a, q3.dtype)
    _v.check_shape("W_a", W_a, (Hq, Hk), "(Hq, Hk)")
    m = _mask_u8(mask, B, S)
    _v.flag("training", training)
    _v.check_gemm_sizes(**{"B*S": B * S})
    kp = (_flat(keys) @ W_a.T).reshape(B, S, Hq)
    ctx, w = _core.attention_dot_forward(q3, kp, values, m, 1.0)
    cache = None
    if training:
        cache = AttentionCache("general", squeeze, dict(query=q3, keys=keys, values=values,
                                                        W_a=W_a, kp=kp, mask=m, w=w))
    return _squeeze(ctx, squeeze), _squeeze(w, squeeze), cache


def general_attention_backward(dcontext, dweights, cache):
    """Backward of :func:`general_attention_forward`:
    ``GeneralAttentionGrads(dquery, dkeys, dvalues, dW_a)``."""
    _check_cache(cache, "general", "general_attention_backward")
    dctx, dw = _check_upstream(cache, dcontext, dweights)
    a = cache.arrays
    dq, dkp, dvalues = _core.attention_dot_backward(dctx, dw, a["query"], a["kp"], a["values"],
                                                    a["w"], a["mask"], 1.0)
    dkeys = (_flat(dkp) @ a["W_a"]).reshape(a["keys"].shape)
    dW_a = _flat(dkp).T @ _flat(a["keys"])
    return GeneralAttentionGrads(_squeeze(dq, cache.squeeze), dkeys, dvalues, dW_a)


# ============================================================================ modules

@dataclass(eq=False)
class AttentionMemory:
    """The memory a decoder attends to, prepared once per sequence by
    :meth:`AdditiveAttention.memory` (and the others): keys (B, S, Hk), values (B, S, Hv),
    ``proj`` the keys' projection used by the scores ((B, S, A) additive, (B, S, Hq) general,
    the keys themselves for dot), ``mask`` (B, S) uint8 or None."""

    keys: np.ndarray
    values: np.ndarray
    proj: np.ndarray
    mask: Optional[np.ndarray]

    @property
    def batch_size(self):
        return self.keys.shape[0]

    @property
    def steps(self):
        return self.keys.shape[1]

    def take(self, idx):
        """The memory of batch rows ``idx`` (N,) (e.g. each row repeated per beam)."""
        same_v = self.values is self.keys
        same_p = self.proj is self.keys
        keys = self.keys[idx]
        return AttentionMemory(keys, keys if same_v else self.values[idx],
                               keys if same_p else self.proj[idx],
                               None if self.mask is None else self.mask[idx])

    def repeat(self, k):
        """Each batch row repeated k times in a row: row b*k + i is row b (beam search)."""
        return self.take(np.repeat(np.arange(self.batch_size), k))


@dataclass(eq=False)
class MemoryGrads:
    """Accumulators for the gradients w.r.t. an :class:`AttentionMemory`'s ``proj`` and
    ``values``, summed over decoder steps by ``attend_backward``."""

    dproj: np.ndarray
    dvalues: np.ndarray


class _Attention(Module):
    """Shared logic: the step interface and the whole-sequence forward/backward."""

    kind: str

    def _init_common(self, query_size, key_size, dtype):
        self.query_size = _int_arg("query_size", query_size)
        self.key_size = _int_arg("key_size", key_size)
        self.dtype = _dtype_arg(dtype)
        self._cache = None

    # ------------------------------------------------------------------ memory

    def memory(self, keys, values=None, mask=None):
        """Prepare the memory once per sequence: keys (B, S, Hk); values (B, S, Hv) or None
        (the keys); mask (B, S) or None. Returns an :class:`AttentionMemory`."""
        keys = self._check_input("keys", keys)
        if keys.ndim != 3 or keys.shape[2] != self.key_size:
            raise ValueError(f"keys: expected shape (B, S, Hk) with Hk = {self.key_size}, got "
                             f"{keys.shape}")
        keys = np.ascontiguousarray(keys)
        B, S = keys.shape[:2]
        if values is None:
            values = keys
        else:
            values = np.ascontiguousarray(self._check_input("values", values))
            if values.ndim != 3 or values.shape[:2] != (B, S):
                raise ValueError(f"values: expected shape (B, S, Hv) with (B, S) = {(B, S)}, got "
                                 f"{values.shape}")
        return AttentionMemory(keys, values, self._project_keys(keys), _mask_u8(mask, B, S))

    def new_grads(self, mem):
        """Zero accumulators for :meth:`attend_backward` over the memory ``mem``."""
        return MemoryGrads(np.zeros_like(mem.proj), np.zeros_like(mem.values))

    def memory_backward(self, mem, grads):
        """After the steps' :meth:`attend_backward`: adds the key-side parameter gradients and
        returns ``(dkeys (B, S, Hk), dvalues (B, S, Hv))``."""
        return self._project_keys_backward(mem, grads.dproj), grads.dvalues

    # ------------------------------------------------------------------ one step (or T)

    def attend(self, query, mem, keep=True):
        """query (N, Hq) (one step) or (N, T, Hq); mem: an AttentionMemory with N rows.
        Returns ``(context (N, Hv) / (N, T, Hv), weights (N, S) / (N, T, S), cache)``
        (cache None unless keep)."""
        query = np.asarray(query)
        if query.dtype != self.dtype:
            raise TypeError(f"query: expected dtype {self.dtype.name}, got {query.dtype}")
        squeeze = query.ndim == 2
        q3 = query[:, None, :] if squeeze else query
        if q3.ndim != 3 or q3.shape[0] != mem.batch_size or q3.shape[2] != self.query_size:
            raise ValueError(f"query: expected shape (N, Hq) or (N, T, Hq) with N = "
                             f"{mem.batch_size} (the memory's rows), Hq = {self.query_size}, "
                             f"got {query.shape}")
        q3 = np.ascontiguousarray(q3)
        ctx, w, extra = self._scores_context(q3, mem)
        cache = (q3, w, extra, squeeze, mem) if keep else None
        return _squeeze(ctx, squeeze), _squeeze(w, squeeze), cache

    def attend_backward(self, dcontext, dweights, cache, grads):
        """Backward of one :meth:`attend`: dcontext / dweights like its outputs (or None).
        Adds the query-side parameter gradients, accumulates the memory's into ``grads``
        (a :class:`MemoryGrads`); returns dquery like the query."""
        q3, w, extra, squeeze, mem = cache

        def lift(g):
            if g is None:
                return None
            g = np.asarray(g, dtype=self.dtype)
            return np.ascontiguousarray(g[:, None, :] if squeeze else g)

        dq = self._scores_context_backward(lift(dcontext), lift(dweights), q3, w, extra, mem,
                                           grads)
        return _squeeze(dq, squeeze)

    # ------------------------------------------------------------------ whole sequence

    def forward(self, query, keys, values=None, mask=None):
        """query (B, T, Hq) or (B, Hq); keys (B, S, Hk); values (B, S, Hv) or None (the keys);
        mask (B, S) or None. Returns ``(context, weights)``; keeps a cache for :meth:`backward`
        in training mode."""
        self._cache = None
        mem = self.memory(keys, values, mask)
        ctx, w, cache = self.attend(query, mem, keep=self.training)
        if self.training:
            self._cache = (mem, cache, values is None)
        return ctx, w

    def backward(self, dcontext, dweights=None):
        """Adds the parameter gradients; returns ``(dquery, dkeys, dvalues)`` (dvalues None
        when forward took values=None: dkeys then includes the values' gradient)."""
        mem, cache, shared = self._need_cache()
        grads = self.new_grads(mem)
        dq = self.attend_backward(dcontext, dweights, cache, grads)
        dkeys, dvalues = self.memory_backward(mem, grads)
        if shared:
            return dq, dkeys + dvalues, None
        return dq, dkeys, dvalues


class AdditiveAttention(_Attention):
    """Bahdanau attention ``e_tj = v . tanh(W_q q_t + b + W_k k_j)``. Parameters:
    ``query.weight`` W_q (A, Hq) (and ``query.bias`` b (A,) if bias), ``key.weight``
    W_k (A, Hk), ``v`` (A,). A defaults to Hq. Initialised like torch.nn.Linear."""

    kind = "additive"

    def __init__(self, query_size, key_size, attention_size=None, *, bias=False,
                 dtype=np.float32, seed=None):
        self._init_common(query_size, key_size, dtype)
        A = self.attention_size = _int_arg("attention_size", attention_size or self.query_size)
        ss = (seed if isinstance(seed, np.random.SeedSequence)
              else np.random.SeedSequence(seed)).spawn(3)
        self.query = Linear(self.query_size, A, bias=_v.flag("bias", bias), dtype=self.dtype,
                            seed=ss[0])
        self.key = Linear(self.key_size, A, bias=False, dtype=self.dtype,
                          seed=ss[1])
        k = 1 / np.sqrt(A)
        self.v = self._param("v", np.random.default_rng(ss[2]).uniform(-k, k, A)
                             .astype(self.dtype))

    def _project_keys(self, keys):
        B, S, _ = keys.shape
        return (_flat(keys) @ self.key.weight.data.T).reshape(B, S, self.attention_size)

    def _project_keys_backward(self, mem, dproj):
        self.key.weight.grad += _flat(dproj).T @ _flat(mem.keys)
        return (_flat(dproj) @ self.key.weight.data).reshape(mem.keys.shape)

    def _scores_context(self, q3, mem):
        N, T, _ = q3.shape
        qp = (_flat(q3) @ self.query.weight.data.T).reshape(N, T, self.attention_size)
        if self.query.bias is not None:
            qp += self.query.bias.data
        ctx, w = _core.attention_additive_forward(qp, mem.proj, self.v.data, mem.values, mem.mask)
        return ctx, w, qp

    def _scores_context_backward(self, dctx, dw, q3, w, qp, mem, grads):
        dqp, dkp, dv, dvalues = _core.attention_additive_backward(
            dctx, dw, qp, mem.proj, self.v.data, mem.values, w, mem.mask)
        grads.dproj += dkp
        grads.dvalues += dvalues
        self.v.grad += dv
        dqp2 = _flat(dqp)
        self.query.weight.grad += dqp2.T @ _flat(q3)
        if self.query.bias is not None:
            self.query.bias.grad += dqp2.sum(axis=0)
        return (dqp2 @ self.query.weight.data).reshape(q3.shape)

    def __repr__(self):
        return (f"AdditiveAttention({self.query_size}, {self.key_size}, "
                f"attention_size={self.attention_size})")


class DotAttention(_Attention):
    """Luong's dot attention ``e_tj = scale * q_t . k_j`` (query and key sizes equal). No
    parameters; ``scale`` 1 by default (1/sqrt(H) gives scaled dot-product attention)."""

    kind = "dot"

    def __init__(self, query_size, key_size=None, *, scale=1.0, dtype=np.float32, seed=None):
        self._init_common(query_size, key_size or query_size, dtype)
        if self.key_size != self.query_size:
            raise ValueError(f"key_size: dot attention needs key_size = query_size = "
                             f"{self.query_size}, got {self.key_size} (use 'general' or "
                             "'additive' attention for different sizes)")
        self.scale = _check_scale(scale)

    def _project_keys(self, keys):
        return keys

    def _project_keys_backward(self, mem, dproj):
        return dproj

    def _scores_context(self, q3, mem):
        ctx, w = _core.attention_dot_forward(q3, mem.proj, mem.values, mem.mask, self.scale)
        return ctx, w, None

    def _scores_context_backward(self, dctx, dw, q3, w, extra, mem, grads):
        dq, dk, dvalues = _core.attention_dot_backward(dctx, dw, q3, mem.proj, mem.values, w,
                                                       mem.mask, self.scale)
        grads.dproj += dk
        grads.dvalues += dvalues
        return dq

    def __repr__(self):
        return f"DotAttention({self.query_size}" + (
            f", scale={self.scale})" if self.scale != 1 else ")")


class GeneralAttention(DotAttention):
    """Luong's general attention ``e_tj = q_t^T W_a k_j``; parameter ``weight`` W_a (Hq, Hk),
    initialised U(-1/sqrt(Hk), 1/sqrt(Hk)). The keys are projected once per sequence."""

    kind = "general"

    def __init__(self, query_size, key_size, *, dtype=np.float32, seed=None):
        self._init_common(query_size, key_size, dtype)
        self.scale = 1.0
        k = 1 / np.sqrt(self.key_size)
        self.weight = self._param("weight", np.random.default_rng(seed).uniform(
            -k, k, (self.query_size, self.key_size)).astype(self.dtype))

    def _project_keys(self, keys):
        B, S, _ = keys.shape
        return (_flat(keys) @ self.weight.data.T).reshape(B, S, self.query_size)

    def _project_keys_backward(self, mem, dproj):
        self.weight.grad += _flat(dproj).T @ _flat(mem.keys)
        return (_flat(dproj) @ self.weight.data).reshape(mem.keys.shape)

    def __repr__(self):
        return f"GeneralAttention({self.query_size}, {self.key_size})"


_KINDS = {"additive": AdditiveAttention, "dot": DotAttention, "general": GeneralAttention}


def make_attention(kind, query_size, key_size, attention_size=None, *, dtype=np.float32,
                   seed=None):
    """An attention module by name: "additive" (attention_size A, default Hq), "dot" (needs
    query_size = key_size) or "general"."""
    _v.choice("kind", kind, tuple(_KINDS))
    if kind == "additive":
        return AdditiveAttention(query_size, key_size, attention_size, dtype=dtype, seed=seed)
    if kind == "dot":
        return DotAttention(query_size, key_size, dtype=dtype, seed=seed)
    return GeneralAttention(query_size, key_size, dtype=dtype, seed=seed)

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

The module classes that hold the parameters and add a step interface for decoders are in
:mod:`rnnkit.nn.attention`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import _core
from .. import _validate as _v
from .._types import AdditiveAttentionGrads, DotAttentionGrads, GeneralAttentionGrads

__all__ = [
    "additive_attention_forward",
    "additive_attention_backward",
    "dot_attention_forward",
    "dot_attention_backward",
    "general_attention_forward",
    "general_attention_backward",
    "lengths_to_mask",
    "AdditiveAttentionGrads",
    "DotAttentionGrads",
    "GeneralAttentionGrads",
    "AttentionCache",
    "mask_u8",
]


# ============================================================================ validation


def lengths_to_mask(lengths: npt.ArrayLike, S: int) -> np.ndarray:
    """mask (B, S) bool, True at j < lengths[b]: lengths (B,) integers in [0, S]."""
    S = _v.int_arg("S", S, minimum=0)
    arr = _v.integer_array("lengths", lengths)
    _v.check_ndim("lengths", arr, 1, "(B,)")
    if arr.size and (arr.min() < 0 or arr.max() > S):
        bad = arr[(arr < 0) | (arr > S)]
        raise ValueError(f"lengths: every length must satisfy 0 <= length <= S = {S}, got {bad.tolist()[:5]}")
    return np.arange(S)[None, :] < arr[:, None]


def mask_u8(mask: npt.ArrayLike | None, B: int, S: int) -> np.ndarray | None:
    """None, or the mask (B, S) as C-contiguous uint8 (1 = attend) for the kernels."""
    if mask is None:
        return None
    m = _v.as_array("mask", mask)
    if m.dtype != np.bool_ and not np.issubdtype(m.dtype, np.integer):
        raise TypeError(f"mask: expected a bool (or 0/1 integer) array, got dtype {m.dtype}")
    _v.check_shape("mask", m, (B, S), "(B, S)")
    if m.dtype == np.bool_:
        return np.ascontiguousarray(m).view(np.uint8)
    return np.ascontiguousarray(m != 0).view(np.uint8)


def _check_qkv(
    query: Any, keys: Any, values: Any, key_size_must_match: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """query (B, T, Hq) or (B, Hq), keys (B, S, Hk), values (B, S, Hv): returns
    (query as (B, T, Hq), keys, values, squeezed?)."""
    query = _v.float_array("query", query)
    dtype = query.dtype
    if query.ndim not in (2, 3):
        raise ValueError(
            f"query: expected 3 dimensions (B, T, Hq) or 2 (B, Hq) (one step), got shape {query.shape}"
        )
    squeeze = query.ndim == 2
    q3 = query[:, None, :] if squeeze else query
    B, _, Hq = q3.shape
    keys = _v.float_array("keys", keys, dtype)
    _v.check_ndim("keys", keys, 3, "(B, S, Hk)")
    if keys.shape[0] != B:
        raise ValueError(f"keys: expected batch size B = {B} (query's), got shape {keys.shape}")
    S, Hk = keys.shape[1:]
    if key_size_must_match and Hk != Hq:
        raise ValueError(
            f"keys: expected shape (B, S, H) with H = {Hq} (query's size: dot "
            f"attention needs equal sizes), got {keys.shape}"
        )
    values = _v.float_array("values", values, dtype)
    _v.check_ndim("values", values, 3, "(B, S, Hv)")
    if values.shape[:2] != (B, S):
        raise ValueError(
            f"values: expected shape (B, S, Hv) with (B, S) = {(B, S)} (keys'), got {values.shape}"
        )
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
        return (
            f"AttentionCache(kind={self.kind!r}, B={w.shape[0]}, T={w.shape[1]}, "
            f"S={w.shape[2]}, Hq={q.shape[2]}, dtype={q.dtype.name})"
        )


def _check_cache(cache, kind, fn):
    if cache is None:
        raise ValueError(
            f"cache: got None; {fn} needs the cache of a forward run with "
            "training=True (training=False keeps none)"
        )
    if not isinstance(cache, AttentionCache):
        raise TypeError(
            f"cache: expected the AttentionCache returned by {kind}_attention_forward,"
            f" got {type(cache).__name__}"
        )
    if cache.kind != kind:
        raise ValueError(
            f"cache: it comes from {cache.kind}_attention_forward, but {fn} needs "
            f"one from {kind}_attention_forward"
        )


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
    """(B, N, F) as (B*N, F). The rows are given, not inferred: with F = 0 (a zero-size feature
    dimension: Hq, Hk or A) NumPy cannot infer them ("cannot reshape array of size 0")."""
    return a.reshape(a.shape[0] * a.shape[1], a.shape[-1])


# The bytes a call allocates, checked before it allocates them (like the recurrent kernels':
# rnnkit._validate.check_terms): (name, count, itemsize) terms of the arrays made here, in NumPy,
# and in cpp/attention_bindings.cpp (outputs, then the kernel's scratch, whose sizes are
# attention.hpp's *_scratch_elements), plus one BLAS buffer for the GEMMs (the kernels' own,
# from 8 query steps on, and NumPy's matmul, whose OpenBLAS keeps one of the same size).
_KERNEL_GEMM_STEPS = 8  # attention.hpp kAttentionGemmSteps


def _check_memory(arg, dtype, what, terms, gemm=True):
    item = np.dtype(dtype).itemsize
    out = [(name, int(count), item) for name, count in terms]
    if gemm:
        out.append(("BLAS buffer", _core._blas_buffer_bytes, 1))
    _v.check_terms(arg, out, what, dtype)


_FORWARD = "the call's outputs and scratch (incl. the BLAS buffer)"
_BACKWARD = "the call's gradients and scratch (incl. the BLAS buffer)"


def _squeeze(a, squeeze):
    return a[:, 0] if squeeze else a


# ============================================================================ additive


def additive_attention_forward(
    query: npt.ArrayLike,
    keys: npt.ArrayLike,
    values: npt.ArrayLike,
    W_q: npt.ArrayLike,
    W_k: npt.ArrayLike,
    v: npt.ArrayLike,
    b: npt.ArrayLike | None = None,
    *,
    mask: npt.ArrayLike | None = None,
    training: bool = True,
) -> tuple[np.ndarray, np.ndarray, AttentionCache | None]:
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
    m = mask_u8(mask, B, S)
    _v.flag("training", training)
    _v.check_gemm_sizes(**{"B*S": B * S, "B*T": B * T})
    _check_memory(
        "query",
        dtype,
        _FORWARD,
        [
            ("qp", B * T * A),  # here (NumPy)
            ("kp", B * S * A),
            ("context", B * T * values.shape[2]),  # attention_bindings.cpp additive_forward
            ("weights", B * T * S),
            ("e", S),  # additive_forward_scratch_elements
            ("tmp", A),
        ],
    )
    qp = (_flat(q3) @ W_q.T).reshape(B, T, A)
    if b is not None:
        qp += b
    kp = (_flat(keys) @ W_k.T).reshape(B, S, A)
    ctx, w = _core.attention_additive_forward(qp, kp, v, values, m)
    cache = None
    if training:
        cache = AttentionCache(
            "additive",
            squeeze,
            dict(
                query=q3,
                keys=keys,
                values=values,
                W_q=W_q,
                W_k=W_k,
                v=v,
                has_b=b is not None,
                qp=qp,
                kp=kp,
                mask=m,
                w=w,
            ),
        )
    return _squeeze(ctx, squeeze), _squeeze(w, squeeze), cache


def additive_attention_backward(
    dcontext: npt.ArrayLike | None, dweights: npt.ArrayLike | None, cache: AttentionCache
) -> AdditiveAttentionGrads:
    """Backward of :func:`additive_attention_forward`.

    Args: dcontext (B, T, Hv) like the context, or None; dweights (B, T, S) like the weights,
    or None ((B, Hv) and (B, S) for a single-step query); cache.
    Returns ``AdditiveAttentionGrads(dquery, dkeys, dvalues, dW_q, dW_k, dv, db)``, each shaped
    like its argument: dquery (B, T, Hq), dkeys (B, S, Hk), dvalues (B, S, Hv), dW_q (A, Hq),
    dW_k (A, Hk), dv (A,), db (A,) or None.
    """
    _check_cache(cache, "additive", "additive_attention_backward")
    dctx, dw = _check_upstream(cache, dcontext, dweights)
    a = cache.arrays
    B, T, S = a["w"].shape
    A, Hq = a["W_q"].shape
    Hk, Hv = a["keys"].shape[2], a["values"].shape[2]
    _check_memory(
        "cache",
        a["query"].dtype,
        _BACKWARD,
        [
            ("dqp", B * T * A),  # attention_bindings.cpp additive_backward
            ("dkp", B * S * A),
            ("dv", A),
            ("dvalues", B * S * Hv),
            ("dw_total", T * S),  # additive_backward_scratch_elements
            ("de", S),
            ("dquery", B * T * Hq),  # here (NumPy)
            ("dW_q", A * Hq),
            ("db", A),
            ("dkeys", B * S * Hk),
            ("dW_k", A * Hk),
        ],
    )
    dqp, dkp, dv, dvalues = _core.attention_additive_backward(
        dctx, dw, a["qp"], a["kp"], a["v"], a["values"], a["w"], a["mask"]
    )
    dquery = (_flat(dqp) @ a["W_q"]).reshape(B, T, Hq)
    dW_q = _flat(dqp).T @ _flat(a["query"])
    db = _flat(dqp).sum(axis=0) if a["has_b"] else None
    dkeys = (_flat(dkp) @ a["W_k"]).reshape(a["keys"].shape)
    dW_k = _flat(dkp).T @ _flat(a["keys"])
    return AdditiveAttentionGrads(_squeeze(dquery, cache.squeeze), dkeys, dvalues, dW_q, dW_k, dv, db)


# ============================================================================ dot / general


def dot_attention_forward(
    query: npt.ArrayLike,
    keys: npt.ArrayLike,
    values: npt.ArrayLike,
    *,
    mask: npt.ArrayLike | None = None,
    scale: float = 1.0,
    training: bool = True,
) -> tuple[np.ndarray, np.ndarray, AttentionCache | None]:
    """Dot-product (Luong "dot") attention, ``e_tj = scale * q_t . k_j``.

    Args: query (B, T, H) or (B, H); keys (B, S, H); values (B, S, Hv); mask (B, S) or None;
    scale a number (1: Luong; 1/sqrt(H): scaled dot product); training.
    Returns ``(context (B, T, Hv), weights (B, T, S), cache)`` (2-d query: (B, Hv), (B, S)).
    """
    q3, keys, values, squeeze = _check_qkv(query, keys, values, key_size_must_match=True)
    B, T, _ = q3.shape
    S = keys.shape[1]
    m = mask_u8(mask, B, S)
    scale = _v.real("scale", scale)
    _v.flag("training", training)
    _check_memory(
        "query",
        q3.dtype,
        _FORWARD,
        [
            ("context", B * T * values.shape[2]),  # attention_bindings.cpp dot_forward
            ("weights", B * T * S),
            ("e", T * S),  # dot_forward_scratch_elements
        ],
        gemm=T >= _KERNEL_GEMM_STEPS,
    )
    ctx, w = _core.attention_dot_forward(q3, keys, values, m, scale)
    cache = None
    if training:
        cache = AttentionCache(
            "dot", squeeze, dict(query=q3, keys=keys, values=values, mask=m, w=w, scale=scale)
        )
    return _squeeze(ctx, squeeze), _squeeze(w, squeeze), cache


def _check_dot_backward_memory(q3, keys, values, w, extra=()):
    B, T, S = w.shape
    _check_memory(
        "cache",
        q3.dtype,
        _BACKWARD,
        [
            ("dquery", B * T * q3.shape[2]),  # attention_bindings.cpp dot_backward
            ("dkeys", B * S * keys.shape[2]),
            ("dvalues", B * S * values.shape[2]),
            ("dw_total", T * S),  # dot_backward_scratch_elements
            ("de", T * S),
            *extra,
        ],
        gemm=T >= _KERNEL_GEMM_STEPS or bool(extra),
    )


def dot_attention_backward(
    dcontext: npt.ArrayLike | None, dweights: npt.ArrayLike | None, cache: AttentionCache
) -> DotAttentionGrads:
    """Backward of :func:`dot_attention_forward`: dcontext (B, T, Hv) and dweights (B, T, S)
    (either may be None) -> ``DotAttentionGrads(dquery (B, T, Hq), dkeys (B, S, Hk), dvalues
    (B, S, Hv))``, without the T axis for a single-step query."""
    _check_cache(cache, "dot", "dot_attention_backward")
    dctx, dw = _check_upstream(cache, dcontext, dweights)
    a = cache.arrays
    _check_dot_backward_memory(a["query"], a["keys"], a["values"], a["w"])
    dq, dk, dvalues = _core.attention_dot_backward(
        dctx, dw, a["query"], a["keys"], a["values"], a["w"], a["mask"], a["scale"]
    )
    return DotAttentionGrads(_squeeze(dq, cache.squeeze), dk, dvalues)


def general_attention_forward(
    query: npt.ArrayLike,
    keys: npt.ArrayLike,
    values: npt.ArrayLike,
    W_a: npt.ArrayLike,
    *,
    mask: npt.ArrayLike | None = None,
    training: bool = True,
) -> tuple[np.ndarray, np.ndarray, AttentionCache | None]:
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
    m = mask_u8(mask, B, S)
    _v.flag("training", training)
    _v.check_gemm_sizes(**{"B*S": B * S})
    _check_memory(
        "query",
        q3.dtype,
        _FORWARD,
        [
            ("kp", B * S * Hq),  # here (NumPy)
            ("context", B * T * values.shape[2]),  # attention_bindings.cpp dot_forward
            ("weights", B * T * S),
            ("e", T * S),  # dot_forward_scratch_elements
        ],
    )
    kp = (_flat(keys) @ W_a.T).reshape(B, S, Hq)
    ctx, w = _core.attention_dot_forward(q3, kp, values, m, 1.0)
    cache = None
    if training:
        cache = AttentionCache(
            "general", squeeze, dict(query=q3, keys=keys, values=values, W_a=W_a, kp=kp, mask=m, w=w)
        )
    return _squeeze(ctx, squeeze), _squeeze(w, squeeze), cache


def general_attention_backward(
    dcontext: npt.ArrayLike | None, dweights: npt.ArrayLike | None, cache: AttentionCache
) -> GeneralAttentionGrads:
    """Backward of :func:`general_attention_forward`: dcontext (B, T, Hv) and dweights
    (B, T, S) (either may be None) -> ``GeneralAttentionGrads(dquery (B, T, Hq), dkeys
    (B, S, Hk), dvalues (B, S, Hv), dW_a (Hq, Hk))``, without the T axis for a single-step
    query."""
    _check_cache(cache, "general", "general_attention_backward")
    dctx, dw = _check_upstream(cache, dcontext, dweights)
    a = cache.arrays
    Hq, Hk = a["W_a"].shape
    B, S = a["keys"].shape[:2]
    extra = [("dkeys", B * S * Hk), ("dW_a", Hq * Hk)]  # here (NumPy)
    _check_dot_backward_memory(a["query"], a["kp"], a["values"], a["w"], extra)
    dq, dkp, dvalues = _core.attention_dot_backward(
        dctx, dw, a["query"], a["kp"], a["values"], a["w"], a["mask"], 1.0
    )
    dkeys = (_flat(dkp) @ a["W_a"]).reshape(a["keys"].shape)
    dW_a = _flat(dkp).T @ _flat(a["keys"])
    return GeneralAttentionGrads(_squeeze(dq, cache.squeeze), dkeys, dvalues, dW_a)


# ============================================================================ prepared arrays
# The fused kernels on arrays already checked and laid out (C-contiguous, one dtype; no checks,
# no copies): for the attention modules of rnnkit.nn, which check once per sequence and then
# call these once per decoder step.

additive_scores_context = _core.attention_additive_forward
additive_scores_context_backward = _core.attention_additive_backward
dot_scores_context = _core.attention_dot_forward
dot_scores_context_backward = _core.attention_dot_backward

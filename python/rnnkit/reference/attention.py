"""Plain NumPy reference implementations ("oracles") of :mod:`rnnkit.attention`.

Same signatures and return types as the C++-backed functions; written the textbook way with
broadcasting over (B, T, S[, A]) and readable next to the equations. They never call the
compiled module. Shape letters: B batch, T query steps, S memory steps, Hq / Hk / Hv query,
key and value sizes, A attention size.

    additive   e_tj = v . tanh(W_q q_t + b + W_k k_j)
    dot        e_tj = scale * q_t . k_j
    general    e_tj = q_t^T W_a k_j
    weights    w_t = softmax_j(e_tj) over unmasked j (0 at masked j; all 0 if none)
    context    c_t = sum_j w_tj values_j

Backward, with g_tj = dweights_tj + dcontext_t . values_j (the total gradient of w_tj):
``de_tj = w_tj (g_tj - sum_k w_tk g_tk)``, ``dvalues_j = sum_t w_tj dcontext_t``, then the
chain rule through each score function.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .._types import AdditiveAttentionGrads, DotAttentionGrads, GeneralAttentionGrads
from .._validate import check_ndim, int_arg, integer_array

__all__ = [
    "additive_attention_forward",
    "additive_attention_backward",
    "dot_attention_forward",
    "dot_attention_backward",
    "general_attention_forward",
    "general_attention_backward",
    "lengths_to_mask",
]


def lengths_to_mask(lengths: npt.ArrayLike, S: int) -> np.ndarray:
    """mask (B, S) bool, True at j < lengths[b]: lengths (B,) integers in [0, S] (as
    :func:`rnnkit.ops.attention.lengths_to_mask`)."""
    S = int_arg("S", S, minimum=0)
    arr = integer_array("lengths", lengths)
    check_ndim("lengths", arr, 1, "(B,)")
    if arr.size and (arr.min() < 0 or arr.max() > S):
        bad = arr[(arr < 0) | (arr > S)]
        raise ValueError(f"lengths: every length must satisfy 0 <= length <= S = {S}, got {bad.tolist()[:5]}")
    return np.arange(S)[None, :] < arr[:, None]


def _prepare(query, keys, values, mask):
    query = np.asarray(query)
    squeeze = query.ndim == 2
    q3 = query[:, None, :] if squeeze else query
    B, S = keys.shape[:2]
    m = np.ones((B, S), bool) if mask is None else np.asarray(mask) != 0
    return q3, np.asarray(keys), np.asarray(values), m, squeeze


def _masked_softmax(e, m):
    """e (B, T, S), m (B, S) bool -> weights (B, T, S)."""
    mm = np.broadcast_to(m[:, None, :], e.shape)
    e = np.where(mm, e, -np.inf)
    # As the kernel: a row with no attended position gets zero weights; a NaN or +inf score on
    # an attended position makes the whole row NaN (e - max is NaN there) instead of being dropped.
    attended = mm.any(axis=-1, keepdims=True)
    top = np.where(attended, e.max(axis=-1, keepdims=True), 0)
    with np.errstate(invalid="ignore", over="ignore"):
        p = np.where(mm, np.exp(e - top), 0)
        s = p.sum(axis=-1, keepdims=True)
        return np.divide(p, s, out=np.zeros_like(p), where=attended)


def _context(w, values):
    return w @ values  # (B, T, S) @ (B, S, Hv)


def _softmax_backward(dcontext, dweights, cache):
    """Returns (de (B, T, S), dvalues (B, S, Hv)) from the 2-d/3-d upstream gradients."""
    w, values, squeeze = cache["w"], cache["values"], cache["squeeze"]
    lift = (lambda g: g[:, None, :]) if squeeze else (lambda g: g)
    g = np.zeros_like(w)
    dvalues = np.zeros_like(values)
    if dweights is not None:
        g = g + lift(np.asarray(dweights))
    if dcontext is not None:
        dc = lift(np.asarray(dcontext))
        g = g + dc @ values.transpose(0, 2, 1)
        dvalues = w.transpose(0, 2, 1) @ dc
    de = w * (g - (w * g).sum(axis=-1, keepdims=True))
    return de, dvalues


def _out(a, squeeze):
    return a[:, 0] if squeeze else a


def _need(cache, kind):
    if cache is None or cache.get("kind") != kind:
        raise ValueError(f"cache: expected the cache of a training-mode {kind} forward")


# ----------------------------------------------------------------------------- additive


def additive_attention_forward(
    query: np.ndarray,
    keys: np.ndarray,
    values: np.ndarray,
    W_q: np.ndarray,
    W_k: np.ndarray,
    v: np.ndarray,
    b: np.ndarray | None = None,
    *,
    mask: npt.ArrayLike | None = None,
    training: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
    """Oracle of :func:`rnnkit.ops.attention.additive_attention_forward`: query (B, T, Hq) or
    (B, Hq), keys (B, S, Hk), values (B, S, Hv), W_q (A, Hq), W_k (A, Hk), v (A,), b (A,) or
    None; mask (B, S) or None.
    Returns ``(context (B, T, Hv), weights (B, T, S), cache)`` (no T axis for a (B, Hq) query)."""
    q3, keys, values, m, squeeze = _prepare(query, keys, values, mask)
    qp = q3 @ W_q.T  # (B, T, A)
    if b is not None:
        qp = qp + b
    kp = keys @ W_k.T  # (B, S, A)
    th = np.tanh(qp[:, :, None, :] + kp[:, None, :, :])  # (B, T, S, A)
    e = th @ v  # (B, T, S)
    w = _masked_softmax(e, m)
    ctx = _context(w, values)
    cache = None
    if training:
        cache = dict(
            kind="additive",
            q3=q3,
            keys=keys,
            values=values,
            W_q=W_q,
            W_k=W_k,
            v=v,
            has_b=b is not None,
            th=th,
            w=w,
            squeeze=squeeze,
        )
    return _out(ctx, squeeze), _out(w, squeeze), cache


def additive_attention_backward(
    dcontext: np.ndarray | None, dweights: np.ndarray | None, cache: dict[str, Any]
) -> AdditiveAttentionGrads:
    """Oracle of :func:`rnnkit.ops.attention.additive_attention_backward`: dcontext (B, T, Hv)
    and dweights (B, T, S), either may be None; the gradients have their arguments' shapes."""
    _need(cache, "additive")
    de, dvalues = _softmax_backward(dcontext, dweights, cache)
    th, v = cache["th"], cache["v"]
    dpre = de[..., None] * v * (1 - th * th)  # (B, T, S, A)
    dv = np.einsum("btsa,bts->a", th, de)
    dqp = dpre.sum(axis=2)  # (B, T, A)
    dkp = dpre.sum(axis=1)  # (B, S, A)
    dquery = dqp @ cache["W_q"]
    dW_q = np.einsum("bta,btq->aq", dqp, cache["q3"])
    db = dqp.sum(axis=(0, 1)) if cache["has_b"] else None
    dkeys = dkp @ cache["W_k"]
    dW_k = np.einsum("bsa,bsk->ak", dkp, cache["keys"])
    return AdditiveAttentionGrads(_out(dquery, cache["squeeze"]), dkeys, dvalues, dW_q, dW_k, dv, db)


# ----------------------------------------------------------------------------- dot


def dot_attention_forward(
    query: np.ndarray,
    keys: np.ndarray,
    values: np.ndarray,
    *,
    mask: npt.ArrayLike | None = None,
    scale: float = 1.0,
    training: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
    """Oracle of :func:`rnnkit.ops.attention.dot_attention_forward`: query (B, T, Hq) or
    (B, Hq), keys (B, S, Hk), values (B, S, Hv), Hq = Hk; mask (B, S) or None.
    Returns ``(context (B, T, Hv), weights (B, T, S), cache)`` (no T axis for a (B, Hq) query)."""
    q3, keys, values, m, squeeze = _prepare(query, keys, values, mask)
    e = scale * (q3 @ keys.transpose(0, 2, 1))  # (B, T, S)
    w = _masked_softmax(e, m)
    ctx = _context(w, values)
    cache = None
    if training:
        cache = dict(kind="dot", q3=q3, keys=keys, values=values, scale=scale, w=w, squeeze=squeeze)
    return _out(ctx, squeeze), _out(w, squeeze), cache


def dot_attention_backward(
    dcontext: np.ndarray | None, dweights: np.ndarray | None, cache: dict[str, Any]
) -> DotAttentionGrads:
    """Oracle of :func:`rnnkit.ops.attention.dot_attention_backward`: dcontext (B, T, Hv)
    and dweights (B, T, S), either may be None; the gradients have their arguments' shapes."""
    _need(cache, "dot")
    de, dvalues = _softmax_backward(dcontext, dweights, cache)
    s = cache["scale"]
    dq = s * (de @ cache["keys"])
    dk = s * (de.transpose(0, 2, 1) @ cache["q3"])
    return DotAttentionGrads(_out(dq, cache["squeeze"]), dk, dvalues)


# ----------------------------------------------------------------------------- general


def general_attention_forward(
    query: np.ndarray,
    keys: np.ndarray,
    values: np.ndarray,
    W_a: np.ndarray,
    *,
    mask: npt.ArrayLike | None = None,
    training: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
    """Oracle of :func:`rnnkit.ops.attention.general_attention_forward`: query (B, T, Hq) or
    (B, Hq), keys (B, S, Hk), values (B, S, Hv), W_a (Hq, Hk); mask (B, S) or None.
    Returns ``(context (B, T, Hv), weights (B, T, S), cache)`` (no T axis for a (B, Hq) query)."""
    q3, keys, values, m, squeeze = _prepare(query, keys, values, mask)
    e = q3 @ W_a @ keys.transpose(0, 2, 1)  # (B, T, S)
    w = _masked_softmax(e, m)
    ctx = _context(w, values)
    cache = None
    if training:
        cache = dict(kind="general", q3=q3, keys=keys, values=values, W_a=W_a, w=w, squeeze=squeeze)
    return _out(ctx, squeeze), _out(w, squeeze), cache


def general_attention_backward(
    dcontext: np.ndarray | None, dweights: np.ndarray | None, cache: dict[str, Any]
) -> GeneralAttentionGrads:
    """Oracle of :func:`rnnkit.ops.attention.general_attention_backward`: dcontext (B, T, Hv)
    and dweights (B, T, S), either may be None; the gradients have their arguments' shapes."""
    _need(cache, "general")
    de, dvalues = _softmax_backward(dcontext, dweights, cache)
    q3, keys, W_a = cache["q3"], cache["keys"], cache["W_a"]
    dq = de @ keys @ W_a.T  # (B, T, Hq)
    dkeys = de.transpose(0, 2, 1) @ q3 @ W_a  # (B, S, Hk)
    dW_a = np.einsum("bts,btq,bsk->qk", de, q3, keys)
    return GeneralAttentionGrads(_out(dq, cache["squeeze"]), dkeys, dvalues, dW_a)

"""Attention modules: :class:`AdditiveAttention` (Bahdanau), :class:`DotAttention` and
:class:`GeneralAttention` (Luong), holding their parameters (:class:`rnnkit.nn.Parameter`,
gradients accumulated into ``.grad``) around the functional kernels of
:mod:`rnnkit.ops.attention` (the equations are there).

Beside the whole-sequence ``forward`` / ``backward`` they have a step interface for decoders that
attend once per step: ``mem = attn.memory(keys, values, mask)`` projects the keys once per
sequence, ``context, weights, cache = attn.attend(query, mem)`` per step, and in backward
``attn.attend_backward(dcontext, dweights, cache, mem_grads)`` per step then
``attn.memory_backward(mem, mem_grads)`` once.

Shape letters: B (or N) batch rows, T query steps, S memory steps, Hq query size, Hk key size,
Hv value size, A attention size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import _validate as _v
from ..ops import attention as _ops
from .layers import Linear
from .module import Module

__all__ = [
    "AttentionMemory",
    "MemoryGrads",
    "AdditiveAttention",
    "DotAttention",
    "GeneralAttention",
    "make_attention",
]


def _flat(a):
    """(B, N, F) as (B*N, F), the rows given (with F = 0 NumPy cannot infer them)."""
    return a.reshape(a.shape[0] * a.shape[1], a.shape[-1])


def _squeeze(a, squeeze):
    return a[:, 0] if squeeze else a


@dataclass(eq=False)
class AttentionMemory:
    """The memory a decoder attends to, prepared once per sequence by
    :meth:`AdditiveAttention.memory` (and the others): keys (B, S, Hk), values (B, S, Hv),
    ``proj`` the keys' projection used by the scores ((B, S, A) additive, (B, S, Hq) general,
    the keys themselves for dot), ``mask`` (B, S) uint8 or None."""

    keys: np.ndarray
    values: np.ndarray
    proj: np.ndarray
    mask: np.ndarray | None

    @property
    def batch_size(self) -> int:
        return self.keys.shape[0]

    @property
    def steps(self) -> int:
        return self.keys.shape[1]

    def take(self, idx: np.ndarray) -> AttentionMemory:
        """The memory of batch rows ``idx`` (N,) (e.g. each row repeated per beam)."""
        same_v = self.values is self.keys
        same_p = self.proj is self.keys
        keys = self.keys[idx]
        return AttentionMemory(
            keys,
            keys if same_v else self.values[idx],
            keys if same_p else self.proj[idx],
            None if self.mask is None else self.mask[idx],
        )

    def repeat(self, k: int) -> AttentionMemory:
        """Each batch row repeated k times in a row: row b*k + i is row b (beam search)."""
        return self.take(np.repeat(np.arange(self.batch_size), k))


@dataclass(eq=False)
class MemoryGrads:
    """Accumulators for the gradients w.r.t. an :class:`AttentionMemory`'s ``proj`` and
    ``values``, summed over decoder steps by ``attend_backward``: ``dproj`` has the shape of
    the memory's ``proj`` ((B, S, A) for additive attention), ``dvalues`` (B, S, Hv)."""

    dproj: np.ndarray
    dvalues: np.ndarray


class _Attention(Module):
    """Shared logic: the step interface and the whole-sequence forward/backward."""

    kind: str

    def _init_common(self, query_size, key_size, dtype):
        self.query_size = _v.int_arg("query_size", query_size)
        self.key_size = _v.int_arg("key_size", key_size)
        self.dtype = _v.dtype_arg(dtype)
        self._cache = None

    # Implemented by each kind: the key projection kept in the memory, and the scores and context
    # (declared here for the shared logic below; each kind defines them as methods).
    _project_keys: Callable[..., np.ndarray]  # (keys) -> proj
    _project_keys_backward: Callable[..., np.ndarray]  # (mem, dproj) -> dkeys
    _scores_context: Callable[..., tuple[np.ndarray, np.ndarray, Any]]  # (q3, mem) -> ctx, w, extra
    # (dctx, dw, q3, w, extra, mem, grads) -> dq3
    _scores_context_backward: Callable[..., np.ndarray]

    # ------------------------------------------------------------------ memory

    def memory(
        self, keys: npt.ArrayLike, values: npt.ArrayLike | None = None, mask: npt.ArrayLike | None = None
    ) -> AttentionMemory:
        """Prepare the memory once per sequence: keys (B, S, Hk); values (B, S, Hv) or None
        (the keys); mask (B, S) or None. Returns an :class:`AttentionMemory`."""
        keys = self._check_input("keys", keys)
        if keys.ndim != 3 or keys.shape[2] != self.key_size:
            raise ValueError(f"keys: expected shape (B, S, Hk) with Hk = {self.key_size}, got {keys.shape}")
        keys = np.ascontiguousarray(keys)
        B, S = keys.shape[:2]
        if values is None:
            values = keys
        else:
            values = np.ascontiguousarray(self._check_input("values", values))
            if values.ndim != 3 or values.shape[:2] != (B, S):
                raise ValueError(
                    f"values: expected shape (B, S, Hv) with (B, S) = {(B, S)}, got {values.shape}"
                )
        return AttentionMemory(keys, values, self._project_keys(keys), _ops.mask_u8(mask, B, S))

    def new_grads(self, mem: AttentionMemory) -> MemoryGrads:
        """Zero accumulators for :meth:`attend_backward` over the memory ``mem``."""
        return MemoryGrads(np.zeros_like(mem.proj), np.zeros_like(mem.values))

    def memory_backward(self, mem: AttentionMemory, grads: MemoryGrads) -> tuple[np.ndarray, np.ndarray]:
        """After the steps' :meth:`attend_backward`: adds the key-side parameter gradients and
        returns ``(dkeys (B, S, Hk), dvalues (B, S, Hv))``."""
        return self._project_keys_backward(mem, grads.dproj), grads.dvalues

    # ------------------------------------------------------------------ one step (or T)

    def attend(
        self, query: npt.ArrayLike, mem: AttentionMemory, keep: bool = True
    ) -> tuple[np.ndarray, np.ndarray, Any]:
        """query (N, Hq) (one step) or (N, T, Hq); mem: an AttentionMemory with N rows.
        Returns ``(context (N, Hv) / (N, T, Hv), weights (N, S) / (N, T, S), cache)``
        (cache None unless keep)."""
        query = _v.as_array("query", query)
        if query.dtype != self.dtype:
            raise TypeError(f"query: expected dtype {self.dtype.name}, got {query.dtype}")
        squeeze = query.ndim == 2
        q3 = query[:, None, :] if squeeze else query
        if q3.ndim != 3 or q3.shape[0] != mem.batch_size or q3.shape[2] != self.query_size:
            raise ValueError(
                f"query: expected shape (N, Hq) or (N, T, Hq) with N = "
                f"{mem.batch_size} (the memory's rows), Hq = {self.query_size}, "
                f"got {query.shape}"
            )
        q3 = np.ascontiguousarray(q3)
        ctx, w, extra = self._scores_context(q3, mem)
        cache = (q3, w, extra, squeeze, mem) if keep else None
        return _squeeze(ctx, squeeze), _squeeze(w, squeeze), cache

    def attend_backward(
        self, dcontext: npt.ArrayLike | None, dweights: npt.ArrayLike | None, cache: Any, grads: MemoryGrads
    ) -> np.ndarray:
        """Backward of one :meth:`attend`: dcontext / dweights like its outputs (or None).
        Adds the query-side parameter gradients, accumulates the memory's into ``grads``
        (a :class:`MemoryGrads`); returns dquery like the query."""
        q3, w, extra, squeeze, mem = cache

        def lift(name, g):
            if g is None:
                return None
            g = _v.as_array(name, g, dtype=self.dtype)
            return np.ascontiguousarray(g[:, None, :] if squeeze else g)

        dq = self._scores_context_backward(
            lift("dcontext", dcontext), lift("dweights", dweights), q3, w, extra, mem, grads
        )
        return _squeeze(dq, squeeze)

    # ------------------------------------------------------------------ whole sequence

    def forward(
        self,
        query: npt.ArrayLike,
        keys: npt.ArrayLike,
        values: npt.ArrayLike | None = None,
        mask: npt.ArrayLike | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """query (B, T, Hq) or (B, Hq); keys (B, S, Hk); values (B, S, Hv) or None (the keys);
        mask (B, S) or None. Returns ``(context, weights)``; keeps a cache for :meth:`backward`
        in training mode."""
        self._cache = None
        mem = self.memory(keys, values, mask)
        ctx, w, cache = self.attend(query, mem, keep=self.training)
        if self.training:
            self._cache = (mem, cache, values is None)
        return ctx, w

    def backward(
        self, dcontext: npt.ArrayLike | None, dweights: npt.ArrayLike | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
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
    """Bahdanau attention ``e_tj = v . tanh(W_q q_t + b + W_k k_j + b_k)``. Parameters:
    ``query.weight`` W_q (A, Hq) (and ``query.bias`` b (A,) if bias), ``key.weight``
    W_k (A, Hk) (and ``key.bias`` b_k (A,) if key_bias), ``v`` (A,). A defaults to Hq.
    Initialised like torch.nn.Linear. Both biases (bias=key_bias=True) are two
    torch.nn.Linear(Hq, A), Linear(Hk, A) layers, as Bahdanau et al. and the PyTorch
    translation tutorial write it; the key bias is added once per sequence to the memory."""

    kind = "additive"

    def __init__(
        self,
        query_size: int,
        key_size: int,
        attention_size: int | None = None,
        *,
        bias: bool = False,
        key_bias: bool = False,
        dtype: npt.DTypeLike = np.float32,
        seed: int | np.random.SeedSequence | None = None,
    ) -> None:
        self._init_common(query_size, key_size, dtype)
        A = self.attention_size = _v.int_arg("attention_size", attention_size or self.query_size)
        ss = (seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)).spawn(3)
        self.query = Linear(self.query_size, A, bias=_v.flag("bias", bias), dtype=self.dtype, seed=ss[0])
        self.key = Linear(self.key_size, A, bias=_v.flag("key_bias", key_bias), dtype=self.dtype, seed=ss[1])
        k = 1 / np.sqrt(A)
        self.v = self._param("v", np.random.default_rng(ss[2]).uniform(-k, k, A).astype(self.dtype))

    def _project_keys(self, keys):
        B, S, _ = keys.shape
        proj = (_flat(keys) @ self.key.weight.data.T).reshape(B, S, self.attention_size)
        if self.key.bias is not None:
            proj += self.key.bias.data
        return proj

    def _project_keys_backward(self, mem, dproj):
        self.key.weight.accumulate(_flat(dproj).T @ _flat(mem.keys))
        if self.key.bias is not None:
            self.key.bias.accumulate(_flat(dproj).sum(axis=0))
        return (_flat(dproj) @ self.key.weight.data).reshape(mem.keys.shape)

    def _scores_context(self, q3, mem):
        N, T, _ = q3.shape
        qp = (_flat(q3) @ self.query.weight.data.T).reshape(N, T, self.attention_size)
        if self.query.bias is not None:
            qp += self.query.bias.data
        ctx, w = _ops.additive_scores_context(qp, mem.proj, self.v.data, mem.values, mem.mask)
        return ctx, w, qp

    def _scores_context_backward(self, dctx, dw, q3, w, qp, mem, grads):
        dqp, dkp, dv, dvalues = _ops.additive_scores_context_backward(
            dctx, dw, qp, mem.proj, self.v.data, mem.values, w, mem.mask
        )
        grads.dproj += dkp
        grads.dvalues += dvalues
        self.v.accumulate(dv)
        dqp2 = _flat(dqp)
        self.query.weight.accumulate(dqp2.T @ _flat(q3))
        if self.query.bias is not None:
            self.query.bias.accumulate(dqp2.sum(axis=0))
        return (dqp2 @ self.query.weight.data).reshape(q3.shape)

    def __repr__(self):
        return f"AdditiveAttention({self.query_size}, {self.key_size}, attention_size={self.attention_size})"


class DotAttention(_Attention):
    """Luong's dot attention ``e_tj = scale * q_t . k_j`` (query and key sizes equal). No
    parameters; ``scale`` 1 by default (1/sqrt(H) gives scaled dot-product attention)."""

    kind = "dot"

    def __init__(
        self,
        query_size: int,
        key_size: int | None = None,
        *,
        scale: float = 1.0,
        dtype: npt.DTypeLike = np.float32,
        seed: int | np.random.SeedSequence | None = None,
    ) -> None:
        self._init_common(query_size, key_size or query_size, dtype)
        if self.key_size != self.query_size:
            raise ValueError(
                f"key_size: dot attention needs key_size = query_size = "
                f"{self.query_size}, got {self.key_size} (use 'general' or "
                "'additive' attention for different sizes)"
            )
        self.scale = _v.real("scale", scale)

    def _project_keys(self, keys):
        return keys

    def _project_keys_backward(self, mem, dproj):
        return dproj

    def _scores_context(self, q3, mem):
        ctx, w = _ops.dot_scores_context(q3, mem.proj, mem.values, mem.mask, self.scale)
        return ctx, w, None

    def _scores_context_backward(self, dctx, dw, q3, w, extra, mem, grads):
        dq, dk, dvalues = _ops.dot_scores_context_backward(
            dctx, dw, q3, mem.proj, mem.values, w, mem.mask, self.scale
        )
        grads.dproj += dk
        grads.dvalues += dvalues
        return dq

    def __repr__(self):
        return f"DotAttention({self.query_size}" + (f", scale={self.scale})" if self.scale != 1 else ")")


class GeneralAttention(DotAttention):
    """Luong's general attention ``e_tj = q_t^T W_a k_j``; parameter ``weight`` W_a (Hq, Hk),
    initialised U(-1/sqrt(Hk), 1/sqrt(Hk)). The keys are projected once per sequence."""

    kind = "general"

    def __init__(
        self,
        query_size: int,
        key_size: int,
        *,
        dtype: npt.DTypeLike = np.float32,
        seed: int | np.random.SeedSequence | None = None,
    ) -> None:
        self._init_common(query_size, key_size, dtype)
        self.scale = 1.0
        k = 1 / np.sqrt(self.key_size)
        self.weight = self._param(
            "weight",
            np.random.default_rng(seed).uniform(-k, k, (self.query_size, self.key_size)).astype(self.dtype),
        )

    def _project_keys(self, keys):
        B, S, _ = keys.shape
        return (_flat(keys) @ self.weight.data.T).reshape(B, S, self.query_size)

    def _project_keys_backward(self, mem, dproj):
        self.weight.accumulate(_flat(dproj).T @ _flat(mem.keys))
        return (_flat(dproj) @ self.weight.data).reshape(mem.keys.shape)

    def __repr__(self):
        return f"GeneralAttention({self.query_size}, {self.key_size})"


_KINDS = {"additive": AdditiveAttention, "dot": DotAttention, "general": GeneralAttention}


def make_attention(
    kind: str,
    query_size: int,
    key_size: int,
    attention_size: int | None = None,
    *,
    bias: bool = False,
    dtype: npt.DTypeLike = np.float32,
    seed: int | None = None,
) -> AdditiveAttention | DotAttention:
    """An attention module by name: "additive" (attention_size A, default Hq; with bias, both
    projections biased: ``bias=key_bias=True``), "dot" (needs query_size = key_size) or
    "general" (bias must be False for these two)."""
    _v.choice("kind", kind, tuple(_KINDS))
    if _v.flag("bias", bias) and kind != "additive":
        raise ValueError(f"bias: only additive attention has biases, got bias=True with kind {kind!r}")
    if kind == "additive":
        return AdditiveAttention(
            query_size, key_size, attention_size, bias=bias, key_bias=bias, dtype=dtype, seed=seed
        )
    if kind == "dot":
        return DotAttention(query_size, key_size, dtype=dtype, seed=seed)
    return GeneralAttention(query_size, key_size, dtype=dtype, seed=seed)

"""Feed-forward building blocks with explicit backward: Linear, Embedding, Dropout.

Every layer is a :class:`rnnkit.nn.Module` and follows its protocol (``y = layer(x)``,
``dx = layer.backward(dy)`` adding into each parameter's ``.grad``, state dicts, train/eval).
Parameter names follow torch (``weight``, ``bias``), so torch state dicts load unchanged.

Shape letters: T time steps, B batch, I input (in) features, O output features, V vocabulary
size (number of embeddings), E embedding size, N rows (T*B flattened), ``...`` any leading
dimensions (e.g. (T, B)). Every layer has a dtype, float32 (default) or float64; its inputs
must have that dtype (TypeError otherwise, naming the argument).
"""

from __future__ import annotations

import numbers

import numpy as np
import numpy.typing as npt

from .. import _validate as v
from .module import Module

__all__ = ["Linear", "Embedding", "Dropout", "scatter_add_rows"]


# ============================================================================ Linear


class Linear(Module):
    """Affine map ``y = x W^T + b``: x (..., I) -> y (..., O); weight (O, I), bias (O,).

    Initialised as torch.nn.Linear: U(-1/sqrt(I), 1/sqrt(I)). One GEMM over all leading
    dimensions (a (T, B, I) input is one (T*B, I) x (I, O) product).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: npt.DTypeLike = np.float32,
        seed: int | np.random.SeedSequence | None = None,
    ) -> None:
        self.in_features = v.int_arg("in_features", in_features)
        self.out_features = v.int_arg("out_features", out_features)
        self.dtype = v.dtype_arg(dtype)
        v.flag("bias", bias)
        rng = np.random.default_rng(seed)
        k = 1 / np.sqrt(self.in_features)
        shape = (self.out_features, self.in_features)
        self.weight = self._param("weight", rng.uniform(-k, k, shape).astype(self.dtype))
        self.bias = (
            self._param("bias", rng.uniform(-k, k, self.out_features).astype(self.dtype)) if bias else None
        )
        self._cache = None

    def forward(self, x: npt.ArrayLike) -> np.ndarray:
        """x (..., I) -> y (..., O)."""
        x = self._check_input("x", x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected shape (..., I) with I = {self.in_features}, got {x.shape}")
        self._cache = None
        y = self.apply(x)
        if self.training:
            self._cache = x
        return y

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The forward map without keeping anything (no checks): x (..., I) -> (..., O)."""
        x2 = x.reshape(-1, self.in_features)
        y = x2 @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def backward(self, dy: npt.ArrayLike) -> np.ndarray:
        """dy (..., O) -> dx (..., I); adds dW = dy^T x and db = sum dy into the grads."""
        x = self._need_cache()
        dy = self._check_input("dy", dy)
        v.check_shape("dy", dy, x.shape[:-1] + (self.out_features,), "(..., O)")
        return self.accumulate(x, dy)

    def accumulate(self, x: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Backward for a given input (no checks): adds the parameter gradients of the map at
        ``x`` (..., I) for the output gradient ``dy`` (..., O); returns dx (..., I)."""
        x2 = x.reshape(-1, self.in_features)
        dy2 = dy.reshape(-1, self.out_features)
        self.weight.accumulate(dy2.T @ x2)
        if self.bias is not None:
            self.bias.accumulate(dy2.sum(axis=0))
        return (dy2 @ self.weight.data).reshape(x.shape)

    def __repr__(self):
        extra = "" if self.bias is not None else ", bias=False"
        dt = "" if self.dtype == np.float32 else f", dtype={self.dtype.name}"
        return f"Linear({self.in_features}, {self.out_features}{extra}{dt})"


# ============================================================================ Embedding


def scatter_add_rows(
    target: np.ndarray, idx: np.ndarray, rows: np.ndarray, work: np.ndarray | None = None
) -> np.ndarray:
    """``target[idx[n]] += rows[n]`` for every n, duplicates summed: target (V, E), idx (N,)
    integers, rows (N, E). Returns target.

    Vectorised and deterministic (unlike a fancy-index ``+=``, which drops duplicates, and
    ``np.add.at``, which is slow): sort the indices once, sum each run of equal indices, add
    once per distinct index. A run is summed with one contiguous ``sum`` when the runs are long
    (few distinct indices: the usual case for a vocabulary), else with ``np.add.reduceat`` over
    column blocks (reduceat along rows is cache-hostile for wide rows). ``work``: an optional
    scratch array shaped like rows (overwritten) for the sorted copy.
    """
    n = idx.size
    if n == 0:
        return target
    order = np.argsort(idx, kind="stable")
    sorted_idx = idx[order]
    starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
    if work is not None and work.shape == rows.shape and work.dtype == rows.dtype:
        ro = np.take(rows, order, axis=0, out=work)  # (N, E), runs of equal indices contiguous
    else:
        ro = rows[order]
    uniq = sorted_idx[starts]
    if len(starts) * 8 <= n:  # long runs: one contiguous reduction per distinct index
        ends = np.r_[starts[1:], n]
        sums = np.empty((len(starts), rows.shape[1]), rows.dtype)
        for k in range(len(starts)):
            np.sum(ro[starts[k] : ends[k]], axis=0, out=sums[k])
    else:
        E = rows.shape[1]
        sums = np.empty((len(starts), E), rows.dtype)
        for j in range(0, E, 64):  # narrow contiguous column blocks keep reduceat fast
            block = np.ascontiguousarray(ro[:, j : j + 64])
            sums[:, j : j + 64] = np.add.reduceat(block, starts, axis=0)
    target[uniq] += sums
    return target


class Embedding(Module):
    """Lookup table: indices (...) integers in [0, V) -> vectors (..., E); weight (V, E).

    Initialised N(0, 1) as torch.nn.Embedding. ``padding_idx``: that row starts at zero and
    gets no gradient. Backward is a scatter-add of dy into the rows that were looked up.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        *,
        dtype: npt.DTypeLike = np.float32,
        seed: int | np.random.SeedSequence | None = None,
    ) -> None:
        self.num_embeddings = v.int_arg("num_embeddings", num_embeddings)
        self.embedding_dim = v.int_arg("embedding_dim", embedding_dim)
        self.dtype = v.dtype_arg(dtype)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral):
                raise TypeError(f"padding_idx: expected an int or None, got {padding_idx!r}")
            if not -self.num_embeddings <= int(padding_idx) < self.num_embeddings:
                raise ValueError(
                    f"padding_idx: expected an index in [-V, V) = "
                    f"[{-self.num_embeddings}, {self.num_embeddings}), got "
                    f"{padding_idx}"
                )
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        rng = np.random.default_rng(seed)
        w = rng.standard_normal((self.num_embeddings, self.embedding_dim)).astype(self.dtype)
        if padding_idx is not None:
            w[padding_idx] = 0
        self.weight = self._param("weight", w)
        self._cache = None

    def forward(self, idx: npt.ArrayLike) -> np.ndarray:
        """idx (...) integers in [0, V) -> (..., E)."""
        idx = v.index_array("idx", idx, self.num_embeddings)
        self._cache = None
        out = self.weight.data[idx]
        if self.training:
            self._cache = idx
        return out

    def backward(self, dy: npt.ArrayLike) -> None:
        """dy (..., E): adds dy into ``weight.grad`` at the looked-up rows (duplicates summed,
        the padding row skipped). Indices have no gradient: returns None."""
        idx = self._need_cache()
        dy = self._check_input("dy", dy)
        v.check_shape("dy", dy, idx.shape + (self.embedding_dim,), "(..., E)")
        self.accumulate(idx, dy)
        return None

    def accumulate(self, idx: np.ndarray, dy: np.ndarray) -> None:
        """Scatter-add ``dy`` (..., E) into the rows ``idx`` (...) of weight.grad (no checks)."""
        flat = idx.reshape(-1)
        rows = dy.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:
            keep = flat != self.padding_idx
            flat, rows = flat[keep], rows[keep]
        with self.weight.grad_lock:
            scatter_add_rows(self.weight.grad, flat, rows)

    def __repr__(self):
        extra = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}{extra})"


# ============================================================================ Dropout


class Dropout(Module):
    """Inverted dropout: in training mode each element is kept with probability 1 - p and
    scaled by 1 / (1 - p); in eval mode (and for p = 0) the identity. x (...) -> (...).
    The masks come from a generator seeded by ``seed`` (reproducible)."""

    def __init__(self, p: float = 0.5, *, seed: int | np.random.SeedSequence | None = None) -> None:
        self.p = v.probability("p", p)
        self._rng = np.random.default_rng(seed)
        self._cache = None

    def forward(self, x: npt.ArrayLike) -> np.ndarray:
        """x (...) float32/float64 -> same shape and dtype."""
        x = v.float_array("x", x)
        self._cache = None
        if not self.training or self.p == 0:
            if self.training:
                self._cache = ("identity", x.shape)
            return x
        keep = self._rng.random(x.shape) >= self.p
        scale = 0.0 if self.p == 1 else 1.0 / (1.0 - self.p)
        mask = keep * x.dtype.type(scale)
        self._cache = (mask, x.shape)
        return x * mask

    def backward(self, dy: npt.ArrayLike) -> np.ndarray:
        """dy (...) -> dx = dy * mask (the same mask as forward)."""
        mask, shape = self._need_cache()
        dy = v.float_array("dy", dy)
        v.check_shape("dy", dy, shape, "(...) like x")
        return dy if isinstance(mask, str) else dy * mask.astype(dy.dtype, copy=False)

    def __repr__(self):
        return f"Dropout(p={self.p})"

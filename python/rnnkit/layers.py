"""Feed-forward building blocks with explicit backward: Linear, Embedding, Dropout, and the
losses CrossEntropyLoss (the fused C++ softmax cross-entropy) and MSELoss.

Every layer follows the protocol of :mod:`rnnkit.nn`'s recurrent modules: ``y = layer(x)``
runs forward (keeping what backward needs in training mode), ``dx = layer.backward(dy)`` adds
the parameter gradients into each :class:`rnnkit.nn.Parameter`'s ``.grad`` and returns the
gradient w.r.t. the input; ``parameters()``, ``named_parameters()``, ``zero_grad()``,
``train()`` / ``eval()``, ``state_dict()`` / ``load_state_dict()``. Parameter names follow
torch (``weight``, ``bias``), so torch state dicts load unchanged.

:class:`Module` is the small base class of these layers and of the models of
:mod:`rnnkit.models`: it collects parameters from its own ``_params`` and, recursively, from
every attribute that has ``named_parameters`` (including rnnkit.nn.RNN/LSTM/GRU), with dotted
names (``rnn.weight_ih_l0``, ``head.bias``).

Shape letters: T time steps, B batch, I input (in) features, O output features, V vocabulary
size (number of embeddings), E embedding size, C classes, N rows (T*B flattened), ``...`` any
leading dimensions (e.g. (T, B)). Every layer has a dtype, float32 (default) or float64; its
inputs must have that dtype (TypeError otherwise, naming the argument).
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _validate as v
from .losses import softmax_cross_entropy
from .nn import Parameter

__all__ = ["Module", "Linear", "Embedding", "Dropout", "CrossEntropyLoss", "MSELoss"]


def _int_arg(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def _dtype_arg(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from exc
    if dt not in v.FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def _has_params(obj):
    return (not isinstance(obj, type)) and callable(getattr(obj, "named_parameters", None))


class Module:
    """Base class: parameter bookkeeping, train/eval, state dicts. Subclasses implement
    ``forward`` and ``backward`` and register parameters with :meth:`_param`."""

    training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ structure

    def _param(self, name, data):
        """Register a Parameter called ``name`` holding ``data``; also an attribute."""
        params = self.__dict__.setdefault("_params", {})
        p = Parameter(name, np.ascontiguousarray(data))
        params[name] = p
        return p

    def children(self):
        """[(attribute name, submodule)] in definition order (anything with named_parameters)."""
        return [(k, c) for k, c in vars(self).items()
                if k != "_params" and c is not self and _has_params(c)]

    def named_parameters(self):
        """[(dotted name, Parameter)]: own parameters first, then each child's, prefixed."""
        out = list(self.__dict__.get("_params", {}).items())
        for cname, child in self.children():
            out += [(f"{cname}.{n}", p) for n, p in child.named_parameters()]
        return out

    def parameters(self):
        """[Parameter] in the order of :meth:`named_parameters`."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self):
        """Set every parameter's .grad to zero (in place)."""
        for p in self.parameters():
            p.grad[...] = 0

    def train(self, mode=True):
        """Training mode (keep caches for backward, dropout on); returns self."""
        self.training = v.flag("mode", mode)
        if not self.training:
            self._cache = None
        for _, child in self.children():
            if callable(getattr(child, "train", None)):
                child.train(self.training)
        return self

    def eval(self):
        """Inference mode: no caches (backward raises), no dropout; returns self."""
        return self.train(False)

    def state_dict(self):
        """{dotted name: copy of the parameter's array}."""
        return {n: p.data.copy() for n, p in self.named_parameters()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters (converted to each parameter's dtype). All entries
        are checked before any is loaded. strict: the keys must match exactly (else
        ValueError). Returns ``(missing_keys, unexpected_keys)``."""
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict: expected a mapping of names to arrays, got "
                            f"{type(state_dict).__name__}")
        named = dict(self.named_parameters())
        missing = [k for k in named if k not in state_dict]
        unexpected = [k for k in state_dict if k not in named]
        if strict and (missing or unexpected):
            raise ValueError(f"state_dict: keys do not match {type(self).__name__}'s parameters;"
                             f" missing keys: {missing}, unexpected keys: {unexpected}")
        loaded = {}
        for name, p in named.items():
            if name not in state_dict:
                continue
            arr = np.asarray(state_dict[name])
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise TypeError(f"{name}: expected a real-valued array, got dtype {arr.dtype}")
            if arr.shape != p.data.shape:
                raise ValueError(f"{name}: expected shape {p.data.shape}, got {arr.shape}")
            loaded[name] = arr
        for name, arr in loaded.items():
            # fresh arrays (as rnnkit.nn does): a pending workspace keeps the old weights;
            # optimisers hold the Parameter, so they see the new array
            p = named[name]
            p.data = np.array(arr, dtype=p.data.dtype, copy=True, order="C")
        return missing, unexpected

    # ------------------------------------------------------------------ helpers

    def _check_input(self, name, x):
        x = np.asarray(x)
        if x.dtype != self.dtype:
            raise TypeError(f"{name}: expected dtype {self.dtype.name} (the module's dtype), got "
                            f"{x.dtype}")
        return x

    def _need_cache(self, what="backward"):
        if not self.training:
            raise RuntimeError(f"{type(self).__name__}.{what}: the module is in eval mode, which "
                               "keeps nothing for backward; call train() and run forward again")
        cache = self.__dict__.get("_cache")
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.{what}: no forward to differentiate; run "
                               "forward in training mode first")
        return cache

    def __repr__(self):
        return f"{type(self).__name__}()"


# ============================================================================ Linear

class Linear(Module):
    """Affine map ``y = x W^T + b``: x (..., I) -> y (..., O); weight (O, I), bias (O,).

    Initialised as torch.nn.Linear: U(-1/sqrt(I), 1/sqrt(I)). One GEMM over all leading
    dimensions (a (T, B, I) input is one (T*B, I) x (I, O) product).
    """

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, seed=None):
        self.in_features = _int_arg("in_features", in_features)
        self.out_features = _int_arg("out_features", out_features)
        self.dtype = _dtype_arg(dtype)
        v.flag("bias", bias)
        rng = np.random.default_rng(seed)
        k = 1 / np.sqrt(self.in_features)
        shape = (self.out_features, self.in_features)
        self.weight = self._param("weight", rng.uniform(-k, k, shape).astype(self.dtype))
        self.bias = (self._param("bias", rng.uniform(-k, k, self.out_features).astype(self.dtype))
                     if bias else None)
        self._cache = None

    def forward(self, x):
        """x (..., I) -> y (..., O)."""
        x = self._check_input("x", x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected shape (..., I) with I = {self.in_features}, got "
                             f"{x.shape}")
        self._cache = None
        y = self.apply(x)
        if self.training:
            self._cache = x
        return y

    def apply(self, x):
        """The forward map without keeping anything (no checks): x (..., I) -> (..., O)."""
        x2 = x.reshape(-1, self.in_features)
        y = x2 @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def backward(self, dy):
        """dy (..., O) -> dx (..., I); adds dW = dy^T x and db = sum dy into the grads."""
        x = self._need_cache()
        dy = self._check_input("dy", dy)
        v.check_shape("dy", dy, x.shape[:-1] + (self.out_features,), "(..., O)")
        return self.accumulate(x, dy)

    def accumulate(self, x, dy):
        """Backward for a given input (no checks): adds the parameter gradients of the map at
        ``x`` (..., I) for the output gradient ``dy`` (..., O); returns dx (..., I)."""
        x2 = x.reshape(-1, self.in_features)
        dy2 = dy.reshape(-1, self.out_features)
        self.weight.grad += dy2.T @ x2
        if self.bias is not None:
            self.bias.grad += dy2.sum(axis=0)
        return (dy2 @ self.weight.data).reshape(x.shape)

    def __repr__(self):
        extra = "" if self.bias is not None else ", bias=False"
        dt = "" if self.dtype == np.float32 else f", dtype={self.dtype.name}"
        return f"Linear({self.in_features}, {self.out_features}{extra}{dt})"


# ============================================================================ Embedding

def _index_array(name, idx, V):
    idx = np.asarray(idx)
    if idx.dtype == np.bool_ or not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer array of indices, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= V):
        bad = idx[(idx < 0) | (idx >= V)]
        raise ValueError(f"{name}: expected indices in [0, V) = [0, {V}), got {bad[:5].tolist()}")
    return idx


def scatter_add_rows(target, idx, rows, work=None):
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
            np.sum(ro[starts[k]:ends[k]], axis=0, out=sums[k])
    else:
        E = rows.shape[1]
        sums = np.empty((len(starts), E), rows.dtype)
        for j in range(0, E, 64):  # narrow contiguous column blocks keep reduceat fast
            block = np.ascontiguousarray(ro[:, j:j + 64])
            sums[:, j:j + 64] = np.add.reduceat(block, starts, axis=0)
    target[uniq] += sums
    return target


class Embedding(Module):
    """Lookup table: indices (...) integers in [0, V) -> vectors (..., E); weight (V, E).

    Initialised N(0, 1) as torch.nn.Embedding. ``padding_idx``: that row starts at zero and
    gets no gradient. Backward is a scatter-add of dy into the rows that were looked up.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, *, dtype=np.float32,
                 seed=None):
        self.num_embeddings = _int_arg("num_embeddings", num_embeddings)
        self.embedding_dim = _int_arg("embedding_dim", embedding_dim)
        self.dtype = _dtype_arg(dtype)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral):
                raise TypeError(f"padding_idx: expected an int or None, got {padding_idx!r}")
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"padding_idx: expected an index in [-V, V) = "
                                 f"[{-self.num_embeddings}, {self.num_embeddings}), got "
                                 f"{padding_idx}")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        rng = np.random.default_rng(seed)
        w = rng.standard_normal((self.num_embeddings, self.embedding_dim)).astype(self.dtype)
        if padding_idx is not None:
            w[padding_idx] = 0
        self.weight = self._param("weight", w)
        self._cache = None

    def forward(self, idx):
        """idx (...) integers in [0, V) -> (..., E)."""
        idx = _index_array("idx", idx, self.num_embeddings)
        self._cache = None
        out = self.weight.data[idx]
        if self.training:
            self._cache = idx
        return out

    def backward(self, dy):
        """dy (..., E): adds dy into ``weight.grad`` at the looked-up rows (duplicates summed,
        the padding row skipped). Indices have no gradient: returns None."""
        idx = self._need_cache()
        dy = self._check_input("dy", dy)
        v.check_shape("dy", dy, idx.shape + (self.embedding_dim,), "(..., E)")
        self.accumulate(idx, dy)
        return None

    def accumulate(self, idx, dy):
        """Scatter-add ``dy`` (..., E) into the rows ``idx`` (...) of weight.grad (no checks)."""
        flat = idx.reshape(-1)
        rows = dy.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:
            keep = flat != self.padding_idx
            flat, rows = flat[keep], rows[keep]
        scatter_add_rows(self.weight.grad, flat, rows)

    def __repr__(self):
        extra = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}{extra})"


# ============================================================================ Dropout

class Dropout(Module):
    """Inverted dropout: in training mode each element is kept with probability 1 - p and
    scaled by 1 / (1 - p); in eval mode (and for p = 0) the identity. x (...) -> (...).
    The masks come from a generator seeded by ``seed`` (reproducible)."""

    def __init__(self, p=0.5, *, seed=None):
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self._rng = np.random.default_rng(seed)
        self._cache = None

    def forward(self, x):
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

    def backward(self, dy):
        """dy (...) -> dx = dy * mask (the same mask as forward)."""
        mask, shape = self._need_cache()
        dy = v.float_array("dy", dy)
        v.check_shape("dy", dy, shape, "(...) like x")
        return dy if isinstance(mask, str) else dy * mask.astype(dy.dtype, copy=False)

    def __repr__(self):
        return f"Dropout(p={self.p})"


# ============================================================================ losses

class CrossEntropyLoss(Module):
    """Softmax cross-entropy against integer targets, fused in C++ (one pass gives the loss
    and its gradient): ``loss = mean_n(logsumexp(logits_n) - logits_n[target_n])``.

    ``loss = ce(logits (..., C), targets (...))`` (e.g. logits (T, B, V) and targets (T, B));
    targets equal to ``ignore_index`` (padding) give no loss and no gradient; reduction
    "mean" (over the non-ignored entries), "sum" or "none" (per-entry losses (...)).
    ``dlogits = ce.backward(grad=1.0)`` (..., C) is the gradient of ``grad * loss`` (of
    ``sum(grad * loss)`` for "none", grad a scalar or (...)).
    """

    def __init__(self, ignore_index=-100, reduction="mean"):
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
            raise TypeError(f"ignore_index: expected an int, got {ignore_index!r}")
        self.ignore_index = int(ignore_index)
        self.reduction = v.choice("reduction", reduction, ("mean", "sum", "none"))
        self._cache = None

    def forward(self, logits, targets):
        logits = v.float_array("logits", logits)
        if logits.ndim < 1:
            raise ValueError("logits: expected at least 1 dimension (..., C), got a scalar")
        targets = np.asarray(targets)
        if targets.shape != logits.shape[:-1]:
            raise ValueError(f"targets: expected shape (...) = {logits.shape[:-1]} (logits' "
                             f"leading dimensions), got {targets.shape}")
        C = logits.shape[-1]
        loss, dlogits = softmax_cross_entropy(logits.reshape(-1, C), targets.reshape(-1),
                                              ignore_index=self.ignore_index,
                                              reduction=self.reduction)
        if self.reduction == "none":
            loss = loss.reshape(targets.shape)
        self._cache = dlogits.reshape(logits.shape)
        return loss

    def backward(self, grad=1.0):
        """Gradient w.r.t. the logits (..., C) of ``grad * loss``."""
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss.backward: no forward to differentiate")
        d = self._cache
        if np.isscalar(grad) and grad == 1.0:
            return d
        g = np.asarray(grad, dtype=d.dtype)
        if self.reduction == "none" and g.ndim:
            v.check_shape("grad", g, d.shape[:-1], "(...)")
            return d * g[..., None]
        if g.ndim:
            raise ValueError(f"grad: expected a scalar, got shape {g.shape}")
        return d * g

    def train(self, mode=True):  # a loss keeps its last gradient in either mode
        self.training = v.flag("mode", mode)
        return self

    def __repr__(self):
        return f"CrossEntropyLoss(ignore_index={self.ignore_index}, reduction={self.reduction!r})"


class MSELoss(Module):
    """Mean squared error ``mean((pred - target)^2)`` over all entries (or "sum" / "none").

    ``loss = mse(pred (...), target (...))``; ``dpred = mse.backward(grad=1.0)`` (...)."""

    def __init__(self, reduction="mean"):
        self.reduction = v.choice("reduction", reduction, ("mean", "sum", "none"))
        self._cache = None

    def forward(self, pred, target):
        pred = v.float_array("pred", pred)
        target = v.float_array("target", target, pred.dtype)
        v.check_shape("target", target, pred.shape, "(...) like pred")
        diff = pred - target
        sq = diff * diff
        if self.reduction == "none":
            scale, loss = 1.0, sq
        elif self.reduction == "sum":
            scale, loss = 1.0, pred.dtype.type(sq.sum(dtype=np.float64))
        else:
            n = max(sq.size, 1)
            scale, loss = 1.0 / n, pred.dtype.type(sq.sum(dtype=np.float64) / n if sq.size
                                                  else np.nan)
        self._cache = diff * pred.dtype.type(2 * scale)
        return loss

    def backward(self, grad=1.0):
        """Gradient w.r.t. pred (...) of ``grad * loss``."""
        if self._cache is None:
            raise RuntimeError("MSELoss.backward: no forward to differentiate")
        d = self._cache
        if np.isscalar(grad) and grad == 1.0:
            return d
        g = np.asarray(grad, dtype=d.dtype)
        if g.ndim and self.reduction != "none":
            raise ValueError(f"grad: expected a scalar, got shape {g.shape}")
        return d * g

    train = CrossEntropyLoss.train

    def __repr__(self):
        return f"MSELoss(reduction={self.reduction!r})"

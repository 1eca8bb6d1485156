"""Loss modules with explicit backward: :class:`CrossEntropyLoss` (the fused C++ softmax
cross-entropy of :mod:`rnnkit.ops.losses`) and :class:`MSELoss`.

``loss = ce(logits, targets)`` then ``dlogits = ce.backward()``; a loss keeps its last gradient
in either mode. Letters: C classes, ``...`` any leading dimensions (e.g. (T, B)).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .. import _validate as v
from ..ops.losses import softmax_cross_entropy
from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss"]


class CrossEntropyLoss(Module):
    """Softmax cross-entropy against integer targets, fused in C++ (one pass gives the loss
    and its gradient): ``loss = mean_n(logsumexp(logits_n) - logits_n[target_n])``.

    ``loss = ce(logits (..., C), targets (...))`` (e.g. logits (T, B, V) and targets (T, B));
    targets equal to ``ignore_index`` (padding) give no loss and no gradient; reduction
    "mean" (over the non-ignored entries), "sum" or "none" (per-entry losses (...)).
    ``dlogits = ce.backward(grad=1.0)`` (..., C) is the gradient of ``grad * loss`` (of
    ``sum(grad * loss)`` for "none", grad a scalar or (...)).
    """

    def __init__(self, ignore_index: int = -100, reduction: str = "mean") -> None:
        self.ignore_index = v.int_arg("ignore_index", ignore_index, minimum=None)
        self.reduction = v.choice("reduction", reduction, ("mean", "sum", "none"))
        self._cache = None

    def forward(self, logits: npt.ArrayLike, targets: npt.ArrayLike) -> np.floating | np.ndarray:
        """logits (..., C) float32/float64; targets (...) integer classes in [0, C) or
        ignore_index. Returns the loss: a scalar, or (...) per entry for reduction "none";
        keeps what :meth:`backward` needs."""
        logits = v.float_array("logits", logits)
        if logits.ndim < 1:
            raise ValueError("logits: expected at least 1 dimension (..., C), got a scalar")
        targets = v.as_array("targets", targets)
        if targets.shape != logits.shape[:-1]:
            raise ValueError(
                f"targets: expected shape (...) = {logits.shape[:-1]} (logits' "
                f"leading dimensions), got {targets.shape}"
            )
        C = logits.shape[-1]
        loss, dlogits = softmax_cross_entropy(
            logits.reshape(-1, C),
            targets.reshape(-1),
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )
        if self.reduction == "none":
            loss = loss.reshape(targets.shape)
        self._cache = dlogits.reshape(logits.shape)
        return loss

    def backward(self, grad: npt.ArrayLike = 1.0) -> np.ndarray:
        """Gradient w.r.t. the logits (..., C) of ``grad * loss``."""
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss.backward: no forward to differentiate")
        d = self._cache
        if np.isscalar(grad) and grad == 1.0:
            return d
        g = v.as_array("grad", grad, dtype=d.dtype)
        if self.reduction == "none" and g.ndim:
            v.check_shape("grad", g, d.shape[:-1], "(...)")
            return d * g[..., None]
        if g.ndim:
            raise ValueError(f"grad: expected a scalar, got shape {g.shape}")
        return d * g

    def train(self, mode: bool = True) -> CrossEntropyLoss:  # a loss keeps its last gradient in either mode
        self.training = v.flag("mode", mode)
        return self

    def __repr__(self):
        return f"CrossEntropyLoss(ignore_index={self.ignore_index}, reduction={self.reduction!r})"


class MSELoss(Module):
    """Mean squared error ``mean((pred - target)^2)`` over all entries (or "sum" / "none").

    ``loss = mse(pred (...), target (...))``; ``dpred = mse.backward(grad=1.0)`` (...)."""

    def __init__(self, reduction: str = "mean") -> None:
        self.reduction = v.choice("reduction", reduction, ("mean", "sum", "none"))
        self._cache = None

    def forward(self, pred: npt.ArrayLike, target: npt.ArrayLike) -> np.floating | np.ndarray:
        """pred (...) float32/float64; target (...) of pred's shape. Returns the loss: a
        scalar, or (...) per entry for reduction "none"."""
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
            scale, loss = 1.0 / n, pred.dtype.type(sq.sum(dtype=np.float64) / n if sq.size else np.nan)
        self._cache = diff * pred.dtype.type(2 * scale)
        return loss

    def backward(self, grad: npt.ArrayLike = 1.0) -> np.ndarray:
        """Gradient w.r.t. pred (...) of ``grad * loss``."""
        if self._cache is None:
            raise RuntimeError("MSELoss.backward: no forward to differentiate")
        d = self._cache
        if np.isscalar(grad) and grad == 1.0:
            return d
        g = v.as_array("grad", grad, dtype=d.dtype)
        if g.ndim and self.reduction != "none":
            raise ValueError(f"grad: expected a scalar, got shape {g.shape}")
        return d * g

    train = CrossEntropyLoss.train

    def __repr__(self):
        return f"MSELoss(reduction={self.reduction!r})"

"""Former home of these names, kept so that old imports keep working: they live in
:mod:`rnnkit.ops.losses` now (import them from there)."""

from .ops.losses import softmax, softmax_cross_entropy

__all__ = [
    "softmax",
    "softmax_cross_entropy",
]

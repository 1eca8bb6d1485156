"""Former home of these names, kept so that old imports keep working: they live in
:mod:`rnnkit.train.optim` now (import them from there)."""

from .train.optim import SGD, Adam, AdamW, Optimizer

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]

"""Former home of these names, kept so that old imports keep working: they live in
:mod:`rnnkit.train.diagnostics` now (import them from there)."""

from .train.diagnostics import gradient_norms_through_time

__all__ = ["gradient_norms_through_time"]

"""Former home of these names, kept so that old imports keep working: they live in
:mod:`rnnkit.nn (rnnkit.nn.layers, rnnkit.nn.losses, rnnkit.nn.module)` now (import them from there)."""

from .nn.layers import Dropout, Embedding, Linear, scatter_add_rows
from .nn.losses import CrossEntropyLoss, MSELoss
from .nn.module import Module, Parameter

__all__ = [
    "Module",
    "Parameter",
    "Linear",
    "Embedding",
    "Dropout",
    "CrossEntropyLoss",
    "MSELoss",
    "scatter_add_rows",
]

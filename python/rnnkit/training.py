"""Former home of these names, kept so that old imports keep working: they live in
:mod:`rnnkit.train` now (import them from there)."""

from .train import (
    Callback,
    Checkpoint,
    EarlyStopping,
    Evaluate,
    TrainState,
    clip_grad_norm,
    clip_grad_value,
    fit,
    load_checkpoint,
    save_checkpoint,
    truncated_bptt,
)

__all__ = [
    "clip_grad_norm",
    "clip_grad_value",
    "truncated_bptt",
    "fit",
    "TrainState",
    "Callback",
    "Evaluate",
    "EarlyStopping",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
]

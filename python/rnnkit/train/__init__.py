"""Training: optimisers, the fit loop and its callbacks, truncated BPTT, gradient clipping,
checkpoints and gradient-flow diagnostics.

* :mod:`.optim`: :class:`SGD`, :class:`Adam`, :class:`AdamW`.
* :mod:`.fit`: :func:`fit`, :class:`TrainState`, :class:`Callback`, :class:`Evaluate`,
  :class:`EarlyStopping`, :class:`Checkpoint`.
* :mod:`.bptt`: :func:`truncated_bptt`.
* :mod:`.clipping`: :func:`clip_grad_norm`, :func:`clip_grad_value`.
* :mod:`.checkpoint`: :func:`save_checkpoint`, :func:`load_checkpoint`.
* :mod:`.diagnostics`: :func:`gradient_norms_through_time`.

train is the top layer: it may use everything below (nn, models), nothing imports it.
"""

from .bptt import truncated_bptt
from .checkpoint import load_checkpoint, save_checkpoint
from .clipping import clip_grad_norm, clip_grad_value
from .diagnostics import gradient_norms_through_time
from .fit import Callback, Checkpoint, EarlyStopping, Evaluate, TrainState, fit
from .optim import SGD, Adam, AdamW, Optimizer

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "fit",
    "TrainState",
    "Callback",
    "Evaluate",
    "EarlyStopping",
    "Checkpoint",
    "truncated_bptt",
    "clip_grad_norm",
    "clip_grad_value",
    "save_checkpoint",
    "load_checkpoint",
    "gradient_norms_through_time",
]

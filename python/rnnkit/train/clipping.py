"""Gradient clipping: by global norm (Pascanu et al.'s remedy for exploding gradients) and by
value, in place over a module's parameters."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .. import _validate as v
from ..nn.module import Module, Parameter
from .optim import param_list

__all__ = ["clip_grad_norm", "clip_grad_value"]


def clip_grad_norm(
    params: Module | Iterable[Parameter],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> float:
    """Scale all gradients together so that their global norm is at most ``max_norm``
    (Pascanu et al.'s remedy for exploding gradients); torch's ``clip_grad_norm_`` rule:
    ``grad *= min(1, max_norm / (norm + 1e-6))``.

    params: Parameters or a module; norm_type: 2.0 (or any p >= 1) or ``inf``.
    Returns the global norm *before* clipping (a Python float). A non-finite norm raises
    ValueError if error_if_nonfinite, else the gradients are left unchanged (skip the step).
    """
    params = param_list(params)
    max_norm = v.real("max_norm", max_norm, 0, finite=False)
    norm_type = v.real("norm_type", norm_type, 0, lo_open=True, finite=False)
    if norm_type == math.inf:
        total = max((float(np.abs(p.grad).max(initial=0.0)) for p in params), default=0.0)
    elif norm_type == 2.0:
        total = math.sqrt(sum(float(np.vdot(p.grad, p.grad).real) for p in params))
    else:
        total = sum(float((np.abs(p.grad.astype(np.float64)) ** norm_type).sum()) for p in params) ** (
            1.0 / norm_type
        )
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise ValueError(f"the total gradient norm is non-finite ({total})")
        return total
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for p in params:
            p.grad *= p.grad.dtype.type(coef)
    return total


def clip_grad_value(params: Module | Iterable[Parameter], clip_value: float) -> None:
    """Clip every gradient element into [-clip_value, clip_value] in place."""
    params = param_list(params)
    c = v.real("clip_value", clip_value, 0, finite=False)
    for p in params:
        np.clip(p.grad, -c, c, out=p.grad)

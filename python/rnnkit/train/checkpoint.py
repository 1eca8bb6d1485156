"""Checkpoints: a model's (and optionally an optimizer's) state in one .npz file, with JSON
metadata."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..distributed import DataParallel
from ..nn.module import Module
from .optim import Optimizer

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(
    path: str | os.PathLike[str], model: Module, optimizer: Optimizer | None = None, **meta: Any
) -> str:
    """Save the model's parameters (``param/<name>``), the optimiser's state (``optim/<key>``)
    and JSON-able metadata (``meta``) into one .npz file at ``path``.

    A :class:`~rnnkit.distributed.DataParallel` model is saved by rank 0 only (every rank holds
    the same weights; the other ranks return at once), under the wrapped module's names, so
    that the file loads into the bare module in a single process."""
    if isinstance(model, DataParallel) and model.rank != 0:
        return os.fspath(path)
    arrays: dict[str, Any] = {f"param/{n}": p.data for n, p in model.named_parameters()}
    if optimizer is not None:
        arrays.update({f"optim/{k}": a for k, a in optimizer.state_dict().items()})
    arrays["meta"] = np.array(json.dumps(meta, default=_json_default))
    path = os.fspath(path)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"meta: {type(o).__name__} is not JSON serialisable")


def load_checkpoint(
    path: str | os.PathLike[str], model: Module, optimizer: Optimizer | None = None, strict: bool = True
) -> dict[str, Any]:
    """Load a :func:`save_checkpoint` file into ``model`` (and ``optimizer``); returns meta."""
    with np.load(os.fspath(path), allow_pickle=False) as f:
        params = {k[len("param/") :]: f[k] for k in f.files if k.startswith("param/")}
        optim = {k[len("optim/") :]: f[k] for k in f.files if k.startswith("optim/")}
        meta = json.loads(str(f["meta"])) if "meta" in f.files else {}
    model.load_state_dict(params, strict=strict)
    if optimizer is not None:
        if not optim:
            raise ValueError(f"path: {path} holds no optimizer state")
        optimizer.load_state_dict(optim)
    return meta

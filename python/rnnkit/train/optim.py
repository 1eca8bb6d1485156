"""Optimisers over :class:`rnnkit.nn.Parameter` objects: SGD (momentum, Nesterov, weight
decay), Adam (and AMSGrad) and AdamW, with torch.optim's update rules, so that a step here
equals torch's step from the same state.

``opt = SGD(model.parameters(), lr=0.1, momentum=0.9)`` (a module is accepted too); after a
backward, ``opt.step()`` updates every ``p.data`` in place from ``p.grad``, and
``opt.zero_grad()`` clears the gradients. ``state_dict()`` / ``load_state_dict()`` give a flat
``{str: array}`` mapping (stored in .npz checkpoints by :mod:`rnnkit.training`).

The updates run elementwise in each parameter's dtype (float32 or float64), in place.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import _validate as v
from ..nn.module import Module, Parameter

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "param_list"]


def param_list(params: Module | Iterable[Parameter]) -> list[Parameter]:
    """The parameters to optimise, as a list without repeats: a module's ``parameters()``
    or an iterable of :class:`~rnnkit.nn.Parameter`. TypeError for anything else."""
    items: Any = params  # duck-typed: anything with .parameters(), or an iterable of Parameters
    if callable(getattr(items, "parameters", None)):
        items = items.parameters()
    if isinstance(items, np.ndarray) or not hasattr(items, "__iter__"):
        raise TypeError(f"params: expected an iterable of Parameters or a module, got {type(items).__name__}")
    out, seen = [], set()
    for k, p in enumerate(items):
        if not (
            isinstance(getattr(p, "data", None), np.ndarray)
            and isinstance(getattr(p, "grad", None), np.ndarray)
        ):
            raise TypeError(
                f"params[{k}]: expected a Parameter (with .data and .grad arrays), got {type(p).__name__}"
            )
        if p.data.dtype not in (np.float32, np.float64):
            raise TypeError(f"params[{k}]: expected float32 or float64 data, got {p.data.dtype}")
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    if not out:
        raise ValueError("params: got an empty list of parameters")
    return out


class Optimizer(abc.ABC):
    """Base class: holds the parameters, per-parameter state and the step count."""

    _state_keys = ()

    def __init__(self, params: Module | Iterable[Parameter], lr: float) -> None:
        self.params = param_list(params)
        self.lr = v.real("lr", lr, 0.0)
        self.state: list[dict[str, Any]] = [dict() for _ in self.params]  # per parameter: buffers
        self.step_count = 0

    def zero_grad(self) -> None:
        """Set every parameter's .grad to zero (in place)."""
        for p in self.params:
            p.grad[...] = 0

    def step(self) -> None:
        """One update of every parameter from its .grad."""
        self.step_count += 1
        for p, st in zip(self.params, self.state):
            if p.grad.shape != p.data.shape:
                raise ValueError(
                    f"{getattr(p, 'name', 'param')}: grad shape {p.grad.shape} != data shape {p.data.shape}"
                )
            self._update(p, st)

    @abc.abstractmethod
    def _update(self, p, st):
        """Update parameter p in place from p.grad and its state dict st (per optimiser)."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat ``{key: array}``: "step", "lr" and "state.{k}.{buffer}" per parameter k."""
        out = {"step": np.array(self.step_count), "lr": np.array(self.lr)}
        for k, st in enumerate(self.state):
            for name, buf in st.items():
                out[f"state.{k}.{name}"] = np.array(buf)
        return out

    def load_state_dict(self, state: Mapping[str, npt.ArrayLike]) -> None:
        """Restore from :meth:`state_dict` (buffers are copied, shapes checked): each
        ``state.k.name`` buffer has the shape (...) of parameter k."""
        new: list[dict[str, Any]] = [dict() for _ in self.params]
        for key, val in state.items():
            if key in ("step", "lr"):
                continue
            parts = key.split(".")
            if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit():
                raise ValueError(f"state: unexpected key {key!r}")
            k = int(parts[1])
            if k >= len(self.params):
                raise ValueError(
                    f"state: key {key!r} refers to parameter {k}, but the optimiser has {len(self.params)}"
                )
            arr = v.as_array(key, val)
            p = self.params[k]
            if arr.ndim and arr.shape != p.data.shape:
                raise ValueError(f"state: {key!r} has shape {arr.shape}, parameter {k} has {p.data.shape}")
            new[k][parts[2]] = np.array(arr, dtype=p.data.dtype) if arr.ndim else arr.item()
        self.state = new
        self.step_count = int(np.asarray(state.get("step", 0)))
        if "lr" in state:
            self.lr = float(np.asarray(state["lr"]))

    def __repr__(self):
        return f"{type(self).__name__}({len(self.params)} parameters, lr={self.lr})"


class SGD(Optimizer):
    """Stochastic gradient descent.

    The rule is torch.optim.SGD's::

        g = grad + weight_decay * p
        buf = g (first step), else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf          (when momentum > 0)
        p -= lr * g
    """

    def __init__(
        self,
        params: Module | Iterable[Parameter],
        lr: float = 0.01,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, lr)
        self.momentum = v.real("momentum", momentum, 0.0)
        self.dampening = v.real("dampening", dampening, 0.0)
        self.weight_decay = v.real("weight_decay", weight_decay, 0.0)
        if not isinstance(nesterov, bool):
            raise TypeError(f"nesterov: expected True or False, got {nesterov!r}")
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov: needs momentum > 0 and dampening = 0")
        self.nesterov = nesterov

    def _update(self, p, st):
        dt = p.data.dtype.type
        g = p.grad
        if self.weight_decay:
            g = g + dt(self.weight_decay) * p.data
        if self.momentum:
            buf = st.get("momentum_buffer")
            if buf is None:
                buf = st["momentum_buffer"] = np.array(g, copy=True)
            else:
                buf *= dt(self.momentum)
                buf += dt(1 - self.dampening) * g
            g = g + dt(self.momentum) * buf if self.nesterov else buf
        p.data -= dt(self.lr) * g


class Adam(Optimizer):
    """Adam (Kingma & Ba).

    The rule is torch.optim.Adam's (t = step count)::

        g = grad + weight_decay * p                     (L2 penalty; AdamW decouples it)
        m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
        v_max = max(v_max, v) if amsgrad
        p -= lr / (1 - beta1^t) * m / (sqrt(v or v_max) / sqrt(1 - beta2^t) + eps)
    """

    _decoupled = False

    def __init__(
        self,
        params: Module | Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        self.betas = (
            v.real("betas[0]", betas[0], 0.0, hi=1.0, hi_open=True),
            v.real("betas[1]", betas[1], 0.0, hi=1.0, hi_open=True),
        )
        self.eps = v.real("eps", eps, 0.0)
        self.weight_decay = v.real("weight_decay", weight_decay, 0.0)
        if not isinstance(amsgrad, bool):
            raise TypeError(f"amsgrad: expected True or False, got {amsgrad!r}")
        self.amsgrad = amsgrad

    def _update(self, p, st):
        dt = p.data.dtype.type
        b1, b2 = self.betas
        t = self.step_count
        g = p.grad
        if self.weight_decay:
            if self._decoupled:
                p.data *= dt(1 - self.lr * self.weight_decay)
            else:
                g = g + dt(self.weight_decay) * p.data
        if "exp_avg" not in st:
            st["exp_avg"] = np.zeros_like(p.data)
            st["exp_avg_sq"] = np.zeros_like(p.data)
            if self.amsgrad:
                st["max_exp_avg_sq"] = np.zeros_like(p.data)
        m, s = st["exp_avg"], st["exp_avg_sq"]
        m *= dt(b1)
        m += dt(1 - b1) * g
        s *= dt(b2)
        s += dt(1 - b2) * (g * g)
        if self.amsgrad:
            np.maximum(st["max_exp_avg_sq"], s, out=st["max_exp_avg_sq"])
            s = st["max_exp_avg_sq"]
        bc1 = 1 - b1**t
        bc2 = 1 - b2**t
        denom = np.sqrt(s) / dt(math.sqrt(bc2))
        denom += dt(self.eps)
        p.data -= dt(self.lr / bc1) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), torch.optim.AdamW's rule:
    ``p *= 1 - lr * weight_decay`` before the Adam step (default weight_decay 0.01)."""

    _decoupled = True

    def __init__(
        self,
        params: Module | Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)

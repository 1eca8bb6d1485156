"""The one base of everything with parameters: :class:`Parameter` and :class:`Module`.

Every rnnkit module (the recurrent RNN / LSTM / GRU, the layers, the losses, the attention
modules and the models) is a :class:`Module` and follows one protocol: ``y = module(x)`` runs
``forward`` (keeping what backward needs in training mode), ``module.backward(dy)`` adds the
parameter gradients into each :class:`Parameter`'s ``.grad`` and returns the gradient w.r.t.
the input; ``parameters()``, ``named_parameters()``, ``zero_grad()``, ``train()`` /
``eval()``, ``state_dict()`` / ``load_state_dict()``.

A module's own parameters live in ``_params`` (registered with :meth:`Module._param`, and
reachable as attributes); its children are the attributes that are Modules, and their
parameters are named with dots (``rnn.weight_ih_l0``, ``head.bias``), so that a torch
``state_dict`` of the same structure loads unchanged. :meth:`Module.flatten_grads` makes every
``.grad`` a view of one buffer (data-parallel training reduces that buffer in one message).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import _validate as v

__all__ = ["Parameter", "Module"]

# Serialises gradient accumulation: modules shared by threads add into the same .grad arrays,
# and NumPy's in-place add releases the GIL (two unguarded adds can lose one).
_GRAD_LOCK = threading.Lock()


class Parameter:
    """A named trainable array: ``data`` (...) and its gradient ``grad`` (zeros, same shape
    and dtype).

    ``symbolic`` optionally states the shape in the README's letters, e.g. ``"(4*H, H)"``, for
    the messages of :meth:`Module.load_state_dict`.
    """

    __slots__ = ("name", "data", "grad", "symbolic")

    def __init__(self, name: str, data: np.ndarray, symbolic: str | None = None):
        self.name = name
        self.data = data
        self.grad = np.zeros_like(data)
        self.symbolic = symbolic

    # Held while .grad is updated in place (accumulate, or a scatter-add under ``with``).
    grad_lock = _GRAD_LOCK

    def accumulate(self, g: np.ndarray) -> None:
        """``grad += g`` for g (...) of ``grad``'s shape, safe when several threads run
        backward on one module."""
        with _GRAD_LOCK:
            self.grad += g

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, shape={self.data.shape}, dtype={self.data.dtype.name})"


class _ThreadState(threading.local):
    """What a module's forward keeps for its backward, one per thread: a module shared by
    threads pairs each thread's backward with that thread's own last forward."""

    def __init__(self) -> None:
        self.cache: Any = None  # what the last training forward kept
        self.steps: list = []  # a recurrent module's step tape


class Module:
    """Base class: parameter bookkeeping, train/eval, state dicts. Subclasses implement
    ``forward`` and ``backward`` and register parameters with :meth:`_param`; they need not
    call ``Module.__init__`` (there is none).

    Threads: what forward keeps for backward (``_cache``, the step tape) is per thread, so
    threads may share one module in training mode (each ``backward`` differentiates its own
    thread's last forward), and gradients add into ``.grad`` under a lock
    (:meth:`Parameter.accumulate`). Inference needs no lock at all.
    """

    training = True
    dtype: np.dtype

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The module's computation (``module(...)`` calls it); each subclass defines its own,
        with its shapes in its docstring. The base class has none and raises."""
        raise NotImplementedError(f"{type(self).__name__} has no forward")

    def __getattr__(self, name: str) -> Parameter:
        # torch-style access to a parameter by name, e.g. lstm.weight_hh_l0 (only reached when
        # normal lookup fails: parameters registered under an attribute are found directly)
        params = self.__dict__.get("_params", {})
        if name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    # ------------------------------------------------------------------ structure

    def _param(self, name: str, data: np.ndarray, symbolic: str | None = None) -> Parameter:
        """Register a Parameter called ``name`` holding ``data`` (C-contiguous)."""
        params = self.__dict__.setdefault("_params", {})
        p = Parameter(name, np.ascontiguousarray(data), symbolic)
        params[name] = p
        return p

    def children(self) -> list[tuple[str, Module]]:
        """[(attribute name, submodule)] in definition order."""
        return [(k, c) for k, c in vars(self).items() if isinstance(c, Module) and c is not self]

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """[(dotted name, Parameter)]: own parameters first, then each child's, prefixed."""
        out = list(self.__dict__.get("_params", {}).items())
        for cname, child in self.children():
            out += [(f"{cname}.{n}", p) for n, p in child.named_parameters()]
        return out

    def parameters(self) -> list[Parameter]:
        """[Parameter] in the order of :meth:`named_parameters`."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        """Set every parameter's .grad to zero (in place)."""
        for p in self.parameters():
            p.grad[...] = 0

    def flatten_grads(self, extra: int = 0) -> np.ndarray:
        """Re-point every parameter's ``.grad`` into one C-contiguous buffer (N,) and return it,
        N being the parameters' total size plus ``extra``.

        The buffer holds the gradients back to back in :meth:`named_parameters` order (a
        parameter shared by two children once), then ``extra`` zeros; each ``.grad`` becomes
        a view of its slice, keeping its current values, so a collective over the buffer
        reads and writes every gradient with no copy. All parameters must share one dtype.
        """
        extra = v.int_arg("extra", extra, minimum=0)
        params = list({id(p): p for p in self.parameters()}.values())
        dtypes = sorted({p.grad.dtype.name for p in params})
        if len(dtypes) > 1:
            raise TypeError(f"{type(self).__name__}: expected parameters of one dtype, got {dtypes}")
        dtype = params[0].grad.dtype if params else self.__dict__.get("dtype", np.dtype(np.float64))
        flat = np.zeros(sum(p.grad.size for p in params) + extra, dtype)
        offset = 0
        for p in params:
            view = flat[offset : offset + p.grad.size].reshape(p.grad.shape)
            view[...] = p.grad
            p.grad = view
            offset += p.grad.size
        return flat

    # ------------------------------------------------------------------ modes

    def train(self, mode: bool = True) -> Module:
        """Training mode (keep caches for backward, dropout on); returns self. ``mode=False``
        is :meth:`eval`, which also drops what the last forward kept."""
        self.training = v.flag("mode", mode)
        if not self.training:
            self._drop_caches()
        for _, child in self.children():
            child.train(self.training)
        return self

    def eval(self) -> Module:
        """Inference mode: no caches (backward raises), no dropout; returns self."""
        return self.train(False)

    def _thread_state(self) -> _ThreadState:
        state = self.__dict__.get("_per_thread")
        if state is None:  # setdefault: two threads racing here end up with the same one
            state = self.__dict__.setdefault("_per_thread", _ThreadState())
        return state

    @property
    def _cache(self) -> Any:
        """What this thread's last training forward kept for backward (None: nothing)."""
        return self._thread_state().cache

    @_cache.setter
    def _cache(self, value: Any) -> None:
        self._thread_state().cache = value

    @property
    def _steps(self) -> list:
        """This thread's step tape (recurrent modules)."""
        return self._thread_state().steps

    @_steps.setter
    def _steps(self, value: list) -> None:
        self._thread_state().steps = value

    def _drop_caches(self) -> None:
        """Free what forward kept for backward, in every thread (called by eval())."""
        self.__dict__["_per_thread"] = _ThreadState()

    def __getstate__(self) -> dict[str, Any]:
        # pickle and copy.deepcopy take the module without what forward kept for backward
        # (per-thread state cannot be pickled, and a copy has no forward to differentiate)
        state = self.__dict__.copy()
        state.pop("_per_thread", None)
        return state

    # ------------------------------------------------------------------ state dicts

    def state_dict(self) -> dict[str, np.ndarray]:
        """{dotted name: copy of the parameter's array}, in parameter order."""
        return {n: p.data.copy() for n, p in self.named_parameters()}

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> tuple[list[str], list[str]]:
        """Copy arrays (anything np.asarray accepts; torch tensors and parameters, bfloat16 ones
        included) into the parameters, converted to each parameter's dtype. All entries are
        checked before any is loaded.

        strict: the keys must be exactly the module's (else ValueError listing the missing and
        unexpected ones); with strict=False those are ignored. Returns
        ``(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(
                f"state_dict: expected a mapping of names to arrays, got {type(state_dict).__name__}"
            )
        named = dict(self.named_parameters())
        missing = [k for k in named if k not in state_dict]
        unexpected = [k for k in state_dict if k not in named]
        if strict and (missing or unexpected):
            raise ValueError(
                f"state_dict: keys do not match {type(self).__name__}'s parameters;"
                f" missing keys: {missing}, unexpected keys: {unexpected}"
            )
        loaded = {}
        for name, p in named.items():
            if name not in state_dict:
                continue
            arr = v.as_array(name, state_dict[name], copied=True)
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise TypeError(f"{name}: expected a real-valued array, got dtype {arr.dtype}")
            if p.symbolic is not None:
                v.check_shape(name, arr, p.data.shape, p.symbolic)
            elif arr.shape != p.data.shape:
                raise ValueError(f"{name}: expected shape {p.data.shape}, got {arr.shape}")
            loaded[name] = arr
        for name, arr in loaded.items():
            # fresh arrays: a pending workspace keeps the old weights; optimisers hold the
            # Parameter, so they see the new array
            p = named[name]
            p.data = np.array(arr, dtype=p.data.dtype, copy=True, order="C")
        return missing, unexpected

    # ------------------------------------------------------------------ helpers

    def _check_input(self, name: str, x: Any) -> np.ndarray:
        """x as an array of the module's dtype (TypeError naming ``name`` otherwise)."""
        x = v.as_array(name, x)
        if x.dtype != self.dtype:
            raise TypeError(f"{name}: expected dtype {self.dtype.name} (the module's dtype), got {x.dtype}")
        return x

    def _need_cache(self, what: str = "backward") -> Any:
        """What the last training forward kept; RuntimeError naming why there is none."""
        if not self.training:
            raise RuntimeError(
                f"{type(self).__name__}.{what}: the module is in eval mode, which "
                "keeps nothing for backward; call train() and run forward again"
            )
        cache = self._cache
        if cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.{what}: no forward to differentiate; run "
                "forward in training mode first"
            )
        return cache

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

"""A small fit loop with a progress bar and callbacks (evaluation, early stopping, checkpoints).

Model protocol used here (rnnkit.models and rnnkit.layers modules follow it):
``out = model(x, ...)``; ``model.backward(dout)`` adds into every parameter's ``.grad``;
``model.parameters()``, ``named_parameters()``, ``zero_grad()``, ``train()`` / ``eval()``,
``state_dict()`` / ``load_state_dict()``. A loss is a module ``loss(out, y)`` -> scalar with
``loss.backward()`` -> dout (:class:`rnnkit.layers.MSELoss`, :class:`CrossEntropyLoss`).

Data-parallel (``comm=``, :mod:`rnnkit.distributed`): every rank runs the same fit on the same
global batches; each trains on its shard of each batch, and one allreduce per step combines
the gradients, so that every rank takes the step one process would take on the whole batch.

Shape letters: T time steps, B batch, I input size, H hidden size, O output size, k the
truncation length of truncated BPTT.
"""

from __future__ import annotations

import math
import numbers
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .. import _validate as v
from ..distributed import Communicator, DataParallel, shard_array
from ..nn.losses import MSELoss
from .checkpoint import save_checkpoint
from .clipping import clip_grad_norm, clip_grad_value
from .optim import Optimizer

__all__ = ["fit", "TrainState", "Callback", "Evaluate", "EarlyStopping", "Checkpoint"]


class TrainState:
    """What callbacks see: model, optimizer, loss_fn, ``step`` (updates done), ``loss`` (of
    the last batch), ``history`` ({name: [(step, value), ...]}, "loss" included),
    ``stop`` (set True to end training), ``postfix`` (shown in the progress bar), start time."""

    def __init__(self, model: Any, optimizer: Optimizer, loss_fn: Any) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.step = 0
        self.loss = math.nan
        self.grad_norm = math.nan
        self.history: dict[str, list[tuple[int, float]]] = {"loss": []}
        self.stop = False
        self.stop_reason: str | None = None
        self.postfix: dict[str, Any] = {}
        self.t0 = time.perf_counter()
        self.comm: Communicator | None = None  # set by a data-parallel fit

    @property
    def rank(self) -> int:
        """This process's rank in a data-parallel fit (0 otherwise)."""
        return 0 if self.comm is None else self.comm.rank

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def last(self, name: str, default: float | None = None) -> float | None:
        """The last value recorded in ``history`` under ``name``, or ``default``."""
        h = self.history.get(name)
        return h[-1][1] if h else default


class Callback:
    """Hooks called by :func:`fit`; override any of them. They get the TrainState."""

    def on_train_begin(self, state: TrainState) -> None:
        """Called once, before the first step."""

    def on_step_end(self, state: TrainState) -> None:
        """Called after every optimiser step (``state.step`` counts them); setting
        ``state.stop = True`` (with a ``state.stop_reason``) ends training."""

    def on_train_end(self, state: TrainState) -> None:
        """Called once, after the last step (also when a callback or the time limit stopped
        training)."""


class Evaluate(Callback):
    """Every ``every`` steps (and at the end) call ``fn(model)`` (in eval mode) -> a number or
    a dict of numbers; record them in ``state.history`` (under ``name`` for a number) and the
    progress bar."""

    fn: Callable[[Any], float | dict[str, float]]
    every: int
    name: str
    at_start: bool
    _last_step: int | None  # the step of the last evaluation

    def __init__(
        self,
        fn: Callable[[Any], float | dict[str, float]],
        every: int = 100,
        name: str = "val_loss",
        at_start: bool = False,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn: expected a callable model -> metric, got {type(fn).__name__}")
        if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
            raise ValueError(f"every: expected an int >= 1, got {every!r}")
        self.fn, self.every, self.name, self.at_start = fn, int(every), name, at_start
        self._last_step = None

    def _run(self, state):
        model = state.model
        was = getattr(model, "training", True)
        model.eval()
        try:
            result = self.fn(model)
        finally:
            model.train(was)
        items = result.items() if isinstance(result, dict) else [(self.name, result)]
        for name, value in items:
            state.history.setdefault(name, []).append((state.step, float(value)))
            state.postfix[name] = f"{float(value):.4g}"
        self._last_step = state.step

    def on_train_begin(self, state: TrainState) -> None:
        if self.at_start:
            self._run(state)

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every == 0:
            self._run(state)

    def on_train_end(self, state: TrainState) -> None:
        if self._last_step != state.step:
            self._run(state)


class EarlyStopping(Callback):
    """Stop when ``monitor`` (a history entry, e.g. recorded by :class:`Evaluate`) has not
    improved by more than ``min_delta`` for ``patience`` new values, or (``target``) as soon
    as it is at or beyond ``target``. mode "min" or "max". Put it after its Evaluate."""

    monitor: str
    patience: int
    mode: str
    min_delta: float
    target: float | None
    best: float | None  # the best value so far
    bad: int  # new values without improvement since the best
    _seen: int  # history entries of monitor seen

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "min",
        target: float | None = None,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or patience < 1:
            raise ValueError(f"patience: expected an int >= 1, got {patience!r}")
        self.monitor, self.patience, self.mode = monitor, int(patience), mode
        self.min_delta = v.real("min_delta", min_delta, 0, finite=False)
        self.target = target
        self.best, self.bad, self._seen = None, 0, 0

    def _better(self, a, b):
        return a < b - self.min_delta if self.mode == "min" else a > b + self.min_delta

    def on_step_end(self, state: TrainState) -> None:
        h = state.history.get(self.monitor, [])
        if len(h) == self._seen:
            return
        self._seen = len(h)
        value = h[-1][1]
        if self.target is not None and (value <= self.target if self.mode == "min" else value >= self.target):
            state.stop = True
            state.stop_reason = f"{self.monitor} = {value:.4g} reached the target {self.target}"
            return
        if self.best is None or self._better(value, self.best):
            self.best, self.bad = value, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                state.stop = True
                state.stop_reason = (
                    f"{self.monitor} did not improve for {self.patience} evaluations (best {self.best:.4g})"
                )

    on_train_end = Callback.on_train_end


class Checkpoint(Callback):
    """Save a checkpoint (:func:`save_checkpoint`, model + optimizer) to ``path`` every
    ``every`` steps, or -- with ``monitor`` -- whenever that history entry reaches a new best
    (mode "min"/"max"); and at the end if ``at_end``."""

    path: str
    every: int | None
    monitor: str | None
    mode: str
    at_end: bool
    best: float | None  # the best monitored value so far
    _seen: int  # history entries of monitor seen
    saved_steps: list[int]  # the steps at which a checkpoint was written

    def __init__(
        self,
        path: str | os.PathLike[str],
        every: int | None = None,
        monitor: str | None = None,
        mode: str = "min",
        at_end: bool = False,
    ) -> None:
        if every is None and monitor is None and not at_end:
            raise ValueError("every, monitor, at_end: give at least one")
        self.path, self.every, self.monitor, self.mode, self.at_end = (
            os.fspath(path),
            every,
            monitor,
            mode,
            at_end,
        )
        self.best, self._seen, self.saved_steps = None, 0, []

    def _save(self, state):
        # data-parallel: save_checkpoint writes on rank 0 only
        save_checkpoint(self.path, state.model, state.optimizer, step=state.step, history=state.history)
        self.saved_steps.append(state.step)

    def on_step_end(self, state: TrainState) -> None:
        if self.every and state.step % self.every == 0:
            self._save(state)
        if self.monitor is not None:
            h = state.history.get(self.monitor, [])
            if len(h) != self._seen:
                self._seen = len(h)
                value = h[-1][1]
                if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
                    self.best = value
                    self._save(state)

    def on_train_end(self, state: TrainState) -> None:
        if self.at_end:
            self._save(state)


def _batches(data, steps, epochs):
    """Yield batches: from a callable ``data(step) -> (x, y)`` (``steps`` of them), or from a
    re-iterable of (x, y) (``epochs`` passes, at most ``steps`` batches)."""
    if callable(data):
        if steps is None:
            raise ValueError("steps: needed when data is a callable step -> (x, y)")
        for i in range(steps):
            yield data(i)
        return
    n = 0
    for _ in range(epochs):
        it = iter(data)
        if it is data and _ > 0:
            raise ValueError("data: an iterator can be used for one epoch only; pass a list or a callable")
        for batch in it:
            if steps is not None and n >= steps:
                return
            yield batch
            n += 1


def _unpack(batch):
    """(x, y) or (x, y, lengths) -> (x, y, lengths or None)."""
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise TypeError(
            f"data: expected batches (x, y) or (x, y, lengths), got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    x, y = batch[0], batch[1]
    return x, y, (batch[2] if len(batch) == 3 else None)


def _forward_backward(model, loss_fn, x, y, lengths, raise_on_nan, step):
    """One batch's forward, loss and backward (adding into .grad); returns the loss."""
    out = model(x) if lengths is None else model(x, lengths=lengths)
    loss = loss_fn(out, y)
    if raise_on_nan and not math.isfinite(float(loss)):
        raise FloatingPointError(f"loss: expected a finite value, got {float(loss)} at step {step + 1}")
    model.backward(loss_fn.backward())
    return loss


def _items(loss_fn, y, n):
    """(count, average): the items a loss averages over in a shard -- the non-ignored targets
    of a cross-entropy, the entries of an MSE, else the shard's n sequences -- and whether it
    averages at all (reduction "sum" adds)."""
    if getattr(loss_fn, "reduction", "mean") == "sum":
        return None, False
    ignore = getattr(loss_fn, "ignore_index", None)
    if ignore is not None:
        return int(np.count_nonzero(np.asarray(y) != ignore)), True
    if isinstance(loss_fn, MSELoss):
        return int(np.asarray(y).size), True
    return n, True


def _shard_step(dp, loss_fn, batch, i, batch_axes, raise_on_nan):
    """This rank's part of batch i: forward/backward on its shard; returns (loss, count, average)."""
    x, y, lengths = _unpack(batch)
    ax, ay = batch_axes
    x = v.as_array("x", x)
    if not -x.ndim <= ax < x.ndim:
        raise ValueError(f"batch_axes: x has {x.ndim} dimensions, no batch axis {ax}")
    B = x.shape[ax]
    y_arr = v.as_array("y", y)
    if not -y_arr.ndim <= ay < y_arr.ndim or y_arr.shape[ay] != B:
        raise ValueError(f"y: expected {B} items (x's batch size) along axis {ay}, got shape {y_arr.shape}")
    idx = dp.shard(i, B)
    if idx.size == 0:  # more ranks than items: this rank sits the step out
        return None, 0, True
    xs, ys = shard_array("x", x, idx, ax), shard_array("y", y_arr, idx, ay)
    ls = shard_array("lengths", lengths, idx, 0)
    count, average = _items(loss_fn, ys, idx.size)
    # a shard whose targets are all padding has no mean (nan): it contributes nothing
    loss = _forward_backward(dp, loss_fn, xs, ys, ls, raise_on_nan and count != 0, i)
    return float(loss), count, average


def _data_parallel(model, comm):
    if comm is not None and not isinstance(comm, Communicator):
        raise TypeError(f"comm: expected a rnnkit.distributed Communicator, got {type(comm).__name__}")
    if isinstance(model, DataParallel):
        if comm is not None and model.comm is not comm:
            raise ValueError("comm: expected the communicator of the DataParallel model, got another")
        return model
    return DataParallel(model, comm)


def fit(
    model: Any,
    loss_fn: Any,
    optimizer: Optimizer,
    data: Callable[[int], tuple[Any, ...]] | Iterable[tuple[Any, ...]],
    *,
    steps: int | None = None,
    epochs: int = 1,
    clip_norm: float | None = None,
    clip_value: float | None = None,
    callbacks: Iterable[Callback] = (),
    progress: bool = True,
    desc: str = "train",
    log_every: int = 1,
    time_limit: float | None = None,
    raise_on_nan: bool = False,
    comm: Communicator | None = None,
    batch_axes: tuple[int, int] = (1, 0),
) -> TrainState:
    """Train ``model`` with ``optimizer`` on ``loss_fn``.

    data: a callable ``data(step) -> (x, y)`` (with ``steps``) or a re-iterable of (x, y)
    batches (``epochs`` passes, at most ``steps`` batches); a batch (x, y, lengths) runs
    ``model(x, lengths=lengths)``. One step: zero_grad, forward, loss, backward, optional
    clipping (``clip_norm``: global norm; ``clip_value``), update.
    callbacks: :class:`Callback` instances (Evaluate, EarlyStopping, Checkpoint, ...).
    progress: a tqdm bar (if tqdm is installed) with the loss, the gradient norm, the
    callbacks' metrics and the speed. time_limit: stop after that many seconds.
    raise_on_nan: a non-finite loss raises FloatingPointError (instead of training on).

    comm: train data-parallel on the ranks of this :class:`~rnnkit.distributed.Communicator`
    (``model`` is wrapped in a :class:`~rnnkit.distributed.DataParallel` unless it is one,
    whose communicator is then used even without ``comm``). Every rank passes the same global
    batches; each trains on its shard (items along ``batch_axes`` = (x's axis, y's axis):
    (1, 0) for x (T, B, I) and y (B, O); (1, 1) for targets (T, B); lengths (B,)), the
    gradients are averaged over the global count of contributing items (padding and
    ``ignore_index`` targets excluded), clipping uses the global norm, and the recorded loss
    is the global batch's. An exception on any rank stops every rank with a
    :class:`~rnnkit.distributed.DistributedError` naming it; a stop (early stopping, time
    limit) on any rank stops all at the next step, which is then not taken. The progress bar
    shows on rank 0 only, and checkpoints are written by rank 0.

    Returns the :class:`TrainState` (``state.history["loss"]`` holds (step, loss) pairs).
    """
    if isinstance(steps, bool) or (
        steps is not None and (not isinstance(steps, numbers.Integral) or steps < 1)
    ):
        raise ValueError(f"steps: expected an int >= 1 or None, got {steps!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}")
    raise_on_nan = v.flag("raise_on_nan", raise_on_nan)
    if (
        not isinstance(batch_axes, tuple)
        or len(batch_axes) != 2
        or not all(isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in batch_axes)
    ):
        raise TypeError(f"batch_axes: expected a pair of ints (x's axis, y's axis), got {batch_axes!r}")
    callbacks = list(callbacks)
    for k, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks[{k}]: expected a Callback, got {type(cb).__name__}")
    dp = _data_parallel(model, comm) if comm is not None or isinstance(model, DataParallel) else None
    if dp is not None:
        model = dp
    state = TrainState(model, optimizer, loss_fn)
    state.comm = None if dp is None else dp.comm
    bar = None
    if progress and state.rank == 0:
        try:
            from tqdm.auto import tqdm

            total = steps if (steps is not None or not hasattr(data, "__len__")) else len(data) * epochs
            bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=True)
        except ImportError:  # pragma: no cover - tqdm is optional
            bar = None
    model.train()
    for cb in callbacks:
        cb.on_train_begin(state)
    pending: BaseException | None = None  # data-parallel: this rank's error, for the next sync
    batches = iter(_batches(data, steps, epochs))
    i = 0
    try:
        while True:
            if dp is None:
                batch = next(batches, None)
                if batch is None:
                    break
                optimizer.zero_grad()
                x, y, lengths = _unpack(batch)
                state.loss = float(_forward_backward(model, loss_fn, x, y, lengths, raise_on_nan, i))
            else:
                # every exception before the gradients are combined travels with them, so
                # that all ranks stop together instead of waiting for the failed one
                loss = count = None
                average = True
                try:
                    batch = next(batches, None)
                    if batch is None:
                        break
                    optimizer.zero_grad()
                    if pending is None:
                        loss, count, average = _shard_step(dp, loss_fn, batch, i, batch_axes, raise_on_nan)
                except Exception as exc:
                    pending = exc
                synced = dp.sync_gradients(count, loss=loss, average=average, stop=state.stop, error=pending)
                if synced.stop_ranks:
                    if not state.stop:
                        ranks = ", ".join(str(r) for r in synced.stop_ranks)
                        who = "rank" if len(synced.stop_ranks) == 1 else "ranks"
                        state.stop = True
                        state.stop_reason = f"{who} {ranks} stopped training"
                    break
                state.loss = synced.loss * synced.items if not average else synced.loss
            i += 1
            if clip_norm is not None:
                state.grad_norm = clip_grad_norm(optimizer.params, clip_norm)
            if clip_value is not None:
                clip_grad_value(optimizer.params, clip_value)
            optimizer.step()
            state.step += 1
            state.history["loss"].append((state.step, state.loss))
            try:
                for cb in callbacks:
                    cb.on_step_end(state)
            except Exception as exc:
                if dp is None:
                    raise
                pending = exc
            if bar is not None:
                bar.update(1)
                if state.step % log_every == 0:
                    post = {"loss": f"{state.loss:.4g}"}
                    if clip_norm is not None:
                        post["|g|"] = f"{state.grad_norm:.3g}"
                    post.update(state.postfix)
                    bar.set_postfix(post, refresh=False)
            if time_limit is not None and state.elapsed >= time_limit and not state.stop:
                state.stop, state.stop_reason = True, f"time limit {time_limit:g} s reached"
            if state.stop and dp is None:
                break
    finally:
        if bar is not None:
            bar.close()
    if pending is not None:  # a callback failed after the last step: nothing left to wait for
        raise pending
    for cb in callbacks:
        cb.on_train_end(state)
    return state

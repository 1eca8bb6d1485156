"""Training control: gradient clipping, truncated backprop through time, a small fit loop with
a progress bar and callbacks (evaluation, early stopping, checkpoints), .npz checkpoints.

Model protocol used here (rnnkit.models and rnnkit.layers modules follow it):
``out = model(x, ...)``; ``model.backward(dout)`` adds into every parameter's ``.grad``;
``model.parameters()``, ``named_parameters()``, ``zero_grad()``, ``train()`` / ``eval()``,
``state_dict()`` / ``load_state_dict()``. A loss is a module ``loss(out, y)`` -> scalar with
``loss.backward()`` -> dout (:class:`rnnkit.layers.MSELoss`, :class:`CrossEntropyLoss`).

Shape letters: T time steps, B batch, I input size, H hidden size, O output size, k the
truncation length of truncated BPTT.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time

import numpy as np

from .optim import _param_list

__all__ = ["clip_grad_norm", "clip_grad_value", "truncated_bptt", "fit", "TrainState",
           "Callback", "Evaluate", "EarlyStopping", "Checkpoint", "save_checkpoint",
           "load_checkpoint"]


def _positive(name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a number {'>=' if allow_zero else '>'} 0, got {value}")
    return float(value)


# ============================================================================ clipping

def clip_grad_norm(params, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients together so that their global norm is at most ``max_norm``
    (Pascanu et al.'s remedy for exploding gradients); torch's clip_grad_norm_ rule:
    ``grad *= min(1, max_norm / (norm + 1e-6))``.

    params: Parameters or a module; norm_type: 2.0 (or any p >= 1) or ``inf``.
    Returns the global norm *before* clipping (a Python float). A non-finite norm raises
    ValueError if error_if_nonfinite, else the gradients are left unchanged (skip the step).
    """
    params = _param_list(params)
    max_norm = _positive("max_norm", max_norm, allow_zero=True)
    norm_type = _positive("norm_type", norm_type)
    if norm_type == math.inf:
        total = max((float(np.abs(p.grad).max(initial=0.0)) for p in params), default=0.0)
    elif norm_type == 2.0:
        total = math.sqrt(sum(float(np.vdot(p.grad, p.grad).real) for p in params))
    else:
        total = sum(float((np.abs(p.grad.astype(np.float64)) ** norm_type).sum())
                    for p in params) ** (1.0 / norm_type)
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise ValueError(f"the total gradient norm is non-finite ({total})")
        return total
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for p in params:
            p.grad *= p.grad.dtype.type(coef)
    return total


def clip_grad_value(params, clip_value):
    """Clip every gradient element into [-clip_value, clip_value] in place."""
    params = _param_list(params)
    c = _positive("clip_value", clip_value, allow_zero=True)
    for p in params:
        np.clip(p.grad, -c, c, out=p.grad)


# ============================================================================ truncated BPTT

def truncated_bptt(model, x, y, k, loss, optimizer=None, *, state=None, clip_norm=None):
    """Walk a long sequence in chunks of k steps, carrying the hidden state forward and
    cutting the gradient at every chunk border.

    For each chunk c (x[c*k:(c+1)*k]): forward from the carried state, loss on that chunk's
    targets, backward (no gradient flows into the state the chunk started from), then, with an
    ``optimizer``, optional clipping and one update per chunk (gradients are zeroed before each
    chunk). Without an optimizer the chunks' gradients accumulate into .grad (the truncated
    gradient of the summed chunk losses); nothing is zeroed.

    model: ``y_hat = model(x_chunk, state=s)`` (T_c, B, O) with ``model.final_state`` after
    forward and ``model.backward(dy)`` (e.g. SequenceRegressor(..., many_to_many=True));
    x (T, B, I); y (T, B, ...) per-step targets; k >= 1; loss a loss module; state the
    initial state or None. Returns ``(mean chunk loss weighted by chunk length, final state)``.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k: expected an int >= 1 (steps per chunk), got {k!r}")
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 2:
        raise ValueError(f"x: expected (T, B, I), got shape {x.shape}")
    if y.shape[:2] != x.shape[:2]:
        raise ValueError(f"y: expected the same (T, B) = {x.shape[:2]} as x, got {y.shape}")
    T = x.shape[0]
    total, s = 0.0, state
    for start in range(0, T, int(k)):
        stop = min(start + int(k), T)
        if optimizer is not None:
            optimizer.zero_grad()
        out = model(x[start:stop], state=s)
        value = loss(out, y[start:stop])
        model.backward(loss.backward())
        s = model.final_state  # a plain array: the next chunk's gradient stops here
        if optimizer is not None:
            if clip_norm is not None:
                clip_grad_norm(model.parameters(), clip_norm)
            optimizer.step()
        total += float(value) * (stop - start)
    return total / T, s


# ============================================================================ fit

class TrainState:
    """What callbacks see: model, optimizer, loss_fn, ``step`` (updates done), ``loss`` (of
    the last batch), ``history`` ({name: [(step, value), ...]}, "loss" included),
    ``stop`` (set True to end training), ``postfix`` (shown in the progress bar), start time."""

    def __init__(self, model, optimizer, loss_fn):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.step = 0
        self.loss = math.nan
        self.grad_norm = math.nan
        self.history = {"loss": []}
        self.stop = False
        self.stop_reason = None
        self.postfix = {}
        self.t0 = time.perf_counter()

    @property
    def elapsed(self):
        return time.perf_counter() - self.t0

    def last(self, name, default=None):
        h = self.history.get(name)
        return h[-1][1] if h else default


class Callback:
    """Hooks called by :func:`fit`; override any of them. They get the TrainState."""

    def on_train_begin(self, state):
        pass

    def on_step_end(self, state):
        pass

    def on_train_end(self, state):
        pass


class Evaluate(Callback):
    """Every ``every`` steps (and at the end) call ``fn(model)`` (in eval mode) -> a number or
    a dict of numbers; record them in ``state.history`` (under ``name`` for a number) and the
    progress bar."""

    def __init__(self, fn, every=100, name="val_loss", at_start=False):
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

    def on_train_begin(self, state):
        if self.at_start:
            self._run(state)

    def on_step_end(self, state):
        if state.step % self.every == 0:
            self._run(state)

    def on_train_end(self, state):
        if self._last_step != state.step:
            self._run(state)


class EarlyStopping(Callback):
    """Stop when ``monitor`` (a history entry, e.g. recorded by :class:`Evaluate`) has not
    improved by more than ``min_delta`` for ``patience`` new values, or (``target``) as soon
    as it is at or beyond ``target``. mode "min" or "max". Put it after its Evaluate."""

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="min", target=None):
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) \
                or patience < 1:
            raise ValueError(f"patience: expected an int >= 1, got {patience!r}")
        self.monitor, self.patience, self.mode = monitor, int(patience), mode
        self.min_delta = _positive("min_delta", min_delta, allow_zero=True)
        self.target = target
        self.best, self.bad, self._seen = None, 0, 0

    def _better(self, a, b):
        return a < b - self.min_delta if self.mode == "min" else a > b + self.min_delta

    def on_step_end(self, state):
        h = state.history.get(self.monitor, [])
        if len(h) == self._seen:
            return
        self._seen = len(h)
        value = h[-1][1]
        if self.target is not None and (value <= self.target if self.mode == "min"
                                        else value >= self.target):
            state.stop = True
            state.stop_reason = f"{self.monitor} = {value:.4g} reached the target {self.target}"
            return
        if self.best is None or self._better(value, self.best):
            self.best, self.bad = value, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                state.stop = True
                state.stop_reason = (f"{self.monitor} did not improve for {self.patience} "
                                     f"evaluations (best {self.best:.4g})")

    on_train_end = Callback.on_train_end


class Checkpoint(Callback):
    """Save a checkpoint (:func:`save_checkpoint`, model + optimizer) to ``path`` every
    ``every`` steps, or -- with ``monitor`` -- whenever that history entry reaches a new best
    (mode "min"/"max"); and at the end if ``at_end``."""

    def __init__(self, path, every=None, monitor=None, mode="min", at_end=False):
        if every is None and monitor is None and not at_end:
            raise ValueError("every, monitor, at_end: give at least one")
        self.path, self.every, self.monitor, self.mode, self.at_end = \
            os.fspath(path), every, monitor, mode, at_end
        self.best, self._seen, self.saved_steps = None, 0, []

    def _save(self, state):
        save_checkpoint(self.path, state.model, state.optimizer, step=state.step,
                        history=state.history)
        self.saved_steps.append(state.step)

    def on_step_end(self, state):
        if self.every and state.step % self.every == 0:
            self._save(state)
        if self.monitor is not None:
            h = state.history.get(self.monitor, [])
            if len(h) != self._seen:
                self._seen = len(h)
                value = h[-1][1]
                if self.best is None or (value < self.best if self.mode == "min"
                                         else value > self.best):
                    self.best = value
                    self._save(state)

    def on_train_end(self, state):
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
            raise ValueError("data: an iterator can be used for one epoch only; pass a list "
                             "or a callable")
        for batch in it:
            if steps is not None and n >= steps:
                return
            yield batch
            n += 1


def fit(model, loss_fn, optimizer, data, *, steps=None, epochs=1, clip_norm=None,
        clip_value=None, callbacks=(), progress=True, desc="train", log_every=1,
        time_limit=None):
    """Train ``model`` with ``optimizer`` on ``loss_fn``.

    data: a callable ``data(step) -> (x, y)`` (with ``steps``) or a re-iterable of (x, y)
    batches (``epochs`` passes, at most ``steps`` batches). One step: zero_grad, forward,
    loss, backward, optional clipping (``clip_norm``: global norm; ``clip_value``), update.
    callbacks: :class:`Callback` instances (Evaluate, EarlyStopping, Checkpoint, ...).
    progress: a tqdm bar (if tqdm is installed) with the loss, the gradient norm, the
    callbacks' metrics and the speed. time_limit: stop after that many seconds.
    Returns the :class:`TrainState` (``state.history["loss"]`` holds (step, loss) pairs).
    """
    if isinstance(steps, bool) or (steps is not None and (
            not isinstance(steps, numbers.Integral) or steps < 1)):
        raise ValueError(f"steps: expected an int >= 1 or None, got {steps!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}")
    callbacks = list(callbacks)
    for k, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks[{k}]: expected a Callback, got {type(cb).__name__}")
    state = TrainState(model, optimizer, loss_fn)
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
            total = steps if (steps is not None or not hasattr(data, "__len__")) \
                else len(data) * epochs
            bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=True)
        except ImportError:  # pragma: no cover - tqdm is optional
            bar = None
    model.train()
    for cb in callbacks:
        cb.on_train_begin(state)
    try:
        for x, y in _batches(data, steps, epochs):
            optimizer.zero_grad()
            out = model(x)
            loss = loss_fn(out, y)
            model.backward(loss_fn.backward())
            if clip_norm is not None:
                state.grad_norm = clip_grad_norm(optimizer.params, clip_norm)
            if clip_value is not None:
                clip_grad_value(optimizer.params, clip_value)
            optimizer.step()
            state.step += 1
            state.loss = float(loss)
            state.history["loss"].append((state.step, state.loss))
            for cb in callbacks:
                cb.on_step_end(state)
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
            if state.stop:
                break
    finally:
        if bar is not None:
            bar.close()
    for cb in callbacks:
        cb.on_train_end(state)
    return state


# ============================================================================ checkpoints

def save_checkpoint(path, model, optimizer=None, **meta):
    """Save the model's parameters (``param/<name>``), the optimiser's state (``optim/<key>``)
    and JSON-able metadata (``meta``) into one .npz file at ``path``."""
    arrays = {f"param/{n}": p.data for n, p in model.named_parameters()}
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


def load_checkpoint(path, model, optimizer=None, strict=True):
    """Load a :func:`save_checkpoint` file into ``model`` (and ``optimizer``); returns meta."""
    with np.load(os.fspath(path), allow_pickle=False) as f:
        params = {k[len("param/"):]: f[k] for k in f.files if k.startswith("param/")}
        optim = {k[len("optim/"):]: f[k] for k in f.files if k.startswith("optim/")}
        meta = json.loads(str(f["meta"])) if "meta" in f.files else {}
    model.load_state_dict(params, strict=strict)
    if optimizer is not None:
        if not optim:
            raise ValueError(f"path: {path} holds no optimizer state")
        optimizer.load_state_dict(optim)
    return meta

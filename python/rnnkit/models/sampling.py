"""Scheduled sampling (Bengio et al., 2015) for models whose input at step t is the previous
output (:class:`rnnkit.models.OutputRecurrentRNN`, :class:`rnnkit.models.RecurrentDecoder`,
or anything implementing the step protocol described in :mod:`rnnkit.models`).

At every training step i a schedule gives eps_i, the probability of feeding the ground truth
y_{t-1}; otherwise the model's own previous output is fed (a token: argmax, or sampled with a
temperature; a real value: the output itself). The coin is tossed per time step and per
sequence, from a generator seeded by ``(seed, i)``, so a run is reproducible and a given
training step always takes the same path.

Backward is exact for the path taken: a fed real-valued output is part of the graph (its
gradient flows back into the step that produced it); a fed token is an argmax / a sample, a
piecewise-constant function of the logits whose derivative is zero, so nothing flows there.

Schedules (``schedule(i)`` -> probability of teacher forcing at training step i >= 0):

    ConstantSchedule(p)                  eps_i = p
    LinearDecay(steps, start, end)       eps_i = max(end, start - (start - end) * i / steps)
    ExponentialDecay(k, minimum)         eps_i = max(minimum, k ** i),            0 < k < 1
    InverseSigmoidDecay(k)               eps_i = k / (k + exp(i / k)),            k >= 1

Usage (y (T, B) token targets)::

    model = rnnkit.models.OutputRecurrentRNN(128, vocab_size=V, seed=0)
    sampler = ScheduledSampler(model, InverseSigmoidDecay(k=200), seed=0)
    ce, opt = rnnkit.nn.CrossEntropyLoss(), rnnkit.optim.Adam(model, lr=1e-3)
    for y in batches:
        opt.zero_grad()
        logits = sampler(y)                    # (T, B, V), inputs mixed by per-(t, b) coins
        loss = ce(logits, y)
        sampler.backward(ce.backward())        # exact for the path taken
        opt.step()

Shape letters: T time steps, B batch, I input size, V vocabulary size, O output size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import numpy.typing as npt

from .. import _validate as v

__all__ = [
    "ConstantSchedule",
    "LinearDecay",
    "ExponentialDecay",
    "InverseSigmoidDecay",
    "make_schedule",
    "teacher_forcing_mask",
    "scheduled_sampling_forward",
    "scheduled_sampling_backward",
    "ScheduledSampler",
    "SamplingTape",
    "SamplingPlan",
    "sample_tokens",
]


def sample_tokens(
    logits: np.ndarray,
    rng: np.random.Generator | None = None,
    *,
    greedy: bool = True,
    temperature: float = 1.0,
) -> np.ndarray:
    """Tokens (B,) from logits (B, V): argmax if greedy, else one draw per row from
    softmax(logits / temperature) (vectorised inverse-CDF sampling with ``rng``)."""
    if greedy:
        return np.argmax(logits, axis=-1).astype(np.int64)
    if rng is None:
        raise TypeError("rng: sampling (greedy=False) needs a numpy Generator, got None")
    temperature = v.temperature(temperature)
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    cdf = np.cumsum(p, axis=-1)
    u = rng.random(logits.shape[:-1] + (1,)) * cdf[..., -1:]
    tok = (cdf <= u).sum(axis=-1)
    return np.minimum(tok, logits.shape[-1] - 1).astype(np.int64)


class ConstantSchedule:
    """eps_i = p for every training step i."""

    def __init__(self, p: float) -> None:
        self.p = v.real("p", p, 0.0, 1.0)

    def __call__(self, i: int) -> float:
        v.step_index(i)
        return self.p

    def __repr__(self):
        return f"ConstantSchedule({self.p})"


class LinearDecay:
    """eps_i = max(end, start - (start - end) * i / steps): from start to end in ``steps``."""

    def __init__(self, steps: int, start: float = 1.0, end: float = 0.0) -> None:
        self.steps = v.int_arg("steps", steps)
        self.start = v.real("start", start, 0.0, 1.0)
        self.end = v.real("end", end, 0.0, 1.0)
        if self.end > self.start:
            raise ValueError(f"end: expected end <= start = {self.start}, got {self.end}")

    def __call__(self, i: int) -> float:
        i = v.step_index(i)
        return max(self.end, self.start - (self.start - self.end) * i / self.steps)

    def __repr__(self):
        return f"LinearDecay(steps={self.steps}, start={self.start}, end={self.end})"


class ExponentialDecay:
    """eps_i = max(minimum, k ** i), 0 < k < 1."""

    def __init__(self, k: float, minimum: float = 0.0) -> None:
        self.k = v.real("k", k, 0.0, lo_open=True)
        if self.k >= 1:
            raise ValueError(f"k: expected 0 < k < 1, got {self.k}")
        self.minimum = v.real("minimum", minimum, 0.0, 1.0)

    def __call__(self, i: int) -> float:
        return max(self.minimum, self.k ** v.step_index(i))

    def __repr__(self):
        return f"ExponentialDecay(k={self.k}, minimum={self.minimum})"


class InverseSigmoidDecay:
    """eps_i = k / (k + exp(i / k)), k >= 1 (larger k decays later)."""

    def __init__(self, k: float) -> None:
        self.k = v.real("k", k, 1.0)

    def __call__(self, i: int) -> float:
        z = v.step_index(i) / self.k
        return 0.0 if z > 700 else self.k / (self.k + math.exp(z))

    def __repr__(self):
        return f"InverseSigmoidDecay(k={self.k})"


_SCHEDULES = {
    "constant": ConstantSchedule,
    "linear": LinearDecay,
    "exponential": ExponentialDecay,
    "inverse_sigmoid": InverseSigmoidDecay,
}


def make_schedule(kind: str, **kwargs: Any) -> Callable[[int], float]:
    """A schedule by name: "constant", "linear", "exponential" or "inverse_sigmoid"."""
    v.choice("kind", kind, tuple(_SCHEDULES))
    return _SCHEDULES[kind](**kwargs)


def teacher_forcing_mask(T: int, B: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """Coins (T, B) bool: True = feed the ground truth at (t, b), with probability p each.
    Row 0 is True (step 0 always gets the start input)."""
    p = v.real("p", p, 0.0, 1.0)
    mask = rng.random((T, B)) < p
    mask[0] = True
    return mask


@dataclass
class SamplingTape:
    """What :func:`scheduled_sampling_forward` keeps for backward: per-step caches, the coins
    (T, B) and the inputs actually fed (T, B) tokens or (T, B, O) values."""

    caches: list
    teacher: np.ndarray
    fed: np.ndarray
    discrete: bool


def scheduled_sampling_forward(
    model: Any,
    y: npt.ArrayLike,
    x: npt.ArrayLike | None = None,
    *,
    teacher_prob: float,
    rng: np.random.Generator | None = None,
    seed: int | None = None,
    start: npt.ArrayLike | None = None,
    greedy: bool = True,
    temperature: float = 1.0,
    keep: bool = True,
) -> tuple[np.ndarray, SamplingTape | None]:
    """Run ``model`` step by step, feeding at (t, b) the ground truth y[t-1, b] with
    probability ``teacher_prob``, else the model's own output of step t-1.

    Args: model with the step protocol; y (T, B) tokens or (T, B, O) values (the targets);
    x (T, B, I) or None; teacher_prob in [0, 1]; rng (a numpy Generator) or seed; start: the
    step-0 input; greedy / temperature: how a token is made from logits.
    Returns ``(outputs (T, B, V) or (T, B, O), tape)``; pass the tape to
    :func:`scheduled_sampling_backward` (None if keep=False).
    """
    if rng is None:
        rng = np.random.default_rng(seed)
    v.flag("greedy", greedy)
    ys: np.ndarray = model._check_prev("y", y, None)
    if ys.ndim != (2 if model.discrete else 3):
        raise ValueError(f"y: expected shape {'(T, B)' if model.discrete else '(T, B, O)'}, got {ys.shape}")
    T, B = ys.shape[:2]
    xs: np.ndarray | None = model._check_x("x", x, (T, B))
    teacher = teacher_forcing_mask(T, B, teacher_prob, rng)
    prev = model.start_input(B, start)
    state = model.initial_state(B)
    outs, caches, fed = [], [], []
    for t in range(T):
        fed.append(prev)
        o, state, cache = model.step(prev, None if xs is None else xs[t], state, keep=keep)
        outs.append(o)
        caches.append(cache)
        if t + 1 < T:
            own = model.feedback(o, rng, greedy, temperature)
            m = teacher[t + 1] if model.discrete else teacher[t + 1][:, None]
            prev = np.where(m, ys[t], own)
    tape = SamplingTape(caches, teacher, np.stack(fed), model.discrete) if keep else None
    return np.stack(outs), tape


def scheduled_sampling_backward(model: Any, dout: npt.ArrayLike, tape: SamplingTape) -> np.ndarray | None:
    """Exact backward of the path taken: dout (T, B, V) or (T, B, O). Adds every parameter
    gradient into .grad; returns dx (T, B, I) or None."""
    if tape is None:
        raise ValueError("tape: got None; run scheduled_sampling_forward with keep=True")
    T = len(tape.caches)
    dout = v.as_array("dout", dout)
    if dout.shape[0] != T:
        raise ValueError(f"dout: expected T = {T} steps in the first dimension, got shape {dout.shape}")
    dstate, carry, dxs = None, None, [None] * T
    for t in reversed(range(T)):
        do = dout[t]
        if carry is not None:  # this step's output was fed to step t+1 where the coin said so
            do = do + np.where(tape.teacher[t + 1][:, None], 0, carry)
        dprev, dxs[t], dstate = model.step_backward(do, dstate, tape.caches[t])
        carry = None if tape.discrete else dprev
    return None if dxs[0] is None else np.stack(dxs)


class SamplingPlan:
    """Scheduled sampling over training calls, the one implementation behind
    :class:`ScheduledSampler` and :meth:`rnnkit.models.Seq2Seq.set_scheduled_sampling`: the i-th
    training call feeds the ground truth with probability ``schedule(i)``, its coins coming from
    a generator seeded by ``(seed, i)``; the model's own token is the argmax (greedy) or a
    sample at ``temperature``.

    ``p, rng = plan.next(step=None)`` advances the count (or uses the step given).
    """

    def __init__(
        self,
        schedule: Callable[[int], float],
        *,
        seed: int = 0,
        greedy: bool = True,
        temperature: float = 1.0,
    ):
        if not callable(schedule):
            raise TypeError(f"schedule: expected a callable i -> probability, got {type(schedule).__name__}")
        self.greedy, self.temperature = v.sampling_options(greedy, temperature)
        self.seed = v.seed_arg(seed)
        self.schedule = schedule
        self.step_count = 0
        self.last_teacher_prob = 1.0

    def next(self, step: int | None = None) -> tuple[float, np.random.Generator]:
        """The teacher-forcing probability of this training call and its coins' generator."""
        i = self.step_count if step is None else v.step_index(step)
        p = self.schedule(i)
        self.last_teacher_prob = p
        self.step_count = i + 1
        return p, np.random.default_rng([int(self.seed), i])

    def own_tokens(self, logits: np.ndarray, rng: Any) -> np.ndarray:
        """The model's own tokens (B,) from logits (B, V), by this plan's rule."""
        return sample_tokens(logits, rng, greedy=self.greedy, temperature=self.temperature)


class ScheduledSampler:
    """Scheduled sampling over training: ``outputs = sampler.forward(y, x)`` uses the
    probability ``schedule(i)`` and coins from a generator seeded by ``(seed, i)`` for the
    i-th call (or the step given), then ``dx = sampler.backward(dout)``.

    y (T, B) tokens or (T, B, O) values; x (T, B, I) or None; outputs (T, B, V) or (T, B, O).
    """

    def __init__(
        self,
        model: Any,
        schedule: Callable[[int], float],
        *,
        seed: int = 0,
        greedy: bool = True,
        temperature: float = 1.0,
    ) -> None:
        self.model = model
        self.plan = SamplingPlan(schedule, seed=seed, greedy=greedy, temperature=temperature)
        self._tape: SamplingTape | None = None

    schedule = property(lambda self: self.plan.schedule)
    seed = property(lambda self: self.plan.seed)
    greedy = property(lambda self: self.plan.greedy)
    temperature = property(lambda self: self.plan.temperature)
    step_count = property(lambda self: self.plan.step_count)
    last_teacher_prob = property(lambda self: self.plan.last_teacher_prob)

    def forward(
        self,
        y: npt.ArrayLike,
        x: npt.ArrayLike | None = None,
        *,
        step: int | None = None,
        start: npt.ArrayLike | None = None,
    ) -> np.ndarray:
        """y (T, B) tokens or (T, B, O) values, x (T, B, I) or None -> outputs (T, B, V) or
        (T, B, O), feeding the ground truth with this call's probability ``schedule(i)`` (i the
        call count, or ``step``); keeps the path taken for :meth:`backward`."""
        p, rng = self.plan.next(step)
        out, self._tape = scheduled_sampling_forward(
            self.model,
            y,
            x,
            teacher_prob=p,
            rng=rng,
            start=start,
            greedy=self.greedy,
            temperature=self.temperature,
        )
        return out

    __call__ = forward

    def backward(self, dout: npt.ArrayLike) -> np.ndarray | None:
        """Exact backward of the last forward's path: dout (T, B, V) or (T, B, O). Adds into
        every parameter's .grad; returns dx (T, B, I), or None without an input x."""
        if self._tape is None:
            raise RuntimeError("ScheduledSampler.backward: no forward to differentiate")
        return scheduled_sampling_backward(self.model, dout, self._tape)

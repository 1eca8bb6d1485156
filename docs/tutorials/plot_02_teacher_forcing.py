"""
Teacher forcing, free running and scheduled sampling
====================================================

A network whose input at step t is its own output of step t-1 can be trained two ways. With
**teacher forcing** the input is the *ground truth* :math:`y_{t-1}`, so every step is trained
on correct context; at test time there is no ground truth, the network runs **free** on its
own outputs, and a mistake at one step becomes a wrong input for the next. The model has
never seen its own mistakes during training, and the gap between its training-time and its
test-time accuracy can be large (the "exposure bias"). **Scheduled sampling** (Bengio et al.,
2015) feeds, at each step and for each sequence, the ground truth with a probability that
decays over training and the model's own previous output otherwise, so that the model learns
to recover from its own errors.

The network here is :class:`rnnkit.models.OutputRecurrentRNN`, the output-to-hidden
recurrence of the lecture notes:

.. math::

    h_t = \\tanh(b + x_t W^\\top + y_{t-1} U^\\top), \\qquad o_t = h_t V^\\top + c

With teacher forcing all T steps are independent (their inputs are known), so training is a
few matrix products over T*B rows; free running and scheduled sampling go step by step
(:mod:`rnnkit.models.sampling` is the one implementation of both, for any model with the step
protocol of :mod:`rnnkit.models.autoregressive`).
"""

# %%
# A task where the previous output matters
# ----------------------------------------
# The target is a counter modulo V = 10, started at a random value: :math:`y_t = (y_0 + t)
# \bmod V`. The input :math:`x_t` is a noisy observation of :math:`y_t` (one-hot): the true value
# with probability 0.7, a random token otherwise. Given the true :math:`y_{t-1}`, the next
# target is certain (:math:`y_{t-1} + 1`); given only :math:`x_t`, it is right 73% of the time.

import matplotlib.pyplot as plt
import numpy as np

from rnnkit.models import (
    ConstantSchedule,
    LinearDecay,
    OutputRecurrentRNN,
    RecurrentDecoder,
    ScheduledSampler,
)
from rnnkit.nn import CrossEntropyLoss
from rnnkit.train import Adam

V, T, B, H = 10, 20, 32, 32  # vocabulary, steps, batch, hidden units
NOISE = 0.3
STEPS = 300  # training steps of each model


def make_batch(rng, n):
    """x (T, n, V) one-hot noisy observations and y (T, n) targets."""
    y0 = rng.integers(0, V, n)
    y = (y0[None, :] + np.arange(T)[:, None]) % V
    noisy = rng.random((T, n)) < NOISE
    observed = np.where(noisy, rng.integers(0, V, (T, n)), y)
    return np.eye(V, dtype=np.float32)[observed], y


x_test, y_test = make_batch(np.random.default_rng(123), 500)

# %%
# Three ways to train the same model
# ----------------------------------
# The three models start from the same initialisation and see the same batches.
# :class:`~rnnkit.models.ScheduledSampler` takes a schedule ``i -> probability of feeding the
# ground truth at training step i``: 1 always is teacher forcing (but run step by step), 0
# always is free running, and :class:`~rnnkit.models.LinearDecay` goes from 1 to 0 over the
# first half of training. The teacher-forced model uses the fast path: the inputs of every
# step are :meth:`~rnnkit.models.OutputRecurrentRNN.teacher_inputs` (the targets shifted
# right by one step).

regimes = {
    "teacher forcing": None,
    "free running": ConstantSchedule(0.0),
    "scheduled sampling": LinearDecay(STEPS // 2, 1.0, 0.0),
}


def train(make_model, schedule):
    model = make_model()
    sampler = None if schedule is None else ScheduledSampler(model, schedule, seed=0)
    ce, opt = CrossEntropyLoss(), Adam(model, lr=1e-2)
    rng = np.random.default_rng(1)
    for _ in range(STEPS):
        x, y = make_batch(rng, B)
        opt.zero_grad()
        if sampler is None:
            logits = model(model.teacher_inputs(y), x)  # (T, B, V), all steps at once
            ce(logits, y)
            model.backward(ce.backward())
        else:
            logits = sampler(y, x)  # step by step, inputs mixed by per-(t, b) coins
            ce(logits, y)
            sampler.backward(ce.backward())  # exact for the path taken
        opt.step()
    return model


def output_recurrent():
    return OutputRecurrentRNN(H, vocab_size=V, input_size=V, seed=0)


models = {name: train(output_recurrent, schedule) for name, schedule in regimes.items()}

# %%
# The train/test gap, measured
# ----------------------------
# Each model is scored on 500 held-out sequences twice: with teacher-forced inputs (the
# condition teacher forcing trains in) and running free with
# :meth:`~rnnkit.models.OutputRecurrentRNN.generate` (the condition of use).


def score(models, title):
    results = {}
    for name, model in models.items():
        tf_pred = model(model.teacher_inputs(y_test), x_test).argmax(axis=-1)  # (T, N)
        free_pred = model.generate(T, x=x_test)  # (T, N), greedy, on its own outputs
        results[name] = ((tf_pred == y_test).mean(axis=1), (free_pred == y_test).mean(axis=1))
        tf_acc, free_acc = results[name][0].mean(), results[name][1].mean()
        print(
            f"{name:19s} teacher-forced {tf_acc:6.1%}   free running {free_acc:6.1%}   "
            f"gap {tf_acc - free_acc:+.1%}"
        )
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = list(results)
    pos = np.arange(len(names))
    ax0.bar(pos - 0.2, [results[n][0].mean() * 100 for n in names], 0.4, label="teacher-forced inputs")
    ax0.bar(pos + 0.2, [results[n][1].mean() * 100 for n in names], 0.4, label="free running")
    ax0.set_xticks(pos)
    ax0.set_xticklabels(names)
    ax0.set_ylabel("token accuracy (%)")
    ax0.set_ylim(0, 118)
    ax0.set_yticks(range(0, 101, 20))
    ax0.legend(loc="upper center", ncol=2, fontsize="small")
    ax0.set_title(f"{title}: evaluated two ways")
    for n in names:
        ax1.plot(np.arange(T), results[n][1] * 100, "o-", ms=3, label=n)
    ax1.set_xlabel("time step t")
    ax1.set_ylabel("free-running accuracy at step t (%)")
    ax1.set_ylim(0, 100)
    ax1.grid(alpha=0.3)
    ax1.legend(loc="lower right")
    ax1.set_title("Running free: accuracy along the sequence")
    fig.tight_layout()


score(models, "Output-recurrent")

# %%
# The teacher-forced model is nearly perfect when it is given the true previous value, because
# that value decides the next target: it has learnt to trust its input :math:`y_{t-1}` and to
# read the noisy :math:`x_t` mostly at the first step. Running free, a wrong first guess is
# copied forward (+1 each step) and rarely corrected, and its free-running accuracy is far
# below its teacher-forced one: that difference is the train/test gap, and the teacher-forced
# score alone overstates what the model does in use. The models trained on their own outputs
# score lower when given the ground truth (they learnt to doubt their previous output) and
# show a smaller gap, but they do not run free much better: the output-recurrent network's
# only memory is its previous output, so once that is wrong it has nothing to recover from
# but the current noisy :math:`x_t`.
#
# With a hidden state
# -------------------
# :class:`rnnkit.models.RecurrentDecoder` is the hidden-recurrent counterpart: a GRU fed
# :math:`[y_{t-1}; x_t]`, whose state can accumulate the evidence of many observations.
# The same three regimes, the same data:


def hidden_recurrent():
    return RecurrentDecoder(H, cell="gru", vocab_size=V, input_size=V, seed=0)


models = {name: train(hidden_recurrent, schedule) for name, schedule in regimes.items()}
score(models, "GRU decoder")

# %%
# What the numbers say
# --------------------
# Trained with teacher forcing, the GRU decoder also learns to trust :math:`y_{t-1}` and runs
# free no better than the output-recurrent network: the gap is the same. Trained on its own
# outputs (always, or more and more often under the schedule), it learns to read the counter
# from the observations in its state and to overrule a wrong previous output, and its
# free-running accuracy comes up to its teacher-forced one: the gap closes, which is what
# scheduled sampling is for. Measure both numbers on your own task: the teacher-forced score
# alone says little about a model that will run on its own outputs.

"""
LSTM and GRU: what the gates do, on the adding problem
======================================================

The **adding problem** (Hochreiter & Schmidhuber, 1997) needs a memory that survives many
steps. Each input step has two channels: a random value in [0, 1) and a marker that is 1 at
exactly two steps (one in each half of the sequence). The target, read after the last step,
is the sum of the two marked values. Always answering 1 (the mean) gives a mean squared error
of 1/6 ≈ 0.167; a model well below it has learnt to find the two values, hold them and add
them, across the whole sequence.

The gates, as rnnkit computes them (:doc:`/rnn-equations`; σ the sigmoid):

* LSTM: input gate :math:`i = \\sigma(\\cdot)` decides how much of the candidate
  :math:`g = \\tanh(\\cdot)` to write, forget gate :math:`f` how much of the cell to keep,
  output gate :math:`o` how much of it to show: :math:`c_t = f \\odot c_{t-1} + i \\odot g`,
  :math:`h_t = o \\odot \\tanh(c_t)`.
* GRU: update gate :math:`z` keeps the old state where it is near 1, reset gate :math:`r`
  decides how much of it the candidate sees: :math:`n = \\tanh(\\cdot + r \\odot (\\cdot))`,
  :math:`h_t = (1 - z) \\odot n + z \\odot h_{t-1}`.

The full-size demo (T = 100, minutes of training) is ``python -m rnnkit demo adding``
(:mod:`rnnkit.demos.adding`, results in ``bench/RESULTS.md``); here T = 30 and each model
trains for about a second.
"""

# %%
# Training a vanilla RNN, an LSTM and a GRU
# -----------------------------------------
# Each is a :class:`rnnkit.models.SequenceRegressor` (a recurrent module and a linear head on
# its last state) with H = 32 units, trained with Adam and gradient-norm clipping on fresh
# batches. The LSTM's forget-gate bias (the GRU's update-gate bias) starts at 3, so that the
# cells remember by default.

import matplotlib.pyplot as plt
import numpy as np

from rnnkit import reference
from rnnkit.demos.adding import adding_batch
from rnnkit.models import SequenceRegressor
from rnnkit.nn import MSELoss
from rnnkit.train import Adam, clip_grad_norm

T, B, H, STEPS = 30, 32, 32, 600
x_test, y_test = adding_batch(500, T, np.random.default_rng(99))  # x (T, 500, 2), y (500, 1)


def test_mse(model):
    model.eval()
    mse = float(((model(x_test) - y_test) ** 2).mean())
    model.train()
    return mse


models, curves = {}, {}
for cell in ("rnn", "lstm", "gru"):
    model = SequenceRegressor(cell, 2, H, 1, seed=0, forget_bias=0.0 if cell == "rnn" else 3.0)
    opt, loss = Adam(model, lr=1e-2), MSELoss()
    rng = np.random.default_rng(1)
    curve = []
    for step in range(STEPS + 1):
        if step % 50 == 0:
            curve.append((step, test_mse(model)))
        x, y = adding_batch(B, T, rng)
        opt.zero_grad()
        loss(model(x), y)
        model.backward(loss.backward())
        clip_grad_norm(model, 1.0)
        opt.step()
    models[cell], curves[cell] = model, curve
    print(f"{cell:4s}: test MSE {curve[-1][1]:.4f} after {STEPS} steps (trivial predictor 0.167)")

fig, ax = plt.subplots(figsize=(7, 4))
for cell, curve in curves.items():
    ax.semilogy(*zip(*curve), "o-", ms=3, label=cell.upper())
ax.axhline(1 / 6, color="gray", ls="--", label="predict the mean (1/6)")
ax.set_xlabel("training step")
ax.set_ylabel("test MSE")
ax.set_title(f"The adding problem, T = {T}")
ax.grid(alpha=0.3, which="both")
ax.legend()
fig.tight_layout()

# %%
# The vanilla RNN stays at the trivial predictor: the gradient from the loss at the last step
# has vanished long before it reaches the first marked value (the first tutorial measures
# this). The gated cells learn the task.
#
# Looking inside the trained LSTM
# -------------------------------
# We run the trained LSTM step by step with the NumPy oracle
# :func:`rnnkit.reference.lstm_cell_forward`, whose cache holds each step's gates, and follow
# the unit whose final cell state best predicts the target.

w = models["lstm"].rnn.state_dict()
W_ih, W_hh, b_ih, b_hh = (
    w[k].astype(np.float64) for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
)


def lstm_trace(x):
    """Gates i, f and the cell state c of every step: each (T, N, H)."""
    h = c = None
    trace = {"i": [], "f": [], "c": []}
    for t in range(x.shape[0]):
        (h, c), cache = reference.lstm_cell_forward(x[t].astype(np.float64), h, c, W_ih, W_hh, b_ih, b_hh)
        trace["i"].append(cache["i"])
        trace["f"].append(cache["f"])
        trace["c"].append(c)
    return {k: np.stack(v) for k, v in trace.items()}


tr = lstm_trace(x_test)
corr = [abs(np.corrcoef(tr["c"][-1, :, u], y_test[:, 0])[0, 1]) for u in range(H)]
u = int(np.argmax(corr))
print(f"unit {u}: |correlation| of its final cell state with the target {corr[u]:.2f}")

n = 0  # one test sequence
marks = np.flatnonzero(x_test[:, n, 1])
fig, axes = plt.subplots(3, 1, figsize=(8, 6.5), sharex=True)
axes[0].bar(np.arange(T), x_test[:, n, 0], color="lightgray", label="value")
axes[0].bar(marks, x_test[marks, n, 0], color="C3", label="marked value")
axes[0].set_ylabel("input")
axes[0].legend(loc="upper right")
axes[0].set_title(f"One test sequence: target {y_test[n, 0]:.3f}")
axes[1].plot(tr["i"][:, n, u], "o-", ms=3, label="input gate i")
axes[1].plot(tr["f"][:, n, u], "s-", ms=3, label="forget gate f")
axes[1].set_ylabel(f"gates of unit {u}")
axes[1].set_ylim(-0.05, 1.05)
axes[1].legend(loc="lower right")
axes[2].plot(tr["c"][:, n, u], "o-", ms=3, color="C2")
axes[2].set_ylabel(f"cell state c of unit {u}")
axes[2].set_xlabel("time step t")
for ax in axes:
    for m in marks:
        ax.axvline(m, color="C3", alpha=0.3)
fig.tight_layout()

# %%
# The input gate opens at the marked steps (and little elsewhere), so that only the marked
# values are written into the cell; the forget gate stays near one, so that what was written
# is kept until the end, where the head reads it through :math:`h_T`. That is the additive,
# gated path along which the gradient also flows back unattenuated.
#
# The GRU's update gate
# ---------------------
# The GRU has no separate cell: its update gate :math:`z` decides, per unit and step, whether
# to keep the state (:math:`z \\approx 1`) or to replace it by the candidate :math:`n`.

w = models["gru"].rnn.state_dict()
G_ih, G_hh, g_ih, g_hh = (
    w[k].astype(np.float64) for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
)
h = None
zs, hs = [], []
for t in range(T):
    h, cache = reference.gru_cell_forward(x_test[t].astype(np.float64), h, G_ih, G_hh, g_ih, g_hh)
    zs.append(cache["z"])
    hs.append(h)
zs, hs = np.stack(zs), np.stack(hs)  # (T, N, H)
corr = [abs(np.corrcoef(hs[-1, :, k], y_test[:, 0])[0, 1]) for k in range(H)]
k = int(np.argmax(corr))
print(f"GRU unit {k}: |correlation| of its final state with the target {corr[k]:.2f}")
fig, ax = plt.subplots(figsize=(8, 3.2))
ax.plot(zs[:, n, k], "o-", ms=3, label="update gate z (1 = keep)")
ax.plot(hs[:, n, k], "s-", ms=3, label="state h")
for m in marks:
    ax.axvline(m, color="C3", alpha=0.3)
ax.set_xlabel("time step t")
ax.set_title(f"GRU unit {k} on the same sequence (marked steps in red)")
ax.legend(loc="lower right")
fig.tight_layout()

# %%
# The update gate drops at the marked steps, where the unit takes in the new value, and
# stays near one in between, where the unit holds its state: the same write-then-keep
# behaviour as the LSTM's input and forget gates, with one gate instead of two.

"""
From the equations to the kernels
=================================

A vanilla recurrent network reads a sequence :math:`x_0, \\dots, x_{T-1}` and keeps a hidden
state; at each step it predicts a class (say the next character) through a softmax. This page
writes the forward pass, the loss and backpropagation through time (BPTT) in NumPy, one line
per equation, and puts each line beside :mod:`rnnkit.reference` (the NumPy oracle the tests
trust) and the fused C++ kernel (:func:`rnnkit.rnn_forward`). It ends with the reason LSTMs
and GRUs exist: the gradient that reaches early steps of a vanilla RNN vanishes.

The equations (row-vector form, as PyTorch and rnnkit store the weights,
:doc:`/rnn-equations`), for a batch of B sequences:

.. math::

    a_t &= x_t W_{ih}^\\top + b_{ih} + h_{t-1} W_{hh}^\\top + b_{hh} \\\\
    h_t &= \\tanh(a_t) \\\\
    o_t &= h_t V^\\top + c \\\\
    \\hat y_t &= \\operatorname{softmax}(o_t) \\\\
    L &= -\\frac{1}{TB} \\sum_{t, b} \\log \\hat y_{t, b}[y_{t, b}]

with :math:`x_t` (B, I), :math:`h_t` (B, H), :math:`W_{ih}` (H, I), :math:`W_{hh}` (H, H),
:math:`V` (C, H) and C classes.
"""

# %%
# The forward pass, by hand
# -------------------------
# Small sizes: T = 6 steps, B = 3 sequences, I = 4 inputs, H = 5 hidden units, C = 7 classes.
# float64, so that the finite differences further down are accurate.

import matplotlib.pyplot as plt
import numpy as np

import rnnkit
from rnnkit import reference
from rnnkit.models import SequenceRegressor
from rnnkit.train import gradient_norms_through_time

rng = np.random.default_rng(0)
T, B, I, H, C = 6, 3, 4, 5, 7
x = rng.standard_normal((T, B, I))
targets = rng.integers(0, C, (T, B))
W_ih = 0.5 * rng.standard_normal((H, I))
W_hh = 0.5 * rng.standard_normal((H, H))
b_ih, b_hh = 0.1 * rng.standard_normal(H), 0.1 * rng.standard_normal(H)
V, c = 0.5 * rng.standard_normal((C, H)), np.zeros(C)

h = np.zeros((B, H))  # h_{-1} = 0
hs = []
for t in range(T):
    a = x[t] @ W_ih.T + b_ih + h @ W_hh.T + b_hh  # a_t
    h = np.tanh(a)  # h_t
    hs.append(h)
y_hand = np.stack(hs)  # (T, B, H): every step's state

# %%
# The same pass by the oracle and by the fused kernel. Both take the weights in PyTorch's
# layout and return ``(y, h_T, workspace)``; the workspace keeps what backward needs.

y_ref, hT_ref, ws_ref = reference.rnn_forward(x, None, W_ih, W_hh, b_ih, b_hh)
y_fused, hT_fused, ws = rnnkit.rnn_forward(x, None, W_ih, W_hh, b_ih, b_hh)
print("by hand vs reference:", np.abs(y_hand - y_ref).max())
print("by hand vs fused kernel:", np.abs(y_hand - y_fused).max())
print("final state is the last output:", np.array_equal(hT_fused, y_fused[-1]))

# %%
# The kernel does not loop over time in Python: the input projection of all T steps is one
# matrix product, then each step is one recurrent product plus the elementwise tanh, fused in
# C++.
#
# Softmax cross-entropy
# ---------------------
# The output layer is an ordinary affine map applied to all T*B rows at once. The loss of a
# row is :math:`\log\sum_k e^{o_k} - o_{y}`; its gradient is :math:`\hat y - \mathrm{onehot}(y)`,
# divided by the number of rows for the mean.

logits = (y_fused @ V.T + c).reshape(T * B, C)  # (T*B, C)
flat_targets = targets.reshape(T * B)

shifted = logits - logits.max(axis=1, keepdims=True)  # stable: exp never overflows
p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)  # softmax
loss_hand = -np.log(p[np.arange(T * B), flat_targets]).mean()
dlogits_hand = (p - np.eye(C)[flat_targets]) / (T * B)

loss_ref, dlogits_ref = reference.softmax_cross_entropy(logits, flat_targets)
loss, dlogits = rnnkit.softmax_cross_entropy(logits, flat_targets)  # one fused pass
print(f"loss by hand {loss_hand:.12f}, reference {loss_ref:.12f}, fused {loss:.12f}")
print("dlogits by hand vs fused:", np.abs(dlogits_hand - dlogits).max())

# %%
# Backpropagation through time
# ----------------------------
# Going backwards, the gradient reaching :math:`h_t` has two parts: one from the output at
# step t, one from step t+1 through :math:`W_{hh}`. Then the chain rule through the tanh:
#
# .. math::
#
#     \frac{\partial L}{\partial h_t} &= \frac{\partial L}{\partial o_t} V
#         + \frac{\partial L}{\partial a_{t+1}} W_{hh} \\
#     \frac{\partial L}{\partial a_t} &= \frac{\partial L}{\partial h_t} \odot (1 - h_t^2) \\
#     \frac{\partial L}{\partial W_{hh}} &= \sum_t \Big(\frac{\partial L}{\partial a_t}\Big)^\top
#         h_{t-1}, \qquad
#     \frac{\partial L}{\partial W_{ih}} = \sum_t \Big(\frac{\partial L}{\partial a_t}\Big)^\top x_t
#
# The same in NumPy, walking t = T-1 .. 0:

dy = (dlogits @ V).reshape(T, B, H)  # dL/dh_t from the outputs, every step at once
dW_ih, dW_hh = np.zeros_like(W_ih), np.zeros_like(W_hh)
db = np.zeros(H)
dx = np.zeros_like(x)
da_next = np.zeros((B, H))
for t in reversed(range(T)):
    dh = dy[t] + da_next @ W_hh  # from the output and from step t+1
    da = dh * (1 - y_fused[t] ** 2)  # through tanh
    h_prev = y_fused[t - 1] if t > 0 else np.zeros((B, H))
    dW_hh += da.T @ h_prev
    dW_ih += da.T @ x[t]
    db += da.sum(axis=0)
    dx[t] = da @ W_ih
    da_next = da

# %%
# rnnkit's backward takes the gradient with respect to ``y`` (and optionally ``h_T``) and the
# workspace, and returns every gradient at once:

g = rnnkit.rnn_backward(dy, None, ws)
g_ref = reference.rnn_backward(dy, None, ws_ref)
for name, mine in [("dW_hh", dW_hh), ("dW_ih", dW_ih), ("db_ih", db), ("dx", dx)]:
    print(
        f"{name}: by hand vs fused {np.abs(mine - getattr(g, name)).max():.2e}, "
        f"reference vs fused {np.abs(getattr(g_ref, name) - getattr(g, name)).max():.2e}"
    )

# %%
# Checked against finite differences
# ----------------------------------
# The derivative of the loss with respect to one weight is, to second order in ``eps``,
# ``(L(w + eps) - L(w - eps)) / (2 eps)``. We check every entry of :math:`W_{hh}`.


def loss_of(W_hh_trial):
    y, _, _ = rnnkit.rnn_forward(x, None, W_ih, W_hh_trial, b_ih, b_hh, training=False)
    logits = (y @ V.T + c).reshape(T * B, C)
    return rnnkit.softmax_cross_entropy(logits, flat_targets).loss


eps = 1e-6
numeric = np.zeros_like(W_hh)
for i in range(H):
    for j in range(H):
        step = np.zeros_like(W_hh)
        step[i, j] = eps
        numeric[i, j] = (loss_of(W_hh + step) - loss_of(W_hh - step)) / (2 * eps)
rel = np.abs(numeric - g.dW_hh).max() / np.abs(g.dW_hh).max()
print(f"dW_hh: largest difference from finite differences, relative: {rel:.1e}")

# %%
# Vanishing gradients
# -------------------
# In BPTT each step back multiplies the gradient by :math:`\mathrm{diag}(1 - h_t^2)\, W_{hh}`.
# When the largest singular value of that product is below one, the gradient that reaches
# step t from a loss at the last step shrinks geometrically with the distance, and the early
# inputs cannot be learnt from. :func:`~rnnkit.train.gradient_norms_through_time` measures
# :math:`\|\partial L / \partial h_t\|` for every t of a many-to-one model (a loss on the last
# state only). Here for a vanilla RNN, an LSTM and a GRU with the same hidden size, as
# initialised (PyTorch's initialisation, weights :math:`U(-1/\sqrt H, 1/\sqrt H)`), on
# sequences of T = 100 steps:

T_long, B_long = 100, 16
x_long = rng.standard_normal((T_long, B_long, 2)).astype(np.float32)
y_long = rng.standard_normal((B_long, 1)).astype(np.float32)

fig, ax = plt.subplots(figsize=(7, 4))
for cell, forget_bias in (("rnn", 0.0), ("gru", 1.0), ("lstm", 1.0), ("lstm", 3.0)):
    # forget_bias: added to the LSTM's forget-gate bias (the GRU's update-gate bias) at
    # initialisation; 1 is the usual choice for an LSTM
    model = SequenceRegressor(cell, 2, 32, 1, seed=0, forget_bias=forget_bias)
    norms = gradient_norms_through_time(model, x_long, y_long)
    label = cell.upper() + (f", forget bias {forget_bias:g}" if forget_bias else "")
    ax.semilogy(np.arange(T_long), norms, label=label)
    print(f"{label:22s} ||dL/dh_t|| at t = T-1: {norms[-1]:.1e}, at t = 0: {norms[0]:.1e}")
ax.set_xlabel("time step t (the loss reads the state at t = T-1)")
ax.set_ylabel(r"$\|\partial L / \partial h_t\|$")
ax.set_title("Gradient reaching each step, T = 100, H = 32, as initialised")
ax.grid(alpha=0.3, which="both")
ax.legend()
fig.tight_layout()

# %%
# The vanilla RNN's gradient falls by more than twenty orders of magnitude over the 100 steps,
# geometrically (a straight line on this scale). The LSTM's and the GRU's additive state
# updates (:math:`c_t = f \odot c_{t-1} + i \odot g`, and
# :math:`h_t = (1 - z) \odot n + z \odot h_{t-1}`) carry it back with a factor close to the
# forget (update) gate instead of through a squashing nonlinearity, so it decays far more slowly;
# a forget gate that starts near one (forget bias 3: :math:`\sigma(3) \approx 0.95`) keeps it
# within a few orders of magnitude over the whole sequence, and training can open the gate
# further where the task needs a long memory. The tutorial
# :doc:`plot_04_lstm_gru_gates` shows what that buys on a task that needs it.

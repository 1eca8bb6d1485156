"""
Performance guide: threads, batch size, the small-batch path, memory
====================================================================

What decides how fast rnnkit runs, and what to set. The measured numbers on this page are
copied from ``bench/RESULTS.md`` (each with its machine and commit; the benchmark is
``python bench/bench_rnn.py``, see ``bench/README.md``); the code below only inspects
settings and memory, it times nothing.

Threads
-------
``rnnkit.set_num_threads(n)`` sets rnnkit's own team of threads and its BLAS pool together
(the default follows ``OPENBLAS_NUM_THREADS``); threadpoolctl sees and limits the same
number. The workers sleep between calls, so they do not compete with NumPy.

* Large problems scale with the cores: on an AMD EPYC Zen 5 (2 cores, KVM guest; RESULTS.md
  "The same kernels on Zen 5", commit 0c4cedd), an LSTM training step at (T, B, I=H) =
  (100, 64, 512) took 380.4 ms on one thread and 208.5 ms on two; the medium (100, 16, 256)
  one 26.0 and 14.2 ms.
* Batch 1 does not: a (50, 1, 128) LSTM inference took 0.196 ms on one thread and 0.189 ms
  on two (the same one-thread code runs at both settings: there is nothing to split).
* More than four threads per usable core oversubscribes the cores, runs much slower, and
  gives a ``RuntimeWarning``.
* On a machine shared with other work, one thread per process and several processes is often
  better than several threads each. Start them with the ``"spawn"`` or ``"forkserver"``
  method if other threads may be computing (:doc:`/threads-fork-signals`).

Batch size and the small-batch path
-----------------------------------
Each time step of a recurrence is one product of the state ``(B, H)`` with ``W_hh^T``
``(H, G*H)``, and the steps cannot run in parallel. At small batches that product is too
small for a BLAS call to pay off, so up to a batch of **128** rnnkit runs the whole time loop
on its own packed kernel: the recurrent weights are packed once per call, each thread keeps
its slice hot in its cache for the whole sequence, and the threads meet at a barrier between
the phases of a step. Above B = 128 the per-step products go to OpenBLAS. The input
projection of all T steps is always one large product. What to do with this:

* Batch sequences together when you can: the work per step grows with B, the per-step
  overhead does not. On the Zen 5 above, one LSTM step at batch 1 (I = H = 128) cost 3.1 us
  inside a 50-step call, and a (100, 16, 256) LSTM inference ran at 81% of the core's measured
  FMA peak against 27% for the (50, 1, 128) one.
* Give whole sequences (or long chunks) to one call rather than one step per call: at batch 1
  the streaming API (:meth:`rnnkit.nn.LSTM.stream`, see
  :doc:`plot_05_porting_and_streaming`) took 5.7-5.9 us per step fed one step at a time and
  3.1 us per step fed 50-step chunks (RESULTS.md "Streaming at batch 1", Zen 5, commit
  ebd2bfe), against 106-110 us for ``torch.nn.LSTM`` called on one step.
* Variable lengths cost what the valid steps cost: the kernels skip padded steps, so sort or
  bucket by length only for the sake of the padding you keep in memory, not for speed.

Memory
------
A training-mode forward keeps a workspace for backward: the per-step states and the activated
gates, ``T * B * (G + 2) * H`` numbers (one more ``T * B * H`` for the LSTM's cell state;
the exact list is in ``cpp/workspace.hpp``); its size is ``workspace.nbytes``.
``training=False`` (or a module's ``eval()``) keeps nothing.
Freed result arrays go to a block cache (at most 256 MiB by default, ``set_cache_limit``) and
kernel scratch to a pool (at most 64 MiB per dtype), so that repeated calls of one size skip
the page faults of fresh memory: without the cache an LSTM (100, 64, 512) training step took
8-11% longer on the Zen 5 (RESULTS.md "Block cache limit"). ``empty_cache()`` frees both.
The peak memory of one float32 training step at (100, 64, 512) above its inputs, measured on
the AMD EPYC Zen 4 of 2026-11-27 (``bench/bench_memory.py``): RNN 38.9 MiB, LSTM 166.6 MiB,
GRU 134.2 MiB (torch: 56.5, 211.5, 163.5).
"""

# %%
# The settings in code
# --------------------

import matplotlib.pyplot as plt
import numpy as np

import rnnkit

print("threads:", rnnkit.get_num_threads())
print("subnormals flushed to zero inside kernel calls:", rnnkit.get_flush_denormal())

# %%
# The workspace of a training forward, and what ``training=False`` saves. The sizes are
# small, but the workspace grows linearly in T, B and H, so the ratios hold at any size.

T, B, I, H = 100, 16, 64, 128
rng = np.random.default_rng(0)
x = rng.standard_normal((T, B, I)).astype(np.float32)


def weights(G):
    shapes = ((G * H, I), (G * H, H), (G * H,), (G * H,))  # W_ih, W_hh, b_ih, b_hh
    return [(0.1 * rng.standard_normal(s)).astype(np.float32) for s in shapes]


W = {"rnn": weights(1), "lstm": weights(4), "gru": weights(3)}
_, _, ws = rnnkit.lstm_forward(x, None, None, *W["lstm"])
print(ws)
print(f"LSTM workspace: {ws.nbytes / 2**20:.2f} MiB for x of {x.nbytes / 2**20:.2f} MiB")
_, _, none = rnnkit.lstm_forward(x, None, None, *W["lstm"], training=False)
print("training=False keeps:", none)

# %%
# The workspace of each cell against the number of steps (float32, B = 16, H = 128):

steps = [25, 50, 100, 200, 400]
sizes = {cell: [] for cell in W}
for n in steps:
    xs = rng.standard_normal((n, B, I)).astype(np.float32)
    sizes["rnn"].append(rnnkit.rnn_forward(xs, None, *W["rnn"])[2].nbytes / 2**20)
    sizes["lstm"].append(rnnkit.lstm_forward(xs, None, None, *W["lstm"])[2].nbytes / 2**20)
    sizes["gru"].append(rnnkit.gru_forward(xs, None, *W["gru"])[2].nbytes / 2**20)
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for cell, mib in sizes.items():
    ax.plot(steps, mib, "o-", label=cell.upper())
ax.set_xlabel("time steps T")
ax.set_ylabel("workspace (MiB)")
ax.set_title(f"Training-mode workspace, B = {B}, H = {H}, float32")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()

# %%
# Memory kept between calls, and freeing it:

print({k: f"{v / 2**20:.1f} MiB" for k, v in rnnkit.memory_stats().items()})
del ws
rnnkit.empty_cache()
print({k: f"{v / 2**20:.1f} MiB" for k, v in rnnkit.memory_stats().items()})

# %%
# To cap what is kept (for a process that runs other memory-hungry work between rnnkit
# calls), ``rnnkit.set_cache_limit(nbytes)``; 0 disables the block cache and costs the page
# faults measured above.

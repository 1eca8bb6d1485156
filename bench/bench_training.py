#!/usr/bin/env python
"""Teacher-forced training step: output-recurrent network vs hidden-recurrent RNN.

    python bench/bench_training.py [--T 100] [--B 32] [--H 128,256,512] [--V 64] [--E 64]
                                   [--threads 1,2] [--repeats 15] [--dtype float32]

Both models predict token t from token t-1 (teacher forcing), with the same sizes: an
embedding (V, E) of the previous token, an input map E -> H, hidden size H, a head H -> V.

* output-recurrent (rnnkit.models.OutputRecurrentRNN, embedding_dim=E):
  h_t = tanh(b + e(y_{t-1}) U^T), o_t = h_t V^T + c. Under teacher forcing no step depends
  on another: forward and backward are a few GEMMs over all T*B rows, no loop over time.
* hidden-recurrent (rnnkit.models.RecurrentDecoder, cell="rnn"): the same plus W_hh,
  h_t = tanh(e(y_{t-1}) W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), run by the fused C++ sequence
  kernels (T dependent steps forward and backward).

One training step = zero_grad, forward, softmax cross-entropy (fused C++), backward, SGD
update. The two contenders alternate sample by sample in the same process (the machine may be
shared), each time is the median of ``--repeats`` samples, and the speed-up is
hidden-recurrent time / output-recurrent time. The CPU columns are the process CPU time per
step (median): with one thread they are robust to other processes on the machine, with two
they include the BLAS workers' spinning. Thread counts apply to every BLAS pool (rnnkit's and
NumPy's) via threadpoolctl.
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import numpy as np

import rnnkit
from rnnkit.layers import CrossEntropyLoss
from rnnkit.models import OutputRecurrentRNN, RecurrentDecoder
from rnnkit.optim import SGD

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


def _csv_ints(s):
    return [int(v) for v in s.split(",") if v]


def make_step(model, y, lr=0.01):
    loss_fn = CrossEntropyLoss()
    opt = SGD(model, lr=lr)
    y_prev = model.teacher_inputs(y)

    def step():
        opt.zero_grad()
        out = model(y_prev)
        loss = loss_fn(out, y)
        model.backward(loss_fn.backward())
        opt.step()
        return loss

    return step


def time_pair(step_a, step_b, repeats, warmup=3):
    """Median wall time and median process CPU time of each step, samples alternating."""
    for _ in range(warmup):
        step_a()
        step_b()
    wall = ([], [])
    cpu = ([], [])
    for _ in range(repeats):
        for k, step in enumerate((step_a, step_b)):
            c0, t0 = time.process_time(), time.perf_counter()
            step()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return (
        statistics.median(wall[0]),
        statistics.median(wall[1]),
        statistics.median(cpu[0]),
        statistics.median(cpu[1]),
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--H", type=_csv_ints, default=[128, 256, 512])
    ap.add_argument("--V", type=int, default=64)
    ap.add_argument("--E", type=int, default=64)
    ap.add_argument("--threads", type=_csv_ints, default=[1, 2])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = ap.parse_args(argv)
    dtype = np.dtype(args.dtype)
    T, B, V, E = args.T, args.B, args.V, args.E
    y = np.random.default_rng(0).integers(0, V, (T, B))
    print(
        f"# teacher-forced training step, T={T} B={B} V={V} E={E} {dtype.name}, "
        f"median of {args.repeats}; {datetime.datetime.now().isoformat(timespec='seconds')}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"rnnkit {rnnkit.__version__}, numpy {np.__version__}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        "| H | threads | output-recurrent ms | hidden-recurrent ms | speed-up | "
        "CPU ms (out / hid) | CPU ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    rows = []
    before = rnnkit.get_num_threads()
    try:
        for n in args.threads:
            limits = threadpool_limits(n) if threadpool_limits is not None else None
            rnnkit.set_num_threads(n)
            try:
                for H in args.H:
                    orr = OutputRecurrentRNN(H, vocab_size=V, embedding_dim=E, dtype=dtype, seed=0)
                    hrr = RecurrentDecoder(H, cell="rnn", vocab_size=V, embedding_dim=E, dtype=dtype, seed=0)
                    t_o, t_h, c_o, c_h = time_pair(make_step(orr, y), make_step(hrr, y), args.repeats)
                    rows.append((H, n, t_o, t_h))
                    cpu_ratio = f"{c_h / c_o:.1f}x" if c_o > 0 else "-"
                    print(
                        f"| {H} | {n} | {t_o * 1e3:.2f} | {t_h * 1e3:.2f} | "
                        f"{t_h / t_o:.1f}x | {c_o * 1e3:.2f} / {c_h * 1e3:.2f} | {cpu_ratio} |",
                        flush=True,
                    )
            finally:
                if limits is not None:
                    limits.restore_original_limits()
    finally:
        rnnkit.set_num_threads(before)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python
"""Data-parallel training over MPI: step time and scaling efficiency for 1, 2, ... ranks.

    python bench/bench_distributed.py [--ranks 1,2] [--shape T,B,I,H] [--cell lstm] [--steps 30]

Needs ``pip install "rnnkit[mpi]"``. For each rank count N, launches ``mpiexec -n N`` on this
script's worker: every rank (one rnnkit thread, one BLAS thread) trains a SequenceRegressor
(recurrent layer + Linear head, float32, Adam, MSE) with :class:`rnnkit.distributed.DataParallel`
on its shard of a fixed global batch of B sequences (strong scaling: N ranks share the same
work). A step is timed from a barrier to the end of the optimizer step on the slowest rank;
the allreduce (``sync_gradients``: the one message of the step) is timed on its own. Prints
the median step time, the speed-up over 1 rank, the scaling efficiency (speed-up / N), the
median allreduce time per step, and a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

import rnnkit
from rnnkit.distributed import DataParallel, init
from rnnkit.models import SequenceRegressor
from rnnkit.nn import MSELoss
from rnnkit.train import Adam

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # optional: then only rnnkit's own threads are limited
    threadpool_limits = None


def _parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", default="1,2", help="comma-separated rank counts (default %(default)s)")
    p.add_argument(
        "--shape", default="100,64,32,256", help="T,B,I,H: B is the global batch (default %(default)s)"
    )
    p.add_argument("--cell", default="lstm", help="rnn, lstm or gru (default %(default)s)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per run (default %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default %(default)s)")
    p.add_argument(
        "--deterministic", action="store_true", help="rank-ordered reduction (reduce-scatter + allgather)"
    )
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def worker(args):
    """One rank's run (under mpiexec); rank 0 prints one JSON line of medians."""
    rnnkit.set_num_threads(1)
    if threadpool_limits is not None:
        threadpool_limits(1)  # NumPy's BLAS too: one core per rank
    comm = init()
    T, B, I, H = (int(s) for s in args.shape.split(","))
    dp = DataParallel(
        SequenceRegressor(args.cell, I, H, 1, dtype=np.float32, seed=0),
        comm,
        deterministic=args.deterministic,
    )
    loss_fn, opt = MSELoss(), Adam(dp.parameters(), lr=1e-3)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    y = rng.standard_normal((B, 1)).astype(np.float32)
    step_times, reduce_times = [], []
    for step in range(args.warmup + args.steps):
        idx = dp.shard(step, B)
        xs, ys = np.ascontiguousarray(x[:, idx]), y[idx]
        comm.barrier()
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = loss_fn(dp(xs), ys)
        dp.backward(loss_fn.backward())
        t1 = time.perf_counter()
        dp.sync_gradients(ys.size, loss=float(loss))
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if step >= args.warmup:
            step_times.append(t3 - t0)
            reduce_times.append(t2 - t1)
    # the step of the slowest rank is the step of the job
    slowest = [max(ts) for ts in zip(*comm.allgather(step_times))]
    reduces = comm.allgather(reduce_times)
    if comm.rank == 0:
        n_params = sum(p.data.size for p in dp.parameters())
        print(
            json.dumps(
                {
                    "ranks": comm.size,
                    "step_s": statistics.median(slowest),
                    "allreduce_s": statistics.median(statistics.median(r) for r in reduces),
                    "grad_mb": n_params * 4 / 1e6,
                }
            ),
            flush=True,
        )


def _mpiexec():
    here = pathlib.Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if found is None:
        raise SystemExit('mpiexec not found: pip install "rnnkit[mpi]"')
    return found


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.worker:
        worker(args)
        return None
    ranks = [int(r) for r in args.ranks.split(",")]
    passthrough = ["--shape", args.shape, "--cell", args.cell, "--steps", str(args.steps)]
    passthrough += ["--warmup", str(args.warmup)] + (["--deterministic"] if args.deterministic else [])
    rows = []
    for n in ranks:
        cmd = [_mpiexec(), "-n", str(n), sys.executable, __file__, "--worker", *passthrough]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}{out.stderr}")
        rows.append(json.loads(next(line for line in out.stdout.splitlines() if line.startswith("{"))))
    base = next((r["step_s"] for r in rows if r["ranks"] == 1), None)
    T, B, I, H = args.shape.split(",")
    reduction = "rank-ordered" if args.deterministic else "MPI"
    print(
        f"{args.cell}, T={T} global B={B} I={I} H={H}, float32, 1 thread per rank, "
        f"{rows[0]['grad_mb']:.2f} MB of gradients, {reduction} reduction"
    )
    print("| ranks | step ms | speed-up | efficiency | allreduce ms/step |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        speedup = base / r["step_s"] if base else float("nan")
        r["speedup"], r["efficiency"] = speedup, speedup / r["ranks"]
        print(
            f"| {r['ranks']} | {r['step_s'] * 1e3:.2f} | {speedup:.2f} | {r['efficiency']:.0%} "
            f"| {r['allreduce_s'] * 1e3:.3f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])

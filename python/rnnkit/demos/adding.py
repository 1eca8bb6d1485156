"""The adding problem (Hochreiter & Schmidhuber, 1997): vanilla RNN vs LSTM vs GRU.

Each sequence has T steps of two channels: a random value U(0, 1), and a marker that is 1 at
exactly two steps (one in the first half, one in the second half) and 0 elsewhere. The target
is the sum of the two marked values. Predicting the mean 1 gives MSE = Var(U1 + U2) = 1/6 ~
0.167; a model below 0.01 has learned to find and add the marked values across up to T = 100
steps, which needs gradients that survive that distance.

    python -m rnnkit demo adding [--quick] [--out DIR] [--models lstm,gru] [...]
    mpiexec -n 2 python -m rnnkit demo adding --distributed [...]

trains each model (a SequenceRegressor: recurrent module + Linear head on the last state) with
Adam and gradient-norm clipping on freshly generated batches, evaluates the test MSE on a fixed
generated test set every ``--eval-every`` steps, stops a model at ``--target`` or its time
budget, prints a table and writes ``adding_results.json``, and (with matplotlib) the plots
``adding_mse.png`` (test MSE over training) and ``adding_gradient_flow.png`` (||dL/dh_t||
through time for each trained model). No download: the data are generated from ``--seed``.

``--distributed`` (under ``mpiexec -n N``, with ``pip install "rnnkit[mpi]"``) trains each model
data-parallel (:mod:`rnnkit.distributed`): every rank draws the same global batches, trains on
its shard, and the ranks combine their gradients every step; rank 0 prints and writes the files.

Shape letters: T time steps, B batch, N test sequences, H hidden size.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from typing import Any

import numpy as np

from .._cells import CELL_NAMES, RNN_CELL
from ..distributed import Communicator, DataParallel, init
from ..models import SequenceRegressor
from ..nn import MSELoss
from ..train import Adam, Callback, EarlyStopping, Evaluate, fit, gradient_norms_through_time
from ._common import Threads, add_run_args, config

TRIVIAL_MSE = 1.0 / 6.0
# a cell trains the same whatever else runs: rnn 1, lstm 2, gru 3
_CELL_SEED = {name: k + 1 for k, name in enumerate(CELL_NAMES)}


def adding_batch(n, T, rng, dtype=np.float32):
    """x (T, n, 2) and y (n, 1): values U(0, 1) and markers at one step of each half."""
    if T < 2:
        raise ValueError(f"T: expected at least 2 steps, got {T}")
    values = rng.random((T, n))
    first = rng.integers(0, T // 2, n)
    second = rng.integers(T // 2, T, n)
    marks = np.zeros((T, n))
    cols = np.arange(n)
    marks[first, cols] = 1.0
    marks[second, cols] = 1.0
    x = np.stack([values, marks], axis=-1).astype(dtype)
    y = (values[first, cols] + values[second, cols])[:, None].astype(dtype)
    return x, y


# Defaults of the full run (tuned on 2 cores; see bench/RESULTS.md "Adding problem demo").
FULL = dict(
    T=100,
    hidden=64,
    batch=64,
    lr=1e-2,
    clip=1.0,
    steps=6000,
    eval_every=100,
    test_size=1000,
    target=1e-3,
    budget=None,
    forget_bias=3.0,
    models="rnn,lstm,gru",
    total_budget=570.0,
)
# --quick: tiny settings for the test suite (seconds).
# No time budget: the run is deterministic (fixed seeds, one thread), a few seconds.
QUICK = dict(
    T=20,
    hidden=32,
    batch=32,
    lr=1e-2,
    clip=1.0,
    steps=800,
    eval_every=50,
    test_size=500,
    target=0.01,
    budget=None,
    forget_bias=3.0,
    models="lstm,gru",
    total_budget=None,
)


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m rnnkit demo adding", description="The adding problem: vanilla RNN vs LSTM vs GRU."
    )
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds), for tests")
    p.add_argument("--out", default="adding-demo", help="output directory (default %(default)s)")
    p.add_argument("--models", help="comma-separated cells among rnn, lstm, gru")
    p.add_argument("--T", type=int, help="sequence length")
    p.add_argument("--hidden", type=int, help="hidden size H")
    p.add_argument("--batch", type=int, help="batch size B")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--clip", type=float, help="global gradient-norm clip")
    p.add_argument("--steps", type=int, help="max training steps per model")
    p.add_argument("--eval-every", type=int, dest="eval_every", help="steps between test evals")
    p.add_argument("--test-size", type=int, dest="test_size", help="test sequences N")
    p.add_argument("--target", type=float, help="stop a model once its test MSE is below this")
    p.add_argument("--budget", type=float, help="seconds per model (default: share of the total)")
    p.add_argument(
        "--total-budget",
        type=float,
        dest="total_budget",
        help="seconds for all models together (split evenly)",
    )
    p.add_argument(
        "--forget-bias",
        type=float,
        dest="forget_bias",
        help="initial LSTM forget-gate / GRU update-gate bias",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help='train data-parallel on the ranks of mpiexec -n N (pip install "rnnkit[mpi]")',
    )
    add_run_args(p)
    return p


def _config(args):
    cfg = config(args, QUICK, FULL)
    cfg["models"] = [m.strip() for m in str(cfg["models"]).split(",") if m.strip()]
    for m in cfg["models"]:
        if m not in CELL_NAMES:
            raise SystemExit(f"--models: unknown cell {m!r} (expected rnn, lstm, gru)")
    return cfg


def _log(*a):
    print(*a, flush=True)


def train_one(
    cell,
    cfg,
    x_test,
    y_test,
    *,
    seed,
    dtype,
    progress=True,
    budget=None,
    log=_log,
    comm: Communicator | None = None,
):
    """Train one SequenceRegressor on the adding problem; returns (model, result dict).

    comm: train data-parallel on its ranks (every rank passes the same arguments)."""

    fb = cfg["forget_bias"] if cell != RNN_CELL.name else 0.0
    model: Any = SequenceRegressor(cell, 2, cfg["hidden"], 1, forget_bias=fb, dtype=dtype, seed=seed)
    if comm is not None:
        # rank-ordered sums: the same weights on every rank, so the evaluations agree too
        model = DataParallel(model, comm, deterministic=True, seed=seed)
    opt = Adam(model.parameters(), lr=cfg["lr"])
    rng = np.random.default_rng([seed, 1])
    T, B = cfg["T"], cfg["batch"]

    def data(step):
        return adding_batch(B, T, rng, dtype)

    eval_times = []

    def test_mse(m):
        eval_times.append(time.perf_counter() - t0)
        pred = m(x_test)
        return float(np.mean((pred.astype(np.float64) - y_test) ** 2))

    callbacks: list[Callback] = [Evaluate(test_mse, every=cfg["eval_every"], name="test_mse", at_start=True)]
    if cfg["target"]:
        callbacks.append(EarlyStopping("test_mse", patience=10**9, target=cfg["target"]))
    t0 = time.perf_counter()  # the test evaluations' time is included in the wall time
    state = fit(
        model,
        MSELoss(),
        opt,
        data,
        steps=cfg["steps"],
        clip_norm=cfg["clip"],
        callbacks=callbacks,
        progress=progress,
        desc=f"{cell:>4}",
        log_every=10,
        time_limit=budget,
        comm=comm,
    )
    wall = time.perf_counter() - t0
    curve = state.history["test_mse"]
    final = curve[-1][1]
    first_below = next((s for s, v in curve if v < 0.01), None)
    result = {
        "cell": cell,
        "final_test_mse": final,
        "best_test_mse": min(v for _, v in curve),
        "steps": state.step,
        "wall_s": wall,
        "steps_per_s": state.step / wall,
        "first_step_below_0.01": first_below,
        "stop_reason": state.stop_reason or "max steps",
        "curve": curve,
        "curve_seconds": eval_times[: len(curve)],
    }
    log(
        f"{cell:>4}: test MSE {final:.5f} after {state.step} steps, {wall:.1f} s "
        f"({state.step / wall:.1f} steps/s); {result['stop_reason']}"
    )
    return model, result


def _plots(out, results, grad_norms, cfg):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    files = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for r in results:
        steps, vals = zip(*r["curve"])
        label = f"{r['cell'].upper()} ({r['final_test_mse']:.4f})"
        axes[0].semilogy(steps, vals, label=label)
        axes[1].semilogy(r["curve_seconds"], vals, label=label)
    for ax, xl in zip(axes, ("training step", "wall time (s)")):
        ax.axhline(TRIVIAL_MSE, color="gray", ls="--", lw=1, label="predict the mean (1/6)")
        ax.axhline(0.01, color="red", ls=":", lw=1, label="target 0.01")
        ax.set_xlabel(xl)
    axes[0].set_ylabel("test MSE")
    axes[1].legend()
    fig.suptitle(
        f"Adding problem, T = {cfg['T']}, H = {cfg['hidden']}, B = {cfg['batch']}, "
        f"Adam lr = {cfg['lr']}, clip {cfg['clip']}"
    )
    fig.tight_layout()
    path = os.path.join(out, "adding_mse.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)
    if grad_norms:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for cell, norms in grad_norms.items():
            n = np.asarray(norms)
            ax.semilogy(np.arange(len(n)), np.maximum(n / n[-1], 1e-300), label=cell.upper())
        ax.set_xlabel("time step t")
        ax.set_ylabel("||dL/dh_t|| / ||dL/dh_T-1||")
        ax.set_title("Gradient flow through time (trained models, test batch)")
        ax.legend()
        fig.tight_layout()
        path = os.path.join(out, "adding_gradient_flow.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files


def main(argv=None):
    """Run the demo; returns the list of per-model result dicts."""
    args = _parser().parse_args(argv)
    cfg = _config(args)
    comm = init() if args.distributed else None
    with Threads(args.threads):
        return _run(args, cfg, np.dtype(args.dtype), argv, comm)


def _run(args, cfg, dtype, argv, comm=None):
    lead = comm is None or comm.rank == 0  # the rank that prints and writes

    def say(*a):
        if lead:
            print(*a, flush=True)

    os.makedirs(args.out, exist_ok=True)
    x_test, y_test = adding_batch(cfg["test_size"], cfg["T"], np.random.default_rng([args.seed, 0]), dtype)
    budget = cfg["budget"]
    if budget is None and cfg["total_budget"]:
        budget = cfg["total_budget"] / len(cfg["models"])
    ranks = f", data-parallel on {comm.size} ranks" if comm is not None else ""
    say(
        f"adding problem: T={cfg['T']} H={cfg['hidden']} B={cfg['batch']} lr={cfg['lr']} "
        f"clip={cfg['clip']} max steps={cfg['steps']} target={cfg['target']} "
        f"budget/model={budget} s, threads={args.threads}, {dtype.name}{ranks}; "
        f"trivial predictor MSE = {TRIVIAL_MSE:.4f}"
    )
    t_all = time.perf_counter()
    results, grad_norms = [], {}
    for cell in cfg["models"]:
        model, res = train_one(
            cell,
            cfg,
            x_test,
            y_test,
            seed=args.seed + _CELL_SEED[cell],
            dtype=dtype,
            progress=not args.no_progress,
            budget=budget,
            log=say,
            comm=comm,
        )
        # the gradient-flow diagnostic in float64 (a vanilla RNN's ratio underflows float32)
        m64 = SequenceRegressor(cell, 2, cfg["hidden"], 1, dtype=np.float64)
        m64.load_state_dict(model.state_dict())
        n = min(100, cfg["test_size"])
        grad_norms[cell] = gradient_norms_through_time(
            m64, x_test[:, :n].astype(np.float64), y_test[:n].astype(np.float64)
        ).tolist()
        res["grad_ratio_first_last"] = grad_norms[cell][0] / grad_norms[cell][-1]
        results.append(res)
    total = time.perf_counter() - t_all
    if not lead:  # the other ranks hold the same models: rank 0 reports them
        return results

    print(
        f"\n{'model':<6} {'test MSE':>10} {'best':>10} {'steps':>7} {'time s':>8} "
        f"{'<0.01 at':>9}  {'|g_0|/|g_T-1|':>13}"
    )
    for r in results:
        below = r["first_step_below_0.01"]
        print(
            f"{r['cell']:<6} {r['final_test_mse']:>10.5f} {r['best_test_mse']:>10.5f} "
            f"{r['steps']:>7} {r['wall_s']:>8.1f} {('-' if below is None else below):>9}  "
            f"{r['grad_ratio_first_last']:>13.3g}"
        )
    print(f"total {total:.1f} s")
    meta = {
        "config": cfg,
        "argv": list(argv) if argv is not None else sys.argv[1:],
        "dtype": dtype.name,
        "threads": args.threads,
        "ranks": 1 if comm is None else comm.size,
        "seed": args.seed,
        "total_wall_s": total,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    with open(os.path.join(args.out, "adding_results.json"), "w") as f:
        json.dump({"meta": meta, "results": results, "grad_norms": grad_norms}, f, indent=1)
    if not args.no_plot:
        for path in _plots(args.out, results, grad_norms, cfg):
            print(f"wrote {path}")
    return results


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])

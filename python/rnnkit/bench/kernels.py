#!/usr/bin/env python
"""Benchmark rnnkit's fused RNN / LSTM / GRU kernels against a baseline.

    python bench/bench_rnn.py [--quick] [--vs numpy|torch] [--cells rnn,lstm,gru,gru_tb]
                              [--threads 1,2] [--dtype float32] [--repeats N] [--markdown]

Baseline: the NumPy oracle (rnnkit.reference, default) or torch.nn.RNN / LSTM / GRU (--vs torch).
Steps: (1) check the kernel against the oracle (and torch) on a small shape, abort on
disagreement; (2) time the grid shapes x cells x {inference, training} x thread counts;
(3) time a NumPy matmul living beside rnnkit in the same process. See bench/README.md for
what every column means.

The machine is shared and noisy, so every number that is compared is measured in the same run:
the contenders alternate sample by sample and each reported time is a median of samples.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from typing import Any

# NumPy first, then rnnkit: the order a user's script has.
import numpy as np
import threadpoolctl
from threadpoolctl import threadpool_info, threadpool_limits

import rnnkit
from rnnkit import reference as ref
from rnnkit._cells import CELLS as CELL_TABLE
from rnnkit._cells import GRU_CELL, LSTM_CELL

# Environment. OpenBLAS reads its environment once, when the library loads: OPENBLAS_CORETYPE
# forces a kernel family and OPENBLAS_L2_SIZE overrides the cache size its blocking uses, and
# either can make OpenBLAS slow. So the benchmark run from the command line replaces
# its process (exec, once) with a copy of itself without them; importing this module changes
# nothing (a library import must never re-run the importer's process).
_SLOW_OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_REEXEC_MARK = "RNNKIT_BENCH_REEXEC"  # holds the removed variables, for the report


def _reexec_without_slow_openblas_vars():
    found = {k: os.environ[k] for k in _SLOW_OPENBLAS_VARS if k in os.environ}
    if not found:
        return
    if _REEXEC_MARK in os.environ:  # cannot happen (we removed them), but never loop
        sys.exit(f"bench_rnn: {sorted(found)} still set after re-exec; giving up")
    env = {k: v for k, v in os.environ.items() if k not in _SLOW_OPENBLAS_VARS}
    env[_REEXEC_MARK] = " ".join(f"{k}={v}" for k, v in found.items())
    sys.stdout.flush()
    sys.stderr.flush()
    # sys.orig_argv keeps the interpreter's own options (-X, -u, ...) as well as the script's.
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


# OPENBLAS_THREAD_TIMEOUT as the user left it: rnnkit sets it (setdefault) when it loads, which
# only reaches the OpenBLAS copies loaded after that point (not NumPy's, imported first).
_USER_THREAD_TIMEOUT = os.environ.get("OPENBLAS_THREAD_TIMEOUT")


# the torch module, imported only for --vs torch (by main); typed Any: torch is optional here
torch: Any = None

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

# name: (T, B, I) with H = I
SHAPES = {
    "small": (50, 1, 128),
    "medium": (100, 16, 256),
    "large": (100, 64, 512),
    "wide": (25, 32, 1024),
}
QUICK_SHAPES = ("small", "large")

# cell name -> (rnnkit family, gate blocks G, keyword options, torch module name or None)
# (rnn, lstm, gru from the cell table at their default options, then the textbook GRU)
CELLS: dict[str, tuple[str, int, dict[str, Any], str | None]] = {
    c.name: (c.name, c.gates, c.default_options, c.torch_name) for c in CELL_TABLE.values()
}
CELLS["gru_tb"] = (GRU_CELL.name, GRU_CELL.gates, {"reset_after": False}, None)  # torch has none
MODES = ("inference", "training")

VALIDATE_SHAPE = (6, 3, 5, 7)  # T, B, I, H: I != H, so a transposed weight cannot pass
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}  # max relative error allowed in validation

MIN_SAMPLE_S = 0.03  # one timing sample loops over calls until it lasts at least this long
MIN_SAMPLES = 3  # even a slow contender gets this many samples


# ---------------------------------------------------------------------------------------------
# FLOP count
# ---------------------------------------------------------------------------------------------


def gemm_flops(G, T, B, I, H, mode):
    """GEMM flops of one call as (whole_sequence, per_step), counting 2*M*N*K per GEMM.

    The GEMMs rnnkit's driver does (cpp/driver.hpp), with G*H gate columns:
      forward   X W_ih^T      one (T*B, I) @ (I, G*H)             2*T*B*I*G*H   whole-sequence
                h W_hh^T      T of (B, H) @ (H, G*H)              2*T*B*H*G*H   per step
                              (gru_tb splits it into (B,H)@(H,2H) and (B,H)@(H,H): same total)
      backward  dG W_hh       T of (B, G*H) @ (G*H, H) -> dh      2*T*B*G*H*H   per step
                dG W_ih       one (T*B, G*H) @ (G*H, I) -> dx     2*T*B*G*H*I   whole-sequence
                dG^T X        one (G*H, T*B) @ (T*B, I) -> dW_ih  2*T*B*G*H*I   whole-sequence
                dG^T Hprev    one (G*H, T*B) @ (T*B, H) -> dW_hh  2*T*B*G*H*H   whole-sequence
    so backward = 2 x forward and training (forward + backward) = 3 x forward. Elementwise work
    (activations, bias sums) is not counted. The same count is used for every contender.
    """
    fwd_seq, fwd_step = 2 * T * B * I * G * H, 2 * T * B * H * G * H
    if mode == "inference":
        return fwd_seq, fwd_step
    bwd_seq, bwd_step = 2 * T * B * G * H * (2 * I + H), 2 * T * B * G * H * H
    return fwd_seq + bwd_seq, fwd_step + bwd_step


# ---------------------------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------------------------


def _cpu_busy_s():
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except OSError:
        return float("nan")
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


class LoadMeter:
    """Average number of cores kept busy by *other* processes (and the hypervisor's steal)
    between start() and stop(): machine busy time minus this process's own CPU time, per
    second of wall time. On a 2-core machine, 1.0 means another job held a whole core."""

    def start(self):
        t = os.times()
        self._m, self._own, self._wall = _cpu_busy_s(), t.user + t.system, time.perf_counter()
        return self

    def stop(self):
        t = os.times()
        wall = time.perf_counter() - self._wall
        other = (_cpu_busy_s() - self._m) - (t.user + t.system - self._own)
        return max(0.0, other / wall) if wall > 0 else float("nan")


def _run_for(fn, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def time_alternating(contenders, max_samples, budget_s):
    """Median seconds per call of each contender, sampled in alternation.

    contenders: {name: fn or None}. Each is first called once (warm-up, and to size it; a
    call of 0.5 s or more counts as the first sample). A sample loops over `inner` calls so
    that it lasts >= MIN_SAMPLE_S; a contender gets min(max_samples, budget_s / sample)
    samples but at least MIN_SAMPLES, so a slow baseline (the NumPy oracle on big shapes)
    gets fewer repeats. The samples of all contenders are
    spread evenly over the same rounds, the order inside a round flips every round. Short
    calls get one untimed call right before each sample, which absorbs the wake-up of thread
    pools and caches after the other contender.
    Returns {name: (median_s, n_samples)}.
    """
    plan = {}
    for name, fn in contenders.items():
        if fn is None:
            continue
        t1 = _run_for(fn, 1)
        inner = max(1, math.ceil(MIN_SAMPLE_S / max(t1, 1e-7)))
        sample_s = t1 * inner
        n = int(min(max_samples, max(MIN_SAMPLES, budget_s // max(sample_s, 1e-9))))
        # a call of half a second or more is its own warm-up: the sizing call is sample 0
        plan[name] = (fn, inner, n, t1 < 0.05, [t1] if t1 >= 0.5 else [])
    rounds = max((p[2] for p in plan.values()), default=0)
    samples = {name: p[4] for name, p in plan.items()}
    for r in range(rounds):
        names = list(plan) if r % 2 == 0 else list(reversed(plan))
        for name in names:
            fn, inner, n, warm, _ = plan[name]
            # sample j of n runs in round floor(j * rounds / n): run here if one maps to r
            if len(samples[name]) < n and (len(samples[name]) * rounds) // n <= r:
                if warm:
                    fn()
                samples[name].append(_run_for(fn, inner))
    return {name: (statistics.median(s), len(s)) for name, s in samples.items()}


def set_threads(n):
    """One thread count for everyone: rnnkit's OpenBLAS pool, every BLAS / OpenMP pool
    threadpoolctl finds (NumPy's OpenBLAS, torch's libgomp), and torch's intra-op pool."""
    threadpool_limits(n)  # called as a function: the limit stays until the next call
    rnnkit.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------
# Problems and contenders
# ---------------------------------------------------------------------------------------------


class Problem:
    """Random inputs of one cell at one shape, weights initialised as torch does."""

    def __init__(self, cell, T, B, I, H, dtype, seed=0):
        family, G, opts, torch_name = CELLS[cell]
        self.cell, self.family, self.G, self.opts, self.torch_name = cell, family, G, opts, torch_name
        self.T, self.B, self.I, self.H = T, B, I, H
        rng = np.random.default_rng(seed)
        k = 1 / math.sqrt(H)

        def u(*shape: int) -> np.ndarray:
            return rng.uniform(-k, k, shape).astype(dtype)

        self.x = rng.standard_normal((T, B, I)).astype(dtype)
        self.h0 = rng.standard_normal((B, H)).astype(dtype) * dtype(0.5)
        self.spec = CELL_TABLE[family]
        self.c0 = rng.standard_normal((B, H)).astype(dtype) * dtype(0.5) if self.spec.has_cell_state else None
        self.W_ih, self.W_hh, self.b_ih, self.b_hh = u(G * H, I), u(G * H, H), u(G * H), u(G * H)
        self.dy = rng.standard_normal((T, B, H)).astype(dtype)

    def arrays(self, dtype=None):
        names = ("x", "h0", "c0", "W_ih", "W_hh", "b_ih", "b_hh", "dy")
        out = {n: getattr(self, n) for n in names}
        if dtype is not None:
            out = {n: None if a is None else a.astype(dtype) for n, a in out.items()}
        return out

    # -- rnnkit and the oracle share signatures: `lib` is rnnkit or rnnkit.reference
    def forward(self, lib, a, training, precision="float32"):
        if self.spec.has_cell_state:
            return lib.lstm_forward(
                a["x"],
                a["h0"],
                a["c0"],
                a["W_ih"],
                a["W_hh"],
                a["b_ih"],
                a["b_hh"],
                training=training,
                precision=precision,
            )
        fwd = getattr(lib, f"{self.family}_forward")
        return fwd(
            a["x"],
            a["h0"],
            a["W_ih"],
            a["W_hh"],
            a["b_ih"],
            a["b_hh"],
            training=training,
            precision=precision,
            **self.opts,
        )

    def backward(self, lib, a, ws):
        if self.spec.has_cell_state:
            return lib.lstm_backward(a["dy"], None, None, ws)
        bwd = getattr(lib, f"{self.family}_backward")
        return bwd(a["dy"], None, ws)

    def call(self, lib, mode, a=None, precision="float32"):
        """A zero-argument function running one inference or training step of `lib`."""
        a = self.arrays() if a is None else a
        if mode == "inference":
            return lambda: self.forward(lib, a, False, precision)

        def train():
            _, _, ws = self.forward(lib, a, True, precision)
            return self.backward(lib, a, ws)

        return train

    def results(self, lib, a=None, precision="float32"):
        """Outputs and gradients of a training step, as a {name: array} dict."""
        a = self.arrays() if a is None else a
        y, final, ws = self.forward(lib, a, True, precision)
        g = self.backward(lib, a, ws)
        out = {"y": y}
        if self.spec.has_cell_state:
            out["h_T"], out["c_T"] = final
        else:
            out["h_T"] = final
        out.update({k: v for k, v in g._asdict().items() if v is not None})
        return out

    # -- torch: nn.RNN / LSTM / GRU, time-major, the same weights and inputs
    def torch_call(self, mode, autocast_bf16=False):
        if self.torch_name is None:
            return None
        m, x, state, dy, params = self._torch_setup()
        if mode == "inference" and autocast_bf16:  # torch's reduced-precision inference

            def infer_bf16():
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                    return m(x, state)

            return infer_bf16
        if mode == "inference":

            def infer():
                with torch.no_grad():
                    return m(x, state)

            return infer
        xg = x.detach().requires_grad_()
        sg = (
            tuple(s.detach().requires_grad_() for s in state)
            if isinstance(state, tuple)
            else state.detach().requires_grad_()
        )
        leaves = params + [xg] + (list(sg) if isinstance(sg, tuple) else [sg])

        def train():
            for p in leaves:  # what optimizer.zero_grad() does: no accumulation
                p.grad = None
            y, _ = m(xg, sg)
            y.backward(dy)

        return train

    def torch_results(self):
        m, x, state, dy, params = self._torch_setup()
        xg = x.detach().requires_grad_()
        states = list(state) if isinstance(state, tuple) else [state]
        states = [s.detach().requires_grad_() for s in states]
        y, final = m(xg, tuple(states) if self.spec.has_cell_state else states[0])
        y.backward(dy)
        n = lambda t: t.detach().numpy()  # noqa: E731
        out = {"y": n(y)}
        if self.spec.has_cell_state:
            out["h_T"], out["c_T"] = n(final[0][0]), n(final[1][0])
        else:
            out["h_T"] = n(final[0])
        out["dx"] = n(xg.grad)
        out["dh0"] = n(states[0].grad[0])
        if self.spec.has_cell_state:
            out["dc0"] = n(states[1].grad[0])
        for name, p in zip(("dW_ih", "dW_hh", "db_ih", "db_hh"), params):
            out[name] = n(p.grad)
        return out

    def _torch_setup(self):
        if self.torch_name is None:
            raise ValueError(f"{self.cell}: torch has no such cell")
        mod = getattr(torch.nn, self.torch_name)
        kw = {"nonlinearity": self.opts["nonlinearity"]} if "nonlinearity" in self.opts else {}
        tdtype = torch.float64 if self.x.dtype == np.float64 else torch.float32
        m = mod(self.I, self.H, **kw).to(tdtype)  # batch_first=False: time-major like rnnkit
        with torch.no_grad():
            for name, a in (
                ("weight_ih_l0", self.W_ih),
                ("weight_hh_l0", self.W_hh),
                ("bias_ih_l0", self.b_ih),
                ("bias_hh_l0", self.b_hh),
            ):
                getattr(m, name).copy_(torch.from_numpy(a))
        params = [m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0]
        x = torch.from_numpy(self.x)
        h0 = torch.from_numpy(self.h0)[None]
        state = (h0, torch.from_numpy(self.c0)[None]) if self.spec.has_cell_state else h0
        return m, x, state, torch.from_numpy(self.dy), params


# ---------------------------------------------------------------------------------------------
# 1. Validation
# ---------------------------------------------------------------------------------------------


def max_rel_error(got, want):
    """max over the arrays of max|got - want| / max|want| (each array normed on its own)."""
    worst, where = 0.0, None
    for k, w in want.items():
        w = np.asarray(w, dtype=np.float64)
        g = np.asarray(got[k], dtype=np.float64)
        if g.shape != w.shape:
            return float("inf"), f"{k} shape {g.shape} != {w.shape}"
        err = float(np.max(np.abs(g - w))) / max(float(np.max(np.abs(w))), 1e-30)
        if not np.isfinite(err) or err > worst:
            worst, where = err if np.isfinite(err) else float("inf"), k
    return worst, where


def validate(cells, dtype, vs):
    T, B, I, H = VALIDATE_SHAPE
    tol = TOLERANCE[np.dtype(dtype).name]
    print(
        f"## Validation: T={T} B={B} I={I} H={H}, {np.dtype(dtype).name}, outputs y, final "
        f"states and all gradients; max relative error (max|a-b| / max|b|, per array), "
        f"tolerance {tol:g}"
    )
    ok = True
    for cell in cells:
        p = Problem(cell, T, B, I, H, dtype, seed=1)
        kernel = p.results(rnnkit)
        # the oracle in float64 on the same (rounded) inputs: the closest thing to exact
        oracle = p.results(ref, p.arrays(np.float64))
        if set(kernel) != set(oracle):
            print(f"  {cell:7s} FAIL: kernel returns {sorted(kernel)}, oracle {sorted(oracle)}")
            ok = False
            continue
        err, where = max_rel_error(kernel, oracle)
        line = f"  {cell:7s} kernel vs oracle(float64): {err:.2e} (worst: {where})"
        bad = err > tol
        if vs == "torch":
            if p.torch_name is None:
                line += "   kernel vs torch: -  (torch has no reset-before GRU)"
            else:
                terr, twhere = max_rel_error(kernel, p.torch_results())
                line += f"   kernel vs torch: {terr:.2e} (worst: {twhere})"
                bad = bad or terr > tol
        print(line + ("   FAIL" if bad else "   ok"))
        ok = ok and not bad
    if not ok:
        sys.exit("bench_rnn: the kernel disagrees with its reference; not benchmarking")
    print()


# ---------------------------------------------------------------------------------------------
# 2. The grid
# ---------------------------------------------------------------------------------------------

# (T, B, I, H, G, dtype name, threads) -> (whole-sequence, per-step) GFLOP/s
_roofline_cache: dict[tuple[Any, ...], tuple[float, float]] = {}


def sgemm_rates(T, B, I, H, G, dtype, n_threads, quick):
    """GFLOP/s of np.matmul at the two GEMM shapes of the forward pass, measured now, at the
    current thread count:
      whole-sequence  (T*B, I) @ (I, G*H), one call;
      per-step        (B, H) @ (H, G*H), T of them in one stacked call (T, B, H) @ (H, G*H),
                      so NumPy's per-call overhead (about a microsecond, as much as a tiny
                      GEMM) is paid once, not T times; NumPy loops over the T matrices in C.
    np.matmul runs NumPy's own OpenBLAS (rnnkit's BLAS is not exposed to Python); the header
    shows both libraries and their kernels. NumPy may route a B=1 product to gemv, which can
    beat a general sgemm with M=1, so for B=1 this is "what NumPy's BLAS does", not a bound:
    a fraction above 100% is possible."""
    key = (T, B, I, H, G, np.dtype(dtype).name, n_threads)
    if key not in _roofline_cache:
        rng = np.random.default_rng(2)
        X = rng.standard_normal((T * B, I)).astype(dtype)
        hs = rng.standard_normal((T, B, H)).astype(dtype)
        W_ih = rng.standard_normal((G * H, I)).astype(dtype)
        W_hh = rng.standard_normal((G * H, H)).astype(dtype)
        out_seq, out_step = np.empty((T * B, G * H), dtype), np.empty((T, B, G * H), dtype)
        # W.T: the same transposed operand the kernel passes to its BLAS
        t = time_alternating(
            {
                "seq": lambda: np.matmul(X, W_ih.T, out=out_seq),
                "step": lambda: np.matmul(hs, W_hh.T, out=out_step),
            },
            max_samples=5 if quick else 7,
            budget_s=0.3 if quick else 0.6,
        )
        _roofline_cache[key] = (
            2 * T * B * I * G * H / t["seq"][0] / 1e9,
            2 * T * B * H * G * H / t["step"][0] / 1e9,
        )
    return _roofline_cache[key]


_fma_peak_cache: dict[str, float] = {}  # dtype name -> GFLOP/s


def fma_peak_gflops(dtype):
    """One core's arithmetic ceiling, measured once: GFLOP/s of independent vector FMAs on
    registers (rnnkit._core._fma_peak_gflops). %peak = rnnkit GFLOP/s / (this x threads):
    how much of what the cores can do at all the call uses (2 threads: twice one core's)."""
    name = np.dtype(dtype).name
    if name not in _fma_peak_cache:
        _fma_peak_cache[name] = rnnkit._core._fma_peak_gflops(name == "float64")
    return _fma_peak_cache[name]


def roofline_gflops(flops, rates):
    """The GFLOP/s this call would reach if each of its GEMMs ran at the np.matmul rate of its
    kind (whole-sequence GEMMs at the (T*B,I)@(I,G*H) rate, per-step ones at the (B,H)@(H,G*H)
    rate; the backward's transposed GEMMs are taken at the same two rates) and nothing else
    took time: total flops / (seq_flops / seq_rate + step_flops / step_rate), a time-weighted
    (harmonic) combination. %roof = rnnkit GFLOP/s / this = roofline time / rnnkit time."""
    (f_seq, f_step), (r_seq, r_step) = flops, rates
    return (f_seq + f_step) / (f_seq / r_seq + f_step / r_step)


def run_grid(args, shapes, cells, threads, dtype):
    base_name = "torch" if args.vs == "torch" else "numpy"
    rows = []
    header = (
        f"{'shape':22s} {'cell':7s} {'mode':9s} {'thr':>3s} {'rnnkit ms':>10s} "
        f"{base_name + ' ms':>10s} {'ratio':>6s} {'GFLOP/s':>8s} {'roof':>6s} {'%roof':>6s} "
        f"{'%peak':>6s} {'ws MiB':>7s} {'n':>5s} {'bg':>4s}  kernel"
    )
    baseline = "oracle rnnkit.reference" if base_name == "numpy" else "torch.nn.RNN/LSTM/GRU"
    print(
        f"## Grid: rnnkit vs {base_name} ({baseline}), "
        f"{np.dtype(dtype).name}; ratio = rnnkit / {base_name} (< 1: rnnkit faster)"
    )
    print(header)
    print("-" * len(header))
    max_samples = args.repeats
    budget = 1.5 if args.quick else 2.0
    cores = os.cpu_count() or 1
    for n_threads in threads:
        set_threads(n_threads)
        t_block = time.perf_counter()
        for shape_name in shapes:
            T, B, I = SHAPES[shape_name]
            H = I
            for cell in cells:
                p = Problem(cell, T, B, I, H, dtype)
                rates = sgemm_rates(T, B, I, H, p.G, dtype, n_threads, args.quick)
                _, _, ws = p.forward(rnnkit, p.arrays(), True)
                ws_bytes = ws.nbytes
                del ws
                for mode in MODES:
                    gc.collect()
                    base = p.torch_call(mode) if args.vs == "torch" else p.call(ref, mode)
                    meter = LoadMeter().start()
                    t = time_alternating({"rnnkit": p.call(rnnkit, mode), "base": base}, max_samples, budget)
                    bg = meter.stop()
                    flops = gemm_flops(p.G, T, B, I, H, mode)
                    rk_s, rk_n = t["rnnkit"]
                    base_s, base_n = t.get("base", (None, 0))
                    gflops = sum(flops) / rk_s / 1e9
                    roof = roofline_gflops(flops, rates)
                    row = {
                        "shape": f"{shape_name} ({T},{B},{I})",
                        "cell": cell,
                        "mode": mode,
                        "threads": n_threads,
                        "rnnkit_ms": rk_s * 1e3,
                        "base_ms": None if base_s is None else base_s * 1e3,
                        "ratio": None if base_s is None else rk_s / base_s,
                        "gflops": gflops,
                        "roof": roof,
                        "frac": gflops / roof,
                        "peak_frac": gflops / (fma_peak_gflops(dtype) * n_threads),
                        "ws_mib": ws_bytes / 2**20 if mode == "training" else None,
                        "n": f"{rk_n}/{base_n if base_s is not None else '-'}",
                        "bg": bg,
                        "kernel": step_kernel(p.G, B, H, n_threads, dtype),
                    }
                    # oversubscribed: other processes took more than the cores this row left free
                    row["busy"] = bg > max(0.5, cores - n_threads + 0.25)
                    rows.append(row)
                    print(format_row(row), flush=True)
        print(f"({n_threads} thread{'s' if n_threads > 1 else ''}: {time.perf_counter() - t_block:.0f} s)")
    print(
        "bg marked *: other processes kept more cores busy than the row's threads left free; "
        "its times are inflated and its ratio is less reliable"
    )
    print()
    return rows


def _f(v, fmt, width):
    return f"{'-':>{width}s}" if v is None else f"{v:{width}{fmt}}"


def format_row(r):
    return (
        f"{r['shape']:22s} {r['cell']:7s} {r['mode']:9s} {r['threads']:3d} "
        f"{_f(r['rnnkit_ms'], '.3f', 10)} {_f(r['base_ms'], '.3f', 10)} "
        f"{_f(r['ratio'], '.2f', 6)} {_f(r['gflops'], '.1f', 8)} {_f(r['roof'], '.1f', 6)} "
        f"{_f(100 * r['frac'], '.0f', 5)}% {_f(100 * r['peak_frac'], '.0f', 5)}% "
        f"{_f(r['ws_mib'], '.2f', 7)} {r['n']:>5s} "
        f"{r['bg']:4.1f}{'*' if r['busy'] else ''}  {r['kernel']}"
    )


def step_kernel(G, B, H, n_threads, dtype):
    """How the forward's per-step product h W_hh^T is walked at this point (rnnkit._core
    decides from CPUID): tile rows x vectors and loop order, or BLAS above the batch limit."""
    cols = -(-G * H // n_threads)  # one thread's columns of the product
    return rnnkit._core._step_kernel(B, H, cols, np.dtype(dtype) == np.float64)


def denormal_rows(dtype, quick):
    """Vanilla RNN backward with vanishing gradients (W_hh of scale 0.3: the gradients become
    subnormal within a few steps) against the same call at scale 1, with rnnkit's default
    subnormal flushing and with it turned off. Issue target: slow/fast <= 1.2 with flushing."""
    set_threads(1)
    T, B, I, H = 100, 64, 2, 64
    rng = np.random.default_rng(5)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    W_ih = (rng.standard_normal((H, I)) / np.sqrt(I)).astype(dtype)
    calls = {}
    for scale in (1.0, 0.3):
        W_hh = (scale * rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
        y, _, ws = rnnkit.rnn_forward(x, None, W_ih, W_hh, None, None)
        dy = np.zeros_like(y)
        dy[-1] = 1.0
        calls[scale] = lambda dy=dy, ws=ws: rnnkit.rnn_backward(dy, None, ws)
    print(f"## Subnormals: vanilla RNN backward ({T},{B},{I},{H}), 1 thread, {np.dtype(dtype).name}")
    saved = rnnkit.get_flush_denormal()
    out = {}
    try:
        for flush in (True, False):
            rnnkit.set_flush_denormal(flush)
            t = time_alternating({"fast": calls[1.0], "slow": calls[0.3]}, 9 if quick else 15, 1.0)
            fast, slow = t["fast"][0] * 1e3, t["slow"][0] * 1e3
            out[flush] = (fast, slow)
            print(
                f"  flush {'on ' if flush else 'off'}: W_hh scale 1 {fast:.3f} ms, scale 0.3 "
                f"{slow:.3f} ms -> slow/fast = {slow / fast:.2f}"
            )
    finally:
        rnnkit.set_flush_denormal(saved)
    print()
    return out


BF16_SHAPES = ("large", "wide")


def bf16_errors(p):
    """bfloat16 against float32 at one problem: per output of a training step, the largest
    error relative to the largest float32 value, and the mean error relative to the mean one."""
    r32, r16 = p.results(rnnkit), p.results(rnnkit, precision="bf16")
    out = {}
    for name, a in r32.items():
        d = np.abs(r16[name].astype(np.float64) - a)
        out[name] = (d.max() / np.abs(a).max(), d.mean() / np.abs(a).mean())
    return out


def bf16_rows(vs, threads, quick):
    """precision="bf16" beside float32 (and torch's autocast bfloat16 inference with --vs torch):
    LSTM and GRU at the large and wide shapes, each thread count, inference and training; the
    kernel that ran; and how far bf16 lands from float32. Issue targets: with AVX512-BF16, bf16
    >= 1.7x float32 (inference) and >= 1.5x (training) at 1 thread; with AMX, inference faster
    than torch's autocast."""
    kernel = rnnkit._core._get_bf16_kernel()
    print("## precision='bf16' (bfloat16 products summed in float32) beside float32")
    if kernel == "none":
        print("  skipped: this CPU has neither AVX512-BF16 nor AMX-BF16")
        print()
        return []
    where = "AMX tiles for 16 x 16 blocks, AVX512-BF16 for the rest" if kernel == "amx" else "AVX512-BF16"
    print(f"kernel: {kernel} ({where})")
    rows = []
    shapes = BF16_SHAPES[:1] if quick else BF16_SHAPES
    for cell in (LSTM_CELL.name, GRU_CELL.name):
        for shape in shapes:
            T, B, H = SHAPES[shape]
            p = Problem(cell, T, B, H, H, np.float32)
            err = bf16_errors(p)
            summary = ", ".join(f"{k} {mx:.1e}/{mean:.1e}" for k, (mx, mean) in err.items())
            print(f"{cell} {shape} ({T},{B},{H}) bf16 vs float32, max/mean relative error: {summary}")
            for n in threads:
                set_threads(n)
                for mode in MODES:
                    contenders = {
                        "float32": p.call(rnnkit, mode),
                        "bf16": p.call(rnnkit, mode, precision="bf16"),
                    }
                    if vs == "torch" and mode == "inference":
                        contenders["torch_bf16"] = p.torch_call(mode, autocast_bf16=True)
                    t = time_alternating(contenders, 5 if quick else 7, 3.0)
                    f32, b16 = t["float32"][0] * 1e3, t["bf16"][0] * 1e3
                    gf = sum(gemm_flops(p.G, T, B, H, H, mode)) / (b16 / 1e3) / 1e9
                    line = (
                        f"  {n} thr {mode:9s} float32 {f32:8.2f} ms  bf16 {b16:8.2f} ms ({gf:5.0f} GFLOP/s)  "
                        f"float32/bf16 {f32 / b16:4.2f}"
                    )
                    tb = t.get("torch_bf16")
                    if tb:
                        tms = tb[0] * 1e3
                        line += f"  torch autocast bf16 {tms:8.2f} ms  bf16/torch {b16 / tms:4.2f}"
                    print(line)
                    rows.append((cell, shape, n, mode, f32, b16, tb[0] * 1e3 if tb else None))
    print()
    return rows


def markdown_table(rows, base_name):
    def c(v, fmt):
        return "-" if v is None else format(v, fmt)

    out = [
        f"| shape (T,B,I=H) | cell | mode | thr | rnnkit ms | {base_name} ms | ratio | "
        "GFLOP/s | roof GFLOP/s | %roof | %peak | ws MiB | n | bg | kernel |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['shape']} | {r['cell']} | {r['mode']} | {r['threads']} | "
            f"{c(r['rnnkit_ms'], '.3f')} | {c(r['base_ms'], '.3f')} | "
            f"{c(r['ratio'], '.2f')} | {c(r['gflops'], '.1f')} | {c(r['roof'], '.1f')} | "
            f"{c(100 * r['frac'], '.0f')}% | {c(100 * r['peak_frac'], '.0f')}% | "
            f"{c(r['ws_mib'], '.2f')} | {r['n']} | "
            f"{r['bg']:.1f}{'*' if r['busy'] else ''} | {r['kernel']} |"
        )
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# 3. Living beside NumPy
# ---------------------------------------------------------------------------------------------


def _layer_contenders(ours, kind, kw, x, dout, lengths, dtype):
    """One training step of the rnnkit module `ours` and (when torch is present) of the same
    torch.nn module loaded with its weights, as {"rnnkit": fn, "torch": fn}."""
    T = x.shape[0]

    def rk_step():
        ours.zero_grad()
        ours(x, lengths=lengths)
        ours.backward(dout)

    contenders = {"rnnkit": rk_step}
    if torch is None:
        return contenders
    tmod = getattr(torch.nn, CELL_TABLE[kind].torch_name)(ours.input_size, ours.hidden_size, **kw).to(
        torch.float32 if dtype == np.float32 else torch.float64
    )
    tmod.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    xt, dt = torch.from_numpy(x), torch.from_numpy(dout)

    def torch_step():
        tmod.zero_grad()
        xin = xt.clone().requires_grad_()
        if lengths is None:
            out = tmod(xin)[0]
        else:
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                xin, torch.from_numpy(lengths), enforce_sorted=False
            )
            out = torch.nn.utils.rnn.pad_packed_sequence(tmod(packed)[0], total_length=T)[0]
        out.backward(dt)

    contenders["torch"] = torch_step
    return contenders


def layer_rows(dtype, threads, quick):
    """Whole modules: a 2-layer bidirectional LSTM, and one layer over a variable-length batch
    (lengths spread evenly over 1..T, as rnnkit.nn's `lengths` and torch's packed sequence).
    Training = forward + backward through every layer; against torch when --vs torch, else
    only rnnkit (the oracle has no module). Prints one line per case and thread count."""
    T, B, H = (50, 16, 256) if quick else (100, 32, 512)
    cases: list[tuple[str, dict[str, Any], np.ndarray | None]] = [
        ("lstm 2-layer bidirectional", dict(num_layers=2, bidirectional=True), None),
        ("lstm variable lengths", dict(), np.linspace(1, T, B).round().astype(np.int64)[::-1].copy()),
        ("gru variable lengths", dict(), np.linspace(1, T, B).round().astype(np.int64)[::-1].copy()),
    ]
    print(f"\n## Layers (rnnkit.nn vs torch.nn), T={T} B={B} I=H={H}, {np.dtype(dtype).name}, training step")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((T, B, H)).astype(dtype)
    for name, kw, lengths in cases:
        kind = name.split()[0]
        ours = rnnkit.nn.module_class(kind)(H, H, dtype=dtype, seed=0, **kw)
        D = 2 if kw.get("bidirectional") else 1
        dout = rng.standard_normal((T, B, D * H)).astype(dtype)
        if lengths is not None:
            dout[np.arange(T)[:, None] >= lengths[None, :]] = 0

        contenders = _layer_contenders(ours, kind, kw, x, dout, lengths, dtype)
        for n in threads:
            set_threads(n)
            res = time_alternating(contenders, 3 if quick else 5, 2.0)
            line = f"  {name:28s} thr {n}: rnnkit {res['rnnkit'][0] * 1e3:8.2f} ms"
            if "torch" in res:
                line += (
                    f"   torch {res['torch'][0] * 1e3:8.2f} ms   ratio "
                    f"{res['rnnkit'][0] / res['torch'][0]:.2f}"
                )
            print(line)


def _onnx_step_session(kind, ours, dtype):
    """A one-step ONNX LSTM / GRU graph of the rnnkit module `ours` (one layer) on onnxruntime
    (one thread), as (session, state input names); None when onnx or onnxruntime is missing
    or for float64 (which onnxruntime's CPU LSTM and GRU do not run).
    ONNX's gate order is i, o, f, c (LSTM; torch's i, f, g, o) and z, r, h (GRU; torch's
    r, z, n, in torch's form with linear_before_reset=1)."""
    if dtype != np.float32:  # onnxruntime's CPU LSTM and GRU kernels are float32 only
        return None
    try:
        import onnxruntime
        from onnx import TensorProto, helper
    except ImportError:
        return None
    H, I = ours.hidden_size, ours.input_size
    order = [0, 3, 1, 2] if kind == LSTM_CELL.name else [1, 0, 2]
    sd = ours.state_dict()

    def blocks(a):
        return np.concatenate([a.reshape(len(order), H, -1)[k] for k in order]).reshape(a.shape)

    W = blocks(sd["weight_ih_l0"])[None]
    R = blocks(sd["weight_hh_l0"])[None]
    Bias = np.concatenate([blocks(sd["bias_ih_l0"]), blocks(sd["bias_hh_l0"])])[None]
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    states = ["h0", "c0"] if kind == LSTM_CELL.name else ["h0"]
    op = "LSTM" if kind == LSTM_CELL.name else "GRU"
    attrs: dict[str, Any] = {"hidden_size": H}
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, ["X", "W", "R", "B", "", *states], outputs, **attrs)
    graph = helper.make_graph(
        [node],
        "step",
        [helper.make_tensor_value_info("X", elem, [1, 1, I])]
        + [helper.make_tensor_value_info(n, elem, [1, 1, H]) for n in states],
        [helper.make_tensor_value_info(n, elem, None) for n in outputs],
        [
            helper.make_tensor(n, elem, a.shape, a.ravel().tolist())
            for n, a in (("W", W), ("R", R), ("B", Bias))
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = onnxruntime.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess, states


def _streaming_row(kind, dtype, quick, rng):
    """One line of streaming_rows: the contenders of one cell family, checked, then timed."""
    I = H = 128
    ours = rnnkit.nn.module_class(kind)(I, H, dtype=dtype, seed=0)
    xs = rng.standard_normal((64, 1, I)).astype(dtype)
    stream = ours.stream(1)
    ours.eval()
    want, _ = ours(xs)
    steps = np.stack([stream(xs[t]) for t in range(len(xs))])  # (T, 1, H)
    assert np.array_equal(steps, want), "stream differs from the whole-sequence forward"
    contenders: dict[str, Any] = {}
    k = [0]

    def rk():
        stream(xs[k[0] & 63])
        k[0] += 1

    contenders["rnnkit"] = rk
    layer = ours._layer_stream(0, 1)  # the compiled layer stream without nn's checks
    x1 = xs[:1]
    contenders["layer.run only"] = lambda: layer.run(x1)
    chunk = np.ascontiguousarray(xs[:50])
    chunk_stream = ours.stream(1)
    contenders["chunk of 50 /50"] = lambda: chunk_stream(chunk)
    errors = {}
    if torch is not None:
        tdt = torch.float32 if dtype == np.float32 else torch.float64
        tmod = getattr(torch.nn, CELL_TABLE[kind].torch_name)(I, H).to(tdt)
        tmod.load_state_dict({n: torch.from_numpy(a) for n, a in ours.state_dict().items()})
        xt = torch.from_numpy(xs)
        with torch.no_grad():
            hx = None
            outs = []
            for t in range(len(xs)):
                o, hx = tmod(xt[t : t + 1], hx)
                outs.append(o.numpy())
        errors["torch"] = max_rel_error({"y": np.concatenate(outs)}, {"y": want})[0]
        t_state: list[Any] = [None]

        def torch_step():
            with torch.no_grad():
                _, t_state[0] = tmod(xt[k[0] & 63 : (k[0] & 63) + 1], t_state[0])
            k[0] += 1

        contenders["torch"] = torch_step
    made = _onnx_step_session(kind, ours, dtype)
    if made is not None:
        sess, names = made
        feed = {n: np.zeros((1, 1, H), dtype) for n in names}
        outs = []
        for t in range(len(xs)):
            res = sess.run(None, {"X": xs[t : t + 1], **feed})
            outs.append(res[0][0])
            feed = dict(zip(names, res[1:]))
        errors["onnxruntime"] = max_rel_error({"y": np.concatenate(outs)}, {"y": want})[0]
        o_feed = [{"X": xs[:1], **feed}]

        def ort_step():
            f = o_feed[0]
            f["X"] = xs[k[0] & 63 : (k[0] & 63) + 1]
            res = sess.run(None, f)
            o_feed[0] = {"X": f["X"], **dict(zip(names, res[1:]))}
            k[0] += 1

        contenders["onnxruntime"] = ort_step
    bad = {n: e for n, e in errors.items() if e > TOLERANCE[np.dtype(dtype).name]}
    if bad:
        return f"  {kind}: FAIL, outputs differ from rnnkit: {bad}; not timed"
    res = time_alternating(contenders, 5 if quick else 15, 2.0 if quick else 6.0)
    per = {n: r[0] / (50 if n.startswith("chunk") else 1) for n, r in res.items()}
    line = f"  {kind:5s}" + "".join(f"   {n} {t * 1e6:6.2f}" for n, t in per.items())
    ratios = [f"{per['rnnkit'] / per[n]:.2f}x {n}" for n in ("torch", "onnxruntime") if n in per]
    return line + (f"   (rnnkit {', '.join(ratios)})" if ratios else "")


def streaming_rows(dtype, quick):
    """Streaming at batch 1: one step per call with the state carried, I = H = 128, 1 thread.
    rnnkit's `module.stream(1)(x_t)` vs torch.nn (one step per call, under no_grad) and
    onnxruntime (a one-step graph, when onnx and onnxruntime are installed), each checked
    against rnnkit first. Also the compiled layer stream alone (without rnnkit.nn's checks) and
    a chunk of 50 steps per call, to show where a step's time goes."""
    global torch
    if torch is None:
        try:
            import torch as _torch

            torch = _torch
        except ImportError:
            pass
    H = 128
    set_threads(1)
    rng = np.random.default_rng(7)
    print(f"## Streaming at batch 1: I=H={H}, 1 step per call, 1 thread, {np.dtype(dtype).name}, us per step")
    for kind in (LSTM_CELL.name, GRU_CELL.name):
        print(_streaming_row(kind, dtype, quick, rng), flush=True)
    if torch is None:
        print("  (torch not installed: no torch column)")
    print()


def beside_numpy(dtype, quick):
    """Does an rnnkit call slow down the NumPy matmul that follows it (two OpenBLAS thread pools
    in one process, 2 threads each), and the other way round? Each round runs, in alternating
    order, `numpy matmul; numpy matmul(timed: alone)` and `rnnkit call; numpy matmul(timed:
    after)`, and the same with the roles swapped. Ratios after/alone of the medians."""
    set_threads(2)
    rng = np.random.default_rng(3)
    A = rng.standard_normal((256, 512)).astype(dtype)
    Bm = rng.standard_normal((512, 2048)).astype(dtype)
    C = np.empty((256, 2048), dtype)
    p = Problem(LSTM_CELL.name, 50, 16, 256, 256, dtype)
    rk = p.call(rnnkit, "inference")
    mm = lambda: np.matmul(A, Bm, out=C)  # noqa: E731

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    mm(), rk()
    res: dict[str, list[float]] = {"mm_alone": [], "mm_after_rk": [], "rk_alone": [], "rk_after_mm": []}
    rounds = 30 if quick else 60
    meter = LoadMeter().start()
    for i in range(rounds):
        pairs = [("mm_alone", mm, mm), ("mm_after_rk", rk, mm), ("rk_alone", rk, rk), ("rk_after_mm", mm, rk)]
        for key, first, second in pairs if i % 2 == 0 else pairs[::-1]:
            first()
            res[key].append(timed(second))
    bg = meter.stop()
    med = {k: statistics.median(v) * 1e3 for k, v in res.items()}
    print(f"## Living beside NumPy: 2 threads, {np.dtype(dtype).name}, {rounds} rounds, bg {bg:.1f} cores")
    print(
        f"  numpy matmul (256x512 @ 512x2048): alone {med['mm_alone']:.3f} ms, right after an "
        f"rnnkit call {med['mm_after_rk']:.3f} ms -> after/alone = "
        f"{med['mm_after_rk'] / med['mm_alone']:.2f}"
    )
    print(
        f"  rnnkit lstm inference (50,16,256):  alone {med['rk_alone']:.3f} ms, right after a "
        f"numpy matmul {med['rk_after_mm']:.3f} ms -> after/alone = "
        f"{med['rk_after_mm'] / med['rk_alone']:.2f}"
    )
    print()
    return med, bg


# ---------------------------------------------------------------------------------------------
# Header: machine, versions, BLAS
# ---------------------------------------------------------------------------------------------


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_commit():
    """Commit of the rnnkit that is imported (not of this script), and whether its sources differ."""
    here = os.path.dirname(os.path.abspath(rnnkit.__file__))

    def git(*a):
        return subprocess.run(
            ["git", "-C", here, *a], capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        rev = git("rev-parse", "--short", "HEAD")
        if not rev:
            return "unknown"
        top = git("rev-parse", "--show-toplevel")
        dirty = git("-C", top, "status", "--porcelain", "--", "cpp", "python")
        return f"{rev}{', cpp/ or python/ modified' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _core_built():
    path = rnnkit._core.__file__
    return (
        f"{os.path.dirname(os.path.abspath(rnnkit.__file__))}, _core built "
        f"{datetime.datetime.fromtimestamp(os.path.getmtime(path)).astimezone().isoformat(timespec='seconds')}"
    )


def print_header(args):
    print("# rnnkit benchmark")
    print(f"command: {shlex.join(sys.orig_argv)}   (cwd {os.getcwd()})")
    print(f"date:    {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(
        f"machine: {_cpu_model()}, {cores} cores ({usable} usable), {platform.machine()}, load average {load}"
    )
    print(
        f"versions: python {platform.python_version()}, numpy {np.__version__}, "
        f"torch {torch.__version__ if torch is not None else _version('torch')}, "
        f"rnnkit {rnnkit.__version__} (commit {_git_commit()}), threadpoolctl "
        f"{threadpoolctl.__version__}"
    )
    print(f"rnnkit:  {_core_built()}")
    removed = os.environ.get(_REEXEC_MARK)
    if removed:
        print(f"environment: re-executed once without {removed} (they can slow OpenBLAS)")
    else:
        print(f"environment: {' and '.join(_SLOW_OPENBLAS_VARS)} not set, no re-exec needed")
    print(
        f"OPENBLAS_THREAD_TIMEOUT: {_USER_THREAD_TIMEOUT or 'unset'} when NumPy loaded, "
        f"{os.environ.get('OPENBLAS_THREAD_TIMEOUT')} when rnnkit loaded its OpenBLAS "
        f"(NumPy is imported first)"
    )
    print("BLAS / OpenMP pools (threadpoolctl):")
    for lib in threadpool_info():
        parts = [f"{lib.get('internal_api')} {lib.get('version') or ''}".strip()]
        if "architecture" in lib:
            parts.append(f"kernel {lib['architecture']}")
        if "threading_layer" in lib:
            parts.append(f"threading {lib['threading_layer']}")
        parts.append(f"{lib['num_threads']} threads")
        print(f"  {os.path.basename(lib['filepath'])}: {', '.join(parts)}")
    if torch is not None:
        print(
            f"torch: {torch.get_num_threads()} intra-op threads, mkldnn "
            f"{'on' if torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled else 'off'}"
        )
    cpu = rnnkit._core._cpu_info()
    kib = lambda n: f"{n // 1024} KiB" if n < 2**20 else f"{n / 2**20:g} MiB"  # noqa: E731
    features = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if cpu[f]]
    print(
        f"CPU (CPUID): {cpu['model_name']} ({cpu['vendor']} family {cpu['family']} model "
        f"{cpu['model']}); L1d {kib(cpu['l1d_bytes'])}, L2 {kib(cpu['l2_bytes'])} per core, "
        f"L3 {kib(cpu['l3_bytes'])}; {' '.join(features)}"
    )
    print(
        f"kernel choice (from CPUID, no timing pass): {8 * cpu['vector_bytes']}-bit vectors, "
        f"{cpu['tile_rows']}-row register tiles; "
        f"panel-major walk when a thread's packed weights exceed "
        f"{kib(cpu['panel_major_above_bytes'])} (half its L2); per grid point in the 'kernel' column"
    )
    print(
        f"FMA peak (one core, vector FMAs on registers, measured now): "
        f"{fma_peak_gflops(np.float32):.1f} GFLOP/s float32, "
        f"{fma_peak_gflops(np.float64):.1f} GFLOP/s float64"
    )
    print()


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def _csv(kind, allowed=None):
    def parse(s):
        items = [x.strip() for x in s.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        if allowed is not None:
            bad = [x for x in items if x not in allowed]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {list(allowed)}")
        return [kind(x) for x in items]

    return parse


def main(argv=None, command_line=None):
    """Run the benchmark with ``argv`` (default: sys.argv[1:]). ``command_line`` (default: argv
    is None) allows the re-exec without slow OpenBLAS variables (never for other callers)."""
    if argv is None if command_line is None else command_line:
        _reexec_without_slow_openblas_vars()
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help=f"shapes {', '.join(QUICK_SHAPES)} only, fewer repeats"
    )
    ap.add_argument(
        "--vs",
        choices=("numpy", "torch"),
        default="numpy",
        help="baseline: the NumPy oracle rnnkit.reference (default) or torch.nn",
    )
    ap.add_argument(
        "--cells",
        type=_csv(str, CELLS),
        default=list(CELLS),
        help="comma list of rnn,lstm,gru,gru_tb (default all)",
    )
    ap.add_argument("--threads", type=_csv(int), default=[1, 2], help="comma list (default 1,2)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="max timing samples per contender and grid point (default 7, --quick 5); "
        f"slow contenders get fewer, never below {MIN_SAMPLES}",
    )
    ap.add_argument(
        "--markdown", action="store_true", help="also print the grid as a Markdown table at the end"
    )
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 5 if args.quick else 7
    if args.repeats < 1 or any(n < 1 for n in args.threads):
        ap.error("--repeats and --threads must be >= 1")
    dtype = np.dtype(args.dtype).type

    global torch
    if args.vs == "torch":
        import torch as _torch

        torch = _torch

    t_start = time.perf_counter()
    print_header(args)
    validate(args.cells, dtype, args.vs)
    shapes = QUICK_SHAPES if args.quick else tuple(SHAPES)
    meter = LoadMeter().start()
    rows = run_grid(args, shapes, args.cells, args.threads, dtype)
    layer_rows(dtype, args.threads, args.quick)
    denormal_rows(dtype, args.quick)
    if dtype == np.float32:
        bf16_rows(args.vs, args.threads, args.quick)
    streaming_rows(dtype, args.quick)
    beside_numpy(dtype, args.quick)
    if args.markdown:
        print(markdown_table(rows, "torch" if args.vs == "torch" else "numpy"))
        print()
    print(
        f"total {time.perf_counter() - t_start:.0f} s; other processes kept {meter.stop():.1f} "
        f"cores busy on average during the timings"
    )


if __name__ == "__main__":
    main()

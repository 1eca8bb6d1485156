"""Pieces of the benchmark script (rnnkit.bench) that can be checked without timing the grid."""

import math
import os
import subprocess
import sys

import numpy as np

import rnnkit.bench as bench
from rnnkit import _core


def test_fma_peak_is_a_finite_positive_rate():
    for float64 in (False, True):
        rate = _core._fma_peak_gflops(float64, 0.02)
        assert math.isfinite(rate) and rate > 0


def test_row_and_markdown_carry_every_column():
    row = {
        "shape": "small (50,1,128)",
        "cell": "lstm",
        "mode": "training",
        "threads": 2,
        "rnnkit_ms": 1.5,
        "base_ms": 3.0,
        "ratio": 0.5,
        "gflops": 40.0,
        "roof": 50.0,
        "frac": 0.8,
        "peak_frac": 0.25,
        "ws_mib": 0.17,
        "n": "7/7",
        "bg": 0.0,
        "busy": False,
        "kernel": "8x2 panel-major",
    }
    line = bench.format_row(row)
    assert " 80% " in line and " 25% " in line and "0.50" in line
    table = bench.markdown_table([row], "torch").splitlines()
    header, rule, body = table
    assert header.count("|") == rule.count("|") == body.count("|")
    assert "| 80% | 25% |" in body
    assert line.endswith("8x2 panel-major") and body.endswith("| 8x2 panel-major |")


def test_step_kernel_names_the_walk_the_driver_takes():
    from rnnkit import _core

    saved = _core._get_kernel_choice()
    try:
        _core._set_kernel_choice(8, 1)
        assert bench.step_kernel(4, 64, 512, 1, np.float32) == "8x2 panel-major"
        assert bench.step_kernel(4, 5, 512, 1, np.float32) == "4x2 panel-major"
        _core._set_kernel_choice(4, 0)
        assert bench.step_kernel(4, 64, 512, 2, np.float32) == "4x2 row-major"
        assert bench.step_kernel(4, 1, 128, 1, np.float32) == "1x8 row-major"
        assert bench.step_kernel(4, 3, 128, 1, np.float64) == "2x4 row-major"
        assert bench.step_kernel(4, 1000, 128, 1, np.float32) == "BLAS"
    finally:
        _core._set_kernel_choice(*saved)


def test_gemm_flops_counts_training_as_three_inferences():
    inference = sum(bench.gemm_flops(4, 10, 3, 8, 16, "inference"))
    training = sum(bench.gemm_flops(4, 10, 3, 8, 16, "training"))
    assert inference == 2 * 10 * 3 * 8 * 4 * 16 + 2 * 10 * 3 * 16 * 4 * 16
    assert training == 3 * inference
    assert np.isclose(bench.roofline_gflops((1.0, 1.0), (2.0, 2.0)), 2.0)


def test_importing_the_benchmark_leaves_the_process_alone():
    # Only the benchmark's command line re-executes itself without OpenBLAS variables that slow
    # it down; an import (by pytest, or a user's script) must not replace the importer's process.
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell")
    code = (
        "import os, rnnkit.bench; "
        "print(os.environ.get('RNNKIT_BENCH_REEXEC'), os.environ['OPENBLAS_CORETYPE'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "Haswell"]

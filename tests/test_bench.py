"""Pieces of the benchmark script (rnnkit.bench) that can be checked without timing the grid."""

import math

import numpy as np

import rnnkit.bench as bench
from rnnkit import _core


def test_fma_peak_is_a_finite_positive_rate():
    for float64 in (False, True):
        rate = _core._fma_peak_gflops(float64, 0.02)
        assert math.isfinite(rate) and rate > 0


def test_row_and_markdown_carry_every_column():
    row = {"shape": "small (50,1,128)", "cell": "lstm", "mode": "training", "threads": 2,
           "rnnkit_ms": 1.5, "base_ms": 3.0, "ratio": 0.5, "gflops": 40.0, "roof": 50.0,
           "frac": 0.8, "peak_frac": 0.25, "ws_mib": 0.17, "n": "7/7", "bg": 0.0, "busy": False}
    line = bench.format_row(row)
    assert " 80% " in line and " 25% " in line and "0.50" in line
    table = bench.markdown_table([row], "torch").splitlines()
    header, rule, body = table
    assert header.count("|") == rule.count("|") == body.count("|")
    assert "| 80% | 25% |" in body


def test_gemm_flops_counts_training_as_three_inferences():
    inference = sum(bench.gemm_flops(4, 10, 3, 8, 16, "inference"))
    training = sum(bench.gemm_flops(4, 10, 3, 8, 16, "training"))
    assert inference == 2 * 10 * 3 * 8 * 4 * 16 + 2 * 10 * 3 * 16 * 4 * 16
    assert training == 3 * inference
    assert np.isclose(bench.roofline_gflops((1.0, 1.0), (2.0, 2.0)), 2.0)

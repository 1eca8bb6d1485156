"""Every walk of the packed kernel (vector width x tile rows x loop order) on this machine.

The kernels pick a variant from the processor (CPUID: vector width and registers, L2 size);
whichever machine runs the tests, every variant it can run is forced here. The walks at one width
must give results bitwise equal to each other, the widths with FMA (32 and 64 bytes: AVX2,
AVX-512) bitwise equal to each other too, and every width must be close to the NumPy oracle, so
a choice made for one CPU is never wrong on another.
"""

import itertools

import numpy as np
import pytest

import rnnkit
from conftest import CELLS, assert_close, make_params, seq_backward, seq_forward
from rnnkit import _core
from rnnkit import reference as ref

WALKS = list(itertools.product([4, 8], [0, 1]))  # (tile_rows, panel_major)
# Vector widths (bytes) this CPU runs: 16 (SSE2) always, 32 with AVX2 + FMA, 64 with AVX-512.
WIDTHS = [w for w in (16, 32, 64) if w <= _core._cpu_info()["vector_bytes"]]
FMA_WIDTHS = [w for w in WIDTHS if w >= 32]


@pytest.fixture
def restore_choice():
    saved = _core._get_kernel_choice()
    yield
    _core._set_kernel_choice(*saved)
    _core._set_vector_bytes(0)


def run(cell, x, params, lengths):
    y, finals, ws = seq_forward(
        rnnkit, cell, x, (None,) * (2 if cell == "lstm" else 1), params, lengths=lengths
    )
    dy = np.cos(np.arange(y.size, dtype=y.dtype)).reshape(y.shape)
    grads = seq_backward(rnnkit, cell, dy, (None,) * len(finals), ws)
    return (y, *finals, *grads)


# Batch sizes: full 8-row tiles, leftovers of every size (13 = 8 + 4 + 1), one row (eight-vector
# panels), three rows (four-vector panels); T * B >= 32 rows puts the input projection and dx on
# the blocked GEMM.
@pytest.mark.parametrize("B", [1, 3, 13, 16])
@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_variants_bitwise_equal_and_match_oracle(cell, B, dtype, rng, restore_choice):
    T, I, H = 5, 19, 37  # H not a multiple of the vector length: narrow last panels too
    x = rng.standard_normal((T, B, I)).astype(dtype)
    params = make_params(cell, I, H, dtype, rng)
    lengths = None if B < 3 else np.maximum(1, T - np.arange(B) % T)
    results = {}
    for width in WIDTHS:
        _core._set_vector_bytes(width)
        for walk in WALKS:
            _core._set_kernel_choice(*walk)
            results[(width, *walk)] = run(cell, x, params, lengths)
    y_ref, finals_ref, _ = seq_forward(
        ref, cell, x, (None,) * (2 if cell == "lstm" else 1), params, lengths=lengths
    )
    for width in WIDTHS:
        first = results[(width, *WALKS[0])]
        for walk in WALKS:
            for a, b in zip(first, results[(width, *walk)]):
                np.testing.assert_array_equal(a, b, err_msg=f"{width}-byte vectors, walk {walk}")
        assert_close(first[0], y_ref, err_msg=f"y vs oracle, {width}-byte vectors")
        for a, b in zip(first[1 : 1 + len(finals_ref)], finals_ref):
            assert_close(a, b, err_msg=f"final state vs oracle, {width}-byte vectors")
    for width in FMA_WIDTHS:
        for a, b in zip(results[(FMA_WIDTHS[0], *WALKS[0])], results[(width, *WALKS[0])]):
            np.testing.assert_array_equal(a, b, err_msg=f"{width}-byte vs {FMA_WIDTHS[0]}-byte vectors")


def test_set_kernel_choice_rejects_bad_values(restore_choice):
    with pytest.raises(ValueError, match="tile_rows: expected 0, 4 or 8, got 6"):
        _core._set_kernel_choice(6, -1)
    with pytest.raises(ValueError, match="panel_major: expected -1, 0 or 1, got 2"):
        _core._set_kernel_choice(0, 2)
    with pytest.raises(ValueError, match="bytes: expected 0 or one of 16, 32, 64 .* got 24"):
        _core._set_vector_bytes(24)
    if WIDTHS[-1] < 64:
        with pytest.raises(ValueError, match=f"up to this CPU's {WIDTHS[-1]}, got 64"):
            _core._set_vector_bytes(64)


def test_cpu_info_reports_this_processor():
    info = _core._cpu_info()
    assert info["tile_rows"] in (4, 8)
    assert info["vector_bytes"] == (64 if info["avx512f"] else 32 if info["avx2"] and info["fma"] else 16)
    assert info["tile_rows"] == (8 if info["vector_bytes"] == 64 else 4)
    # Cache sizes, where CPUID reports them, are powers-of-two multiples of a line in practice.
    for key in ("l1d_bytes", "l2_bytes", "l3_bytes"):
        assert info[key] >= 0 and info[key] % 64 == 0

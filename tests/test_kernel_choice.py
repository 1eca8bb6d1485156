"""Every walk of the packed kernel (tile rows x loop order) on this machine: bitwise the same.

The kernels pick a variant from the processor (CPUID: vector registers, L2 size); whichever
machine runs the tests, every variant is forced here and must give results bitwise equal to
every other and close to the NumPy oracle, so a choice made for one CPU is never wrong on another.
"""

import itertools

import numpy as np
import pytest

import rnnkit
from conftest import CELLS, assert_close, make_params, seq_backward, seq_forward
from rnnkit import _core
from rnnkit import reference as ref

VARIANTS = list(itertools.product([4, 8], [0, 1]))  # (tile_rows, panel_major)


@pytest.fixture
def restore_choice():
    saved = _core._get_kernel_choice()
    yield
    _core._set_kernel_choice(*saved)


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
    for v in VARIANTS:
        _core._set_kernel_choice(*v)
        results[v] = run(cell, x, params, lengths)
    first = results[VARIANTS[0]]
    for v, got in results.items():
        for a, b in zip(first, got):
            np.testing.assert_array_equal(a, b, err_msg=f"variant {v}")
    y_ref, finals_ref, _ = seq_forward(
        ref, cell, x, (None,) * (2 if cell == "lstm" else 1), params, lengths=lengths
    )
    assert_close(first[0], y_ref, err_msg="y vs oracle")
    for a, b in zip(first[1 : 1 + len(finals_ref)], finals_ref):
        assert_close(a, b, err_msg="final state vs oracle")


def test_set_kernel_choice_rejects_bad_values(restore_choice):
    with pytest.raises(ValueError, match="tile_rows: expected 0, 4 or 8, got 6"):
        _core._set_kernel_choice(6, -1)
    with pytest.raises(ValueError, match="panel_major: expected -1, 0 or 1, got 2"):
        _core._set_kernel_choice(0, 2)


def test_cpu_info_reports_this_processor():
    info = _core._cpu_info()
    assert info["tile_rows"] in (4, 8)
    assert info["tile_rows"] == (8 if info["avx512f"] else 4)
    # Cache sizes, where CPUID reports them, are powers-of-two multiples of a line in practice.
    for key in ("l1d_bytes", "l2_bytes", "l3_bytes"):
        assert info[key] >= 0 and info[key] % 64 == 0

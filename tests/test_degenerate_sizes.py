"""Degenerate sizes: T, B, I, H or P equal to 0, and ones, run and match the oracle (or give
correctly shaped empty results); nothing crashes."""

import numpy as np
import pytest

import rnnkit
from conftest import CELLS, DTYPES, assert_close, random_case, run_case
from rnnkit import _core
from rnnkit import attention as ops
from rnnkit import reference as ref
from rnnkit.reference import attention as oracle


@pytest.mark.parametrize("cell", CELLS)
def test_degenerate_sizes_match_oracle(cell, rng):
    """I = 0 (no input features), H = 0, ones, B = 1 and T = 1 run and match the oracle."""
    with np.errstate(all="ignore"):
        for shape in [(3, 2, 0, 4), (3, 2, 4, 0), (1, 1, 1, 1), (5, 1, 1, 3), (2, 3, 0, 0)]:
            for dtype in DTYPES:
                case = random_case(cell, *shape, dtype, rng, lengths="random")
                for reverse in (False, True):
                    got = run_case(rnnkit, cell, case, reverse)
                    want = run_case(ref, cell, case, reverse)
                    for k, (a, e) in enumerate(zip(got, want)):
                        assert_close(a, e, dtype, f"{shape} result {k}")


def test_lstm_projection_size_zero():
    """P = 0: h and y are empty, the cell state still runs; nothing crashes."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 2, 3))
    W_ih, W_hh, W_hr = rng.standard_normal((12, 3)), np.zeros((12, 0)), np.zeros((0, 3))
    for limit in (0, 64):  # BLAS and register-blocked per-step products
        old = _core._get_small_batch_limit()
        _core._set_small_batch_limit(limit)
        try:
            y, (h, c), ws = rnnkit.lstm_forward(x, None, None, W_ih, W_hh, None, None, W_hr=W_hr)
            g = rnnkit.lstm_backward(None, None, np.ones_like(c), ws)
        finally:
            _core._set_small_batch_limit(old)
        assert y.shape == (4, 2, 0) and h.shape == (2, 0) and c.shape == (2, 3)
        # with no recurrent input, c evolves from x alone: compare with the plain LSTM, W_hh = 0
        y2, (h2, c2), ws2 = rnnkit.lstm_forward(x, None, None, W_ih, np.zeros((12, 3)), None, None)
        np.testing.assert_allclose(c, c2, rtol=1e-12)
        g2 = rnnkit.lstm_backward(None, None, np.ones_like(c2), ws2)
        np.testing.assert_allclose(g.dx, g2.dx, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(g.dW_ih, g2.dW_ih, rtol=1e-12, atol=1e-15)
        assert g.dW_hr.shape == (0, 3) and g.dh0.shape == (2, 0)


def test_empty_softmax_and_loss_shapes():
    for shape in [(0, 3), (3, 0), (0, 0), (2, 0, 4), (0,)]:
        p = rnnkit.softmax(np.zeros(shape, np.float32))
        assert p.shape == shape and p.dtype == np.float32


# B, T, S, Hq, Hk, Hv, A: each feature size zero in turn (and together), with T on both sides
# of the kernels' GEMM threshold (8 query steps)
ATTENTION_ZERO_SIZES = [
    (2, 3, 4, 0, 5, 3, 6),
    (2, 3, 4, 5, 0, 3, 6),
    (2, 3, 4, 5, 5, 3, 0),
    (2, 3, 4, 5, 5, 0, 6),
    (2, 3, 4, 0, 0, 3, 0),
    (2, 10, 4, 0, 0, 2, 0),
    (2, 10, 4, 5, 5, 2, 0),
]


@pytest.mark.parametrize("sizes", ATTENTION_ZERO_SIZES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_zero_feature_sizes_match_oracle(sizes, dtype):
    """Hq = 0, Hk = 0, A = 0 or Hv = 0: forward and backward of every attention kind run and
    match the oracle (scores from an empty dot product are 0: uniform weights), empty
    gradients have their shapes."""
    B, T, S, Hq, Hk, Hv, A = sizes
    rng = np.random.default_rng(5)

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    q, k, v = normal(B, T, Hq), normal(B, S, Hk), normal(B, S, Hv)
    dctx, dw = normal(B, T, Hv), normal(B, T, S)
    mask = np.arange(S)[None, :] < np.array([S, S - 1])[:, None]
    calls = {
        "additive": (q, k, v, normal(A, Hq), normal(A, Hk), normal(A), normal(A)),
        "general": (q, k, v, normal(Hq, Hk)),
    }
    if Hq == Hk:
        calls["dot"] = (q, k, v)
    for kind, args in calls.items():
        fwd, bwd = f"{kind}_attention_forward", f"{kind}_attention_backward"
        got_ctx, got_w, got_cache = getattr(ops, fwd)(*args, mask=mask)
        want_ctx, want_w, want_cache = getattr(oracle, fwd)(*args, mask=mask)
        assert_close(got_ctx, want_ctx, dtype, f"{kind} {sizes} context")
        assert_close(got_w, want_w, dtype, f"{kind} {sizes} weights")
        got = getattr(ops, bwd)(dctx, dw, got_cache)
        want = getattr(oracle, bwd)(dctx, dw, want_cache)
        for name, a, e in zip(got._fields, got, want):
            assert_close(a, e, dtype, f"{kind} {sizes} {name}")

"""Non-finite attention scores: the oracle and the fused kernels agree (NaN propagates)."""

import numpy as np
import pytest

from rnnkit import attention
from rnnkit import reference_attention as ref


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("position", [0, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dot_attention_row_with_bad_score_matches_oracle(bad, position, dtype):
    rng = np.random.default_rng(1)
    B, T, S, H = 2, 3, 5, 4
    q = rng.standard_normal((B, T, H)).astype(dtype)
    k = rng.standard_normal((B, S, H)).astype(dtype)
    v = rng.standard_normal((B, S, H)).astype(dtype)
    k[0, position, 0] = bad  # every score of batch row 0 against key `position` is bad
    mask = np.ones((B, S), np.uint8)
    mask[1, 2:] = 0
    ctx, w, _ = attention.dot_attention_forward(q, k, v, mask=mask)
    ctx_ref, w_ref, _ = ref.dot_attention_forward(q, k, v, mask=mask)
    if np.isnan(bad):
        assert np.isnan(w[0]).all() and np.isnan(ctx[0]).all()
    else:  # the score is +inf or -inf by the sign of q: a NaN row, or a zero weight there
        assert np.isnan(w[0]).any()
    np.testing.assert_array_equal(np.isnan(w_ref), np.isnan(w))
    np.testing.assert_array_equal(np.isnan(ctx_ref), np.isnan(ctx))
    finite = np.isfinite(w_ref)
    np.testing.assert_allclose(w[finite], w_ref[finite], rtol=1e-5, atol=1e-7)
    finite = np.isfinite(ctx_ref)
    np.testing.assert_allclose(ctx[finite], ctx_ref[finite], rtol=1e-5, atol=1e-6)


def test_fully_masked_row_is_zero_in_both():
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((2, 1, 3)),) + tuple(rng.standard_normal((2, 4, 3)) for _ in range(2))
    mask = np.ones((2, 4), np.uint8)
    mask[0] = 0
    _, w, _ = attention.dot_attention_forward(q, k, v, mask=mask)
    _, w_ref, _ = ref.dot_attention_forward(q, k, v, mask=mask)
    np.testing.assert_array_equal(w[0], np.zeros_like(w[0]))
    np.testing.assert_array_equal(w_ref[0], np.zeros_like(w_ref[0]))
    np.testing.assert_allclose(w[1], w_ref[1], rtol=1e-12)

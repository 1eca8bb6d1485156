"""Numerical safety: NaN and Inf propagate as IEEE arithmetic says (position by position as the
oracle), and large values stay finite and exact: pre-activations up to |a| = 1e4, logits up to
1e4."""

import numpy as np
import pytest

import rnnkit
from conftest import CELLS, DTYPES, assert_close, n_states, random_case, run_case
from rnnkit import reference as ref


@pytest.mark.parametrize("cell", CELLS)
def test_nan_inf_propagate_like_the_oracle(cell, rng):
    """NaN/Inf anywhere (x, a state, a weight, a bias, a cotangent) give, position by position,
    the oracle's NaN/Inf and the oracle's finite values: IEEE arithmetic, never a crash."""
    k = n_states(cell)
    where = ["x", "state", "W_ih", "W_hh", "b_hh", "dy", "d_final"]
    with np.errstate(all="ignore"):  # the oracle's NumPy arithmetic on NaN / Inf
        for target in where:
            for value in (np.nan, np.inf, -np.inf):
                case = random_case(cell, 4, 3, 3, 4, np.float64, rng)
                if target == "x":
                    case["x"][1, 0, 1] = value
                elif target == "state":
                    case["states"][k - 1][1, 2] = value
                elif target in ("W_ih", "W_hh", "b_hh"):
                    i = ("W_ih", "W_hh", None, "b_hh").index(target)
                    case["params"][i].reshape(-1)[3] = value
                elif target == "dy":
                    case["dy"][2, 1, 0] = value
                else:
                    case["d_finals"][0][0, 1] = value
                got, want = run_case(rnnkit, cell, case), run_case(ref, cell, case)
                for n, (a, e) in enumerate(zip(got, want)):
                    if e is None:
                        continue
                    msg = f"{target}={value}, result {n}"
                    if cell == "rnn_relu" and n >= 2:
                        # relu's gradient is a select, as in PyTorch: a unit with a <= 0 (or
                        # NaN) passes exactly 0, even for a NaN/Inf incoming gradient; the
                        # oracle multiplies by the 0/1 mask (NaN * 0 = NaN). Where the oracle
                        # is not NaN the two agree exactly.
                        keep = ~np.isnan(e)
                        a, e = a[keep], e[keep]
                    np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg=msg)
                    np.testing.assert_array_equal(np.isposinf(a), np.isposinf(e), err_msg=msg)
                    np.testing.assert_array_equal(np.isneginf(a), np.isneginf(e), err_msg=msg)
                    fin = np.isfinite(e)
                    np.testing.assert_allclose(a[fin], e[fin], rtol=1e-10, atol=1e-10, err_msg=msg)


def test_nan_inf_in_losses():
    logits = np.array(
        [
            [0.0, 1.0, 2.0],
            [np.inf, 0.0, 1.0],
            [-np.inf, 0.0, 1.0],
            [0.0, -np.inf, 1.0],
            [-np.inf, -np.inf, -np.inf],
            [np.nan, 0.0, 0.0],
        ]
    )
    t = np.array([0, 1, 0, 2, 1, 2])
    with np.errstate(all="ignore"):
        want_p = ref.softmax(logits)
        want = ref.softmax_cross_entropy(logits, t, reduction="none")
    got_p = rnnkit.softmax(logits)
    got = rnnkit.softmax_cross_entropy(logits, t, reduction="none")
    for a, e in ((got_p, want_p), (got.loss, want.loss), (got.dlogits, want.dlogits)):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
        np.testing.assert_array_equal(np.isinf(a), np.isinf(e))
        fin = np.isfinite(e)
        np.testing.assert_allclose(a[fin], e[fin], rtol=1e-12, atol=1e-15)
    assert got.loss[2] == np.inf  # -inf logit at the target: infinite loss, not NaN
    assert np.isfinite(got.dlogits[2]).all()


# ============================================================================= numerical safety

PRE = np.array(
    [
        0.0,
        1e-8,
        -0.5,
        0.62,
        -0.63,
        1.0,
        -3.0,
        9.0,
        -15.0,
        20.0,
        -30.0,
        44.0,
        -87.5,
        88.5,
        -300.0,
        709.5,
        -710.5,
        1e3,
        -2e3,
        5e3,
        -1e4,
        1e4,
    ]
)


def _exact_sigmoid(a):
    a = np.asarray(a, np.float64)
    with np.errstate(all="ignore"):  # np.where evaluates both branches
        return np.where(a >= 0, 1 / (1 + np.exp(-a)), np.exp(a) / (1 + np.exp(a)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_tanh_and_sigmoid_at_large_preactivations(dtype):
    """A cell whose pre-activations are exactly the values in PRE (x = 1, one input, no bias,
    h = 0 or 1): the kernels' tanh and sigmoid and their gradients are finite and correct."""
    eps = np.finfo(dtype).eps
    a = PRE.astype(dtype)
    n = a.size
    x = np.ones((1, 1), dtype)
    # tanh: RNN cell, h_next = tanh(a); the bias gradient is tanh'(a) = 1 - tanh(a)^2
    h, cache = rnnkit.rnn_cell_forward(x, None, a[:, None], np.zeros((n, n), dtype), np.zeros(n, dtype), None)
    g = rnnkit.rnn_cell_backward(np.ones((1, n), dtype), cache)
    th = np.tanh(a.astype(np.float64))
    np.testing.assert_allclose(h[0], th, rtol=4 * eps, atol=0)
    np.testing.assert_allclose(g.db_ih, 1 - th * th, rtol=0, atol=8 * eps)
    assert np.isfinite(h).all() and np.isfinite(g.db_ih).all() and np.isfinite(g.dx).all()
    # sigmoid: GRU cell with h = 1 and a zero n block gives h_next = z = sigmoid(a_z); the
    # z block's bias gradient is (h - n) z (1 - z) = sigmoid'(a)
    W_ih = np.zeros((3 * n, 1), dtype)
    W_ih[n : 2 * n, 0] = a
    h1, cache = rnnkit.gru_cell_forward(
        x, np.ones((1, n), dtype), W_ih, np.zeros((3 * n, n), dtype), np.zeros(3 * n, dtype), None
    )
    g = rnnkit.gru_cell_backward(np.ones((1, n), dtype), cache)
    s = _exact_sigmoid(a)
    np.testing.assert_allclose(h1[0], s, rtol=4 * eps, atol=4 * np.finfo(dtype).tiny)
    np.testing.assert_allclose(g.db_ih[n : 2 * n], s * _exact_sigmoid(-a), rtol=0, atol=4 * eps)
    assert np.isfinite(h1).all() and np.isfinite(g.db_ih).all() and np.isfinite(g.dW_ih).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_sequences_with_huge_preactivations(cell, dtype, rng):
    """|pre-activations| up to about 1e4: every result finite and equal to the oracle's."""
    case = random_case(cell, 6, 4, 5, 8, dtype, rng, lengths="random")
    # x in {+-0.5, +-1} and integer W_ih: x W_ih^T is exact whatever the summation order, so
    # kernel and oracle see the same pre-activations (up to the small recurrent terms)
    case["x"] = rng.choice([-1.0, -0.5, 0.5, 1.0], size=case["x"].shape).astype(dtype)
    W_ih = rng.integers(-2000, 2001, size=case["params"][0].shape).astype(dtype)
    case["params"] = (W_ih,) + case["params"][1:]
    assert 1e3 < np.abs(case["x"].reshape(-1, 5) @ W_ih.T).max() <= 1e4
    with np.errstate(all="ignore"):
        want = run_case(ref, cell, case)
    got = run_case(rnnkit, cell, case)
    for k, (a, e) in enumerate(zip(got, want)):
        if e is None:
            continue
        assert np.isfinite(a).all(), f"result {k}"
        assert_close(a, e, dtype, f"result {k}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_cross_entropy_stable_up_to_1e4(dtype, rng):
    """Logits up to +-1e4 (spread 2e4): the loss and gradient equal the float64 logsumexp
    formula, finite; no overflow to inf or NaN."""
    C = 7
    rows = [
        np.full(C, 1e4),
        np.full(C, -1e4),
        np.linspace(-1e4, 1e4, C),
        np.array([1e4, -1e4, 0, 1, 2, 3, 9999.5]),
        rng.uniform(-1e4, 1e4, C),
    ]
    logits = np.array(rows).astype(dtype)
    N = len(rows)
    t = np.array([0, 3, 0, 1, 6])
    res = rnnkit.softmax_cross_entropy(logits, t, reduction="none")
    l64 = logits.astype(np.float64)
    m = l64.max(axis=1, keepdims=True)
    shifted = l64 - m  # exact: both are float32/float64 values of the same binade range
    log_sum = np.log(np.exp(shifted).sum(axis=1))
    want_loss = (m[:, 0] - l64[np.arange(N), t]) + log_sum  # small terms first, as it must be
    want_d = np.exp(shifted - log_sum[:, None])
    want_d[np.arange(N), t] -= 1
    eps = np.finfo(dtype).eps
    assert np.isfinite(res.loss).all() and np.isfinite(res.dlogits).all()
    np.testing.assert_allclose(res.loss, want_loss, rtol=4 * eps, atol=4 * eps)
    np.testing.assert_allclose(res.dlogits, want_d, rtol=0, atol=4 * eps)
    p = rnnkit.softmax(logits)
    np.testing.assert_allclose(p, np.exp(shifted - log_sum[:, None]), rtol=0, atol=4 * eps)
    mean = rnnkit.softmax_cross_entropy(logits, t)
    np.testing.assert_allclose(mean.loss, want_loss.mean(), rtol=4 * eps)

"""The per-step loop on rnnkit's thread team, its two product paths, and the LSTM projection.

Below a batch limit the per-step products run on rnnkit's packed kernel, split by columns over
the team's threads; above it they go to the BLAS. Every output element is computed by the same
code in the same order whatever the thread count, so results must be bitwise identical for 1
and 2 threads; both paths must agree with the NumPy oracle.
"""

import numpy as np
import pytest

import rnnkit
from conftest import GATES, finite_difference
from rnnkit import _core
from rnnkit import reference as ref

VARIANTS = [
    ("rnn", {}),
    ("rnn", {"nonlinearity": "relu"}),
    ("lstm", {}),
    ("gru", {}),
    ("gru", {"reset_after": False}),
]


@pytest.fixture
def restore_settings():
    threads, limit = rnnkit.get_num_threads(), _core._get_small_batch_limit()
    yield
    rnnkit.set_num_threads(threads)
    _core._set_small_batch_limit(limit)


def run(mod, cell, kw, args, grads, W_hr=None):
    x, h0, c0, W = args
    dy, dh, dc = grads
    if cell == "lstm":
        extra = {} if W_hr is None else {"W_hr": W_hr}
        y, (h_T, c_T), ws = mod.lstm_forward(x, h0, c0, *W, **kw, **extra)
        return [y, h_T, c_T, *mod.lstm_backward(dy, dh, dc, ws)]  # + dW_hr with a projection
    y, h_T, ws = getattr(mod, f"{cell}_forward")(x, h0, *W, **kw)
    return [y, h_T, *getattr(mod, f"{cell}_backward")(dy, dh, ws)]


def make(cell, T, B, I, H, rng, P=None):
    G = GATES[cell]
    S = P or H
    W = [0.2 * rng.standard_normal(s) for s in [(G * H, I), (G * H, S), (G * H,), (G * H,)]]
    args = (rng.standard_normal((T, B, I)), rng.standard_normal((B, S)), rng.standard_normal((B, H)), W)
    grads = (rng.standard_normal((T, B, S)), rng.standard_normal((B, S)), rng.standard_normal((B, H)))
    return args, grads


@pytest.mark.parametrize("cell,kw", VARIANTS, ids=lambda v: str(v))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_team_threads_are_bitwise_equal_and_match_oracle(cell, kw, reverse, with_lengths, restore_settings):
    rng = np.random.default_rng(7)
    T, B, I, H = 6, 12, 20, 64  # enough work per step for the team to use both threads
    args, grads = make(cell, T, B, I, H, rng)
    lengths = rng.integers(1, T + 1, B) if with_lengths else None
    kw = dict(kw, reverse=reverse, lengths=lengths)
    results = {}
    for n in (1, 2):
        rnnkit.set_num_threads(n)
        results[n] = run(rnnkit, cell, kw, args, grads)
    for a, b in zip(results[1], results[2]):
        assert (a is None and b is None) or np.array_equal(a, b)
    expected = run(ref, cell, kw, args, grads)
    for got, want in zip(results[2], expected):
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("cell,kw", VARIANTS, ids=lambda v: str(v))
def test_packed_and_blas_paths_agree(cell, kw, restore_settings):
    rng = np.random.default_rng(3)
    args, grads = make(cell, 5, 9, 13, 37, rng)  # odd sizes: partial panels and tails
    kw = dict(kw, lengths=np.array([5, 1, 3, 5, 2, 4, 5, 1, 3]))
    results = {}
    for limit in (0, 1000):  # 0: BLAS products; 1000: packed products
        _core._set_small_batch_limit(limit)
        results[limit] = run(rnnkit, cell, kw, args, grads)
    for a, b in zip(results[0], results[1000]):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell,kw", [("lstm", {}), ("gru", {"reset_after": False})], ids=lambda v: str(v))
def test_blocked_whole_sequence_products(cell, kw, dtype, restore_settings):
    """The input projection and dx run on rnnkit's blocked GEMM (cpp/block_gemm.hpp) from 32
    rows: here 135 rows (two row blocks of 128), K = 530 and K = G*H > 512 (two K blocks), N
    not a multiple of the panel width. What rnnkit's kernels compute (outputs, states, dx, dh0,
    dc0) is bitwise the same at 1 and 2 threads (the weight gradients come from OpenBLAS, whose
    blocking depends on its thread count); everything matches the oracle."""
    rng = np.random.default_rng(13)
    args, grads = make(cell, 45, 3, 530, 130, rng)
    args = (*(a.astype(dtype) for a in args[:3]), [w.astype(dtype) for w in args[3]])
    grads = tuple(g.astype(dtype) for g in grads)
    results = {}
    for n in (1, 2):
        rnnkit.set_num_threads(n)
        results[n] = run(rnnkit, cell, kw, args, grads)
    n_ours = 6 if cell == "lstm" else 4  # y, h_T, (c_T,) dx, dh0, (dc0,)
    for a, b in zip(results[1][:n_ours], results[2][:n_ours]):
        assert np.array_equal(a, b)
    expected = run(ref, cell, kw, args, grads)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for got, want in zip(results[2], expected):
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


def test_projection_on_the_team_is_bitwise_equal(restore_settings):
    rng = np.random.default_rng(11)
    args, grads = make("lstm", 5, 12, 16, 64, rng, P=24)
    W_hr = 0.2 * rng.standard_normal((24, 64))
    results = {}
    for n in (1, 2):
        rnnkit.set_num_threads(n)
        results[n] = run(rnnkit, "lstm", {"reverse": True}, args, grads, W_hr=W_hr)
    for a, b in zip(results[1], results[2]):
        assert (a is None and b is None) or np.array_equal(a, b)


def test_thread_count_controls():
    n = rnnkit.get_num_threads()
    try:
        rnnkit.set_num_threads(1)
        assert rnnkit.get_num_threads() == 1
        with pytest.raises(ValueError, match="n"):
            rnnkit.set_num_threads(0)
        with pytest.raises(TypeError, match="n"):
            rnnkit.set_num_threads(1.5)
    finally:
        rnnkit.set_num_threads(n)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_projection_kernel_matches_oracle(reverse, with_lengths):
    rng = np.random.default_rng(5)
    T, B, I, H, P = 5, 4, 6, 9, 5
    args, grads = make("lstm", T, B, I, H, rng, P=P)
    W_hr = 0.3 * rng.standard_normal((P, H))
    lengths = np.array([5, 2, 4, 1]) if with_lengths else None
    kw = {"reverse": reverse, "lengths": lengths}
    got = run(rnnkit, "lstm", kw, args, grads, W_hr=W_hr)
    want = run(ref, "lstm", kw, args, grads, W_hr=W_hr)
    assert len(got) == len(want) == 3 + 8  # y, h_T, c_T and the 8 gradient fields with dW_hr
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


def test_projection_oracle_matches_finite_differences():
    rng = np.random.default_rng(2)
    T, B, I, H, P = 3, 2, 3, 4, 2
    (x, h0, c0, W), (dy, dh, dc) = make("lstm", T, B, I, H, rng, P=P)
    W_hr = 0.5 * rng.standard_normal((P, H))

    def loss(W_hr_):
        y, (h_T, c_T), _ = ref.lstm_forward(x, h0, c0, *W, W_hr=W_hr_, lengths=[3, 2])
        return (y * dy).sum() + (h_T * dh).sum() + (c_T * dc).sum()

    _, _, ws = ref.lstm_forward(x, h0, c0, *W, W_hr=W_hr, lengths=[3, 2])
    g = ref.lstm_backward(dy, dh, dc, ws)
    num = finite_difference(lambda: loss(W_hr), W_hr)
    np.testing.assert_allclose(g.dW_hr, num, rtol=1e-6, atol=1e-9)


def _lstm_grad_sum(seed):
    rng = np.random.default_rng(seed)
    (x, h0, c0, W), (dy, dh, dc) = make("lstm", 6, 12, 20, 64, rng)
    y, _, ws = rnnkit.lstm_forward(x, h0, c0, *W)
    return rnnkit.lstm_backward(dy, dh, dc, ws).dW_hh


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_team_works_in_forked_children(restore_settings):
    # The parent's team threads do not exist in a forked child; the child must start its own
    # team rather than wait for them (multiprocessing's default start method on Linux).
    import multiprocessing

    rnnkit.set_num_threads(2)
    expected = _lstm_grad_sum(1)  # the parent has used (and so started) its team
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_lstm_grad_sum, (1,)).get(timeout=60)
    assert np.array_equal(got, expected)


def test_an_exception_in_a_team_thread_reaches_the_caller(restore_settings):
    """std::bad_alloc thrown in a worker thread (or the caller's share) of a team run, while the
    other thread waits at a barrier, comes back as MemoryError; the team is usable after."""
    rnnkit.set_num_threads(2)
    for thrower in (1, 0):
        with pytest.raises(MemoryError):
            _core._team_run_throwing(2, thrower)
    old = _core._get_team_min_work()
    _core._set_team_min_work(0)  # every call on both threads
    try:
        rng = np.random.default_rng(3)
        args, grads = make("lstm", 5, 12, 8, 32, rng)
        got = run(rnnkit, "lstm", {}, args, grads)
        want = run(ref, "lstm", {}, args, grads)
    finally:
        _core._set_team_min_work(old)
    for k, (a, e) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12, err_msg=f"result {k}")

"""Subnormal flushing inside kernel calls: results, the caller's control register, the switch.

Every kernel call runs with subnormals flushed to zero (FTZ/DAZ) unless the user turns it off,
on the calling thread and on rnnkit's team threads (conftest's split_every_step puts every call
on all threads), and leaves the caller's floating-point control register as it found it.
"""

import numpy as np
import pytest

import rnnkit
from rnnkit import _core
from rnnkit import reference as ref

pytestmark = pytest.mark.skipif(
    _core._fp_control_flush_bits() == 0, reason="no flush-to-zero control on this architecture"
)

# Inputs whose products are subnormal: 1e-20 * 1e-20 = 1e-40 < 1.2e-38 (float32), and
# 1e-160 * 1e-160 = 1e-320 < 2.2e-308 (float64).
TINY = {np.float32: 1e-20, np.float64: 1e-160}
SMALLEST_NORMAL = {np.float32: np.finfo(np.float32).tiny, np.float64: np.finfo(np.float64).tiny}


@pytest.fixture
def flush_setting():
    saved = rnnkit.get_flush_denormal()
    yield
    rnnkit.set_flush_denormal(saved)


def subnormal_case(dtype, T=3, B=5, I=4, H=40):
    """A vanilla RNN whose every pre-activation is a sum of I subnormal products."""
    x = np.full((T, B, I), TINY[dtype], dtype)
    W_ih = np.full((H, I), TINY[dtype], dtype)
    W_hh = np.zeros((H, H), dtype)
    return x, W_ih, W_hh


def test_flushing_is_on_by_default():
    assert rnnkit.get_flush_denormal() is True


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flushed_results_are_zero_on_every_thread(dtype, flush_setting):
    x, W_ih, W_hh = subnormal_case(dtype)
    assert rnnkit.set_flush_denormal(True) is True
    y, h_T, _ = rnnkit.rnn_forward(x, None, W_ih, W_hh, None, None)
    # The oracle (NumPy, no flushing) gets the subnormal sum I * tiny^2; with flushing each
    # product is zero. H = 40 columns split over the team: the workers' columns are zero too.
    expected, _, _ = ref.rnn_forward(x, None, W_ih, W_hh, None, None)
    assert np.all((expected > 0) & (expected < SMALLEST_NORMAL[dtype]))
    np.testing.assert_array_equal(y, np.zeros_like(y))
    np.testing.assert_array_equal(h_T, np.zeros_like(h_T))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unflushed_results_match_the_oracle(dtype, flush_setting):
    x, W_ih, W_hh = subnormal_case(dtype)
    assert rnnkit.set_flush_denormal(False) is True
    assert rnnkit.get_flush_denormal() is False
    y, _, _ = rnnkit.rnn_forward(x, None, W_ih, W_hh, None, None)
    expected, _, _ = ref.rnn_forward(x, None, W_ih, W_hh, None, None)
    # Subnormals carry few significant bits: compare relative to the value itself.
    np.testing.assert_allclose(y, expected, rtol=1e-3, atol=0)
    assert np.all(y > 0)


def test_backward_gradients_are_flushed(flush_setting, rng):
    x, W_ih, W_hh = subnormal_case(np.float32)
    y, _, ws = rnnkit.rnn_forward(x, None, W_ih, W_hh, None, None)
    dy = np.full_like(y, 1e-20)
    g = rnnkit.rnn_backward(dy, None, ws)
    # dx = dg W_ih with dg ~ 1e-20 and W_ih = 1e-20: subnormal products, flushed.
    np.testing.assert_array_equal(g.dx, np.zeros_like(g.dx))
    rnnkit.set_flush_denormal(False)
    g = rnnkit.rnn_backward(dy, None, ws)
    assert np.all(g.dx > 0)


def calls(dtype, rng):
    """One call of each kind of kernel entry point."""
    T, B, I, H = 4, 3, 5, 6
    x = rng.standard_normal((T, B, I)).astype(dtype)
    W_ih, W_hh = ((0.3 * rng.standard_normal((4 * H, n))).astype(dtype) for n in (I, H))
    keys = rng.standard_normal((B, 7, H)).astype(dtype)

    def lstm():
        y, _, ws = rnnkit.lstm_forward(x, None, None, W_ih, W_hh, None, None)
        rnnkit.lstm_backward(np.ones_like(y), None, None, ws)

    def loss():
        rnnkit.softmax_cross_entropy(x[0], np.zeros(B, np.int64))

    def attention():
        rnnkit.attention.dot_attention_forward(keys[:, 0], keys, keys)

    return {"lstm": lstm, "softmax_cross_entropy": loss, "attention": attention}


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("kind", ["lstm", "softmax_cross_entropy", "attention"])
def test_callers_control_register_is_restored(kind, enabled, flush_setting, rng):
    rnnkit.set_flush_denormal(enabled)
    before = _core._fp_control()
    assert before & _core._fp_control_flush_bits() == 0, "the test process itself must not flush"
    calls(np.float32, rng)[kind]()
    assert _core._fp_control() == before
    # NumPy in the same thread still computes subnormals after the call.
    tiny = np.float32(1e-20)
    assert np.multiply(tiny, tiny) > 0


def test_set_flush_denormal_rejects_non_bool(flush_setting):
    with pytest.raises(TypeError, match="enabled: expected a bool, got 1"):
        rnnkit.set_flush_denormal(1)
    assert rnnkit.get_flush_denormal() is True

"""rnnkit.set_num_threads: any integral count, a warning when oversubscribing, clear errors."""

import numpy as np
import pytest

import rnnkit


@pytest.fixture
def restore_threads():
    saved = rnnkit.get_num_threads()
    yield
    rnnkit.set_num_threads(saved)


@pytest.mark.parametrize("n", [1, 2, np.int64(2), np.int32(1), np.uint8(2)])
def test_accepts_integral_counts(n, restore_threads):
    rnnkit.set_num_threads(n)
    assert rnnkit.get_num_threads() == int(n)


@pytest.mark.parametrize("n", [True, 2.0, "2", None, np.float64(2)])
def test_rejects_non_integers(n, restore_threads):
    with pytest.raises(TypeError, match="n: expected an int, got"):
        rnnkit.set_num_threads(n)


@pytest.mark.parametrize(
    "n, message",
    [
        (0, "at least 1, got 0"),
        (-3, "at least 1, got -3"),
        (2**40, f"at most 1024, got {2**40}"),
        (1025, "at most 1024, got 1025"),
    ],
)
def test_rejects_out_of_range(n, message, restore_threads):
    before = rnnkit.get_num_threads()
    with pytest.raises(ValueError, match=f"n: expected {message}"):
        rnnkit.set_num_threads(n)
    assert rnnkit.get_num_threads() == before


def test_warns_when_oversubscribing(restore_threads):
    n = 4 * rnnkit._usable_cores() + 1
    with pytest.warns(RuntimeWarning, match=f"n: {n} threads on .* usable cores oversubscribes"):
        rnnkit.set_num_threads(n)
    assert rnnkit.get_num_threads() == n

"""The private module's own re-checks: a misuse of ``rnnkit._core`` (bypassing the Python
checks) raises ValueError, never crashes."""

import numpy as np
import pytest

from rnnkit import _core


def test_private_module_rechecks_instead_of_crashing():
    """rnnkit._core trusts nothing: every size it relies on is re-checked (ValueError)."""
    x, W_ih, W_hh = np.zeros((3, 2, 4)), np.zeros((20, 4)), np.zeros((20, 5))
    h = np.zeros((2, 5))
    g4 = np.zeros((3, 2, 20))
    fwd = _core.lstm_forward
    bad_forward = [
        (np.zeros((3, 2)), None, None, W_ih, W_hh, None, None, None, None),
        (x, None, None, W_ih, np.zeros(20), None, None, None, None),
        (x, None, None, np.zeros((20, 3)), W_hh, None, None, None, None),
        (x, None, None, W_ih, np.zeros((21, 5)), None, None, None, None),
        (x, np.zeros((2, 4)), None, W_ih, W_hh, None, None, None, None),
        (x, None, np.zeros((3, 5)), W_ih, W_hh, None, None, None, None),
        (x, None, None, W_ih, W_hh, np.zeros(19), None, None, None),
        (x, None, None, W_ih, W_hh, None, np.zeros(21), None, None),
        (x, None, None, W_ih, W_hh, None, None, np.zeros((3,)), None),
        (x, None, None, W_ih, W_hh, None, None, None, np.array([1, 2, 3])),
        (x, None, None, W_ih, W_hh, None, None, None, np.array([0, 1])),
        (x, None, None, W_ih, W_hh, None, None, None, np.array([4, 1])),
    ]
    for args in bad_forward:
        with pytest.raises(ValueError):
            fwd(*args, False, True)
    with pytest.raises(ValueError):
        _core.rnn_forward(x, None, np.zeros((5, 4)), h, None, None, None, "gelu", False, True)
    # backward takes the workspace object its forward made, and re-checks the cotangents
    _, _, _, saved = fwd(x, None, None, W_ih, W_hh, None, None, None, np.array([3, 1]), False, True)
    _core.lstm_backward(None, None, None, saved)
    for dy, dh_T, dc_T in [
        (np.zeros((2, 2, 5)), None, None),
        (None, np.zeros((2, 4)), None),
        (None, None, np.zeros((1, 5))),
        (np.zeros((3, 2, 5), np.float32), None, None),  # not the workspace's dtype
        (np.zeros((3, 2, 5))[::-1], None, None),  # not C-contiguous
    ]:
        with pytest.raises(ValueError):
            _core.lstm_backward(dy, dh_T, dc_T, saved)
    with pytest.raises(ValueError, match="comes from a lstm forward, but gru_backward"):
        _core.gru_backward(None, None, saved)
    with pytest.raises(TypeError):
        _core.lstm_backward(None, None, None, {"gates": g4})

    with pytest.raises(ValueError):
        _core.softmax(np.zeros(3, np.float64))
    with pytest.raises(ValueError):
        _core.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]), -100, 1.0)
    with pytest.raises(ValueError):
        _core.softmax_cross_entropy(np.zeros((2, 3)), np.array([0]), -100, 1.0)


def test_saved_sequence_is_opaque():
    """Only a forward makes a workspace; its fields and saved arrays cannot be changed."""
    x, W_ih, W_hh = np.ones((3, 2, 4)), np.ones((20, 4)), np.ones((20, 5))
    _, _, _, saved = _core.lstm_forward(x, None, None, W_ih, W_hh, None, None, None, None, False, True)
    with pytest.raises(TypeError):
        _core.SavedSequence()
    for field in ("x", "gates", "lengths", "reverse", "cell"):
        with pytest.raises(AttributeError):
            setattr(saved, field, None)
    assert saved.x is x and saved.W_hh is W_hh  # inputs by reference
    arrays = saved.saved_arrays()
    assert sorted(arrays) == ["cprev", "extra", "gates", "hprev"]
    assert (saved.cell, saved.reverse, saved.has_b_ih) == ("lstm", False, False)
    assert saved.nbytes == (3 * (3 * 2 * 5) + 3 * 2 * 20) * 8  # hprev, cprev, extra; gates
    for a in arrays.values():
        assert not a.flags.writeable
        with pytest.raises(ValueError):
            a[...] = 0

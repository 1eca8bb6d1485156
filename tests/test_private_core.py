"""The private module's own re-checks: a misuse of ``rnnkit._core`` (bypassing the Python
checks) raises ValueError, never crashes."""

import numpy as np
import pytest

from rnnkit import _core


def test_private_module_rechecks_instead_of_crashing():
    """rnnkit._core trusts nothing: every size it relies on is re-checked (ValueError)."""
    d = np.float64
    x, W_ih, W_hh = np.zeros((3, 2, 4)), np.zeros((20, 4)), np.zeros((20, 5))
    h, z3 = np.zeros((2, 5)), np.zeros((3, 2, 5))
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
    bwd = _core.lstm_backward
    ok = dict(
        dy=None,
        dh_T=None,
        dc_T=None,
        x=x,
        W_ih=W_ih,
        W_hh=W_hh,
        W_hr=None,
        hprev=z3,
        cprev=z3,
        gates=g4,
        extra=z3,
        m=None,
        lengths=None,
        has_b_ih=True,
        has_b_hh=True,
        reverse=False,
    )
    bwd(**ok)
    for change in [
        dict(dy=np.zeros((2, 2, 5))),
        dict(dh_T=np.zeros((2, 4))),
        dict(dc_T=np.zeros((1, 5))),
        dict(hprev=np.zeros((3, 2, 4))),
        dict(cprev=np.zeros((2, 2, 5))),
        dict(gates=np.zeros((3, 2, 19))),
        dict(extra=np.zeros((3, 1, 5))),
        dict(W_hr=np.zeros((5, 5))),
        dict(lengths=np.array([9, 1])),
    ]:
        with pytest.raises(ValueError):
            bwd(**dict(ok, **change))
    with pytest.raises(ValueError):
        _core.rnn_forward(x, None, np.zeros((5, 4)), h, None, None, None, "gelu", False, True)
    with pytest.raises(ValueError):
        _core.gru_backward(
            None,
            None,
            x,
            np.zeros((15, 4)),
            np.zeros((15, 5)),
            z3,
            np.zeros((3, 2, 15)),
            np.zeros((3, 2, 4)),
            None,
            True,
            True,
            True,
            False,
        )
    with pytest.raises(ValueError):
        _core.softmax(np.zeros(3, d))
    with pytest.raises(ValueError):
        _core.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]), -100, 1.0)
    with pytest.raises(ValueError):
        _core.softmax_cross_entropy(np.zeros((2, 3)), np.array([0]), -100, 1.0)

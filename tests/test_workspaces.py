"""Workspaces: a backward call re-checks the workspace it is given (type, dtype, layout of its
saved arrays against the cotangents), one workspace serves any number of backward calls, and a
module drops its workspace in eval mode."""

import dataclasses

import numpy as np
import pytest

import rnnkit
from conftest import assert_bitwise
from error_cases import B, H, I, T, base_args, lstm_workspace
from rnnkit import nn


def test_workspace_checks():
    ws = lstm_workspace()
    # the record is opaque: no field can be set, the saved arrays are read-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        ws.saved = None
    for field in ("gates", "x", "lengths"):
        with pytest.raises(AttributeError):
            setattr(ws.saved, field, None)
    for a in ws.saved.saved_arrays().values():
        assert not a.flags.writeable
    # another family's record put into an LSTM workspace
    bad = dataclasses.replace(ws, saved=rnnkit.gru_forward(**base_args(cell="gru"))[2].saved)
    with pytest.raises(ValueError, match=r"^workspace: it comes from a gru forward, but lstm_backward"):
        rnnkit.lstm_backward(None, None, None, bad)
    # a float32 workspace with float64 cotangents, and the reverse
    ws32 = lstm_workspace(np.float32)
    with pytest.raises(TypeError, match=r"^dh_T: expected dtype float32"):
        rnnkit.lstm_backward(None, np.zeros((B, H)), None, ws32)
    with pytest.raises(TypeError, match=r"^dc_T: expected dtype float64"):
        rnnkit.lstm_backward(None, None, np.zeros((B, H), np.float32), ws)
    # the same workspace serves any number of backward calls, with identical results
    g1 = rnnkit.lstm_backward(np.ones((T, B, H)), None, None, ws)
    g2 = rnnkit.lstm_backward(np.ones((T, B, H)), None, None, ws)
    assert_bitwise(list(g1), list(g2))


def test_module_workspace_is_dropped_by_eval():
    m = nn.GRU(I, H, seed=0, dtype=np.float64)
    out, _ = m(base_args(cell="gru")["x"])
    m.eval()
    with pytest.raises(RuntimeError, match=r"^GRU.backward: the module is in eval mode"):
        m.backward(np.ones_like(out))
    m.train()
    with pytest.raises(RuntimeError, match=r"^GRU.backward: no forward"):
        m.backward(np.ones_like(out))

"""Tests of ``rnnkit.diagnostics.gradient_norms_through_time``.

* exact: ||dL/dh_t|| equals torch autograd's (a torch cell loop with the same weights,
  retain_grad on every h_t), many-to-one and many-to-many, all three cells; the last step
  by hand (the head's gradient).
* side-effect free: no parameter gradient changes.
* the seed's point: over T = 100 steps a vanilla RNN's gradient vanishes (to ~1e-20 of its
  final value) while an LSTM / GRU whose forget / update gate is open keeps it (> 1e-3).
"""

import numpy as np
import pytest

from rnnkit import diagnostics, models
from rnnkit.demos.adding import adding_batch

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

T, B, I, H, O = 6, 3, 2, 4, 2


def torch_norms(m, x, y, many):
    """The same quantity by autograd: a torch cell loop with the model's weights."""
    r = m.rnn
    kind = getattr(torch.nn, m.cell.upper() + "Cell")  # RNNCell, LSTMCell, GRUCell
    cell = kind(I, H).double()
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor(r.weight_ih_l0.data))
        cell.weight_hh.copy_(torch.tensor(r.weight_hh_l0.data))
        cell.bias_ih.copy_(torch.tensor(r.bias_ih_l0.data))
        cell.bias_hh.copy_(torch.tensor(r.bias_hh_l0.data))
    W = torch.tensor(m.head.weight.data)
    b = torch.tensor(m.head.bias.data)
    h = torch.zeros(B, H, dtype=torch.float64)
    c = torch.zeros(B, H, dtype=torch.float64)
    hs = []
    for t in range(T):
        if m.cell == "lstm":
            h, c = cell(torch.tensor(x[t]), (h, c))
        else:
            h = cell(torch.tensor(x[t]), h)
        h.retain_grad()
        hs.append(h)
    pred = torch.stack(hs) @ W.T + b if many else hs[-1] @ W.T + b
    loss = ((pred - torch.tensor(y)) ** 2).mean()
    loss.backward()
    return np.array([float(hh.grad.norm()) for hh in hs])


@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("many", [False, True])
def test_matches_torch_autograd(cell, many, rng):
    m = models.SequenceRegressor(cell, I, H, O, many_to_many=many, dtype=np.float64, seed=1)
    x = rng.standard_normal((T, B, I))
    y = rng.standard_normal((T, B, O) if many else (B, O))
    before = {n: p.grad.copy() for n, p in m.named_parameters()}
    norms = diagnostics.gradient_norms_through_time(m, x, y)
    assert norms.shape == (T,) and norms.dtype == np.float64
    np.testing.assert_allclose(norms, torch_norms(m, x, y, many), rtol=1e-10)
    for n, p in m.named_parameters():
        np.testing.assert_array_equal(p.grad, before[n])
    per = diagnostics.gradient_norms_through_time(m, x, y, per_sequence=True)
    assert per.shape == (T, B)
    np.testing.assert_allclose(np.sqrt((per**2).sum(1)), norms, rtol=1e-12)


def test_last_step_by_hand(rng):
    """Many-to-one: dL/dh_{T-1} is the head's gradient, 2 (pred - y) / (B O) W."""
    m = models.SequenceRegressor("gru", I, H, O, dtype=np.float64, seed=2)
    x = rng.standard_normal((T, B, I))
    y = rng.standard_normal((B, O))
    pred = m(x)
    d = 2 * (pred - y) / pred.size @ m.head.weight.data
    norms = diagnostics.gradient_norms_through_time(m, x, y)
    assert norms[-1] == pytest.approx(np.linalg.norm(d), rel=1e-12)


def test_vanilla_rnn_vanishes_where_gated_cells_keep_it():
    x, y = adding_batch(16, 100, np.random.default_rng(0))
    ratio = {}
    for cell, fb in (("rnn", 0.0), ("lstm", 3.0), ("gru", 3.0)):
        m = models.SequenceRegressor(cell, 2, 32, forget_bias=fb, seed=0)
        n = diagnostics.gradient_norms_through_time(m, x, y)
        assert np.all(np.isfinite(n)) and n[-1] > 0
        ratio[cell] = n[0] / n[-1]  # ||dL/dh_0|| / ||dL/dh_99||
    assert ratio["rnn"] < 1e-12
    assert ratio["lstm"] > 1e-3 and ratio["gru"] > 1e-3


def test_errors(rng):
    m = models.SequenceRegressor("lstm", I, H, num_layers=2, seed=0)
    with pytest.raises(ValueError, match="single-layer"):
        diagnostics.gradient_norms_through_time(
            m, np.zeros((T, B, I), np.float32), np.zeros((B, 1), np.float32)
        )
    m = models.SequenceRegressor("rnn", I, H, seed=0)
    with pytest.raises(TypeError, match="x: expected dtype float32"):
        diagnostics.gradient_norms_through_time(m, np.zeros((T, B, I)), np.zeros((B, 1)))
    with pytest.raises(ValueError, match=r"x: expected shape \(T, B, I\)"):
        diagnostics.gradient_norms_through_time(
            m, np.zeros((T, B, I + 1), np.float32), np.zeros((B, 1), np.float32)
        )

"""The step API of the recurrent modules (rnnkit.nn.RNN / LSTM / GRU): step(x_t, state) and
step_backward(dout_t, dstate), one time step of any layer stack, equal step by step to the
sequence forward and backward (float64, 1e-12); and the one Module base."""

import numpy as np
import pytest

from rnnkit import nn
from rnnkit.nn import Module

T, B, I, H = 5, 3, 4, 6
VARIANTS = {
    "rnn_tanh": (nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (nn.LSTM, {}),
    "lstm_proj": (nn.LSTM, {"proj_size": 4}),
    "gru": (nn.GRU, {}),
    "gru_before": (nn.GRU, {"reset_after": False}),
}


def _module(kind, num_layers, **kw):
    cls, opts = VARIANTS[kind]
    return cls(I, H, num_layers=num_layers, dtype=np.float64, seed=3, **opts, **kw)


def _state(m, rng, scale=0.5):
    L, H_out = m.num_layers, m.proj_size or m.hidden_size
    h = scale * rng.standard_normal((L, B, H_out))
    return (h, scale * rng.standard_normal((L, B, H))) if isinstance(m, nn.LSTM) else h


def _close(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y)
        return
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("kind", list(VARIANTS))
def test_step_equals_sequence_forward_and_backward(kind, num_layers, rng):
    m = _module(kind, num_layers)
    x = rng.standard_normal((T, B, I))
    s0 = _state(m, rng)
    out, final = m(x, s0)
    dout = rng.standard_normal(out.shape)
    dfinal = _state(m, rng, 1.0)
    m.zero_grad()
    dx, dinit = m.backward(dout, dfinal)
    grads = {n: p.grad.copy() for n, p in m.named_parameters()}

    m.zero_grad()
    state, outs = s0, []
    for t in range(T):
        o, state = m.step(x[t], state)
        outs.append(o)
    _close(np.stack(outs), out)
    _close(state, final)

    dstate, dxs = dfinal, []
    for t in reversed(range(T)):
        dx_t, dstate = m.step_backward(dout[t], dstate)
        dxs.append(dx_t)
    _close(np.stack(dxs[::-1]), dx)
    _close(dstate, dinit)
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, grads[n], rtol=1e-12, atol=1e-12, err_msg=n)
    with pytest.raises(RuntimeError, match="step_backward: no step to differentiate"):
        m.step_backward(dout[0], None)


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_step_from_zeros_and_none_gradients(kind, rng):
    m = _module(kind, 2)
    x = rng.standard_normal((T, B, I))
    out, final = m(x)
    state = None
    for t in range(T):
        o, state = m.step(x[t], state)
    _close(o, out[-1])
    _close(state, final)
    dx_t, dstate = m.step_backward(None, None)  # nothing flows: zeros
    assert not dx_t.any()
    for s in dstate if isinstance(dstate, tuple) else (dstate,):
        assert not s.any()


def test_step_keeps_nothing_in_eval_mode_and_clear_steps(rng):
    m = _module("lstm", 2)
    x = rng.standard_normal((B, I))
    m.eval()
    o1, s1 = m.step(x, None)
    with pytest.raises(RuntimeError, match="step_backward: no step"):
        m.step_backward(o1, None)
    m.train()
    o2, s2 = m.step(x, None)
    _close(o1, o2)
    _close(s1, s2)
    m.step(x, s2)
    m.clear_steps()
    with pytest.raises(RuntimeError, match="no step"):
        m.step_backward(None, None)
    m.step(x, None, keep=False)
    with pytest.raises(RuntimeError, match="no step"):
        m.step_backward(None, None)


def test_step_errors(rng):
    bi = nn.GRU(I, H, bidirectional=True, dtype=np.float64)
    with pytest.raises(ValueError, match="bidirectional module cannot run step by step"):
        bi.step(np.zeros((B, I)), None)
    m = _module("lstm", 2)
    with pytest.raises(ValueError, match=r"x_t: expected shape \(B, I\) with I = 4"):
        m.step(np.zeros((B, I + 1)), None)
    with pytest.raises(TypeError, match="x_t: expected dtype float64"):
        m.step(np.zeros((B, I), np.float32), None)
    with pytest.raises(ValueError, match=r"h: expected shape \(num_layers\*D, B, H\)"):
        m.step(np.zeros((B, I)), (np.zeros((1, B, H)), None))
    with pytest.raises(TypeError, match="state: expected a pair"):
        m.step(np.zeros((B, I)), np.zeros((2, B, H)))
    m.step(np.zeros((B, I)), None)
    with pytest.raises(ValueError, match=r"dout_t: expected shape \(B, H_out\)"):
        m.step_backward(np.zeros((B, H + 1)), None)


def test_every_module_with_parameters_is_a_module():
    from rnnkit import models

    for obj in (
        nn.RNN(2, 3),
        nn.LSTM(2, 3, proj_size=1),
        nn.GRU(2, 3),
        nn.Linear(2, 3),
        nn.Embedding(4, 2),
        nn.AdditiveAttention(3, 3),
        nn.GeneralAttention(3, 2),
        models.SequenceRegressor("lstm", 2, 3),
        models.RecurrentDecoder(3, vocab_size=5),
        models.Seq2Seq(5, 6, embedding_dim=2, hidden_size=4),
    ):
        assert isinstance(obj, Module), type(obj)
    reg = models.SequenceRegressor("gru", 2, 3, num_layers=2)
    names = [n for n, _ in reg.named_parameters()]
    assert names[0] == "rnn.weight_ih_l0" and names[-1] == "head.bias"
    reg.eval()
    assert not reg.rnn.training and not reg.head.training
    sd = reg.state_dict()
    with pytest.raises(ValueError, match=r"rnn.weight_hh_l1: expected shape \(3\*H, H\) = \(9, 3\)"):
        reg.load_state_dict(dict(sd, **{"rnn.weight_hh_l1": np.zeros((9, 2))}))

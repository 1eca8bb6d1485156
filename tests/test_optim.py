"""Tests of ``rnnkit.optim``: SGD (momentum, dampening, Nesterov, weight decay), Adam
(AMSGrad) and AdamW against updates computed by hand here, and against torch.optim over
several steps (where torch is importable); state_dict round trips; errors."""

import math

import numpy as np
import pytest

from rnnkit import layers, optim
from rnnkit.nn import Parameter

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")


def param(values, grad, dtype=np.float64):
    p = Parameter("p", np.array(values, dtype=dtype))
    p.grad[...] = grad
    return p


def test_sgd_plain_by_hand():
    p = param([1.0, -2.0], [0.5, 0.25])
    optim.SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [1.0 - 0.05, -2.0 - 0.025], rtol=1e-15)


def test_sgd_momentum_weight_decay_by_hand():
    p = param([1.0], [0.5])
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.step()  # g = 0.5 + 0.01 = 0.51; buf = 0.51; p = 1 - 0.051
    np.testing.assert_allclose(p.data, [0.949], rtol=1e-15)
    opt.step()  # g = 0.5 + 0.00949 = 0.50949; buf = 0.9*0.51 + 0.50949 = 0.96849
    np.testing.assert_allclose(p.data, [0.949 - 0.096849], rtol=1e-14)


def test_sgd_nesterov_dampening_by_hand():
    p = param([0.0], [1.0])
    opt = optim.SGD([p], lr=1.0, momentum=0.5, nesterov=True)
    opt.step()  # buf = 1; g = 1 + 0.5 * 1 = 1.5
    opt.step()  # buf = 0.5 + 1 = 1.5; g = 1 + 0.75 = 1.75
    np.testing.assert_allclose(p.data, [-3.25], rtol=1e-15)
    q = param([0.0], [1.0])
    opt = optim.SGD([q], lr=1.0, momentum=0.5, dampening=0.5)
    opt.step()  # buf = 1 (no dampening on the first step)
    opt.step()  # buf = 0.5 + 0.5 * 1 = 1
    np.testing.assert_allclose(q.data, [-2.0], rtol=1e-15)


def test_adam_by_hand():
    p = param([1.0, 2.0], [0.1, -0.3])
    opt = optim.Adam([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    m = v = np.zeros(2)
    expect = np.array([1.0, 2.0])
    g = np.array([0.1, -0.3])
    for t in (1, 2, 3):
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        mhat, vhat = m / (1 - 0.9**t), v / (1 - 0.999**t)
        expect = expect - 0.01 * mhat / (np.sqrt(vhat) + 1e-8)
        np.testing.assert_allclose(p.data, expect, rtol=1e-12)
    # the first Adam step moves each coordinate by ~lr * sign(g)
    q = param([0.0], [123.0])
    optim.Adam([q], lr=0.01).step()
    np.testing.assert_allclose(q.data, [-0.01], rtol=1e-6)


def test_adamw_decoupled_decay_by_hand():
    p = param([2.0], [0.0])
    optim.AdamW([p], lr=0.1, weight_decay=0.5).step()  # zero grad: only the decay acts
    np.testing.assert_allclose(p.data, [2.0 * (1 - 0.05)], rtol=1e-15)
    q = param([2.0], [0.0])
    optim.Adam([q], lr=0.1, weight_decay=0.5).step()  # L2: g = 1, first step ~ -lr
    np.testing.assert_allclose(q.data, [1.9], rtol=1e-7)


def test_amsgrad_keeps_the_max():
    p = param([0.0], [1.0])
    opt = optim.Adam([p], lr=0.1, amsgrad=True)
    opt.step()
    p.grad[...] = 0.0
    opt.step()
    assert opt.state[0]["max_exp_avg_sq"][0] == pytest.approx(0.001)
    assert opt.state[0]["exp_avg_sq"][0] < 0.001


# kind -> (rnnkit class, torch class, keywords)
CASES = {
    "sgd": (optim.SGD, "SGD", dict(lr=0.1)),
    "sgd_momentum_wd": (optim.SGD, "SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-2)),
    "sgd_nesterov": (optim.SGD, "SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    "sgd_dampening": (optim.SGD, "SGD", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    "adam": (optim.Adam, "Adam", dict(lr=1e-2)),
    "adam_wd_amsgrad": (
        optim.Adam,
        "Adam",
        dict(lr=1e-2, weight_decay=0.1, amsgrad=True, betas=(0.8, 0.99), eps=1e-6),
    ),
    "adamw": (optim.AdamW, "AdamW", dict(lr=1e-2, weight_decay=0.1)),
}


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", list(CASES))
def test_matches_torch(kind, dtype, rng):
    cls, tname, kw = CASES[kind]
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    init = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    ps = [Parameter(f"p{k}", a.astype(dtype)) for k, a in enumerate(init)]
    ts = [torch.tensor(a, dtype=tdt, requires_grad=True) for a in init]
    opt = cls(ps, **kw)
    topt = getattr(torch.optim, tname)(ts, **kw)
    for _ in range(5):
        grads = [rng.standard_normal(a.shape) for a in init]
        for p, t, g in zip(ps, ts, grads):
            p.grad[...] = g
            t.grad = torch.tensor(g, dtype=tdt)
        opt.step()
        topt.step()
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for p, t in zip(ps, ts):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=tol, atol=tol)


def test_module_params_zero_grad_and_state_dict(rng):
    lin = layers.Linear(3, 2, dtype=np.float64, seed=0)
    opt = optim.Adam(lin, lr=0.1)
    assert opt.params == lin.parameters()
    for p in lin.parameters():
        p.grad[...] = rng.standard_normal(p.shape)
    opt.step()
    sd = opt.state_dict()
    assert int(sd["step"]) == 1 and "state.0.exp_avg" in sd
    # a fresh optimiser loaded from the state continues identically
    lin2 = layers.Linear(3, 2, dtype=np.float64, seed=0)
    lin2.load_state_dict(lin.state_dict())
    opt2 = optim.Adam(lin2, lr=0.1)
    opt2.load_state_dict(sd)
    for a, b in zip(lin.parameters(), lin2.parameters()):
        b.grad[...] = a.grad
    opt.step()
    opt2.step()
    for a, b in zip(lin.parameters(), lin2.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    opt.zero_grad()
    assert not any(p.grad.any() for p in lin.parameters())


def test_errors():
    p = param([1.0], [0.0])
    with pytest.raises(ValueError, match="lr: expected a number >= 0"):
        optim.SGD([p], lr=-1)
    with pytest.raises(TypeError, match="lr: expected a finite number"):
        optim.SGD([p], lr=math.nan)
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(TypeError, match=r"params\[0\]: expected a Parameter"):
        optim.Adam([np.zeros(3)])
    with pytest.raises(ValueError, match="params: got an empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(TypeError, match="betas"):
        optim.Adam([p], betas=0.9)
    with pytest.raises(ValueError, match="state: unexpected key"):
        optim.SGD([p], lr=0.1).load_state_dict({"bogus": 1})

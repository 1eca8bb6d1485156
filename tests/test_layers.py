"""Tests of the feed-forward building blocks ``rnnkit.layers``: Linear, Embedding, Dropout,
CrossEntropyLoss, MSELoss, and the Module base (parameters, state dicts, train/eval).

Each layer: forward and backward against a plain NumPy oracle written here (and torch where
importable), gradients by central finite differences in float64, float32 runs, errors.
"""

import numpy as np
import pytest

from conftest import finite_difference
from rnnkit import layers
from rnnkit import reference as ref
from rnnkit.nn import Parameter

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def close(a, b, dtype, k=1.0):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    scale = max(1.0, np.abs(b).max(initial=0))
    np.testing.assert_allclose(a, b, rtol=0, atol=k * TOL[np.dtype(dtype).type] * scale * 10)


# ============================================================================ Linear


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead", [(4,), (3, 2), ()])
def test_linear_oracle(dtype, lead, rng):
    lin = layers.Linear(5, 3, dtype=dtype, seed=1)
    x = rng.standard_normal(lead + (5,)).astype(dtype)
    y = lin(x)
    assert y.dtype == dtype and y.shape == lead + (3,)
    W, b = lin.weight.data.astype(np.float64), lin.bias.data.astype(np.float64)
    close(y, x.astype(np.float64) @ W.T + b, dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = lin.backward(dy)
    x2, dy2 = x.reshape(-1, 5).astype(np.float64), dy.reshape(-1, 3).astype(np.float64)
    close(dx, dy.astype(np.float64) @ W, dtype)
    close(lin.weight.grad, dy2.T @ x2, dtype)
    close(lin.bias.grad, dy2.sum(0), dtype)
    assert dx.dtype == dtype and lin.weight.grad.dtype == dtype


def test_linear_finite_differences(rng):
    lin = layers.Linear(4, 3, dtype=np.float64, seed=0)
    x = rng.standard_normal((2, 3, 4))
    c = rng.standard_normal((2, 3, 3))

    def f():
        return float((lin.apply(x) * c).sum())

    lin(x)
    dx = lin.backward(c)
    close(dx, finite_difference(f, x), np.float64, k=1e4)
    close(lin.weight.grad, finite_difference(f, lin.weight.data), np.float64, k=1e4)
    close(lin.bias.grad, finite_difference(f, lin.bias.data), np.float64, k=1e4)


def test_linear_no_bias_accumulates_and_zero_grad(rng):
    lin = layers.Linear(3, 2, bias=False, dtype=np.float64, seed=0)
    assert [n for n, _ in lin.named_parameters()] == ["weight"]
    x = rng.standard_normal((5, 3))
    dy = rng.standard_normal((5, 2))
    lin(x)
    lin.backward(dy)
    g1 = lin.weight.grad.copy()
    lin(x)
    lin.backward(dy)
    close(lin.weight.grad, 2 * g1, np.float64)
    lin.zero_grad()
    assert not lin.weight.grad.any()


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_matches_torch(dtype, rng):
    lin = layers.Linear(6, 4, dtype=dtype, seed=0)
    tl = torch.nn.Linear(6, 4).to(torch.float64 if dtype == np.float64 else torch.float32)
    lin.load_state_dict({k: v.detach().numpy() for k, v in tl.state_dict().items()})
    x = rng.standard_normal((3, 2, 6)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = tl(xt)
    dy = rng.standard_normal(yt.shape).astype(dtype)
    yt.backward(torch.tensor(dy))
    close(lin(x), yt.detach().numpy(), dtype)
    close(lin.backward(dy), xt.grad.numpy(), dtype)
    close(lin.weight.grad, tl.weight.grad.numpy(), dtype)
    close(lin.bias.grad, tl.bias.grad.numpy(), dtype)


def test_linear_errors():
    lin = layers.Linear(3, 2)
    with pytest.raises(TypeError, match="x: expected dtype float32"):
        lin(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="x: expected shape"):
        lin(np.zeros((2, 4), np.float32))
    with pytest.raises(RuntimeError, match="no forward"):
        layers.Linear(3, 2).backward(np.zeros((1, 2), np.float32))
    lin(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="dy: expected shape"):
        lin.backward(np.zeros((2, 3), np.float32))
    lin.eval()
    lin(np.zeros((2, 3), np.float32))
    with pytest.raises(RuntimeError, match="eval mode"):
        lin.backward(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="in_features"):
        layers.Linear(0, 2)
    with pytest.raises(TypeError, match="out_features"):
        layers.Linear(2, 2.5)
    with pytest.raises(TypeError, match="dtype"):
        layers.Linear(2, 2, dtype=np.float16)


# ============================================================================ Embedding


def test_scatter_add_rows_matches_add_at(rng):
    idx = rng.integers(0, 7, 200)
    rows = rng.standard_normal((200, 3))
    out = layers.scatter_add_rows(np.zeros((7, 3)), idx, rows)
    expect = np.zeros((7, 3))
    np.add.at(expect, idx, rows)
    close(out, expect, np.float64)
    assert layers.scatter_add_rows(np.ones((2, 3)), np.zeros(0, int), np.zeros((0, 3))).sum() == 6


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_oracle(dtype, padding_idx, rng):
    emb = layers.Embedding(6, 4, padding_idx=padding_idx, dtype=dtype, seed=0)
    if padding_idx is not None:
        assert not emb.weight.data[padding_idx].any()
    idx = rng.integers(0, 6, (5, 3))  # (T, B) with duplicates
    out = emb(idx)
    assert out.shape == (5, 3, 4) and out.dtype == dtype
    close(out, emb.weight.data[idx], dtype)
    dy = rng.standard_normal(out.shape).astype(dtype)
    assert emb.backward(dy) is None
    expect = np.zeros((6, 4))
    for t in range(5):  # the loop oracle
        for b in range(3):
            if idx[t, b] != padding_idx:
                expect[idx[t, b]] += dy[t, b]
    close(emb.weight.grad, expect, dtype)


def test_embedding_finite_differences(rng):
    emb = layers.Embedding(5, 3, dtype=np.float64, seed=0)
    idx = np.array([[0, 1], [1, 4], [0, 0]])
    c = rng.standard_normal((3, 2, 3))
    emb(idx)
    emb.backward(c)
    close(
        emb.weight.grad,
        finite_difference(lambda: float((emb.weight.data[idx] * c).sum()), emb.weight.data),
        np.float64,
        k=1e4,
    )


@needs_torch
def test_embedding_matches_torch(rng):
    emb = layers.Embedding(7, 3, padding_idx=0, dtype=np.float64, seed=0)
    te = torch.nn.Embedding(7, 3, padding_idx=0).double()
    emb.load_state_dict({"weight": te.weight.detach().numpy()})
    idx = rng.integers(0, 7, (4, 5))
    out = te(torch.tensor(idx))
    dy = rng.standard_normal(out.shape)
    out.backward(torch.tensor(dy))
    close(emb(idx), out.detach().numpy(), np.float64)
    emb.backward(dy)
    close(emb.weight.grad, te.weight.grad.numpy(), np.float64)


def test_embedding_errors():
    emb = layers.Embedding(4, 2)
    with pytest.raises(TypeError, match="idx: expected an integer array"):
        emb(np.zeros(3))
    with pytest.raises(ValueError, match=r"idx: expected indices in \[0, V\)"):
        emb(np.array([0, 4]))
    with pytest.raises(ValueError, match="padding_idx"):
        layers.Embedding(4, 2, padding_idx=4)
    emb(np.array([1, 2]))
    with pytest.raises(ValueError, match="dy: expected shape"):
        emb.backward(np.zeros((3, 2), np.float32))


# ============================================================================ Dropout


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout(dtype, rng):
    x = rng.standard_normal((50, 40)).astype(dtype)
    d = layers.Dropout(0.3, seed=0)
    y = d(x)
    kept = y != 0
    assert 0.6 < kept.mean() < 0.8
    close(y[kept], x[kept] / 0.7, dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    dx = d.backward(dy)
    close(dx, np.where(kept, dy / 0.7, 0), dtype)
    assert dx.dtype == dtype
    # reproducible from the seed; eval and p = 0 are the identity
    np.testing.assert_array_equal(layers.Dropout(0.3, seed=0)(x), y)
    ev = layers.Dropout(0.3).eval()(x)
    assert np.shares_memory(ev, x) and np.array_equal(ev, x)  # no copy
    d0 = layers.Dropout(0.0)
    np.testing.assert_array_equal(d0(x), x)
    np.testing.assert_array_equal(d0.backward(dy), dy)
    assert not layers.Dropout(1.0)(x).any()


def test_dropout_finite_differences(rng):
    d = layers.Dropout(0.5, seed=3)
    x = rng.standard_normal((4, 3))
    c = rng.standard_normal((4, 3))
    y = d(x)
    mask = y / np.where(x == 0, 1, x)
    dx = d.backward(c)
    close(dx, finite_difference(lambda: float((x * mask * c).sum()), x), np.float64, k=1e4)


def test_dropout_errors():
    with pytest.raises(ValueError, match="p: expected a probability"):
        layers.Dropout(1.5)
    with pytest.raises(TypeError, match="x: expected a float32 or float64"):
        layers.Dropout(0.5)(np.zeros(3, int))


# ============================================================================ losses


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_oracle(dtype, reduction, rng):
    ce = layers.CrossEntropyLoss(ignore_index=-1, reduction=reduction)
    logits = rng.standard_normal((4, 3, 6)).astype(dtype)  # (T, B, V)
    targets = rng.integers(0, 6, (4, 3))
    targets[0, 1] = targets[2, 2] = -1  # padding
    loss = ce(logits, targets)
    r = ref.softmax_cross_entropy(
        logits.reshape(-1, 6), targets.reshape(-1), ignore_index=-1, reduction=reduction
    )
    close(loss, np.reshape(r.loss, targets.shape) if reduction == "none" else r.loss, dtype)
    d = ce.backward()
    assert d.shape == logits.shape and d.dtype == dtype
    close(d, r.dlogits.reshape(logits.shape), dtype)
    assert not d[0, 1].any() and not d[2, 2].any()


def test_cross_entropy_finite_differences(rng):
    logits = rng.standard_normal((3, 2, 5))
    targets = rng.integers(0, 5, (3, 2))
    targets[1, 0] = -100
    ce = layers.CrossEntropyLoss()
    ce(logits, targets)
    close(ce.backward(), finite_difference(lambda: float(ce(logits, targets)), logits), np.float64, k=1e4)
    # reduction "none" with a per-entry weight
    ce = layers.CrossEntropyLoss(reduction="none")
    w = rng.random((3, 2))
    ce(logits, targets)
    g = ce.backward(w)
    close(g, finite_difference(lambda: float((ce(logits, targets) * w).sum()), logits), np.float64, k=1e4)


@needs_torch
def test_cross_entropy_matches_torch(rng):
    logits = rng.standard_normal((7, 5))
    targets = rng.integers(0, 5, 7)
    targets[3] = -100
    lt = torch.tensor(logits, requires_grad=True)
    lo = torch.nn.functional.cross_entropy(lt, torch.tensor(targets))
    lo.backward()
    ce = layers.CrossEntropyLoss()
    close(ce(logits, targets), lo.item(), np.float64)
    close(ce.backward(), lt.grad.numpy(), np.float64)


def test_cross_entropy_errors():
    ce = layers.CrossEntropyLoss()
    with pytest.raises(ValueError, match="targets: expected shape"):
        ce(np.zeros((3, 4), np.float32), np.zeros(2, int))
    with pytest.raises(TypeError, match="targets: expected an integer array"):
        ce(np.zeros((3, 4), np.float32), np.zeros(3))
    with pytest.raises(ValueError, match="reduction"):
        layers.CrossEntropyLoss(reduction="avg")
    with pytest.raises(TypeError, match="ignore_index"):
        layers.CrossEntropyLoss(ignore_index=1.5)
    with pytest.raises(RuntimeError):
        layers.CrossEntropyLoss().backward()


@pytest.mark.parametrize("dtype", DTYPES)
def test_mse(dtype, rng):
    p = rng.standard_normal((4, 3)).astype(dtype)
    t = rng.standard_normal((4, 3)).astype(dtype)
    m = layers.MSELoss()
    close(m(p, t), np.mean((p.astype(np.float64) - t) ** 2), dtype)
    close(m.backward(), 2 * (p.astype(np.float64) - t) / p.size, dtype)
    ms = layers.MSELoss("sum")
    p64, t64 = p.astype(np.float64), t.astype(np.float64)
    ms(p64, t64)
    close(ms.backward(), finite_difference(lambda: float(ms(p64, t64)), p64), np.float64, k=1e4)
    with pytest.raises(ValueError, match="target: expected shape"):
        m(p, t[:2])
    with pytest.raises(TypeError, match="target: expected dtype"):
        m(p, t.astype(np.float64) if dtype == np.float32 else t.astype(np.float32))


# ============================================================================ Module base


class _Two(layers.Module):
    def __init__(self):
        self.dtype = np.dtype(np.float64)
        self.scale = self._param("scale", np.ones(2))
        self.first = layers.Linear(3, 2, dtype=np.float64, seed=0)
        self.second = layers.Linear(2, 1, dtype=np.float64, seed=1)


def test_module_composition_state_dict_and_modes():
    m = _Two()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["scale", "first.weight", "first.bias", "second.weight", "second.bias"]
    assert all(isinstance(p, Parameter) for p in m.parameters())
    sd = m.state_dict()
    sd["first.weight"] = sd["first.weight"] + 1
    m2 = _Two()
    m2.load_state_dict(sd)
    np.testing.assert_array_equal(m2.first.weight.data, sd["first.weight"])
    with pytest.raises(ValueError, match="missing keys"):
        m2.load_state_dict({"scale": np.ones(2)})
    with pytest.raises(ValueError, match="first.bias: expected shape"):
        m2.load_state_dict({**sd, "first.bias": np.ones(3)})
    assert m2.load_state_dict({"scale": np.zeros(2)}, strict=False)[0][0] == "first.weight"
    m.eval()
    assert not m.first.training and not m.training
    m.train()
    assert m.second.training
    for p in m.parameters():
        p.grad += 1
    m.zero_grad()
    assert not any(p.grad.any() for p in m.parameters())

"""The cell modules rnnkit.nn.RNNCell / LSTMCell / GRUCell: one step with torch.nn's interface.

Outputs and every gradient equal torch.nn's cells (float64, 1e-12; the reset-before GRU, which
torch lacks, equals the NumPy oracle), torch's state_dict loads both ways, unbatched input,
eval mode (no cache, the same results bit for bit), gradient accumulation and bad inputs.
"""

import threading

import numpy as np
import pytest

import rnnkit.reference as ref
from conftest import CELLS, TORCH_CELLS, assert_close, cell_backward, cell_forward, n_states
from rnnkit import nn

B, I, H = 3, 4, 5


def cell_class(cell):
    """The rnnkit.nn cell module of a variant: nn.RNNCell, nn.LSTMCell or nn.GRUCell."""
    return getattr(nn, CELLS[cell][0].upper() + "Cell")


def make_cell(cell, bias=True, dtype=np.float64, seed=0):
    return cell_class(cell)(I, H, bias, dtype=dtype, seed=seed, **CELLS[cell][1])


def torch_cell(cell, bias=True):
    """torch.nn.RNNCell / LSTMCell / GRUCell of a variant in TORCH_CELLS, float64."""
    torch = pytest.importorskip("torch")
    family, variant = CELLS[cell]
    cls = getattr(torch.nn, family.upper() + "Cell")
    kw = {k: v for k, v in variant.items() if k != "reset_after"}
    return cls(I, H, bias=bias, dtype=torch.float64, **kw)


def random_states(cell, rng, batch=B, scale=0.5):
    shape = (H,) if batch is None else (batch, H)
    return tuple(scale * rng.standard_normal(shape) for _ in range(n_states(cell)))


def run(m, cell, x, states):
    """-> tuple of next states; states None or a tuple (one per state)."""
    if n_states(cell) == 2:
        return tuple(m(x, states))
    return (m(x, None if states is None else states[0]),)


def run_backward(m, cell, d_next):
    """-> (dx, tuple of state gradients)."""
    dx, d_prev = m.backward(*d_next)
    return dx, (tuple(d_prev) if n_states(cell) == 2 else (d_prev,))


def grads(m):
    return {n: p.grad.copy() for n, p in m.named_parameters()}


def torch_step(tc, cell, x, states, d_next):
    """torch's cell forward and backward -> (next states, dx, state gradients, param grads)."""
    import torch

    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states]
    out = tc(xt, tuple(st)) if len(st) == 2 else (tc(xt, st[0]),)
    loss = sum((o * torch.tensor(d)).sum() for o, d in zip(out, d_next))
    loss.backward()
    return (
        tuple(o.detach().numpy() for o in out),
        xt.grad.numpy(),
        tuple(s.grad.numpy() for s in st),
        {n: p.grad.numpy() for n, p in tc.named_parameters()},
    )


# ----------------------------------------------------------------------------- against torch


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_forward_and_backward_equal_torch(cell, bias, rng):
    tc = torch_cell(cell, bias)
    m = make_cell(cell, bias)
    m.load_state_dict(tc.state_dict())
    x = rng.standard_normal((B, I))
    states = random_states(cell, rng)
    d_next = random_states(cell, rng, scale=1.0)
    t_next, t_dx, t_dstates, t_grads = torch_step(tc, cell, x, states, d_next)

    nxt = run(m, cell, x, states)
    for a, e in zip(nxt, t_next):
        assert_close(a, e, err_msg="next state")
    dx, dstates = run_backward(m, cell, d_next)
    assert_close(dx, t_dx, err_msg="dx")
    for a, e in zip(dstates, t_dstates):
        assert_close(a, e, err_msg="dstate")
    assert set(t_grads) == {n for n, _ in m.named_parameters()}
    for n, p in m.named_parameters():
        assert_close(p.grad, t_grads[n], err_msg=n)


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_float32_equals_torch(cell, rng):
    torch = pytest.importorskip("torch")
    tc = torch_cell(cell).to(torch.float32)
    m = make_cell(cell, dtype=np.float32)
    m.load_state_dict(tc.state_dict())
    x = rng.standard_normal((B, I)).astype(np.float32)
    states = tuple(s.astype(np.float32) for s in random_states(cell, rng))
    d_next = tuple(d.astype(np.float32) for d in random_states(cell, rng, scale=1.0))
    t_next, t_dx, t_dstates, t_grads = torch_step(tc, cell, x, states, d_next)
    for a, e in zip(run(m, cell, x, states), t_next):
        assert_close(a, e, err_msg="next state")
    dx, dstates = run_backward(m, cell, d_next)
    for a, e in zip((dx, *dstates), (t_dx, *t_dstates)):
        assert_close(a, e)
    for n, p in m.named_parameters():
        assert_close(p.grad, t_grads[n], err_msg=n)


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_unbatched_and_zero_state_equal_torch(cell, rng):
    torch = pytest.importorskip("torch")
    tc = torch_cell(cell)
    m = make_cell(cell)
    m.load_state_dict(tc.state_dict())
    x = rng.standard_normal(I)
    with torch.no_grad():
        t_out = tc(torch.tensor(x))
    t_out = tuple(o.numpy() for o in t_out) if n_states(cell) == 2 else (t_out.numpy(),)
    out = run(m, cell, x, None)
    assert [o.shape for o in out] == [(H,)] * n_states(cell)
    for a, e in zip(out, t_out):
        assert_close(a, e)


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_state_dict_round_trip_with_torch(cell):
    torch = pytest.importorskip("torch")
    tc = torch_cell(cell)
    m = make_cell(cell, seed=1)
    assert list(m.state_dict()) == list(tc.state_dict())
    for name, p in m.named_parameters():
        assert p.shape == tuple(tc.state_dict()[name].shape), name

    m.load_state_dict(tc.state_dict())  # torch -> rnnkit, unchanged
    for name, t in tc.state_dict().items():
        np.testing.assert_array_equal(m.state_dict()[name], t.numpy())

    other = make_cell(cell, seed=2)
    tc.load_state_dict({k: torch.from_numpy(a) for k, a in other.state_dict().items()})  # back
    for name, a in other.state_dict().items():
        np.testing.assert_array_equal(tc.state_dict()[name].numpy(), a)


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_bias_false_has_no_bias_parameters(cell):
    m = make_cell(cell, bias=False)
    assert [n for n, _ in m.named_parameters()] == ["weight_ih", "weight_hh"]
    assert list(m.state_dict()) == list(torch_cell(cell, bias=False).state_dict())


# ----------------------------------------------------------------------------- against the oracle

_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # torch's order


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cell", list(CELLS))
def test_forward_and_backward_equal_the_oracle(cell, bias, rng):
    """Every variant, the reset-before GRU included (torch has none)."""
    m = make_cell(cell, bias, seed=4)
    params = tuple(None if p is None else p.data for p in (m._params.get(k) for k in _KEYS))
    x = rng.standard_normal((B, I))
    states = random_states(cell, rng)
    d_next = random_states(cell, rng, scale=1.0)
    r_next, cache = cell_forward(ref, cell, x, states, params)
    g = cell_backward(ref, cell, d_next, cache)

    for a, e in zip(run(m, cell, x, states), r_next):
        assert_close(a, e, err_msg="next state")
    dx, dstates = run_backward(m, cell, d_next)
    assert_close(dx, g.dx, err_msg="dx")
    for a, e in zip(dstates, (g.dh, g.dc) if n_states(cell) == 2 else (g.dh,)):
        assert_close(a, e, err_msg="dstate")
    for name, field in zip(_KEYS, ("dW_ih", "dW_hh", "db_ih", "db_hh")):
        if name in m._params:
            assert_close(m._params[name].grad, getattr(g, field), err_msg=name)
        else:
            assert getattr(g, field) is None


# ----------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("cell", list(CELLS))
def test_unbatched_equals_batch_of_one(cell, rng):
    x = rng.standard_normal(I)
    states = random_states(cell, rng, batch=None)
    d_next = random_states(cell, rng, batch=None, scale=1.0)
    m = make_cell(cell)
    out = run(m, cell, x, states)
    dx, dstates = run_backward(m, cell, d_next)
    g = grads(m)

    m1 = make_cell(cell)
    out1 = run(m1, cell, x[None], tuple(s[None] for s in states))
    dx1, dstates1 = run_backward(m1, cell, tuple(d[None] for d in d_next))
    assert dx.shape == (I,) and all(o.shape == (H,) for o in (*out, *dstates))
    for a, e in zip((*out, dx, *dstates), (*out1, dx1, *dstates1)):
        np.testing.assert_array_equal(a, e[0])
    for n, p in m1.named_parameters():
        np.testing.assert_array_equal(g[n], p.grad, err_msg=n)


@pytest.mark.parametrize("cell", list(CELLS))
def test_none_state_is_zeros_and_none_gradient_is_zero(cell, rng):
    m = make_cell(cell)
    x = rng.standard_normal((B, I))
    zeros = tuple(np.zeros((B, H)) for _ in range(n_states(cell)))
    out_none = run(m, cell, x, None)
    dx_none, ds_none = run_backward(m, cell, (None,) * n_states(cell))
    g_none = grads(m)
    m.zero_grad()
    out = run(m, cell, x, zeros)
    dx, ds = run_backward(m, cell, zeros)
    for a, e in zip((*out_none, dx_none, *ds_none), (*out, dx, *ds)):
        np.testing.assert_array_equal(a, e)
    assert not np.any(dx)
    for n, p in m.named_parameters():
        np.testing.assert_array_equal(g_none[n], p.grad, err_msg=n)
    if n_states(cell) == 2:  # either gradient may be None
        m.zero_grad()
        d = random_states(cell, rng, scale=1.0)
        run(m, cell, x, zeros)
        dx_h, (dh_h, dc_h) = m.backward(d[0], None)
        dx_b, (dh_b, dc_b) = m.backward(d[0], np.zeros((B, H)))
        np.testing.assert_array_equal(dx_h, dx_b)
        np.testing.assert_array_equal(dc_h, dc_b)


@pytest.mark.parametrize("batch", [1, B])
@pytest.mark.parametrize("cell", list(CELLS))
def test_eval_keeps_no_cache_and_gives_the_same_bits(cell, batch, rng):
    m = make_cell(cell)
    x = rng.standard_normal((batch, I))
    states = random_states(cell, rng, batch=batch)
    train_out = run(m, cell, x, states)
    assert m._cache is not None
    m.eval()
    assert m._cache is None
    eval_out = run(m, cell, x, states)
    assert m._cache is None
    for a, e in zip(eval_out, train_out):
        np.testing.assert_array_equal(a, e)
    name = type(m).__name__
    with pytest.raises(RuntimeError, match=rf"^{name}\.backward: the module is in eval mode"):
        m.backward(*(None,) * n_states(cell))
    m.train()
    with pytest.raises(RuntimeError, match=rf"^{name}\.backward: no forward to differentiate"):
        m.backward(*(None,) * n_states(cell))


@pytest.mark.parametrize("cell", list(CELLS))
def test_gradients_accumulate(cell, rng):
    m = make_cell(cell)
    xs = rng.standard_normal((2, B, I))
    states = [random_states(cell, rng) for _ in range(2)]
    ds = [random_states(cell, rng, scale=1.0) for _ in range(2)]
    single = []
    for k in range(2):
        m.zero_grad()
        run(m, cell, xs[k], states[k])
        run_backward(m, cell, ds[k])
        single.append(grads(m))

    m.zero_grad()  # two forward / backward pairs add up
    for k in range(2):
        run(m, cell, xs[k], states[k])
        run_backward(m, cell, ds[k])
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, single[0][n] + single[1][n], rtol=1e-12, atol=1e-14, err_msg=n)

    m.zero_grad()  # backward twice on one forward: twice the gradients, the same dx
    run(m, cell, xs[1], states[1])
    dx1, _ = run_backward(m, cell, ds[1])
    dx2, _ = run_backward(m, cell, ds[1])
    np.testing.assert_array_equal(dx1, dx2)
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * single[1][n], rtol=1e-12, atol=1e-14, err_msg=n)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_threads_share_a_cell(cell, rng):
    """Each thread's backward differentiates its own forward; the gradients add up."""
    m = make_cell(cell)
    xs = rng.standard_normal((4, B, I))
    ds = [random_states(cell, rng, scale=1.0) for _ in xs]
    expected = []
    for x, d in zip(xs, ds):
        run(m, cell, x, None)
        expected.append(run_backward(m, cell, d)[0])
    total = grads(m)
    m.zero_grad()
    results = [None] * len(xs)
    barrier = threading.Barrier(len(xs))

    def work(k):
        run(m, cell, xs[k], None)
        barrier.wait()  # every thread's forward before any backward
        results[k] = run_backward(m, cell, ds[k])[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, (a, e) in enumerate(zip(results, expected)):
        np.testing.assert_array_equal(a, e, err_msg=f"thread {k}")
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, total[n], rtol=1e-12, atol=1e-14, err_msg=n)


@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_steps_equal_the_sequence_module(cell, rng):
    """Stepping the cell over a sequence is the one-layer module's forward; re-running each
    step's forward before its backward, last step first, is its backward."""
    T = 4
    family, variant = CELLS[cell]
    seq = getattr(nn, family.upper())(I, H, dtype=np.float64, seed=7, **variant)
    m = make_cell(cell, seed=7)  # the same seed draws the same parameters as layer 0
    for name, p in m.named_parameters():
        np.testing.assert_array_equal(p.data, getattr(seq, name + "_l0").data, err_msg=name)
    x = rng.standard_normal((T, B, I))
    s0 = random_states(cell, rng)
    out, final = seq(x, tuple(s[None] for s in s0) if len(s0) == 2 else s0[0][None])
    dout = rng.standard_normal(out.shape)
    dx_seq, d_init = seq.backward(dout)

    states, history = s0, []
    for t in range(T):
        history.append(states)
        states = run(m, cell, x[t], states)
        assert_close(states[0], out[t], err_msg=f"step {t}")
    for a, e in zip(states, final if len(states) == 2 else (final,)):
        assert_close(a, e[0], err_msg="final state")
    d = tuple(np.zeros((B, H)) for _ in s0)
    dxs = []
    for t in reversed(range(T)):
        run(m, cell, x[t], history[t])
        dx, d = run_backward(m, cell, (d[0] + dout[t], *d[1:]))
        dxs.append(dx)
    assert_close(np.stack(dxs[::-1]), dx_seq, err_msg="dx")
    for a, e in zip(d, d_init if len(d) == 2 else (d_init,)):
        assert_close(a, e[0], err_msg="dstate")
    for name, p in m.named_parameters():
        assert_close(p.grad, getattr(seq, name + "_l0").grad, err_msg=name)


def test_seed_repr_and_options():
    a, b = nn.GRUCell(I, H, seed=3), nn.GRUCell(I, H, seed=3)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)
        assert p.dtype == np.float32
        assert np.abs(p.data).max() <= 1 / np.sqrt(H)
    assert repr(nn.RNNCell(I, H)) == "RNNCell(4, 5)"
    assert repr(nn.RNNCell(I, H, False, "relu", dtype=np.float64)) == (
        "RNNCell(4, 5, bias=False, nonlinearity='relu', dtype=float64)"
    )
    assert repr(nn.GRUCell(I, H, reset_after=False)) == "GRUCell(4, 5, reset_after=False)"
    assert repr(nn.LSTMCell(I, H)) == "LSTMCell(4, 5)"
    assert all(isinstance(cell_class(c)(I, H), nn.Module) for c in CELLS)


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda m: m(np.zeros((1, B, I))), ValueError, "x: expected 2 dimensions (B, I) or 1 (I,)"),
        (lambda m: m(np.zeros((B, I + 1))), ValueError, "x: expected input size I = 4 (last dimension)"),
        (lambda m: m(np.zeros(I + 1)), ValueError, "x: expected input size I = 4"),
        (lambda m: m(np.zeros((B, I), np.float32)), TypeError, "x: expected dtype float64"),
        (lambda m: m(np.zeros((B, I)), (np.zeros((B + 1, H)), None)), ValueError, "h: expected shape (B, H)"),
        (lambda m: m(np.zeros((B, I)), (None, np.zeros((B, H + 1)))), ValueError, "c: expected shape (B, H)"),
        (lambda m: m(np.zeros(I), (np.zeros((1, H)), None)), ValueError, "h: expected shape (H,) = (5,)"),
        (
            lambda m: m(np.zeros((B, I)), (np.zeros((B, H), np.float32), None)),
            TypeError,
            "h: expected dtype float64",
        ),
        (lambda m: m(np.zeros((B, I)), np.zeros((B, H))), TypeError, "hx: expected a pair (h, c)"),
        (lambda m: (m(np.zeros((B, I))), m.backward(np.zeros((B, H + 1))))[1], ValueError, "dh_next"),
        (lambda m: (m(np.zeros((B, I))), m.backward(None, np.zeros(H)))[1], ValueError, "dc_next"),
    ],
)
def test_bad_inputs_name_the_argument(call, exc, message):
    m = nn.LSTMCell(I, H, dtype=np.float64, seed=0)
    with pytest.raises(exc) as info:
        call(m)
    assert str(info.value).startswith(message), str(info.value)
    assert type(info.value) is exc


def test_bad_constructor_and_parameters():
    with pytest.raises(ValueError, match="^nonlinearity: "):
        nn.RNNCell(I, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="^hidden_size: "):
        nn.GRUCell(I, 0)
    with pytest.raises(TypeError, match="^bias: "):
        nn.LSTMCell(I, H, bias="yes")
    with pytest.raises(TypeError, match="^reset_after: "):
        nn.GRUCell(I, H, reset_after=None)
    m = nn.RNNCell(I, H, dtype=np.float64)
    m.weight_hh.data = np.zeros((H, H + 1))
    with pytest.raises(ValueError, match=r"^weight_hh: expected shape \(H, H\) = \(5, 5\)"):
        m(np.zeros((B, I)))
    m.weight_hh.data = np.zeros((H, H), np.float32)
    with pytest.raises(TypeError, match="^weight_hh: expected a float64 numpy array"):
        m(np.zeros((B, I)))
    with pytest.raises(ValueError, match=r"^weight_ih: expected shape \(3\*H, I\)"):
        nn.GRUCell(I, H).load_state_dict(
            {k: np.zeros((1,)) if k == "weight_ih" else a for k, a in nn.GRUCell(I, H).state_dict().items()}
        )

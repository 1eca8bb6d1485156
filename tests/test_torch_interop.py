"""rnnkit against PyTorch in float64: same weights, same results, to 1e-10 relative.

torch.nn.RNN / LSTM / GRU (single layer) get rnnkit's weights; forward outputs, final states
and every gradient (input, initial states, weights, biases) under a random cotangent must
agree. The reverse direction is checked as the second half of a bidirectional module, and
variable lengths through pack_padded_sequence(enforce_sorted=False).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rnnkit  # noqa: E402
from conftest import CELLS, TORCH_CELLS, make_params, n_states, torch_class  # noqa: E402

TOL = 1e-10
T, B, I, H = 5, 4, 3, 7
LENGTHS = np.array([3, 5, 1, 4])  # unsorted, includes T and 1

PARAM_NAMES = ("W_ih", "W_hh", "b_ih", "b_hh")
TORCH_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def assert_close(actual, expected, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=TOL, atol=TOL * scale, err_msg=what)


# ----------------------------------------------------------------------------- torch side


def torch_run(cell, directions, x, states, dy, d_finals, lengths, bias):
    """Run a torch module holding the given per-direction weights; return numpy results.

    directions: list of (W_ih, W_hh, b_ih, b_hh), one per direction (forward, then reverse).
    states: per state kind (h, c) a (D, B, H) array, or None. dy: (T, B, D*H).
    Returns (y, finals (D, B, H) each, dict name -> gradient) with gradient names
    "x", "h0", "c0", and "W_ih", ... suffixed by the direction index.
    """
    cls, kw = torch_class(cell)
    D = len(directions)
    mod = cls(I, H, num_layers=1, bias=bias, bidirectional=D == 2, **kw).double()
    with torch.no_grad():
        for d, params in enumerate(directions):
            suffix = "_reverse" if d else ""
            for tname, value in zip(TORCH_NAMES, params):
                if value is not None:
                    getattr(mod, tname + suffix).copy_(torch.from_numpy(value))

    xt = torch.tensor(x, requires_grad=True)
    st = [None if s is None else torch.tensor(s, requires_grad=True) for s in states]
    hx = None if st[0] is None else (tuple(st) if cell == "lstm" else st[0])
    inp = xt
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
    out, fin = mod(inp, hx)
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    fin = fin if cell == "lstm" else (fin,)

    wrt = {"x": xt}
    wrt.update({n: s for n, s in zip(("h0", "c0"), st) if s is not None})
    for d in range(D):
        suffix = "_reverse" if d else ""
        for name, tname in zip(PARAM_NAMES, TORCH_NAMES):
            p = getattr(mod, tname + suffix, None)
            if p is not None:
                wrt[f"{name}{d}"] = p
    grads = torch.autograd.grad(
        [out, *fin], list(wrt.values()), [torch.from_numpy(dy)] + [torch.from_numpy(g) for g in d_finals]
    )
    grads = {k: g.numpy() for k, g in zip(wrt, grads)}
    return out.detach().numpy(), [f.detach().numpy() for f in fin], grads


# ----------------------------------------------------------------------------- rnnkit side


def rnnkit_run(cell, params, x, states, dy, d_finals, lengths, reverse):
    """One direction through rnnkit -> (y, finals list, grads NamedTuple)."""
    family, kw = CELLS[cell]
    fwd = getattr(rnnkit, f"{family}_forward")
    bwd = getattr(rnnkit, f"{family}_backward")
    if family == "lstm":
        y, finals, ws = fwd(x, *states, *params, reverse=reverse, lengths=lengths)
    else:
        y, h_T, ws = fwd(x, *states, *params, reverse=reverse, lengths=lengths, **kw)
        finals = (h_T,)
    return y, list(finals), bwd(dy, *d_finals, ws)


def make_inputs(cell, D, with_states, rng):
    x = rng.standard_normal((T, B, I))
    states = [rng.standard_normal((D, B, H)) * 0.5 if with_states else None for _ in range(n_states(cell))]
    dy = rng.standard_normal((T, B, D * H))
    d_finals = [rng.standard_normal((D, B, H)) for _ in range(n_states(cell))]
    return x, states, dy, d_finals


def compare(cell, D, bias, with_states, lengths, rng):
    """Run torch with D directions and rnnkit once per direction; compare everything."""
    directions = [make_params(cell, I, H, np.float64, rng, bias) for _ in range(D)]
    x, states, dy, d_finals = make_inputs(cell, D, with_states, rng)
    y_t, fin_t, g_t = torch_run(cell, directions, x, states, dy, d_finals, lengths, bias)

    dx = np.zeros_like(x)
    for d, params in enumerate(directions):
        part = slice(d * H, (d + 1) * H)  # torch concatenates directions along features
        y, fin, g = rnnkit_run(
            cell,
            params,
            x,
            [None if s is None else s[d] for s in states],
            dy[:, :, part],
            [f[d] for f in d_finals],
            lengths,
            reverse=d == 1,
        )
        assert_close(y, y_t[:, :, part], f"y direction {d}")
        for k, f in enumerate(fin):
            assert_close(f, fin_t[k][d], f"final state {k} direction {d}")
        dx += g.dx
        if with_states:
            assert_close(g.dh0, g_t["h0"][d], f"dh0 direction {d}")
            if cell == "lstm":
                assert_close(g.dc0, g_t["c0"][d], f"dc0 direction {d}")
        for name in PARAM_NAMES:
            mine = getattr(g, "d" + name)
            if name.startswith("b") and not bias:
                assert mine is None, f"d{name} of a missing bias must be None"
            else:
                assert_close(mine, g_t[f"{name}{d}"], f"d{name} direction {d}")
    # both directions read x: torch's dx is the sum of the two
    assert_close(dx, g_t["x"], "dx")
    assert np.abs(g_t["x"]).max() > 0 and np.abs(g_t["W_hh0"]).max() > 0


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    "bias, with_states", [(True, True), (False, False)], ids=["full", "no_bias_no_state"]
)
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["dense", "packed"])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_unidirectional(cell, lengths, bias, with_states):
    compare(cell, 1, bias, with_states, lengths, np.random.default_rng(1))


@pytest.mark.parametrize(
    "bias, with_states", [(True, True), (False, False)], ids=["full", "no_bias_no_state"]
)
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["dense", "packed"])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_bidirectional_reverse_half(cell, lengths, bias, with_states):
    compare(cell, 2, bias, with_states, lengths, np.random.default_rng(2))


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_reverse_equals_torch_on_flipped_time(cell):
    """Without lengths, reverse=True is the forward module run on x[::-1], flipped back."""
    rng = np.random.default_rng(3)
    params = make_params(cell, I, H, np.float64, rng)
    x, states, dy, d_finals = make_inputs(cell, 1, True, rng)
    y_t, fin_t, g_t = torch_run(cell, [params], x[::-1].copy(), states, dy[::-1].copy(), d_finals, None, True)
    y, fin, g = rnnkit_run(
        cell, params, x, [s[0] for s in states], dy, [f[0] for f in d_finals], None, reverse=True
    )
    assert_close(y, y_t[::-1], "y")
    for k, f in enumerate(fin):
        assert_close(f, fin_t[k][0], f"final state {k}")
    assert_close(g.dx, g_t["x"][::-1], "dx")
    assert_close(g.dh0, g_t["h0"][0], "dh0")
    for name in PARAM_NAMES:
        assert_close(getattr(g, "d" + name), g_t[f"{name}0"], "d" + name)


@pytest.mark.parametrize("ignore_index", [-100, 1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_cross_entropy(reduction, ignore_index):
    rng = np.random.default_rng(4)
    N, C = 12, 5
    logits = 3 * rng.standard_normal((N, C))
    targets = rng.integers(0, C, size=N)
    targets[::4] = ignore_index
    got = rnnkit.softmax_cross_entropy(logits, targets, ignore_index=ignore_index, reduction=reduction)

    lt = torch.tensor(logits, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(
        lt, torch.tensor(targets), ignore_index=ignore_index, reduction=reduction
    )
    (dl,) = torch.autograd.grad(loss.sum(), [lt])
    assert_close(got.loss, loss.detach().numpy(), "loss")
    assert_close(got.dlogits, dl.numpy(), "dlogits")
    assert np.abs(dl.numpy()).max() > 0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_cross_entropy_all_ignored(reduction):
    logits = np.random.default_rng(5).standard_normal((3, 4))
    targets = np.full(3, -100)
    got = rnnkit.softmax_cross_entropy(logits, targets, reduction=reduction)
    lt = torch.tensor(logits, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(lt, torch.tensor(targets), reduction=reduction)
    (dl,) = torch.autograd.grad(loss.sum(), [lt])
    # mean over no rows is nan in both; the gradient is zero in both
    np.testing.assert_array_equal(got.loss, loss.detach().numpy())
    np.testing.assert_array_equal(got.dlogits, dl.numpy())


# ----------------------------------------------------------------------------- tensors as inputs


def test_torch_tensors_and_dtypes_are_accepted_as_numpy_ones():
    """CPU float tensors go in as arrays (results equal NumPy inputs'), torch.float32 and
    torch.float64 as module dtypes; a requires_grad tensor works once detached."""
    rng = np.random.default_rng(4)
    W = make_params("lstm", I, H, np.float32, rng)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    want = rnnkit.lstm_forward(x, None, None, *W)[0]
    got = rnnkit.lstm_forward(torch.from_numpy(x), None, None, *(torch.from_numpy(w) for w in W))[0]
    assert np.array_equal(got, want)
    leaf = torch.from_numpy(x).requires_grad_(True)
    assert np.array_equal(rnnkit.lstm_forward(leaf.detach(), None, None, *W)[0], want)
    for torch_dtype, np_dtype in [(torch.float32, np.float32), (torch.float64, np.float64)]:
        m = rnnkit.nn.LSTM(I, H, dtype=torch_dtype, seed=0)
        assert m.dtype == np_dtype and m.weight_ih_l0.dtype == np_dtype
        out, _ = m(torch.zeros((T, B, I), dtype=torch_dtype))
        assert out.dtype == np_dtype


def test_load_state_dict_takes_torch_parameters_and_bfloat16():
    """Loading only copies values: torch parameters (requires_grad=True) and bfloat16 tensors
    (widened exactly) are accepted there, unlike as inputs of a computation."""
    t = torch.nn.GRU(I, H)
    m = rnnkit.nn.GRU(I, H)
    m.load_state_dict(dict(t.named_parameters()))
    assert np.array_equal(m.weight_hh_l0.data, t.weight_hh_l0.detach().numpy())
    m.load_state_dict({k: p.to(torch.bfloat16) for k, p in t.state_dict().items()})
    assert np.array_equal(m.bias_ih_l0.data, t.bias_ih_l0.detach().to(torch.bfloat16).float().numpy())

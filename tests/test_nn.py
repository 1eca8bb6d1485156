"""Tests of the module API ``rnnkit.nn`` (RNN, LSTM, GRU).

* torch.nn (when importable): outputs, final states and the gradients of every parameter, the
  input and the initial states equal torch's with the same state_dict, for every cell x
  num_layers {1, 3} x bidirectional x batch_first x lengths (torch gets them as a packed
  sequence) x LSTM projection, in float64 (tight) and float32; bias=False, absent states and
  gradients, unbatched input; state_dict round trips with torch's names.
* without torch: a 2-layer bidirectional module equals a hand composition of the
  ``rnnkit.reference`` oracles (all cells, both GRU forms, lengths, initial states).
* dropout (eval deterministic, training reproducible from seed, p=0 equals eval, gradients by
  finite differences), gradient accumulation, zero_grad, initialisation, and the errors.

Sizes are tiny so that the whole file runs in seconds.
"""

import copy
import inspect
import pickle
import warnings

import numpy as np
import pytest

import rnnkit
from conftest import CELLS, central_difference, module_class
from rnnkit import nn
from rnnkit import reference as ref

T, B, I, H, P = 5, 4, 3, 5, 3

# The LSTM projection needs lstm_forward(..., W_hr=...) in the kernels.
HAS_PROJ = "W_hr" in inspect.signature(rnnkit.lstm_forward).parameters
needs_proj = pytest.mark.skipif(not HAS_PROJ, reason="lstm_forward has no W_hr keyword yet")

# the cell variants torch has (its GRU is the reset-after form), and the LSTM with a projection
KINDS = ["rnn_tanh", "rnn_relu", "lstm", "gru", "lstm_proj"]
KIND_PARAMS = [k if k != "lstm_proj" else pytest.param(k, marks=needs_proj) for k in KINDS]

# a batch reaching t = T-1 (unsorted), and one where no sequence does
LENGTHS = {"full": None, "padded": [5, 1, 3, 4], "short": [3, 1, 2, 3]}

TOL = {np.float64: 1e-9, np.float32: 1e-4}


def close(a, b, dtype, what=""):
    """max|a - b| <= tol * max(1, max|b|)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    err = np.abs(a - b).max(initial=0.0)
    scale = max(1.0, np.abs(b).max(initial=0.0))
    assert err <= TOL[dtype] * scale, f"{what}: max abs error {err:.3g} (scale {scale:.3g})"


def make(kind, dtype=np.float64, **kw):
    cell, opts = ("lstm", {"proj_size": P}) if kind == "lstm_proj" else (kind, CELLS[kind][1])
    return module_class(cell)(I, H, dtype=dtype, **{**opts, **kw})


def is_lstm(m):
    return isinstance(m, nn.LSTM)


def state_shapes(m, batch=B):
    """Shapes of the recurrent states: [h] or [h, c], each (L*D, B, size)."""
    LD = m.num_layers * m.num_directions
    sizes = [m.proj_size or m.hidden_size] + ([m.hidden_size] if is_lstm(m) else [])
    return [(LD, batch, s) for s in sizes]


def x_shape(m):
    return (B, T, I) if m.batch_first else (T, B, I)


def out_shape(m):
    n = m.num_directions * (m.proj_size or m.hidden_size)
    return (B, T, n) if m.batch_first else (T, B, n)


def run_ours(m, x, states, lengths, dout, dstates):
    """Forward then backward through the module; every state list may hold None."""
    if is_lstm(m):
        out, finals = m(x, tuple(states), lengths=lengths)
        dx, dinit = m.backward(dout, tuple(dstates))
    else:
        out, h_n = m(x, states[0], lengths=lengths)
        dx, dh0 = m.backward(dout, dstates[0])
        finals, dinit = (h_n,), (dh0,)
    grads = {name: p.grad.copy() for name, p in m.named_parameters()}
    return {"out": out, "finals": list(finals), "dx": dx, "dinit": list(dinit), "grads": grads}


def torch_module(m):
    """The torch twin of module m, loaded with m's parameters."""
    import torch

    kind = {nn.RNN: "RNN", nn.LSTM: "LSTM", nn.GRU: "GRU"}[type(m)]
    kw = dict(
        num_layers=m.num_layers,
        bias=m.bias,
        batch_first=m.batch_first,
        bidirectional=m.bidirectional,
        dtype=torch.float64 if m.dtype == np.float64 else torch.float32,
    )
    if kind == "RNN":
        kw["nonlinearity"] = m.nonlinearity
    if kind == "LSTM":
        kw["proj_size"] = m.proj_size
    t = getattr(torch.nn, kind)(m.input_size, m.hidden_size, **kw)
    t.load_state_dict({k: torch.from_numpy(a) for k, a in m.state_dict().items()})
    return t


def run_torch(t, x, states, lengths, dout, dstates):
    """Same as run_ours with torch; lengths go in as a packed sequence; None states are
    omitted (torch takes all or none) and None gradients count as zero."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    xt = torch.tensor(x, requires_grad=True)
    st = [None if s is None else torch.tensor(s, requires_grad=True) for s in states]
    hx = None
    if all(s is not None for s in st):
        hx = tuple(st) if len(st) == 2 else st[0]
    inp = xt
    if lengths is not None:
        inp = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=t.batch_first, enforce_sorted=False)
    with warnings.catch_warnings():
        # torch's own notice that its oneDNN backend lacks LSTM projections (it falls back to
        # its default implementation): about torch's internals, nothing rnnkit can change
        warnings.filterwarnings("ignore", "LSTM with projections is not supported with oneDNN", UserWarning)
        out, finals = t(inp, hx)
    if lengths is not None:
        out, _ = pad_packed_sequence(
            out, batch_first=t.batch_first, total_length=x.shape[1 if t.batch_first else 0]
        )
    finals = list(finals) if isinstance(finals, tuple) else [finals]
    loss = out.sum() * 0
    if dout is not None:
        loss = loss + (out * torch.tensor(dout)).sum()
    for f, d in zip(finals, dstates):
        if d is not None:
            loss = loss + (f * torch.tensor(d)).sum()
    loss.backward()

    def grad_of(a):
        return np.zeros(a.shape) if a.grad is None else a.grad.numpy()

    return {
        "out": out.detach().numpy(),
        "finals": [f.detach().numpy() for f in finals],
        "dx": grad_of(xt),
        "dinit": [None if s is None else grad_of(s) for s in st],
        "grads": {name: grad_of(p) for name, p in t.named_parameters()},
    }


def compare(ours, theirs, dtype):
    close(ours["out"], theirs["out"], dtype, "out")
    for i, (a, b) in enumerate(zip(ours["finals"], theirs["finals"])):
        close(a, b, dtype, f"final state {i}")
    close(ours["dx"], theirs["dx"], dtype, "dx")
    for i, (a, b) in enumerate(zip(ours["dinit"], theirs["dinit"])):
        if b is not None:
            close(a, b, dtype, f"initial state grad {i}")
    assert list(ours["grads"]) == list(theirs["grads"])  # same names, same order
    for name in ours["grads"]:
        close(ours["grads"][name], theirs["grads"][name], dtype, name)


def random_case(m, rng, states=True, dstates=True, dout=True):
    """x, initial states, dout and final-state gradients in m's layout and dtype."""

    def r(shape):
        return rng.standard_normal(shape).astype(m.dtype)

    shapes = state_shapes(m)
    return (
        r(x_shape(m)),
        [r(s) if states else None for s in shapes],
        r(out_shape(m)) if dout else None,
        [r(s) if dstates else None for s in shapes],
    )


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


# ----------------------------------------------------------------------------- torch grid


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("lengths", list(LENGTHS))
@pytest.mark.parametrize("batch_first", [False, True], ids=["tb", "bt"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_matches_torch(torch, kind, num_layers, bidirectional, batch_first, lengths, dtype):
    m = make(kind, dtype, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, seed=7)
    t = torch_module(m)
    case = random_case(m, np.random.default_rng(1))
    lens = LENGTHS[lengths]
    ours = run_ours(m, case[0], case[1], lens, case[2], case[3])
    arrays = [ours["out"], ours["dx"], *ours["finals"], *ours["dinit"], *ours["grads"].values()]
    assert all(a.dtype == dtype for a in arrays)
    compare(ours, run_torch(t, case[0], case[1], lens, case[2], case[3]), dtype)


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_no_bias_matches_torch(torch, kind):
    m = make(kind, num_layers=2, bidirectional=True, bias=False, seed=3)
    assert not any("bias" in name for name, _ in m.named_parameters())
    case = random_case(m, np.random.default_rng(2))
    compare(
        run_ours(m, case[0], case[1], LENGTHS["padded"], case[2], case[3]),
        run_torch(torch_module(m), case[0], case[1], LENGTHS["padded"], case[2], case[3]),
        np.float64,
    )


@pytest.mark.parametrize("which", ["no_states", "no_dout", "no_dstates"])
@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_absent_states_and_gradients_match_torch(torch, kind, which):
    m = make(kind, num_layers=2, bidirectional=True, seed=4)
    x, states, dout, dstates = random_case(
        m,
        np.random.default_rng(3),
        states=which != "no_states",
        dout=which != "no_dout",
        dstates=which != "no_dstates",
    )
    ours = run_ours(m, x, states, LENGTHS["padded"], dout, dstates)
    compare(ours, run_torch(torch_module(m), x, states, LENGTHS["padded"], dout, dstates), np.float64)
    if which == "no_states":  # the gradients w.r.t. the zero initial states still come back
        assert [d.shape for d in ours["dinit"]] == state_shapes(m)


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_unbatched_matches_torch(torch, kind):
    m = make(kind, num_layers=2, bidirectional=True, batch_first=True, seed=5)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, I))
    states = [rng.standard_normal((s[0], s[2])) for s in state_shapes(m)]
    dout = rng.standard_normal((T, out_shape(m)[2]))
    dstates = [rng.standard_normal(s.shape) for s in states]
    ours = run_ours(m, x, states, None, dout, dstates)
    assert ours["out"].shape == dout.shape and ours["dx"].shape == x.shape
    compare(ours, run_torch(torch_module(m), x, states, None, dout, dstates), np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", KINDS)
def test_torch_state_dict_round_trip(torch, kind, dtype):
    m = make(kind, dtype, num_layers=2, bidirectional=True)
    t = torch_module(make(kind, num_layers=2, bidirectional=True))
    t = t.to(torch.float64 if dtype == np.float64 else torch.float32)
    theirs = t.state_dict()
    m.load_state_dict(theirs)  # torch tensors, through np.asarray
    mine = m.state_dict()
    assert list(mine) == list(theirs)  # torch's names and order
    for name, a in mine.items():
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, theirs[name].numpy())
    # and back into torch
    t2 = torch_module(m)
    for name, a in t2.state_dict().items():
        np.testing.assert_array_equal(a.numpy(), theirs[name].numpy())


def test_float64_torch_weights_into_float32_module(torch):
    t = torch.nn.GRU(I, H, num_layers=2, dtype=torch.float64)
    m = nn.GRU(I, H, num_layers=2)  # float32
    m.load_state_dict(t.state_dict())
    for name, a in m.state_dict().items():
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, t.state_dict()[name].numpy().astype(np.float32))


# ----------------------------------------------------------------------------- no torch


def compose_reference(m, x, states, lengths, dout, dstates):
    """Module m's forward and backward written out with the rnnkit.reference oracles:
    time-major input, no dropout, no projection."""
    family = type(m).__name__.lower()
    fwd, bwd = getattr(ref, family + "_forward"), getattr(ref, family + "_backward")
    opts = {
        "rnn": lambda: {"nonlinearity": m.nonlinearity},
        "gru": lambda: {"reset_after": m.reset_after},
        "lstm": dict,
    }[family]()
    sd = m.state_dict()
    L, D, Hs = m.num_layers, m.num_directions, m.hidden_size
    n_states = len(states)

    def weights(layer, d):
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        return [sd.get(k + sfx) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    inp, finals, wss = x, [[] for _ in states], []
    for layer in range(L):
        ys = []
        for d in range(D):
            k = layer * D + d
            y, final, ws = fwd(
                inp, *[s[k] for s in states], *weights(layer, d), reverse=bool(d), lengths=lengths, **opts
            )
            final = final if n_states == 2 else (final,)
            for f, s in zip(finals, final):
                f.append(s)
            ys.append(y)
            wss.append(ws)
        inp = np.concatenate(ys, axis=2)
    out = inp

    grads, dinit = {}, [np.zeros((L * D,) + s.shape[1:]) for s in states]
    d_out = dout
    for layer in reversed(range(L)):
        d_in = 0
        for d in range(D):
            k = layer * D + d
            g = bwd(d_out[:, :, d * Hs : (d + 1) * Hs], *[s[k] for s in dstates], wss[k])
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            grads.update(
                {
                    "weight_ih" + sfx: g.dW_ih,
                    "weight_hh" + sfx: g.dW_hh,
                    "bias_ih" + sfx: g.db_ih,
                    "bias_hh" + sfx: g.db_hh,
                }
            )
            dinit[0][k] = g.dh0
            if n_states == 2:
                dinit[1][k] = g.dc0
            d_in = d_in + g.dx
        d_out = d_in
    return {"out": out, "finals": [np.stack(f) for f in finals], "dx": d_out, "dinit": dinit, "grads": grads}


@pytest.mark.parametrize("lengths", ["full", "padded"])
@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "lstm", "gru", "gru_textbook"])
def test_matches_reference_composition(kind, lengths):
    if kind == "gru_textbook":
        m = nn.GRU(I, H, num_layers=2, bidirectional=True, reset_after=False, dtype=np.float64, seed=11)
    else:
        m = make(kind, num_layers=2, bidirectional=True, seed=11)
    x, states, dout, dstates = random_case(m, np.random.default_rng(5))
    lens = LENGTHS[lengths]
    ours = run_ours(m, x, states, lens, dout, dstates)
    theirs = compose_reference(m, x, states, lens, dout, dstates)
    close(ours["out"], theirs["out"], np.float64, "out")
    for a, b in zip(ours["finals"] + ours["dinit"], theirs["finals"] + theirs["dinit"]):
        close(a, b, np.float64, "state")
    close(ours["dx"], theirs["dx"], np.float64, "dx")
    for name, g in ours["grads"].items():
        close(g, theirs["grads"][name], np.float64, name)
    if lens is not None:  # padded outputs are zero
        for b, n in enumerate(lens):
            assert not ours["out"][n:, b].any() and not ours["dx"][n:, b].any()


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_batch_first_and_unbatched_equal_time_major(kind):
    rng = np.random.default_rng(6)
    tm = make(kind, num_layers=2, bidirectional=True, seed=1)
    bf = make(kind, num_layers=2, bidirectional=True, batch_first=True, seed=1)
    x, states, dout, dstates = random_case(tm, rng)
    a = run_ours(tm, x, states, LENGTHS["padded"], dout, dstates)
    b = run_ours(bf, x.transpose(1, 0, 2), states, LENGTHS["padded"], dout.transpose(1, 0, 2), dstates)
    np.testing.assert_array_equal(a["out"], b["out"].transpose(1, 0, 2))
    np.testing.assert_array_equal(a["dx"], b["dx"].transpose(1, 0, 2))
    # unbatched (T, I) is batch column 0 alone
    u = make(kind, num_layers=2, bidirectional=True, seed=1)
    c = run_ours(u, x[:, 0], [s[:, 0] for s in states], None, dout[:, 0], [s[:, 0] for s in dstates])
    d = run_ours(
        make(kind, num_layers=2, bidirectional=True, seed=1),
        x[:, :1],
        [s[:, :1] for s in states],
        None,
        dout[:, :1],
        [s[:, :1] for s in dstates],
    )
    close(c["out"], d["out"][:, 0], np.float64, "out")
    close(c["dx"], d["dx"][:, 0], np.float64, "dx")
    for s, t in zip(c["finals"] + c["dinit"], d["finals"] + d["dinit"]):
        close(s, t[:, 0], np.float64, "state")


# ----------------------------------------------------------------------------- parameters


def test_parameter_names_and_shapes():
    m = nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=P)
    names = [n for n, _ in m.named_parameters()]
    per = ["weight_ih_l{}{}", "weight_hh_l{}{}", "bias_ih_l{}{}", "bias_hh_l{}{}", "weight_hr_l{}{}"]
    assert names == [f.format(layer, sfx) for layer in (0, 1) for sfx in ("", "_reverse") for f in per]
    assert m.weight_ih_l0.shape == (4 * H, I)
    assert m.weight_ih_l1_reverse.shape == (4 * H, 2 * P)
    assert m.weight_hh_l1.shape == (4 * H, P)
    assert m.weight_hr_l0.shape == (P, H)
    assert m.parameters()[0] is m.weight_ih_l0 and m.weight_ih_l0.name == "weight_ih_l0"
    g = nn.GRU(I, H, num_layers=2, bias=False)
    assert [n for n, _ in g.named_parameters()] == [
        "weight_ih_l0",
        "weight_hh_l0",
        "weight_ih_l1",
        "weight_hh_l1",
    ]
    assert g.weight_ih_l1.shape == (3 * H, H)


@pytest.mark.parametrize("kind", KINDS)
def test_initialisation(kind):
    m = make(kind, np.float32, num_layers=2, bidirectional=True, seed=0)
    bound = 1 / np.sqrt(H)
    for p in m.parameters():
        assert p.data.dtype == np.float32 and p.grad.dtype == np.float32
        assert not p.grad.any() and p.grad.shape == p.data.shape
    values = np.concatenate([p.data.ravel() for p in m.parameters()])
    assert np.abs(values).max() <= bound and np.abs(values).max() > 0.9 * bound
    same = make(kind, np.float32, num_layers=2, bidirectional=True, seed=0)
    other = make(kind, np.float32, num_layers=2, bidirectional=True, seed=1)
    for a, b, c in zip(m.parameters(), same.parameters(), other.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
        assert not np.array_equal(a.data, c.data)
    # the documented recipe: U(-1/sqrt(H), 1/sqrt(H)) in parameter order from default_rng(seed)
    rng = np.random.default_rng(0)
    for p in m.parameters():
        np.testing.assert_array_equal(p.data, rng.uniform(-bound, bound, p.shape).astype(np.float32))


def test_state_dict_copies_and_load_converts():
    m = nn.RNN(I, H, num_layers=2, dtype=np.float32, seed=0)
    sd = m.state_dict()
    sd["weight_ih_l0"][...] = 0  # a copy: the module is unchanged
    assert m.weight_ih_l0.data.any()
    src = {k: np.full(a.shape, 0.25, dtype=np.float64) for k, a in sd.items()}
    src["bias_hh_l1"] = [0] * H  # any array-like, integers too
    m.load_state_dict(src)
    src["weight_hh_l0"][...] = 9  # loaded arrays are copies
    for name, p in m.named_parameters():
        assert p.data.dtype == np.float32 and p.data.flags.c_contiguous
        assert np.all(p.data == (0 if name == "bias_hh_l1" else 0.25))


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_backward_accumulates_and_zero_grad(kind):
    m = make(kind, num_layers=2, bidirectional=True, seed=2)
    x, states, dout, dstates = random_case(m, np.random.default_rng(7))
    once = run_ours(m, x, states, LENGTHS["padded"], dout, dstates)["grads"]
    # a second backward of the same forward adds the same gradients again
    if is_lstm(m):
        m.backward(dout, tuple(dstates))
    else:
        m.backward(dout, dstates[0])
    for name, p in m.named_parameters():
        close(p.grad, 2 * once[name], np.float64, name)
    # a second forward/backward adds its own
    twice = run_ours(m, 0.5 * x, states, None, dout, dstates)["grads"]
    m.zero_grad()
    alone = run_ours(m, 0.5 * x, states, None, dout, dstates)["grads"]
    for name in once:
        close(twice[name], 2 * once[name] + alone[name], np.float64, name)
    m.zero_grad()
    assert not any(p.grad.any() for p in m.parameters())


# ----------------------------------------------------------------------------- dropout


def _fresh(kind, **kw):
    return make(kind, num_layers=3, bidirectional=True, dropout=0.5, seed=21, **kw)


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_dropout_modes(kind):
    x, states, _, _ = random_case(_fresh(kind), np.random.default_rng(8))
    hx = tuple(states) if kind == "lstm" else states[0]
    m = _fresh(kind)
    train1, _ = m(x, hx)
    train2, _ = m(x, hx)
    assert not np.array_equal(train1, train2)  # a new mask each forward
    again, _ = _fresh(kind)(x, hx)  # reproducible from the seed
    np.testing.assert_array_equal(train1, again)
    m.eval()
    ev1, _ = m(x, hx)
    ev2, _ = m(x, hx)
    np.testing.assert_array_equal(ev1, ev2)  # eval: deterministic, no dropout
    assert not np.allclose(ev1, train1)
    # dropout = 0 in training mode is eval mode
    m0 = make(kind, num_layers=3, bidirectional=True, dropout=0.0, seed=21)
    np.testing.assert_array_equal(m0(x, hx)[0], ev1)
    # with a single layer dropout does nothing (and warns, as torch)
    with pytest.warns(UserWarning, match="num_layers=1"):
        single = make(kind, dropout=0.5, seed=3)
    a, _ = single(x)
    np.testing.assert_array_equal(a, single.eval()(x)[0])


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_dropout_gradients_by_finite_differences(kind):
    """Fresh modules from one seed draw the same masks, so loss(x) is a fixed function."""
    rng = np.random.default_rng(9)
    x, states, dout, dstates = random_case(_fresh(kind), rng)

    def loss(m, x):
        out, finals = m(x, tuple(states)) if kind == "lstm" else m(x, states[0])
        finals = finals if kind == "lstm" else (finals,)
        return np.sum(out * dout) + sum(np.sum(f * d) for f, d in zip(finals, dstates))

    m = _fresh(kind)
    g = run_ours(m, x, states, None, dout, dstates)
    # directional derivatives (a fresh module for every evaluation: the same masks)
    v = rng.standard_normal(x.shape)
    numeric = central_difference(lambda t: loss(_fresh(kind), x + t * v))
    assert abs(numeric - np.sum(g["dx"] * v)) <= 1e-6 * max(1, abs(numeric))
    for name in ("weight_ih_l0", "weight_hh_l1_reverse", "bias_ih_l2"):
        w = rng.standard_normal(m.state_dict()[name].shape)

        def along_w(t, name=name, w=w):
            f = _fresh(kind)
            getattr(f, name).data = getattr(f, name).data + t * w
            return loss(f, x)

        numeric = central_difference(along_w)
        assert abs(numeric - np.sum(g["grads"][name] * w)) <= 1e-6 * max(1, abs(numeric)), name


# ----------------------------------------------------------------------------- errors


def test_load_state_dict_errors():
    m = nn.LSTM(I, H, num_layers=2)
    sd = m.state_dict()
    bad = dict(sd)
    del bad["bias_hh_l1"]
    bad["weight_ih_l2"] = np.zeros((4 * H, H))
    with pytest.raises(
        ValueError,
        match=r"missing keys: \['bias_hh_l1'\].*unexpected keys: "
        r"\['weight_ih_l2'\]",
    ):
        m.load_state_dict(bad)
    assert m.load_state_dict(bad, strict=False) == (["bias_hh_l1"], ["weight_ih_l2"])
    bad = dict(sd, weight_hh_l1=np.zeros((4 * H, H - 1)))
    with pytest.raises(
        ValueError,
        match=r"weight_hh_l1: expected shape \(4\*H, H\) = "
        rf"\({4 * H}, {H}\), got \({4 * H}, {H - 1}\)",
    ):
        m.load_state_dict(bad)
    np.testing.assert_array_equal(m.weight_hh_l1.data, sd["weight_hh_l1"])  # nothing loaded
    with pytest.raises(ValueError, match=r"weight_ih_l1: expected shape \(4\*H, H\)"):
        m.load_state_dict(dict(sd, weight_ih_l1=np.zeros((4 * H, 2 * H))))
    with pytest.raises(TypeError, match="bias_ih_l0: expected a real-valued array"):
        m.load_state_dict(dict(sd, bias_ih_l0=np.array(["a"] * 4 * H)))
    with pytest.raises(TypeError, match="state_dict"):
        m.load_state_dict([1, 2])


def test_forward_input_errors():
    m = nn.GRU(I, H, num_layers=2, bidirectional=True)  # float32
    x = np.zeros((T, B, I), np.float32)
    with pytest.raises(TypeError, match="x: expected dtype float32 .* got float64"):
        m(x.astype(np.float64))
    with pytest.raises(TypeError, match="x: expected dtype float32"):
        m(x.astype(np.int64))
    with pytest.raises(ValueError, match=rf"x: expected input size I = {I} .* got shape"):
        m(np.zeros((T, B, I + 1), np.float32))
    with pytest.raises(ValueError, match=r"x: expected 3 dimensions \(T, B, I\)"):
        m(np.zeros((1, T, B, I), np.float32))
    with pytest.raises(
        ValueError,
        match=rf"h0: expected shape \(num_layers\*D, B, H\) = "
        rf"\(4, {B}, {H}\), got \(2, {B}, {H}\)",
    ):
        m(x, np.zeros((2, B, H), np.float32))
    with pytest.raises(TypeError, match="h0: expected dtype float32"):
        m(x, np.zeros((4, B, H)))
    with pytest.raises(ValueError, match="lengths: not supported with unbatched"):
        m(x[:, 0], lengths=[T])
    lstm = nn.LSTM(I, H)
    with pytest.raises(TypeError, match=r"hx: expected a pair \(h, c\)"):
        lstm(x, np.zeros((1, B, H), np.float32))
    with pytest.raises(ValueError, match=r"c0: expected shape \(num_layers\*D, B, H\)"):
        lstm(x, (None, np.zeros((1, B, H + 1), np.float32)))


@pytest.mark.parametrize(
    "lengths, error, match",
    [
        ([0, 1, 2, 3], ValueError, r"lengths: every length must satisfy 1 <= length <= T = 5"),
        ([1, 2, 6, 3], ValueError, r"1 <= length <= T = 5, got \[6\]"),
        ([1, 2, 3], ValueError, r"lengths: expected shape \(B,\) = \(4,\)"),
        ([1.0, 2.0, 3.0, 4.0], TypeError, "lengths: expected an integer array"),
    ],
)
def test_lengths_errors(lengths, error, match):
    m = nn.RNN(I, H)
    with pytest.raises(error, match=match):
        m(np.zeros((T, B, I), np.float32), lengths=lengths)


def test_backward_errors():
    m = nn.LSTM(I, H, num_layers=2, batch_first=True)
    with pytest.raises(RuntimeError, match="no forward"):
        m.backward(np.zeros((B, T, H), np.float32))
    x = np.zeros((B, T, I), np.float32)
    m(x)
    with pytest.raises(
        ValueError,
        match=rf"dout: expected shape \(B, T, D\*H_out\) = "
        rf"\({B}, {T}, {H}\), got \({T}, {B}, {H}\)",
    ):
        m.backward(np.zeros((T, B, H), np.float32))
    with pytest.raises(TypeError, match="dout: expected dtype float32"):
        m.backward(np.zeros((B, T, H)))
    with pytest.raises(ValueError, match=r"dc_n: expected shape \(num_layers\*D, B, H\)"):
        m.backward(None, (None, np.zeros((1, B, H), np.float32)))
    m.eval()
    m(x)
    with pytest.raises(RuntimeError, match="eval mode"):
        m.backward(np.zeros((B, T, H), np.float32))
    m.train()  # eval() dropped the workspace of the training forward
    with pytest.raises(RuntimeError, match="no forward"):
        m.backward(np.zeros((B, T, H), np.float32))
    m(x)
    m.backward(np.zeros((B, T, H), np.float32))


def test_constructor_errors():
    with pytest.raises(ValueError, match="proj_size: expected 0 .* less than hidden_size = 5"):
        nn.LSTM(I, H, proj_size=H)
    with pytest.raises(ValueError, match="nonlinearity: expected one of 'tanh', 'relu'"):
        nn.RNN(I, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"dropout: expected a probability in \[0, 1\]"):
        nn.GRU(I, H, num_layers=2, dropout=1.5)
    with pytest.raises(ValueError, match="hidden_size: expected an int >= 1, got 0"):
        nn.GRU(I, 0)
    with pytest.raises(TypeError, match="input_size: expected an int"):
        nn.GRU(3.0, H)
    with pytest.raises(TypeError, match="dtype: expected float32 or float64, got float16"):
        nn.RNN(I, H, dtype=np.float16)
    with pytest.raises(TypeError, match="bidirectional: expected True or False"):
        nn.RNN(I, H, bidirectional=1)
    with pytest.raises(TypeError, match="proj_size"):
        nn.GRU(I, H, proj_size=2)


def test_repr():
    assert (
        repr(nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=P))
        == f"LSTM({I}, {H}, num_layers=2, bidirectional=True, proj_size={P})"
    )
    assert (
        repr(nn.RNN(I, H, nonlinearity="relu", dtype=np.float64))
        == f"RNN({I}, {H}, nonlinearity='relu', dtype=float64)"
    )


def test_modules_copy_and_pickle_without_their_kept_forward():
    m = nn.LSTM(3, 4, num_layers=2, seed=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    out, _ = m(x)
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert clone.state_dict().keys() == m.state_dict().keys()
        for k, a in clone.state_dict().items():
            np.testing.assert_array_equal(a, m.state_dict()[k])
        with pytest.raises(RuntimeError, match="no forward"):
            clone.backward(np.ones_like(out))
        np.testing.assert_array_equal(clone(x)[0], out)  # a working module
    m.backward(np.ones_like(out))  # the original keeps its own
    lin = pickle.loads(pickle.dumps(nn.Linear(3, 2, dtype=np.float64)))
    assert lin(np.ones((1, 3))).shape == (1, 2)

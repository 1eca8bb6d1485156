"""Bad input raises ValueError / TypeError naming the argument; edge cases do not crash.

Messages start with the argument's name ("W_hh: expected shape ..."), so every check
below anchors its pattern at the start: ``match=r"^W_hh:"``.
"""

import numpy as np
import pytest

import rnnkit
from conftest import CELLS, GATES, make_params

T, B, I, H = 3, 2, 4, 5
FAMILIES = ["rnn", "lstm", "gru"]


def state_names(family):
    return ("h0", "c0") if family == "lstm" else ("h0",)


def seq_args(family, dtype=np.float64, T=T, B=B):
    """Valid keyword arguments of ``{family}_forward`` (all arrays present)."""
    rng = np.random.default_rng(0)
    W_ih, W_hh, b_ih, b_hh = make_params(family, I, H, dtype, rng)
    args = {"x": rng.standard_normal((T, B, I)).astype(dtype)}
    for name in state_names(family):
        args[name] = rng.standard_normal((B, H)).astype(dtype)
    args.update(W_ih=W_ih, W_hh=W_hh, b_ih=b_ih, b_hh=b_hh)
    return args


def forward(family, args, **kw):
    return getattr(rnnkit, f"{family}_forward")(**args, **kw)


def backward(family, ws, **grads):
    """``{family}_backward`` with cotangents by name (missing ones None)."""
    names = ("dy", "dh_T", "dc_T") if family == "lstm" else ("dy", "dh_T")
    return getattr(rnnkit, f"{family}_backward")(*(grads.get(n) for n in names), ws)


def raises(exc, name):
    """pytest.raises whose message must start with ``name:``."""
    return pytest.raises(exc, match=rf"^{name}:")


# ----------------------------------------------------------------------------- sanity


@pytest.mark.parametrize("family", FAMILIES)
def test_valid_arguments_are_accepted(family):
    # the error tests below change one argument of this call
    y, _, ws = forward(family, seq_args(family), lengths=np.array([T, 1]))
    assert y.shape == (T, B, H)
    assert isinstance(ws, rnnkit.Workspace)


# ----------------------------------------------------------------------------- shapes


def _wrong_rank(a):
    return [a[None], a.reshape(-1)[0] if a.ndim == 1 else a[0]]  # one more dim, one fewer


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_rank(family):
    args = seq_args(family)
    for name in args:
        for bad in _wrong_rank(args[name]):
            with raises(ValueError, name):
                forward(family, dict(args, **{name: bad}))


def _one_dim_off(shape):
    """Shapes equal to ``shape`` except one axis one longer."""
    return [tuple(s + (k == i) for k, s in enumerate(shape)) for i in range(len(shape))]


@pytest.mark.parametrize("family", FAMILIES)
def test_mismatched_sizes(family):
    args = seq_args(family)
    for name in args:
        if name == "x":
            continue  # x defines T, B and I; a wrong I is reported on W_ih, checked below
        for shape in _one_dim_off(args[name].shape):
            with raises(ValueError, name):
                forward(family, dict(args, **{name: np.zeros(shape)}))
    # W_hh must be (G*H, H): a square or a wrong-multiple W_hh is rejected
    if GATES[family] > 1:
        with raises(ValueError, "W_hh"):
            forward(family, dict(args, W_hh=np.zeros((H, H))))
    with raises(ValueError, "W_ih"):  # x with another input size than W_ih
        forward(family, dict(args, x=np.zeros((T, B, I + 1))))
    with raises(ValueError, "lengths"):
        forward(family, args, lengths=np.ones(B + 1, dtype=np.int64))


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("x_dtype, other", [(np.float32, np.float64), (np.float64, np.float32)])
@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_float_dtypes(family, x_dtype, other):
    args = seq_args(family, x_dtype)
    for name in args:
        if name != "x":
            with raises(TypeError, name):
                forward(family, dict(args, **{name: args[name].astype(other)}))


BAD_DTYPES = [np.int64, np.int32, np.bool_, np.complex128, object, np.float16]


@pytest.mark.parametrize("bad_dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("family", FAMILIES)
def test_non_float_arrays(family, bad_dtype):
    args = seq_args(family)
    for name in args:
        bad = args[name].astype(bad_dtype)
        with raises(TypeError, name):
            forward(family, dict(args, **{name: bad}))


def test_float16_message_suggests_float32():
    args = seq_args("lstm")
    with pytest.raises(TypeError, match="float16 is not supported"):
        forward("lstm", dict(args, x=args["x"].astype(np.float16)))


# ----------------------------------------------------------------------------- lengths, flags


@pytest.mark.parametrize("family", FAMILIES)
def test_lengths(family):
    args = seq_args(family)
    for bad in ([0, 1], [T + 1, 1], [1, -1]):
        with raises(ValueError, "lengths"):
            forward(family, args, lengths=np.array(bad))
    for bad in (np.array([1.0, 2.0]), np.array([True, True]), np.array([1.5, 2.0])):
        with raises(TypeError, "lengths"):
            forward(family, args, lengths=bad)
    with raises(ValueError, "lengths"):
        forward(family, args, lengths=np.array([[1, 2]]))


@pytest.mark.parametrize("family", FAMILIES)
def test_flags_must_be_bool(family):
    args = seq_args(family)
    with raises(TypeError, "reverse"):
        forward(family, args, reverse=1)
    with raises(TypeError, "training"):
        forward(family, args, training="no")
    if family == "gru":
        with raises(TypeError, "reset_after"):
            forward(family, args, reset_after="yes")


def test_bad_nonlinearity():
    args = seq_args("rnn")
    for bad in ("sigmoid", "Tanh", None):
        with raises(ValueError, "nonlinearity"):
            forward("rnn", args, nonlinearity=bad)
    x, h = args["x"][0], args["h0"]
    with raises(ValueError, "nonlinearity"):
        rnnkit.rnn_cell_forward(x, h, args["W_ih"], args["W_hh"], None, None, nonlinearity="gelu")


# ----------------------------------------------------------------------------- workspaces


def _workspaces(family):
    """A sequence workspace and a cell cache of ``family``."""
    args = seq_args(family)
    _, _, ws = forward(family, args)
    cell_args = {k: (v[0] if k == "x" else v) for k, v in args.items()}
    cell_args = {("h" if k == "h0" else "c" if k == "c0" else k): v for k, v in cell_args.items()}
    _, cache = getattr(rnnkit, f"{family}_cell_forward")(**cell_args)
    return ws, cache


def _cell_backward(family, cache):
    fn = getattr(rnnkit, f"{family}_cell_backward")
    return fn(None, None, cache) if family == "lstm" else fn(None, cache)


@pytest.mark.parametrize("producer", FAMILIES)
@pytest.mark.parametrize("consumer", FAMILIES)
def test_workspace_of_another_cell(producer, consumer):
    ws, cache = _workspaces(producer)
    if producer == consumer:
        backward(consumer, ws)  # the right one is accepted
        _cell_backward(consumer, cache)
    else:
        with raises(ValueError, "workspace"):
            backward(consumer, ws)
        with raises(ValueError, "workspace"):
            _cell_backward(consumer, cache)


@pytest.mark.parametrize("family", FAMILIES)
def test_cell_cache_and_sequence_workspace_are_not_interchangeable(family):
    ws, cache = _workspaces(family)
    with raises(ValueError, "workspace"):
        backward(family, cache)
    with raises(ValueError, "workspace"):
        _cell_backward(family, ws)


@pytest.mark.parametrize("family", FAMILIES)
def test_workspace_of_wrong_type(family):
    ws, _ = _workspaces(family)
    for bad in ({"cell": family}, ws.saved.saved_arrays(), ws.saved, (1, 2)):
        with raises(TypeError, "workspace"):
            backward(family, bad)
        with raises(TypeError, "workspace"):
            _cell_backward(family, bad)
    with raises(ValueError, "workspace"):
        backward(family, None)


# ----------------------------------------------------------------------------- cotangents


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_cotangents(family):
    _, _, ws = forward(family, seq_args(family))
    names = {"dy": (T, B, H), "dh_T": (B, H)}
    if family == "lstm":
        names["dc_T"] = (B, H)
    for name, shape in names.items():
        for bad_shape in _one_dim_off(shape) + [shape[1:], (1,) + shape]:
            with raises(ValueError, name):
                backward(family, ws, **{name: np.zeros(bad_shape)})
        for bad_dtype in (np.float32, np.int64, np.float16, np.complex128):
            with raises(TypeError, name):
                backward(family, ws, **{name: np.zeros(shape, dtype=bad_dtype)})


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_cell_arguments(family):
    args = seq_args(family)
    W = (args["W_ih"], args["W_hh"], args["b_ih"], args["b_hh"])
    fwd = getattr(rnnkit, f"{family}_cell_forward")
    x, states = args["x"][0], tuple(args[n] for n in state_names(family))
    cell_names = ("h", "c")[: len(states)]

    with raises(ValueError, "x"):
        fwd(args["x"], *states, *W)  # a sequence where one step is expected
    with raises(TypeError, "x"):
        fwd(x.astype(np.int64), *states, *W)
    with raises(ValueError, "W_hh"):
        fwd(x, *states, W[0], W[1][:, :-1], *W[2:])
    for k, name in enumerate(cell_names):

        def with_state(s, k=k):
            return fwd(x, *states[:k], s, *states[k + 1 :], *W)

        with raises(ValueError, name):
            with_state(states[k][None])
        with raises(TypeError, name):
            with_state(states[k].astype(np.float32))

    _, cache = fwd(x, *states, *W)
    bwd = getattr(rnnkit, f"{family}_cell_backward")
    d_names = ("dh_next", "dc_next")[: len(states)]
    for k, name in enumerate(d_names):

        def with_grad(g, k=k):
            return bwd(*(g if j == k else None for j in range(len(d_names))), cache)

        with raises(ValueError, name):
            with_grad(np.zeros((B, H + 1)))
        with raises(TypeError, name):
            with_grad(np.zeros((B, H), dtype=np.float32))


@pytest.mark.parametrize("family", FAMILIES)
def test_cell_state_of_wrong_size_names_the_cell_argument(family):
    # the message must name the cell's own argument (h, c), not the h0 / c0 of the
    # sequence function the cell delegates to
    args = seq_args(family)
    W = (args["W_ih"], args["W_hh"], args["b_ih"], args["b_hh"])
    fwd = getattr(rnnkit, f"{family}_cell_forward")
    states = [args[n] for n in state_names(family)]
    for k, name in enumerate(("h", "c")[: len(states)]):
        for shape in _one_dim_off((B, H)):
            bad = list(states)
            bad[k] = np.zeros(shape)
            with raises(ValueError, name):
                fwd(args["x"][0], *bad, *W)


# ----------------------------------------------------------------------------- losses


def test_softmax_cross_entropy_errors():
    N, C = 4, 3
    logits = np.zeros((N, C))
    ok = np.array([0, 1, 2, -100])
    rnnkit.softmax_cross_entropy(logits, ok)  # valid baseline
    for bad in ([0, 1, 3, 0], [0, -1, 0, 0], [0, 1, 2, -101]):
        with raises(ValueError, "targets"):
            rnnkit.softmax_cross_entropy(logits, np.array(bad))
    with raises(ValueError, "targets"):  # -100 is a target unless it is the ignore_index
        rnnkit.softmax_cross_entropy(logits, ok, ignore_index=-1)
    for bad in (ok.astype(np.float64), ok > 0):
        with raises(TypeError, "targets"):
            rnnkit.softmax_cross_entropy(logits, bad)
    for bad in (ok[:-1], ok[None]):
        with raises(ValueError, "targets"):
            rnnkit.softmax_cross_entropy(logits, bad)
    for bad in ("avg", "Mean", None):
        with raises(ValueError, "reduction"):
            rnnkit.softmax_cross_entropy(logits, ok, reduction=bad)
    for bad in (np.zeros(C), np.zeros((1, N, C))):
        with raises(ValueError, "logits"):
            rnnkit.softmax_cross_entropy(bad, ok)
    for bad_dtype in (np.int64, np.float16, np.complex128):
        with raises(TypeError, "logits"):
            rnnkit.softmax_cross_entropy(logits.astype(bad_dtype), ok)
    for bad in (1.0, True, "x"):
        with raises(TypeError, "ignore_index"):
            rnnkit.softmax_cross_entropy(logits, ok, ignore_index=bad)


def test_softmax_errors():
    for bad_dtype in (np.int64, np.float16, np.bool_):
        with raises(TypeError, "logits"):
            rnnkit.softmax(np.zeros((2, 3), dtype=bad_dtype))


@pytest.mark.parametrize(
    "scalar", [np.float64(1.0), np.array(2.0), np.float32(0.5)], ids=["np.float64", "0-d array", "np.float32"]
)
def test_softmax_of_a_scalar_raises(scalar):
    # softmax needs a class axis; a 0-d input must not be silently treated as (1,)
    with raises(ValueError, "logits"):
        rnnkit.softmax(scalar)


# ----------------------------------------------------------------------------- empty inputs


def _call_variant(variant, args, **kw):
    family, opts = CELLS[variant]
    y, finals, ws = forward(family, args, **opts, **kw)
    return y, (tuple(finals) if family == "lstm" else (finals,)), ws


@pytest.mark.parametrize("with_states", [True, False])
@pytest.mark.parametrize("TB", [(0, 2), (3, 0), (0, 0)], ids=["T0", "B0", "T0B0"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant", CELLS)
def test_empty_sequences(variant, dtype, TB, with_states):
    family = CELLS[variant][0]
    T0, B0 = TB
    args = seq_args(family, dtype, T=T0, B=B0)
    if not with_states:
        for n in state_names(family):
            args[n] = None
    rng = np.random.default_rng(1)
    d_finals = [rng.standard_normal((B0, H)).astype(dtype) for _ in state_names(family)]
    lengths = np.zeros(0, dtype=np.int64) if B0 == 0 else None  # lengths need T >= 1 per row
    for reverse in (False, True):
        y, finals, ws = _call_variant(variant, args, reverse=reverse, lengths=lengths)
        assert y.shape == (T0, B0, H) and y.dtype == dtype
        for name, s in zip(state_names(family), finals):
            # no step ran: the final state is the initial one (zeros when None)
            expected = args[name] if with_states else np.zeros((B0, H), dtype)
            assert s.shape == (B0, H) and s.dtype == dtype
            np.testing.assert_array_equal(s, expected)
        g = backward(family, ws, dy=np.zeros((T0, B0, H), dtype), **dict(zip(("dh_T", "dc_T"), d_finals)))
        assert g.dx.shape == (T0, B0, I) and g.dx.dtype == dtype
        # gradients reach the initial states unchanged; weights get exactly zero
        for d_state, d_final in zip(g[1 : 1 + len(d_finals)], d_finals):
            np.testing.assert_array_equal(d_state, d_final)
        for name in ("W_ih", "W_hh", "b_ih", "b_hh"):
            d = getattr(g, "d" + name)
            assert d.shape == args[name].shape and d.dtype == dtype
            assert not d.any(), f"d{name} of an empty sequence must be zero"


@pytest.mark.parametrize("variant", CELLS)
def test_empty_batch_cell(variant):
    family, opts = CELLS[variant]
    args = seq_args(family, B=0)
    fwd = getattr(rnnkit, f"{family}_cell_forward")
    states = [args[n] for n in state_names(family)]
    nxt, cache = fwd(args["x"][0], *states, args["W_ih"], args["W_hh"], args["b_ih"], args["b_hh"], **opts)
    for s in nxt if family == "lstm" else (nxt,):
        assert s.shape == (0, H)
    g = _cell_backward(family, cache)
    assert g.dx.shape == (0, I) and g.dh.shape == (0, H)
    assert g.dW_hh.shape == args["W_hh"].shape and not g.dW_hh.any()


def test_empty_losses():
    for C in (3, 0):
        assert rnnkit.softmax(np.zeros((0, C))).shape == (0, C)
    assert rnnkit.softmax(np.zeros((2, 0))).shape == (2, 0)
    logits, t = np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    assert np.isnan(rnnkit.softmax_cross_entropy(logits, t, reduction="mean").loss)
    loss, d = rnnkit.softmax_cross_entropy(logits, t, reduction="sum")
    assert loss == 0 and d.shape == (0, 4)
    loss, d = rnnkit.softmax_cross_entropy(logits, t, reduction="none")
    assert loss.shape == (0,) and d.shape == (0, 4)


# ----------------------------------------------------------------------------- NaN


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("variant", CELLS)
def test_nan_propagates(variant, reverse):
    family = CELLS[variant][0]
    args = seq_args(family, T=4, B=3)
    t_nan = 1
    args["x"][t_nan, 0, 0] = np.nan
    y, finals, ws = _call_variant(variant, args, reverse=reverse)
    # row 0 is NaN from t_nan on (in processing order), other rows are untouched
    after = slice(t_nan, None) if not reverse else slice(0, t_nan + 1)
    before = slice(0, t_nan) if not reverse else slice(t_nan + 1, None)
    assert np.isnan(y[after, 0]).all()
    assert np.isfinite(y[before, 0]).all()
    assert np.isfinite(y[:, 1:]).all()
    assert np.isnan(finals[0][0]).all() and np.isfinite(finals[0][1:]).all()
    g = backward(family, ws, dy=np.ones_like(y))
    assert g.dx.shape == args["x"].shape
    assert np.isnan(g.dW_ih).any()
    assert np.isfinite(g.dx[:, 1:]).all()  # rows do not mix in dx


def test_nan_in_losses():
    logits = np.arange(12.0).reshape(3, 4)
    logits[1, 2] = np.nan
    p = rnnkit.softmax(logits)
    assert np.isnan(p[1]).all() and np.isfinite(p[[0, 2]]).all()
    res = rnnkit.softmax_cross_entropy(logits, np.array([0, 1, 2]), reduction="none")
    assert np.isnan(res.loss[1]) and np.isfinite(res.loss[[0, 2]]).all()
    assert np.isnan(res.dlogits[1]).all() and np.isfinite(res.dlogits[[0, 2]]).all()

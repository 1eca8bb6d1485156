"""rnnkit.flax against Flax itself (run by jax on the CPU): linen parameter trees both ways,
nnx cells both ways, and the refusals (nnx's GRU without b_hn among them)."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")

import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit import flax as rf  # noqa: E402

T, B, I, H = 3, 2, 4, 5  # small: jax dispatches each op of a step separately
TOL = {np.float32: 1e-5, np.float64: 1e-10}
BIAS = nn.initializers.normal(0.5)  # linen initialises biases to zero


def _x(dtype, seed=0):
    return np.random.default_rng(seed).standard_normal((B, T, I)).astype(dtype)


def _close(a, b, dtype):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=TOL[dtype])


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    """float64 runs with jax's x64 mode on, for that test only."""
    with jax.enable_x64(request.param == np.float64):
        yield request.param


def _linen(cell_cls, dtype):
    cell = cell_cls(H, bias_init=BIAS, param_dtype=dtype)
    rnn = nn.RNN(cell, return_carry=True)
    params = rnn.init(jax.random.key(0), _x(dtype))
    return rnn, params


@pytest.mark.parametrize(
    "cell_cls, dtype",
    [(c, np.float32) for c in (nn.LSTMCell, nn.OptimizedLSTMCell, nn.GRUCell)]
    + [(c, np.float64) for c in (nn.LSTMCell, nn.GRUCell)],
    indirect=["dtype"],
)
def test_from_linen_matches_flax(cell_cls, dtype):
    rnn, params = _linen(cell_cls, dtype)
    module = rf.from_linen(params)
    assert module.batch_first and module.dtype == dtype
    x = _x(dtype, seed=1)
    rng = np.random.default_rng(2)
    h0, c0 = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    if cell_cls is nn.GRUCell:
        assert isinstance(module, rnnkit.nn.GRU) and module.reset_after
        carry, y = rnn.apply(params, x, initial_carry=h0)
        out, h_n = module(x, h0[None])
        _close(h_n[0], carry, dtype)
    else:
        assert isinstance(module, rnnkit.nn.LSTM)
        (c, h), y = rnn.apply(params, x, initial_carry=(c0, h0))  # linen's carry is (c, h)
        out, (h_n, c_n) = module(x, (h0[None], c0[None]))
        _close(h_n[0], h, dtype)
        _close(c_n[0], c, dtype)
    _close(out, y, dtype)


def test_from_linen_takes_a_bare_cell_tree_and_time_major():
    cell = nn.GRUCell(H, bias_init=BIAS)
    x_t = _x(np.float32)[:, 0]
    h0 = np.zeros((B, H), np.float32)
    params = cell.init(jax.random.key(1), h0, x_t)["params"]
    module = rf.from_linen(params, batch_first=False)
    h1, _ = cell.apply({"params": params}, h0, x_t)
    out, _ = module(x_t[None])
    _close(out[0], h1, np.float32)


@pytest.mark.parametrize("cell_cls", [nn.LSTMCell, nn.GRUCell])
def test_from_linen_bidirectional(cell_cls):
    bi = nn.Bidirectional(
        nn.RNN(cell_cls(H, bias_init=BIAS)), nn.RNN(cell_cls(H, bias_init=BIAS)), return_carry=True
    )
    x = _x(np.float32, seed=3)
    params = bi.init(jax.random.key(2), x)
    (fwd, bwd), y = bi.apply(params, x)
    module = rf.from_linen(params)
    assert module.bidirectional
    out, state = module(x)
    _close(out, y, np.float32)
    h_n = state[0] if cell_cls is nn.LSTMCell else state
    _close(h_n[0], fwd[1] if cell_cls is nn.LSTMCell else fwd, np.float32)
    _close(h_n[1], bwd[1] if cell_cls is nn.LSTMCell else bwd, np.float32)


def test_seq_lengths_are_lengths():
    bi = nn.Bidirectional(
        nn.RNN(nn.LSTMCell(H, bias_init=BIAS)), nn.RNN(nn.LSTMCell(H, bias_init=BIAS)), return_carry=True
    )
    x = _x(np.float32, seed=9)
    lengths = np.array([T, 1])
    valid = np.arange(T)[None] < lengths[:, None]  # (B, T)
    params = bi.init(jax.random.key(3), x)
    (fwd, bwd), y = bi.apply(params, x, seq_lengths=lengths)
    out, (h_n, c_n) = rf.from_linen(params)(x, lengths=lengths)
    _close(out[valid], np.asarray(y)[valid], np.float32)  # Flax computes on past the lengths
    for got, want in zip([c_n[0], h_n[0], c_n[1], h_n[1]], [*fwd, *bwd]):
        _close(got, want, np.float32)


MODULES = [
    lambda dt: rnnkit.nn.LSTM(I, H, batch_first=True, dtype=dt, seed=1),
    lambda dt: rnnkit.nn.LSTM(I, H, bias=False, batch_first=True, dtype=dt, seed=1),
    lambda dt: rnnkit.nn.GRU(I, H, batch_first=True, dtype=dt, seed=1),
]


@pytest.mark.parametrize(
    "make, dtype",
    [(m, np.float32) for m in MODULES] + [(MODULES[0], np.float64), (MODULES[2], np.float64)],
    indirect=["dtype"],
)
def test_to_linen_makes_flax_compute_what_rnnkit_computes(make, dtype):
    module = make(dtype)
    cell_cls = nn.LSTMCell if isinstance(module, rnnkit.nn.LSTM) else nn.GRUCell
    tree = rf.to_linen(module)
    x = _x(dtype, seed=4)
    y = nn.RNN(cell_cls(H, param_dtype=dtype)).apply({"params": {"cell": tree}}, x)
    _close(y, module(x)[0], dtype)


def test_to_linen_bidirectional_and_a_layer_of_a_stack():
    module = rnnkit.nn.GRU(I, H, num_layers=2, bidirectional=True, batch_first=True, seed=2)
    x = _x(np.float32, seed=5)
    h = x
    for layer in range(2):
        bi = nn.Bidirectional(nn.RNN(nn.GRUCell(H)), nn.RNN(nn.GRUCell(H)))
        h = bi.apply({"params": rf.to_linen(module, layer=layer)}, h)
    _close(h, module(x)[0], np.float32)


def _nnx_run(cell, x, carry):
    """The cell over the time axis of x (B, T, I), step by step; returns (outputs, carry)."""
    ys = []
    for t in range(x.shape[1]):
        carry, y = cell(carry, jnp.asarray(x[:, t]))
        ys.append(y)
    return np.stack(ys, axis=1), carry


def _nnx_cell(cls, dtype, seed=0):
    cell = cls(I, H, param_dtype=dtype, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    for _, var in nnx.iter_graph(cell):  # non-zero biases (nnx initialises them to zero)
        if isinstance(var, nnx.Param):
            var[...] = var[...] + 0.3 * rng.standard_normal(var[...].shape).astype(dtype)
    return cell


@pytest.mark.parametrize(
    "cls, dtype",
    [(nnx.LSTMCell, np.float32), (nnx.OptimizedLSTMCell, np.float32), (nnx.GRUCell, np.float32)]
    + [(nnx.GRUCell, np.float64)],
    indirect=["dtype"],
)
def test_from_nnx_matches_flax(cls, dtype):
    cell = _nnx_cell(cls, dtype)
    module = rf.from_nnx(cell)
    x = _x(dtype, seed=6)
    rng = np.random.default_rng(7)
    h0, c0 = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    if cls is nnx.GRUCell:
        y, h = _nnx_run(cell, x, jnp.asarray(h0))
        out, h_n = module(x, h0[None])
    else:
        y, (c, h) = _nnx_run(cell, x, (jnp.asarray(c0), jnp.asarray(h0)))
        out, (h_n, c_n) = module(x, (h0[None], c0[None]))
        _close(c_n[0], c, dtype)
    _close(out, y, dtype)
    _close(h_n[0], h, dtype)


def test_from_nnx_rnn_and_bidirectional():
    x = _x(np.float32, seed=10)
    bi = nnx.Bidirectional(
        nnx.RNN(_nnx_cell(nnx.GRUCell, np.float32, 1)),
        nnx.RNN(_nnx_cell(nnx.GRUCell, np.float32, 2)),
        rngs=nnx.Rngs(0),
    )
    module = rf.from_nnx(bi)
    assert module.bidirectional and module.batch_first
    _close(module(x)[0], bi(jnp.asarray(x)), np.float32)
    rnn = nnx.RNN(_nnx_cell(nnx.OptimizedLSTMCell, np.float32, 3), time_major=True)
    module = rf.from_nnx(rnn)
    assert not module.batch_first  # from the RNN's time_major
    x_tm = np.ascontiguousarray(x.transpose(1, 0, 2))
    _close(module(x_tm)[0], rnn(jnp.asarray(x_tm)), np.float32)


@pytest.mark.parametrize("cls", [nnx.LSTMCell, nnx.OptimizedLSTMCell, nnx.GRUCell])
def test_to_nnx_makes_flax_compute_what_rnnkit_computes(cls):
    if cls is nnx.GRUCell:
        module = rnnkit.nn.GRU(I, H, batch_first=True, seed=3)
        module.bias_hh_l0.data[2 * H :] = 0  # nnx's GRUCell has no b_hn
    else:
        module = rnnkit.nn.LSTM(I, H, batch_first=True, seed=3)
    cell = cls(I, H, rngs=nnx.Rngs(0))
    rf.to_nnx(module, cell)
    x = _x(np.float32, seed=8)
    carry = jnp.zeros((B, H)) if cls is nnx.GRUCell else (jnp.zeros((B, H)), jnp.zeros((B, H)))
    y, _ = _nnx_run(cell, x, carry)
    _close(y, module(x)[0], np.float32)


# ----------------------------------------------------------------------------- refused


def test_nnx_gru_refuses_a_nonzero_b_hn():
    module = rnnkit.nn.GRU(I, H, seed=4)
    with pytest.raises(ValueError, match=r"flax.nnx's GRUCell has no hidden bias on n.*only when b_hn = 0"):
        rf.to_nnx(module, nnx.GRUCell(I, H, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: rf.to_linen(rnnkit.nn.LSTM(I, H, proj_size=2)), ValueError, "proj_size = 2"),
        (lambda: rf.to_linen(rnnkit.nn.GRU(I, H, reset_after=False)), ValueError, "reset_after=False"),
        (lambda: rf.to_linen(rnnkit.nn.RNN(I, H)), TypeError, "expected an rnnkit.nn LSTM or GRU, got RNN"),
        (
            lambda: rf.to_linen(rnnkit.nn.GRU(I, H), layer=1),
            ValueError,
            "layer: expected 0 <= layer < num_layers",
        ),
        (
            lambda: rf.to_nnx(rnnkit.nn.LSTM(I, H), nnx.GRUCell(I, H, rngs=nnx.Rngs(0))),
            TypeError,
            "cell: expected a flax.nnx LSTMCell or OptimizedLSTMCell for LSTM, got GRUCell",
        ),
        (
            lambda: rf.to_nnx(rnnkit.nn.LSTM(I, H), nnx.LSTMCell(I, H + 1, rngs=nnx.Rngs(0))),
            ValueError,
            "cell: expected in_features = 4 and hidden_features = 5",
        ),
        (
            lambda: rf.to_nnx(rnnkit.nn.LSTM(I, H, bidirectional=True), nnx.LSTMCell(I, H, rngs=nnx.Rngs(0))),
            ValueError,
            "module: bidirectional",
        ),
        (
            lambda: rf.from_nnx(nnx.SimpleCell(I, H, rngs=nnx.Rngs(0))),
            TypeError,
            "cell: expected a flax.nnx LSTMCell, OptimizedLSTMCell or GRUCell, got SimpleCell",
        ),
        (
            lambda: rf.from_nnx(nnx.RNN(nnx.GRUCell(I, H, rngs=nnx.Rngs(0)), reverse=True)),
            ValueError,
            r"cell: reverse=True; run the module over x\[:, ::-1\]",
        ),
        (
            lambda: rf.from_nnx(
                nnx.Bidirectional(
                    nnx.RNN(nnx.GRUCell(I, H, rngs=nnx.Rngs(0))),
                    nnx.RNN(nnx.GRUCell(I, H, rngs=nnx.Rngs(1))),
                    merge_fn=lambda a, b: a + b,
                    rngs=nnx.Rngs(2),
                )
            ),
            ValueError,
            "cell: merge_fn: expected the default",
        ),
        (
            lambda: rf.from_nnx(
                nnx.Bidirectional(
                    nnx.RNN(nnx.GRUCell(I, H, rngs=nnx.Rngs(0))),
                    nnx.RNN(nnx.GRUCell(I, H + 1, rngs=nnx.Rngs(1))),
                    rngs=nnx.Rngs(2),
                )
            ),
            ValueError,
            "cell: forward_rnn and backward_rnn hold different cells",
        ),
        (lambda: rf.from_linen([1, 2]), TypeError, "params: expected a mapping"),
        (lambda: rf.from_linen({"params": [1]}), TypeError, "params: expected a mapping below the top key"),
        (
            lambda: rf.from_linen(
                jax.tree.map(lambda a: a.astype(np.int32), rf.to_linen(rnnkit.nn.GRU(I, H)))
            ),
            TypeError,
            "params: ir/kernel: expected a floating-point array, got dtype int32",
        ),
        (
            lambda: rf.from_linen({"i": {"kernel": np.zeros((I, H))}, "h": {"kernel": np.zeros((H, H))}}),
            ValueError,
            "expected the parameters of a linen LSTMCell / OptimizedLSTMCell",
        ),
        (
            lambda: rf.from_linen({"params": {"cell": {**rf.to_linen(rnnkit.nn.GRU(I, H)), "hn": {}}}}),
            ValueError,
            "params: missing 'hn/kernel'",
        ),
        (
            lambda: rf.from_linen(
                {
                    "forward_rnn": {"cell": rf.to_linen(rnnkit.nn.GRU(I, H))},
                    "backward_rnn": {"cell": rf.to_linen(rnnkit.nn.LSTM(I, H))},
                }
            ),
            ValueError,
            "forward_rnn and backward_rnn hold different cells",
        ),
        (
            lambda: rf.from_linen(
                jax.tree.map(lambda a: a.astype(np.float16), rf.to_linen(rnnkit.nn.GRU(I, H)))
            ),
            TypeError,
            "pass dtype=np.float32",
        ),
    ],
)
def test_refusals_say_why(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_import_rnnkit_does_not_import_jax_or_flax():
    import subprocess
    import sys

    code = (
        "import sys, rnnkit, rnnkit.flax; "
        "assert not {'jax', 'flax'} & set(sys.modules), sorted(m for m in sys.modules if 'jax' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

"""rnnkit.keras against Keras 3 itself (torch backend): layers converted by from_layer compute
what the Keras layer computes, .keras files written by Keras load, and weights written by
to_weights make a Keras layer compute what the rnnkit module computes."""

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported; torch is installed
keras = pytest.importorskip("keras")

import rnnkit  # noqa: E402
from rnnkit import keras as rk  # noqa: E402

layers = keras.layers
T, B, I, H = 5, 3, 4, 6
TOL = {np.float32: 1e-5, np.float64: 1e-10}


def _np(t):
    """A Keras output or variable as NumPy (torch's tensors through .detach(): NumPy 2 warns
    on np.asarray of a tensor that requires grad)."""
    t = getattr(t, "value", t)
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def _x(dtype, seed=0):
    return np.random.default_rng(seed).standard_normal((B, T, I)).astype(dtype)


def _random_biases(layer, seed):
    """Non-zero biases everywhere (Keras initialises them to zeros / ones)."""
    rng = np.random.default_rng(seed)
    layer.set_weights([_np(w) + 0.3 * rng.standard_normal(w.shape).astype(w.dtype) for w in layer.weights])


def _make(kind, dtype, seed=0, **kw):
    cls = {"LSTM": layers.LSTM, "GRU": layers.GRU, "SimpleRNN": layers.SimpleRNN}[kind]
    layer = cls(H, return_sequences=True, return_state=True, dtype=np.dtype(dtype).name, **kw)
    layer(_x(dtype))
    _random_biases(layer, seed)
    return layer


CASES = [
    ("LSTM", {}),
    ("LSTM", {"use_bias": False}),
    ("GRU", {}),
    ("GRU", {"reset_after": False}),
    ("GRU", {"reset_after": False, "use_bias": False}),
    ("SimpleRNN", {}),
    ("SimpleRNN", {"activation": "relu"}),
]


def _close(a, b, dtype):
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL[dtype])


# Keras computes in float64 only where its torch backend hands the whole sequence to torch's
# own LSTM / GRU (reset-after); elsewhere its ops promote float64 to float32 (keras
# backend/common/dtypes.py, BIT64_TO_BIT32_DTYPE), so those layers are compared in float32.
F64 = [(kind, kw) for kind, kw in CASES if kind == "LSTM" or (kind == "GRU" and "reset_after" not in kw)]


@pytest.mark.parametrize(
    "kind, kw, dtype",
    [(kind, kw, np.float32) for kind, kw in CASES] + [(kind, kw, np.float64) for kind, kw in F64],
)
def test_from_layer_matches_keras(kind, kw, dtype):
    layer = _make(kind, dtype, **kw)
    module = rk.from_layer(layer)
    assert module.batch_first and module.dtype == dtype
    x = _x(dtype, seed=1)
    rng = np.random.default_rng(2)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    c0 = rng.standard_normal((B, H)).astype(dtype)
    if kind == "LSTM":
        y, h, c = (_np(t) for t in layer(x, initial_state=[h0, c0]))
        out, (h_n, c_n) = module(x, (h0[None], c0[None]))
        _close(c_n[0], c, dtype)
    else:
        y, h = (_np(t) for t in layer(x, initial_state=[h0]))
        out, h_n = module(x, h0[None])
    _close(out, y, dtype)
    _close(h_n[0], h, dtype)


def test_from_layer_gives_the_module_class_and_options():
    gru = rk.from_layer(_make("GRU", np.float32, reset_after=False))
    assert isinstance(gru, rnnkit.nn.GRU) and not gru.reset_after
    rnn = rk.from_layer(_make("SimpleRNN", np.float32, activation="relu"))
    assert isinstance(rnn, rnnkit.nn.RNN) and rnn.nonlinearity == "relu"
    lstm = rk.from_layer(_make("LSTM", np.float32, use_bias=False))
    assert isinstance(lstm, rnnkit.nn.LSTM) and not lstm.bias


def test_rnn_layer_over_a_cell_converts():
    layer = layers.RNN(layers.GRUCell(H, reset_after=False), return_sequences=True)
    x = _x(np.float32)
    layer(x)
    _random_biases(layer, 3)
    out, _ = rk.from_layer(layer)(x)
    _close(out, _np(layer(x)), np.float32)


def test_stacked_cells_are_layers():
    layer = layers.RNN(
        [layers.LSTMCell(H), layers.LSTMCell(H), layers.LSTMCell(H)], return_sequences=True, return_state=True
    )
    x = _x(np.float32, seed=17)
    layer(x)
    _random_biases(layer, 18)
    module = rk.from_layer(layer)
    assert module.num_layers == 3
    y, *states = layer(x)
    out, (h_n, c_n) = module(x)
    _close(out, _np(y), np.float32)
    for k, (h, c) in enumerate(states):  # Keras: [h, c] per cell, bottom first
        _close(h_n[k], _np(h), np.float32)
        _close(c_n[k], _np(c), np.float32)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
def test_bidirectional_concat_matches_keras(kind):
    cls = getattr(layers, kind)
    x = _x(np.float32, seed=4)
    bi = layers.Bidirectional(cls(H, return_sequences=True, return_state=True))
    bi(x)
    _random_biases(bi, 5)
    module = rk.from_layer(bi)
    assert module.bidirectional and module.batch_first
    outs = [_np(t) for t in bi(x)]
    out, state = module(x)
    _close(out, outs[0], np.float32)
    if kind == "LSTM":
        h_n, c_n = state
        for got, want in zip([h_n[0], c_n[0], h_n[1], c_n[1]], outs[1:]):
            _close(got, want, np.float32)
    else:
        _close(state[0], outs[1], np.float32)
        _close(state[1], outs[2], np.float32)
    # without return_sequences Keras returns both directions' final states
    last = layers.Bidirectional(cls(H))
    last(x)
    last.set_weights([_np(w) for w in bi.weights])
    h = state[0] if kind == "LSTM" else state
    _close(np.concatenate([h[0], h[1]], axis=1), _np(last(x)), np.float32)


@pytest.mark.parametrize("mode", ["sum", "mul", "ave"])
def test_bidirectional_merge_modes_match_keras(mode):
    """Bidirectional(merge_mode=sum / mul / ave): outputs and final states equal Keras's, and the
    backward gives what torch's autograd gives through the Keras layer (dx)."""
    torch = pytest.importorskip("torch")
    x = _x(np.float32, seed=6)
    bi = layers.Bidirectional(layers.GRU(H, return_sequences=True, return_state=True), merge_mode=mode)
    bi(x)
    _random_biases(bi, 7)
    module = rk.from_layer(bi)
    assert isinstance(module, rk.MergeDirections) and module.mode == mode
    xt = torch.tensor(x, requires_grad=True)
    outs = bi(xt)
    out, h_n = module(x)
    _close(out, _np(outs[0]), np.float32)
    _close(h_n[0], _np(outs[1]), np.float32)
    _close(h_n[1], _np(outs[2]), np.float32)
    dout = np.random.default_rng(8).standard_normal(out.shape).astype(np.float32)
    outs[0].backward(torch.tensor(dout))
    dx, _ = module.backward(dout)
    _close(dx, xt.grad.numpy(), np.float32)
    # to_weights sees through the merge
    twin = layers.Bidirectional(layers.GRU(H, return_sequences=True), merge_mode=mode)
    twin(x)
    twin.set_weights(rk.to_weights(module))
    _close(_np(twin(x)), out, np.float32)


def test_go_backwards_runs_the_reversed_sequence():
    layer = layers.LSTM(H, return_sequences=True, return_state=True, go_backwards=True)
    x = _x(np.float32, seed=6)
    layer(x)
    _random_biases(layer, 7)
    module = rk.from_layer(layer)
    assert isinstance(module, rk.GoBackwards)
    y, h, c = (_np(t) for t in layer(x))
    out, (h_n, c_n) = module(x)
    _close(out, y, np.float32)
    _close(h_n[0], h, np.float32)
    _close(c_n[0], c, np.float32)
    assert rk.to_weights(module)[0].shape == (I, 4 * H)
    # backward: dx in x's order, as torch's autograd gives it through the Keras layer
    torch = pytest.importorskip("torch")
    dout = np.random.default_rng(19).standard_normal((B, T, H)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    layer(xt)[0].backward(torch.tensor(dout))
    dx, _ = module.backward(dout)
    _close(dx, xt.grad.numpy(), np.float32)


def test_keras_mask_of_post_padded_sequences_is_lengths():
    lengths = np.array([5, 2, 3])
    mask = np.arange(T)[None] < lengths[:, None]  # (B, T)
    x = _x(np.float32, seed=8)
    bi = layers.Bidirectional(layers.GRU(H, return_sequences=True, return_state=True))
    bi(x)
    _random_biases(bi, 9)
    y, h_f, h_b = (_np(t) for t in bi(x, mask=mask))
    out, h_n = rk.from_layer(bi)(x, lengths=lengths)
    _close(h_n[0], h_f, np.float32)
    _close(h_n[1], h_b, np.float32)
    _close(out, y, np.float32)  # Bidirectional sets zero_output_for_mask: zeros past the mask
    # a plain layer (zero_output_for_mask=False) repeats its last output past the mask instead
    single = layers.LSTM(H, return_sequences=True, return_state=True)
    single(x)
    _random_biases(single, 16)
    y, h, c = (_np(t) for t in single(x, mask=mask))
    out, (h_n, c_n) = rk.from_layer(single)(x, lengths=lengths)
    _close(out[mask], y[mask], np.float32)
    _close(h_n[0], h, np.float32)
    _close(c_n[0], c, np.float32)


# Keras's own saving converts torch tensors with np.array(tensor), which NumPy 2 warns about
# (keras backend/torch/core.py); nothing rnnkit does.
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
def test_load_reads_every_recurrent_layer_of_a_keras_file(tmp_path):
    inner = keras.Sequential(
        [keras.Input((T, 2 * H)), layers.SimpleRNN(H, return_sequences=True)], name="inner"
    )
    model = keras.Sequential(
        [
            keras.Input((T, I)),
            layers.LSTM(H, return_sequences=True, name="first"),
            layers.Bidirectional(layers.GRU(H, return_sequences=True, reset_after=False), name="bi"),
            inner,
            layers.GRU(H, name="last"),
            layers.Dense(2),
        ]
    )
    for layer in model.layers:
        _random_biases(layer, 10)
    path = tmp_path / "model.keras"
    model.save(path)
    x = _x(np.float32, seed=11)
    want = _np(model(x))
    loaded = rk.load(str(path))
    assert [name for name, _ in loaded] == ["first", "bi", loaded[2][0], "last"]
    assert loaded[2][0] == inner.layers[0].name
    h = x
    for _, module in loaded:
        h, _ = module(h)
    dense = model.layers[-1]
    kernel, bias = (_np(w) for w in dense.weights)
    _close(h[:, -1] @ kernel + bias, want, np.float32)


MODULES = [
    lambda: rnnkit.nn.LSTM(I, H, seed=1, batch_first=True),
    lambda: rnnkit.nn.LSTM(I, H, bias=False, seed=1, batch_first=True),
    lambda: rnnkit.nn.GRU(I, H, seed=1, batch_first=True),
    lambda: rnnkit.nn.GRU(I, H, reset_after=False, seed=1, batch_first=True),
    lambda: rnnkit.nn.RNN(I, H, nonlinearity="relu", seed=1, batch_first=True),
    lambda: rnnkit.nn.LSTM(I, H, bidirectional=True, seed=1, batch_first=True),
    lambda: rnnkit.nn.GRU(I, H, bidirectional=True, reset_after=False, seed=1, batch_first=True),
]


def _keras_twin(module):
    """A Keras layer of the module's configuration, built."""
    kind = {rnnkit.nn.LSTM: layers.LSTM, rnnkit.nn.GRU: layers.GRU, rnnkit.nn.RNN: layers.SimpleRNN}
    kw = {"use_bias": module.bias, "return_sequences": True}
    if isinstance(module, rnnkit.nn.GRU):
        kw["reset_after"] = module.reset_after
    if isinstance(module, rnnkit.nn.RNN):
        kw["activation"] = module.nonlinearity
    layer = kind[type(module)](module.hidden_size, **kw)
    if module.bidirectional:
        layer = layers.Bidirectional(layer)
    layer(_x(np.float32))
    return layer


@pytest.mark.parametrize("make", MODULES)
def test_to_weights_makes_keras_compute_what_rnnkit_computes(make):
    module = make()
    layer = _keras_twin(module)
    layer.set_weights(rk.to_weights(module))
    x = _x(np.float32, seed=12)
    _close(_np(layer(x)), module(x)[0], np.float32)


def test_to_weights_of_one_layer_of_a_stack():
    module = rnnkit.nn.GRU(I, H, num_layers=2, seed=3, batch_first=True)
    first, second = layers.GRU(H, return_sequences=True), layers.GRU(H, return_sequences=True)
    x = _x(np.float32, seed=13)
    first(x)
    second(_np(first(x)))
    first.set_weights(rk.to_weights(module, layer=0))
    second.set_weights(rk.to_weights(module, layer=1))
    _close(_np(second(first(x))), module(x)[0], np.float32)


# ----------------------------------------------------------------------------- refused


def _built(layer, x=None):
    layer(_x(np.float32) if x is None else x)
    return layer


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: _built(layers.LSTM(H, activation="relu")), "activation: expected 'tanh'"),
        (lambda: _built(layers.GRU(H, recurrent_activation="hard_sigmoid")), "recurrent_activation"),
        (lambda: _built(layers.SimpleRNN(H, activation="sigmoid")), "expected 'tanh' or 'relu'"),
        (lambda: layers.LSTM(H), "not built"),
        (
            lambda: _built(layers.Bidirectional(layers.LSTM(H, return_sequences=True), merge_mode=None)),
            "merge_mode: expected 'concat', 'sum', 'mul' or 'ave', got None",
        ),
        (
            lambda: _built(
                layers.Bidirectional(layers.GRU(H), backward_layer=layers.GRU(H + 1, go_backwards=True))
            ),
            "directions differ",
        ),
        (
            lambda: _built(
                layers.Bidirectional(layers.LSTM(H, go_backwards=True), backward_layer=layers.LSTM(H))
            ),
            "expected a forward layer with go_backwards=False",
        ),
        (
            lambda: _built(layers.RNN([layers.LSTMCell(H), layers.GRUCell(H)])),
            "its cells are LSTMCell, GRUCell; expected",
        ),
        (
            lambda: _built(layers.RNN([layers.GRUCell(H), layers.GRUCell(H + 1)])),
            "its stacked cells differ",
        ),
        (
            lambda: _built(layers.Bidirectional(layers.RNN([layers.GRUCell(H), layers.GRUCell(H)]))),
            "a Bidirectional over stacked cells",
        ),
    ],
)
def test_refused_layers_say_why(make, message):
    layer = make()
    with pytest.raises(ValueError, match=message) as err:
        rk.from_layer(layer)
    assert repr(layer.name) in str(err.value)


def test_not_a_recurrent_layer():
    with pytest.raises(TypeError, match="layer: expected a Keras LSTM, GRU, SimpleRNN, RNN or Bidirectional"):
        rk.from_layer(_built(layers.Dense(3)))


def test_half_precision_weights_need_a_dtype():
    # (torch has no float16 QR on the CPU for Keras's orthogonal initialiser)
    layer = _built(layers.GRU(H, dtype="float16", recurrent_initializer="glorot_uniform"), _x(np.float16))
    with pytest.raises(TypeError, match="pass dtype=np.float32"):
        rk.from_layer(layer)
    assert rk.from_layer(layer, dtype=np.float32).dtype == np.float32


def test_to_weights_refusals():
    with pytest.raises(ValueError, match="proj_size = 2; Keras's LSTM has no projection"):
        rk.to_weights(rnnkit.nn.LSTM(I, H, proj_size=2))
    with pytest.raises(ValueError, match="layer: expected 0 <= layer < num_layers = 1, got 1"):
        rk.to_weights(rnnkit.nn.GRU(I, H), layer=1)
    with pytest.raises(TypeError, match="module: expected an rnnkit.nn RNN, LSTM or GRU, got Linear"):
        rk.to_weights(rnnkit.nn.Linear(I, H))


def test_go_backwards_refuses_lengths():
    module = rk.GoBackwards(rnnkit.nn.GRU(I, H, batch_first=True))
    with pytest.raises(ValueError, match="lengths: not supported by GoBackwards"):
        module(_x(np.float32), lengths=np.full(B, T))
    with pytest.raises(ValueError, match=r"x: expected 3 dimensions \(B, T, I\), got shape \(5, 4\)"):
        module(np.zeros((T, I), np.float32))
    with pytest.raises(TypeError, match="module: expected a unidirectional"):
        rk.GoBackwards(rnnkit.nn.GRU(I, H, bidirectional=True))


def test_import_rnnkit_does_not_import_keras():
    import subprocess
    import sys

    code = "import sys, rnnkit, rnnkit.keras; assert 'keras' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kind, kw", [("LSTM", {}), ("GRU", {}), ("GRU", {"reset_after": False})])
def test_gradients_match_torch_autograd_through_keras(kind, kw):
    """The converted module's backward gives what torch's autograd gives through the Keras
    layer (its torch backend): dx, and the kernel's gradient in Keras's layout."""
    torch = pytest.importorskip("torch")
    layer = _make(kind, np.float32, **kw)
    module = rk.from_layer(layer)
    x = _x(np.float32, seed=14)
    dout = np.random.default_rng(15).standard_normal((B, T, H)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    y = layer(xt)[0]
    y.backward(torch.tensor(dout))
    module(x)
    dx, _ = module.backward(dout)
    _close(dx, xt.grad.numpy(), np.float32)
    dkernel = layer.cell.kernel.value.grad.numpy()  # (I, G*H), Keras's gate order
    dW_ih = module.weight_ih_l0.grad
    if kind == "GRU":  # r, z, n -> z, r, n
        dW_ih = np.concatenate([dW_ih[H : 2 * H], dW_ih[:H], dW_ih[2 * H :]])
    _close(dW_ih.T, dkernel, np.float32)

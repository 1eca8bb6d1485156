"""ONNX's cell ``clip`` and LSTM ``input_forget`` in the fused kernels, against the NumPy oracle.

The oracle (rnnkit.reference) is written from the equations: every activation's input clamped
to [-clip, clip] (RNN: the pre-activation; LSTM: the four gates', not c_t's; GRU: r's, z's and
n's whole argument), its derivative zero where an input was cut; input_forget couples the LSTM's
gates, f = 1 - i (the f block's pre-activation unused). Its backward is checked
against central finite differences; the kernels' forward and backward against the oracle
(float64 1e-12, float32 1e-5) for every cell, with lengths and reverse; the modules and their
streams likewise. Where onnxruntime applies clip is checked in test_onnx.py.
"""

import numpy as np
import pytest

import rnnkit
from conftest import CELLS, GATES, finite_difference
from rnnkit import reference as ref

T, B, I, H = 4, 3, 3, 4
CLIP = 0.75  # a fair share of these pre-activations lies beyond it
LENGTHS = [None, [4, 2, 1], [1, 3, 2]]
TOL = {np.float64: 1e-12, np.float32: 1e-5}


def make_params(kind, rng, dtype=np.float64):
    G = GATES[CELLS[kind][0]]
    p = {"x": rng.normal(size=(T, B, I)), "h0": rng.normal(scale=0.5, size=(B, H))}
    if CELLS[kind][0] == "lstm":
        p["c0"] = rng.normal(scale=0.5, size=(B, H))
    p["W_ih"] = rng.uniform(-1.0, 1.0, size=(G * H, I))
    p["W_hh"] = rng.uniform(-1.0, 1.0, size=(G * H, H))
    p["b_ih"] = rng.uniform(-0.5, 0.5, size=G * H)
    p["b_hh"] = rng.uniform(-0.5, 0.5, size=G * H)
    return {k: a.astype(dtype) for k, a in p.items()}


def forward(lib, kind, p, **opts):
    """(y, finals, workspace) of rnnkit or rnnkit.reference."""
    cell, variant = CELLS[kind]
    w = (p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
    if cell == "lstm":
        y, finals, ws = lib.lstm_forward(p["x"], p["h0"], p["c0"], *w, **opts)
        return y, finals, ws
    y, h_T, ws = getattr(lib, f"{cell}_forward")(p["x"], p["h0"], *w, **variant, **opts)
    return y, (h_T,), ws


def backward(lib, kind, dy, d_finals, ws):
    g = getattr(lib, f"{CELLS[kind][0]}_backward")(dy, *d_finals, ws)
    return {f[1:]: val for f, val in g._asdict().items()}


def clipped_fraction(ws):
    """Share of the oracle's pre-activations that its clip cut."""
    masks = []
    for cache in ws["caches"]:
        keep = cache["keep"]
        masks += [k.ravel() for k in (keep if isinstance(keep, tuple) else (keep,))]
    return 1.0 - np.concatenate(masks).mean()


def rel_error(a, b):
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), 1e-3)
    return np.abs(a - b).max(initial=0.0) / scale


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", CELLS)
def test_oracle_clip_gradients_match_finite_differences(kind, reverse):
    rng = np.random.default_rng(3)
    p = make_params(kind, rng)
    opts = {"clip": CLIP, "reverse": reverse, "lengths": [4, 2, 3]}
    y, finals, ws = forward(ref, kind, p, **opts)
    assert 0.1 < clipped_fraction(ws) < 0.9  # both sides of the bound are exercised
    dy = rng.normal(size=y.shape)
    d_finals = [rng.normal(size=f.shape) for f in finals]

    def loss():
        y, finals, _ = forward(ref, kind, p, training=False, **opts)
        return np.sum(dy * y) + sum(np.sum(d * f) for d, f in zip(d_finals, finals))

    analytic = backward(ref, kind, dy, d_finals, ws)
    for name, value in p.items():
        numeric = finite_difference(loss, value)
        assert rel_error(numeric, analytic[name]) <= 1e-6, name
        assert np.abs(numeric).max() > 1e-3, name


def test_oracle_clip_bounds_the_activation_inputs():
    """The equations, one LSTM and one GRU step by hand."""
    rng = np.random.default_rng(4)
    for kind in ("lstm", "gru"):
        p = make_params(kind, rng)
        x, h = p["x"][0], p["h0"]
        gx = x @ p["W_ih"].T + p["b_ih"]
        gh = h @ p["W_hh"].T + p["b_hh"]
        sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
        clamp = lambda a: np.clip(a, -CLIP, CLIP)  # noqa: E731
        if kind == "lstm":
            i, f, g, o = np.split(clamp(gx + gh), 4, axis=1)
            c = sig(f) * p["c0"] + sig(i) * np.tanh(g)
            expected = sig(o) * np.tanh(c)  # c itself is not clipped
            (got, _), _ = ref.lstm_cell_forward(
                x, h, p["c0"], *[p[k] for k in ("W_ih", "W_hh", "b_ih", "b_hh")], clip=CLIP
            )
        else:
            r = sig(clamp(gx[:, :H] + gh[:, :H]))
            z = sig(clamp(gx[:, H : 2 * H] + gh[:, H : 2 * H]))
            n = np.tanh(clamp(gx[:, 2 * H :] + r * gh[:, 2 * H :]))
            expected = (1 - z) * n + z * h
            got, _ = ref.gru_cell_forward(x, h, *[p[k] for k in ("W_ih", "W_hh", "b_ih", "b_hh")], clip=CLIP)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", CELLS)
def test_kernel_clip_matches_oracle(kind, reverse, lengths, dtype):
    rng = np.random.default_rng(5)
    p = make_params(kind, rng, dtype)
    opts = {"clip": CLIP, "reverse": reverse, "lengths": lengths}
    y, finals, ws = forward(rnnkit, kind, p, **opts)
    y_ref, finals_ref, ws_ref = forward(ref, kind, p, **opts)
    assert ws.clip == CLIP
    tol = TOL[dtype]
    for a, e in zip((y, *finals), (y_ref, *finals_ref)):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, e, rtol=0, atol=tol)
    dy = rng.normal(size=y.shape).astype(dtype)
    d_finals = [rng.normal(size=f.shape).astype(dtype) for f in finals]
    got = backward(rnnkit, kind, dy, d_finals, ws)
    expected = backward(ref, kind, dy, d_finals, ws_ref)
    for name, e in expected.items():
        assert rel_error(got[name], e) <= tol, name
    # the bound cuts: without it the numbers differ
    y_free, _, _ = forward(rnnkit, kind, p, reverse=reverse, lengths=lengths)
    assert np.abs(y_free - y).max() > 1e-2


@pytest.mark.parametrize("kind", CELLS)
def test_inference_forward_and_no_clip_unchanged(kind):
    rng = np.random.default_rng(6)
    p = make_params(kind, rng)
    y, finals, ws = forward(rnnkit, kind, p, clip=CLIP, training=False)
    assert ws is None
    y_ref, _, _ = forward(ref, kind, p, clip=CLIP)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
    # clip=None is the default path
    a, _, ws_none = forward(rnnkit, kind, p, clip=None)
    b, _, _ = forward(rnnkit, kind, p)
    np.testing.assert_array_equal(a, b)
    assert ws_none.clip is None


@pytest.mark.parametrize(
    "bad, error",
    [(0.0, ValueError), (-1.0, ValueError), (float("nan"), TypeError), ("1", TypeError), (True, TypeError)],
)
def test_clip_validation_names_the_argument(bad, error):
    p = make_params("gru", np.random.default_rng(7))
    with pytest.raises(error, match="clip: expected"):
        forward(rnnkit, "gru", p, clip=bad)
    with pytest.raises(error, match="clip: expected"):
        rnnkit.nn.LSTM(I, H, clip=bad)


@pytest.mark.parametrize(
    "name, kw", [("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("GRU", {"reset_after": False})]
)
def test_module_and_stream_clip_match_oracle(name, kw):
    rng = np.random.default_rng(8)
    m = getattr(rnnkit.nn, name)(
        I, H, num_layers=2, bidirectional=False, dtype=np.float64, seed=1, clip=0.2, **kw
    )
    assert repr(m).endswith("clip=0.2)")
    x = rng.normal(size=(T, B, I))
    out, _ = m(x)
    # layer by layer with the oracle
    inp = x
    cell = name.lower()
    for layer in range(2):
        w = [getattr(m, f"{k}_l{layer}").data for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        if cell == "lstm":
            inp, _, _ = ref.lstm_forward(inp, None, None, *w, clip=0.2)
        else:
            inp, _, _ = getattr(ref, f"{cell}_forward")(inp, None, *w, clip=0.2, **kw)
    np.testing.assert_allclose(out, inp, rtol=0, atol=1e-12)
    free = getattr(rnnkit.nn, name)(I, H, num_layers=2, dtype=np.float64, seed=1, **kw)
    assert np.abs(free(x)[0] - out).max() > 1e-3
    # gradients reach the parameters through the clipped kernel
    m.backward(np.ones_like(out))
    assert np.isfinite(m.weight_ih_l0.grad).all()
    # a stream computes the same steps, chunk by chunk
    m.eval()
    stream = m.stream(batch=B)
    parts = [stream(x[:1]), stream(x[1:])]
    np.testing.assert_allclose(np.concatenate(parts), out, rtol=0, atol=1e-12)


@pytest.mark.skipif(
    rnnkit._core._cpu_info()["bf16_kernel"] == "none", reason="the CPU lacks AVX512-BF16 and AMX-BF16"
)
@pytest.mark.parametrize("kind", CELLS)
def test_bf16_with_clip_matches_bf16_oracle(kind):
    """precision="bf16" shares the elementwise part: one step to float32 accumulation error
    (test_bf16.py's bounds: 1e-5 of the largest value forward, 1e-4 backward)."""
    rng = np.random.default_rng(9)
    p = make_params(kind, rng, np.float32)
    p["x"] = p["x"][:1]
    opts = {"clip": CLIP, "precision": "bf16"}
    y, finals, ws = forward(rnnkit, kind, p, **opts)
    p64 = {k: a.astype(np.float64) for k, a in p.items()}
    y_ref, finals_ref, ws_ref = forward(ref, kind, p64, **opts)
    assert 0.1 < clipped_fraction(ws_ref) < 0.9
    for a, e in zip((y, *finals), (y_ref, *finals_ref)):
        assert np.abs(a - e).max() <= 1e-5 * np.abs(e).max()
    dy = rng.normal(size=y.shape).astype(np.float32)
    d_finals = [rng.normal(size=f.shape).astype(np.float32) for f in finals]
    got = backward(rnnkit, kind, dy, d_finals, ws)
    expected = backward(ref, kind, dy.astype(np.float64), [d.astype(np.float64) for d in d_finals], ws_ref)
    for name, e in expected.items():
        assert np.abs(got[name] - e).max() <= 1e-4 * max(np.abs(e).max(), 1e-30), name


# ----------------------------------------------------------------------------- input_forget


@pytest.mark.parametrize("clip", [None, CLIP])
@pytest.mark.parametrize("reverse", [False, True])
def test_oracle_input_forget_gradients_match_finite_differences(reverse, clip):
    rng = np.random.default_rng(10)
    p = make_params("lstm", rng)
    opts = {"clip": clip, "reverse": reverse, "lengths": [4, 2, 3], "input_forget": True}
    y, finals, ws = forward(ref, "lstm", p, **opts)
    dy = rng.normal(size=y.shape)
    d_finals = [rng.normal(size=f.shape) for f in finals]

    def loss():
        y, finals, _ = forward(ref, "lstm", p, training=False, **opts)
        return np.sum(dy * y) + sum(np.sum(d * f) for d, f in zip(d_finals, finals))

    analytic = backward(ref, "lstm", dy, d_finals, ws)
    for name, value in p.items():
        numeric = finite_difference(loss, value)
        assert rel_error(numeric, analytic[name]) <= 1e-6, name
    # the forget block's parameters are unused
    for name in ("W_ih", "W_hh", "b_ih", "b_hh"):
        assert not analytic[name][H : 2 * H].any()
        assert np.abs(analytic[name][:H]).max() > 1e-3


def test_oracle_input_forget_is_one_minus_i():
    rng = np.random.default_rng(11)
    p = make_params("lstm", rng)
    x, h, c = p["x"][0], p["h0"], p["c0"]
    a = x @ p["W_ih"].T + p["b_ih"] + h @ p["W_hh"].T + p["b_hh"]
    sig = lambda u: 1 / (1 + np.exp(-u))  # noqa: E731
    i, _, g, o = np.split(a, 4, axis=1)
    c_next = (1 - sig(i)) * c + sig(i) * np.tanh(g)
    w = [p[k] for k in ("W_ih", "W_hh", "b_ih", "b_hh")]
    (h_next, c_got), _ = ref.lstm_cell_forward(x, h, c, *w, input_forget=True)
    np.testing.assert_allclose(c_got, c_next, rtol=0, atol=1e-14)
    np.testing.assert_allclose(h_next, sig(o) * np.tanh(c_next), rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("clip", [None, CLIP])
@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("reverse", [False, True])
def test_kernel_input_forget_matches_oracle(reverse, lengths, clip, dtype):
    rng = np.random.default_rng(12)
    p = make_params("lstm", rng, dtype)
    opts = {"clip": clip, "reverse": reverse, "lengths": lengths, "input_forget": True}
    y, finals, ws = forward(rnnkit, "lstm", p, **opts)
    y_ref, finals_ref, ws_ref = forward(ref, "lstm", p, **opts)
    assert ws.saved.input_forget
    tol = TOL[dtype]
    for a, e in zip((y, *finals), (y_ref, *finals_ref)):
        np.testing.assert_allclose(a, e, rtol=0, atol=tol)
    dy = rng.normal(size=y.shape).astype(dtype)
    d_finals = [rng.normal(size=f.shape).astype(dtype) for f in finals]
    got = backward(rnnkit, "lstm", dy, d_finals, ws)
    expected = backward(ref, "lstm", dy, d_finals, ws_ref)
    for name, e in expected.items():
        assert rel_error(got[name], e) <= tol, name
    y_free, _, _ = forward(rnnkit, "lstm", p, clip=clip, reverse=reverse, lengths=lengths)
    assert np.abs(y_free - y).max() > 1e-2
    # inference runs the same cell
    y_inf, _, _ = forward(rnnkit, "lstm", p, training=False, **opts)
    np.testing.assert_array_equal(y_inf, y)


def test_input_forget_module_stream_and_validation():
    rng = np.random.default_rng(13)
    m = rnnkit.nn.LSTM(I, H, num_layers=2, dtype=np.float64, seed=1, input_forget=True, clip=0.5)
    assert repr(m) == "LSTM(3, 4, num_layers=2, input_forget=True, dtype=float64, clip=0.5)"
    x = rng.normal(size=(T, B, I))
    out, _ = m(x)
    inp = x
    for layer in range(2):
        w = [getattr(m, f"{k}_l{layer}").data for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        inp, _, _ = ref.lstm_forward(inp, None, None, *w, clip=0.5, input_forget=True)
    np.testing.assert_allclose(out, inp, rtol=0, atol=1e-12)
    m.backward(np.ones_like(out))
    assert not m.weight_ih_l0.grad[H : 2 * H].any() and m.weight_ih_l0.grad[:H].any()
    m.eval()
    stream = m.stream(batch=B)
    parts = [stream(x[:2]), stream(x[2:])]
    np.testing.assert_allclose(np.concatenate(parts), out, rtol=0, atol=1e-12)
    with pytest.raises(TypeError, match="input_forget"):
        rnnkit.nn.LSTM(I, H, input_forget="yes")
    p = make_params("lstm", rng)
    with pytest.raises(TypeError, match="input_forget"):
        forward(rnnkit, "lstm", p, input_forget=1.5)

"""LSTM peepholes (ONNX's P) in the fused kernel, against the NumPy oracle.

The oracle (rnnkit.reference) is written from ONNX's equations, rows of W_peep (3, H) in
rnnkit's gate order i, f, o: ``i = σ(a_i + p_i c_{t-1})``, ``f = σ(a_f + p_f c_{t-1})``,
``o = σ(a_o + p_o c_t)``, each inside the clip; with input_forget ``f = 1 - i`` (p_f unused).
Its backward, dW_peep included, is checked against central finite differences; the kernel's
forward and backward against the oracle (float64 1e-12, float32 1e-5 normwise) with lengths,
reverse, clip, input_forget and a projection; the module and its stream likewise. Where
onnxruntime puts the peepholes is checked in test_onnx.py.
"""

import numpy as np
import pytest

import rnnkit
from conftest import finite_difference
from rnnkit import reference as ref

T, B, I, H = 4, 3, 3, 4
CLIP = 0.75
LENGTHS = [None, [4, 2, 1], [1, 3, 2]]
TOL = {np.float64: 1e-12, np.float32: 1e-5}
WEIGHTS = ("W_ih", "W_hh", "b_ih", "b_hh", "W_peep")


def make_params(rng, dtype=np.float64, P=None):
    S = P or H
    p = {
        "x": rng.normal(size=(T, B, I)),
        "h0": rng.normal(scale=0.5, size=(B, S)),
        "c0": rng.normal(scale=0.5, size=(B, H)),
        "W_ih": rng.uniform(-1.0, 1.0, size=(4 * H, I)),
        "W_hh": rng.uniform(-1.0, 1.0, size=(4 * H, S)),
        "b_ih": rng.uniform(-0.5, 0.5, size=4 * H),
        "b_hh": rng.uniform(-0.5, 0.5, size=4 * H),
        "W_peep": rng.uniform(-1.0, 1.0, size=(3, H)),
    }
    if P:
        p["W_hr"] = rng.uniform(-1.0, 1.0, size=(P, H))
    return {k: a.astype(dtype) for k, a in p.items()}


def forward(lib, p, **opts):
    kw = {"W_hr": p["W_hr"]} if "W_hr" in p else {}
    return lib.lstm_forward(
        p["x"], p["h0"], p["c0"], p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"], W_peep=p["W_peep"], **kw, **opts
    )


def backward(lib, dy, d_finals, ws):
    g = lib.lstm_backward(dy, *d_finals, ws)
    assert type(g).__name__ == "LSTMPeepSequenceGrads"
    return {f[1:]: val for f, val in g._asdict().items() if val is not None}


def rel_error(a, b):
    """Normwise relative error."""
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"reverse": True, "lengths": [4, 2, 3]},
        {"clip": CLIP, "lengths": [4, 2, 3]},
        {"input_forget": True, "clip": CLIP, "reverse": True},
    ],
)
def test_oracle_peephole_gradients_match_finite_differences(opts):
    rng = np.random.default_rng(1)
    p = make_params(rng)
    y, finals, ws = forward(ref, p, **opts)
    dy = rng.normal(size=y.shape)
    d_finals = [rng.normal(size=f.shape) for f in finals]

    def loss():
        y, finals, _ = forward(ref, p, training=False, **opts)
        return np.sum(dy * y) + sum(np.sum(d * f) for d, f in zip(d_finals, finals))

    analytic = backward(ref, dy, d_finals, ws)
    for name, value in p.items():
        numeric = finite_difference(loss, value)
        scale = max(np.abs(numeric).max(), 1e-3)
        assert np.abs(numeric - analytic[name]).max() <= 1e-6 * scale, name
    numeric = finite_difference(loss, p["W_peep"])
    assert np.abs(numeric[0]).max() > 1e-3 and np.abs(numeric[2]).max() > 1e-3
    if opts.get("input_forget"):  # p_f is unused
        assert not analytic["W_peep"][1].any()
    else:
        assert np.abs(numeric[1]).max() > 1e-3


def test_oracle_peepholes_are_onnxs_equations():
    """One step by hand: i and f see c_{t-1}, o sees c_t."""
    rng = np.random.default_rng(2)
    p = make_params(rng)
    x, h, c, Pw = p["x"][:1], p["h0"], p["c0"], p["W_peep"]
    a = x[0] @ p["W_ih"].T + p["b_ih"] + h @ p["W_hh"].T + p["b_hh"]
    sig = lambda u: 1 / (1 + np.exp(-u))  # noqa: E731
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=1)
    c_next = sig(a_f + Pw[1] * c) * c + sig(a_i + Pw[0] * c) * np.tanh(a_g)
    h_next = sig(a_o + Pw[2] * c_next) * np.tanh(c_next)
    y, (h_T, c_T), _ = forward(ref, {**p, "x": x})
    np.testing.assert_allclose(c_T, c_next, rtol=0, atol=1e-14)
    np.testing.assert_allclose(h_T, h_next, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("input_forget", [False, True])
@pytest.mark.parametrize("clip", [None, CLIP])
@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("reverse", [False, True])
def test_kernel_peepholes_match_oracle(reverse, lengths, clip, input_forget, dtype):
    rng = np.random.default_rng(3)
    p = make_params(rng, dtype)
    opts = {"clip": clip, "reverse": reverse, "lengths": lengths, "input_forget": input_forget}
    y, finals, ws = forward(rnnkit, p, **opts)
    y_ref, finals_ref, ws_ref = forward(ref, p, **opts)
    assert ws.saved.W_peep is p["W_peep"]
    tol = TOL[dtype]
    for a, e in zip((y, *finals), (y_ref, *finals_ref)):
        assert rel_error(a, e) <= tol
    dy = rng.normal(size=y.shape).astype(dtype)
    d_finals = [rng.normal(size=f.shape).astype(dtype) for f in finals]
    got = backward(rnnkit, dy, d_finals, ws)
    expected = backward(ref, dy, d_finals, ws_ref)
    assert set(got) == set(expected) and "W_peep" in got
    for name, e in expected.items():
        assert rel_error(got[name], e) <= tol, name
    # the peepholes matter, and inference runs the same cell
    y_free, _, _ = rnnkit.lstm_forward(
        *(p[k] for k in ("x", "h0", "c0", "W_ih", "W_hh", "b_ih", "b_hh")), **opts
    )
    assert np.abs(y_free - y).max() > 1e-2
    y_inf, _, _ = forward(rnnkit, p, training=False, **opts)
    np.testing.assert_array_equal(y_inf, y)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_peepholes_with_projection_match_oracle(dtype):
    rng = np.random.default_rng(4)
    p = make_params(rng, dtype, P=2)
    opts = {"lengths": [4, 2, 3], "clip": CLIP}
    y, finals, ws = forward(rnnkit, p, **opts)
    y_ref, finals_ref, ws_ref = forward(ref, p, **opts)
    for a, e in zip((y, *finals), (y_ref, *finals_ref)):
        assert rel_error(a, e) <= TOL[dtype]
    dy = rng.normal(size=y.shape).astype(dtype)
    got = backward(rnnkit, dy, [None, None], ws)
    expected = backward(ref, dy, [None, None], ws_ref)
    assert "W_hr" in got and "W_peep" in got
    for name, e in expected.items():
        assert rel_error(got[name], e) <= TOL[dtype], name


def test_peephole_validation_names_the_argument():
    p = make_params(np.random.default_rng(5))
    with pytest.raises(ValueError, match=r"W_peep: expected shape \(3, H\)"):
        forward(rnnkit, {**p, "W_peep": p["W_peep"][:2]})
    with pytest.raises(TypeError, match="W_peep"):
        forward(rnnkit, {**p, "W_peep": p["W_peep"].astype(np.float32)})
    with pytest.raises(TypeError, match="peepholes"):
        rnnkit.nn.LSTM(I, H, peepholes="yes")


def test_module_and_stream_peepholes_match_oracle():
    rng = np.random.default_rng(6)
    m = rnnkit.nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=1, peepholes=True)
    assert repr(m) == "LSTM(3, 4, num_layers=2, bidirectional=True, peepholes=True, dtype=float64)"
    names = [n for n in m.state_dict() if n.startswith("weight_peep")]
    assert names == ["weight_peep_l0", "weight_peep_l0_reverse", "weight_peep_l1", "weight_peep_l1_reverse"]
    bound = 1 / np.sqrt(H)
    for n in names:
        w = m.state_dict()[n]
        assert w.shape == (3, H) and np.abs(w).max() <= bound and np.abs(w).max() > bound / 4
    # peepholes=False keeps the parameters (and their initial values) as they were
    plain = rnnkit.nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
    assert not any(n.startswith("weight_peep") for n in plain.state_dict())
    np.testing.assert_array_equal(plain.weight_ih_l0.data, m.weight_ih_l0.data)

    x = rng.normal(size=(T, B, I))
    lengths = np.array([4, 2, 3])
    out, (h_n, c_n) = m(x, lengths=lengths)
    dout = rng.normal(size=out.shape)
    m.backward(dout)
    # layer by layer, each direction with the oracle
    inp = x
    caches = []
    for layer in range(2):
        ys = []
        for d, suffix in enumerate(("", "_reverse")):
            w = [
                getattr(m, f"{k}_l{layer}{suffix}").data
                for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ]
            peep = getattr(m, f"weight_peep_l{layer}{suffix}").data
            y, _, ws = ref.lstm_forward(inp, None, None, *w, W_peep=peep, lengths=lengths, reverse=bool(d))
            ys.append(y)
            caches.append((layer, suffix, ws))
        inp = np.concatenate(ys, axis=2)
    np.testing.assert_allclose(out, inp, rtol=0, atol=1e-12)
    # the last layer's dW_peep against the oracle's, from the module's output gradient
    for layer, suffix, ws in caches[2:]:
        dy = dout[:, :, :H] if not suffix else dout[:, :, H:]
        g = ref.lstm_backward(np.ascontiguousarray(dy), None, None, ws)
        got = getattr(m, f"weight_peep_l{layer}{suffix}").grad
        assert rel_error(got, g.dW_peep) <= 1e-12
    assert np.abs(m.weight_peep_l0.grad).max() > 1e-3
    # a stream computes the same steps, chunk by chunk
    one = rnnkit.nn.LSTM(I, H, num_layers=2, dtype=np.float64, seed=2, peepholes=True).eval()
    full, _ = one(x)
    stream = one.stream(batch=B)
    parts = [stream(x[:1]), stream(x[1:])]
    np.testing.assert_allclose(np.concatenate(parts), full, rtol=0, atol=1e-12)


def test_peephole_module_conversions_refused_where_the_format_has_none():
    m = rnnkit.nn.LSTM(I, H, peepholes=True, seed=0)
    keras = pytest.importorskip("rnnkit.keras")
    with pytest.raises(ValueError, match="peepholes"):
        keras.to_weights(m)


@pytest.mark.skipif(
    rnnkit._core._cpu_info()["bf16_kernel"] == "none", reason="the CPU lacks AVX512-BF16 and AMX-BF16"
)
def test_bf16_with_peepholes_matches_bf16_oracle():
    """precision="bf16" shares the elementwise part (test_bf16.py's bounds: 1e-5 of the largest
    value forward, 1e-4 backward), one step."""
    rng = np.random.default_rng(7)
    p = make_params(rng, np.float32)
    p["x"] = p["x"][:1]
    y, finals, ws = forward(rnnkit, p, precision="bf16")
    p64 = {k: a.astype(np.float64) for k, a in p.items()}
    y_ref, finals_ref, ws_ref = forward(ref, p64, precision="bf16")
    for a, e in zip((y, *finals), (y_ref, *finals_ref)):
        assert np.abs(a - e).max() <= 1e-5 * np.abs(e).max()
    dy = rng.normal(size=y.shape).astype(np.float32)
    d_finals = [rng.normal(size=f.shape).astype(np.float32) for f in finals]
    got = backward(rnnkit, dy, d_finals, ws)
    expected = backward(ref, dy.astype(np.float64), [d.astype(np.float64) for d in d_finals], ws_ref)
    for name, e in expected.items():
        assert np.abs(got[name] - e).max() <= 1e-4 * max(np.abs(e).max(), 1e-30), name

"""Property tests (hypothesis): random cells, shapes, dtypes, lengths, directions, None
arguments, layer counts, thread counts and both per-step product paths, against the NumPy
oracles of ``rnnkit.reference``.

Shapes include 0 and 1 and odd sizes around the SIMD widths; ``_core._set_small_batch_limit``
is drawn too, so the same shapes run on the register-blocked per-step kernel (limit above the
batch) and on the BLAS (limit 0); a few larger draws put enough work per step on the thread
team. Set RNNKIT_HYPOTHESIS_EXAMPLES to change the number of examples per test (the sanitizer
run uses fewer).
"""

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnkit
from conftest import CELLS, GATES, assert_close, module_class
from rnnkit import _core
from rnnkit import reference as ref

SANITIZED = bool(os.environ.get("RNNKIT_SANITIZED"))
EXAMPLES = int(os.environ.get("RNNKIT_HYPOTHESIS_EXAMPLES", 25 if SANITIZED else 150))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DTYPES = [np.float32, np.float64]


class Settings:
    """Run with a BLAS/team thread count and a small-batch limit, restoring both after."""

    def __init__(self, threads, limit):
        self.threads, self.limit = threads, limit

    def __enter__(self):
        self.saved = rnnkit.get_num_threads(), _core._get_small_batch_limit()
        rnnkit.set_num_threads(self.threads)
        _core._set_small_batch_limit(self.limit)

    def __exit__(self, *exc):
        rnnkit.set_num_threads(self.saved[0])
        _core._set_small_batch_limit(self.saved[1])


def _params(rng, family, I, H, dtype, bias):
    G = GATES[family]
    k = 1 / np.sqrt(H)
    W_ih = rng.uniform(-k, k, (G * H, I)).astype(dtype)
    W_hh = rng.uniform(-k, k, (G * H, H)).astype(dtype)
    b_ih = rng.uniform(-k, k, G * H).astype(dtype) if bias[0] else None
    b_hh = rng.uniform(-k, k, G * H).astype(dtype) if bias[1] else None
    return W_ih, W_hh, b_ih, b_hh


@st.composite
def sequence_cases(draw):
    cell = draw(st.sampled_from(sorted(CELLS)))
    family = CELLS[cell][0]
    dtype = draw(st.sampled_from(DTYPES))
    if draw(st.integers(0, 9)) == 0:  # now and then, enough work per step for the team
        T, B, I, H = (
            draw(st.integers(4, 6)),
            draw(st.integers(8, 14)),
            draw(st.integers(1, 12)),
            draw(st.integers(32, 48)),
        )
    else:
        T, B, I, H = (
            draw(st.integers(0, 7)),
            draw(st.integers(0, 6)),
            draw(st.integers(0, 9)),
            draw(st.integers(1, 17)),
        )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lengths = None
    if T >= 1 and draw(st.booleans()):
        lengths = np.array(draw(st.lists(st.integers(1, T), min_size=B, max_size=B)), np.int64)
    n_states = 2 if family == "lstm" else 1
    states = tuple(
        rng.standard_normal((B, H)).astype(dtype) if draw(st.booleans()) else None for _ in range(n_states)
    )
    return {
        "cell": cell,
        "dtype": dtype,
        "shape": (T, B, I, H),
        "x": rng.standard_normal((T, B, I)).astype(dtype),
        "states": states,
        "params": _params(rng, family, I, H, dtype, draw(st.tuples(st.booleans(), st.booleans()))),
        "lengths": lengths,
        "reverse": draw(st.booleans()),
        "dy": rng.standard_normal((T, B, H)).astype(dtype) if draw(st.booleans()) else None,
        "d_finals": tuple(
            rng.standard_normal((B, H)).astype(dtype) if draw(st.booleans()) else None
            for _ in range(n_states)
        ),
        "threads": draw(st.sampled_from([1, 2])),
        "limit": draw(st.sampled_from([0, 1000])),  # BLAS or register-blocked per-step products
    }


def _run(mod, c):
    family, variant = CELLS[c["cell"]]
    fwd, bwd = getattr(mod, f"{family}_forward"), getattr(mod, f"{family}_backward")
    opts = dict(reverse=c["reverse"], lengths=c["lengths"])
    if family == "lstm":
        y, finals, ws = fwd(c["x"], *c["states"], *c["params"], **opts)
    else:
        y, h_T, ws = fwd(c["x"], *c["states"], *c["params"], **variant, **opts)
        finals = (h_T,)
    g = bwd(c["dy"], *c["d_finals"], ws)
    return [y, *finals], g


@SETTINGS
@given(sequence_cases())
def test_sequences_match_oracle(c):
    with Settings(c["threads"], c["limit"]):
        (outs, g) = _run(rnnkit, c)
    want_outs, want_g = _run(ref, c)
    dtype = c["dtype"]
    for k, (a, e) in enumerate(zip(outs, want_outs)):
        assert_close(a, e, dtype, f"output {k}")
    assert type(g).__name__ == type(want_g).__name__
    for field in want_g._fields:
        assert_close(getattr(g, field), getattr(want_g, field), dtype, field)


@st.composite
def cell_cases(draw):
    cell = draw(st.sampled_from(sorted(CELLS)))
    family = CELLS[cell][0]
    dtype = draw(st.sampled_from(DTYPES))
    B, I, H = draw(st.integers(0, 9)), draw(st.integers(0, 9)), draw(st.integers(1, 33))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = 2 if family == "lstm" else 1
    return {
        "cell": cell,
        "dtype": dtype,
        "x": rng.standard_normal((B, I)).astype(dtype),
        "states": tuple(
            rng.standard_normal((B, H)).astype(dtype) if draw(st.booleans()) else None for _ in range(n)
        ),
        "params": _params(rng, family, I, H, dtype, draw(st.tuples(st.booleans(), st.booleans()))),
        "d_next": tuple(
            rng.standard_normal((B, H)).astype(dtype) if draw(st.booleans()) else None for _ in range(n)
        ),
    }


@SETTINGS
@given(cell_cases())
def test_cells_match_oracle(c):
    family, variant = CELLS[c["cell"]]
    results = []
    for mod in (rnnkit, ref):
        fwd = getattr(mod, f"{family}_cell_forward")
        if family == "lstm":
            nxt, cache = fwd(c["x"], *c["states"], *c["params"])
        else:
            nxt, cache = fwd(c["x"], *c["states"], *c["params"], **variant)
            nxt = (nxt,)
        g = getattr(mod, f"{family}_cell_backward")(*c["d_next"], cache)
        results.append((nxt, g))
    (nxt, g), (want_nxt, want_g) = results
    for a, e in zip(nxt, want_nxt):
        assert_close(a, e, c["dtype"], "next state")
    for field in want_g._fields:
        assert_close(getattr(g, field), getattr(want_g, field), c["dtype"], field)


# ----------------------------------------------------------------------------- modules


def _module_oracle(m, cell, x, states, lengths, dout, d_states):
    """rnnkit.nn's multi-layer, bidirectional stacking built from the oracle's single-layer
    functions. x (T, B, I) time-major; states / d_states: per state (L*D, B, H) or None.
    Returns (out, finals, dx, d_initial_states, {param name: grad})."""
    family, variant = CELLS[cell]
    fwd, bwd = getattr(ref, f"{family}_forward"), getattr(ref, f"{family}_backward")
    L, D, H = m.num_layers, m.num_directions, m.hidden_size
    p = dict(m.named_parameters())

    def weights(layer, d):
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        return tuple(
            p[n + sfx].data if n + sfx in p else None
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )

    inp, cache = x, []
    finals = [[] for _ in states]
    for layer in range(L):
        ys, wss = [], []
        for d in range(D):
            k = layer * D + d
            st0 = [None if s is None else s[k] for s in states]
            out = fwd(
                inp,
                *st0,
                *weights(layer, d),
                reverse=bool(d),
                lengths=lengths,
                **({} if family == "lstm" else variant),
            )
            y, fin, ws = out[0], (out[1] if family == "lstm" else (out[1],)), out[2]
            ys.append(y)
            wss.append(ws)
            for f, s in zip(finals, fin):
                f.append(s)
        cache.append(wss)
        inp = np.concatenate(ys, axis=2)
    out = inp
    grads, d_init = {}, [np.zeros((L * D,) + s[0].shape, x.dtype) for s in finals]
    d_out = dout
    for layer in reversed(range(L)):
        d_in = 0
        for d in range(D):
            k = layer * D + d
            dy = None if d_out is None else d_out[:, :, d * H : (d + 1) * H]
            g = bwd(dy, *(None if s is None else s[k] for s in d_states), cache[layer][d])
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            for name, field in (
                ("weight_ih", "dW_ih"),
                ("weight_hh", "dW_hh"),
                ("bias_ih", "db_ih"),
                ("bias_hh", "db_hh"),
            ):
                if name + sfx in p:
                    grads[name + sfx] = getattr(g, field)
            for acc, ds in zip(d_init, g[1 : 1 + len(d_init)]):
                acc[k] = ds
            d_in = d_in + g.dx
        d_out = d_in
    return out, [np.stack(f) for f in finals], d_out, d_init, grads


@st.composite
def module_cases(draw):
    cell = draw(st.sampled_from(sorted(CELLS)))
    dtype = draw(st.sampled_from(DTYPES))
    L, bidir = draw(st.integers(1, 3)), draw(st.booleans())
    T, B, I, H = (
        draw(st.integers(1, 5)),
        draw(st.integers(1, 4)),
        draw(st.integers(1, 6)),
        draw(st.integers(1, 9)),
    )
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    D = 2 if bidir else 1
    n = 2 if cell == "lstm" else 1
    lengths = (
        np.array(draw(st.lists(st.integers(1, T), min_size=B, max_size=B))) if draw(st.booleans()) else None
    )
    return {
        "cell": cell,
        "dtype": dtype,
        "L": L,
        "bidirectional": bidir,
        "seed": seed,
        "H": H,
        "bias": draw(st.booleans()),
        "batch_first": draw(st.booleans()),
        "x": rng.standard_normal((T, B, I)).astype(dtype),
        "lengths": lengths,
        "states": [
            rng.standard_normal((L * D, B, H)).astype(dtype) if draw(st.booleans()) else None
            for _ in range(n)
        ],
        "dout": rng.standard_normal((T, B, D * H)).astype(dtype) if draw(st.booleans()) else None,
        "d_states": [
            rng.standard_normal((L * D, B, H)).astype(dtype) if draw(st.booleans()) else None
            for _ in range(n)
        ],
        "threads": draw(st.sampled_from([1, 2])),
        "limit": draw(st.sampled_from([0, 1000])),
    }


@SETTINGS
@given(module_cases())
def test_modules_match_stacked_oracle(c):
    cls, kw = module_class(c["cell"]), CELLS[c["cell"]][1]
    I = c["x"].shape[2]
    m = cls(
        I,
        c["H"],
        num_layers=c["L"],
        bias=c["bias"],
        batch_first=c["batch_first"],
        bidirectional=c["bidirectional"],
        dtype=c["dtype"],
        seed=c["seed"],
        **kw,
    )
    dtype, dout, states = c["dtype"], c["dout"], c["states"]

    def bf(a):  # time-major <-> the module's batch-first layout
        if a is None or not c["batch_first"]:
            return a
        return np.ascontiguousarray(a.transpose(1, 0, 2))

    with Settings(c["threads"], c["limit"]):
        if c["cell"] == "lstm":
            out, finals = m(bf(c["x"]), tuple(states), lengths=c["lengths"])
            dx, d_init = m.backward(bf(dout), tuple(c["d_states"]))
        else:
            out, h_n = m(bf(c["x"]), states[0], lengths=c["lengths"])
            finals = (h_n,)
            dx, dh0 = m.backward(bf(dout), c["d_states"][0])
            d_init = (dh0,)
    want = _module_oracle(m, c["cell"], c["x"], states, c["lengths"], dout, c["d_states"])
    want_out, want_finals, want_dx, want_d_init, want_grads = want
    assert_close(bf(out), want_out, dtype, "out")
    for a, e in zip(finals, want_finals):
        assert_close(a, e, dtype, "final state")
    assert_close(bf(dx), want_dx, dtype, "dx")
    for a, e in zip(d_init, want_d_init):
        assert_close(a, e, dtype, "initial state gradient")
    assert set(want_grads) == {n for n, _ in m.named_parameters()}
    for name, p in m.named_parameters():
        assert_close(p.grad, want_grads[name], dtype, name)


# ----------------------------------------------------------------------------- losses


@SETTINGS
@given(
    st.sampled_from(DTYPES),
    st.integers(0, 12),
    st.integers(1, 40),
    st.sampled_from(["mean", "sum", "none"]),
    st.floats(0.1, 1e4),
    st.integers(0, 2**32 - 1),
)
def test_softmax_cross_entropy_matches_oracle(dtype, N, C, reduction, scale, seed):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.standard_normal((N, C))).astype(dtype)
    t = rng.integers(0, C, size=N)
    t[rng.random(N) < 0.2] = -100
    got = rnnkit.softmax_cross_entropy(logits, t, reduction=reduction)
    with np.errstate(all="ignore"):
        want = ref.softmax_cross_entropy(logits, t, reduction=reduction)
        want_p = ref.softmax(logits)
    assert np.asarray(got.loss).dtype == dtype
    if reduction == "mean" and not (t != -100).any():
        assert np.isnan(got.loss)
    else:
        assert_close(got.loss, want.loss, dtype, "loss")
    assert_close(got.dlogits, want.dlogits, dtype, "dlogits")
    assert_close(rnnkit.softmax(logits), want_p, dtype, "softmax")
    assert np.isfinite(got.dlogits).all()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))

"""The compiled kernels (rnnkit.X) against the NumPy oracles (rnnkit.reference.X).

Every forward output, final state and backward gradient is compared, over a grid of cells,
shapes (around SIMD widths), dtypes, directions, lengths and None arguments. The grid is a
full product for small shapes and a seeded sample for the larger ones, to stay fast.
"""

import itertools
import random

import numpy as np
import pytest

import rnnkit
from conftest import (
    CELLS,
    arrays_in,
    assert_close,
    assert_no_aliasing,
    cell_backward,
    cell_forward,
    make_params,
    n_states,
    negative_strides,
    read_only,
    seq_backward,
    seq_forward,
    strided,
)
from rnnkit import reference as ref

DTYPES = [np.float32, np.float64]
LENGTH_MODES = ["none", "sorted", "unsorted"]

# (T, B, I, H). Small shapes get the full product; H straddles 8/16/32-lane SIMD widths. The last
# two have T*B >= 32 rows, where the input projection runs on the packed kernel.
SMALL_SHAPES = [(1, 1, 1, 1), (1, 3, 2, 7), (3, 1, 4, 8), (5, 4, 3, 9)]
LARGE_SHAPES = [
    (2, 5, 9, 15),
    (4, 3, 16, 16),
    (6, 2, 5, 17),
    (3, 6, 40, 33),
    (7, 3, 12, 8),
    (4, 4, 7, 7),
    (40, 1, 21, 19),
    (9, 4, 33, 17),
]


# ----------------------------------------------------------------------------- helpers


def make_lengths(mode, T, B, rng):
    """None, or (B,) lengths in [1, T] containing T and 1 (when B >= 2)."""
    if mode == "none":
        return None
    if B == 1:
        return np.array([T if mode == "sorted" else 1])
    L = rng.integers(1, T + 1, size=B)
    L[0], L[1] = 1, T  # ascending start: not sorted, whatever the rest is
    return np.sort(L)[::-1].copy() if mode == "sorted" else L


def make_case(
    cell, T, B, I, H, dtype, rng, *, bias=True, states=True, lengths="none", dy=True, d_finals=True
):
    """Random inputs and cotangents of one sequence call, as a dict."""

    def normal(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    k = n_states(cell)
    return {
        "x": normal(T, B, I),
        # states: True, False, or "h_only" (LSTM: h0 given, c0 None)
        "states": tuple(
            normal(B, H, scale=0.5) if states and not (states == "h_only" and i) else None for i in range(k)
        ),
        "params": make_params(cell, I, H, dtype, rng, bias),
        "lengths": make_lengths(lengths, T, B, rng),
        "dy": normal(T, B, H) if dy else None,
        "d_finals": tuple(normal(B, H) if d_finals else None for _ in range(k)),
    }


def run_both(cell, case, reverse):
    """Forward and backward through kernel and oracle -> ((y, finals, grads) kernel, oracle)."""
    out = []
    for mod in (rnnkit, ref):
        y, finals, ws = seq_forward(
            mod, cell, case["x"], case["states"], case["params"], reverse=reverse, lengths=case["lengths"]
        )
        grads = seq_backward(mod, cell, case["dy"], case["d_finals"], ws)
        out.append((y, finals, grads))
    return out


def assert_same_results(kernel, oracle, dtype):
    (y_k, fin_k, g_k), (y_r, fin_r, g_r) = kernel, oracle
    assert_close(y_k, y_r, dtype, "y")
    for i, (a, b) in enumerate(zip(fin_k, fin_r)):
        assert_close(a, b, dtype, f"final state {i}")
    assert type(g_k) is type(g_r)
    for field in g_r._fields:
        assert_close(getattr(g_k, field), getattr(g_r, field), dtype, field)


def check_sequence(cell, shape, dtype, reverse, lengths, rng, **case_opts):
    case = make_case(cell, *shape, dtype, rng, lengths=lengths, **case_opts)
    kernel, oracle = run_both(cell, case, reverse)
    assert_same_results(kernel, oracle, dtype)
    # guard against a vacuous pass: with a cotangent, the oracle's dx is not all zero
    # (unless every unit is a dead relu, y == 0, when zero is the right answer)
    if (case["dy"] is not None or case["d_finals"][0] is not None) and oracle[0].any():
        assert np.abs(oracle[2].dx).max() > 0
    return case, kernel, oracle


# ----------------------------------------------------------------------------- sequences


@pytest.mark.parametrize("shape", SMALL_SHAPES, ids=str)
@pytest.mark.parametrize("lengths", LENGTH_MODES)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_sequence_small_full_grid(cell, dtype, reverse, lengths, shape, rng):
    check_sequence(cell, shape, dtype, reverse, lengths, rng)


def _sampled_large_grid():
    """Every (shape, cell, dtype); (direction, lengths) dealt out evenly by a seeded shuffle."""
    heads = list(itertools.product(LARGE_SHAPES, CELLS, DTYPES))
    tails = list(itertools.product([False, True], LENGTH_MODES))
    tails = (tails * len(heads))[: len(heads)]
    random.Random(20240601).shuffle(tails)
    return [
        pytest.param(
            *head,
            *tail,
            id="T{}B{}I{}H{}-{}-{}-{}-{}".format(
                *head[0], head[1], np.dtype(head[2]).name, "rev" if tail[0] else "fwd", tail[1]
            ),
        )
        for head, tail in zip(heads, tails)
    ]


@pytest.mark.parametrize("shape, cell, dtype, reverse, lengths", _sampled_large_grid())
def test_sequence_larger_sampled(shape, cell, dtype, reverse, lengths, rng):
    check_sequence(cell, shape, dtype, reverse, lengths, rng)


# None arguments: biases, initial states, incoming gradients (alone and all together).
NONE_VARIANTS = {
    "no_bias": {"bias": False},
    "no_b_ih": {"bias": (False, True)},
    "no_b_hh": {"bias": (True, False)},
    "no_states": {"states": False},
    "h_only": {"states": "h_only"},
    "no_dy": {"dy": False},
    "no_d_finals": {"d_finals": False},
    "all_none": {"bias": False, "states": False, "dy": False},
    "no_cotangent": {"dy": False, "d_finals": False},
}


@pytest.mark.parametrize("variant", NONE_VARIANTS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_sequence_none_arguments(cell, dtype, reverse, variant, rng):
    case, (_, _, g), _ = check_sequence(
        cell, (4, 3, 5, 9), dtype, reverse, "unsorted", rng, **NONE_VARIANTS[variant]
    )
    # a missing bias has gradient None, a present one an array
    assert (g.db_ih is None) == (case["params"][2] is None)
    assert (g.db_hh is None) == (case["params"][3] is None)


@pytest.mark.parametrize("fill", [1e6, np.nan, np.inf], ids=["big", "nan", "inf"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS)
def test_padding_content_is_ignored(cell, reverse, fill, rng):
    """x at padded steps must not influence any result, whatever it holds (as the oracle)."""
    case = make_case(cell, 5, 4, 3, 8, np.float64, rng, lengths="unsorted")
    clean = run_both(cell, case, reverse)[1]  # oracle on the padding make_case drew
    for b, L in enumerate(case["lengths"]):
        case["x"][L:, b] = fill
    kernel, oracle = run_both(cell, case, reverse)
    assert_same_results(oracle, clean, np.float64)  # the oracle's documented contract
    assert_same_results(kernel, clean, np.float64)


# ----------------------------------------------------------------------------- single cells

CELL_SHAPES = [(1, 1, 1), (3, 5, 8), (4, 9, 17), (2, 16, 33)]  # (B, I, H)
CELL_VARIANTS = {
    "full": {},
    "no_bias": {"bias": False},
    "no_state": {"states": False},
    "no_grad": {"d_finals": False},
}


@pytest.mark.parametrize("variant", CELL_VARIANTS)
@pytest.mark.parametrize("shape", CELL_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_cell_step(cell, dtype, shape, variant, rng):
    B, I, H = shape
    case = make_case(cell, 1, B, I, H, dtype, rng, **CELL_VARIANTS[variant])
    x = case["x"][0]
    results = []
    for mod in (rnnkit, ref):
        nxt, cache = cell_forward(mod, cell, x, case["states"], case["params"])
        results.append((nxt, cell_backward(mod, cell, case["d_finals"], cache)))
    (nxt_k, g_k), (nxt_r, g_r) = results
    for i, (a, b) in enumerate(zip(nxt_k, nxt_r)):
        assert_close(a, b, dtype, f"next state {i}")
    assert type(g_k) is type(g_r)
    for field in g_r._fields:
        assert_close(getattr(g_k, field), getattr(g_r, field), dtype, field)
    if case["d_finals"][0] is not None and nxt_r[0].any():
        assert np.abs(g_r.dx).max() > 0


# ----------------------------------------------------------------------------- training flag


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", [(5, 4, 6, 9), (33, 1, 6, 9)], ids=str)  # 33 rows: packed projection
def test_inference_mode(cell, dtype, reverse, shape, rng):
    case = make_case(cell, *shape, dtype, rng, lengths="unsorted")
    args = (case["x"], case["states"], case["params"])
    y, finals, ws = seq_forward(rnnkit, cell, *args, reverse=reverse, lengths=case["lengths"])
    y_inf, finals_inf, ws_inf = seq_forward(
        rnnkit, cell, *args, reverse=reverse, lengths=case["lengths"], training=False
    )
    assert isinstance(ws, rnnkit.Workspace)
    assert ws_inf is None
    # same code path apart from where the gates are stored: bitwise identical
    np.testing.assert_array_equal(y_inf, y)
    for a, b in zip(finals_inf, finals):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="workspace"):
        seq_backward(rnnkit, cell, case["dy"], case["d_finals"], None)


@pytest.mark.parametrize("cell", CELLS)
def test_cell_backward_with_none_cache_raises(cell):
    family = CELLS[cell][0]
    d_next = (None,) * n_states(cell)
    with pytest.raises(ValueError, match="workspace"):
        getattr(rnnkit, f"{family}_cell_backward")(*d_next, None)


# ----------------------------------------------------------------------------- memory layouts


def _transposed(a):
    """Same values through a view with the first two axes swapped (e.g. batch-major x, W.T)."""
    return a if a.ndim < 2 else np.swapaxes(np.swapaxes(a, 0, 1).copy(), 0, 1)


LAYOUTS = {
    "strided": lambda a: strided(a, -7),
    "negative": negative_strides,
    "transposed": _transposed,
    "fortran": np.asfortranarray,
    "readonly": read_only,
}


def _map_case(case, fn):
    """Apply ``fn`` to every array of a case (lengths included), keeping None."""

    def f(a):
        return None if a is None else fn(a)

    return {k: tuple(map(f, v)) if isinstance(v, tuple) else f(v) for k, v in case.items()}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_layouts_give_same_results(cell, dtype, layout, rng):
    case = make_case(cell, 4, 3, 5, 9, dtype, rng, lengths="unsorted")
    odd = _map_case(case, LAYOUTS[layout])
    if layout != "readonly":
        assert not odd["x"].flags.c_contiguous and not odd["params"][1].flags.c_contiguous
    for reverse in (False, True):
        (expected, _), (actual, _) = (run_both(cell, c, reverse) for c in (case, odd))
        assert_same_results(actual, expected, dtype)
    # single cells too
    x = case["x"][0]
    results = []
    for c, xx in ((case, x), (odd, LAYOUTS[layout](x))):
        nxt, cache = cell_forward(rnnkit, cell, xx, c["states"], c["params"])
        results.append((nxt, cell_backward(rnnkit, cell, c["d_finals"], cache)))
    (n1, g1), (n2, g2) = results
    for a, b in zip(n2, n1):
        assert_close(a, b, dtype)
    for field in g1._fields:
        assert_close(getattr(g2, field), getattr(g1, field), dtype, field)


@pytest.mark.parametrize("lengths", ["none", "unsorted"])
@pytest.mark.parametrize("cell", CELLS)
def test_outputs_are_fresh_and_inputs_untouched(cell, lengths, rng):
    # T = 1 is where a final state could most easily be a view of y or h0 of h_T
    for T in (1, 4):
        case = make_case(cell, T, 3, 5, 8, np.float64, rng, lengths=lengths)
        before = _map_case(case, np.copy)
        inputs = (case["x"], case["states"], case["params"], case["dy"], case["d_finals"])
        y, finals, ws = seq_forward(
            rnnkit, cell, case["x"], case["states"], case["params"], lengths=case["lengths"]
        )
        grads = seq_backward(rnnkit, cell, case["dy"], case["d_finals"], ws)
        assert_no_aliasing((y, finals, grads), inputs)
        # backward leaves the workspace intact: a second call gives the same gradients
        again = seq_backward(rnnkit, cell, case["dy"], case["d_finals"], ws)
        for a, b in zip(arrays_in(again), arrays_in(grads)):
            np.testing.assert_array_equal(a, b)
        assert_no_aliasing(again, grads)
        # nothing was written into the inputs
        for a, b in zip(arrays_in(tuple(case.values())), arrays_in(tuple(before.values()))):
            np.testing.assert_array_equal(a, b)

    x = case["x"][0]
    nxt, cache = cell_forward(rnnkit, cell, x, case["states"], case["params"])
    g = cell_backward(rnnkit, cell, case["d_finals"], cache)
    assert_no_aliasing((nxt, g), (x, case["states"], case["params"], case["d_finals"]))


# ----------------------------------------------------------------------------- softmax / loss


@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (4, 7), (5, 16), (2, 33), (9,), (2, 3, 5)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_softmax(shape, dtype, rng):
    logits = (3 * rng.standard_normal(shape)).astype(dtype)
    p = rnnkit.softmax(logits)
    assert_close(p, ref.softmax(logits), dtype)
    assert_close(p.sum(axis=-1), np.ones(shape[:-1], dtype), dtype)
    assert not np.shares_memory(p, logits)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_softmax_large_logits(dtype, rng):
    # a large common offset and a large spread both overflow a naive exp
    for logits in (
        1e4 + rng.standard_normal((6, 10)),
        1e4 * rng.standard_normal((6, 10)),
        -1e4 + rng.standard_normal((6, 10)),
    ):
        logits = logits.astype(dtype)
        p = rnnkit.softmax(logits)
        assert np.isfinite(p).all()
        assert_close(p, ref.softmax(logits), dtype)


def _targets(N, C, mode, ignore_index, rng):
    t = rng.integers(0, C, size=N)
    if mode == "some_ignored":
        t[::3] = ignore_index
    elif mode == "all_ignored":
        t[:] = ignore_index
    return t


@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("mode", ["none_ignored", "some_ignored", "all_ignored"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_softmax_cross_entropy(dtype, reduction, mode, ignore_index, rng):
    N, C = 10, 7
    logits = (2 * rng.standard_normal((N, C))).astype(dtype)
    t = _targets(N, C, mode, ignore_index, rng)
    got = rnnkit.softmax_cross_entropy(logits, t, ignore_index=ignore_index, reduction=reduction)
    want = ref.softmax_cross_entropy(logits, t, ignore_index=ignore_index, reduction=reduction)
    assert np.asarray(got.loss).dtype == dtype
    assert_close(got.loss, want.loss, dtype, "loss")
    assert_close(got.dlogits, want.dlogits, dtype, "dlogits")
    ignored = t == ignore_index
    assert not got.dlogits[ignored].any()
    if mode == "all_ignored":
        assert not got.dlogits.any()
        assert np.isnan(got.loss) if reduction == "mean" else not np.any(got.loss)
    else:
        assert np.abs(want.dlogits).max() > 0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_softmax_cross_entropy_large_logits(dtype, reduction, rng):
    N, C = 8, 6
    t = _targets(N, C, "some_ignored", -100, rng)
    for logits in (1e4 + rng.standard_normal((N, C)), 1e4 * rng.standard_normal((N, C))):
        logits = logits.astype(dtype)
        got = rnnkit.softmax_cross_entropy(logits, t, reduction=reduction)
        want = ref.softmax_cross_entropy(logits, t, reduction=reduction)
        assert np.isfinite(got.loss).all() and np.isfinite(got.dlogits).all()
        assert_close(got.loss, want.loss, dtype, "loss")
        assert_close(got.dlogits, want.dlogits, dtype, "dlogits")


# ----------------------------------------------------------------------------- whole model


def _model_loss_and_grads(mod, cell, case, W_out, b_out, targets, reverse):
    """RNN -> linear output layer -> summed softmax cross-entropy; loss and every gradient."""
    x = case["x"]
    T, B, _ = x.shape
    y, finals, ws = seq_forward(
        mod, cell, x, case["states"], case["params"], reverse=reverse, lengths=case["lengths"]
    )
    Y = y.reshape(T * B, -1)
    logits = Y @ W_out.T + b_out
    loss, dlogits = mod.softmax_cross_entropy(logits, targets, reduction="sum")
    dW_out, db_out = dlogits.T @ Y, dlogits.sum(axis=0)
    dy = (dlogits @ W_out).reshape(y.shape)
    grads = seq_backward(mod, cell, dy, (None,) * n_states(cell), ws)
    return loss, grads, dW_out, db_out


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_whole_model(cell, dtype, reverse, rng):
    T, B, I, H, C = 6, 4, 5, 16, 7
    case = make_case(cell, T, B, I, H, dtype, rng, lengths="unsorted")
    W_out = (rng.standard_normal((C, H)) / np.sqrt(H)).astype(dtype)
    b_out = (0.1 * rng.standard_normal(C)).astype(dtype)
    targets = rng.integers(0, C, size=(T, B))
    for b, L in enumerate(case["lengths"]):
        targets[L:, b] = -100  # padded steps carry no loss
    targets = targets.reshape(-1)

    got = _model_loss_and_grads(rnnkit, cell, case, W_out, b_out, targets, reverse)
    want = _model_loss_and_grads(ref, cell, case, W_out, b_out, targets, reverse)
    assert_close(got[0], want[0], dtype, "loss")
    for field in want[1]._fields:
        assert_close(getattr(got[1], field), getattr(want[1], field), dtype, field)
    assert_close(got[2], want[2], dtype, "dW_out")
    assert_close(got[3], want[3], dtype, "db_out")
    assert np.abs(want[1].dW_hh).max() > 0

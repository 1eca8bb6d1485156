"""Any memory layout in, fresh arrays out.

Inputs that must be accepted (strided, negative strides, Fortran order, read-only, non-native
byte order, broadcast views, Python lists) give the same bits as plain C-contiguous arrays;
outputs never alias inputs or each other; inputs are never written.
"""

import numpy as np
import pytest

import rnnkit
from conftest import (
    CELLS,
    DTYPES,
    arrays_in,
    assert_bitwise,
    assert_no_aliasing,
    cell_backward,
    cell_forward,
    negative_strides,
    random_case,
    read_only,
    run_case,
    seq_backward,
    seq_forward,
    strided,
)


def _byteswapped(a):
    return a.astype(a.dtype.newbyteorder("S")) if a.dtype.kind == "f" else a


LAYOUTS = {
    "strided": lambda a: strided(a, np.nan),
    "negative": negative_strides,
    "fortran": np.asfortranarray,
    "readonly": read_only,
    "byteswapped": _byteswapped,
    "list": lambda a: a.tolist(),
}


def _map(obj, fn):
    if obj is None:
        return None
    if isinstance(obj, tuple):
        return tuple(_map(o, fn) for o in obj)
    return fn(obj)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cell", CELLS)
def test_layouts_give_identical_bits(cell, layout, rng):
    """Every array argument (cotangents too) in an odd layout: same bits as C-contiguous."""
    fn = LAYOUTS[layout]
    for dtype in DTYPES:
        if layout == "list" and dtype == np.float32:
            continue  # Python floats are float64
        case = random_case(cell, 4, 3, 5, 6, dtype, rng, lengths="random")
        odd = {k: (_map(v, fn) if k != "lengths" else v) for k, v in case.items()}
        for reverse in (False, True):
            assert_bitwise(
                run_case(rnnkit, cell, odd, reverse), run_case(rnnkit, cell, case, reverse), layout
            )
        # single steps: x, states and the cotangents of the step
        x = case["x"][0]
        res = []
        for c, xx in ((case, x), (odd, fn(x))):
            nxt, cache = cell_forward(rnnkit, cell, xx, c["states"], c["params"])
            res.append([*nxt, *cell_backward(rnnkit, cell, c["d_finals"], cache)])
        assert_bitwise(res[1], res[0], layout + " cell")


def test_zero_stride_broadcast_inputs(rng):
    """Broadcast views (stride 0) are copied, not read out of bounds."""
    case = random_case("lstm", 4, 3, 5, 6, np.float64, rng)
    x = np.broadcast_to(case["x"][:1], case["x"].shape)
    b = np.broadcast_to(np.float64(0.1), case["params"][2].shape)
    h0 = np.broadcast_to(case["states"][0][:1], case["states"][0].shape)
    params = (case["params"][0], case["params"][1], b, case["params"][3])
    got = rnnkit.lstm_forward(x, h0, None, *params)
    want = rnnkit.lstm_forward(x.copy(), h0.copy(), None, *(p.copy() for p in params))
    assert_bitwise([got[0], *got[1]], [want[0], *want[1]])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_loss_layouts_give_identical_bits(layout, rng):
    fn = LAYOUTS[layout]
    for dtype in DTYPES:
        if layout == "list" and dtype == np.float32:
            continue  # Python floats are float64
        logits = (3 * rng.standard_normal((7, 5))).astype(dtype)
        t = rng.integers(0, 5, size=7)
        t[2] = -100
        want_p = rnnkit.softmax(logits)
        np.testing.assert_array_equal(rnnkit.softmax(fn(logits)), want_p)
        for reduction in ("mean", "sum", "none"):
            want = rnnkit.softmax_cross_entropy(logits, t, reduction=reduction)
            t_odd = t.tolist() if layout == "list" else negative_strides(t) if layout == "negative" else t
            got = rnnkit.softmax_cross_entropy(fn(logits), t_odd, reduction=reduction)
            np.testing.assert_array_equal(got.loss, want.loss)
            np.testing.assert_array_equal(got.dlogits, want.dlogits)


def test_byteswapped_arrays_mix_with_native_ones(rng):
    """float64 in either byte order is one dtype; the results are native float64."""
    case = random_case("gru", 3, 2, 4, 5, np.float64, rng)
    x = case["x"].astype(">f8")
    y, h, _ = rnnkit.gru_forward(x, case["states"][0], *case["params"])
    y2, h2, _ = rnnkit.gru_forward(case["x"], case["states"][0], *case["params"])
    assert y.dtype == np.float64 and y.dtype.isnative
    np.testing.assert_array_equal(y, y2)
    with pytest.raises(TypeError, match=r"^W_hh: expected dtype float64"):
        rnnkit.gru_forward(x, None, case["params"][0], case["params"][1].astype(">f4"), None, None)


# ============================================================================= outputs vs inputs


def _snapshot(obj):
    return [a.copy() for a in arrays_in(obj)]


@pytest.mark.parametrize("cell", CELLS)
def test_outputs_fresh_inputs_untouched_at_edges(cell, rng):
    """T = 0 (final state == initial state), T = 1, B = 0 and padded rows: outputs never share
    memory with inputs or with each other, and no input is written."""
    for (T_, B_), lengths in [
        ((0, 3), None),
        ((1, 3), None),
        ((3, 0), None),
        ((4, 3), "random"),
        ((1, 1), "random"),
    ]:
        case = random_case(cell, T_, B_, 3, 5, np.float64, rng, lengths=lengths)
        inputs = [case["x"], case["states"], case["params"], case["dy"], case["d_finals"]]
        before = _snapshot(inputs)
        y, finals, ws = seq_forward(
            rnnkit, cell, case["x"], case["states"], case["params"], lengths=case["lengths"]
        )
        g = seq_backward(rnnkit, cell, case["dy"], case["d_finals"], ws)
        assert_no_aliasing((y, finals, tuple(g)), inputs)
        assert_no_aliasing((y, finals, tuple(g)), ws.saved)
        for a, b in zip(arrays_in(inputs), before):
            np.testing.assert_array_equal(a, b)
        if T_ == 0:  # no step ran: the final states equal the initial ones, in fresh arrays
            for f, s in zip(finals, case["states"]):
                np.testing.assert_array_equal(f, s)


def test_loss_outputs_fresh(rng):
    logits = rng.standard_normal((4, 3))
    t = np.array([0, 1, 2, -100])
    before = logits.copy()
    for out in (
        rnnkit.softmax(logits),
        rnnkit.softmax(logits[0]),
        *rnnkit.softmax_cross_entropy(logits, t, reduction="none"),
        rnnkit.softmax_cross_entropy(logits, t).dlogits,
    ):
        assert not np.shares_memory(out, logits)
        assert not np.shares_memory(out, t)
    np.testing.assert_array_equal(logits, before)

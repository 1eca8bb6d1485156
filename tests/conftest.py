"""Shared fixtures and helpers for the rnnkit test suite (kept small and generic).

The test files import the helpers from here (``from conftest import ...``): the one cell table
(``CELLS``, ``GATES``), random parameters, the dtype tolerances, the calling conventions shared
by kernels and oracles, the memory layouts, the finite-difference helper and the aliasing check.
"""

import zlib

import numpy as np
import pytest

from rnnkit import nn

# The tests' one cell table. Gate blocks per cell family (PyTorch layout: W_ih (G*H, I),
# W_hh (G*H, H)).
GATES = {"rnn": 1, "lstm": 4, "gru": 3}

# Cell variant -> (function family, keyword arguments selecting the variant). The family names
# the functions (``rnnkit.{family}_forward``, ...) and, upper-cased, the module (``nn.LSTM``).
CELLS = {
    "rnn_tanh": ("rnn", {"nonlinearity": "tanh"}),
    "rnn_relu": ("rnn", {"nonlinearity": "relu"}),
    "lstm": ("lstm", {}),
    "gru": ("gru", {"reset_after": True}),
    "gru_before": ("gru", {"reset_after": False}),
}


def n_states(cell):
    """The number of recurrent states of a cell variant or family: 2 (h, c) for the LSTM."""
    return 2 if CELLS.get(cell, (cell,))[0] == "lstm" else 1


def module_class(cell):
    """The ``rnnkit.nn`` module of a cell variant or family (construct it with the variant's
    keywords, ``CELLS[cell][1]``)."""
    return getattr(nn, CELLS.get(cell, (cell,))[0].upper())


# The cell variants torch.nn has (its GRU is the reset-after form only).
TORCH_CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def torch_class(cell):
    """-> (torch.nn.RNN / LSTM / GRU, its constructor keywords) for a variant in TORCH_CELLS."""
    import torch

    family, variant = CELLS[cell]
    assert cell in TORCH_CELLS, f"torch.nn has no {cell}"
    return getattr(torch.nn, family.upper()), {k: v for k, v in variant.items() if k != "reset_after"}


DTYPES = [np.float32, np.float64]

# Tolerances of kernel-vs-oracle comparisons, per dtype.
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


@pytest.fixture
def rng(request):
    """A generator seeded from the test id: reproducible, yet different per parametrisation."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def make_params(cell, I, H, dtype, rng, bias=True):
    """Random (W_ih (G*H, I), W_hh (G*H, H), b_ih, b_hh (G*H,)) of ``dtype``.

    ``cell`` is "rnn", "lstm" or "gru" (a suffix such as "rnn_relu" is ignored). ``bias`` is a
    bool or a pair (b_ih?, b_hh?); a missing bias is None. Values follow PyTorch's default
    init U(-1/sqrt(H), 1/sqrt(H)), which keeps the gates out of saturation.
    """
    G = GATES[cell.split("_")[0].split("-")[0]]
    b_ih_on, b_hh_on = (bias, bias) if isinstance(bias, bool) else bias
    k = 1.0 / np.sqrt(H)

    def draw(*shape):
        return rng.uniform(-k, k, size=shape).astype(dtype)

    W_ih, W_hh = draw(G * H, I), draw(G * H, H)
    b_ih = draw(G * H) if b_ih_on else None
    b_hh = draw(G * H) if b_hh_on else None
    return W_ih, W_hh, b_ih, b_hh


def assert_close(actual, expected, dtype=None, err_msg=""):
    """Assert that ``actual`` matches ``expected`` to the tolerance of ``dtype``.

    rtol is 1e-5 for float32 and 1e-12 for float64, with an absolute floor of
    rtol * max(1, max|expected|) so that entries near zero (cancellations) are judged on
    the scale of the whole array. Shapes and dtypes must match exactly; None matches None.
    """
    if expected is None or actual is None:
        assert actual is None and expected is None, f"{err_msg}: {actual!r} vs {expected!r}"
        return
    actual, expected = np.asarray(actual), np.asarray(expected)
    dtype = np.dtype(dtype if dtype is not None else expected.dtype)
    assert actual.shape == expected.shape, f"{err_msg}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{err_msg}: dtype {actual.dtype} != {expected.dtype}"
    rtol = RTOL[dtype]
    finite = expected[np.isfinite(expected)]
    scale = max(1.0, float(np.abs(finite).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=err_msg)


@pytest.fixture(autouse=True)
def split_every_step():
    """Run every kernel call of the tests on all of rnnkit's threads, whatever its size.

    Normally rnnkit's thread team splits a time step only when the step is big enough to repay
    the barriers; the tests' shapes are small, and this makes them cover the team's code path
    (with the machine's thread count) as well as the single-thread one.
    """
    from rnnkit import _core

    old = _core._get_team_min_work()
    _core._set_team_min_work(0)
    yield
    _core._set_team_min_work(old)


# One calling convention for both modules (rnnkit and rnnkit.reference) and every cell variant.


def seq_forward(mod, cell, x, states, params, **opts):
    """-> (y, tuple of final states, workspace); ``mod`` is rnnkit or rnnkit.reference."""
    family, variant = CELLS[cell]
    fn = getattr(mod, f"{family}_forward")
    if family == "lstm":
        y, finals, ws = fn(x, *states, *params, **opts)
        return y, tuple(finals), ws
    y, h_T, ws = fn(x, *states, *params, **variant, **opts)
    return y, (h_T,), ws


def seq_backward(mod, cell, dy, d_finals, ws):
    return getattr(mod, f"{CELLS[cell][0]}_backward")(dy, *d_finals, ws)


def cell_forward(mod, cell, x, states, params):
    """-> (tuple of next states, cache)."""
    family, variant = CELLS[cell]
    fn = getattr(mod, f"{family}_cell_forward")
    if family == "lstm":
        nxt, cache = fn(x, *states, *params)
        return tuple(nxt), cache
    h, cache = fn(x, *states, *params, **variant)
    return (h,), cache


def cell_backward(mod, cell, d_next, cache):
    return getattr(mod, f"{CELLS[cell][0]}_cell_backward")(*d_next, cache)


# Random cases through both modules: the robustness tests (layouts, threads, NaN, ...).


def random_case(cell, T, B, I, H, dtype, rng, lengths=None, scale=1.0):
    """Random inputs, initial states and cotangents of one sequence call, as a dict.

    ``lengths``: None or "random" (each in [1, T]); H = 0 gives empty weights; ``scale``
    multiplies W_ih. Every state and cotangent is present."""

    def normal(*shape, s=1.0):
        return (s * rng.standard_normal(shape)).astype(dtype)

    k = n_states(cell)
    if lengths == "random" and T > 0:
        lengths = rng.integers(1, T + 1, size=B)
    elif lengths == "random":
        lengths = None
    if H > 0:
        W_ih, W_hh, b_ih, b_hh = make_params(cell, I, H, dtype, rng)
    else:  # (make_params scales by 1/sqrt(H))
        W_ih, W_hh, b_ih, b_hh = (np.zeros(s, dtype) for s in ((0, I), (0, 0), (0,), (0,)))
    if scale != 1.0:
        W_ih = (W_ih * scale).astype(dtype)
    return {
        "x": normal(T, B, I),
        "states": tuple(normal(B, H, s=0.5) for _ in range(k)),
        "params": (W_ih, W_hh, b_ih, b_hh),
        "lengths": lengths,
        "dy": normal(T, B, H),
        "d_finals": tuple(normal(B, H) for _ in range(k)),
    }


def run_case(mod, cell, case, reverse=False, **opts):
    """Forward and backward -> flat list of every result array (None kept); ``opts`` go to the
    forward (e.g. precision)."""
    y, finals, ws = seq_forward(
        mod, cell, case["x"], case["states"], case["params"], reverse=reverse, lengths=case["lengths"], **opts
    )
    g = seq_backward(mod, cell, case["dy"], case["d_finals"], ws)
    return [y, *finals, *g]


def assert_bitwise(actual, expected, what=""):
    """Two lists of results (None kept) are identical: dtypes, shapes and every bit."""
    assert len(actual) == len(expected)
    for k, (a, e) in enumerate(zip(actual, expected)):
        if e is None:
            assert a is None, f"{what} result {k}"
            continue
        assert a.dtype == e.dtype and a.shape == e.shape, f"{what} result {k}"
        np.testing.assert_array_equal(a, e, err_msg=f"{what} result {k}")


# ----------------------------------------------------------------------------- memory layouts
# The same values through other memory layouts (the kernels must give the same results).


def strided(a, fill):
    """A view with step 2 on every axis into a larger buffer whose other elements are ``fill``."""
    big = np.full(tuple(2 * s for s in a.shape), fill, dtype=a.dtype)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    return view


def negative_strides(a):
    """A view with negative strides on every axis."""
    return np.flip(np.flip(a).copy())


def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


# ----------------------------------------------------------------------------- gradients
# Every finite-difference check of the suite goes through these two functions (float64).

FD_EPS = 1e-6  # the central-difference step


def central_difference(f, eps=FD_EPS):
    """(f(eps) - f(-eps)) / (2 eps): the derivative at 0 of a scalar function of a step."""
    return (f(eps) - f(-eps)) / (2 * eps)


def finite_difference(f, array, eps=FD_EPS, at=None):
    """Central differences of the scalar ``f()`` w.r.t. the entries of ``array``.

    ``f`` reads ``array``, which is perturbed in place (and restored, also on an error).
    ``at``: flat indices to differentiate at (default every entry; the others stay 0).
    Returns a float64 array of ``array``'s shape.
    """
    grad = np.zeros(array.shape)
    indices = np.ndindex(array.shape) if at is None else (np.unravel_index(i, array.shape) for i in at)
    for idx in indices:
        old = array[idx]

        def f_at(step, idx=idx, old=old):
            array[idx] = old + step
            return f()

        try:
            grad[idx] = central_difference(f_at, eps)
        finally:
            array[idx] = old
    return grad


# ----------------------------------------------------------------------------- aliasing


def arrays_in(obj):
    """Every ndarray inside nested tuples (NamedTuples too), lists and dict values."""
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [a for o in obj for a in arrays_in(o)]
    if isinstance(obj, dict):
        return [a for o in obj.values() for a in arrays_in(o)]
    return []


def assert_no_aliasing(outputs, inputs):
    """No output array shares memory with an input array or with another output."""
    outs, ins = arrays_in(outputs), arrays_in(inputs)
    for i, o in enumerate(outs):
        for a in ins:
            assert not np.shares_memory(o, a), f"output {i} {o.shape} aliases an input {a.shape}"
        for j, p in enumerate(outs[:i]):
            assert not np.shares_memory(o, p), f"outputs {j} and {i} share memory"

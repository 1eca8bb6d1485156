"""precision="bf16": every kernel this CPU runs against the bfloat16 oracle.

The oracle (rnnkit.reference with precision="bf16") rounds each matmul's operands to bfloat16 as
the kernels do and computes in float64, so a kernel is held to float32 accumulation error: one
step forward from a given state to 1e-5 of the largest value. Wherever a product's input is
itself computed (the states of a sequence, the gate gradients of a backward step), the kernel's
float32 value and the oracle's float64 one may round to neighbouring bfloat16 numbers (2^-8
apart), and that neighbour (2^-8 relative in one operand) carries on through the later steps.
So one step backward is held to 1e-4; whole sequences to a median relative error of 1e-5 and a
largest error of 2e-3 of the largest value. Two exceptions, both measured: the weight and bias
gradients are sums over all T*B rows, so one such rounding anywhere in the sequence (about one
per 10^4-10^5 roundings) shifts every element alike (medians of 3e-5 to 4e-4 measured): they are
held to the largest-error bound only; and the vanilla RNN's largest error is held to 4e-3 (no
gate damps what such a rounding changes in its row's later steps: 2.1e-3 measured, on one row). Each kernel
(AMX, AVX512-BF16) is forced in turn; the tests of a kernel skip where the CPU lacks it.
"""

import numpy as np
import pytest

import rnnkit
from conftest import CELLS, make_params, seq_backward, seq_forward
from rnnkit import _core
from rnnkit import reference as ref

BEST = _core._cpu_info()["bf16_kernel"]
KERNELS = [
    pytest.param(
        "avx512_bf16",
        marks=pytest.mark.skipif(
            BEST == "none", reason="the CPU lacks AVX512-BF16 (needed for precision='bf16')"
        ),
    ),
    pytest.param(
        "amx", marks=pytest.mark.skipif(BEST != "amx", reason="the CPU lacks AMX-BF16 (or its tile data)")
    ),
]
needs_bf16 = pytest.mark.skipif(BEST == "none", reason="the CPU lacks AVX512-BF16 and AMX-BF16")


@pytest.fixture(params=KERNELS)
def kernel(request):
    _core._set_bf16_kernel(request.param)
    yield request.param
    _core._set_bf16_kernel("")


def normwise(actual, expected):
    """Largest error relative to the largest value of the oracle."""
    expected = np.asarray(expected, np.float64)
    return float(np.abs(np.asarray(actual, np.float64) - expected).max() / max(np.abs(expected).max(), 1e-30))


def median_relative(actual, expected):
    """Median over the elements of |error| / |oracle| (elements below 1e-6 of the largest are
    judged on that floor)."""
    expected = np.asarray(expected, np.float64)
    floor = 1e-6 * max(np.abs(expected).max(), 1e-30)
    return float(
        np.median(np.abs(np.asarray(actual, np.float64) - expected) / np.maximum(np.abs(expected), floor))
    )


def case(cell, T, B, I, H, rng, lengths=False, proj=0):
    family = CELLS[cell][0]
    W_ih, W_hh, b_ih, b_hh = make_params(cell, I, H, np.float32, rng)
    opts = {}
    S = H
    if proj:
        S = proj
        W_hh = rng.uniform(-(H**-0.5), H**-0.5, (4 * H, proj)).astype(np.float32)
        opts["W_hr"] = rng.uniform(-(H**-0.5), H**-0.5, (proj, H)).astype(np.float32)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    states = [rng.standard_normal((B, S)).astype(np.float32)]
    if family == "lstm":
        states.append(rng.standard_normal((B, H)).astype(np.float32))
    if lengths:
        opts["lengths"] = rng.integers(1, T + 1, B)
    dy = rng.standard_normal((T, B, S)).astype(np.float32)
    d_finals = [rng.standard_normal(s.shape).astype(np.float32) for s in states]
    return x, states, (W_ih, W_hh, b_ih, b_hh), opts, dy, d_finals


def both(cell, x, states, params, opts, dy, d_finals, **extra):
    """(kernel results, oracle results): y, final states, then every gradient; and their names."""
    out = []
    for mod in (rnnkit, ref):
        y, finals, ws = seq_forward(mod, cell, x, states, params, precision="bf16", **opts, **extra)
        grads = seq_backward(mod, cell, dy, d_finals, ws)
        out.append([y, *finals, *(g for g in grads)])
        names = ["y", *(f"final{k}" for k in range(len(finals))), *grads._fields]
    return out + [names]


VARIANTS = [(c, 0) for c in CELLS] + [("lstm", 12)]  # (cell, LSTM projection size)


@pytest.mark.parametrize("cell,proj", VARIANTS)
@pytest.mark.parametrize("B", [1, 5, 37])
def test_one_step_equals_the_oracle(kernel, cell, proj, B, rng):
    x, states, params, opts, dy, d_finals = case(cell, 1, B, 45, 40, rng, proj=proj)
    got, want, _ = both(cell, x, states, params, opts, dy, d_finals)
    n_forward = 1 + len(states)  # y and the final states; then the gradients
    for k, (a, e) in enumerate(zip(got, want)):
        if e is None:
            assert a is None
            continue
        assert a.dtype == np.float32
        bound = 1e-5 if k < n_forward else 1e-4
        assert normwise(a, e) <= bound, f"output {k}: {normwise(a, e):.2e}"


@pytest.mark.parametrize("cell,proj", VARIANTS)
@pytest.mark.parametrize("reverse,lengths", [(False, False), (True, True), (False, True)])
def test_sequences_equal_the_oracle(kernel, cell, proj, reverse, lengths, rng):
    x, states, params, opts, dy, d_finals = case(cell, 9, 34, 50, 48, rng, lengths=lengths, proj=proj)
    got, want, names = both(cell, x, states, params, opts, dy, d_finals, reverse=reverse)
    for name, a, e in zip(names, got, want):
        if e is None:
            assert a is None
            continue
        largest = 4e-3 if CELLS[cell][0] == "rnn" else 2e-3
        if not name.startswith(("dW", "db")):
            assert median_relative(a, e) <= 1e-5, f"{name}: median {median_relative(a, e):.2e}"
        assert normwise(a, e) <= largest, f"{name}: max {normwise(a, e):.2e}"


@needs_bf16
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_kernel_rounds_to_bfloat16(cell, rng):
    """The bf16 kernel is not the float32 one: against the float32 oracle it is off by what
    bfloat16 rounding costs (so the tests above would see a kernel that skipped it)."""
    x, states, params, opts, _, _ = case(cell, 1, 8, 64, 64, rng)
    y16 = seq_forward(rnnkit, cell, x, states, params, precision="bf16", training=False)[0]
    y32 = seq_forward(
        ref,
        cell,
        x.astype(np.float64),
        [s.astype(np.float64) for s in states],
        [p.astype(np.float64) for p in params],
    )[0]
    assert normwise(y16, y32) > 1e-4


@needs_bf16
def test_rounding_is_round_to_nearest_even_as_torch(rng):
    """The kernels' and the oracle's rounding against torch's float -> bfloat16 conversion, on
    values that include exact ties: y = relu(x W^T) with W the identity is bf16(x)."""
    torch = pytest.importorskip("torch")
    n = 64
    bits = rng.integers(0x00800000, 0x7F000000, size=(16, 1, n), dtype=np.uint32)
    bits[:8] = (bits[:8] & 0xFFFF0000) | 0x8000  # exact ties between two bfloat16 numbers
    bits[:, :, ::3] |= 0x80000000  # negatives (relu keeps the positives; x^2 below keeps both)
    x = bits.view(np.float32)
    eye = np.eye(n, dtype=np.float32)
    want = torch.from_numpy(x).to(torch.bfloat16).to(torch.float64).numpy()
    np.testing.assert_array_equal(ref.recurrent._round_bf16(x), want)
    y, _, _ = rnnkit.rnn_forward(
        x,
        None,
        eye,
        np.zeros((n, n), np.float32),
        None,
        None,
        nonlinearity="relu",
        precision="bf16",
        training=False,
    )
    np.testing.assert_array_equal(y, np.maximum(want, 0).astype(np.float32))
    # subnormal floats are flushed to zero (as the bfloat16 dot-product instructions read them)
    tiny = np.full((1, 1, n), 1e-39, np.float32)
    np.testing.assert_array_equal(ref.recurrent._round_bf16(tiny), 0.0)


@needs_bf16
@pytest.mark.parametrize("threads", [1, 2])
def test_thread_count_does_not_change_results(threads, rng):
    x, states, params, opts, dy, d_finals = case("lstm", 6, 40, 64, 80, rng)
    saved = rnnkit.get_num_threads()
    try:
        rnnkit.set_num_threads(1)
        one = both("lstm", x, states, params, opts, dy, d_finals)[0]
        rnnkit.set_num_threads(threads)
        many = both("lstm", x, states, params, opts, dy, d_finals)[0]
        assert threads == 1 or rnnkit.get_num_threads() == 2
    finally:
        rnnkit.set_num_threads(saved)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)


@needs_bf16
def test_batches_above_the_packed_limit_stay_bf16(rng):
    """Above the small-batch limit float32 uses the BLAS; bf16 still runs its own kernel."""
    saved = _core._get_small_batch_limit()
    _core._set_small_batch_limit(4)
    try:
        x, states, params, opts, dy, d_finals = case("gru", 4, 21, 30, 36, rng)
        got, want, names = both("gru", x, states, params, opts, dy, d_finals)
    finally:
        _core._set_small_batch_limit(saved)
    for name, a, e in zip(names, got, want):
        assert normwise(a, e) <= 2e-3, name
        assert name.startswith(("dW", "db")) or median_relative(a, e) <= 1e-5, name


@needs_bf16
def test_modules_and_streams(rng):
    """A bidirectional bf16 LSTM module is the two oracle directions side by side; a stream of
    a one-direction bf16 GRU equals its eval forward to float32 accumulation error."""
    lstm = rnnkit.nn.LSTM(20, 24, bidirectional=True, precision="bf16", seed=1)
    x = rng.standard_normal((7, 5, 20)).astype(np.float32)
    out, (h_n, _) = lstm(x)
    w = {k: p.data for k, p in lstm.named_parameters()}
    for d, sfx in enumerate(["", "_reverse"]):
        y, (h_T, _), _ = ref.lstm_forward(
            x,
            None,
            None,
            w["weight_ih_l0" + sfx],
            w["weight_hh_l0" + sfx],
            w["bias_ih_l0" + sfx],
            w["bias_hh_l0" + sfx],
            reverse=bool(d),
            precision="bf16",
        )
        assert normwise(out[:, :, 24 * d : 24 * (d + 1)], y) <= 2e-3
        assert median_relative(out[:, :, 24 * d : 24 * (d + 1)], y) <= 1e-5
    dx, _ = lstm.backward(np.ones_like(out))
    assert dx.shape == x.shape and np.isfinite(dx).all()
    assert "precision='bf16'" in repr(lstm)

    gru = rnnkit.nn.GRU(20, 16, num_layers=2, precision="bf16", seed=2).eval()
    whole, _ = gru(x)
    stream = gru.stream(batch=5)
    chunks = np.concatenate([stream(x[:3]), stream(x[3])[None], stream(x[4:])])
    assert normwise(chunks, whole) <= 1e-5


def test_bad_precision_is_refused():
    x = np.zeros((2, 1, 3), np.float32)
    W = np.zeros((4, 3), np.float32), np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match=r"precision: expected one of 'float32', 'bf16', got 'bfloat16'"):
        rnnkit.rnn_forward(x, None, *W, None, None, precision="bfloat16")
    with pytest.raises(ValueError, match=r"precision: 'bf16' is for float32 arrays.*got float64"):
        rnnkit.rnn_forward(
            x.astype(np.float64), None, *(w.astype(np.float64) for w in W), None, None, precision="bf16"
        )
    with pytest.raises(ValueError, match=r"precision: 'bf16' is for float32 arrays"):
        rnnkit.nn.GRU(3, 4, dtype=np.float64, precision="bf16")
    with pytest.raises(ValueError, match=r"precision: expected one of"):
        rnnkit.nn.LSTMCell(3, 4, precision="half")


@pytest.mark.skipif(BEST == "amx", reason="this CPU runs every bf16 kernel")
def test_a_kernel_the_cpu_lacks_cannot_be_forced():
    with pytest.raises(ValueError, match=r"name: expected '' or a bf16 kernel this CPU runs"):
        _core._set_bf16_kernel("amx")


@pytest.mark.skipif(BEST != "none", reason="the CPU has a bfloat16 kernel")
def test_cpus_without_bf16_get_a_clear_error():
    x = np.zeros((2, 1, 3), np.float32)
    with pytest.raises(ValueError, match=r"precision: 'bf16' needs a CPU with AVX512-BF16 or AMX-BF16"):
        rnnkit.rnn_forward(
            x, None, np.zeros((4, 3), np.float32), np.zeros((4, 4), np.float32), None, None, precision="bf16"
        )

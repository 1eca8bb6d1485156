"""Tests of the NumPy oracles in ``rnnkit.reference`` on their own.

The kernel tests trust these oracles, so here they are checked against things that
do not share their code:

* central finite differences in float64 of a random-cotangent scalar loss
  L = sum(dy * y) + sum(dh_T * h_T) (+ sum(dc_T * c_T) for the LSTM), with respect to
  every input, for every cell, both directions, with and without lengths;
* running each padded sequence alone;
* a whole model (RNN + linear output + softmax cross-entropy) differentiated end to end;
* torch.nn.RNN / LSTM / GRU in float64, when torch is installed.

Shapes are tiny (T <= 4, B <= 3, I, H <= 4) so that finite differences stay fast.
"""

import numpy as np
import pytest

from conftest import CELLS, GATES, TORCH_CELLS, finite_difference, torch_class
from rnnkit import reference as ref

GRAD_TOL = 1e-6  # bound on rel_error(finite differences, analytic gradient)
TORCH_TOL = 1e-10  # bound on rel_error(oracle, torch), both float64

T, B, I, H = 4, 3, 3, 4

# a padded batch, sorted, unsorted, and one where no sequence reaches t = T-1
LENGTHS = [None, [4, 2, 1], [2, 4, 1], [1, 3, 2]]


# ----------------------------------------------------------------------------------
# Helpers: one calling convention for all cell kinds
# ----------------------------------------------------------------------------------


def rel_error(a, b, floor=1e-3):
    """max|a - b| relative to the larger of max|a| and max|b|.

    The floor keeps arrays whose entries are all tiny from being judged on pure
    finite-difference noise (about 1e-10 absolute at a step of 1e-6).
    """
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), floor)
    return np.abs(a - b).max(initial=0.0) / scale


def state_names(kind):
    """Names of the recurrent states: ("h0",) or ("h0", "c0") for the LSTM."""
    return ("h0", "c0") if CELLS[kind][0] == "lstm" else ("h0",)


def make_params(kind, rng, *, T=T, B=B, bias=(True, True), h0=True):
    """Random float64 inputs for one sequence run: a dict name -> array or None."""
    cell = CELLS[kind][0]
    G = GATES[cell]
    p = {"x": rng.normal(size=(T, B, I))}
    for name in state_names(kind):
        p[name] = rng.normal(scale=0.5, size=(B, H)) if h0 else None
    p["W_ih"] = rng.uniform(-0.8, 0.8, size=(G * H, I))
    p["W_hh"] = rng.uniform(-0.8, 0.8, size=(G * H, H))
    p["b_ih"] = rng.uniform(-0.5, 0.5, size=G * H) if bias[0] else None
    p["b_hh"] = rng.uniform(-0.5, 0.5, size=G * H) if bias[1] else None
    return p


def run_forward(kind, p, **opts):
    """Forward of the sequence oracle -> (y, tuple of final states, workspace)."""
    cell, variant = CELLS[kind]
    weights = (p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
    if cell == "lstm":
        y, finals, ws = ref.lstm_forward(p["x"], p["h0"], p["c0"], *weights, **opts)
        return y, finals, ws
    forward = ref.rnn_forward if cell == "rnn" else ref.gru_forward
    y, h_T, ws = forward(p["x"], p["h0"], *weights, **variant, **opts)
    return y, (h_T,), ws


def run_backward(kind, dy, d_finals, ws):
    """Backward of the sequence oracle -> dict input name -> gradient (None for no bias)."""
    cell = CELLS[kind][0]
    grads = getattr(ref, f"{cell}_backward")(dy, *d_finals, ws)
    # field "dW_ih" is the gradient of input "W_ih", "dx" of "x", and so on
    return {field[1:]: value for field, value in grads._asdict().items()}


def random_cotangents(kind, rng, T=T, B=B):
    """dy (T, B, H) and one (B, H) cotangent per final state."""
    dy = rng.normal(size=(T, B, H))
    return dy, tuple(rng.normal(size=(B, H)) for _ in state_names(kind))


def cotangent_loss(y, finals, dy, d_finals):
    """L = sum(dy * y) + sum over final states of sum(d_state * state)."""
    return np.sum(dy * y) + sum(np.sum(d * s) for d, s in zip(d_finals, finals))


def check_against_finite_differences(f, p, analytic):
    """Compare every analytic gradient with central differences of f over p[name]."""
    for name, value in p.items():
        if value is None:
            continue
        numeric = finite_difference(f, value)
        err = rel_error(numeric, analytic[name])
        assert err <= GRAD_TOL, f"d{name}: relative error {err:.3g}"
        # a check against an all-zero gradient would prove nothing
        assert np.abs(numeric).max() > 1e-3, f"d{name} is (nearly) zero"


def relu_preactivations(ws):
    """All pre-activations a computed by an rnn_relu forward pass."""
    return np.concatenate([cache["a"].ravel() for cache in ws["caches"]])


def make_params_away_from_kink(kind, rng, run_opts, **make_opts):
    """make_params, redrawn for rnn_relu until no pre-activation is within 1e-3 of relu's kink.

    Finite differences across the kink would measure an average of two slopes.
    """
    while True:
        p = make_params(kind, rng, **make_opts)
        if kind != "rnn_relu":
            return p
        _, _, ws = run_forward(kind, p, **run_opts)
        if np.abs(relu_preactivations(ws)).min() > 1e-3:
            return p


# ----------------------------------------------------------------------------------
# Sequence gradients vs finite differences
# ----------------------------------------------------------------------------------


def check_sequence_gradients(kind, seed, run_opts, **make_opts):
    rng = np.random.default_rng(seed)
    p = make_params_away_from_kink(kind, rng, run_opts, **make_opts)
    dy, d_finals = random_cotangents(kind, rng)

    def loss():
        y, finals, _ = run_forward(kind, p, training=False, **run_opts)
        return cotangent_loss(y, finals, dy, d_finals)

    _, _, ws = run_forward(kind, p, **run_opts)
    analytic = run_backward(kind, dy, d_finals, ws)
    check_against_finite_differences(loss, p, analytic)

    # a missing bias has no gradient; a missing state behaves like zeros
    for name in ("b_ih", "b_hh"):
        assert (analytic[name] is None) == (p[name] is None)
    for name in state_names(kind):
        if p[name] is None:
            q = dict(p, **{n: np.zeros((B, H)) for n in state_names(kind)})
            _, _, ws0 = run_forward(kind, q, **run_opts)
            from_zeros = run_backward(kind, dy, d_finals, ws0)[name]
            np.testing.assert_array_equal(analytic[name], from_zeros)
    # padded time steps get exactly zero input gradient
    if run_opts.get("lengths") is not None:
        for b, L in enumerate(run_opts["lengths"]):
            assert not analytic["x"][L:, b].any()


@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", CELLS)
def test_sequence_gradients_match_finite_differences(kind, reverse, lengths):
    check_sequence_gradients(kind, 0, {"reverse": reverse, "lengths": lengths})


@pytest.mark.parametrize(
    "missing",
    ["biases", "states", "biases_and_states", "b_ih", "b_hh"],
)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", CELLS)
def test_sequence_gradients_with_none_inputs(kind, reverse, missing):
    make_opts = {
        "bias": (
            missing not in ("biases", "biases_and_states", "b_ih"),
            missing not in ("biases", "biases_and_states", "b_hh"),
        ),
        "h0": missing not in ("states", "biases_and_states"),
    }
    check_sequence_gradients(kind, 1, {"reverse": reverse, "lengths": [2, 4, 1]}, **make_opts)


# ----------------------------------------------------------------------------------
# Cells: finite differences, and equality with the T = 1 sequence
# ----------------------------------------------------------------------------------


def run_cell(kind, p):
    """Forward of the cell oracle on x = p["x"] (B, I) -> (tuple of next states, cache)."""
    cell, variant = CELLS[kind]
    weights = (p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
    if cell == "lstm":
        return ref.lstm_cell_forward(p["x"], p["h0"], p["c0"], *weights)
    forward = ref.rnn_cell_forward if cell == "rnn" else ref.gru_cell_forward
    h_next, cache = forward(p["x"], p["h0"], *weights, **variant)
    return (h_next,), cache


def run_cell_backward(kind, d_next, cache):
    """Backward of the cell oracle -> dict input name -> gradient."""
    cell = CELLS[kind][0]
    if cell == "lstm":
        g = ref.lstm_cell_backward(*d_next, cache)
        return {
            "x": g.dx,
            "h0": g.dh,
            "c0": g.dc,
            "W_ih": g.dW_ih,
            "W_hh": g.dW_hh,
            "b_ih": g.db_ih,
            "b_hh": g.db_hh,
        }
    backward = ref.rnn_cell_backward if cell == "rnn" else ref.gru_cell_backward
    g = backward(*d_next, cache)
    return {"x": g.dx, "h0": g.dh, "W_ih": g.dW_ih, "W_hh": g.dW_hh, "b_ih": g.db_ih, "b_hh": g.db_hh}


@pytest.mark.parametrize("kind", CELLS)
def test_cell_gradients_match_finite_differences(kind):
    rng = np.random.default_rng(2)
    p = make_params_away_from_kink(kind, rng, {}, T=1)
    p["x"] = p["x"][0]  # a cell sees one time step: x (B, I)
    _, d_next = random_cotangents(kind, rng)

    def loss():
        states, _ = run_cell(kind, p)
        return sum(np.sum(d * s) for d, s in zip(d_next, states))

    _, cache = run_cell(kind, p)
    check_against_finite_differences(loss, p, run_cell_backward(kind, d_next, cache))


@pytest.mark.parametrize("h0", [True, False])
@pytest.mark.parametrize("kind", CELLS)
def test_cell_equals_length_one_sequence(kind, h0):
    rng = np.random.default_rng(3)
    p = make_params(kind, rng, T=1, h0=h0)
    dy, d_finals = random_cotangents(kind, rng, T=1)
    y, finals, ws = run_forward(kind, p)
    seq_grads = run_backward(kind, dy, d_finals, ws)

    cell_p = dict(p, x=p["x"][0])
    states, cache = run_cell(kind, cell_p)
    # in a length-1 sequence y[0] is h_T, so the cell sees dy[0] + dh_T
    d_next = (dy[0] + d_finals[0],) + d_finals[1:]
    cell_grads = run_cell_backward(kind, d_next, cache)

    np.testing.assert_allclose(y[0], states[0], rtol=1e-14, atol=0)
    for seq_state, cell_state in zip(finals, states):
        np.testing.assert_allclose(seq_state, cell_state, rtol=1e-14, atol=0)
    for name, g in seq_grads.items():
        if name == "x":
            np.testing.assert_allclose(g[0], cell_grads["x"], rtol=1e-13, atol=1e-15)
        elif g is None:
            assert cell_grads[name] is None
        else:
            np.testing.assert_allclose(g, cell_grads[name], rtol=1e-13, atol=1e-15)


# ----------------------------------------------------------------------------------
# Variable lengths: a padded batch equals each sequence run alone
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", CELLS)
def test_padded_batch_equals_sequences_run_alone(kind, reverse):
    rng = np.random.default_rng(4)
    lengths = [2, 4, 1]
    p = make_params(kind, rng)
    dy, d_finals = random_cotangents(kind, rng)
    # padding must not matter at all, so fill it (x and dy) with large garbage
    for b, L in enumerate(lengths):
        p["x"][L:, b] = 1e6
        dy[L:, b] = -1e6

    y, finals, ws = run_forward(kind, p, reverse=reverse, lengths=lengths)
    grads = run_backward(kind, dy, d_finals, ws)

    summed = {name: 0.0 for name in ("W_ih", "W_hh", "b_ih", "b_hh")}
    for b, L in enumerate(lengths):
        # sequence b alone: its first L steps, batch of one
        alone = dict(p, x=p["x"][:L, b : b + 1])
        for name in state_names(kind):
            alone[name] = p[name][b : b + 1]
        y_b, finals_b, ws_b = run_forward(kind, alone, reverse=reverse)
        grads_b = run_backward(kind, dy[:L, b : b + 1], tuple(d[b : b + 1] for d in d_finals), ws_b)

        np.testing.assert_allclose(y[:L, b], y_b[:, 0], rtol=1e-12, atol=1e-14)
        assert not y[L:, b].any(), "outputs past the sequence's length must be zero"
        for state, state_b in zip(finals, finals_b):
            np.testing.assert_allclose(state[b], state_b[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(grads["x"][:L, b], grads_b["x"][:, 0], rtol=1e-12, atol=1e-14)
        assert not grads["x"][L:, b].any()
        for name in state_names(kind):
            np.testing.assert_allclose(grads[name][b], grads_b[name][0], rtol=1e-12, atol=1e-14)
        for name in summed:
            summed[name] = summed[name] + grads_b[name]
    # weights are shared by the batch: their gradient is the sum over sequences
    for name, total in summed.items():
        np.testing.assert_allclose(grads[name], total, rtol=1e-12, atol=1e-14)


def test_lengths_out_of_range_raise():
    p = make_params("gru", np.random.default_rng(5))
    for bad in ([0, 2, 1], [5, 2, 1], [2, 1], [1.5, 2, 1]):
        with pytest.raises(ValueError):
            run_forward("gru", p, lengths=bad)


# ----------------------------------------------------------------------------------
# Workspace contract, None cotangents, dtypes
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CELLS)
def test_inference_mode_has_no_workspace(kind):
    p = make_params(kind, np.random.default_rng(6))
    y_train, finals_train, _ = run_forward(kind, p, lengths=[2, 4, 1])
    y, finals, ws = run_forward(kind, p, lengths=[2, 4, 1], training=False)
    assert ws is None
    np.testing.assert_array_equal(y, y_train)
    for a, b in zip(finals, finals_train):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        run_backward(kind, None, (None,) * len(finals), None)


def test_backward_rejects_another_cells_cache():
    rng = np.random.default_rng(7)
    _, _, lstm_ws = run_forward("lstm", make_params("lstm", rng))
    _, _, gru_ws = run_forward("gru", make_params("gru", rng))
    _, rnn_cache = run_cell("rnn_tanh", dict(make_params("rnn_tanh", rng, T=1), x=np.ones((B, I))))
    with pytest.raises(ValueError):
        ref.gru_backward(None, None, lstm_ws)
    with pytest.raises(ValueError):
        ref.rnn_backward(None, None, gru_ws)
    with pytest.raises(ValueError):
        ref.lstm_backward(None, None, None, gru_ws)
    with pytest.raises(ValueError):
        ref.rnn_backward(None, None, rnn_cache)  # a cell cache is not a sequence workspace
    with pytest.raises(ValueError):
        ref.rnn_cell_backward(None, gru_ws)  # nor the other way round
    with pytest.raises(ValueError):
        ref.gru_cell_backward(None, rnn_cache)


@pytest.mark.parametrize("kind", CELLS)
def test_none_cotangents_mean_zero(kind):
    rng = np.random.default_rng(8)
    p = make_params(kind, rng)
    dy, d_finals = random_cotangents(kind, rng)
    _, _, ws = run_forward(kind, p, lengths=[2, 4, 1])
    zeros = tuple(np.zeros_like(d) for d in d_finals)

    only_dy = run_backward(kind, dy, (None,) * len(d_finals), ws)
    only_dy_explicit = run_backward(kind, dy, zeros, ws)
    only_final = run_backward(kind, None, d_finals, ws)
    only_final_explicit = run_backward(kind, np.zeros_like(dy), d_finals, ws)
    nothing = run_backward(kind, None, (None,) * len(d_finals), ws)
    for name, g in only_dy.items():
        np.testing.assert_array_equal(g, only_dy_explicit[name])
        np.testing.assert_array_equal(only_final[name], only_final_explicit[name])
        assert not nothing[name].any()


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", CELLS)
def test_float32_in_float32_out(kind, reverse):
    rng = np.random.default_rng(9)
    p64 = make_params(kind, rng)
    dy, d_finals = random_cotangents(kind, rng)
    p32 = {k: None if v is None else v.astype(np.float32) for k, v in p64.items()}

    results = {}
    for name, p, cast in (("64", p64, np.float64), ("32", p32, np.float32)):
        y, finals, ws = run_forward(kind, p, reverse=reverse, lengths=[2, 4, 1])
        grads = run_backward(kind, dy.astype(cast), tuple(d.astype(cast) for d in d_finals), ws)
        results[name] = [y, *finals, *grads.values()]
    for a64, a32 in zip(results["64"], results["32"]):
        assert a32.dtype == np.float32
        assert rel_error(a32, a64, floor=1e-8) < 1e-5


@pytest.mark.parametrize("kind", CELLS)
def test_cells_compute_in_float32(kind):
    # The sequence driver stores into float32 buffers, which would hide a silent
    # float64 upcast inside a cell; the cells return their arrays as computed.
    rng = np.random.default_rng(16)
    p = {k: None if v is None else v.astype(np.float32) for k, v in make_params(kind, rng, T=1).items()}
    p["x"] = p["x"][0]
    _, d_next = random_cotangents(kind, rng)
    states, cache = run_cell(kind, p)
    grads = run_cell_backward(kind, tuple(d.astype(np.float32) for d in d_next), cache)
    for a in (*states, *grads.values()):
        assert a.dtype == np.float32


# ----------------------------------------------------------------------------------
# Softmax and cross-entropy
# ----------------------------------------------------------------------------------


def test_softmax_is_stable_and_normalised():
    rng = np.random.default_rng(10)
    logits = rng.normal(size=(2, 3, 5))
    p = ref.softmax(logits)
    naive = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(p, naive, rtol=1e-14)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-15)
    # exp(1000) overflows; the shifted form must not care about a constant offset
    np.testing.assert_allclose(ref.softmax(logits + 1000.0), p, rtol=1e-12)
    assert ref.softmax(logits.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize("ignore_index", [-100, 3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradient_matches_finite_differences(reduction, ignore_index):
    rng = np.random.default_rng(11)
    N, C = 6, 5
    logits = rng.normal(size=(N, C))
    targets = np.array([0, ignore_index, 4, 2, ignore_index, 1])
    kept = targets != ignore_index

    res = ref.softmax_cross_entropy(logits, targets, ignore_index=ignore_index, reduction=reduction)
    # loss value from its definition: -log softmax at the target, kept rows only
    p_target = ref.softmax(logits)[np.arange(N), np.where(kept, targets, 0)]
    row_loss = np.where(kept, -np.log(p_target), 0)
    expected = {"mean": row_loss.sum() / kept.sum(), "sum": row_loss.sum(), "none": row_loss}
    np.testing.assert_allclose(res.loss, expected[reduction], rtol=1e-14)
    assert not res.dlogits[~kept].any(), "ignored rows must get zero gradient"

    def loss():
        r = ref.softmax_cross_entropy(logits, targets, ignore_index=ignore_index, reduction=reduction)
        return np.sum(r.loss)  # "none": dlogits is the gradient of loss.sum()

    numeric = finite_difference(loss, logits)
    assert rel_error(numeric, res.dlogits) <= GRAD_TOL


def test_cross_entropy_all_rows_ignored():
    logits = np.ones((3, 4))
    targets = np.full(3, -100)
    mean = ref.softmax_cross_entropy(logits, targets)
    assert np.isnan(mean.loss) and not mean.dlogits.any()
    total = ref.softmax_cross_entropy(logits, targets, reduction="sum")
    assert total.loss == 0 and not total.dlogits.any()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_loss_is_a_scalar_of_the_logits_dtype(reduction):
    logits = np.random.default_rng(12).normal(size=(4, 3)).astype(np.float32)
    res = ref.softmax_cross_entropy(logits, np.array([0, 1, 2, -100]), reduction=reduction)
    assert isinstance(res.loss, np.float32)
    assert res.dlogits.dtype == np.float32


def test_cross_entropy_rejects_bad_arguments():
    logits = np.zeros((2, 3))
    with pytest.raises(ValueError):
        ref.softmax_cross_entropy(logits, np.array([0, 3]))  # class 3 does not exist
    with pytest.raises(ValueError):
        ref.softmax_cross_entropy(logits, np.array([0, 1]), reduction="average")


# ----------------------------------------------------------------------------------
# A whole model: RNN -> linear output layer -> softmax cross-entropy, summed over t
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", CELLS)
def test_whole_model_gradients_match_finite_differences(kind, reverse):
    rng = np.random.default_rng(13)
    K = 5  # classes
    lengths = [3, 4, 2]
    run_opts = {"reverse": reverse, "lengths": lengths}
    p = make_params_away_from_kink(kind, rng, run_opts)
    p["V"] = rng.normal(size=(K, H))  # output layer o_t = h_t V^T + c
    p["c"] = rng.normal(size=K)
    targets = rng.integers(0, K, size=(T, B))
    for b, L in enumerate(lengths):
        targets[L:, b] = -100  # padded steps have nothing to predict

    def model_loss(keep_workspace=False):
        y, _, ws = run_forward(kind, p, training=keep_workspace, **run_opts)
        steps = [ref.softmax_cross_entropy(y[t] @ p["V"].T + p["c"], targets[t]) for t in range(T)]
        return sum(s.loss for s in steps), y, steps, ws

    # backward chain: cross-entropy -> output layer -> RNN
    _, y, steps, ws = model_loss(keep_workspace=True)
    dy = np.zeros_like(y)
    analytic = {"V": np.zeros_like(p["V"]), "c": np.zeros_like(p["c"])}
    for t, step in enumerate(steps):
        dy[t] = step.dlogits @ p["V"]
        analytic["V"] += step.dlogits.T @ y[t]
        analytic["c"] += step.dlogits.sum(axis=0)
    analytic.update(run_backward(kind, dy, (None,) * len(state_names(kind)), ws))

    check_against_finite_differences(lambda: model_loss()[0], p, analytic)


# ----------------------------------------------------------------------------------
# The oracle against PyTorch (float64), when torch is installed
# ----------------------------------------------------------------------------------


def run_torch(kind, p, dy, d_finals, *, reverse, lengths):
    """Outputs and gradients of the matching torch.nn module, as NumPy arrays.

    torch has no reverse-only layer, so reverse=True builds a bidirectional one and
    uses only its backward direction (the loss ignores the forward direction).
    """
    torch = pytest.importorskip("torch")
    cell = CELLS[kind][0]
    bias = p["b_ih"] is not None
    cls, kwargs = torch_class(kind)
    module = cls(I, H, bias=bias, bidirectional=reverse, dtype=torch.float64, **kwargs)
    suffix = "_reverse" if reverse else ""
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
    ours = ["W_ih", "W_hh", "b_ih", "b_hh"]
    params = {}
    with torch.no_grad():
        for torch_name, name in zip(names, ours):
            params[name] = getattr(module, f"{torch_name}_l0{suffix}")
            params[name].copy_(torch.from_numpy(p[name]))

    x = torch.tensor(p["x"], requires_grad=True)
    D = 2 if reverse else 1
    # initial states (D, B, H); ours goes in the last direction slot
    states = []
    for name in state_names(kind):
        s = torch.zeros(D, B, H, dtype=torch.float64)
        s[-1] = torch.from_numpy(p[name])
        states.append(s.requires_grad_())
    hx = tuple(states) if cell == "lstm" else states[0]

    inp = x
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    out, final = module(inp, hx)
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    y = out[..., H:] if reverse else out
    finals = tuple(f[-1] for f in final) if cell == "lstm" else (final[-1],)

    loss = (y * torch.from_numpy(dy)).sum()
    for f, d in zip(finals, d_finals):
        loss = loss + (f * torch.from_numpy(d)).sum()
    loss.backward()

    grads = {"x": x.grad.numpy()}
    for name, s in zip(state_names(kind), states):
        grads[name] = s.grad[-1].numpy()
    for name in ours:
        grads[name] = params[name].grad.numpy() if name in params else None
    return y.detach().numpy(), tuple(f.detach().numpy() for f in finals), grads


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lengths", [None, [2, 4, 1]])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", TORCH_CELLS)
def test_oracle_matches_torch(kind, reverse, lengths, bias):
    pytest.importorskip("torch")
    rng = np.random.default_rng(14)
    run_opts = {"reverse": reverse, "lengths": lengths}
    p = make_params_away_from_kink(kind, rng, run_opts, bias=(bias, bias))
    dy, d_finals = random_cotangents(kind, rng)

    y, finals, ws = run_forward(kind, p, **run_opts)
    grads = run_backward(kind, dy, d_finals, ws)
    y_t, finals_t, grads_t = run_torch(kind, p, dy, d_finals, **run_opts)

    assert rel_error(y, y_t, floor=1e-8) <= TORCH_TOL
    for ours, theirs in zip(finals, finals_t):
        assert rel_error(ours, theirs, floor=1e-8) <= TORCH_TOL
    for name, g in grads.items():
        if g is None:
            assert grads_t[name] is None
        else:
            err = rel_error(g, grads_t[name], floor=1e-8)
            assert err <= TORCH_TOL, f"d{name}: relative error {err:.3g} vs torch"


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(15)
    logits = rng.normal(size=(6, 5))
    targets = np.array([0, -100, 4, 2, -100, 1])
    res = ref.softmax_cross_entropy(logits, targets, reduction=reduction)

    lt = torch.tensor(logits, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(lt, torch.tensor(targets), reduction=reduction)
    loss.sum().backward()
    np.testing.assert_allclose(res.loss, loss.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(res.dlogits, lt.grad.numpy(), rtol=1e-12, atol=1e-15)

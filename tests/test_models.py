"""Tests of ``rnnkit.models`` (OutputRecurrentRNN, RecurrentDecoder, SequenceRegressor,
SequenceClassifier) and ``rnnkit.sampling`` (schedules, scheduled sampling).

* OutputRecurrentRNN: the batched teacher-forced forward equals a per-step loop oracle of the
  seed's equations h_t = tanh(b + x_t W^T + y_{t-1} U^T), o_t = h_t V^T + c; every gradient
  by finite differences (tokens with/without embedding_dim, real-valued targets, extra input);
  generate() (greedy = the loop oracle run open-loop; sampling reproducible).
* RecurrentDecoder: the fused-sequence forward/backward equals the per-step protocol.
* Scheduled sampling: p = 1 is teacher forcing, p = 0 is open-loop generation, coins are
  reproducible, and backward is exact (finite differences over the path taken, including the
  real-valued feedback path).
* SequenceRegressor / Classifier: finite differences, many-to-one and many-to-many, lengths.
Sizes are tiny; float64 for finite differences.
"""

import numpy as np
import pytest

from conftest import finite_difference
from rnnkit import layers, models, sampling

T, B, I, H, V, E, O = 4, 3, 2, 5, 6, 3, 2


def assert_grads(model, f, tol=1e-6):
    """Every parameter's .grad against central differences of f()."""
    num = {name: finite_difference(f, p.data) for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        scale = max(1.0, np.abs(num[name]).max())
        np.testing.assert_allclose(p.grad, num[name], rtol=0, atol=tol * scale, err_msg=name)


def loop_oracle(m, y_prev, x):
    """The seed's equations one step at a time, from the model's parameter arrays."""
    outs = []
    for t in range(y_prev.shape[0]):
        if m.discrete:
            u = m.embed.weight.data[y_prev[t]]
            if m.U is not None:
                u = u @ m.U.weight.data.T
        else:
            u = y_prev[t] @ m.U.weight.data.T
        a = m.b.data + u + (x[t] @ m.W.weight.data.T if x is not None else 0)
        outs.append(np.tanh(a) @ m.out.weight.data.T + m.out.bias.data)
    return np.stack(outs)


VARIANTS = {
    "tokens": dict(vocab_size=V),
    "tokens_E_x": dict(vocab_size=V, embedding_dim=E, input_size=I),
    "real": dict(output_size=O),
    "real_x": dict(output_size=O, input_size=I),
}


def make_data(m, rng, dtype=np.float64):
    y = rng.integers(0, m.vocab_size, (T, B)) if m.discrete else rng.standard_normal((T, B, O)).astype(dtype)
    x = rng.standard_normal((T, B, I)).astype(dtype) if m.input_size else None
    return y, x


def loss_of(m):
    return layers.CrossEntropyLoss() if m.discrete else layers.MSELoss()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_output_recurrent_forward_oracle(variant, dtype, rng):
    m = models.OutputRecurrentRNN(H, dtype=dtype, seed=0, **VARIANTS[variant])
    y, x = make_data(m, rng, dtype)
    y_prev = m.teacher_inputs(y)
    assert (y_prev[1:] == y[:-1]).all() and not np.asarray(y_prev[0]).any()
    o = m(y_prev, x)
    assert o.dtype == dtype and o.shape == (T, B, V if m.discrete else O)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(o, loop_oracle(m, y_prev, x), rtol=tol, atol=tol)


@pytest.mark.parametrize("variant", list(VARIANTS) + ["tokens_E_x_large_V"])
def test_output_recurrent_gradients(variant, rng):
    kw = dict(VARIANTS[variant.replace("_large_V", "")])
    if variant.endswith("large_V"):  # V > T*B: the per-row path instead of the table
        kw["vocab_size"] = 2 * T * B
    m = models.OutputRecurrentRNN(H, dtype=np.float64, seed=1, **kw)
    if m.discrete:
        assert m._use_table(T * B) != variant.endswith("large_V")
    y, x = make_data(m, rng)
    y_prev = m.teacher_inputs(y, start=1 if m.discrete else 0.5)
    lf = loss_of(m)
    lf(m(y_prev, x), y)
    dx, dy_prev = m.backward(lf.backward())
    assert_grads(m, lambda: float(lf(m(y_prev, x), y)))
    if x is not None:  # input gradient by finite differences too
        num = finite_difference(lambda: float(lf(m(y_prev, x), y)), x)
        np.testing.assert_allclose(dx, num, atol=1e-7)
    else:
        assert dx is None
    assert (dy_prev is None) == m.discrete


def test_generate_greedy_is_open_loop_oracle(rng):
    m = models.OutputRecurrentRNN(H, vocab_size=V, input_size=I, dtype=np.float64, seed=2)
    x = rng.standard_normal((T, B, I))
    toks, logits = m.generate(T, x=x, start=3, return_outputs=True)
    assert toks.shape == (T, B) and toks.dtype == np.int64
    prev = np.full(B, 3)
    for t in range(T):  # each step fed the previous argmax
        o = loop_oracle(m, prev[None], x[t : t + 1])[0]
        np.testing.assert_allclose(logits[t], o, atol=1e-12)
        prev = o.argmax(-1)
        np.testing.assert_array_equal(toks[t], prev)


def test_generate_sampling_and_real(rng):
    m = models.OutputRecurrentRNN(H, vocab_size=V, dtype=np.float64, seed=2)
    a = m.generate(20, batch_size=50, greedy=False, temperature=1.5, seed=7)
    np.testing.assert_array_equal(a, m.generate(20, batch_size=50, greedy=False, temperature=1.5, seed=7))
    assert len(np.unique(a)) > 1
    cold = m.generate(5, batch_size=4, greedy=False, temperature=1e-4, seed=1)
    np.testing.assert_array_equal(cold, m.generate(5, batch_size=4))
    # the sampler's distribution is softmax(logits / temperature)
    logits = np.log(np.array([[0.2, 0.5, 0.3]] * 20000))
    draws = models.sample_tokens(logits, np.random.default_rng(0), greedy=False)
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / 20000, [0.2, 0.5, 0.3], atol=0.015)
    r = models.OutputRecurrentRNN(H, output_size=O, dtype=np.float64, seed=3)
    vals, outs = r.generate(T, batch_size=B, return_outputs=True)
    np.testing.assert_array_equal(vals, outs)
    np.testing.assert_allclose(
        vals, loop_oracle(r, np.concatenate([np.zeros((1, B, O)), vals[:-1]]), None), atol=1e-12
    )


def test_teacher_forced_training_reduces_loss(rng):
    from rnnkit.optim import Adam

    m = models.OutputRecurrentRNN(32, vocab_size=4, seed=0)
    # a deterministic cycle 0 1 2 3 0 ...: predictable from the previous token alone
    y = (np.arange(20)[:, None] + rng.integers(0, 4, 8)[None]) % 4
    target = y.copy()
    target[0] = -100  # step 0 (random offset) is unpredictable: padding
    lf, opt = layers.CrossEntropyLoss(), Adam(m, lr=0.05)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = lf(m(m.teacher_inputs(y, start=0)), target)
        first = first if first is not None else float(loss)
        m.backward(lf.backward())
        opt.step()
    assert float(loss) < 0.1 * first
    gen = m.generate(8, batch_size=2, start=np.array([1, 2]))
    np.testing.assert_array_equal(gen[:, 0], np.arange(2, 10) % 4)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("target", ["tokens", "real"])
def test_recurrent_decoder_sequence_equals_steps(cell, target, rng):
    kw = dict(vocab_size=V) if target == "tokens" else dict(output_size=O)
    m = models.RecurrentDecoder(H, cell=cell, input_size=I, dtype=np.float64, seed=0, **kw)
    y, x = make_data(m, rng)
    y_prev = m.teacher_inputs(y)
    lf = loss_of(m)
    o = m(y_prev, x)
    lf(o, y)
    dx, dyp = m.backward(lf.backward())
    seq_grads = {n: p.grad.copy() for n, p in m.named_parameters()}
    m.zero_grad()
    # p = 1 scheduled sampling: the step protocol on the same inputs
    o2, tape = sampling.scheduled_sampling_forward(m, y, x, teacher_prob=1.0, seed=0)
    np.testing.assert_allclose(o2, o, atol=1e-12)
    dx2 = sampling.scheduled_sampling_backward(m, lf.backward(), tape)
    np.testing.assert_allclose(dx2, dx, atol=1e-12)
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, seq_grads[n], atol=1e-12, err_msg=n)
    m.zero_grad()
    lf(m(y_prev, x), y)
    m.backward(lf.backward())
    if cell == "lstm":  # finite differences once through the fused path
        assert_grads(m, lambda: float(lf(m(y_prev, x), y)))


# ============================================================================ sampling


def test_schedules():
    assert sampling.ConstantSchedule(0.3)(100) == 0.3
    lin = sampling.LinearDecay(100, start=1.0, end=0.2)
    assert lin(0) == 1.0 and lin(50) == pytest.approx(0.6) and lin(1000) == 0.2
    ex = sampling.ExponentialDecay(0.99, minimum=0.05)
    assert ex(0) == 1.0 and ex(10) == pytest.approx(0.99**10) and ex(10**6) == 0.05
    inv = sampling.InverseSigmoidDecay(10)
    assert inv(0) == pytest.approx(10 / 11) and inv(100) == pytest.approx(10 / (10 + np.e**10))
    assert inv(10**6) == 0.0
    vals = [inv(i) for i in range(0, 200, 10)]
    assert all(a > b for a, b in zip(vals, vals[1:]))
    assert isinstance(sampling.make_schedule("linear", steps=5), sampling.LinearDecay)
    with pytest.raises(ValueError, match="k: expected 0 < k < 1"):
        sampling.ExponentialDecay(1.5)
    with pytest.raises(ValueError, match="p: expected a number <= 1"):
        sampling.ConstantSchedule(2)
    with pytest.raises(ValueError, match="kind"):
        sampling.make_schedule("cosine")
    with pytest.raises(ValueError, match="end"):
        sampling.LinearDecay(10, start=0.2, end=0.5)
    with pytest.raises(ValueError, match="i: expected a training step"):
        lin(-1)


def test_teacher_mask_per_step_and_sequence():
    mask = sampling.teacher_forcing_mask(200, 100, 0.3, np.random.default_rng(0))
    assert mask[0].all()
    assert 0.27 < mask[1:].mean() < 0.33
    # coins differ across sequences within a step and across steps
    assert mask[1:].any(axis=1).all() and not mask[1:].all(axis=1).any()
    np.testing.assert_array_equal(
        mask, sampling.teacher_forcing_mask(200, 100, 0.3, np.random.default_rng(0))
    )


def test_p0_is_open_loop_and_p1_is_teacher_forcing(rng):
    m = models.OutputRecurrentRNN(H, vocab_size=V, input_size=I, dtype=np.float64, seed=4)
    y, x = make_data(m, rng)
    o1, _ = sampling.scheduled_sampling_forward(m, y, x, teacher_prob=1.0, seed=0)
    np.testing.assert_allclose(o1, m(m.teacher_inputs(y), x), atol=1e-12)
    o0, tape = sampling.scheduled_sampling_forward(m, y, x, teacher_prob=0.0, seed=0)
    gen, logits = m.generate(T, x=x, return_outputs=True)
    np.testing.assert_allclose(o0, logits, atol=1e-12)
    np.testing.assert_array_equal(tape.fed[1:], gen[:-1])


@pytest.mark.parametrize("kind", ["or_tokens", "or_tokens_E", "or_real", "dec_gru_real", "dec_lstm_tokens"])
def test_scheduled_sampling_backward_is_exact(kind, rng):
    if kind.startswith("or"):
        # or_tokens_E: with B = 3 < V rows a step takes the per-row path, not the table
        kw = (
            dict(vocab_size=V, embedding_dim=E)
            if kind.endswith("_E")
            else dict(vocab_size=V)
            if kind.endswith("tokens")
            else dict(output_size=O)
        )
        m = models.OutputRecurrentRNN(H, input_size=I, dtype=np.float64, seed=5, **kw)
    else:
        cell = kind.split("_")[1]
        kw = dict(vocab_size=V) if kind.endswith("tokens") else dict(output_size=O)
        m = models.RecurrentDecoder(H, cell=cell, input_size=I, dtype=np.float64, seed=5, **kw)
    y, x = make_data(m, rng)
    lf = loss_of(m)
    out, tape = sampling.scheduled_sampling_forward(m, y, x, teacher_prob=0.5, seed=11)
    assert not tape.teacher[1:].all() and tape.teacher[1:].any()  # a mixed path
    lf(out, y)
    dx = sampling.scheduled_sampling_backward(m, lf.backward(), tape)

    def f():  # the same coins (same seed), the same path
        o, _ = sampling.scheduled_sampling_forward(m, y, x, teacher_prob=0.5, seed=11, keep=False)
        return float(lf(o, y))

    assert_grads(m, f)
    np.testing.assert_allclose(dx, finite_difference(f, x), atol=1e-7)


def test_scheduled_sampler_reproducible_and_follows_schedule(rng):
    m = models.OutputRecurrentRNN(H, vocab_size=V, dtype=np.float64, seed=6)
    y = rng.integers(0, V, (30, 20))
    s1 = sampling.ScheduledSampler(m, sampling.LinearDecay(10), seed=3)
    s2 = sampling.ScheduledSampler(m, sampling.LinearDecay(10), seed=3)
    fed = []
    for i in range(11):
        a, b = s1(y), s2(y)
        np.testing.assert_array_equal(a, b)
        fed.append(s1._tape.teacher[1:].mean())
        assert s1.last_teacher_prob == pytest.approx(max(0.0, 1 - i / 10))
    assert fed[0] == 1.0 and fed[-1] == 0.0 and 0.3 < fed[5] < 0.7
    s1.backward(np.ones_like(a))
    with pytest.raises(RuntimeError):
        sampling.ScheduledSampler(m, sampling.ConstantSchedule(1)).backward(a)


# ============================================================================ sequence models


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("many", [False, True])
def test_sequence_regressor_gradients(cell, many, rng):
    m = models.SequenceRegressor(
        cell, I, H, O, many_to_many=many, dtype=np.float64, seed=0, num_layers=2 if cell == "gru" else 1
    )
    x = rng.standard_normal((T, B, I))
    y = rng.standard_normal((T, B, O) if many else (B, O))
    lengths = None if many else np.array([4, 2, 3])
    lf = layers.MSELoss()
    lf(m(x, lengths=lengths), y)
    dx = m.backward(lf.backward())
    assert dx.shape == x.shape
    assert_grads(m, lambda: float(lf(m(x, lengths=lengths), y)))
    if lengths is not None:  # padded steps neither matter nor get gradient
        assert not dx[2:, 1].any()


def test_sequence_classifier_and_forget_bias(rng):
    m = models.SequenceClassifier("lstm", I, H, 3, forget_bias=2.0, seed=0)
    np.testing.assert_array_less(1.0, m.rnn.bias_ih_l0.data[H : 2 * H])
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    pred = m.predict(x)
    assert pred.shape == (B,) and m.training
    ce = m.default_loss()
    ce(m(x), np.array([0, 1, 2]))
    m.backward(ce.backward())
    g = models.SequenceRegressor("gru", I, H, forget_bias=1.5, seed=0)
    assert (g.rnn.bias_ih_l0.data[H : 2 * H] > 0.5).all()
    with pytest.raises(ValueError, match="forget_bias"):
        models.SequenceRegressor("rnn", I, H, forget_bias=1.0)
    with pytest.raises(ValueError, match="cell"):
        models.SequenceRegressor("elman", I, H)


def test_state_dict_round_trip(rng):
    a = models.OutputRecurrentRNN(H, vocab_size=V, embedding_dim=E, input_size=I, seed=0)
    b = models.OutputRecurrentRNN(H, vocab_size=V, embedding_dim=E, input_size=I, seed=1)
    b.load_state_dict(a.state_dict())
    y, x = make_data(a, rng, np.float32)
    np.testing.assert_array_equal(a(y, x), b(y, x))
    assert sorted(a.state_dict()) == ["U.weight", "W.weight", "b", "embed.weight", "out.bias", "out.weight"]


def test_model_errors(rng):
    with pytest.raises(ValueError, match="vocab_size, output_size"):
        models.OutputRecurrentRNN(H)
    with pytest.raises(ValueError, match="vocab_size, output_size"):
        models.OutputRecurrentRNN(H, vocab_size=3, output_size=2)
    with pytest.raises(ValueError, match="embedding_dim"):
        models.OutputRecurrentRNN(H, output_size=2, embedding_dim=3)
    m = models.OutputRecurrentRNN(H, vocab_size=V)
    with pytest.raises(ValueError, match=r"y_prev: expected indices in \[0, V\)"):
        m(np.full((T, B), V))
    with pytest.raises(TypeError, match="y_prev: expected an integer array"):
        m(np.zeros((T, B), np.float32))
    with pytest.raises(ValueError, match="x: this model has input_size = 0"):
        m(np.zeros((T, B), int), np.zeros((T, B, 1), np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        m.generate(3)
    with pytest.raises(ValueError, match="x: this model has input_size = 0"):
        m.generate(3, x=np.zeros((3, 2, 1), np.float32))
    with pytest.raises(ValueError, match=r"x: expected shape \(T, B, I\) with T = steps = 3"):
        models.OutputRecurrentRNN(H, vocab_size=V, input_size=I).generate(3)
    with pytest.raises(ValueError, match="temperature"):
        m.generate(3, batch_size=1, greedy=False, temperature=0)
    r = models.OutputRecurrentRNN(H, output_size=O, input_size=I)
    with pytest.raises(ValueError, match=r"y_prev: expected shape \(T, B, O\)"):
        r(np.zeros((T, B, O + 1), np.float32), np.zeros((T, B, I), np.float32))
    with pytest.raises(TypeError, match="y_prev: expected dtype float32"):
        r(np.zeros((T, B, O)), np.zeros((T, B, I), np.float32))
    with pytest.raises(ValueError, match=r"x: expected shape \(T, B, I\)"):
        r(np.zeros((T, B, O), np.float32), np.zeros((T, B + 1, I), np.float32))
    with pytest.raises(ValueError, match="x: expected an array"):
        r(np.zeros((T, B, O), np.float32))
    r(np.zeros((T, B, O), np.float32), np.zeros((T, B, I), np.float32))
    with pytest.raises(ValueError, match="dout: expected shape"):
        r.backward(np.zeros((T, B, V), np.float32))


def test_bench_training_smoke(capsys):
    """bench/bench_training.py runs (tiny sizes) and prints its table row."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "bench" / "bench_training.py"
    spec = importlib.util.spec_from_file_location("bench_training", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.main(
        ["--T", "5", "--B", "2", "--H", "8", "--V", "5", "--E", "3", "--threads", "1", "--repeats", "2"]
    )
    assert len(rows) == 1 and rows[0][2] > 0 and rows[0][3] > 0
    assert "| 8 | 1 |" in capsys.readouterr().out

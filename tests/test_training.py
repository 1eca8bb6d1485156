"""Tests of ``rnnkit.training``: gradient clipping (by hand and against torch), truncated BPTT
(one chunk = full BPTT; k < T = the chunks run by hand from the carried state; the state
carried forward is the full forward's), the fit loop with its callbacks (evaluation, early
stopping, checkpoints) and .npz checkpoints."""

import math

import numpy as np
import pytest

from rnnkit import layers, models, optim, training
from rnnkit.nn import Parameter

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


def params_with_grads(grads, dtype=np.float64):
    ps = []
    for k, g in enumerate(grads):
        p = Parameter(f"p{k}", np.zeros(np.shape(g), dtype))
        p.grad[...] = g
        ps.append(p)
    return ps


def test_clip_grad_norm_by_hand():
    ps = params_with_grads([[3.0, 0.0], [[4.0]]])
    norm = training.clip_grad_norm(ps, 1.0)
    assert norm == pytest.approx(5.0)  # returned before clipping
    np.testing.assert_allclose(ps[0].grad, [3 / (5 + 1e-6), 0], rtol=1e-12)
    np.testing.assert_allclose(ps[1].grad, [[4 / (5 + 1e-6)]], rtol=1e-12)
    assert math.sqrt(sum((p.grad**2).sum() for p in ps)) == pytest.approx(1.0, rel=1e-6)
    small = params_with_grads([[0.3, 0.4]])
    assert training.clip_grad_norm(small, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(small[0].grad, [0.3, 0.4])  # below the limit: unchanged
    inf = params_with_grads([[-7.0, 2.0], [1.0]])
    assert training.clip_grad_norm(inf, 3.5, norm_type=math.inf) == 7.0
    np.testing.assert_allclose(inf[0].grad, [-3.5, 1.0], rtol=1e-6)


def test_clip_grad_norm_nonfinite():
    ps = params_with_grads([[np.inf, 1.0]])
    assert training.clip_grad_norm(ps, 1.0) == math.inf
    assert ps[0].grad[1] == 1.0  # left unchanged
    with pytest.raises(ValueError, match="non-finite"):
        training.clip_grad_norm(ps, 1.0, error_if_nonfinite=True)


@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_clip_grad_norm_matches_torch(norm_type, rng):
    grads = [rng.standard_normal((3, 4)) * 5, rng.standard_normal(6)]
    ps = params_with_grads(grads)
    ts = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for t, g in zip(ts, grads):
        t.grad = torch.tensor(g)
    tn = torch.nn.utils.clip_grad_norm_(ts, 2.0, norm_type=norm_type)
    assert training.clip_grad_norm(ps, 2.0, norm_type=norm_type) == pytest.approx(float(tn))
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12)


def test_clip_grad_value_and_errors(rng):
    g = rng.standard_normal((4, 5)) * 3
    ps = params_with_grads([g], np.float32)
    training.clip_grad_value(ps, 1.0)
    np.testing.assert_allclose(ps[0].grad, np.clip(g, -1, 1).astype(np.float32))
    with pytest.raises(ValueError, match="max_norm"):
        training.clip_grad_norm(ps, -1.0)
    with pytest.raises(TypeError, match="clip_value"):
        training.clip_grad_value(ps, "1")
    with pytest.raises(TypeError, match=r"params\[0\]"):
        training.clip_grad_norm([np.zeros(2)], 1.0)


# ============================================================================ truncated BPTT

T, B, I, H, O = 10, 3, 2, 4, 1


def regressor(cell, seed=0):
    return models.SequenceRegressor(cell, I, H, O, many_to_many=True, dtype=np.float64, seed=seed)


def grads_of(m):
    return {n: p.grad.copy() for n, p in m.named_parameters()}


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_truncated_bptt_one_chunk_is_full_bptt(cell, rng):
    m = regressor(cell)
    x, y = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, O))
    lf = layers.MSELoss()
    loss, state = training.truncated_bptt(m, x, y, T, lf)
    full = grads_of(m)
    m.zero_grad()
    assert float(lf(m(x), y)) == pytest.approx(loss)
    m.backward(lf.backward())
    for n, g in grads_of(m).items():
        np.testing.assert_allclose(full[n], g, atol=1e-13, err_msg=n)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_truncated_bptt_chunks_cut_the_gradient(cell, rng):
    k = 4  # chunks of 4, 4, 2 steps
    m = regressor(cell)
    x, y = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, O))
    lf = layers.MSELoss()
    loss, state = training.truncated_bptt(m, x, y, k, lf)
    tbptt = grads_of(m)
    # by hand: each chunk from the carried state (a constant), gradients summed
    m.zero_grad()
    s, losses = None, []
    for a in range(0, T, k):
        losses.append(float(lf(m(x[a : a + k], state=s), y[a : a + k])) * len(x[a : a + k]))
        m.backward(lf.backward())
        s = m.final_state
    for n, g in grads_of(m).items():
        np.testing.assert_allclose(tbptt[n], g, atol=1e-13, err_msg=n)
    assert loss == pytest.approx(sum(losses) / T)
    # the carried state is the full forward's final state; the gradient is not full BPTT's
    m.zero_grad()
    lf(m(x), y)
    m.backward(lf.backward())
    final = m.final_state
    for a, b in zip(state if cell == "lstm" else (state,), final if cell == "lstm" else (final,)):
        np.testing.assert_allclose(a, b, atol=1e-13)
    assert not np.allclose(grads_of(m)["rnn.weight_hh_l0"], tbptt["rnn.weight_hh_l0"])


def test_truncated_bptt_with_optimizer_updates_per_chunk(rng):
    m = regressor("gru")
    x, y = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, O))
    opt = optim.SGD(m, lr=0.1)
    before = m.state_dict()
    training.truncated_bptt(m, x, y, 3, layers.MSELoss(), opt, clip_norm=1.0)
    assert opt.step_count == 4
    assert any(not np.array_equal(before[n], a) for n, a in m.state_dict().items())
    with pytest.raises(ValueError, match="k: expected an int >= 1"):
        training.truncated_bptt(m, x, y, 0, layers.MSELoss())
    with pytest.raises(ValueError, match="y: expected the same"):
        training.truncated_bptt(m, x, y[:5], 2, layers.MSELoss())


# ============================================================================ fit


def linear_task(rng, n_batches=20):
    w = np.array([[2.0, -1.0, 0.5]])
    batches = []
    for _ in range(n_batches):
        x = rng.standard_normal((16, 3))
        batches.append((x, x @ w.T + 0.3))
    return batches


def test_fit_trains_and_records(rng, capsys):
    lin = layers.Linear(3, 1, dtype=np.float64, seed=0)
    data = linear_task(rng)
    xv, yv = data[0]

    def val(model):
        return float(np.mean((model(xv) - yv) ** 2))

    state = training.fit(
        lin,
        layers.MSELoss(),
        optim.Adam(lin, lr=0.1),
        data,
        epochs=10,
        clip_norm=10.0,
        callbacks=[training.Evaluate(val, every=50)],
        progress=True,
    )
    assert state.step == 200 and len(state.history["loss"]) == 200
    assert state.history["val_loss"][-1][1] < 1e-3 * state.history["loss"][0][1]
    assert [s for s, _ in state.history["val_loss"]] == [50, 100, 150, 200]
    assert lin.training
    err = capsys.readouterr().err
    pytest.importorskip("tqdm")
    assert "loss=" in err and "val_loss=" in err  # the tqdm bar


def test_early_stopping_target_patience_and_time_limit(rng):
    lin = layers.Linear(3, 1, dtype=np.float64, seed=0)
    data = linear_task(rng)

    def val(model):
        return float(np.mean((model(data[0][0]) - data[0][1]) ** 2))

    stop = training.EarlyStopping("val_loss", target=0.05)
    state = training.fit(
        lin,
        layers.MSELoss(),
        optim.Adam(lin, lr=0.1),
        data,
        epochs=100,
        callbacks=[training.Evaluate(val, every=5), stop],
        progress=False,
    )
    assert state.stop and "target" in state.stop_reason
    assert state.history["val_loss"][-1][1] <= 0.05 < state.history["val_loss"][-2][1]
    # patience: a metric that never improves stops after `patience` evaluations
    lin2 = layers.Linear(3, 1, dtype=np.float64, seed=0)
    state = training.fit(
        lin2,
        layers.MSELoss(),
        optim.SGD(lin2, lr=0.0),
        data,
        epochs=100,
        callbacks=[training.Evaluate(lambda m: 1.0, every=2), training.EarlyStopping("val_loss", patience=3)],
        progress=False,
    )
    assert state.step == 8 and "did not improve" in state.stop_reason
    state = training.fit(
        lin2,
        layers.MSELoss(),
        optim.SGD(lin2, lr=0.0),
        lambda i: data[i % 20],
        steps=10**6,
        time_limit=0.2,
        progress=False,
    )
    assert "time limit" in state.stop_reason


def test_checkpoint_round_trip(tmp_path, rng):
    m = models.SequenceRegressor("lstm", I, H, O, seed=0)
    opt = optim.Adam(m, lr=0.01)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    y = rng.standard_normal((B, O)).astype(np.float32)
    ckpt = tmp_path / "ck.npz"
    cb = training.Checkpoint(ckpt, every=3)
    training.fit(m, layers.MSELoss(), opt, [(x, y)] * 7, callbacks=[cb], progress=False)
    assert cb.saved_steps == [3, 6]
    # a fresh model and optimiser restored from step 6 continue exactly like the original
    m2 = models.SequenceRegressor("lstm", I, H, O, seed=5)
    opt2 = optim.Adam(m2, lr=0.01)
    meta = training.load_checkpoint(ckpt, m2, opt2)
    assert meta["step"] == 6 and opt2.step_count == 6
    training.save_checkpoint(tmp_path / "now.npz", m, opt, step=7, note="x")
    m3 = models.SequenceRegressor("lstm", I, H, O, seed=6)
    opt3 = optim.Adam(m3, lr=0.01)
    assert training.load_checkpoint(tmp_path / "now.npz", m3, opt3)["note"] == "x"
    for mm, oo in ((m, opt), (m3, opt3)):
        training.fit(mm, layers.MSELoss(), oo, [(x, y)] * 2, progress=False)
    for (n, a), (_, b) in zip(m.state_dict().items(), m3.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=n)
    with pytest.raises(ValueError, match="no optimizer state"):
        training.save_checkpoint(tmp_path / "p.npz", m)
        training.load_checkpoint(tmp_path / "p.npz", m, opt)
    with pytest.raises(ValueError, match="every, monitor, at_end"):
        training.Checkpoint(tmp_path / "q.npz")


def test_checkpoint_on_best_and_fit_errors(tmp_path, rng):
    lin = layers.Linear(3, 1, dtype=np.float64, seed=0)
    vals = iter([3.0, 2.0, 2.5, 1.0])
    cb = training.Checkpoint(tmp_path / "best.npz", monitor="val_loss")
    training.fit(
        lin,
        layers.MSELoss(),
        optim.SGD(lin, lr=0.0),
        linear_task(rng, 4),
        callbacks=[training.Evaluate(lambda m: next(vals), every=1), cb],
        progress=False,
    )
    assert cb.saved_steps == [1, 2, 4]
    with pytest.raises(ValueError, match="steps: needed"):
        training.fit(lin, layers.MSELoss(), optim.SGD(lin, lr=0.1), lambda i: None, progress=False)
    with pytest.raises(TypeError, match=r"callbacks\[0\]"):
        training.fit(lin, layers.MSELoss(), optim.SGD(lin, lr=0.1), [], callbacks=[print])

"""Tests of ``rnnkit.seq2seq.Seq2Seq``.

* Forward = an independent oracle of the documented equations, built from the NumPy
  references (``rnnkit.reference`` cells, ``rnnkit.reference_attention``).
* Exact gradients: every parameter by central differences on tiny float64 models, for each
  cell, attention kind (and none), input-feeding mode, bidirectional / multi-layer encoders,
  variable source lengths, padded targets, and scheduled sampling (the path taken).
* Scheduled sampling: p = 1 is teacher forcing, p = 0 feeds the greedy path (the decoding
  steps'), schedules advance per training forward and are reproducible.
* Training: a tiny reversal model learns in a few seconds, far above chance; fit() works with
  the (src, tgt, src_lengths) tuple; state dicts round-trip; errors.
"""

import numpy as np
import pytest

from conftest import assert_close, finite_difference
from rnnkit import reference as ref
from rnnkit import reference_attention as ra
from rnnkit.decoding import greedy_decode
from rnnkit.demos import seq2seq as demo
from rnnkit.sampling import LinearDecay
from rnnkit.seq2seq import Seq2Seq

S, T, B, V = 5, 4, 3, 8


def make_data(rng, vocab=V):
    src = rng.integers(3, vocab, (S, B))
    lengths = np.array([5, 2, 4])
    for b, n in enumerate(lengths):
        src[n:, b] = 0
    tgt = rng.integers(3, vocab, (T, B))
    tgt[2, 0], tgt[3, 0] = 2, 0  # eos, then padding
    tgt[3, 1] = 2
    return src, tgt, lengths


def oracle_logits(m, src, tgt, lengths):
    """Teacher-forced logits of a one-layer Seq2Seq from its parameter arrays, the equations of
    the seq2seq module docstring written out with the NumPy references."""
    p = {n: q.data for n, q in m.named_parameters()}
    D = 2 if m.bidirectional else 1
    x = p["src_embed.weight"][src]
    outs, hs, cs = [], [], []
    for d, sfx in enumerate(["", "_reverse"][:D]):
        W = [p[f"encoder.{k}_l0{sfx}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        if m.encoder_cell == "lstm":
            y, (h, c), _ = ref.lstm_forward(x, None, None, *W, reverse=bool(d), lengths=lengths)
            cs.append(c)
        elif m.encoder_cell == "gru":
            y, h, _ = ref.gru_forward(x, None, *W, reverse=bool(d), lengths=lengths)
        else:
            y, h, _ = ref.rnn_forward(x, None, *W, reverse=bool(d), lengths=lengths)
        outs.append(y)
        hs.append(h)
    memory = np.concatenate(outs, axis=2).transpose(1, 0, 2)  # (B, S, M)
    mask = np.arange(src.shape[0])[None, :] < lengths[:, None]
    s = np.tanh(np.concatenate(hs, 1) @ p["bridge.weight"].T + p["bridge.bias"])
    c = None
    if m.decoder_cell == "lstm":
        c = (
            np.concatenate(cs, 1) @ p["bridge_c.weight"].T + p["bridge_c.bias"]
            if m.encoder_cell == "lstm"
            else np.zeros_like(s)
        )
    Wd = [p[f"decoder.{k}_l0"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    feed = np.zeros((src.shape[1], m.feed_size)) if m.input_feeding else None
    logits = []
    for t in range(tgt.shape[0]):
        tok = np.full(src.shape[1], m.bos_id) if t == 0 else tgt[t - 1]
        xin = p["tgt_embed.weight"][tok]
        if feed is not None:
            xin = np.concatenate([xin, feed], 1)
        if m.decoder_cell == "lstm":
            (s, c), _ = ref.lstm_cell_forward(xin, s, c, *Wd)
        elif m.decoder_cell == "gru":
            s, _ = ref.gru_cell_forward(xin, s, *Wd)
        else:
            s, _ = ref.rnn_cell_forward(xin, s, *Wd)
        o = s
        if m.attention_kind is not None:
            if m.attention_kind == "additive":
                ctx, _, _ = ra.additive_attention_forward(
                    s,
                    memory,
                    memory,
                    p["attention.query.weight"],
                    p["attention.key.weight"],
                    p["attention.v"],
                    mask=mask,
                )
            elif m.attention_kind == "dot":
                ctx, _, _ = ra.dot_attention_forward(s, memory, memory, mask=mask)
            else:
                ctx, _, _ = ra.general_attention_forward(s, memory, memory, p["attention.weight"], mask=mask)
            o = np.tanh(np.concatenate([s, ctx], 1) @ p["combine.weight"].T + p["combine.bias"])
            feed = {"attentional": o, "context": ctx, None: None}[m.input_feeding]
        logits.append(o @ p["out.weight"].T + p["out.bias"])
    return np.stack(logits)


ORACLE_CONFIGS = [
    dict(encoder_cell="lstm", attention="additive"),
    dict(encoder_cell="gru", attention="general", input_feeding="context"),
    dict(encoder_cell="rnn", decoder_cell="lstm", attention="dot"),
    dict(encoder_cell="lstm", decoder_cell="gru", attention=None, bidirectional=False),
]


@pytest.mark.parametrize("cfg", ORACLE_CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_forward_matches_oracle(cfg, rng):
    m = Seq2Seq(V, V + 1, embedding_dim=3, hidden_size=4, dtype=np.float64, seed=2, **cfg)
    src, tgt, lengths = make_data(rng)
    got = m(src, tgt, lengths)
    assert got.shape == (T, B, V + 1) and got.dtype == np.float64
    np.testing.assert_allclose(got, oracle_logits(m, src, tgt, lengths), rtol=1e-11, atol=1e-12)
    m32 = Seq2Seq(V, V + 1, embedding_dim=3, hidden_size=4, dtype=np.float32, seed=2, **cfg)
    m32.load_state_dict(m.state_dict())
    assert_close(m32(src, tgt, lengths).astype(np.float64), got, np.float32)


GRAD_CONFIGS = [
    dict(encoder_cell="lstm", attention="additive"),
    dict(encoder_cell="gru", attention="dot"),
    dict(encoder_cell="rnn", attention="general"),
    dict(encoder_cell="lstm", attention=None),
    dict(
        encoder_cell="lstm",
        decoder_cell="gru",
        attention="additive",
        input_feeding="context",
        encoder_layers=2,
    ),
    dict(
        encoder_cell="gru", decoder_cell="lstm", attention="general", input_feeding=None, bidirectional=False
    ),
    dict(encoder_cell="lstm", attention="additive", teacher_prob=0.5),
]


def check_gradients(m, f, rng, per_param=6, eps=1e-6, tol=1e-7):
    """Central differences of f() at up to per_param random entries of every parameter,
    against the .grad the model accumulated."""
    for name, p in m.named_parameters():
        g = p.grad.reshape(-1)
        idx = rng.choice(g.size, min(per_param, g.size), replace=False)
        nums = finite_difference(f, p.data, eps, at=idx).reshape(-1)
        for i in idx:
            num = nums[i]
            assert abs(num - g[i]) <= tol * max(1.0, abs(num)), (name, i, num, g[i])


@pytest.mark.parametrize("cfg", GRAD_CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_gradients_finite_differences(cfg, rng):
    cfg = dict(cfg)
    p = cfg.pop("teacher_prob", None)
    m = Seq2Seq(V, V + 1, embedding_dim=3, hidden_size=4, dtype=np.float64, seed=1, **cfg)
    src, tgt, lengths = make_data(rng)
    loss = m.make_loss()

    def run():
        coins = np.random.default_rng(7) if p is not None else None
        return m(src, tgt, lengths, teacher_prob=p, rng=coins)

    m.zero_grad()
    loss(run(), tgt)
    assert m.backward(loss.backward()) is None
    check_gradients(m, lambda: float(loss(run(), tgt)), rng)
    # padded source steps and the pad embedding rows get no gradient
    assert not m.src_embed.weight.grad[0].any() and not m.tgt_embed.weight.grad[0].any()


def test_scheduled_sampling_extremes_and_schedule(rng):
    m = Seq2Seq(V, V, embedding_dim=4, hidden_size=6, attention="additive", dtype=np.float64, seed=3)
    src, tgt, lengths = make_data(rng)
    tf = m(src, tgt, lengths)
    np.testing.assert_array_equal(m(src, tgt, lengths, teacher_prob=1.0), tf)
    # p = 0: every input after bos is the model's own greedy token, the decoding path
    own = m(src, tgt, lengths, teacher_prob=0.0, rng=np.random.default_rng(0))
    enc = m.encode(src, lengths)
    state, tok = enc.state, np.full(B, m.bos_id)
    for t in range(T):
        logits, state, _ = m.decode_step(tok, state, enc.memory)
        np.testing.assert_allclose(own[t], logits, rtol=1e-12, atol=1e-12)
        lg = logits.copy()
        lg[:, [m.pad_id, m.bos_id]] = -np.inf
        tok = lg.argmax(1)
    g = greedy_decode(m, src, lengths, max_len=T)
    np.testing.assert_array_equal(own.argmax(2)[: g.tokens.shape[0]][g.tokens != 0], g.tokens[g.tokens != 0])
    # a schedule: p decays per training forward, coins seeded by (seed, step)
    m.set_scheduled_sampling(LinearDecay(4, 1.0, 0.0), seed=5)
    outs = [m(src, tgt, lengths) for _ in range(5)]
    assert m.sampling_step == 5
    np.testing.assert_array_equal(outs[0], tf)  # step 0: p = 1
    assert not np.array_equal(outs[4], tf)  # p = 0
    m.set_scheduled_sampling(LinearDecay(4, 1.0, 0.0), seed=5)
    again = [m(src, tgt, lengths) for _ in range(5)]
    for a, b in zip(outs, again):
        np.testing.assert_array_equal(a, b)
    m.eval()
    np.testing.assert_array_equal(m(src, tgt, lengths), tf)  # eval: teacher forcing
    assert m.sampling_step == 5
    m.train()
    m.set_scheduled_sampling(None)
    np.testing.assert_array_equal(m(src, tgt, lengths), tf)


def test_tiny_reversal_learns(rng):
    """A few seconds of training: exact match on held-out sequences far above chance
    (chance is below 1e-2 for the shortest length, 6 symbols, length 3..6)."""
    import rnnkit
    from rnnkit.optim import Adam
    from rnnkit.training import fit

    cfg = dict(symbols=6, min_len=3, max_len=6, val_size=100, test_per_length=25)
    test, _, seen = demo.held_out_sets(cfg, seed=0)
    data_src = demo.SequenceSource(6, 3, 6, np.random.default_rng(1), seen)
    m = Seq2Seq(9, 9, embedding_dim=16, hidden_size=32, seed=0)
    opt = Adam(m.parameters(), lr=1e-2)

    def data(step):
        src, lengths, tgt = demo.make_batch(data_src.draw(32), "reverse")
        return (src, tgt, lengths), tgt

    before = rnnkit.get_num_threads()
    rnnkit.set_num_threads(1)
    try:
        state = fit(m, m.make_loss(), opt, data, steps=300, clip_norm=5.0, progress=False)
    finally:
        rnnkit.set_num_threads(before)
    first, last = state.history["loss"][0][1], state.loss
    assert last < first / 4
    acc, by_len = demo.exact_match(m, test, "reverse")
    assert acc > 0.6, (acc, by_len, state.step)


def test_fit_tuple_state_dict_and_modes(rng):
    m = Seq2Seq(V, V, embedding_dim=3, hidden_size=4, seed=0)
    src, tgt, lengths = make_data(rng)
    names = [n for n, _ in m.named_parameters()]
    assert names[:2] == ["src_embed.weight", "tgt_embed.weight"]
    assert {
        "bridge.weight",
        "bridge_c.weight",
        "decoder.weight_ih_l0",
        "attention.v",
        "combine.weight",
        "out.bias",
    } <= set(names)
    assert m.decoder.weight_ih_l0.shape == (16, 3 + 4)  # [E ; F] with input feeding
    a = m((src, tgt, lengths))
    np.testing.assert_array_equal(a, m(src, tgt, lengths))
    m2 = Seq2Seq(V, V, embedding_dim=3, hidden_size=4, seed=9)
    m2.load_state_dict(m.state_dict())
    np.testing.assert_array_equal(m2(src, tgt, lengths), a)
    m.eval()
    m(src, tgt, lengths)
    with pytest.raises(RuntimeError, match="eval mode"):
        m.backward(np.zeros_like(a))
    m.train()
    assert "attention='additive'" in repr(m)


def test_errors(rng):
    src, tgt, lengths = make_data(rng)
    with pytest.raises(ValueError, match="attention"):
        Seq2Seq(V, V, attention="cosine")
    with pytest.raises(ValueError, match="'dot' needs the memory size"):
        Seq2Seq(V, V, hidden_size=8, encoder_hidden_size=3, attention="dot")
    with pytest.raises(ValueError, match="eos_id"):
        Seq2Seq(V, V, eos_id=V)
    with pytest.raises(ValueError, match="input_feeding"):
        Seq2Seq(V, V, input_feeding="both")
    m = Seq2Seq(V, V, embedding_dim=3, hidden_size=4, seed=0)
    with pytest.raises(ValueError, match=r"src: expected indices in \[0, V\)"):
        m(src + V, tgt, lengths)
    with pytest.raises(ValueError, match=r"tgt: expected batch size B = 3"):
        m(src, tgt[:, :2], lengths)
    with pytest.raises(ValueError, match="lengths"):
        m(src, tgt, [6, 1, 1])
    with pytest.raises(ValueError, match="teacher_prob"):
        m(src, tgt, lengths, teacher_prob=1.5)
    with pytest.raises(TypeError, match="tgt"):
        m(src)
    with pytest.raises(RuntimeError, match="no forward"):
        Seq2Seq(V, V, embedding_dim=3, hidden_size=4).backward(np.zeros((T, B, V), np.float32))
    m(src, tgt, lengths)
    with pytest.raises(ValueError, match=r"dlogits: expected shape \(T, B, V\)"):
        m.backward(np.zeros((T, B, V - 1), np.float32))


def test_demo_data():
    src, lengths, tgt = demo.make_batch([np.array([3, 4, 5]), np.array([6, 3])], "reverse")
    np.testing.assert_array_equal(src, [[3, 6], [4, 3], [5, 0]])
    np.testing.assert_array_equal(tgt, [[5, 3], [4, 6], [3, 2], [2, 0]])
    assert lengths.tolist() == [3, 2]
    _, _, tgt = demo.make_batch([np.array([5, 3, 4])], "sort")
    assert tgt[:, 0].tolist() == [3, 4, 5, 2]
    cfg = dict(symbols=3, min_len=2, max_len=3, val_size=10, test_per_length=4)
    test, val, seen = demo.held_out_sets(cfg, seed=0)
    assert len(test) == 8 and len(val) == 10 and len(seen) == 18  # all distinct
    drawn = demo.SequenceSource(3, 2, 3, np.random.default_rng(0), seen).draw(200)
    assert not {tuple(s.tolist()) for s in drawn} & seen  # held out: never trained on


def test_quick_demo_attention_beats_no_attention(tmp_path, capsys):
    """``demo reverse --quick``: the attention model learns reversal; without attention the
    accuracy falls with the length; results and plots are written."""
    import json

    from rnnkit.demos import reverse, sort

    # bounded by steps, not time (the budgets are generous): deterministic on any machine
    out = reverse.main(
        [
            "--quick",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--steps",
            "600",
            "--budget",
            "120",
            "--budget-plain",
            "120",
        ]
    )
    att, plain = out["results"]
    assert att["attention"] == "additive" and plain["attention"] is None
    assert att["test_exact"] >= 0.9, att
    by_len = plain["test_by_length"]
    assert by_len["8"] < by_len["3"] and att["test_by_length"]["8"] > by_len["8"]
    saved = json.loads((tmp_path / "reverse_results.json").read_text())
    assert saved["meta"]["task"] == "reverse" and "test_exact_beam" in saved["results"][0]
    assert "exact match by source length" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    assert (tmp_path / "reverse_attention.png").stat().st_size > 1000
    assert (tmp_path / "reverse_accuracy_by_length.png").exists()
    res = sort.main(
        [
            "--quick",
            "--steps",
            "20",
            "--budget-plain",
            "0",
            "--beam",
            "1",
            "--no-plot",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    assert res["meta"]["task"] == "sort" and len(res["results"]) == 1

"""Tests of Seq2Seq's architecture options (bridge, combine, combine_embedding, attention_bias,
attention_before_step, padding_idx, embedding_dropout, batch_first).

* Forward = the module docstring's equations written out in NumPy (GRU encoder and decoder,
  additive attention with or without its biases) for bridges, combine, attention order.
* Exact gradients: every parameter by central differences on tiny float64 models, for each
  option (dropout with its masks fixed).
* batch_first is the time-major model transposed (decoding too); dropout is off in eval mode;
  the bridges give the documented s_0 and c_0; bad combinations raise ValueError.
"""

import numpy as np
import pytest

from conftest import finite_difference
from rnnkit import reference as ref
from rnnkit.models import Seq2Seq

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
    """Teacher-forced logits of a one-layer GRU Seq2Seq with additive attention, from its
    parameter arrays (the module docstring's equations, options included)."""
    p = {n: q.data for n, q in m.named_parameters()}
    D = 2 if m.bidirectional else 1
    x = p["src_embed.weight"][src]
    outs, hs = [], []
    for d, sfx in enumerate(["", "_reverse"][:D]):
        W = [p[f"encoder.{k}_l0{sfx}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        y, h, _ = ref.gru_forward(x, None, *W, reverse=bool(d), lengths=lengths)
        outs.append(y)
        hs.append(h)
    memory = np.concatenate(outs, axis=2).transpose(1, 0, 2)  # (B, S, M)
    mask = np.arange(src.shape[0])[None, :] < lengths[:, None]
    h_last = np.concatenate(hs, 1)
    s = {
        "linear_tanh": lambda: np.tanh(h_last @ p["bridge.weight"].T + p["bridge.bias"]),
        "copy": lambda: h_last,
        None: lambda: np.zeros((src.shape[1], m.hidden_size)),
    }[m.bridge_kind]()
    bq, bk = p.get("attention.query.bias", 0), p.get("attention.key.bias", 0)
    keys = memory @ p["attention.key.weight"].T + bk  # (B, S, A)

    def attend(q):
        e = np.tanh((q @ p["attention.query.weight"].T + bq)[:, None, :] + keys) @ p["attention.v"]
        e = np.where(mask, e, -np.inf)
        a = np.exp(e - e.max(1, keepdims=True))
        a /= a.sum(1, keepdims=True)
        return np.einsum("bs,bsm->bm", a, memory)

    Wd = [p[f"decoder.{k}_l0"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    feed = np.zeros((src.shape[1], m.feed_size)) if m.input_feeding else None
    logits = []
    for t in range(tgt.shape[0]):
        tok = np.full(src.shape[1], m.bos_id) if t == 0 else tgt[t - 1]
        xin = p["tgt_embed.weight"][tok]
        if m.attention_before_step:
            ctx = attend(s)
            s, _ = ref.gru_cell_forward(np.concatenate([xin, ctx], 1), s, *Wd)
        else:
            if feed is not None:
                xin = np.concatenate([xin, feed], 1)
            s, _ = ref.gru_cell_forward(xin, s, *Wd)
            ctx = attend(s)
        o = s
        if m.has_combine:
            z = [s, ctx, p["tgt_embed.weight"][tok]] if m.combine_embedding else [s, ctx]
            o = np.tanh(np.concatenate(z, 1) @ p["combine.weight"].T + p["combine.bias"])
        feed = {"attentional": o, "context": ctx, None: None}[m.input_feeding]
        logits.append(o @ p["out.weight"].T + p["out.bias"])
    return np.stack(logits)


ORACLE_CONFIGS = [
    dict(),
    dict(bridge=None, combine=False, input_feeding="context"),
    dict(bridge="copy", encoder_hidden_size=2, attention_bias=True),
    dict(bridge="copy", bidirectional=False, combine=False, input_feeding=None, attention_bias=True),
    dict(attention_before_step=True, input_feeding=None),
    dict(attention_before_step=True, input_feeding=None, combine=False, bridge=None),
    # Bahdanau et al. 2015: bidirectional encoder, additive attention with both biases from
    # s_{t-1}, output from [s_t ; c_t ; y_{t-1}]
    dict(attention_before_step=True, input_feeding=None, attention_bias=True, combine_embedding=True),
    dict(combine_embedding=True),  # Luong's input feeding with the embedding in the combine layer
    dict(attention="concat"),  # Luong's concat score: additive attention without biases
]


@pytest.mark.parametrize("cfg", ORACLE_CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_forward_matches_oracle(cfg, rng):
    m = Seq2Seq(V, V + 1, embedding_dim=3, hidden_size=4, encoder_cell="gru", dtype=np.float64, seed=2, **cfg)
    src, tgt, lengths = make_data(rng)
    got = m(src, tgt, lengths)
    np.testing.assert_allclose(got, oracle_logits(m, src, tgt, lengths), rtol=1e-11, atol=1e-12)


GRAD_CONFIGS = [
    dict(encoder_cell="gru", bidirectional=False, encoder_hidden_size=4, bridge="copy"),
    dict(encoder_cell="lstm", encoder_hidden_size=2, bridge="copy", attention="general"),
    dict(encoder_cell="lstm", bridge=None, attention=None),
    dict(encoder_cell="gru", combine=False, input_feeding="context"),
    dict(encoder_cell="gru", combine=False, input_feeding=None, attention_bias=True),
    dict(encoder_cell="gru", attention_before_step=True, input_feeding=None, combine=False),
    dict(encoder_cell="lstm", attention_before_step=True, input_feeding=None, attention="dot"),
    dict(encoder_cell="gru", padding_idx=None, embedding_dropout=0.3),
    dict(encoder_cell="gru", attention_before_step=True, input_feeding=None, combine_embedding=True),
    dict(encoder_cell="lstm", combine_embedding=True, embedding_dropout=0.4),
    dict(
        encoder_cell="lstm",
        attention_before_step=True,
        input_feeding=None,
        attention_bias=True,
        embedding_dropout=0.5,
        batch_first=True,
    ),
]


@pytest.mark.parametrize("cfg", GRAD_CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_gradients_finite_differences(cfg, rng):
    m = Seq2Seq(V, V + 1, embedding_dim=3, hidden_size=4, dtype=np.float64, seed=1, **cfg)
    src, tgt, lengths = make_data(rng)
    if m.batch_first:
        src, tgt = src.T, tgt.T
    loss = m.make_loss()

    def run():
        m._dropout_rng = np.random.default_rng(5)  # the same masks in every forward
        return m(src, tgt, lengths)

    m.zero_grad()
    loss(run(), tgt)
    assert m.backward(loss.backward()) is None
    for name, p in m.named_parameters():
        g = p.grad.reshape(-1)
        idx = rng.choice(g.size, min(6, g.size), replace=False)
        nums = finite_difference(lambda: float(loss(run(), tgt)), p.data, 1e-6, at=idx).reshape(-1)
        for i in idx:
            assert abs(nums[i] - g[i]) <= 1e-7 * max(1.0, abs(nums[i])), (name, i, nums[i], g[i])
    pad_rows_fixed = m.src_embed.padding_idx is not None
    assert pad_rows_fixed == (cfg.get("padding_idx", "pad_id") is not None)
    if not pad_rows_fixed:  # the pad token's embedding rows are ordinary (nonzero) rows
        assert m.src_embed.weight.data[0].all() and m.tgt_embed.weight.data[0].all()


def test_batch_first_is_time_major_transposed(rng):
    kw = dict(embedding_dim=3, hidden_size=4, dtype=np.float64, seed=2)
    tm, bf = Seq2Seq(V, V, **kw), Seq2Seq(V, V, batch_first=True, **kw)
    src, tgt, lengths = make_data(rng)
    tm.zero_grad(), bf.zero_grad()
    got = bf(src.T, tgt.T, lengths)
    want = tm(src, tgt, lengths)
    np.testing.assert_array_equal(got, want.transpose(1, 0, 2))
    dl = rng.standard_normal(want.shape)
    tm.backward(dl)
    bf.backward(dl.transpose(1, 0, 2))
    for (n, p), (_, q) in zip(tm.named_parameters(), bf.named_parameters()):
        np.testing.assert_allclose(q.grad, p.grad, rtol=1e-13, atol=1e-14, err_msg=n)
    with pytest.raises(ValueError, match=r"dlogits: expected shape \(B, T, V\)"):
        bf.backward(dl)
    np.testing.assert_array_equal(bf.greedy(src.T, lengths).tokens, tm.greedy(src, lengths).tokens)


def test_dropout_train_only_and_bridges(rng):
    src, tgt, lengths = make_data(rng)
    m = Seq2Seq(V, V, embedding_dim=3, hidden_size=4, dtype=np.float64, seed=3, embedding_dropout=0.5)
    ref = Seq2Seq(V, V, embedding_dim=3, hidden_size=4, dtype=np.float64, seed=3)
    assert not np.array_equal(m(src, tgt, lengths), ref(src, tgt, lengths))  # training mode
    m.eval(), ref.eval()
    np.testing.assert_array_equal(m(src, tgt, lengths), ref(src, tgt, lengths))
    kw = dict(embedding_dim=3, hidden_size=4, encoder_cell="lstm", bidirectional=False, seed=4)
    for bridge in ("copy", None):
        b = Seq2Seq(V, V, bridge=bridge, encoder_hidden_size=4, **kw)
        assert b.bridge is None and b.bridge_c is None
        enc = b.encode(src, lengths)
        _, (h_n, c_n) = b.encoder(b.src_embed.weight.data[src], None, lengths)
        want_h, want_c = (h_n[-1], c_n[-1]) if bridge == "copy" else (0 * h_n[-1], 0 * c_n[-1])
        np.testing.assert_array_equal(enc.state.h, want_h)
        np.testing.assert_array_equal(enc.state.c, want_c)


def test_option_errors():
    with pytest.raises(ValueError, match="bridge: 'copy' needs"):
        Seq2Seq(V, V, hidden_size=8, encoder_hidden_size=3, bridge="copy")
    with pytest.raises(ValueError, match="bridge: expected one of"):
        Seq2Seq(V, V, bridge="mean")
    with pytest.raises(ValueError, match="input_feeding: expected None with attention_before_step"):
        Seq2Seq(V, V, attention_before_step=True)
    with pytest.raises(ValueError, match="attention_before_step: expected False without attention"):
        Seq2Seq(V, V, attention=None, attention_before_step=True)
    with pytest.raises(ValueError, match="input_feeding: 'attentional' feeds the combine"):
        Seq2Seq(V, V, combine=False)
    with pytest.raises(ValueError, match="combine_embedding: expected False without the combine layer"):
        Seq2Seq(V, V, combine=False, input_feeding=None, combine_embedding=True)
    with pytest.raises(ValueError, match="combine_embedding: expected False without the combine layer"):
        Seq2Seq(V, V, attention=None, combine_embedding=True)
    with pytest.raises(ValueError, match="attention_bias: Luong's 'concat' score"):
        Seq2Seq(V, V, attention="concat", attention_bias=True)
    with pytest.raises(ValueError, match="bias: only additive attention"):
        Seq2Seq(V, V, attention="general", attention_bias=True)
    with pytest.raises(ValueError, match="embedding_dropout"):
        Seq2Seq(V, V, embedding_dropout=1.0)
    with pytest.raises(ValueError, match="padding_idx"):
        Seq2Seq(V, V, padding_idx="none")
    with pytest.raises(ValueError, match=r"at least one source step, got shape \(2, 0\)"):
        Seq2Seq(V, V, batch_first=True).encode(np.zeros((2, 0), np.int64))
    with pytest.raises(TypeError, match="batch_first"):
        Seq2Seq(V, V, batch_first=1)

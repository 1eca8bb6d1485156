"""Tests of ``rnnkit.decoding``: greedy search and batched beam search over a Seq2Seq.

* Beam width 1 is greedy search, exactly (tokens, lengths, scores, attention), for every cell,
  attention kind, dtype and length penalty.
* Reported scores equal the log-probabilities of the returned hypotheses recomputed by teacher
  forcing (score_sequences), for all K hypotheses; normalised scores use GNMT's penalty.
* A beam wide enough to keep every hypothesis finds the exhaustive optimum (tiny vocabulary).
* Batched decoding equals decoding each row alone; max_len, eos and padding conventions;
  return_all ordering; attention weights; errors; the model's mode is restored.
"""

import itertools

import numpy as np
import pytest

from rnnkit.decoding import beam_search, greedy_decode, length_penalty, score_sequences
from rnnkit.demos import seq2seq as demo
from rnnkit.seq2seq import Seq2Seq


def random_model(V=9, attention="additive", cell="lstm", dtype=np.float32, seed=0, eos_bias=0.0):
    m = Seq2Seq(
        V, V, embedding_dim=6, hidden_size=8, encoder_cell=cell, attention=attention, dtype=dtype, seed=seed
    )
    m.out.weight.data *= 4  # peakier distributions than at initialisation
    m.out.bias.data[m.eos_id] += eos_bias
    return m


def sources(rng, S=6, B=5, V=9):
    src = rng.integers(3, V, (S, B))
    lengths = rng.integers(1, S + 1, B)
    lengths[0] = S
    for b, n in enumerate(lengths):
        src[n:, b] = 0
    return src, lengths


@pytest.fixture(scope="module")
def trained():
    """A small reversal model trained for ~1 s: realistic, non-degenerate distributions."""
    from rnnkit.optim import Adam
    from rnnkit.training import fit

    src_gen = demo.SequenceSource(6, 2, 6, np.random.default_rng(0))
    m = Seq2Seq(9, 9, embedding_dim=12, hidden_size=24, seed=0)
    opt = Adam(m.parameters(), lr=1e-2)

    def data(step):
        src, lengths, tgt = demo.make_batch(src_gen.draw(32), "reverse")
        return (src, tgt, lengths), tgt

    fit(m, m.make_loss(), opt, data, steps=60, clip_norm=5.0, progress=False)
    return m


CASES = [
    ("additive", "lstm", np.float32),
    ("dot", "gru", np.float64),
    ("general", "rnn", np.float32),
    (None, "lstm", np.float64),
]


@pytest.mark.parametrize("alpha", [0.0, 0.8])
@pytest.mark.parametrize("attention,cell,dtype", CASES)
def test_beam_width_one_is_greedy(attention, cell, dtype, alpha, rng):
    m = random_model(attention=attention, cell=cell, dtype=dtype, eos_bias=-0.5)
    src, lengths = sources(rng)
    g = greedy_decode(m, src, lengths, max_len=9, length_penalty=alpha, return_attention=True)
    b = beam_search(m, src, lengths, beam_width=1, max_len=9, length_penalty=alpha, return_attention=True)
    np.testing.assert_array_equal(b.tokens, g.tokens)
    np.testing.assert_array_equal(b.lengths, g.lengths)
    np.testing.assert_array_equal(b.scores, g.scores)
    np.testing.assert_array_equal(b.normalized_scores, g.normalized_scores)
    if attention is None:
        assert g.attention is None and b.attention is None
    else:
        np.testing.assert_array_equal(b.attention, g.attention)


def test_beam_width_one_is_greedy_trained(trained, rng):
    src, lengths = sources(rng, B=40)
    for alpha in (0.0, 1.0):
        g = greedy_decode(trained, src, lengths, length_penalty=alpha)
        b = beam_search(trained, src, lengths, beam_width=1, length_penalty=alpha)
        assert g.tokens.shape == b.tokens.shape
        np.testing.assert_array_equal(b.tokens, g.tokens)
        np.testing.assert_array_equal(b.scores, g.scores)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_scores_are_log_probabilities(trained, alpha, rng):
    src, lengths = sources(rng, B=8)
    K = 4
    res = beam_search(trained, src, lengths, beam_width=K, length_penalty=alpha, return_all=True)
    L = res.tokens.shape[0]
    assert res.tokens.shape == (L, 8, K) and res.scores.shape == (8, K)
    for k in range(K):
        recomputed = score_sequences(trained, src, res.tokens[:, :, k], lengths)
        np.testing.assert_allclose(res.scores[:, k], recomputed, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        res.normalized_scores, res.scores / length_penalty(res.lengths, alpha), rtol=1e-12
    )
    assert (np.diff(res.normalized_scores, axis=1) <= 0).all()  # best first
    # hypotheses of a row are distinct; conventions: eos ends, then padding
    for b in range(8):
        hyps = {tuple(res.tokens[: res.lengths[b, k], b, k]) for k in range(K)}
        assert len(hyps) == K
        for k in range(K):
            n = res.lengths[b, k]
            seq = res.tokens[:, b, k]
            assert (seq[n:] == trained.pad_id).all()
            assert trained.eos_id not in seq[: n - 1]
            assert trained.pad_id not in seq[:n] and trained.bos_id not in seq[:n]
    best = beam_search(trained, src, lengths, beam_width=K, length_penalty=alpha)
    np.testing.assert_array_equal(best.tokens, res.tokens[:, :, 0])
    g = greedy_decode(trained, src, lengths, length_penalty=alpha)
    # on this model the beam's best is at least as good as greedy on average
    assert best.normalized_scores.mean() >= g.normalized_scores.mean() - 1e-9


@pytest.mark.parametrize("alpha", [0.0, 1.5])
def test_wide_beam_finds_exhaustive_optimum(alpha):
    """Vocabulary {pad, bos, eos, a, b}: every hypothesis of up to 4 tokens is enumerated and
    scored; a beam wide enough to keep them all returns the best by normalised score (here
    greedy search does not: the test is not vacuous)."""
    m = Seq2Seq(6, 5, embedding_dim=4, hidden_size=6, attention="general", dtype=np.float64, seed=0)
    m.out.weight.data *= 3
    m.out.bias.data[m.eos_id] -= 1.5  # make longer hypotheses competitive
    rng = np.random.default_rng(5)
    src = rng.integers(3, 6, (4, 3))
    lengths = np.array([4, 2, 3])
    max_len, toks = 4, [2, 3, 4]
    cands = [
        seq
        for n in range(1, max_len + 1)
        for seq in itertools.product(toks, repeat=n)
        if 2 not in seq[:-1] and (n == max_len or seq[-1] == 2)
    ]
    n_c = len(cands)
    tgt = np.zeros((max_len, 3 * n_c), np.int64)
    for b in range(3):
        for i, seq in enumerate(cands):
            tgt[: len(seq), b * n_c + i] = seq
    sc = score_sequences(m, np.repeat(src, n_c, axis=1), tgt, np.repeat(lengths, n_c))
    norm = sc.reshape(3, n_c) / length_penalty([len(c) for c in cands], alpha)
    best = norm.argmax(axis=1)
    res = beam_search(m, src, lengths, beam_width=n_c, max_len=max_len, length_penalty=alpha)
    for b in range(3):
        assert tuple(res.tokens[: res.lengths[b], b]) == cands[best[b]]
        np.testing.assert_allclose(res.normalized_scores[b], norm[b, best[b]], rtol=1e-10)
    g = greedy_decode(m, src, lengths, max_len=max_len, length_penalty=alpha)
    assert (g.normalized_scores < res.normalized_scores - 1e-6).any()
    # a narrow beam is never better than the optimum
    narrow = beam_search(m, src, lengths, beam_width=2, max_len=max_len, length_penalty=alpha)
    assert (narrow.normalized_scores <= norm.max(axis=1) + 1e-12).all()


def test_batched_equals_one_row_at_a_time(trained, rng):
    src, lengths = sources(rng, B=6)
    res = beam_search(trained, src, lengths, beam_width=3, length_penalty=0.5, return_attention=True)
    g = greedy_decode(trained, src, lengths)
    for b in range(6):
        n = lengths[b]
        one = beam_search(
            trained,
            src[:n, b : b + 1],
            None,
            beam_width=3,
            length_penalty=0.5,
            max_len=2 * src.shape[0] + 10,
            return_attention=True,
        )
        L = one.tokens.shape[0]
        np.testing.assert_array_equal(one.tokens[:, 0], res.tokens[:L, b])
        assert (res.tokens[L:, b] == trained.pad_id).all()
        np.testing.assert_allclose(one.scores[0], res.scores[b], rtol=1e-5)
        np.testing.assert_allclose(one.attention[:, 0], res.attention[:L, b, :n], atol=1e-6)
        assert not res.attention[:, b, n:].any()  # padded source steps get no attention
        g1 = greedy_decode(trained, src[:n, b : b + 1], max_len=2 * src.shape[0] + 10)
        np.testing.assert_array_equal(g1.tokens[:, 0], g.tokens[: g1.tokens.shape[0], b])


def test_max_len_eos_and_attention(rng):
    m = random_model(eos_bias=-1e4)  # eos never wins: every hypothesis runs to max_len
    src, lengths = sources(rng)
    for res in (
        greedy_decode(m, src, lengths, max_len=7, return_attention=True),
        beam_search(m, src, lengths, beam_width=3, max_len=7, return_attention=True),
    ):
        assert res.tokens.shape == (7, 5) and (res.lengths == 7).all()
        assert res.attention.shape == (7, 5, src.shape[0])
        np.testing.assert_allclose(res.attention.sum(-1), 1, rtol=1e-5)
        assert res.as_lists()[0] == res.tokens[:, 0].tolist()
    m = random_model(eos_bias=1e4)  # eos at once
    for res in (greedy_decode(m, src, lengths), beam_search(m, src, lengths, beam_width=4)):
        assert res.tokens.shape == (1, 5) and (res.tokens == m.eos_id).all()
        assert (res.lengths == 1).all() and res.as_lists() == [[]] * 5
        assert res.as_lists(drop_eos=False) == [[m.eos_id]] * 5


def test_mode_restored_and_errors(trained, rng):
    src, lengths = sources(rng)
    assert trained.training
    beam_search(trained, src, lengths, beam_width=2)
    assert trained.training and trained.encoder.training
    trained.eval()
    greedy_decode(trained, src, lengths)
    assert not trained.training
    trained.train()
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(trained, src, lengths, beam_width=0)
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode(trained, src, lengths, max_len=0)
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search(trained, src, lengths, length_penalty=-1.0)
    with pytest.raises(ValueError, match=r"src: expected token ids of shape \(S, B\)"):
        greedy_decode(trained, src[:, 0])
    with pytest.raises(ValueError, match="lengths"):
        greedy_decode(trained, src, lengths[:2])


class _Rows:
    """A decoder state or an encoding of the protocol: arrays with a leading row axis."""

    def __init__(self, **arrays):
        self.__dict__.update(arrays)

    def take(self, idx):
        return _Rows(**{k: v[idx] for k, v in self.__dict__.items()})


class _HandBuiltModel:
    """Not a Seq2Seq: the decoding protocol by hand. The next token's logits are row
    ``source class + previous token`` of a fixed table (the source's first token picks one of
    two tables), so every sequence's probability is known in closed form."""

    pad_id, bos_id, eos_id = 0, 1, 2

    def __init__(self, tables):
        self.tables = tables  # (2, V, V): tables[c][prev] = logits of the next token
        self.tgt_vocab = tables.shape[2]
        self.training = True

    def eval(self):
        self.training = False
        return self

    def train(self, mode=True):
        self.training = mode
        return self

    def encode(self, src, src_lengths=None):
        return _Encoded((np.asarray(src)[0] % 2).astype(np.int64))  # the class of each row (B,)

    def decode_step(self, tokens, state, memory):
        return self.tables[state.cls, tokens], state, None


class _Encoded:
    """The protocol's encoding: batch_size, state, memory and take(idx)."""

    def __init__(self, cls):
        self.cls, self.batch_size, self.state, self.memory = cls, len(cls), _Rows(cls=cls), None

    def take(self, idx):
        return _Encoded(self.cls[idx])


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_hand_built_model_of_the_protocol(alpha):
    """greedy_decode and beam_search on a model that only follows the documented protocol: the
    greedy answer is the argmax chain, and a wide beam returns the best of every sequence of up
    to max_len tokens, scored in closed form from the tables."""
    rng = np.random.default_rng(3)
    V, max_len = 5, 4
    tables = rng.standard_normal((2, V, V)) * 2
    model = _HandBuiltModel(tables)
    src = np.array([[4, 3, 6], [3, 3, 3]])  # (S, B): classes 0, 1, 0
    cls = src[0] % 2

    def logp(c, prev):
        z = tables[c, prev].astype(np.float64)
        z = z - z.max()
        z = z - np.log(np.exp(z).sum())
        z[[model.pad_id, model.bos_id]] = -np.inf
        return z

    g = greedy_decode(model, src, max_len=max_len, length_penalty=alpha)
    assert model.training  # the mode is restored
    for b in range(3):
        prev, seq = model.bos_id, []
        for _ in range(max_len):
            prev = int(np.argmax(logp(cls[b], prev)))
            seq.append(prev)
            if prev == model.eos_id:
                break
        assert g.as_lists(drop_eos=False)[b] == seq

    toks = [2, 3, 4]
    cands = [
        seq
        for n in range(1, max_len + 1)
        for seq in itertools.product(toks, repeat=n)
        if 2 not in seq[:-1] and (n == max_len or seq[-1] == 2)
    ]

    def score(c, seq):
        prev, total = model.bos_id, 0.0
        for t in seq:
            total += logp(c, prev)[t]
            prev = t
        return total

    res = beam_search(model, src, beam_width=len(cands), max_len=max_len, length_penalty=alpha)
    for b in range(3):
        norm = [score(cls[b], seq) / length_penalty(len(seq), alpha) for seq in cands]
        best = int(np.argmax(norm))
        assert tuple(res.tokens[: res.lengths[b], b]) == cands[best]
        np.testing.assert_allclose(res.normalized_scores[b], norm[best], rtol=1e-12)

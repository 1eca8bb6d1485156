"""
Bidirectional networks and encoder-decoders, with and without attention
=======================================================================

Two ideas of the lecture notes, on the task of reversing a sequence of tokens:

* a **bidirectional** recurrent network runs one RNN forwards and one backwards over the
  input, so that its output at step t has seen the whole sequence;
* an **encoder-decoder** reads the source with an encoder and writes the target with a
  decoder. Without attention the decoder sees the source only through the encoder's final
  state, one fixed-size vector; **attention** lets every decoder step look at all the encoder
  outputs and take a weighted average of them.

The full-size results (sources of 5 to 20 tokens, models trained for minutes) are in
:doc:`/seq2seq-results` and come from ``python -m rnnkit demo reverse``
(:mod:`rnnkit.demos.seq2seq`); this page trains much smaller models for a few seconds and
shows the same effect.
"""

# %%
# Bidirectional: two directions side by side
# ------------------------------------------
# :class:`rnnkit.nn.LSTM` with ``bidirectional=True`` has the parameters of two LSTMs
# (torch's names: ``weight_ih_l0`` and ``weight_ih_l0_reverse``, ...). Its output
# ``out (T, B, 2*H)`` holds, at step t, the forward LSTM's state after reading
# :math:`x_0 .. x_t` and the backward LSTM's after reading :math:`x_{T-1} .. x_t`. The same
# numbers come from two calls of the functional kernel, one with ``reverse=True``:

import matplotlib.pyplot as plt
import numpy as np

import rnnkit
from rnnkit.demos.seq2seq import BOS, EOS, FIRST, PAD, SequenceSource, held_out_sets, make_batch
from rnnkit.models import Seq2Seq, greedy_decode
from rnnkit.train import Adam, fit

T, B, I, H = 7, 2, 3, 4
rng = np.random.default_rng(0)
x = rng.standard_normal((T, B, I)).astype(np.float32)
bilstm = rnnkit.nn.LSTM(I, H, bidirectional=True, seed=0).eval()
out, (h_n, c_n) = bilstm(x)
print("out", out.shape, "h_n", h_n.shape)  # (T, B, 2*H), (2, B, H)

w = {k: v for k, v in bilstm.state_dict().items()}
fwd, _, _ = rnnkit.lstm_forward(
    x, None, None, w["weight_ih_l0"], w["weight_hh_l0"], w["bias_ih_l0"], w["bias_hh_l0"], training=False
)
bwd, _, _ = rnnkit.lstm_forward(
    x,
    None,
    None,
    w["weight_ih_l0_reverse"],
    w["weight_hh_l0_reverse"],
    w["bias_ih_l0_reverse"],
    w["bias_hh_l0_reverse"],
    reverse=True,
    training=False,
)
print("forward half equal:", np.array_equal(out[..., :H], fwd))
print("backward half equal:", np.array_equal(out[..., H:], bwd))
print("h_n[1] is the backward state at t = 0:", np.array_equal(h_n[1], bwd[0]))

# %%
# The reverse task
# ----------------
# Sources are 3 to 12 random tokens out of 8 symbols; the target is the source reversed,
# then an end token. A test set of 40 sequences of every length is drawn first and excluded
# from training. The helpers come from the demo: ``make_batch`` pads a list of sequences into
# ``src (S, B)``, ``lengths (B,)`` and ``tgt (S+1, B)``, time-major like the rest of rnnkit.

cfg = dict(symbols=8, min_len=3, max_len=12, test_per_length=40, val_size=0)
test, _, seen = held_out_sets(cfg, seed=0)
V = FIRST + cfg["symbols"]  # the special tokens pad, bos, eos come first
src, lengths, tgt = make_batch(test[:3], "reverse")
print("src (S, B):\n", src, "\ntgt (S+1, B):\n", tgt)

# %%
# Two models, one difference
# --------------------------
# Both have a bidirectional LSTM encoder (16 units per direction) and an LSTM decoder with
# H = 32 units, trained the same way: 300 steps of Adam on batches of 32 fresh sequences,
# teacher forcing, gradients clipped at norm 5 (:func:`rnnkit.train.fit`). One decoder
# attends over the encoder outputs (additive attention, Bahdanau et al.), the other does not.


def train(attention):
    model = Seq2Seq(
        V,
        V,
        embedding_dim=16,
        hidden_size=32,
        attention=attention,
        pad_id=PAD,
        bos_id=BOS,
        eos_id=EOS,
        seed=0,
    )
    source = SequenceSource(cfg["symbols"], cfg["min_len"], cfg["max_len"], np.random.default_rng(1), seen)

    def data(step):
        src, lengths, tgt = make_batch(source.draw(32), "reverse")
        return (src, tgt, lengths), tgt

    fit(
        model,
        model.make_loss(),
        Adam(model.parameters(), lr=1e-2),
        data,
        steps=300,
        clip_norm=5.0,
        progress=False,
    )
    return model


def accuracy_by_length(model):
    """Exact match (every token and the end token) of greedy decoding, per source length."""
    src, lengths, _ = make_batch(test, "reverse")
    hyps = greedy_decode(model, src, lengths, max_len=cfg["max_len"] + 2).as_lists()
    ok = np.array([h == s[::-1].tolist() for h, s in zip(hyps, test)])
    n = np.array([len(s) for s in test])
    return {L: ok[n == L].mean() for L in range(cfg["min_len"], cfg["max_len"] + 1)}, ok.mean()


models = {"attention": train("additive"), "no attention": train(None)}
scores = {}
for name, model in models.items():
    scores[name], overall = accuracy_by_length(model)
    print(f"{name:12s}: exact match {overall:.1%} on {len(test)} held-out sequences")

fig, ax = plt.subplots(figsize=(7, 4))
for name, by_len in scores.items():
    ax.plot(list(by_len), [a * 100 for a in by_len.values()], "o-", label=name)
ax.set_xlabel("source length")
ax.set_ylabel("exact match on held-out sequences (%)")
ax.set_ylim(-2, 102)
ax.grid(alpha=0.3)
ax.legend()
ax.set_title("Reversing sequences: accuracy by length")
fig.tight_layout()

# %%
# Without attention the whole source has to pass through the decoder's initial state; short
# sources fit, and the accuracy falls as the sources get longer. With attention each output
# token can read the source token it needs, and the accuracy stays high over every length.
#
# The attention map
# -----------------
# ``greedy_decode(..., return_attention=True)`` also returns the attention weights of every
# produced token over the source steps, ``(L, B, S)``. For reversal the decoder should look
# at the last source token first, then the one before, ...: an anti-diagonal.

example = test[-1]  # a source of 12 tokens
src, lengths, _ = make_batch([example], "reverse")
res = greedy_decode(models["attention"], src, lengths, max_len=len(example) + 2, return_attention=True)
n_out = int(res.lengths[0])
weights = res.attention[:n_out, 0, : len(example)]  # (output tokens, source tokens)
names = {EOS: "<eos>"}
fig, ax = plt.subplots(figsize=(6, 5.5))
im = ax.imshow(weights, cmap="viridis", vmin=0, vmax=1)
ax.set_xticks(range(len(example)))
ax.set_xticklabels([str(t - FIRST) for t in example])
ax.set_yticks(range(n_out))
ax.set_yticklabels([names.get(int(t), str(int(t) - FIRST)) for t in res.tokens[:n_out, 0]])
ax.set_xlabel("source token")
ax.set_ylabel("output token")
ax.set_title("Attention weights while reversing one sequence")
fig.colorbar(im, ax=ax, fraction=0.045)
fig.tight_layout()

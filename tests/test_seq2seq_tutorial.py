"""Seq2Seq expresses the PyTorch tutorial's attention model exactly, by options only.

The tutorial is "NLP From Scratch: Translation with a Sequence to Sequence Network and
Attention" (pytorch.org/tutorials/intermediate/seq2seq_translation_tutorial.html), in its
batched version (2023 on: ``batch_first`` GRUs, ``BahdanauAttention`` with ``Wa``, ``Ua``,
``Va``, ``AttnDecoderRNN.forward_step`` attending from the previous hidden state before the
GRU step, the GRU taking ``[embedded ; context]``, ``F.log_softmax`` over ``out``'s scores and
``nn.NLLLoss``). Its modules are written below as the tutorial writes them (the device and
the greedy branch dropped, the decoder run for T steps rather than MAX_LENGTH).
"""

from __future__ import annotations

import numpy as np
import pytest

from rnnkit.models import Seq2Seq
from rnnkit.train import Adam

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

SOS_token, EOS_token = 0, 1


class EncoderRNN(nn.Module):
    def __init__(self, input_size, hidden_size, dropout_p=0.1):
        super().__init__()
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, input):
        embedded = self.dropout(self.embedding(input))
        output, hidden = self.gru(embedded)
        return output, hidden


class BahdanauAttention(nn.Module):
    def __init__(self, hidden_size):
        super().__init__()
        self.Wa = nn.Linear(hidden_size, hidden_size)
        self.Ua = nn.Linear(hidden_size, hidden_size)
        self.Va = nn.Linear(hidden_size, 1)

    def forward(self, query, keys):
        scores = self.Va(torch.tanh(self.Wa(query) + self.Ua(keys)))
        scores = scores.squeeze(2).unsqueeze(1)
        weights = F.softmax(scores, dim=-1)
        context = torch.bmm(weights, keys)
        return context, weights


class AttnDecoderRNN(nn.Module):
    def __init__(self, hidden_size, output_size, dropout_p=0.1):
        super().__init__()
        self.embedding = nn.Embedding(output_size, hidden_size)
        self.attention = BahdanauAttention(hidden_size)
        self.gru = nn.GRU(2 * hidden_size, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, output_size)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, encoder_outputs, encoder_hidden, target_tensor):
        batch_size = encoder_outputs.size(0)
        decoder_input = torch.empty(batch_size, 1, dtype=torch.long).fill_(SOS_token)
        decoder_hidden = encoder_hidden
        decoder_outputs = []
        attentions = []
        for i in range(target_tensor.size(1)):
            decoder_output, decoder_hidden, attn_weights = self.forward_step(
                decoder_input, decoder_hidden, encoder_outputs
            )
            decoder_outputs.append(decoder_output)
            attentions.append(attn_weights)
            decoder_input = target_tensor[:, i].unsqueeze(1)  # teacher forcing
        decoder_outputs = torch.cat(decoder_outputs, dim=1)
        decoder_outputs = F.log_softmax(decoder_outputs, dim=-1)
        attentions = torch.cat(attentions, dim=1)
        return decoder_outputs, decoder_hidden, attentions

    def forward_step(self, input, hidden, encoder_outputs):
        embedded = self.dropout(self.embedding(input))
        query = hidden.permute(1, 0, 2)
        context, attn_weights = self.attention(query, encoder_outputs)
        input_gru = torch.cat((embedded, context), dim=2)
        output, hidden = self.gru(input_gru, hidden)
        output = self.out(output)
        return output, hidden, attn_weights


def tutorial_options():
    """The rnnkit options that make Seq2Seq the tutorial's model (E = He = H)."""
    return dict(
        encoder_cell="gru",
        bidirectional=False,
        attention="additive",
        attention_bias=True,  # Wa and Ua both nn.Linear with bias
        attention_before_step=True,  # c_t from s_{t-1}; GRU on [embedded ; context]
        input_feeding=None,
        combine=False,  # logits = out(s_t)
        bridge="copy",  # decoder_hidden = encoder_hidden
        padding_idx=None,  # nn.Embedding without padding_idx
        bos_id=SOS_token,
        eos_id=EOS_token,
        pad_id=2,
    )


def weight_map(m):
    """rnnkit parameter name -> (torch module, parameter name, reshape to rnnkit)."""
    pairs = {
        "src_embed.weight": "enc.embedding.weight",
        "tgt_embed.weight": "dec.embedding.weight",
        "attention.query.weight": "dec.attention.Wa.weight",
        "attention.query.bias": "dec.attention.Wa.bias",
        "attention.key.weight": "dec.attention.Ua.weight",
        "attention.key.bias": "dec.attention.Ua.bias",
        "attention.v": "dec.attention.Va.weight",
        "out.weight": "dec.out.weight",
        "out.bias": "dec.out.bias",
    }
    for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        pairs[f"encoder.{n}"] = f"enc.gru.{n}"
        pairs[f"decoder.{n}"] = f"dec.gru.{n}"
    return pairs


def test_pytorch_tutorial_attention_model_20_adam_steps():
    """Same loss and same weights (all but Va's bias, which the softmax ignores) over 20 Adam
    steps, float64, dropout p = 0, teacher forcing, to 1e-10."""
    torch.manual_seed(0)
    Vs, V, H, B, S, T = 11, 13, 8, 3, 5, 4
    enc = EncoderRNN(Vs, H, dropout_p=0.0).double()
    dec = AttnDecoderRNN(H, V, dropout_p=0.0).double()
    tmods = {"enc": enc, "dec": dec}
    m = Seq2Seq(Vs, V, embedding_dim=H, hidden_size=H, dtype=np.float64, seed=0, **tutorial_options())
    pairs = weight_map(m)
    params = dict(m.named_parameters())
    names = set(params)
    assert names == set(pairs), names ^ set(pairs)

    def tparam(name):
        top, rest = name.split(".", 1)
        return tmods[top].get_parameter(rest)

    m.load_state_dict(
        {n: tparam(t).detach().numpy().reshape(params[n].data.shape).copy() for n, t in pairs.items()}
    )
    va_bias = dec.attention.Va.bias.detach().clone()

    rng = np.random.default_rng(1)
    src = rng.integers(0, Vs, (B, S))  # batch_first, as the tutorial's tensors
    tgt = rng.integers(3, V, (B, T))
    tgt[:, -1] = EOS_token
    lr = 1e-2  # the tutorial's train(): one optim.Adam per module (lr 1e-3 there)
    encoder_optimizer = torch.optim.Adam(enc.parameters(), lr=lr)
    decoder_optimizer = torch.optim.Adam(dec.parameters(), lr=lr)
    opt = Adam(m, lr=lr)
    losses = []
    criterion = nn.NLLLoss()
    m.train()
    for step in range(20):
        encoder_optimizer.zero_grad()
        decoder_optimizer.zero_grad()
        eo, eh = enc(torch.from_numpy(src))
        dout, _, _ = dec(eo, eh, torch.from_numpy(tgt))
        tloss = criterion(dout.view(-1, dout.size(-1)), torch.from_numpy(tgt).view(-1))
        tloss.backward()
        encoder_optimizer.step()
        decoder_optimizer.step()

        opt.zero_grad()
        logits = m(src.T, tgt.T)  # (T, B, V)
        z = logits - logits.max(axis=-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        onehot = np.eye(V)[tgt.T]
        loss = -(logp * onehot).sum() / (T * B)
        m.backward((np.exp(logp) - onehot) / (T * B))
        opt.step()

        assert abs(loss - tloss.item()) < 1e-10, (step, loss, tloss.item())
        losses.append(loss)
        for n, t in pairs.items():
            want = tparam(t).detach().numpy().reshape(params[n].data.shape)
            err = np.abs(params[n].data - want).max()
            assert err < 1e-10, (step, n, err)
    assert torch.allclose(dec.attention.Va.bias, va_bias, atol=1e-10, rtol=0)
    assert losses[-1] < 0.7 * losses[0], losses  # it trained: the steps were not no-ops

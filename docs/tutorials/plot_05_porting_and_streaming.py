"""
Porting a PyTorch model, and streaming inference at batch 1
===========================================================

rnnkit's modules take ``torch.nn``'s constructor arguments, use its parameter names and
layouts, and compute what it computes, so a trained PyTorch model moves over by copying its
``state_dict``. This page ports a small keyword-spotting-style model (a two-layer LSTM and a
linear head over each step), checks it against torch, then runs it the way a deployed model
often runs: one sequence (batch 1), arriving a few frames at a time.

This tutorial needs PyTorch (CPU), onnx, onnxruntime and Keras installed (the test extra has
them). Other formats have other gate orders and layouts; a section below imports the same
model from an ONNX file and a Keras layer, and the pages of "Moving a model to rnnkit" beside
:doc:`/interop` give every mapping and what is refused.
"""

# %%
# The PyTorch model
# -----------------
# Any trained weights would do; here torch's own initialisation, with a fixed seed.

import matplotlib.pyplot as plt
import numpy as np
import torch

import rnnkit

torch.manual_seed(0)
I, H, C = 20, 48, 5  # input features per frame, hidden units, classes


class TorchTagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(I, H, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(H, C)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out)  # per-frame class scores


torch_model = TorchTagger().eval()
print({k: tuple(v.shape) for k, v in torch_model.lstm.state_dict().items()})

# %%
# The same model in rnnkit
# ------------------------
# The constructor arguments are torch's; ``load_state_dict`` takes torch's keys and accepts
# the tensors directly (CPU float32 or float64, copied into the module's arrays). A key or a
# shape that does not match is refused with a message naming it in the shape letters.

lstm = rnnkit.nn.LSTM(I, H, num_layers=2, batch_first=True)
lstm.load_state_dict(torch_model.lstm.state_dict())
head = rnnkit.nn.Linear(H, C)
head.load_state_dict(torch_model.head.state_dict())
lstm.eval()  # inference: no workspace kept for backward


def rnnkit_model(x):
    out, _ = lstm(x)  # (B, T, H) with batch_first
    return head(out)  # (B, T, C)


x = np.random.default_rng(0).standard_normal((4, 50, I)).astype(np.float32)  # (B, T, I)
with torch.no_grad():
    expected = torch_model(torch.from_numpy(x)).numpy()
got = rnnkit_model(x)
print("largest difference from torch:", np.abs(got - expected).max())

# %%
# The two differ by float32 rounding only: the same equations, summed in a different order.
# Sequences of different lengths in one batch are given as ``lengths``, which means what
# torch's packed sequences mean (each sequence runs its own steps, outputs past its end are
# zero, ``h_n`` holds its own last state):

lengths = np.array([50, 31, 12, 40])
packed = torch.nn.utils.rnn.pack_padded_sequence(
    torch.from_numpy(x), torch.from_numpy(lengths), batch_first=True, enforce_sorted=False
)
with torch.no_grad():
    out_packed, (h_n_torch, _) = torch_model.lstm(packed)
out_torch, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed, batch_first=True, total_length=50)
out, (h_n, _) = lstm(x, lengths=lengths)
print("outputs:", np.abs(out - out_torch.numpy()).max(), " h_n:", np.abs(h_n - h_n_torch.numpy()).max())

# %%
# From an ONNX file, or from Keras
# --------------------------------
# A model exported to ONNX (here the same LSTM, by ``torch.onnx.export``) loads with
# :func:`rnnkit.onnx.load`, which maps ONNX's gate order (i, o, f, c) and its bias and output
# layouts onto torch's and returns the module; calling it returns what the torch module returns.
# onnxruntime, running the same file, agrees:

import io  # noqa: E402

import onnxruntime  # noqa: E402

buffer = io.BytesIO()
torch.onnx.export(torch_model.lstm, (torch.from_numpy(x),), buffer, input_names=["x"], dynamo=False)
from_onnx = rnnkit.onnx.load(buffer.getvalue()).eval()
session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
y_ort = session.run(None, {"x": x})[0]
print("rnnkit.onnx.load vs onnxruntime:", np.abs(from_onnx(x)[0] - y_ort).max())

# %%
# A Keras layer converts with :func:`rnnkit.keras.from_layer` (Keras stores the kernel
# transposed, in the gate order i, f, c, o, and is batch-first): here a Keras LSTM on the
# torch backend, compared with the Keras layer's own output.

import os  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "torch")
import keras  # noqa: E402

keras_lstm = keras.layers.LSTM(H, return_sequences=True)
y_keras = keras.ops.convert_to_numpy(keras_lstm(x))  # builds the layer; (B, T, H)
from_keras = rnnkit.keras.from_layer(keras_lstm).eval()
print("rnnkit.keras.from_layer vs Keras:", np.abs(from_keras(x)[0] - y_keras).max())

# %%
# Going back is the same copy in the other direction:
# ``torch_module.load_state_dict({k: torch.from_numpy(v) for k, v in lstm.state_dict().items()})``.
#
# Streaming at batch 1
# --------------------
# A deployed model often sees one stream of frames, a few at a time, and must answer as they
# come. ``lstm.stream(batch=1)`` packs the weights once and keeps every layer's state between
# calls; each call takes a chunk of any length, ``(1, T_chunk, I)`` here (batch-first like the
# module), or one frame ``(1, I)``. Whatever the chunking, the outputs are bit for bit those of
# one forward over the whole sequence.

signal = np.random.default_rng(1).standard_normal((1, 200, I)).astype(np.float32)
whole, _ = lstm(signal)  # (1, 200, H): one call over the whole sequence

stream = lstm.stream(batch=1)
rng = np.random.default_rng(2)
pieces, t = [], 0
while t < signal.shape[1]:
    n = int(rng.integers(1, 12))  # frames arriving in this chunk
    pieces.append(stream(signal[:, t : t + n]))
    t += n
streamed = np.concatenate(pieces, axis=1)
print(f"{len(pieces)} chunks; bitwise equal to the whole-sequence forward:", np.array_equal(streamed, whole))

# %%
# One frame at a time is the same call with a ``(B, I)`` array. ``stream.state`` reads (and
# assigning it sets) the state, shaped like the module's ``h_n`` and ``c_n``; ``stream.reset()``
# starts a new utterance.

stream.reset()
frames = [stream(signal[:, t]) for t in range(signal.shape[1])]  # each (1, H)
print("frame by frame, bitwise equal:", np.array_equal(np.stack(frames, axis=1), whole))
h, c = stream.state
print("state after the last frame:", h.shape, c.shape)

scores = head(np.stack(frames, axis=1))[0]  # (T, C) per-frame class scores
fig, ax = plt.subplots(figsize=(8, 3.2))
ax.plot(scores)
ax.set_xlabel("frame")
ax.set_ylabel("class score")
ax.set_title("Per-frame outputs of the streamed model (5 classes)")
fig.tight_layout()

# %%
# The stream runs each chunk as one compiled call per layer, without Python work per step and
# without a workspace; it is the way to run a recurrent model at batch 1 (the
# :doc:`performance guide <plot_06_performance>` explains why small batches are the packed
# kernel's case). A bidirectional module cannot stream: its reverse direction starts from the
# end of a sequence that has not arrived yet.

"""rnnkit.onnx on models torch.onnx.export writes (TorchScript exporter; the dynamo one when
onnxscript is installed): torch.nn.LSTM / GRU / RNN, 1-2 layers, one or two directions,
batch-first, packed sequences, given initial states. The imported modules' outputs and final
states equal onnxruntime's to 1e-5 (float32) and, in float64 (which onnxruntime's RNN operators
do not run), torch's outputs and gradients to 1e-10.
"""

import contextlib
import io
import re
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import rnnkit  # noqa: E402
import rnnkit.onnx as ronnx  # noqa: E402
from rnnkit.__main__ import main  # noqa: E402
from test_onnx import LENGTHS, TOL, B, H, I, T, assert_close, call_state, flat, ort_run, states_for  # noqa: E402


class _Packed(torch.nn.Module):
    """A torch recurrent module over a packed batch (unsorted lengths), padded back."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, lengths, *state):
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        hx = None if not state else (state if len(state) == 2 else state[0])
        y, final = self.rnn(packed, hx)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, total_length=x.shape[0])
        return (y, *final) if isinstance(final, tuple) else (y, final)


class _WithState(torch.nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, *state):
        y, final = self.rnn(x, state if len(state) == 2 else state[0])
        return (y, *final) if isinstance(final, tuple) else (y, final)


def torch_module(op, num_layers, bidirectional, batch_first=False, dtype=torch.float32, **kw):
    torch.manual_seed(num_layers * 7 + bidirectional)
    cls = getattr(torch.nn, op)
    return cls(I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, **kw).to(
        dtype
    )


def export(module, args, names, dynamo=False):
    f = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # the exporters warn about themselves and report their progress; not our concern
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(module.eval(), args, dynamo=True, input_names=names, verbose=False)
            return program.model_proto.SerializeToString()
        torch.onnx.export(module.eval(), args, f, dynamo=False, input_names=names)
    return f.getvalue()


TORCH_CASES = [
    ("LSTM", 1, False, {}),
    ("LSTM", 2, True, {}),
    ("LSTM", 2, False, {}),
    ("GRU", 1, True, {}),
    ("GRU", 2, False, {}),
    ("GRU", 2, True, {}),
    ("RNN", 2, True, {}),
    ("RNN", 1, False, {"nonlinearity": "relu"}),
    ("RNN", 2, False, {"nonlinearity": "relu", "bias": False}),
]


@pytest.mark.parametrize("op, L, bidir, kw", TORCH_CASES)
def test_torch_export_loads_and_matches_onnxruntime(op, L, bidir, kw):
    rng = np.random.default_rng(1)
    module = torch_module(op, L, bidir, **kw)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    data = export(module, (torch.from_numpy(x),), ["x"])
    m = ronnx.load(data)
    assert type(m).__name__ == op and m.num_layers == L and m.bidirectional == bidir and not m.batch_first
    expected = ort_run(data, {"x": x})
    for a, e, what in zip(flat(m(x)), expected, ("y", "h_n", "c_n")):
        assert_close(a, e, f"{op} L={L} bidir={bidir} {what}")


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_torch_export_batch_first(op):
    rng = np.random.default_rng(2)
    module = torch_module(op, 2, True, batch_first=True)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    data = export(module, (torch.from_numpy(x),), ["x"])
    m = ronnx.load(data)
    assert m.batch_first
    for a, e in zip(flat(m(x)), ort_run(data, {"x": x})):
        assert_close(a, e, f"{op} batch_first")


@pytest.mark.parametrize("op, L, bidir, batch_first", [("LSTM", 2, True, False), ("GRU", 2, False, True)])
def test_torch_dynamo_export(op, L, bidir, batch_first):
    """torch.onnx.export's default (dynamo) exporter: fixed sizes, Reshape to (T, B, D*H) by
    number, zero initial states as initializers."""
    pytest.importorskip("onnxscript")
    rng = np.random.default_rng(17)
    module = torch_module(op, L, bidir, batch_first=batch_first)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(np.float32)
    data = export(module, (torch.from_numpy(x),), ["x"], dynamo=True)
    m = ronnx.load(data)
    assert m.num_layers == L and m.batch_first == batch_first
    for a, e in zip(flat(m(x)), ort_run(data, {"x": x})):
        assert_close(a, e, f"dynamo {op}")


@pytest.mark.parametrize("op, L, bidir", [("LSTM", 2, True), ("GRU", 1, False), ("RNN", 2, False)])
def test_torch_export_packed_lengths_and_initial_state(op, L, bidir):
    rng = np.random.default_rng(3)
    D = 2 if bidir else 1
    module = torch_module(op, L, bidir)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    states = states_for(op, L, D, rng)
    names = ["x", "lengths"] + ["h0", "c0"][: len(states)]
    args = (torch.from_numpy(x), torch.from_numpy(LENGTHS), *map(torch.from_numpy, states))
    data = export(_Packed(module), args, names)
    m = ronnx.load(data)
    feed = dict(zip(names, [x, LENGTHS, *states]))
    expected = ort_run(data, feed)
    for a, e, what in zip(flat(m(x, call_state(op, states), LENGTHS)), expected, ("y", "h_n", "c_n")):
        assert_close(a, e, f"packed {op} {what}")


def test_torch_export_initial_state_of_a_stack():
    rng = np.random.default_rng(4)
    module = torch_module("LSTM", 2, True)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    states = states_for("LSTM", 2, 2, rng)
    data = export(
        _WithState(module), (torch.from_numpy(x), *map(torch.from_numpy, states)), ["x", "h0", "c0"]
    )
    m = ronnx.load(data)
    expected = ort_run(data, {"x": x, "h0": states[0], "c0": states[1]})
    for a, e in zip(flat(m(x, tuple(states))), expected):
        assert_close(a, e, "LSTM stack with (h0, c0)")


@pytest.mark.parametrize("op, L, bidir", [("LSTM", 2, True), ("GRU", 2, True), ("RNN", 1, True)])
def test_imported_gradients_equal_torch_float64(op, L, bidir):
    """float64 end to end (onnxruntime runs no float64 RNN, torch does): outputs to 1e-10, and
    the gradients of the imported module w.r.t. x, the initial states and every weight."""
    rng = np.random.default_rng(5)
    D = 2 if bidir else 1
    module = torch_module(op, L, bidir, dtype=torch.float64)
    x = rng.standard_normal((T, B, I))
    states = states_for(op, L, D, rng, np.float64)
    data = export(
        _Packed(module),
        (torch.from_numpy(x), torch.from_numpy(LENGTHS), *map(torch.from_numpy, states)),
        ["x", "lengths", "h0", "c0"][: 2 + len(states)],
    )
    m = ronnx.load(data)
    assert m.dtype == np.float64
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states]
    outs = _Packed(module).train()(xt, torch.from_numpy(LENGTHS), *st)
    cot = [rng.standard_normal(o.shape) for o in outs]
    wrt = [xt, *st, *module.parameters()]
    grads = torch.autograd.grad(outs, wrt, [torch.from_numpy(c) for c in cot])

    ours = flat(m(x, call_state(op, states), LENGTHS))
    for a, e in zip(ours, outs):
        assert_close(a, e.detach().numpy(), f"{op} forward", tol=1e-10)
    m.zero_grad()
    dstate = tuple(cot[1:]) if op == "LSTM" else cot[1]
    dx, d0 = m.backward(cot[0], dstate)
    d0 = list(d0) if op == "LSTM" else [d0]
    assert_close(dx, grads[0].numpy(), "dx", tol=1e-10)
    for a, e in zip(d0, grads[1 : 1 + len(states)]):
        assert_close(a, e.numpy(), "d state0", tol=1e-10)
    ours_p = dict(m.named_parameters())
    for (name, _), g in zip(module.named_parameters(), grads[1 + len(states) :]):
        assert_close(ours_p[name].grad, g.numpy(), f"d {name}", tol=1e-10)


def test_reversed_backward_equals_bidirectional_reverse_half():
    """Reversed(module) over each sequence backwards is the reverse half of a bidirectional
    torch module (torch has no reverse-only one): outputs and gradients, float64."""
    rng = np.random.default_rng(9)
    tm = torch.nn.GRU(I, H, bidirectional=True).double()
    sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    rnn = rnnkit.nn.GRU(I, H, dtype=np.float64)
    rnn.load_state_dict({k.replace("_reverse", ""): v for k, v in sd.items() if k.endswith("_reverse")})
    m = ronnx.Reversed(rnn)
    x = rng.standard_normal((T, B, I))
    xt = torch.tensor(x, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.from_numpy(LENGTHS), enforce_sorted=False)
    y, h = tm(packed)
    y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, total_length=T)
    y_rev, h_rev = y[..., H:], h[1:]
    out, h_n = m(x, None, LENGTHS)
    assert_close(out, y_rev.detach().numpy(), "reverse y", tol=1e-10)
    assert_close(h_n, h_rev.detach().numpy(), "reverse h_n", tol=1e-10)
    dy, dh = rng.standard_normal(out.shape), rng.standard_normal(h_n.shape)
    (gx,) = torch.autograd.grad([y_rev, h_rev], [xt], [torch.from_numpy(dy), torch.from_numpy(dh)])
    dx, _ = m.backward(dy, dh)
    assert_close(dx, gx.numpy(), "reverse dx", tol=1e-10)


def test_convert_cli_both_ways(tmp_path, capsys):
    rng = np.random.default_rng(16)
    module = torch_module("LSTM", 2, True)
    src = tmp_path / "model.onnx"
    src.write_bytes(export(module, (torch.randn(T, B, I),), ["x"]))
    npz = tmp_path / "out.npz"
    assert main(["convert", str(src), str(npz)]) == 0
    printed = capsys.readouterr().out
    assert "layer 0: LSTM node '/LSTM'" in printed and "layer 1: LSTM node '/LSTM_1'" in printed
    diffs = [float(d) for d in re.findall(r"max \|onnxruntime - rnnkit\| of \S+: (\S+)", printed)]
    assert len(diffs) == 3 and max(diffs) < TOL, printed
    m = ronnx.load_npz(npz)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    for a, e in zip(flat(m(x)), ort_run(src.read_bytes(), {"x": x})):
        assert_close(a, e, "npz module")
    back = tmp_path / "back.onnx"
    assert main(["convert", str(npz), str(back)]) == 0
    printed = capsys.readouterr().out
    diffs = [float(d) for d in re.findall(r"max \|onnxruntime - rnnkit\| of \S+: (\S+)", printed)]
    assert "layer 1: LSTM node" in printed and len(diffs) == 3 and max(diffs) < TOL, printed
    for a, e in zip(ort_run(onnx.load(str(back)), {"x": x}), ort_run(src.read_bytes(), {"x": x})):
        assert_close(a, e, "back to ONNX")
    assert main(["convert", str(src), str(tmp_path / "x.txt")]) == 1
    assert "expected model.onnx out.npz or in.npz model.onnx" in capsys.readouterr().err

"""rnnkit.onnx against onnxruntime on graphs built with onnx.helper, and round trips.

The graphs carry the attributes torch never writes (reverse, layout 1, linear_before_reset 0,
clip, sequence_lens, initial states, no bias) and each refused one. Outputs and final states must
equal onnxruntime's to 1e-5 (float32; onnxruntime's CPU LSTM / GRU / RNN run float32 only and
refuse layout 1, so a layout-1 graph is checked against its layout-0 twin). Round trips rnnkit
-> ONNX -> onnxruntime equal rnnkit. Models torch.onnx.export writes: test_onnx_torch.py.
"""

import re
import subprocess
import sys
import zlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import rnnkit  # noqa: E402
import rnnkit.onnx as ronnx  # noqa: E402
from rnnkit.__main__ import main  # noqa: E402

TOL = 1e-5
T, B, I, H = 6, 3, 4, 5
LENGTHS = np.array([4, 6, 1])  # unsorted, includes T and 1
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def assert_close(actual, expected, what, tol=TOL):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


def ort_run(model, feed):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    data = model if isinstance(model, bytes) else model.SerializeToString()
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def flat(result):
    """(out, state) -> [out, h_n(, c_n)]."""
    out, state = result
    return [out, *(state if isinstance(state, tuple) else (state,))]


def states_for(op, L, D, rng, dtype=np.float32):
    n = 2 if op == "LSTM" else 1
    return [rng.standard_normal((L * D, B, H)).astype(dtype) for _ in range(n)]


def call_state(op, states):
    if not states:
        return None
    return tuple(states) if op == "LSTM" else states[0]


# ----------------------------------------------------------------------------- onnx.helper graphs


def make_node_model(
    op,
    D,
    rng,
    *,
    direction=None,
    layout=0,
    attrs=None,
    bias=True,
    lengths=False,
    states=False,
    peepholes=False,
    dtype=np.float32,
):
    """One recurrent node with random weights. Inputs: x, then (if asked) lengths, h0, c0."""
    G = GATES[op]
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    direction = direction or ("bidirectional" if D == 2 else "forward")
    inits = [
        numpy_helper.from_array((0.5 * rng.standard_normal((D, G * H, I))).astype(dtype), "W"),
        numpy_helper.from_array((0.5 * rng.standard_normal((D, G * H, H))).astype(dtype), "R"),
    ]
    x_dims = [B, T, I] if layout else [T, B, I]
    s_dims = [B, D, H] if layout else [D, B, H]
    inputs = [helper.make_tensor_value_info("x", elem, x_dims)]
    ins = ["x", "W", "R", ""]
    if bias:
        inits.append(numpy_helper.from_array((0.5 * rng.standard_normal((D, 2 * G * H))).astype(dtype), "B"))
        ins[3] = "B"
    ins.append("")
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, [B]))
        ins[4] = "lengths"
    n_states = 2 if op == "LSTM" else 1
    for s in ("h0", "c0")[:n_states]:
        if states:
            inputs.append(helper.make_tensor_value_info(s, elem, s_dims))
        ins.append(s if states else "")
    if peepholes:
        inits.append(numpy_helper.from_array(rng.standard_normal((D, 3 * H)).astype(dtype), "P"))
        ins.append("P")
    while not ins[-1]:
        ins.pop()
    outs = ["Y", "Y_h", "Y_c"][: 1 + n_states]
    node = helper.make_node(
        op, ins, outs, name="rec", hidden_size=H, direction=direction, layout=layout, **(attrs or {})
    )
    y_dims = [B, T, D, H] if layout else [T, D, B, H]
    outputs = [helper.make_tensor_value_info("Y", elem, y_dims)]
    outputs += [helper.make_tensor_value_info(o, elem, s_dims) for o in outs[1:]]
    graph = helper.make_graph([node], "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def node_feed(op, D, rng, *, layout=0, lengths=False, states=False):
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    feed = {"x": x}
    if lengths:
        feed["lengths"] = LENGTHS.astype(np.int32)
    if states:
        for s in ("h0", "c0")[: 2 if op == "LSTM" else 1]:
            feed[s] = rng.standard_normal((D, B, H)).astype(np.float32)
    return feed


def onnx_outputs(op, results, D, layout=0):
    """rnnkit's (out (T, B, D*H), h_n (D, B, H)...) in ONNX's layout 0 (Y [T, D, B, H])."""
    out, *finals = flat(results)
    if layout:
        out = out.transpose(1, 0, 2)
    Y = out.reshape(T, B, D, H).transpose(0, 2, 1, 3)
    return [Y, *finals]


NODE_CASES = [
    (op, direction, extra)
    for op in ("LSTM", "GRU", "RNN")
    for direction in ("forward", "reverse", "bidirectional")
    for extra in ("plain", "lengths_states")
] + [
    ("GRU", "forward", "lbr0"),
    ("GRU", "bidirectional", "lbr0_lengths"),
    ("GRU", "reverse", "lbr1"),
    ("RNN", "bidirectional", "relu"),
    ("LSTM", "bidirectional", "nobias"),
    ("LSTM", "forward", "default_activations"),
    # clip: onnxruntime bounds every activation's input (GRU: n's whole argument)
    ("LSTM", "forward", "clip"),
    ("LSTM", "bidirectional", "clip_lengths_states"),
    ("GRU", "forward", "lbr0_clip"),
    ("GRU", "bidirectional", "lbr1_clip_lengths"),
    ("GRU", "reverse", "lbr0_clip_states"),
    ("RNN", "reverse", "clip_lengths"),
    ("RNN", "bidirectional", "relu_clip"),
    # input_forget: f = 1 - i, the forget block's weights unused
    ("LSTM", "forward", "coupled"),
    ("LSTM", "bidirectional", "coupled_clip_lengths_states"),
    ("LSTM", "reverse", "coupled_lengths"),
    # peepholes P (ONNX's order i, o, f; o sees c_t), with and without clip and input_forget
    ("LSTM", "forward", "peep"),
    ("LSTM", "bidirectional", "peep_clip_lengths_states"),
    ("LSTM", "reverse", "peep_coupled_lengths"),
    ("LSTM", "forward", "peep_coupled_clip_states"),
]
CLIP = 0.75  # cuts a good part of the pre-activations of these weights (0.5 * N(0, 1))


@pytest.mark.parametrize("op, direction, extra", NODE_CASES)
def test_helper_node_matches_onnxruntime(op, direction, extra):
    rng = np.random.default_rng(zlib.crc32(f"{op} {direction} {extra}".encode()))
    D = 2 if direction == "bidirectional" else 1
    attrs = {}
    if extra.startswith("lbr"):
        attrs["linear_before_reset"] = int(extra[3])
    if extra.startswith("relu"):
        attrs["activations"] = ["Relu", "Relu"]
    if "clip" in extra:
        attrs["clip"] = CLIP
    if "coupled" in extra:
        attrs["input_forget"] = 1
    if extra == "default_activations":
        attrs["activations"] = ["Sigmoid", "Tanh", "Tanh"]
    with_lengths = "lengths" in extra
    with_states = "states" in extra
    model = make_node_model(
        op,
        D,
        rng,
        direction=direction,
        attrs=attrs,
        bias=extra != "nobias",
        lengths=with_lengths,
        states=with_states,
        peepholes="peep" in extra,
    )
    feed = node_feed(op, D, rng, lengths=with_lengths, states=with_states)
    expected = ort_run(model, feed)
    [(name, m)] = ronnx.load_nodes(model)
    assert name == "rec"
    if op == "GRU":
        inner = m.rnn if direction == "reverse" else m
        assert inner.reset_after == bool(attrs.get("linear_before_reset", 0))
    assert (m.rnn if direction == "reverse" else m).clip == attrs.get("clip")
    if op == "LSTM":
        assert (m.rnn if direction == "reverse" else m).input_forget == bool(attrs.get("input_forget"))
        assert (m.rnn if direction == "reverse" else m).peepholes == ("peep" in extra)
    state = call_state(op, [feed[s] for s in ("h0", "c0") if s in feed])
    results = m(feed["x"], state, feed.get("lengths"))
    for a, e, what in zip(onnx_outputs(op, results, D), expected, ("Y", "Y_h", "Y_c")):
        assert_close(a, e, f"{op} {direction} {extra} {what}")
    # load() gives the same module for a one-node graph
    again = ronnx.load(model)
    for a, e in zip(flat(again(feed["x"], state, feed.get("lengths"))), flat(results)):
        np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_layout_1_equals_layout_0_in_onnxruntime(op):
    """onnxruntime refuses layout 1 on the CPU: the same weights in a layout-0 graph are the
    reference, fed the transposed input and states."""
    D = 2
    model1 = make_node_model(op, D, np.random.default_rng(7), layout=1, lengths=True, states=True)
    model0 = make_node_model(op, D, np.random.default_rng(7), layout=0, lengths=True, states=True)
    feed = node_feed(op, D, np.random.default_rng(8), lengths=True, states=True)
    expected = ort_run(model0, feed)
    m = ronnx.load(model1)
    assert m.batch_first
    x_bt = np.ascontiguousarray(feed["x"].transpose(1, 0, 2))
    state = call_state(op, [feed[s] for s in ("h0", "c0") if s in feed])
    results = m(x_bt, state, LENGTHS)
    for a, e in zip(onnx_outputs(op, results, D, layout=1), expected):
        assert_close(a, e, f"{op} layout 1")


# ----------------------------------------------------------------------------- refused attributes


REFUSED = [
    ("LSTM", {"attrs": {"clip": 0.0}}, "attribute 'clip' = 0.0"),
    ("GRU", {"attrs": {"clip": -1.5}}, "attribute 'clip' = -1.5"),
    ("RNN", {"attrs": {"clip": float("inf")}}, "attribute 'clip' = inf"),
    ("LSTM", {"attrs": {"input_forget": 2}}, "attribute 'input_forget' = 2"),
    ("LSTM", {"attrs": {"activations": ["HardSigmoid", "Tanh", "Tanh"]}}, "attribute 'activations'"),
    ("GRU", {"attrs": {"activations": ["Sigmoid", "Relu"]}}, "attribute 'activations'"),
    ("RNN", {"attrs": {"activations": ["Sigmoid"]}}, "attribute 'activations'"),
    (
        "RNN",
        {"attrs": {"activations": ["LeakyRelu"], "activation_alpha": [0.1]}},
        "attribute 'activation_alpha' = [0.1",
    ),
    (
        "GRU",
        {"attrs": {"activations": ["ScaledTanh", "Tanh"], "activation_beta": [2.0]}},
        "attribute 'activation_beta' = [2.0]",
    ),
]


@pytest.mark.parametrize("op, kw, message", REFUSED)
def test_refused_attribute_names_node_and_attribute(op, kw, message):
    model = make_node_model(op, 1, np.random.default_rng(10), **kw)
    for fn in (ronnx.load, ronnx.load_nodes):
        with pytest.raises(ValueError) as info:
            fn(model)
        text = str(info.value)
        assert text.startswith(f"{op} node 'rec': "), text
        assert message in text and "not supported" in text, text


def test_peepholes_computed_or_misshapen_are_refused():
    rng = np.random.default_rng(12)
    model = make_node_model("LSTM", 1, rng, peepholes=True)
    model.graph.input.append(helper.make_tensor_value_info("P2", TensorProto.FLOAT, [1, 3 * H]))
    model.graph.node[0].input[7] = "P2"
    with pytest.raises(ValueError, match=r"LSTM node 'rec': input 'P' \('P2'\) computed in the graph"):
        ronnx.load(model)
    model = make_node_model("LSTM", 1, rng, peepholes=True)
    model.graph.initializer[-1].CopyFrom(numpy_helper.from_array(np.zeros((1, 2 * H), np.float32), "P"))
    with pytest.raises(
        ValueError, match=r"LSTM node 'rec': input 'P': expected shape \[1, 15\], got \[1, 10\]"
    ):
        ronnx.load(model)


def test_refused_computed_weights_and_constant_state():
    rng = np.random.default_rng(11)
    model = make_node_model("GRU", 1, rng)
    model.graph.input.append(helper.make_tensor_value_info("W2", TensorProto.FLOAT, [1, 3 * H, I]))
    model.graph.node[0].input[1] = "W2"
    with pytest.raises(ValueError, match=r"GRU node 'rec': input 'W' \('W2'\) computed in the graph"):
        ronnx.load(model)
    model = make_node_model("GRU", 1, rng)
    model.graph.initializer.append(numpy_helper.from_array(np.ones((1, B, H), np.float32), "h_const"))
    model.graph.node[0].input.extend(["", "h_const"])
    for fn in (ronnx.load, ronnx.load_nodes):
        with pytest.raises(ValueError, match="GRU node 'rec': a constant non-zero input 'initial_h'"):
            fn(model)
    model = make_node_model("LSTM", 1, rng)
    model.graph.initializer.append(numpy_helper.from_array(np.full(B, 2, np.int32), "lens_const"))
    model.graph.node[0].input.extend(["lens_const"])
    for fn in (ronnx.load, ronnx.load_nodes):
        with pytest.raises(ValueError, match="LSTM node 'rec': a constant input 'sequence_lens'"):
            fn(model)


def test_two_independent_nodes_are_not_one_stack():
    rng = np.random.default_rng(12)
    a = make_node_model("GRU", 1, rng)
    node = helper.make_node("LSTM", ["x", "W4", "R4"], ["Y2"], name="other", hidden_size=H)
    a.graph.node.append(node)
    a.graph.initializer.extend(
        [
            numpy_helper.from_array(rng.standard_normal((1, 4 * H, I)).astype(np.float32), "W4"),
            numpy_helper.from_array(rng.standard_normal((1, 4 * H, H)).astype(np.float32), "R4"),
        ]
    )
    with pytest.raises(ValueError, match="do not form one stack.*use load_nodes"):
        ronnx.load(a)
    names = [(n, type(m).__name__) for n, m in ronnx.load_nodes(a)]
    assert names == [("rec", "GRU"), ("other", "LSTM")]


def two_layer_model(glue):
    """Two bidirectional GRU nodes, layer 1 reading layer 0's Y through ``glue`` (a list of
    (op, extra inputs, attributes))."""
    rng = np.random.default_rng(18)
    D, G = 2, 3
    inits = [numpy_helper.from_array(np.array([0, 0, -1], np.int64), "flat")]
    nodes = []
    prev = "x"
    for layer, n_in in enumerate((I, D * H)):
        W, R = f"W{layer}", f"R{layer}"
        inits.append(numpy_helper.from_array(rng.standard_normal((D, G * H, n_in)).astype(np.float32), W))
        inits.append(numpy_helper.from_array(rng.standard_normal((D, G * H, H)).astype(np.float32), R))
        Y = f"Y{layer}"
        nodes.append(
            helper.make_node(
                "GRU", [prev, W, R], [Y], name=f"gru{layer}", hidden_size=H, direction="bidirectional"
            )
        )
        prev = Y
        if layer == 0:
            for k, (op, extra, attrs) in enumerate(glue):
                nodes.append(helper.make_node(op, [prev, *extra], [f"g{k}"], **attrs))
                prev = f"g{k}"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", I])],
        [helper.make_tensor_value_info("Y1", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_stack_glue_is_checked_not_assumed():
    torch_glue = [("Transpose", [], {"perm": [0, 2, 1, 3]}), ("Reshape", ["flat"], {})]
    model = two_layer_model(torch_glue)
    m = ronnx.load(model)
    assert m.num_layers == 2 and m.bidirectional and not m.reset_after  # linear_before_reset 0
    x = np.random.default_rng(19).standard_normal((T, B, I)).astype(np.float32)
    [Y1] = ort_run(model, {"x": x})
    assert_close(m(x)[0].reshape(T, B, 2, H).transpose(0, 2, 1, 3), Y1, "textbook GRU stack")
    with pytest.raises(ValueError, match=r"GRU node 'gru1': its input is the previous layer's Y rearranged"):
        ronnx.load(two_layer_model([("Reshape", ["flat"], {})]))  # [T, D, B, H] merged without transposing
    with pytest.raises(ValueError, match=r"GRU node 'gru1': its input goes through a Relu node"):
        ronnx.load(two_layer_model([*torch_glue, ("Relu", [], {})]))
    assert [n for n, _ in ronnx.load_nodes(two_layer_model([("Reshape", ["flat"], {})]))] == ["gru0", "gru1"]


def test_export_refuses_projection_and_other_modules():
    with pytest.raises(ValueError, match="proj_size = 2 has no ONNX form"):
        ronnx.to_model(rnnkit.nn.LSTM(I, H, proj_size=2))
    with pytest.raises(TypeError, match="module: expected an rnnkit.nn RNN, LSTM or GRU"):
        ronnx.to_model(rnnkit.nn.Linear(I, H))
    with pytest.raises(TypeError, match="path_or_model: expected a path"):
        ronnx.load(3)


# ----------------------------------------------------------------------------- export round trips

EXPORT_CASES = [
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(batch_first=True)),
    ("GRU", dict(num_layers=2, reset_after=False)),
    ("GRU", dict(bidirectional=True)),
    ("RNN", dict(num_layers=2, nonlinearity="relu", bidirectional=True)),
    ("RNN", dict(bias=False)),
    # small bounds: the modules' initial weights make small pre-activations
    ("LSTM", dict(bidirectional=True, clip=0.3)),
    ("GRU", dict(num_layers=2, reset_after=False, clip=0.3)),
    ("GRU", dict(clip=0.2)),
    ("RNN", dict(nonlinearity="relu", clip=0.2)),
    ("LSTM", dict(num_layers=2, input_forget=True)),
    ("LSTM", dict(bidirectional=True, input_forget=True, clip=0.3)),
    ("LSTM", dict(peepholes=True)),
    ("LSTM", dict(num_layers=2, bidirectional=True, peepholes=True, input_forget=True, clip=0.3)),
]


@pytest.mark.parametrize("op, kw", EXPORT_CASES)
@pytest.mark.parametrize("extra", [False, True])
def test_export_runs_in_onnxruntime_with_rnnkits_outputs(op, kw, extra, tmp_path):
    rng = np.random.default_rng(13)
    m = getattr(rnnkit.nn, op)(I, H, seed=1, **kw).eval()
    D, L = m.num_directions, m.num_layers
    path = tmp_path / "m.onnx"
    ronnx.save(m, path, lengths=extra, initial_state=extra)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    x = rng.standard_normal((B, T, I) if m.batch_first else (T, B, I)).astype(np.float32)
    feed = {"x": x}
    states = states_for(op, L, D, rng) if extra else []
    if extra:
        feed["lengths"] = LENGTHS.astype(np.int32)
        feed.update(zip(("h0", "c0"), states))
    ours = flat(m(x, call_state(op, states), LENGTHS if extra else None))
    expected = ort_run(model, feed)
    assert [o.name for o in model.graph.output] == ["y", "h_n", "c_n"][: len(ours)]
    for a, e, what in zip(ours, expected, ("y", "h_n", "c_n")):
        assert_close(e, a, f"{op} {kw} {what}")
    # and back: importing the exported graph gives the same module
    back = ronnx.load(model)
    for a, e in zip(flat(back(x, call_state(op, states), LENGTHS if extra else None)), ours):
        np.testing.assert_array_equal(a, e)


def test_export_float64_round_trip():
    """onnxruntime runs no float64 RNN: the float64 graph is checked by onnx and read back."""
    m = rnnkit.nn.GRU(I, H, num_layers=2, bidirectional=True, reset_after=False, dtype=np.float64, seed=4)
    model = ronnx.to_model(m, lengths=True, initial_state=True)
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE
    back = ronnx.load(model)
    assert back.dtype == np.float64 and not back.reset_after
    for (name, a), (_, b) in zip(m.named_parameters(), back.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_export_reversed():
    rng = np.random.default_rng(14)
    m = ronnx.Reversed(rnnkit.nn.LSTM(I, H, num_layers=2, seed=2)).eval()
    model = ronnx.to_model(m, lengths=True)
    recurrent = [n for n in model.graph.node if n.op_type == "LSTM"]
    assert len(recurrent) == 2
    for n in recurrent:
        assert {a.name: helper.get_attribute_value(a) for a in n.attribute}["direction"] == b"reverse"
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    expected = ort_run(model, {"x": x, "lengths": LENGTHS.astype(np.int32)})
    for a, e in zip(flat(m(x, None, LENGTHS)), expected):
        assert_close(e, a, "Reversed LSTM")
    assert isinstance(ronnx.load(model), ronnx.Reversed)


@pytest.mark.parametrize("many_to_many", [False, True])
def test_export_sequence_classifier_as_one_graph(many_to_many):
    rng = np.random.default_rng(15)
    clf = rnnkit.models.SequenceClassifier("gru", I, H, 7, num_layers=2, many_to_many=many_to_many, seed=3)
    clf.eval()
    model = ronnx.to_model(clf, lengths=True)
    onnx.checker.check_model(model, full_check=True)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    [expected] = ort_run(model, {"x": x, "lengths": LENGTHS.astype(np.int32)})
    assert_close(expected, clf(x, None, LENGTHS), "classifier logits")
    assert isinstance(ronnx.load(model), rnnkit.nn.GRU)  # the graph's recurrent stack


# ----------------------------------------------------------------------------- converter, imports


def test_convert_cli_one_node_graph_and_refusal(tmp_path, capsys):
    rng = np.random.default_rng(20)
    src = tmp_path / "rev.onnx"
    onnx.save(make_node_model("GRU", 1, rng, direction="reverse", lengths=True, states=True), str(src))
    assert main(["convert", str(src), str(tmp_path / "rev.npz")]) == 0
    printed = capsys.readouterr().out
    assert "layer 0: GRU node 'rec': GRU(4, 5, reset_after=False), reverse, float32" in printed
    diffs = [float(d) for d in re.findall(r"max \|onnxruntime - rnnkit\| of (?:Y|Y_h): (\S+)", printed)]
    assert len(diffs) == 2 and max(diffs) < TOL, printed
    assert isinstance(ronnx.load_npz(tmp_path / "rev.npz"), ronnx.Reversed)
    onnx.save(
        make_node_model("LSTM", 1, rng, attrs={"activations": ["HardSigmoid", "Tanh", "Tanh"]}), str(src)
    )
    assert main(["convert", str(src), str(tmp_path / "act.npz")]) == 1
    err = capsys.readouterr().err
    assert "LSTM node 'rec': attribute 'activations' = [" in err and "HardSigmoid" in err, err
    assert "is not supported" in err, err
    assert not (tmp_path / "act.npz").exists()


def test_import_rnnkit_does_not_import_onnx():
    code = "import sys, rnnkit, rnnkit.onnx; assert 'onnx' not in sys.modules, 'onnx imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_clip_survives_npz_and_convert(tmp_path, capsys):
    src = tmp_path / "clip.onnx"
    onnx.save(make_node_model("LSTM", 1, np.random.default_rng(21), attrs={"clip": CLIP}), str(src))
    assert main(["convert", str(src), str(tmp_path / "clip.npz")]) == 0
    printed = capsys.readouterr().out
    assert f"LSTM(4, 5, clip={CLIP})" in printed
    diffs = [float(d) for d in re.findall(r"max \|onnxruntime - rnnkit\| of (?:Y|Y_h|Y_c): (\S+)", printed)]
    assert len(diffs) == 3 and max(diffs) < TOL, printed
    assert ronnx.load_npz(tmp_path / "clip.npz").clip == CLIP

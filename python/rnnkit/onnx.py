"""ONNX import and export of recurrent modules, exact: gate orders, directions, layouts, lengths.

``module = rnnkit.onnx.load("model.onnx")`` gives the rnnkit module of a graph whose recurrent
nodes form one stack (one LSTM / GRU / RNN node, or the chain ``torch.onnx.export`` writes for a
multi-layer or bidirectional ``torch.nn`` module, with its Transpose / Reshape / Squeeze glue);
``load_nodes`` gives every recurrent node of any graph as ``(node_name, module)`` pairs.
``rnnkit.onnx.save(module, "model.onnx")`` (``to_model`` for the ModelProto) writes an RNN /
LSTM / GRU module, or a ``SequenceRegressor`` / ``SequenceClassifier``, as one graph.

The modules compute what ``torch.nn`` computes: out (T, B, D*H) (or (B, T, D*H) batch-first),
h_n (L*D, B, H). ONNX's own layout is Y [T, D, B, H] (layout 0) or [B, T, D, H] (layout 1),
Y_h [D, B, H] (layout 1: [B, D, H]); weights W [D, G*H, I], R [D, G*H, H], B [D, 2*G*H] with
the gate blocks in ONNX's order (LSTM i, o, f, c; GRU z, r, h), which rnnkit's order (LSTM i, f,
g, o; GRU r, z, n) is a permutation of. ``clip`` maps to the modules' ``clip`` (the fused
kernels bound every activation's input, as onnxruntime does), LSTM ``input_forget`` to the
LSTM's ``input_forget`` (f = 1 - i), LSTM peepholes ``P`` [D, 3*H] (ONNX's order i, o, f) to
the LSTM's ``peepholes=True`` and its ``weight_peep_l{k}`` (3, H) (rnnkit's order i, f, o).
Attributes rnnkit does not compute (activations other than the defaults and the RNN's Relu,
``activation_alpha`` / ``activation_beta``) are refused with a ValueError naming the node and
the attribute, never approximated. See docs/interop-onnx.md.

The ``onnx`` package (and ``onnxruntime`` for the converter's check) is optional: it is
imported by the functions that need it, so ``import rnnkit`` never loads it.

Shape letters: T time steps, B batch, I input size, H hidden size, G gate blocks (LSTM 4, GRU 3,
RNN 1), D directions, L layers, O outputs of a head.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _validate as v
from ._cells import CELL_NAMES, CELLS, Cell
from .models import SequenceRegressor
from .nn import GRU, LSTM, RNN, Module, module_class
from .nn.recurrent import _RNNBase

__all__ = ["Reversed", "load", "load_nodes", "to_model", "save", "save_npz", "load_npz", "convert"]

# ONNX's op types are torch.nn's class names (LSTM, GRU, RNN).
_OP_CELLS: dict[str, Cell] = {c.torch_name: c for c in CELLS.values()}
# The ONNX gate order of each family, written in the letters of rnnkit's order (Cell.gate_order):
# LSTM i, o, f, c(= g); GRU z, r, h(= n); RNN its one block.
_ONNX_GATES = {"ifgo": "iofg", "rzn": "zrn", "h": "h"}
_CLASSES = {module_class(n).__name__: module_class(n) for n in CELL_NAMES}
# Default activations of one direction; the RNN also runs Relu (nonlinearity="relu").
_DEFAULT_ACTIVATIONS = {"ifgo": ("sigmoid", "tanh", "tanh"), "rzn": ("sigmoid", "tanh"), "h": ("tanh",)}
_ATTRIBUTES = {"hidden_size", "direction", "layout", "activations", "activation_alpha", "activation_beta"}
_EXTRA_ATTRIBUTES = {"ifgo": {"clip", "input_forget"}, "rzn": {"clip", "linear_before_reset"}, "h": {"clip"}}
_OPSET = 17  # LSTM / GRU / RNN have had `layout` since opset 14; Squeeze takes axes as an input


def _gate_index(cell: Cell, to_onnx: bool) -> list[int]:
    """Block indices: rnnkit block j is ONNX block idx[j] (to_onnx=False), or the inverse."""
    onnx_order, ours = _ONNX_GATES[cell.gate_order], cell.gate_order
    if to_onnx:
        return [ours.index(g) for g in onnx_order]
    return [onnx_order.index(g) for g in ours]


def _permute(a: np.ndarray, cell: Cell, to_onnx: bool) -> np.ndarray:
    """Reorder the G row blocks of a (G*H, ...) array between ONNX's and rnnkit's gate order."""
    G = cell.gates
    blocks = a.reshape(G, a.shape[0] // G, *a.shape[1:])
    return np.ascontiguousarray(blocks[_gate_index(cell, to_onnx)].reshape(a.shape))


# ----------------------------------------------------------------------------- the reverse wrapper


class Reversed(Module):
    """A one-direction rnnkit module run over each sequence backwards: ONNX's
    ``direction = "reverse"``. With lengths, each sequence b is reversed within its first
    lengths[b] steps (what the reverse half of a bidirectional module does), so padded steps stay
    zero. Same call and results layout as the wrapped module (child ``rnn``):
    ``out, state = m(x, state=None, lengths=None)``; ``dx, dstate = m.backward(dout, dstate=None)``.
    """

    rnn: RNN | LSTM | GRU

    def __init__(self, rnn: RNN | LSTM | GRU) -> None:
        if not isinstance(rnn, (RNN, LSTM, GRU)) or rnn.bidirectional:
            raise TypeError(f"rnn: expected a one-direction rnnkit.nn RNN, LSTM or GRU, got {rnn!r}")
        self.rnn = rnn
        self.dtype = rnn.dtype
        self.training = rnn.training

    def _flip(self, a: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
        """a in the module's layout, each sequence reversed within its length."""
        unbatched = a.ndim == 2
        axis = 0 if unbatched or not self.rnn.batch_first else 1
        if lengths is None:
            return np.ascontiguousarray(np.flip(a, axis))
        T = a.shape[axis]
        t = np.arange(T)[:, None]
        idx = np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # (T, B)
        if axis == 1:
            idx = idx.T
        return np.ascontiguousarray(np.take_along_axis(a, idx[..., None], axis=axis))

    def _lengths(self, x: Any, lengths: Any) -> np.ndarray | None:
        if lengths is None:
            return None
        x = v.as_array("x", x)
        if x.ndim != 3:
            raise ValueError(f"x: expected 3 dimensions with lengths, got shape {x.shape}")
        T, B = (x.shape[1], x.shape[0]) if self.rnn.batch_first else x.shape[:2]
        return v.lengths_array(lengths, T, B)

    def forward(self, x: npt.ArrayLike, state: Any = None, lengths: npt.ArrayLike | None = None) -> Any:
        """As the wrapped module's forward, over each sequence backwards: x (T, B, I) (or
        (B, T, I) batch-first), lengths (B,) or None; returns ``(out, final state)``, out
        (T, B, H) like the module's; the final state is the state after the sequence's first
        step."""
        self._cache = None
        lens = self._lengths(x, lengths)
        out, final = self.rnn(self._flip(v.as_array("x", x), lens), state, lens)
        if self.training:
            self._cache = (lens,)
        return self._flip(out, lens), final

    def backward(self, dout: npt.ArrayLike | None, dstate: Any = None) -> Any:
        """As the wrapped module's backward: dout (T, B, H) like out, or None; returns
        ``(dx, initial-state gradients)``, dx (T, B, I) like x."""
        (lens,) = self._need_cache()
        d = None if dout is None else self._flip(v.as_array("dout", dout), lens)
        dx, d0 = self.rnn.backward(d, dstate)
        return self._flip(dx, lens), d0

    def __repr__(self) -> str:
        return f"Reversed({self.rnn!r})"


# ----------------------------------------------------------------------------- reading a graph


@dataclass
class _Node:
    """One recurrent node, checked: its family, sizes and weights in rnnkit's layout."""

    node: Any
    where: str  # "LSTM node '/LSTM'" for messages
    cell: Cell
    D: int
    H: int
    I: int
    reverse: bool  # direction "reverse"
    layout: int
    options: dict
    dtype: np.dtype
    weights: list = field(default_factory=list)  # per direction (W_ih, W_hh, b_ih or None, b_hh)
    lengths: str = ""  # the sequence_lens input's name ("" absent)
    states: tuple = ()  # the initial_h (, initial_c) inputs' names ("" absent)
    peep: list = field(default_factory=list)  # LSTM peepholes per direction (3, H), rows i, f, o


class _Graph:
    """A graph's constants and producers, for tracing values through it."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.inputs = [i.name for i in graph.input if i.name not in self.consts]
        self.producer: dict[str, Any] = {}
        for node in graph.node:
            for o in node.output:
                self.producer[o] = node
            if node.op_type == "Constant" and node.output:
                value = _constant_value(node)
                if value is not None:
                    self.consts[node.output[0]] = value

    def attrs(self, node: Any) -> dict[str, Any]:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)

    def is_zero(self, name: str) -> bool:
        """True for an all-zero constant, or one broadcast by Expand, or a zero ConstantOfShape."""
        c = self.consts.get(name)
        if c is not None:
            return not np.any(c)
        node = self.producer.get(name)
        if node is None:
            return False
        if node.op_type == "Expand":
            return self.is_zero(node.input[0])
        if node.op_type == "ConstantOfShape":
            value = self.attrs(node).get("value")
            if value is None:
                return True
            from onnx import numpy_helper

            return not np.any(numpy_helper.to_array(value))
        return False


def _constant_value(node: Any) -> np.ndarray | None:
    from onnx import helper, numpy_helper

    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if a.name == "value":
            return numpy_helper.to_array(value)
        if a.name in ("value_float", "value_floats", "value_int", "value_ints"):
            return np.array(value)
    return None


def _refuse(where: str, what: str, why: str) -> ValueError:
    return ValueError(f"{where}: {what} is not supported: {why}; rnnkit refuses rather than approximates")


def _read_node(g: _Graph, node: Any) -> _Node:
    """Check one LSTM / GRU / RNN node against what rnnkit computes and read its weights."""
    cell = _OP_CELLS[node.op_type]
    where = f"{node.op_type} node {node.name!r}"
    attrs = g.attrs(node)
    allowed = _ATTRIBUTES | _EXTRA_ATTRIBUTES[cell.gate_order]
    for name in attrs:
        if name not in allowed:
            raise _refuse(where, f"attribute {name!r}", "it is not an attribute of ONNX's " + node.op_type)
    options: dict[str, Any] = {}
    if "clip" in attrs:
        clip = float(attrs["clip"])
        if not (np.isfinite(clip) and clip > 0):
            raise _refuse(where, f"attribute 'clip' = {attrs['clip']}", "a cell clip is a bound > 0")
        options["clip"] = clip
    if "input_forget" in attrs:
        coupled = int(attrs["input_forget"])
        if coupled not in (0, 1):
            raise _refuse(where, f"attribute 'input_forget' = {coupled}", "ONNX defines 0 and 1")
        if coupled:
            options["input_forget"] = True
    for name in ("activation_alpha", "activation_beta"):
        if name in attrs:
            raise _refuse(
                where, f"attribute {name!r} = {list(attrs[name])}", "rnnkit's activations take no parameters"
            )
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else str(direction)
    if direction not in ("forward", "reverse", "bidirectional"):
        raise _refuse(
            where, f"attribute 'direction' = {direction!r}", "ONNX defines forward, reverse, bidirectional"
        )
    D = 2 if direction == "bidirectional" else 1
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise _refuse(where, f"attribute 'layout' = {layout}", "ONNX defines layouts 0 and 1")

    default = _DEFAULT_ACTIVATIONS[cell.gate_order]
    if "activations" in attrs:
        acts = tuple(
            a.decode().lower() if isinstance(a, bytes) else str(a).lower() for a in attrs["activations"]
        )
        relu = ("relu",) * D
        if "nonlinearity" in cell.options and acts == relu:
            options["nonlinearity"] = "relu"
        elif acts != default * D:
            raise _refuse(
                where,
                f"attribute 'activations' = {list(attrs['activations'])}",
                f"rnnkit computes the default activations {list(default) * D}"
                + (" or Relu" if "nonlinearity" in cell.options else ""),
            )
    if "reset_after" in cell.options:
        lbr = int(attrs.get("linear_before_reset", 0))
        if lbr not in (0, 1):
            raise _refuse(where, f"attribute 'linear_before_reset' = {lbr}", "ONNX defines 0 and 1")
        options["reset_after"] = bool(lbr)

    inputs = list(node.input) + [""] * (8 - len(node.input))
    arrays: list[np.ndarray | None] = []
    for k, name in ((1, "W"), (2, "R"), (3, "B")):
        if not inputs[k]:
            arrays.append(None)
            continue
        a = g.const(inputs[k])
        if a is None:
            raise _refuse(
                where, f"input {name!r} ({inputs[k]!r}) computed in the graph", "weights must be constants"
            )
        arrays.append(a)
    W, R, Bias = arrays
    if W is None or R is None:
        raise ValueError(f"{where}: inputs 'W' and 'R' are required by ONNX, got {inputs[1:3]}")
    G = cell.gates
    if W.ndim != 3 or W.shape[0] != D or W.shape[1] % G:
        raise ValueError(f"{where}: input 'W': expected shape [D={D}, {G}*H, I], got {list(W.shape)}")
    H, I = W.shape[1] // G, W.shape[2]
    if int(attrs.get("hidden_size", H)) != H:
        raise ValueError(f"{where}: attribute 'hidden_size' = {attrs['hidden_size']} but 'W' has H = {H}")
    if R.shape != (D, G * H, H):
        raise ValueError(f"{where}: input 'R': expected shape {[D, G * H, H]}, got {list(R.shape)}")
    if Bias is not None and Bias.shape != (D, 2 * G * H):
        raise ValueError(f"{where}: input 'B': expected shape {[D, 2 * G * H]}, got {list(Bias.shape)}")
    dtype = np.dtype(W.dtype)
    if dtype not in (np.float32, np.float64):
        raise _refuse(where, f"weights of dtype {dtype}", "rnnkit computes in float32 and float64")
    weights = []
    for d in range(D):
        b_ih = b_hh = None
        if Bias is not None:
            b_ih = _permute(Bias[d, : G * H], cell, False)
            b_hh = _permute(Bias[d, G * H :], cell, False)
        weights.append((_permute(W[d], cell, False), _permute(R[d], cell, False), b_ih, b_hh))
    peep = []
    if cell.has_cell_state and inputs[7]:
        P = g.const(inputs[7])
        if P is None:
            raise _refuse(
                where, f"input 'P' ({inputs[7]!r}) computed in the graph", "weights must be constants"
            )
        if P.shape != (D, 3 * H):
            raise ValueError(f"{where}: input 'P': expected shape {[D, 3 * H]}, got {list(P.shape)}")
        options["peepholes"] = True
        # ONNX's rows i, o, f -> rnnkit's i, f, o
        peep = [np.ascontiguousarray(P[d].reshape(3, H)[[0, 2, 1]], dtype=dtype) for d in range(D)]
    n_states = len(cell.state_names)
    # what the graph fixes but a module takes as a call argument cannot be dropped silently
    if inputs[4] and g.const(inputs[4]) is not None:
        raise _refuse(
            where,
            f"a constant input 'sequence_lens' ({inputs[4]!r})",
            "rnnkit takes lengths as a call argument; make it a graph input",
        )
    for k, state in zip(range(5, 5 + n_states), cell.state_names):
        if inputs[k] and g.const(inputs[k]) is not None and not g.is_zero(inputs[k]):
            raise _refuse(
                where,
                f"a constant non-zero input 'initial_{state}' ({inputs[k]!r})",
                "rnnkit takes initial states as call arguments; make it a graph input",
            )
    return _Node(
        node,
        where,
        cell,
        D,
        H,
        I,
        direction == "reverse",
        layout,
        options,
        dtype,
        weights,
        inputs[4],
        tuple(inputs[5 : 5 + n_states]),
        peep,
    )


def _build(nodes: list[_Node], batch_first: bool) -> Module:
    """One rnnkit module for a stack of checked nodes (layer 0 first)."""
    first = nodes[0]
    cls = module_class(first.cell)
    bias = any(n.weights[0][2] is not None for n in nodes)
    m = cls(
        first.I,
        first.H,
        num_layers=len(nodes),
        bias=bias,
        batch_first=batch_first,
        bidirectional=first.D == 2,
        dtype=first.dtype,
        seed=0,
        **first.options,
    )
    state = {}
    for layer, n in enumerate(nodes):
        for d, (W_ih, W_hh, b_ih, b_hh) in enumerate(n.weights):
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            state["weight_ih" + suffix] = W_ih
            state["weight_hh" + suffix] = W_hh
            if bias:
                zeros = np.zeros(W_ih.shape[0], first.dtype)
                state["bias_ih" + suffix] = zeros if b_ih is None else b_ih
                state["bias_hh" + suffix] = zeros if b_hh is None else b_hh
            if n.peep:
                state["weight_peep" + suffix] = n.peep[d]
    m.load_state_dict(state)
    return Reversed(m) if first.reverse else m


def _model(path_or_model: Any) -> Any:
    import onnx

    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model
    if isinstance(path_or_model, (str, os.PathLike)):
        return onnx.load(os.fspath(path_or_model))
    if isinstance(path_or_model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(path_or_model))
    raise TypeError(
        f"path_or_model: expected a path, the bytes of a model or an onnx.ModelProto, "
        f"got {type(path_or_model).__name__}"
    )


def _recurrent_nodes(g: _Graph) -> list[Any]:
    return [n for n in g.graph.node if n.op_type in _OP_CELLS and n.domain in ("", "ai.onnx")]


def load_nodes(path_or_model: Any) -> list[tuple[str, Module]]:
    """Every LSTM / GRU / RNN node of an ONNX graph as ``(node_name, module)``, in graph order.

    Each module is one layer: an rnnkit.nn RNN / LSTM / GRU (bidirectional for
    ``direction = "bidirectional"``, ``batch_first`` for ``layout = 1``), or :class:`Reversed`
    around one for ``direction = "reverse"``. It returns torch.nn's layout: out (T, B, D*H) (or
    (B, T, D*H) for layout 1) and h_n (D, B, H), where the node gives Y [T, D, B, H] and Y_h
    [D, B, H]; pass the node's ``sequence_lens`` as ``lengths`` and its initial states in
    torch's (D, B, H) layout. ValueError naming the node and the attribute for what rnnkit does
    not compute (see the module docstring).
    """
    g = _Graph(_model(path_or_model).graph)
    out = []
    for node in _recurrent_nodes(g):
        n = _read_node(g, node)
        out.append((node.name, _build([n], batch_first=n.layout == 1)))
    return out


# The layout of a value between layers: a tuple of axes, each a tuple of atoms ("T", "B", "D",
# "H"); a one-direction D atom has size 1 and is ignored wherever it sits.
_Axes = tuple


def _glue_axes(g: _Graph, name: str, prev: _Node, stop: str, where: str, static: dict) -> _Axes:
    """The axes of value ``name`` computed from ``stop`` (prev's Y) through Transpose /
    Reshape / Squeeze / Identity nodes; ValueError for anything else."""
    if name == stop:
        return (("T",), ("D",), ("B",), ("H",)) if prev.layout == 0 else (("B",), ("T",), ("D",), ("H",))
    node = g.producer.get(name)
    if node is None or not node.input:
        raise ValueError(f"{where}: its input is not computed from the previous layer's output Y")
    op = node.op_type
    axes = _glue_axes(g, node.input[0], prev, stop, where, static)
    sizes = {"T": static.get("T"), "B": static.get("B"), "D": prev.D, "H": prev.H}
    attrs = g.attrs(node)

    def known(axis):
        n = 1
        for a in axis:
            size = sizes[a]
            if size is None:
                return None
            n *= size
        return n

    def const_input(k):
        if len(node.input) > k and node.input[k]:
            c = g.const(node.input[k])
            if c is None:
                raise ValueError(f"{where}: the {op} node {node.name!r} before it has a computed shape")
            return [int(i) for i in np.ravel(c)]
        return None

    if op == "Identity":
        return axes
    if op == "Transpose":
        perm = list(attrs.get("perm", reversed(range(len(axes)))))
        return tuple(axes[p] for p in perm)
    if op == "Squeeze":
        ax = const_input(1) or list(attrs.get("axes", []))
        ax = [a % len(axes) for a in ax]
        if not ax or any(known(axes[a]) != 1 for a in ax):
            raise ValueError(f"{where}: the Squeeze node {node.name!r} before it removes a non-unit axis")
        return tuple(a for i, a in enumerate(axes) if i not in ax)
    if op == "Reshape":
        shape = const_input(1)
        if shape is None or attrs.get("allowzero", 0):
            raise ValueError(f"{where}: the Reshape node {node.name!r} before it has no constant shape")
        atoms = [a for axis in axes for a in axis if not (a == "D" and prev.D == 1)]
        rest = shape.index(-1) if -1 in shape else len(shape)
        if shape.count(-1) > 1 or 0 in shape[rest:]:
            raise ValueError(
                f"{where}: the Reshape node {node.name!r} before it has an invalid shape {shape}"
            )

        def take(sizes_wanted, stream):
            """Consume atoms from the front of ``stream`` into one axis per wanted size."""
            out, pos = [], 0
            for s in sizes_wanted:
                axis: list[str] = []
                while pos < len(stream):
                    size = known(tuple(axis))
                    if size is None or size >= s:
                        break
                    axis.append(stream[pos])
                    pos += 1
                if known(tuple(axis)) != s:
                    raise ValueError(
                        f"{where}: the Reshape node {node.name!r} before it splits an axis or "
                        "reshapes by a size the graph does not fix"
                    )
                out.append(tuple(axis))
            return out, pos

        # 0s and fixed sizes before the -1 take atoms from the front, those after it from the
        # back, the -1 what is left in between
        result: list[tuple] = []
        pos = 0
        for j, s in enumerate(shape[:rest]):
            if s == 0:
                axis = tuple(a for a in axes[j] if not (a == "D" and prev.D == 1))
                if tuple(atoms[pos : pos + len(axis)]) != axis:
                    raise ValueError(f"{where}: the Reshape node {node.name!r} before it reorders the data")
                result.append(axis)
                pos += len(axis)
            else:
                [axis], used = take([s], atoms[pos:])
                result.append(axis)
                pos += used
        if rest == len(shape):
            if pos != len(atoms):
                raise ValueError(f"{where}: the Reshape node {node.name!r} before it drops data")
            return tuple(result)
        right, used = take(list(reversed(shape[rest + 1 :])), list(reversed(atoms[pos:])))
        middle = tuple(atoms[pos : len(atoms) - used])
        return tuple(result) + (middle,) + tuple(tuple(reversed(a)) for a in reversed(right))
    raise ValueError(
        f"{where}: its input goes through a {op} node ({node.name!r}) from the previous layer; "
        "only Transpose / Reshape / Squeeze / Identity are understood"
    )


def _graph_input_side(g: _Graph, first: _Node) -> tuple[str, bool]:
    """The graph input layer 0 reads and whether it is batch-major, through Identity, Cast,
    Transpose (time <-> batch) and the batch Gather torch writes to sort by length."""
    name, batch_major = first.node.input[0], first.layout == 1
    while name not in g.inputs:
        node = g.producer.get(name)
        if node is None:
            raise ValueError(f"{first.where}: its input X is neither a graph input nor computed from one")
        attrs = g.attrs(node)
        if node.op_type == "Transpose" and list(attrs.get("perm", [])) == [1, 0, 2]:
            batch_major = not batch_major
        elif node.op_type == "Gather" and int(attrs.get("axis", 0)) == (0 if batch_major else 1):
            pass  # a reordering of the batch (torch sorts by length and unsorts at the outputs)
        elif node.op_type not in ("Identity", "Cast"):
            raise ValueError(
                f"{first.where}: its input X goes through a {node.op_type} node ({node.name!r}); "
                "only Identity, Cast, Transpose and a batch Gather are understood"
            )
        name = node.input[0]
    return name, batch_major


def _check_states(g: _Graph, nodes: list[_Node]) -> None:
    """Initial states: absent or zero in every layer, or layer k reading rows [k*D, (k+1)*D) of
    one graph input (torch's h0 (L*D, B, H)) - what the module's call argument gives."""
    for s, state in enumerate(nodes[0].cell.state_names):
        onnx_name = "initial_" + state
        zero = [not n.states[s] or g.is_zero(n.states[s]) for n in nodes]
        if all(zero):
            continue
        if len(nodes) == 1:  # computed in the graph or a graph input: the call argument
            continue
        sources = set()
        for k, n in enumerate(nodes):
            node = g.producer.get(n.states[s]) if n.states[s] else None
            ok = node is not None and node.op_type == "Slice" and n.layout == 0  # [D, B, H] rows
            if node is not None and ok:
                starts, ends = g.const(node.input[1]), g.const(node.input[2])
                axes = g.const(node.input[3]) if len(node.input) > 3 and node.input[3] else np.array([0])
                ok = (
                    starts is not None
                    and ends is not None
                    and axes is not None
                    and [int(a) for a in np.ravel(axes)] == [0]
                    and int(np.ravel(starts)[0]) == k * n.D
                    and int(np.ravel(ends)[0]) == (k + 1) * n.D
                    and (len(node.input) < 5 or not node.input[4])
                )
                sources.add(node.input[0])
            if not ok:
                raise _refuse(
                    n.where,
                    f"its input {onnx_name!r}",
                    f"a stack's initial states must be zero in every layer or rows [{k * n.D}, "
                    f"{(k + 1) * n.D}) of one graph input (torch's layout, ONNX layout 0)",
                )
        if len(sources) != 1:
            raise _refuse(
                nodes[0].where, f"the stack's {onnx_name!r} inputs", "they come from several tensors"
            )


def _stack(g: _Graph) -> tuple[list[_Node], str, bool]:
    """The graph's recurrent nodes as one stack: (nodes in order, graph input, batch_major)."""
    found = _recurrent_nodes(g)
    if not found:
        raise ValueError("path_or_model: the graph has no LSTM, GRU or RNN node")
    read = [_read_node(g, n) for n in found]
    by_y = {n.node.output[0]: n for n in read if n.node.output}
    # order: layer 0 reads (something computed from) a graph input; layer k+1 reads layer k's Y
    consumers: dict[str, _Node] = {}
    firsts = []
    for n in read:
        source = _upstream_recurrent(g, n.node.input[0], by_y)
        if source is None:
            firsts.append(n)
        else:
            if source in consumers:
                raise ValueError(
                    f"path_or_model: the recurrent nodes do not form one stack ({source!r} feeds two); "
                    "use load_nodes"
                )
            consumers[source] = n
    if len(firsts) != 1:
        raise ValueError(
            f"path_or_model: the recurrent nodes do not form one stack "
            f"({len(firsts)} read the graph's inputs: {[n.node.name for n in firsts]}); use load_nodes"
        )
    nodes = [firsts[0]]
    while nodes[-1].node.output[0] in consumers:
        nodes.append(consumers[nodes[-1].node.output[0]])
    if len(nodes) != len(read):
        raise ValueError("path_or_model: the recurrent nodes do not form one stack; use load_nodes")
    first = nodes[0]
    x, batch_major = _graph_input_side(g, first)
    # a graph exported with fixed sizes (torch's dynamo exporter) reshapes by T and B themselves
    dims = [
        d.dim_value if d.dim_value > 0 else None
        for i in g.graph.input
        if i.name == x
        for d in i.type.tensor_type.shape.dim
    ]
    static = dict(zip(("B", "T") if batch_major else ("T", "B"), dims[:2])) if len(dims) == 3 else {}
    for prev, n in zip(nodes, nodes[1:]):
        for what in ("cell", "D", "H", "reverse", "options", "dtype", "lengths"):
            if getattr(n, what) != getattr(first, what):
                raise ValueError(
                    f"{n.where}: its {what} differs from layer 0's ({first.where}): "
                    "not one stack; use load_nodes"
                )
        if n.I != n.D * n.H:
            raise ValueError(f"{n.where}: input size {n.I}, expected D*H = {n.D * n.H} for a stacked layer")
        axes = _glue_axes(g, n.node.input[0], prev, prev.node.output[0], n.where, static)
        drop = prev.D == 1
        axes = tuple(tuple(a for a in ax if not (a == "D" and drop)) for ax in axes)
        axes = tuple(ax for ax in axes if ax)
        feature = ("H",) if drop else ("D", "H")
        want = (("T",), ("B",), feature) if n.layout == 0 else (("B",), ("T",), feature)
        if axes != want:
            raise ValueError(
                f"{n.where}: its input is the previous layer's Y rearranged as {axes}, not "
                f"{want} (torch's (T, B, D*H) for layout {n.layout})"
            )
    _check_states(g, nodes)
    return nodes, x, batch_major


def _upstream_recurrent(g: _Graph, name: str, by_y: dict) -> str | None:
    """The Y output name of the recurrent node that value ``name`` is computed from, if any."""
    seen, todo = set(), [name]
    while todo:
        cur = todo.pop()
        if cur in seen or not cur:
            continue
        seen.add(cur)
        if cur in by_y:
            return cur
        node = g.producer.get(cur)
        if node is not None and node.op_type not in _OP_CELLS:
            todo.extend(node.input)
    return None


def load(path_or_model: Any) -> Module:
    """The rnnkit module of an ONNX graph whose recurrent nodes form one stack.

    path_or_model: a path, a model's bytes or an ``onnx.ModelProto``. The graph holds one
    LSTM / GRU / RNN node, or the chain ``torch.onnx.export`` writes for a multi-layer and / or
    bidirectional ``torch.nn`` module (layer k+1 reads layer k's Y [T, D, B, H] through
    Transpose / Reshape / Squeeze, which is checked to be torch's (T, B, D*H)). Returns an
    rnnkit.nn RNN / LSTM / GRU with num_layers = the number of nodes (or :class:`Reversed`
    around one for ``direction = "reverse"``); calling it returns what torch.nn would:
    ``out (T, B, D*H)`` (``(B, T, D*H)`` when the graph's input is batch-major: layout 1 or
    torch's batch_first transposes) and h_n (L*D, B, H) (LSTM: (h_n, c_n)). Pass the graph's
    sequence lengths as ``lengths`` and its initial states (if it takes them) as the state.

    ``clip``, ``input_forget`` and peepholes ``P`` become the module's. ValueError naming the node and the
    attribute for what rnnkit does not compute (activations other than the defaults), and for
    graphs whose recurrent nodes are not one stack (use :func:`load_nodes`).
    """
    g = _Graph(_model(path_or_model).graph)
    nodes, _, batch_major = _stack(g)
    return _build(nodes, batch_first=batch_major)


# ----------------------------------------------------------------------------- writing a graph


def _inner(module: Any) -> tuple[_RNNBase, bool]:
    """(the RNN / LSTM / GRU, reverse-only?) of a module to export; TypeError otherwise."""
    if isinstance(module, Reversed):
        return module.rnn, True
    if isinstance(module, _RNNBase):
        return module, False
    raise TypeError(
        f"module: expected an rnnkit.nn RNN, LSTM or GRU, a Reversed one or a SequenceRegressor / "
        f"SequenceClassifier, got {type(module).__name__}"
    )


def _recurrent_nodes_for(
    rnn: _RNNBase, reverse: bool, x: str, lengths: str, states: list[str], prefix: str
) -> tuple[list, list, str, list[str]]:
    """Nodes and initializers computing rnn over time-major x: (nodes, initializers, y (T, B,
    D*H), final state names (L*D, B, H) each)."""
    from onnx import helper, numpy_helper

    cell = rnn.CELL
    if rnn.proj_size:
        raise ValueError(
            f"module: an LSTM with proj_size = {rnn.proj_size} has no ONNX form (ONNX has no projection)"
        )
    D, L, H = rnn.num_directions, rnn.num_layers, rnn.hidden_size
    nodes, inits = [], []

    def const(name, value):
        if prefix + name not in made:
            made.add(prefix + name)
            inits.append(numpy_helper.from_array(np.asarray(value), prefix + name))
        return prefix + name

    made: set[str] = set()

    attrs: dict[str, Any] = {"hidden_size": H}
    attrs["direction"] = "bidirectional" if D == 2 else ("reverse" if reverse else "forward")
    if "reset_after" in cell.options:
        attrs["linear_before_reset"] = 1 if rnn.reset_after else 0
    if getattr(rnn, "nonlinearity", "tanh") == "relu":
        attrs["activations"] = ["Relu"] * D
    if rnn.clip is not None:
        attrs["clip"] = rnn.clip
    if getattr(rnn, "input_forget", False):
        attrs["input_forget"] = 1
    inp = x
    finals: list[list[str]] = [[] for _ in states]
    for layer in range(L):
        W, R, Bs = [], [], []
        for d in range(D):
            w = rnn._weights(layer, d)
            W.append(_permute(w["weight_ih"], cell, True))
            R.append(_permute(w["weight_hh"], cell, True))
            if rnn.bias:
                Bs.append(
                    np.concatenate([_permute(w["bias_ih"], cell, True), _permute(w["bias_hh"], cell, True)])
                )
        ins = [inp, const(f"W_l{layer}", np.stack(W)), const(f"R_l{layer}", np.stack(R))]
        ins.append(const(f"B_l{layer}", np.stack(Bs)) if rnn.bias else "")
        ins.append(lengths)
        for s, state in enumerate(states):
            if state:
                starts = const(f"start_l{layer}", np.array([layer * D], np.int64))
                ends = const(f"end_l{layer}", np.array([(layer + 1) * D], np.int64))
                zero = const("axis0", np.array([0], np.int64))
                sliced = f"{prefix}{cell.state_names[s]}0_l{layer}"
                nodes.append(helper.make_node("Slice", [state, starts, ends, zero], [sliced]))
                ins.append(sliced)
            else:
                ins.append("")
        if getattr(rnn, "peepholes", False):  # input 7, P [D, 3*H]: rnnkit's rows i, f, o -> ONNX's i, o, f
            ins += [""] * (7 - len(ins))
            P = [rnn._weights(layer, d)["weight_peep"][[0, 2, 1]].reshape(-1) for d in range(D)]
            ins.append(const(f"P_l{layer}", np.stack(P)))
        while ins and not ins[-1]:
            ins.pop()
        Y = f"{prefix}Y_l{layer}"
        outs = [Y] + [f"{prefix}{n}_n_l{layer}" for n in cell.state_names]
        nodes.append(helper.make_node(cell.torch_name, ins, outs, name=f"{prefix}layer{layer}", **attrs))
        for f, o in zip(finals, outs[1:]):
            f.append(o)
        y = f"{prefix}y_l{layer}"
        if D == 1:
            nodes.append(helper.make_node("Squeeze", [Y, const("axis1", np.array([1], np.int64))], [y]))
        else:  # [T, D, B, H] -> [T, B, D, H] -> (T, B, D*H)
            nodes.append(helper.make_node("Transpose", [Y], [y + "_t"], perm=[0, 2, 1, 3]))
            flat = const("shape_tb", np.array([0, 0, -1], np.int64))
            nodes.append(helper.make_node("Reshape", [y + "_t", flat], [y]))
        inp = y
    names = []
    for s, f in enumerate(finals):
        name = f"{prefix}{cell.state_names[s]}_n_layers"
        nodes.append(
            helper.make_node("Concat", f, [name], axis=0)
            if L > 1
            else helper.make_node("Identity", f, [name])
        )
        names.append(name)
    return nodes, inits, inp, names


def to_model(module: Any, *, lengths: bool = False, initial_state: bool = False) -> Any:
    """An ``onnx.ModelProto`` computing ``module`` (inference: no dropout).

    module: an rnnkit.nn RNN / LSTM / GRU (any num_layers, bidirectional, batch_first; not an
    LSTM projection, which ONNX lacks), a :class:`Reversed` one, or a ``SequenceRegressor`` /
    ``SequenceClassifier`` (its recurrent module and Linear head in one graph).

    Graph inputs: ``x`` (T, B, I) (or (B, T, I) batch-first); with ``lengths=True`` also
    ``lengths`` (B,) int32 (ONNX's sequence_lens); with ``initial_state=True`` also ``h0``
    (L*D, B, H) (and the LSTM's ``c0``). Outputs: ``y`` (T, B, D*H) (batch-first (B, T, D*H)) and
    ``h_n`` (L*D, B, H) (and ``c_n``) - torch.nn's shapes; for a sequence model only ``y``,
    (B, O) or many-to-many (T, B, O). The model passes ``onnx.checker.check_model(full_check=True)``
    and onnxruntime runs it with rnnkit's outputs.
    """
    from onnx import TensorProto, checker, helper, numpy_helper

    v.flag("lengths", lengths)
    v.flag("initial_state", initial_state)
    head = None
    rnn: _RNNBase
    if isinstance(module, SequenceRegressor):
        rnn, reverse, head = module.rnn, False, module
    else:
        rnn, reverse = _inner(module)
    elem = TensorProto.DOUBLE if rnn.dtype == np.float64 else TensorProto.FLOAT
    D, L, H = rnn.num_directions, rnn.num_layers, rnn.hidden_size
    bf = rnn.batch_first
    x_dims: list[str | int] = ["B", "T", rnn.input_size] if bf else ["T", "B", rnn.input_size]
    inputs = [helper.make_tensor_value_info("x", elem, x_dims)]
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, ["B"]))
    state_inputs = []
    for n in rnn.CELL.state_names:
        if initial_state:
            inputs.append(helper.make_tensor_value_info(n + "0", elem, [L * D, "B", H]))
            state_inputs.append(n + "0")
        else:
            state_inputs.append("")
    nodes: list = []
    x = "x"
    if bf:
        nodes.append(helper.make_node("Transpose", ["x"], ["x_tb"], perm=[1, 0, 2]))
        x = "x_tb"
    rnodes, inits, y, finals = _recurrent_nodes_for(
        rnn, reverse, x, "lengths" if lengths else "", state_inputs, ""
    )
    nodes += rnodes
    outputs = []
    if head is None:
        if bf:
            nodes.append(helper.make_node("Transpose", [y], ["y"], perm=[1, 0, 2]))
        else:
            nodes.append(helper.make_node("Identity", [y], ["y"]))
        y_dims: list[str | int] = ["B", "T", D * H] if bf else ["T", "B", D * H]
        outputs.append(helper.make_tensor_value_info("y", elem, y_dims))
        for n, f in zip(rnn.CELL.state_names, finals):
            nodes.append(helper.make_node("Identity", [f], [n + "_n"]))
            outputs.append(helper.make_tensor_value_info(n + "_n", elem, [L * D, "B", H]))
    else:
        lin = head.head
        inits.append(numpy_helper.from_array(np.ascontiguousarray(lin.weight.data.T), "head_weight_t"))
        feats = y
        if not head.many_to_many:  # each sequence's last state of the top layer: h_n[-1]
            inits.append(numpy_helper.from_array(np.array(L * D - 1, np.int64), "top"))
            nodes.append(helper.make_node("Gather", [finals[0], "top"], ["feats"], axis=0))
            feats = "feats"
        out = "y" if lin.bias is None else "y_nobias"
        nodes.append(helper.make_node("MatMul", [feats, "head_weight_t"], [out]))
        if lin.bias is not None:
            inits.append(numpy_helper.from_array(lin.bias.data.copy(), "head_bias"))
            nodes.append(helper.make_node("Add", [out, "head_bias"], ["y"]))
        O = lin.out_features
        outputs.append(
            helper.make_tensor_value_info("y", elem, ["T", "B", O] if head.many_to_many else ["B", O])
        )
    graph = helper.make_graph(nodes, "rnnkit_" + type(module).__name__, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="rnnkit")
    checker.check_model(model, full_check=True)
    return model


def save(module: Any, path: str | os.PathLike, *, lengths: bool = False, initial_state: bool = False) -> None:
    """Write :func:`to_model` ``(module, lengths=..., initial_state=...)`` to ``path`` (.onnx)."""
    import onnx

    onnx.save(to_model(module, lengths=lengths, initial_state=initial_state), os.fspath(path))


# ----------------------------------------------------------------------------- .npz files


def _config(module: Any) -> dict[str, Any]:
    rnn, reverse = _inner(module)
    cfg: dict[str, Any] = {
        "class": type(rnn).__name__,
        "input_size": rnn.input_size,
        "hidden_size": rnn.hidden_size,
        "num_layers": rnn.num_layers,
        "bias": rnn.bias,
        "batch_first": rnn.batch_first,
        "bidirectional": rnn.bidirectional,
        "dtype": rnn.dtype.name,
        "reverse": reverse,
    }
    for option in rnn.CELL.options:
        cfg[option] = getattr(rnn, option)
    if rnn.proj_size:
        cfg["proj_size"] = rnn.proj_size
    if rnn.clip is not None:
        cfg["clip"] = rnn.clip
    if getattr(rnn, "input_forget", False):
        cfg["input_forget"] = True
    if getattr(rnn, "peepholes", False):
        cfg["peepholes"] = True
    return cfg


def save_npz(module: Any, path: str | os.PathLike) -> None:
    """Write a recurrent module (as :func:`load` returns) to ``path``: its torch-named
    parameters and, under ``__rnnkit__``, its constructor arguments as JSON."""
    rnn, _ = _inner(module)
    arrays: dict[str, Any] = {"__rnnkit__": np.array(json.dumps(_config(module))), **rnn.state_dict()}
    np.savez(os.fspath(path), **arrays)


def load_npz(path: str | os.PathLike) -> Module:
    """The module :func:`save_npz` wrote to ``path``."""
    with np.load(os.fspath(path), allow_pickle=False) as f:
        if "__rnnkit__" not in f.files:
            raise ValueError(
                f"path: {os.fspath(path)!r} has no '__rnnkit__' entry: not written by rnnkit.onnx.save_npz"
            )
        cfg = json.loads(str(f["__rnnkit__"]))
        state = {k: f[k] for k in f.files if k != "__rnnkit__"}
    cls = _CLASSES[v.choice("class", cfg.pop("class"), tuple(_CLASSES))]
    reverse = cfg.pop("reverse")
    rnn = cls(cfg.pop("input_size"), cfg.pop("hidden_size"), seed=0, **cfg)
    rnn.load_state_dict(state)
    return Reversed(rnn) if reverse else rnn


# ----------------------------------------------------------------------------- the converter


def _describe(where: str, module: Any) -> str:
    rnn, reverse = _inner(module)
    direction = "bidirectional" if rnn.bidirectional else ("reverse" if reverse else "forward")
    return f"{where}: {rnn!r}, {direction}, {rnn.dtype.name}"


def _max_differences(model: Any, module: Any, rng: np.random.Generator) -> list[str]:
    """onnxruntime's outputs of ``model`` against ``module``'s on random inputs: one report line
    per output (max |difference|), or the line saying why there is none. Graph inputs after x:
    integer ones are lengths (B,), real ones the initial states in torch's layout."""
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        return ["onnxruntime is not installed: outputs not compared"]
    from onnx import TensorProto

    rnn, _ = _inner(module)
    const_names = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in const_names]
    # the graph's own sizes where it fixes them (torch.onnx.export does, without dynamic axes)
    dims = [d.dim_value if d.dim_value > 0 else None for d in graph_inputs[0].type.tensor_type.shape.dim]
    t_axis = 1 if rnn.batch_first else 0
    T = (dims[t_axis] if len(dims) == 3 else None) or 7
    B = (dims[1 - t_axis] if len(dims) == 3 else None) or 3
    shape = (B, T, rnn.input_size) if rnn.batch_first else (T, B, rnn.input_size)
    x = rng.standard_normal(shape).astype(rnn.dtype)
    feed = {graph_inputs[0].name: x}
    lengths = None
    states: list[np.ndarray] = []
    sizes = rnn._state_sizes()
    for i in graph_inputs[1:]:
        elem = i.type.tensor_type.elem_type
        if elem in (TensorProto.INT32, TensorProto.INT64):
            lengths = rng.integers(1, T + 1, B)
            lengths[0] = T
            feed[i.name] = lengths.astype(np.int32 if elem == TensorProto.INT32 else np.int64)
        else:
            s = rng.standard_normal((rnn.num_layers * rnn.num_directions, B, sizes[len(states)]))
            states.append(s.astype(rnn.dtype))
            feed[i.name] = states[-1]
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4  # the report says what went wrong
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        expected = session.run(None, feed)
    except Exception as exc:  # onnxruntime's own errors (e.g. layout 1 on the CPU): report them
        return [f"onnxruntime could not run the model, outputs not compared: {type(exc).__name__}: {exc}"]
    was = module.training
    module.eval()
    try:
        state: Any = None
        if states:
            state = tuple(states) if rnn.CELL.has_cell_state else states[0]
        out, final = module(x, state, lengths)
    finally:
        module.train(was)
    ours = [out, *(final if isinstance(final, tuple) else (final,))]
    result = []
    D, H = rnn.num_directions, rnn._out_size
    for o, e, a in zip(model.graph.output, expected, ours):
        if np.ndim(e) == 4 and a.ndim == 3:  # a node's own Y: [T, D, B, H] (layout 1: [B, T, D, H])
            a = a.reshape(*a.shape[:2], D, H)
            a = a if rnn.batch_first else a.transpose(0, 2, 1, 3)
        if np.shape(e) == np.shape(a):
            d = float(np.max(np.abs(np.asarray(e, np.float64) - a), initial=0.0))
            result.append(f"max |onnxruntime - rnnkit| of {o.name}: {d:.3g}")
        else:
            result.append(
                f"output {o.name}: shape {list(np.shape(e))}, rnnkit's {list(np.shape(a))}: not compared"
            )
    return result


def convert(source: str | os.PathLike, target: str | os.PathLike, *, seed: int = 0) -> list[str]:
    """Convert between an ONNX file and rnnkit's .npz (the direction from the suffixes).

    ``model.onnx -> out.npz``: :func:`load` the graph's recurrent stack, :func:`save_npz` it;
    ``in.npz -> model.onnx``: :func:`load_npz`, :func:`save`. Returns the report lines (each
    layer found; with onnxruntime installed, the max difference of each output between
    onnxruntime running the ONNX file and rnnkit on random inputs)."""
    import onnx

    src, dst = os.fspath(source), os.fspath(target)
    kinds = (os.path.splitext(src)[1].lower(), os.path.splitext(dst)[1].lower())
    if kinds == (".onnx", ".npz"):
        model = onnx.load(src)
        g = _Graph(model.graph)
        nodes, _, batch_major = _stack(g)
        module = _build(nodes, batch_first=batch_major)
        lines = [_describe(f"layer {k}: {n.where}", _build([n], n.layout == 1)) for k, n in enumerate(nodes)]
        lines.append(_describe("module", module))
        save_npz(module, dst)
    elif kinds == (".npz", ".onnx"):
        module = load_npz(src)
        rnn, _ = _inner(module)
        model = to_model(module)
        lines = [_describe("module", module)]
        lines += [
            f"layer {k}: {rnn.CELL.torch_name} node {n.name!r}"
            for k, n in enumerate(_recurrent_nodes(_Graph(model.graph)))
        ]
        onnx.save(model, dst)
    else:
        raise ValueError(
            f"source, target: expected model.onnx out.npz or in.npz model.onnx, got {src!r} {dst!r}"
        )
    lines += _max_differences(model, module, np.random.default_rng(seed))
    lines.append(f"wrote {dst}")
    return lines

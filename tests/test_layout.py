"""The package's layering, checked on its source: who may import whom, no cycles, no imports
hidden in functions, and cell names compared in one file only (CONTRIBUTING.md)."""

import ast
import pathlib

import pytest

import rnnkit

ROOT = pathlib.Path(rnnkit.__file__).parent
PKG = "rnnkit"

# The former flat modules: thin re-exports of the layers, imported by nothing inside the package
# but its __init__.
SHIMS = {
    "attention",
    "decoding",
    "diagnostics",
    "layers",
    "losses",
    "optim",
    "recurrent",
    "reference_attention",
    "sampling",
    "seq2seq",
    "training",
}
# What each layer may import inside rnnkit (besides itself).
BASE = {"_core", "_validate", "_types", "_cells"}
ALLOWED = {
    "ops": {"_core", "_validate", "_types", "_cells"},
    "reference": {"_validate", "_types", "_cells"},
    "nn": BASE | {"ops"},
    "models": BASE | {"ops", "nn"},
    "distributed": BASE | {"ops", "nn", "models"},
    "train": BASE | {"ops", "nn", "models", "distributed"},
    "onnx": BASE | {"ops", "nn", "models"},
    "bench": BASE | {"ops", "nn", "reference", "__init__"},
    "demos": BASE | {"ops", "nn", "models", "distributed", "train", "__init__"},
    "_validate": set(),
    "_types": set(),
    "_cells": {"_validate"},
}
# Where the cell families may be written as string literals: the cell table.
CELL_TABLE = "_cells.py"
CELL_NAMES = ("rnn", "lstm", "gru")


def _module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [PKG, *rel.parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources():
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def _resolve(module, node, is_package):
    """The absolute rnnkit module names an import statement refers to."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == PKG]
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != PKG:
        return []
    modules = _all_modules()  # "from . import nn" imports the submodule rnnkit.nn
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]


def _imports(node, module, is_package, in_function, edges):
    """Appends (imported module, line, inside a function?) for every import below node."""
    for child in ast.iter_child_nodes(node):
        inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            for target in _resolve(module, child, is_package):
                edges.append((target, child.lineno, in_function))
        _imports(child, module, is_package, inner, edges)


def _graph():
    """module -> [(imported module, line, inside a function?)] over the whole package."""
    graph = {}
    for path in _sources():
        module = _module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        edges = []
        _imports(tree, module, path.name == "__init__.py", False, edges)
        graph[module] = edges
    return graph


def _layer(module):
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def test_layers_import_only_downwards():
    bad = []
    for module, edges in _graph().items():
        layer = _layer(module)
        if layer in SHIMS or layer in ("__init__", "__main__"):
            continue
        allowed = ALLOWED[layer]
        for target, line, _ in edges:
            tl = _layer(target)
            if tl != layer and tl not in allowed:
                bad.append(f"{module}:{line} imports {target} ({layer} may import {sorted(allowed)})")
    assert not bad, "\n".join(bad)


def test_former_flat_modules_are_imported_by_nobody_inside():
    bad = [
        f"{m}:{line} imports the re-export {t}"
        for m, edges in _graph().items()
        for t, line, _ in edges
        if _layer(t) in SHIMS and _layer(m) != "__init__" and len(t.split(".")) == 2
    ]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = {m: sorted({t for t, _, _ in edges if t in _all_modules()}) for m, edges in _graph().items()}
    # a package's __init__ importing its own submodules is not a cycle of the layering
    state, stack, cycles = {}, [], []

    def dfs(m):
        state[m] = "open"
        stack.append(m)
        for t in graph.get(m, []):
            if t == m or m.startswith(t + "."):  # a submodule needs its package loaded first
                continue
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t) :] + [t])
            elif t not in state:
                dfs(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            dfs(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _all_modules():
    return {_module_name(p) for p in _sources()} | {f"{PKG}._core"}


def test_no_rnnkit_imports_inside_functions():
    """Imports inside functions hide cycles; the entry points import what they run up front."""
    bad = [
        f"{m}:{line} imports {t} inside a function"
        for m, edges in _graph().items()
        for t, line, inside in edges
        if inside
    ]
    assert not bad, "\n".join(bad)


def _string_literals(path):
    """The plain string constants of a file (docstrings excluded)."""
    tree = ast.parse(path.read_text())
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


def test_cell_names_are_written_in_the_cell_table_only():
    hits = [
        f"{p.relative_to(ROOT)}:{line}: {value!r}"
        for p in _sources()
        if p.name != CELL_TABLE or p.parent != ROOT
        for line, value in _string_literals(p)
        if value in CELL_NAMES
    ]
    assert not hits, "cell names outside rnnkit/_cells.py:\n" + "\n".join(hits)
    table = [value for _, value in _string_literals(ROOT / CELL_TABLE) if value in CELL_NAMES]
    assert sorted(set(table)) == sorted(CELL_NAMES)


@pytest.mark.parametrize(
    "old, names",
    [
        (
            "rnnkit.layers",
            [
                "Module",
                "Linear",
                "Embedding",
                "Dropout",
                "CrossEntropyLoss",
                "MSELoss",
                "scatter_add_rows",
                "Parameter",
            ],
        ),
        (
            "rnnkit.nn",
            [
                "Parameter",
                "RNN",
                "LSTM",
                "GRU",
                "Linear",
                "Embedding",
                "Dropout",
                "CrossEntropyLoss",
                "MSELoss",
            ],
        ),
        (
            "rnnkit.models",
            [
                "OutputRecurrentRNN",
                "RecurrentDecoder",
                "SequenceRegressor",
                "SequenceClassifier",
                "Seq2Seq",
                "shift_right",
                "sample_tokens",
            ],
        ),
        ("rnnkit.seq2seq", ["Seq2Seq", "DecoderState", "Encoded"]),
        (
            "rnnkit.attention",
            [
                "additive_attention_forward",
                "lengths_to_mask",
                "AttentionMemory",
                "AdditiveAttention",
                "make_attention",
                "AttentionCache",
            ],
        ),
        ("rnnkit.recurrent", ["Workspace", "lstm_forward", "gru_cell_backward"]),
        (
            "rnnkit.sampling",
            [
                "ScheduledSampler",
                "teacher_forcing_mask",
                "LinearDecay",
                "SamplingTape",
                "scheduled_sampling_forward",
            ],
        ),
        (
            "rnnkit.training",
            [
                "fit",
                "truncated_bptt",
                "clip_grad_norm",
                "save_checkpoint",
                "Evaluate",
                "EarlyStopping",
                "Checkpoint",
                "TrainState",
                "Callback",
            ],
        ),
        ("rnnkit.optim", ["SGD", "Adam", "AdamW", "Optimizer"]),
        ("rnnkit.decoding", ["greedy_decode", "beam_search", "score_sequences", "length_penalty"]),
        ("rnnkit.diagnostics", ["gradient_norms_through_time"]),
        ("rnnkit.reference", ["lstm_forward", "gru_backward", "softmax_cross_entropy"]),
        ("rnnkit.reference_attention", ["additive_attention_forward", "dot_attention_backward"]),
        ("rnnkit.losses", ["softmax", "softmax_cross_entropy"]),
        ("rnnkit.bench", ["main", "format_row", "markdown_table", "gemm_flops"]),
    ],
)
def test_old_import_paths_keep_working(old, names):
    import importlib

    mod = importlib.import_module(old)
    for name in names:
        assert getattr(mod, name) is not None, f"{old}.{name}"
    assert all(hasattr(mod, n) for n in getattr(mod, "__all__", []))
